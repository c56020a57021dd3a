"""`clipcull heads`, `clipcull train prompts|linear|finetune` and `clipcull eval`: the paper on AVA, through api.AvaExperiment."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import clip_cull.cli.ui as ui
from clip_cull.api import (AvaExperiment, FinetuneSettings, MethodRow, ProbeChoice, PromptChoice, SplitChoice,
                           describe_head, head_catalogue)
from clip_cull.cli.app import app, train_app
from clip_cull.cli.common import fail
from clip_cull.cli.options import ADVANCED, RATINGS, SPLIT, ModelFlags, flag, shared_options
from clip_cull.cli.research import ResearchEvents, model_choice, run_research
from clip_cull.cli.taste import eval_ratings
from clip_cull.core.errors import ClipCullError
from clip_cull.model.heads.prompt import PROMPT_KINDS
from clip_cull.research.train import FIT_CHOICES


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


def _experiment(ava_dir: Path, models: ModelFlags, splits: SplitFlags, fast_decode: bool = False) -> AvaExperiment:
    """The AvaExperiment a command runs: its options as given, the environment the CLI's."""
    split = SplitChoice(splits.split, splits.test_ids, splits.val_ids, splits.test_fraction, splits.seed)
    return AvaExperiment(ava_dir, split=split, model=model_choice(models), cache=models.db, state=models.state,
                         fast_decode=fast_decode, env=os.environ, events=ResearchEvents())


@app.command()
def heads(files: Annotated[Optional[list[Path]], typer.Argument(help="Head files to describe.")] = None) -> None:
    """List the built-in heads, or describe head files (kind, backbone, features, training, figures)."""
    if not files:
        table = Table(show_edge=False)
        table.add_column("head")
        table.add_column("what it is")
        for name, text in head_catalogue():
            table.add_row(name, text)
        ui.stdout_console().print(table)
        return
    for path in files:
        try:
            info = describe_head(path)
        except ClipCullError as e:
            fail(str(e))
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
    with _experiment(ava_dir, models, splits, fast_decode) as experiment:
        found = run_research(experiment, lambda: experiment.train_prompts(
            output, PromptChoice(kind, criterion, scoring, fit_on)))
    table = Table(title=f"prompt pairs on {found.images} training images", show_edge=False)
    for column in ("head", "positive", "negative", "accuracy", "Spearman"):
        table.add_column(column)
    for k in PROMPT_KINDS:
        for r in found.best(k, top):
            table.add_row(k, r.positive, r.negative, f"{r.accuracy:.4f}", f"{r.spearman:.4f}")
    ui.stdout_console().print(table)
    _wrote(found)


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
    with _experiment(ava_dir, models, splits, fast_decode) as experiment:
        trained = run_research(experiment, lambda: experiment.train_linear(output, ProbeChoice(features, ridge, fit_on)))
    _wrote(trained)
    if trained.evaluation:
        _print_rows([trained.evaluation], as_json=False)


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
    settings = FinetuneSettings(epochs, patience, train_batch, lr_head, lr_backbone, momentum, loader_workers,
                                splits.seed)
    with _experiment(ava_dir, models, splits) as experiment:
        result = run_research(experiment, lambda: experiment.train_finetune(output, settings, fresh=fresh))
    if result.main_process:
        state = result.state
        ui.message(ui.stderr_console(), f"clipcull: best epoch {state.best_epoch} (validation EMD {state.best_val:.4f}); "
                                        f"model in {output}. Score with: clipcull rank FOLDER --head {output}", "dim")


def _wrote(trained) -> None:
    ui.message(ui.stderr_console(), f"clipcull: wrote {trained.path} (split: {trained.split_path})", "dim")


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
    if all_heads and features not in ("pooled", "projected"):  # only --all's probe reads them
        raise typer.BadParameter("--features is pooled or projected")
    _check_choices(scoring, fit_on)
    probe = ProbeChoice(features, _ridge_choice(ridge, ols), fit_on, scoring)
    with _experiment(ava_dir, models, splits, fast_decode) as experiment:
        rows = run_research(experiment, lambda: experiment.evaluate(
            head or [], paper_methods=all_heads, probe=probe, resamples=resamples))
    _print_rows(rows, json_out)


def _check_choices(scoring: str, fit_on: str) -> None:
    if scoring not in ("code", "paper"):
        raise typer.BadParameter("--prompt-scoring is code or paper")
    if fit_on not in FIT_CHOICES:
        raise typer.BadParameter(f"--fit-on is {' or '.join(FIT_CHOICES)}")


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


def _print_rows(rows: list[MethodRow], as_json: bool) -> None:
    rows = [row.as_dict() for row in rows]
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
