#!/usr/bin/env python3
"""The indexing pipeline against decode-only, threads and processes side by side, in one run.

    python bench/bench_pipeline.py [--count 96] [--megapixels 8] [--rounds 2] [--workers N]
                                   [--model tiny|ARCH] [--device cpu|cuda] [--corpus DIR]

Measures, on this machine, on the same photos, interleaved and best of --rounds (the machines are
shared: compare the ratios, which come from one run):
  - decode only: read each file and decode it at the model's decode size, nothing else, on all
    the workers, in threads and in processes: what bounds the pipeline when the model costs
    nothing (a GPU's situation);
  - the pipeline, index_photos with the model already loaded, into a cache file on disk, with
    pool="threads" and pool="processes" and for each: no checks, the focus/exposure checks, and
    every registered analyser available here (faces too, where clip_cull/core/faces.py is
    there and its extra installed): photos/s and the ratio to decode-only;
  - what pool="auto" picks for these photos, and the start of a pool (one photo, each kind);
  - each analyser's cost per photo on one core (its working image made from the decoded photo);
  - the model alone on random uint8 squares (normalised where it runs).

--model tiny (the default) is a randomly initialised CLIP of one tiny layer with a 224-px input,
run on one torch thread: photos are decoded as for ViT-B-32 but the model costs next to nothing,
as on a GPU (its normalisation and the tiny model still take about a millisecond a photo here). --model
ViT-B-32 --device cuda is the GPU check (bench/gpu_check.sh). The corpus comes from
../shared/tools/make-photo-corpus, cached under bench/.corpus/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_index import WORK, checkpoint, corpus, machine, print_table  # noqa: E402

# One transformer layer 32 wide on 224-px input in 32-px patches: microseconds a photo on a CPU.
TINY_224 = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_model() -> tuple[Path, Path]:
    config = WORK / "clipcull-bench-tiny224.json"
    ckpt = WORK / "clipcull-bench-tiny224.pt"
    if not ckpt.exists():
        import open_clip
        import torch

        WORK.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(TINY_224))
        open_clip.add_model_config(config)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(config.stem, pretrained=None).state_dict(), ckpt)
    return config, ckpt


def decode_one(job: tuple[str, int]) -> None:
    from clip_cull.core.images import decode_photo

    path, side = job
    with open(path, "rb") as f:
        decode_photo(f.read(), min_side=side)


def decode_only(files: list[Path], side: int, workers: int, kind: str) -> float:
    jobs = [(str(f), side) for f in files]
    if kind == "threads":
        pool = ThreadPoolExecutor(workers)
    else:
        import multiprocessing

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        list(pool.map(decode_one, jobs[:workers]))  # started beforehand: this measures the decoding
    with pool:
        start = time.perf_counter()
        list(pool.map(decode_one, jobs, chunksize=4))
        return len(files) / (time.perf_counter() - start)


def pipeline(spec, encoder, photos, workers: int, pool: str, analysers: tuple[str, ...], quality: bool):
    """Photos/s of index_photos into a fresh cache file (model loaded), and its report."""
    from clip_cull.model.session import ModelSession
    from clip_cull.scoring.indexer import IndexOptions, index_photos
    from clip_cull.store.cache import Store

    with tempfile.TemporaryDirectory(prefix="clipcull-bench-") as tmp:
        store = Store.open(Path(tmp) / "cache.db")
        session = ModelSession(spec, store, encoder.device.type)
        session._encoder = encoder  # loaded: this measures the pipeline, not the model's load
        options = IndexOptions(workers=workers, pool=pool, quality=quality, analysers=analysers)
        start = time.perf_counter()
        report = index_photos(store, photos, session, options)
        rate = len(photos) / (time.perf_counter() - start)
        store.close()
    assert report.embedded == len(photos) and not report.failures, report
    return rate, report


BASELINE = """
import json, sys, time, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
from clip_cull.core.files import walk_photos
from clip_cull.model.encoder import ModelSpec, load_encoder
from clip_cull.model.session import ModelSession
from clip_cull.scoring.indexer import IndexOptions, index_photos
from clip_cull.store.cache import Store
config, ckpt, folder, count, workers, quality = sys.argv[1:7]
spec = ModelSpec(config, ckpt)
encoder = load_encoder(spec, "cpu")
photos = sorted(walk_photos([folder]).photos, key=lambda p: p.path)[: int(count)]
with tempfile.TemporaryDirectory() as tmp:
    store = Store.open(Path(tmp) / "cache.db")
    session = ModelSession(spec, store, "cpu")
    session._encoder = encoder
    start = time.perf_counter()
    report = index_photos(store, photos, session, IndexOptions(workers=int(workers), quality=quality == "1"))
    print(json.dumps(len(photos) / (time.perf_counter() - start)))
"""


def baseline(tree: Path, config: Path, ckpt: Path, folder: Path, count: int, workers: int, quality: bool) -> float:
    """Photos/s of another clipcull source tree's pipeline (say `git archive REV clip_cull`), tiny
    model on the CPU, in a process of its own: the pipeline before, on the same photos."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", BASELINE, str(config), str(ckpt), str(folder), str(count),
                          str(workers), "1" if quality else "0"], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def analyser_costs(files: list[Path], side: int, analysers) -> dict[str, float]:
    """ms a photo of each analyser on one core, its working image included, best of 3."""
    from clip_cull.core.analysers import measure_all
    from clip_cull.core.images import decode_photo

    images = [decode_photo(f.read_bytes(), min_side=side)[0] for f in files[:24]]
    costs = {}
    for analyser in analysers:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for image in images:
                measure_all(image, [analyser])
            best = min(best, (time.perf_counter() - start) / len(images))
        costs[analyser.name] = 1000 * best
    return costs


def one_core(files: list[Path], side: int, checks: dict, analysers) -> dict[str, float]:
    """ms a photo on one core: decode-only, and a worker's whole work (scoring/prepare.py) with
    each set of checks. Their ratio bounds the pipeline's against decode-only where the cores are
    the limit (this 2-core machine), whatever the pool."""
    from clip_cull.core.files import FileStat
    from clip_cull.model.preprocess import CentreSquarePreprocess
    from clip_cull.scoring.prepare import Plan, prepare

    by_name = {a.name: a for a in analysers}
    sample = files[:24]
    stats = [FileStat(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sample]
    square = CentreSquarePreprocess.predicted(side)
    jobs = {"decode only": lambda: [decode_one((str(f), side)) for f in sample]}
    for name, (names, quality) in checks.items():
        chosen = tuple(by_name[n] for n in (("quality",) if quality else ()) + names)
        plan = Plan(2**40, 250_000_000, True, side, set(), chosen, {a.name: set() for a in chosen})
        jobs[f"worker, {name}"] = lambda plan=plan: [prepare(p, plan, square) for p in stats]
    costs = {name: float("inf") for name in jobs}
    for _ in range(3):  # interleaved: a busy moment of the machine does not fall on one of them only
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            costs[name] = min(costs[name], 1000 * (time.perf_counter() - start) / len(sample))
    return costs


def model_alone(encoder, batch: int = 128, rounds: int = 5) -> float:
    import torch

    side = encoder.image_size
    squares = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    encoder.encode_squares(squares)
    sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(rounds):
        encoder.encode_squares(squares)
    sync()
    return rounds * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--megapixels", type=float, default=8.0)
    ap.add_argument("--corpus", type=Path, default=None, help="a folder of JPEGs instead of the corpus tool's")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each figure is the best")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--model", default="tiny", help="tiny (224-px input, costs nothing) or an open_clip architecture")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--baseline-tree", type=Path, default=None, metavar="DIR",
                    help="also measure the pipeline of this clipcull source tree (tiny model, CPU; e.g. "
                         "`git archive REV clip_cull | tar -x -C DIR`), interleaved with the rest")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    from clip_cull.core import analysers as registry
    from clip_cull.core.files import walk_photos
    from clip_cull.model.encoder import ModelSpec, load_encoder
    from clip_cull.scoring.indexer import IndexOptions, choose_pool

    photos_dir = args.corpus or corpus(args.count, args.megapixels)
    photos = sorted(walk_photos([photos_dir]).photos, key=lambda p: p.path)[: args.count]
    files = [Path(p.path) for p in photos]
    if args.model == "tiny":
        config, ckpt = tiny_model()
        spec = ModelSpec(str(config), str(ckpt))
    else:
        spec = ModelSpec(args.model, str(checkpoint(args.model)))
    if args.model == "tiny" and args.device == "cpu":
        import torch

        # A GPU's model takes no CPU core from the workers; on the CPU, torch's own threads would
        # (and spin while they wait): one thread for the tiny model.
        torch.set_num_threads(1)
    encoder = load_encoder(spec, args.device)
    side = encoder.image_size
    available = registry.available()  # faces too, once clip_cull/core/faces.py registers it and its extra is here
    extra = tuple(a.name for a in available if a.name != "quality")
    print(f"machine: {machine()}")
    print(f"corpus: {len(files)} photos in {photos_dir}; model {args.model} ({side} px) on {args.device}; "
          f"{args.workers} workers; analysers available: {', '.join(a.name for a in available)}")

    checks = {"no checks": ((), False), "quality": ((), True)}
    if extra:
        checks["every analyser (" + ", ".join(("quality",) + extra) + ")"] = (extra, True)
    rates: dict[str, float] = {}
    pools = {}
    for _ in range(args.rounds):
        for kind in ("threads", "processes"):
            key = f"decode only, {kind}"
            rates[key] = max(rates.get(key, 0.0), decode_only(files, side, args.workers, kind))
        if args.baseline_tree and args.model == "tiny" and args.device == "cpu":
            for name, quality in (("no checks", False), ("quality", True)):
                key = f"baseline tree's pipeline, {name}"
                rate = baseline(args.baseline_tree, config, ckpt, photos_dir, len(photos), args.workers, quality)
                rates[key] = max(rates.get(key, 0.0), rate)
        for name, (names, quality) in checks.items():
            for kind in ("threads", "processes"):
                key = f"pipeline, {kind}, {name}"
                rate, report = pipeline(spec, encoder, photos, args.workers, kind, names, quality)
                rates[key] = max(rates.get(key, 0.0), rate)
                pools[key] = report.pool
    # The start of a pool: one photo, model loaded, each kind (what auto weighs against its speed).
    start_cost = {}
    for kind in ("threads", "processes"):
        t = time.perf_counter()
        pipeline(spec, encoder, photos[:1], args.workers, kind, (), True)
        start_cost[kind] = time.perf_counter() - t
    costs = analyser_costs(files, side, available)
    core = one_core(files, side, checks, available)
    rate_model = model_alone(encoder)
    auto = choose_pool(IndexOptions(workers=args.workers), len(photos), available, True)

    decode = max(rates["decode only, threads"], rates["decode only, processes"])
    rows = [(k, f"{v:.1f} photos/s", f"{v / decode:.2f}x decode-only" + (f" ({pools[k]})" if pools.get(k, "") not in k else ""))
            for k, v in rates.items()]
    for name in checks:
        t, p = rates[f"pipeline, threads, {name}"], rates[f"pipeline, processes, {name}"]
        rows.append((f"processes / threads, {name}", f"{p / t:.2f}x", ""))
    rows += [
        ("one photo, whole index_photos, threads / processes", f"{start_cost['threads']:.2f} s / {start_cost['processes']:.2f} s",
         "the start of a pool of each kind"),
        *[(f"analyser {n}, one core", f"{ms:.2f} ms a photo", "working image included") for n, ms in costs.items()],
        *[(f"one core: {n}", f"{ms:.2f} ms a photo",
           "" if n == "decode only" else f"decode-only / this = {core['decode only'] / ms:.2f}: the bound where cores are")
          for n, ms in core.items()],
        ("model alone, uint8 squares normalised on the device", f"{rate_model:.0f} photos/s", f"batch 128, {args.device}"),
        (f"pool=\"auto\" picks, {len(photos)} photos, {args.workers} workers", auto, ""),
    ]
    print_table(rows, value_width=22)
    best_all = max(v for k, v in rates.items() if k.startswith("pipeline") and k.endswith(list(checks)[-1]))
    print(f"\nwith every check, the faster pool reaches {best_all / decode:.2f}x decode-only "
          f"({best_all:.1f} / {decode:.1f} photos/s; the GPU target is 0.9x)")


if __name__ == "__main__":
    main()
