#!/usr/bin/env python3
"""Indexing and warm-answer benchmark: every figure of BENCHMARKS.md comes from one run of this.

    python bench/bench_index.py [--count 48] [--megapixels 24] [--batch-size N] [--warm-rows 10000]
                                [--device cpu|cuda] [--also ARCH ...] [--memory-photos N]

Measures, on this machine, in one run (ratios are what to compare: shared machines are noisy):
  (a) the model alone on random tensors,            (b) cold `clipcull rank` end to end,
  (c) the straightforward pipeline (full decode + open_clip preprocessing, one file at a time),
  (d) warm `clipcull rank` with nothing new,        (e) warm `clipcull best --top 20` over N cached photos,
  (f) peak memory of the cold rank,
plus text encoding at the full 77-token context vs trimmed, and the fidelity of the fast decode path
(Spearman of its scores against exact preprocessing).

The model is a randomly initialised ViT-B-32 (same cost as real weights), saved once to a file and
passed as --pretrained, as a user without network access would. The corpus comes from
../shared/tools/make-photo-corpus and is cached under bench/.corpus/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS_TOOL = ROOT.parent / "shared" / "tools" / "make-photo-corpus"
WORK = ROOT / "bench" / ".work"
CORPUS_DIR = ROOT / "bench" / ".corpus"
DEVICE = "cpu"  # --device: where the model runs in every measurement


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def corpus(count: int, megapixels: float) -> Path:
    out = CORPUS_DIR / f"c{count}-{megapixels:g}mp"
    if not (out.is_dir() and len(list(out.glob("*.jpg"))) >= count):
        if not CORPUS_TOOL.exists():
            sys.exit(f"corpus tool not found: {CORPUS_TOOL}")
        subprocess.run([sys.executable, str(CORPUS_TOOL), str(out), "--count", str(count),
                        "--megapixels", str(megapixels)], check=True)
    return out


def checkpoint(architecture: str = "ViT-B-32") -> Path:
    """A random model saved once. Made in a subprocess: this process must stay small while
    it measures the CLI's peak memory (a child's peak RSS counts the parent's pages at fork)."""
    path = WORK / f"{architecture.lower()}-random.pt"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        code = ("import open_clip, torch, sys; torch.manual_seed(0); "
                "torch.save(open_clip.create_model(sys.argv[2], pretrained=None).state_dict(), sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(path), architecture], check=True)
    return path


def cli_measurements(files: list[Path], photos_dir: Path, ckpt: Path, warm_rows: int, prompts: list[str]) -> dict:
    """Whole `clipcull` processes: first run, cold rank, warm rank, warm best over many photos."""
    from clip_cull.model.encoder import ModelSpec, model_identity

    tmp = Path(tempfile.mkdtemp(prefix="clipcull-bench-"))
    try:
        env = dict(os.environ, CLIPCULL_DB=str(tmp / "cold.db"), CLIPCULL_STATE=str(tmp / "state.db"),
                   CLIPCULL_PRETRAINED=str(ckpt))
        one = tmp / "one"
        one.mkdir()
        shutil.copy(files[0], one / "warmup.jpg")
        out = {}
        # The first run encodes the prompts and hashes the checkpoint; the cold run then
        # measures indexing photos the cache has never seen.
        on = ["--device", DEVICE]
        out["t_first"], out["rss_first"], _ = run_cli(["rank", str(one), *on], env)
        out["t_cold"], out["rss_cold"], _ = run_cli(["rank", str(photos_dir), *on], env)
        out["t_warm"], _, warm_err = run_cli(["rank", str(photos_dir), *on], env)
        assert f"0 embedded, {len(files)} cached" in warm_err, warm_err
        best_db = tmp / "best.db"
        warm_best_db(best_db, tmp / "many", warm_rows, model_identity(ModelSpec("ViT-B-32", "openai")), prompts)
        best_env = dict(os.environ, CLIPCULL_DB=str(best_db), CLIPCULL_STATE=str(best_db.with_name("best-state.db")))
        out["t_best"] = min(run_cli(["best", "--top", "20"], best_env)[0] for _ in range(3))
        out["parent_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_cli(args: list[str], env: dict) -> tuple[float, int, str]:
    """Wall time, peak RSS (MiB) and stderr of one whole clipcull process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"clipcull {' '.join(args)} failed ({proc.returncode}):\n{stderr}")
    return wall, usage.ru_maxrss // 1024, stderr


def model_only(encoder, batch_size: int, batches: int = 3, cpu_per_image: list | None = None) -> float:
    """Images/s of the model alone; appends the CPU seconds it spent per image to cpu_per_image."""
    import torch

    x = torch.randn(batch_size, 3, encoder.image_size, encoder.image_size)
    encoder.encode_images(x)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        encoder.encode_images(x)
    if cpu_per_image is not None:
        cpu_per_image.append((time.process_time() - cpu) / (batches * batch_size))
    return batches * batch_size / (time.perf_counter() - start)


def worker_seconds(encoder, files: list[Path]) -> float:
    """Seconds one core spends per photo on everything but the model (read, fingerprint,
    decode, EXIF, focus/exposure, preprocessing), best of two passes: on a CPU this work
    shares the cores with the model, which bounds (b)/(a)."""
    from clip_cull.core.files import content_fingerprint, read_file
    from clip_cull.core.images import decode_photo, read_facts
    from clip_cull.core.quality import measure

    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for f in files:
            data, _ = read_file(str(f))
            content_fingerprint(data)
            image, size = decode_photo(data, min_side=encoder.image_size)
            read_facts(data, size)
            measure(image)
            encoder.pixels(image)
        best = min(best, (time.perf_counter() - start) / len(files))
    return best


def straightforward(encoder, files: list[Path], batch_size: int) -> float:
    """What a first implementation does: full decode, open_clip's transform, one file at a time."""
    import torch
    from PIL import Image, ImageOps

    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        tensors = [encoder.preprocess(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))
                   for f in files[i:i + batch_size]]
        encoder.encode_images(torch.stack(tensors))
    return len(files) / (time.perf_counter() - start)


def decode_only(files: list[Path], image_size: int, workers: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from clip_cull.core.images import decode_photo

    def one(f):
        return decode_photo(f.read_bytes(), min_side=image_size)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - start)


def indexing_phase(spec, files_dir: Path, batch_size: int, fast: bool, encoder, quality: bool = True) -> tuple[float, dict]:
    """Photos/s of index_photos alone (model already loaded), and the embeddings it made."""
    from clip_cull.core.files import walk_photos
    from clip_cull.scoring.indexer import IndexOptions, index_photos
    from clip_cull.model.session import ModelSession
    from clip_cull.model.preprocess import embedding_key
    from clip_cull.store.cache import Store

    store = Store.open(":memory:")
    session = ModelSession(spec, store, DEVICE)
    session._encoder = encoder  # reuse the loaded model: this measures the pipeline, not the load
    photos = walk_photos([files_dir]).photos
    start = time.perf_counter()
    options = IndexOptions(batch_size=batch_size, fast_decode=fast, quality=quality)
    report = index_photos(store, photos, session, options)
    rate = len(photos) / (time.perf_counter() - start)
    assert report.embedded == len(photos), report
    recs = store.file_records([p.path for p in photos])
    vecs = store.embeddings([r.fingerprint for r in recs.values()], embedding_key(session.model_id, options.preprocessing))
    return rate, {path: vecs[r.fingerprint] for path, r in recs.items()}


def larger_model_rows(architecture: str, photos_dir: Path, batch_size: int) -> list[tuple[str, str, str]]:
    """(a) and (b) for a slower model: how much of the decoding hides behind it."""
    from clip_cull.model.encoder import ModelSpec, load_encoder

    spec = ModelSpec(architecture, str(checkpoint(architecture)))
    encoder = load_encoder(spec, DEVICE)
    # Best of two each, interleaved: a noisy moment on a shared machine must not decide it.
    rate_model = rate = 0.0
    for _ in range(2):
        rate_model = max(rate_model, model_only(encoder, batch_size, batches=2))
        rate = max(rate, indexing_phase(spec, photos_dir, batch_size, True, encoder)[0])
    return [(f"{architecture}: model alone / pipeline", f"{rate_model:.2f} / {rate:.2f} img/s",
             f"(b) = {rate / rate_model:.2f}x (a)")]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def text_encoding(encoder, n: int = 128) -> tuple[float, float, float]:
    """Seconds for n ensemble prompts at the full context and trimmed, and the max abs difference."""
    import torch

    from clip_cull.model.encoder import encode_text_trimmed
    from clip_cull.model.prompts import context_prompts

    tokens = encoder.tokenizer(context_prompts("outstanding")[:n]).to(encoder.device)
    sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        start = time.perf_counter()
        full = encoder.model.encode_text(tokens)
        sync()
        t_full = time.perf_counter() - start
        start = time.perf_counter()
        trimmed = encode_text_trimmed(encoder.model, tokens)
        sync()
        t_trim = time.perf_counter() - start
    return t_full, t_trim, float((full - trimmed).abs().max())


def warm_best_db(db: Path, folder: Path, rows: int, model_id: str, prompts: list[str]) -> None:
    """A scratch cache with `rows` photos (tiny real files) and random embeddings."""
    from clip_cull.store.cache import EmbeddingRecord, FileRecord, Store

    folder.mkdir(parents=True, exist_ok=True)
    payload = b"\xff\xd8" + os.urandom(500)
    store = Store.open(db)
    rng = np.random.default_rng(0)
    records, embeddings = [], []
    for i in range(rows):
        path = folder / f"IMG_{i:05d}.jpg"
        data = payload + i.to_bytes(4, "big")
        path.write_bytes(data)
        st = path.stat()
        fp = hashlib.sha256(data).hexdigest()
        records.append(FileRecord(str(path), st.st_size, st.st_mtime_ns, fp))
        embeddings.append(EmbeddingRecord(fp, rng.standard_normal(512), rng.standard_normal(768)))
    figures = {"focus": 100.0, "highlights": 0.0, "shadows": 0.0, "brightness": 0.5}
    store.save(records, embeddings, model_id, [(r.fingerprint, "quality", 1, figures) for r in records])
    store.save_text_embeddings(model_id, prompts, rng.standard_normal((len(prompts), 512)))
    store.close()
    from clip_cull.store.state import StateStore  # the folder's last rank: in the state database since it split off

    state = StateStore.open(db.with_name("best-state.db"))
    state.set_setting("last_rank", {"roots": [str(folder)], "model": "ViT-B-32", "pretrained": "openai",
                                    "positive": "outstanding", "negative": "horrible"})
    state.close()


def memory_run(count: int) -> None:
    """Peak memory of a cold `rank` over many small photos: it must not grow with the folder."""
    from PIL import Image

    folder = CORPUS_DIR / f"small-{count}"
    if not (folder.is_dir() and len(list(folder.glob("*.jpg"))) >= count):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(count):
            pixels = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((640, 480), Image.BICUBIC).save(folder / f"IMG_{i:05d}.jpg", quality=85)
    ckpt = checkpoint()
    with tempfile.TemporaryDirectory(prefix="clipcull-bench-") as tmp:
        env = dict(os.environ, CLIPCULL_DB=str(Path(tmp) / "mem.db"), CLIPCULL_STATE=str(Path(tmp) / "state.db"),
                   CLIPCULL_PRETRAINED=str(ckpt), HF_HUB_OFFLINE="1")
        wall, rss, err = run_cli(["rank", str(folder), "--json"], env)
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"machine: {machine()}")
    print(f"cold rank of {count} photos (640x480): {wall:.0f} s, peak memory {rss} MiB "
          f"(includes up to {parent} MiB shared from this script at fork)")
    print(err.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 on the CPU, 128 on a GPU (as clipcull)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the model runs; on cuda the precision rows are left out and (b) is also "
                         "given as a fraction of decode-only speed, which bounds it there")
    ap.add_argument("--warm-rows", type=int, default=10_000)
    ap.add_argument("--also", nargs="*", default=["ViT-B-16"], metavar="ARCH",
                    help="slower architectures to measure (a) and (b) with as well (default: ViT-B-16)")
    ap.add_argument("--memory-photos", type=int, default=0,
                    help="only measure peak memory of a cold rank over this many small photos (e.g. 10000)")
    args = ap.parse_args()
    if args.memory_photos:
        memory_run(args.memory_photos)
        return

    os.environ["HF_HUB_OFFLINE"] = "1"
    global DEVICE
    DEVICE = args.device
    from clip_cull.scoring.indexer import CPU_BATCH_SIZE, GPU_BATCH_SIZE

    args.batch_size = args.batch_size or (GPU_BATCH_SIZE if DEVICE == "cuda" else CPU_BATCH_SIZE)
    from clip_cull.model.encoder import ModelSpec, load_encoder
    from clip_cull.model.heads.prompt import PromptHead

    photos_dir = corpus(args.count, args.megapixels)
    files = sorted(photos_dir.glob("*.jpg"))[: args.count]
    ckpt = checkpoint()
    spec = ModelSpec("ViT-B-32", str(ckpt))
    head = PromptHead("ensemble")
    cli = cli_measurements(files, photos_dir, ckpt, args.warm_rows, head.prompts())
    print(f"machine: {machine()}")
    print(f"corpus: {len(files)} JPEGs of {args.megapixels:g} MP in {photos_dir}, batch {args.batch_size}")

    encoder = load_encoder(spec, DEVICE)
    model_cpu: list[float] = []
    rate_model = model_only(encoder, args.batch_size, cpu_per_image=model_cpu)
    # With and without the focus/exposure checks, interleaved and best of two, so that a noisy
    # moment on this shared machine does not decide the ratio.
    rate_fast, fast_vecs = indexing_phase(spec, photos_dir, args.batch_size, True, encoder)
    rate_no_checks, _ = indexing_phase(spec, photos_dir, args.batch_size, True, encoder, quality=False)
    rate_fast = max(rate_fast, indexing_phase(spec, photos_dir, args.batch_size, True, encoder)[0])
    rate_model = max(rate_model, model_only(encoder, args.batch_size, cpu_per_image=model_cpu))  # (a) best of two too
    worker = worker_seconds(encoder, files)
    # With the model on every core, the best overlap gives cores / (model CPU + worker CPU) per photo.
    ceiling = (os.cpu_count() or 1) / (min(model_cpu) + worker) / rate_model
    rate_no_checks = max(rate_no_checks, indexing_phase(spec, photos_dir, args.batch_size, True, encoder, quality=False)[0])
    rate_exact, exact_vecs = indexing_phase(spec, photos_dir, args.batch_size, False, encoder)
    rate_plain = straightforward(encoder, files, args.batch_size)
    rate_decode = decode_only(files, encoder.image_size, os.cpu_count() or 1)
    t_full, t_trim, text_diff = text_encoding(encoder)

    # Reduced CPU precisions: speed of the model alone and of the whole pipeline, and how far
    # the ranking moves from fp32.
    precision = {}
    for name in ("int8", "bf16") if DEVICE == "cpu" else ():
        low = load_encoder(ModelSpec("ViT-B-32", str(ckpt), name), "cpu")
        rate_low_model = model_only(low, args.batch_size)
        rate_low, low_vecs = indexing_phase(ModelSpec("ViT-B-32", str(ckpt), name), photos_dir, args.batch_size, True, low)
        precision[name] = (rate_low_model, rate_low, low_vecs)
        del low

    # Fidelity: the ensemble score from fast-decoded vs exactly preprocessed photos.
    from clip_cull.store.cache import Store
    from clip_cull.scoring.indexer import prompt_embeddings
    from clip_cull.model.session import ModelSession

    scratch = Store.open(":memory:")
    session = ModelSession(spec, scratch, DEVICE)
    session._encoder = encoder
    text = prompt_embeddings(scratch, session, head.prompts())
    keys = sorted(fast_vecs)
    s_fast, _ = head.score(np.stack([fast_vecs[k] for k in keys]), text)
    s_exact, _ = head.score(np.stack([exact_vecs[k] for k in keys]), text)
    fidelity = spearman(s_fast, s_exact)
    cos = np.sum(head_norm(np.stack([fast_vecs[k] for k in keys])) * head_norm(np.stack([exact_vecs[k] for k in keys])), axis=1)
    low_rows = []
    for name, (rate_low_model, rate_low, low_vecs) in precision.items():
        s_low, _ = head.score(np.stack([low_vecs[k] for k in keys]), text)
        low_rows.append((f"--precision {name}: model alone / pipeline", f"{rate_low_model:.2f} / {rate_low:.2f} img/s",
                         f"{rate_low_model / rate_model:.2f}x / {rate_low / rate_fast:.2f}x fp32; "
                         f"Spearman vs fp32 {spearman(s_low, s_fast):.4f}"))
    del encoder
    larger = [row for arch in args.also for row in larger_model_rows(arch, photos_dir, args.batch_size)]

    t_first, rss_first, t_cold, rss_cold, t_warm, t_best = (
        cli[k] for k in ("t_first", "rss_first", "t_cold", "rss_cold", "t_warm", "t_best")
    )

    n = len(files)
    rows = [
        ("(a) model alone, random tensors", f"{rate_model:.2f} img/s", ""),
        ("(b) cold indexing, pipeline only (model loaded)", f"{rate_fast:.2f} img/s",
         f"{rate_fast / rate_model:.2f}x (a), {rate_fast / rate_plain:.2f}x (c)"),
        ("(b) cold `rank` whole process", f"{t_cold:.1f} s = {n / t_cold:.2f} img/s",
         f"{n / t_cold / rate_model:.2f}x (a), {n / t_cold / rate_plain:.2f}x (c); includes model load"),
        *([("    ceiling for (b)/(a) on this machine", f"{ceiling:.2f}x",
            f"model {1000 * min(model_cpu):.0f} ms CPU a photo, everything else {1000 * worker:.1f} ms, on {os.cpu_count()} cores")]
          if DEVICE == "cpu" else
          [("    (b) as a fraction of decode-only, all cores", f"{rate_fast / rate_decode:.2f}x",
            f"decoding bounds a GPU pipeline; everything but the model costs {1000 * worker:.1f} ms a photo on one core")]),
        ("(c) straightforward pipeline", f"{rate_plain:.2f} img/s", ""),
        ("    pipeline without focus/exposure checks", f"{rate_no_checks:.2f} img/s",
         f"the checks cost {100 * (1 - rate_fast / rate_no_checks):.1f}% of indexing speed"),
        ("    exact path (full decode) in the pipeline", f"{rate_exact:.2f} img/s", f"{rate_exact / rate_model:.2f}x (a)"),
        ("(d) warm `rank`, nothing new, whole process", f"{t_warm:.2f} s", f"{t_cold / t_warm:.1f}x faster than (b)"),
        (f"(e) warm `best --top 20`, {args.warm_rows} photos", f"{t_best:.2f} s", "whole process, best of 3"),
        ("(f) peak memory, cold `rank`", f"{rss_cold} MiB",
         f"first run with prompts: {rss_first} MiB; includes up to {cli['parent_rss']} MiB shared from this script at fork"),
        ("first run: prompts + model load, 1 photo", f"{t_first:.1f} s", "2000 prompts, trimmed context"),
        ("text encoding, 128 prompts", f"{t_full:.2f} s full / {t_trim:.2f} s trimmed",
         f"{t_full / t_trim:.1f}x; max abs diff {text_diff:.1e}"),
        ("decode only, all cores", f"{rate_decode:.1f} img/s", f"{os.cpu_count()} threads"),
        ("fidelity: fast vs exact decode", f"Spearman {fidelity:.4f}", f"embedding cosine min {cos.min():.4f}"),
        *low_rows,
        *larger,
    ]
    print_table(rows)


def print_table(rows: list[tuple[str, str, str]], value_width: int = 32) -> None:
    """(measure, figure, note) rows as aligned text, then as the Markdown table BENCHMARKS.md takes."""
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<{value_width}} {note}")
    print("\n| measure | figure | ratio / note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name.strip()} | {value} | {note} |")


def head_norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


if __name__ == "__main__":
    main()
