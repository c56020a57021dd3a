"""`clipcull heads`, `clipcull train prompts|linear` and `clipcull eval`: the paper on AVA."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass

import numpy as np
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import clip_cull.cli.ui as ui
from clip_cull.research.ava import Split, load_ava, make_split, read_ids
from clip_cull.cli.app import app, train_app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import model_session as _model_session
from clip_cull.cli.common import open_store as _open_store
from clip_cull.cli.common import quiet_libraries as _quiet_libraries
from clip_cull.cli.options import ADVANCED, RATINGS, SPLIT, Device, ModelFlags, flag, shared_options
from clip_cull.cli.scoring import model_spec
from clip_cull.cli.taste import eval_ratings
from clip_cull.core.distributed import local_rank
from clip_cull.core.errors import ClipCullError
from clip_cull.model.heads import BUILTIN_HEADS, load_head, resolve_head
from clip_cull.model.heads.linear import probe_head
from clip_cull.model.heads.prompt import PROMPT_KINDS, PromptHead
from clip_cull.scoring.indexer import Failure, IndexOptions, prompt_embeddings
from clip_cull.model.prompts import negative_adjectives, positive_adjectives
from clip_cull.research import train as training


AvaArg = Annotated[Path, typer.Argument(metavar="AVA_DIR", show_default=False, help="The AVA folder: AVA.txt and images/{id}.jpg (or the images beside it).")]


@dataclass
class SplitFlags:
    split: Annotated[Optional[Path], typer.Option(
        "--split", metavar="FILE", rich_help_panel=SPLIT, help="A split file written by an earlier train run.")] = None
    test_ids: Annotated[Optional[Path], typer.Option(
        "--test-ids", metavar="FILE", rich_help_panel=SPLIT, help="File of test image ids (a list, or CSV).")] = None
    val_ids: Annotated[Optional[Path], typer.Option(
        "--val-ids", metavar="FILE", rich_help_panel=SPLIT, help="File of validation image ids.")] = None
    test_fraction: Annotated[Optional[float], typer.Option(
        "--test-fraction", min=0.0, max=0.9, metavar="SHARE", rich_help_panel=SPLIT,
        help="Without split files: the share drawn for test. \\[default: the paper's 25,551 of 255,530]")] = None
    seed: Annotated[int, typer.Option("--seed", metavar="N", rich_help_panel=SPLIT, help="Seed of the random split.")] = 0


FitOnOpt = Annotated[
    str,
    typer.Option("--fit-on", metavar="SPLIT",
                 help="Fit on train (without its validation part) or train+validation (as the authors' code)."),
]
ScoringOpt = Annotated[
    str,
    typer.Option("--prompt-scoring", metavar="code|paper",
                 help="Continuous prompt score: code (100 * I . T on raw prompt vectors, as the "
                      "authors' code computed Table 1) or paper (cosines, as the paper's text says)."),
]
OlsOpt = Annotated[bool, flag("--ols", help="Plain least squares, the paper's exact probe (same as --ridge 0).")]
FastOpt = Annotated[bool, flag("--fast-decode", panel=ADVANCED,
                               help="Reduced-scale JPEG decoding: faster, figures differ slightly.")]


class _Context:
    """What every AVA command sets up: store, model session, dataset, split, console."""

    def __init__(self, ava_dir, models: ModelFlags, fast_decode: bool, splits: SplitFlags):
        _quiet_libraries()
        self.err = ui.stderr_console()
        spec = model_spec(models)
        self.store = _open_store(models.db, models.state)
        self.stack = contextlib.ExitStack()
        self.stack.callback(self.store.close)
        self.session = _model_session(spec, self.store, models.device.value, self.err)
        self.options = IndexOptions(batch_size=models.batch_size, workers=models.workers, pool=models.pool.value,
                                    fast_decode=fast_decode, quality=False)
        split_file, test_ids, val_ids = splits.split, splits.test_ids, splits.val_ids
        test_fraction, seed = splits.test_fraction, splits.seed
        self.ava = load_ava(ava_dir)
        if split_file:
            self.split = Split.load(split_file)
        else:
            self.split = make_split(
                self.ava,
                read_ids(test_ids) if test_ids else None,
                read_ids(val_ids) if val_ids else None,
                test_fraction,
                seed=seed,
            )
        missing = sum(p is None for p in self.ava.paths)
        ui.message(
            self.err,
            f"clipcull: AVA: {len(self.ava.ids)} rated images ({missing} missing from the folder); split "
            f"({self.split.source}): {len(self.split.train)} train, {len(self.split.validation)} validation, "
            f"{len(self.split.test)} test",
            "dim",
        )

    def features(self, ids: list[str], kind: str, what: str):
        def on_failure(failure: Failure) -> None:
            ui.message(self.err, f"clipcull: skipped {ui.shown_path(failure.path)}: {failure.reason}", "yellow")

        with ui.progress_bars(self.err) as bar:
            got = training.ava_features(self.store, self.session, self.ava, ids, kind, self.options,
                                        progress=bar(f"embedding {what} images"), on_failure=on_failure)
        ui.message(self.err, f"clipcull: {what}: {len(got.ids)} images used, {got.missing} missing, "
                             f"{got.unreadable} unreadable", "dim")
        if not got.ids:
            raise ClipCullError(f"no usable {what} images in {self.ava.folder}")
        return got

    def prompt_vectors(self, prompts: list[str]) -> dict:
        with ui.progress_bars(self.err) as bar:
            return prompt_embeddings(self.store, self.session, prompts, bar("embedding prompts"))


def _context(**kwargs) -> _Context:
    try:
        return _Context(**kwargs)
    except ClipCullError as e:
        _fail(str(e))


@app.command()
def heads(files: Annotated[Optional[list[Path]], typer.Argument(help="Head files to describe.")] = None) -> None:
    """List the built-in heads, or describe head files (kind, backbone, features, training, figures)."""
    if not files:
        table = Table(show_edge=False)
        table.add_column("head")
        table.add_column("what it is")
        for name, text in BUILTIN_HEADS.items():
            table.add_row(name, text)
        table.add_row("FILE.safetensors", "a head written by `clipcull train` (linear probe or chosen prompt pair)")
        table.add_row("FILE.pth", "a LAION aesthetic predictor (sa_0_4_vit_*_linear.pth, or the improved MLP)")
        ui.stdout_console().print(table)
        return
    for path in files:
        try:
            head = load_head(path)
        except ClipCullError as e:
            _fail(str(e))
        meta = getattr(head, "metadata", {}) or {}
        info = {
            "file": str(path),
            "name": head.name,
            "features": head.features,
            "backbone": head.backbone,
            **({"prompt_scoring": head.scoring} if isinstance(head, PromptHead) else {}),
            "trained_on": meta.get("trained_on"),
            "eval": meta.get("eval"),
        }
        sys.stdout.write(json.dumps(info, indent=2) + "\n")


@train_app.command("prompts")
@shared_options
def train_prompts(
    ava_dir: AvaArg,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write the chosen head (.safetensors).")],
    kind: Annotated[str, typer.Option("--kind", metavar="KIND", help="Which prompt head to write: fixed, context or ensemble.")] = "ensemble",
    criterion: Annotated[str, typer.Option("--criterion", metavar="NAME", help="Choose the pair by spearman (continuous) or accuracy (binary).")] = "spearman",
    top: Annotated[int, typer.Option("--top", min=1, metavar="N", help="How many pairs to show per head kind.")] = 5,
    scoring: ScoringOpt = "paper", fit_on: FitOnOpt = "train",
    models: ModelFlags = None,
    splits: SplitFlags = None,
    fast_decode: FastOpt = False,
) -> None:
    """The paper's prompt search: every positive x negative adjective pair (27 x 12) for the fixed, context and ensemble heads, on the training split; writes the best pair's head."""
    if kind not in PROMPT_KINDS or criterion not in ("spearman", "accuracy"):
        raise typer.BadParameter("--kind is fixed, context or ensemble; --criterion is spearman or accuracy")
    _check_choices(scoring, fit_on)
    ctx = _context(ava_dir=ava_dir, models=models, fast_decode=fast_decode, splits=splits)
    with ctx.stack:
        try:
            data = ctx.features(training.fitting_ids(ctx.split, fit_on), "projected", fit_on)
            positives, negatives = list(positive_adjectives()), list(negative_adjectives())
            vectors = ctx.prompt_vectors(training.search_prompts_needed(positives, negatives))
            results = training.search_prompts(data.features, data.means, vectors, positives, negatives, scoring=scoring)
        except ClipCullError as e:
            _fail(str(e))
        table = Table(title=f"prompt pairs on {len(data.ids)} training images", show_edge=False)
        for column in ("head", "positive", "negative", "accuracy", "Spearman"):
            table.add_column(column)
        for k in PROMPT_KINDS:
            ranked = sorted((r for r in results if r.kind == k), key=lambda r: -getattr(r, criterion))
            for r in ranked[:top]:
                table.add_row(k, r.positive, r.negative, f"{r.accuracy:.4f}", f"{r.spearman:.4f}")
        ui.stdout_console().print(table)
        chosen = training.best_pair(results, kind, criterion)
        head = PromptHead(kind, chosen.positive, chosen.negative, scoring=scoring)
        trained_on = {"dataset": str(ctx.ava.folder), "split": ctx.split.source, "images": len(data.ids), "fit_on": fit_on,
                      "backbone": ctx.session.text_model_id, "criterion": criterion,
                      "train_accuracy": chosen.accuracy, "train_spearman": chosen.spearman}
        _write(ctx, head, output, trained_on)


@train_app.command("linear")
@shared_options
def train_linear(
    ava_dir: AvaArg,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write the head (.safetensors or .npz).")],
    features: Annotated[str, typer.Option("--features", metavar="KIND", help="pooled (the paper's text) or projected (the authors' code): 768 and 512 numbers for ViT-B-32.")] = "pooled",
    ridge: Annotated[str, typer.Option("--ridge", metavar="auto|STRENGTH", help="auto: chosen by 5-fold cross-validation, or a strength; 0 is plain least squares, the paper's exact method (also --ols).")] = "auto",
    ols: OlsOpt = False, fit_on: FitOnOpt = "train",
    models: ModelFlags = None,
    splits: SplitFlags = None,
    fast_decode: FastOpt = False,
) -> None:
    """The paper's linear probe: z-scored features, least squares on the AVA mean score; label = prediction > 5.

    Fitted on the training split from cached features, evaluated on the test split.
    """
    if features not in ("pooled", "projected"):
        raise typer.BadParameter("--features is pooled or projected")
    ridge = _ridge_choice(ridge, ols)
    _check_choices("paper", fit_on)
    ctx = _context(ava_dir=ava_dir, models=models, fast_decode=fast_decode, splits=splits)
    with ctx.stack:
        try:
            data = ctx.features(training.fitting_ids(ctx.split, fit_on), features, fit_on)
            fit = training.fit_probe(data.features, data.means, ridge, splits.seed)
            head = probe_head(fit, features, ctx.session.text_model_id)
            evaluation = None
            if ctx.split.test:
                test = ctx.features(ctx.split.test, features, "test")
                evaluation = training.evaluate_head(head, test.features, test.means, {}).as_dict()
        except ClipCullError as e:
            _fail(str(e))
        trained_on = {"dataset": str(ctx.ava.folder), "split": ctx.split.source, "images": len(data.ids),
                      "features": features, "ridge_alpha": fit.alpha, "fit_on": fit_on}
        _write(ctx, head, output, trained_on, evaluation)
        if evaluation:
            _print_rows([_row("linear", f"linear probe ({features})", evaluation)], as_json=False)


@train_app.command("finetune")
@shared_options
def train_finetune(
    ava_dir: AvaArg,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FOLDER", help="Folder for the model (resumes from it if it holds an unfinished run).")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N", help="Most epochs to run.")] = 100,
    patience: Annotated[int, typer.Option("--patience", min=1, metavar="N", help="Stop after this many epochs without a better validation EMD.")] = 10,
    train_batch: Annotated[int, typer.Option("--train-batch-size", min=1, metavar="N", help="Images per SGD step in total; under torchrun N processes take 1/N each.")] = 128,
    lr_head: Annotated[float, typer.Option("--lr-head", metavar="RATE", help="Learning rate of the new Linear(768, 10).")] = 1e-2,
    lr_backbone: Annotated[float, typer.Option("--lr-backbone", metavar="RATE", help="Learning rate of the image encoder.")] = 1e-4,
    momentum: Annotated[float, typer.Option("--momentum", metavar="M", help="SGD momentum.")] = 0.5,
    loader_workers: Annotated[Optional[int], typer.Option("--loader-workers", min=0, metavar="N", rich_help_panel=ADVANCED, help="DataLoader processes decoding images (0: in the training process). \\[default: on a GPU the cores, shared among torchrun's processes; on the CPU 0]")] = None,
    fresh: Annotated[bool, flag("--fresh", help="Start over instead of resuming.")] = False,
    models: ModelFlags = None,
    splits: SplitFlags = None,
) -> None:
    """The paper's fine-tuning: image encoder + Linear(768, 10) + softmax, EMD loss, SGD, early stopping.

    Resumable; the best checkpoint is kept. Under `torchrun --nproc-per-node N -m clip_cull train finetune ...` it runs DistributedDataParallel.
    """
    from clip_cull.research import finetune
    from clip_cull.model.heads.finetuned import trained_architecture
    from clip_cull.core.distributed import torchrun_shard

    distributed = torchrun_shard() is not None
    if distributed:
        _init_distributed(models.device)
    rank = _dist_rank()
    ctx = _context(ava_dir=ava_dir, models=models, fast_decode=False, splits=splits)
    with ctx.stack:
        try:
            # One pass through the cache finds unreadable images once (process 0 does it; the
            # others then read the warm cache) so training never stops on a bad file.
            if rank != 0:
                _barrier()
            train = ctx.features(ctx.split.train, "projected", "train")
            val = ctx.features(ctx.split.validation, "projected", "validation")
            if rank == 0 and distributed:
                _barrier()
            encoder = ctx.session.encoder
            where = ctx.ava.index()

            def images(ids):
                rows = [where[i] for i in ids]
                counts = ctx.ava.counts[rows].astype(np.float64)
                return finetune.AvaImages([str(ctx.ava.paths[r]) for r in rows],
                                          counts / counts.sum(axis=1, keepdims=True), encoder.preprocess)

            workers_used = (finetune.default_loader_workers(device_type=encoder.device.type)
                            if loader_workers is None else loader_workers)
            settings = finetune.FinetuneSettings(epochs, patience, train_batch, lr_head, lr_backbone, momentum,
                                                 workers_used, splits.seed)
            world = _dist_world()
            per_process = finetune.per_process_batch(train_batch, world)
            if rank == 0:
                ui.message(ctx.err, f"clipcull: total batch {train_batch} ({world} process(es) x {per_process}), "
                                    f"{workers_used} loader worker(s) per process, on {encoder.device}", "dim")
            metadata = {
                "architecture": ctx.session.spec.architecture,
                # The exact network (QuickGELU for OpenAI's weights) so that it reloads as trained.
                "model_config": trained_architecture(ctx.session.spec.architecture, encoder.model),
                "backbone": ctx.session.text_model_id,
                "trained_on": {"dataset": str(ctx.ava.folder), "split": ctx.split.source,
                               "train_images": len(train.ids), "validation_images": len(val.ids)},
                "settings": vars(settings),
            }
            if rank == 0:
                output.mkdir(parents=True, exist_ok=True)
                ctx.split.save(output / "split.json")

            def on_epoch(report):
                if rank == 0:
                    ui.message(ctx.err, f"clipcull: epoch {report.epoch}: train EMD {report.train_emd:.4f}, "
                                        f"validation EMD {report.val_emd:.4f} (best: epoch {report.best_epoch})"
                                        + (" - stopping early" if report.stopped else ""), "dim")

            state = finetune.train_finetune(encoder, images(train.ids), images(val.ids), output, settings,
                                            metadata, on_epoch, fresh)
        except ClipCullError as e:
            _fail(str(e))
    if rank == 0:
        ui.message(ctx.err, f"clipcull: best epoch {state.best_epoch} (validation EMD {state.best_val:.4f}); "
                            f"model in {output}. Score with: clipcull rank FOLDER --head {output}", "dim")


def _init_distributed(device: Device) -> None:
    import torch
    import torch.distributed as dist

    backend = "nccl" if device != Device.cpu and torch.cuda.is_available() else "gloo"
    if backend == "nccl" and local_rank() is not None:
        torch.cuda.set_device(local_rank())  # one GPU per process, and NCCL's own calls on it
    dist.init_process_group(backend=backend)


def _dist_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _dist_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _write(ctx: _Context, head, output: Path, trained_on: dict, evaluation: dict | None = None) -> None:
    from clip_cull.model.heads.files import save_head

    path = save_head(head, output, trained_on, evaluation)
    split_path = ctx.split.save(path.with_name(path.stem + ".split.json"))
    ui.message(ctx.err, f"clipcull: wrote {path} (split: {split_path})", "dim")


@app.command("eval")
@shared_options
def eval_ava(
    target: Annotated[list[str], typer.Argument(
        metavar="AVA_DIR | ratings FOLDER",
        help="The AVA folder; or `ratings` and folders of photos you rated, to see how each head agrees with your stars.")],
    head: Annotated[Optional[list[str]], typer.Option(
        "--head", metavar="NAME|FILE", help="A head name or file; repeat for several.")] = None,
    all_heads: Annotated[bool, flag(
        "--all", help="Every paper method: the three prompt heads with the paper's pairs, and a linear probe.")] = False,
    features: Annotated[str, typer.Option(
        "--features", metavar="KIND", help="Features of the linear probe of --all: pooled or projected.")] = "pooled",
    scoring: Annotated[str, typer.Option(
        "--prompt-scoring", metavar="code|paper",
        help="Continuous prompt score: code (as the authors' code computed Table 1) or paper (cosines).")] = "code",
    ridge: Annotated[str, typer.Option(
        "--ridge", metavar="auto|STRENGTH",
        help="--all's probe: auto (cross-validated) or a number; 0: least squares.")] = "auto",
    ols: OlsOpt = False, fit_on: FitOnOpt = "train",
    json_out: Annotated[bool, flag("--json", help="One JSON object a line instead of a table.")] = False,
    resamples: Annotated[int, typer.Option(
        "--resamples", min=1, metavar="N", help="Bootstrap resamples for the 95% intervals.")] = 1000,
    models: ModelFlags = None,
    splits: SplitFlags = None,
    fast_decode: FastOpt = False,
    unrated_as: Annotated[Optional[int], typer.Option(
        "--unrated-as", min=-1, max=5, metavar="STARS", rich_help_panel=RATINGS,
        help="Count unrated photos as this rating (-1: reject).")] = None,
    darktable_default_counts: Annotated[bool, flag(
        "--darktable-default-rating-counts", panel=ADVANCED,
        help="Count xmp:Rating 1 in a darktable sidecar as your rating (by default: darktable's import default, "
             "unrated).")] = False,
) -> None:
    """Accuracy, Spearman and Pearson of heads on the AVA test split, with 95% intervals, beside the paper's Table 1.

    `clipcull eval ratings FOLDER...` instead compares every prompt head and each --head with your stars: Spearman, accuracy at telling rejects / 1-2 stars from 4-5 stars, and the share of your 5-star photos in the head's top 10%.
    """
    if target[0] == "ratings" and len(target) > 1 and not (Path("ratings") / "AVA.txt").exists():
        eval_ratings(target[1:], head or [], models, unrated_as, json_out, resamples, darktable_default_counts)
        return
    if len(target) != 1:
        raise typer.BadParameter("give one AVA folder, or `ratings FOLDER...`")
    ava_dir = Path(target[0])
    if not head and not all_heads:
        raise typer.BadParameter("give --head NAME|FILE (repeatable) or --all")
    _check_choices(scoring, fit_on)
    probe = training.ProbeChoice(features, _ridge_choice(ridge, ols), fit_on, scoring)
    ctx = _context(ava_dir=ava_dir, models=models, fast_decode=fast_decode, splits=splits)
    with ctx.stack:
        try:
            rows = _evaluate(ctx, head or [], all_heads, probe, resamples)
        except ClipCullError as e:
            _fail(str(e))
    _print_rows(rows, json_out)


def _check_choices(scoring: str, fit_on: str) -> None:
    if scoring not in ("code", "paper"):
        raise typer.BadParameter("--prompt-scoring is code or paper")
    if fit_on not in training.FIT_CHOICES:
        raise typer.BadParameter(f"--fit-on is {' or '.join(training.FIT_CHOICES)}")


def _ridge_choice(ridge: str, ols: bool) -> str | float:
    if ols:
        return 0.0
    if ridge == "auto":
        return ridge
    try:
        value = float(ridge)
    except ValueError:
        raise typer.BadParameter("--ridge is auto or a number (0: least squares)") from None
    if not value >= 0:
        raise typer.BadParameter("--ridge must be auto or a number >= 0")
    return value


def _evaluate(ctx: _Context, names: list[str], all_heads: bool, probe_choice, resamples: int) -> list[dict]:
    features, scoring = probe_choice.features, probe_choice.scoring
    from clip_cull.model.heads.files import check_backbone

    test_cache: dict[str, object] = {}

    def test_features(kind: str):
        if kind not in test_cache:
            test_cache[kind] = ctx.features(ctx.split.test, kind, "test")
        return test_cache[kind]

    train_means = ctx.ava.means[[ctx.ava.index()[i] for i in ctx.split.train]]
    rows = [_row("majority", "majority baseline",
                 training.majority_baseline(train_means, test_features("projected").means, resamples).as_dict())]
    if all_heads:
        proj = test_features("projected")
        vectors = ctx.prompt_vectors(_paper_prompts())
        for kind in PROMPT_KINDS:
            evaluation = training.evaluate_paper_prompts(kind, proj.features, proj.means, vectors, resamples, scoring)
            rows.append(_row(kind, f"{kind} (paper's pairs, {scoring} scoring)", evaluation.as_dict()))
        train = ctx.features(training.fitting_ids(ctx.split, probe_choice.fit_on), features, probe_choice.fit_on)
        fit = training.fit_probe(train.features, train.means, probe_choice.ridge)
        probe = probe_head(fit, features, ctx.session.text_model_id)
        data = test_features(features)
        how = "least squares" if fit.alpha == 0 else ("CV ridge" if probe_choice.ridge == "auto" else "ridge")
        row = _row("linear", f"linear probe ({features}, {how}, fit on {probe_choice.fit_on})",
                   training.evaluate_head(probe, data.features, data.means, {}, resamples).as_dict())
        rows.append(row | {"ridge_alpha": fit.alpha, "fit_images": len(train.ids)})
    for name in names:
        h = resolve_head(name)
        if isinstance(h, PromptHead) and name in PROMPT_KINDS:
            h = PromptHead(h.kind, h.positive, h.negative, h.features, h.backbone, scoring)
        if hasattr(h, "session"):  # a fine-tuned model: run it (cached) on the test images
            data = training.ava_features(ctx.store, h.session(ctx.store, ctx.session.device), ctx.ava, ctx.split.test,
                                         "projected", ctx.options)
            rows.append(_row("finetune", h.name, training.evaluate_head(h, data.features, data.means, {}, resamples).as_dict()))
            continue
        data = test_features(h.features)
        check_backbone(h, ctx.session.text_model_id, ctx.session.spec.architecture, data.features.shape[1])
        vectors = ctx.prompt_vectors(h.prompts()) if h.prompts() else {}
        kind = h.kind if isinstance(h, PromptHead) else ("linear" if "linear(" in h.name else None)
        rows.append(_row(kind, h.name, training.evaluate_head(h, data.features, data.means, vectors, resamples).as_dict()))
    return rows


def _paper_prompts() -> list[str]:
    prompts: list[str] = []
    for kind, pairs in training.PAPER_PAIRS.items():
        for pos, neg in pairs:
            prompts += PromptHead(kind, pos, neg).prompts()
    return list(dict.fromkeys(prompts))


def _row(kind: str | None, method: str, evaluation: dict) -> dict:
    paper = training.PAPER_TABLE.get(kind or "")
    return {
        "method": method,
        **evaluation,
        "paper": None if paper is None else {"row": paper[0], "accuracy": paper[1], "spearman": paper[2], "pearson": paper[3]},
    }


def _print_rows(rows: list[dict], as_json: bool) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return

    def cell(fig):
        if not fig:
            return "-"
        low, high = fig["ci95"]
        return f"{fig['value']:.3f} [{low:.3f}, {high:.3f}]"

    def paper_cell(value):
        return "-" if value is None else f"{value:.3f}"

    table = Table(title="AVA test split (95% bootstrap intervals) beside the paper's Table 1", show_edge=False)
    for column in ("method", "N", "accuracy", "SRCC", "PLCC", "paper row", "acc", "SRCC", "PLCC"):
        table.add_column(column)
    for row in rows:
        paper = row["paper"] or {}
        table.add_row(row["method"], str(row["n"]), cell(row["accuracy"]), cell(row["spearman"]), cell(row["pearson"]),
                      paper.get("row", "-"), paper_cell(paper.get("accuracy")), paper_cell(paper.get("spearman")),
                      paper_cell(paper.get("pearson")))
    ui.stdout_console().print(table)
