"""`clipcull eval ratings` and `clipcull train ratings`: the photographer's own stars and rejects."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import clip_cull.cli.ui as ui
from clip_cull.api import NotALinearPrior, RatingsChoice, Taste, TasteRow
from clip_cull.cli.app import train_app
from clip_cull.cli.common import fail
from clip_cull.cli.options import DarktableDefaultOpt, ModelFlags, shared_options
from clip_cull.cli.research import ResearchEvents, model_choice, run_research

UnratedOpt = Annotated[Optional[int], typer.Option(
    "--unrated-as", min=-1, max=5, metavar="STARS",
    help="Count unrated photos as this rating (-1: reject). \\[default: leave them out]", show_default=False)]


def _taste(folders: list, models: ModelFlags, unrated_as: int | None, darktable_default_counts: bool) -> Taste:
    """The Taste a command runs: its options as given, the environment the CLI's."""
    return Taste(folders, ratings=RatingsChoice(unrated_as, darktable_default_counts), model=model_choice(models),
                 cache=models.db, state=models.state, env=os.environ, events=ResearchEvents())


def eval_ratings(folders: list[str], heads: list[str], models: ModelFlags, unrated_as, json_out: bool,
                 resamples: int, darktable_default_counts: bool = False) -> None:
    with _taste(folders, models, unrated_as, darktable_default_counts) as taste:
        rows = run_research(taste, lambda: taste.evaluate(heads, resamples))
    _print(rows, json_out)


def _print(rows: list[TasteRow], json_out: bool) -> None:
    rows = [row.as_dict() for row in rows]
    if json_out:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return

    def cell(fig):
        return "-" if not fig else f"{fig['value']:.3f} [{fig['ci95'][0]:.3f}, {fig['ci95'][1]:.3f}]"

    table = Table(title="agreement with your ratings (95% bootstrap intervals)", show_edge=False)
    for column in ("head", "N", "Spearman", "rejects/1-2 vs 4-5 (N)", "5-star in top 10% (N)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["head"], str(r["n"]), cell(r["spearman"]), f"{cell(r['accuracy'])} ({r['n_binary']})",
                      f"{cell(r['five_star_in_top10'])} ({r['n_five_star']})")
    ui.stdout_console().print(table)


@train_app.command("ratings")
@shared_options
def train_ratings(
    folders: Annotated[list[Path], typer.Argument(
        metavar="FOLDER", show_default=False,
        help="Folders whose photos you have rated (XMP sidecars or embedded XMP).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="The head file to write (.safetensors).")],
    features: Annotated[str, typer.Option(
        "--features", metavar="KIND",
        help="projected or pooled features (512 and 768 numbers for ViT-B-32).")] = "projected",
    unrated_as: UnratedOpt = None,
    darktable_default_counts: DarktableDefaultOpt = False,
    start_from: Annotated[Optional[Path], typer.Option(
        "--start-from", metavar="FILE",
        help="A linear head to start from and adapt (e.g. your AVA probe, on the same --features).")] = None,
    resamples: Annotated[int, typer.Option(
        "--resamples", min=1, metavar="N", help="Bootstrap resamples for the 95% intervals.")] = 1000,
    models: ModelFlags = None,
) -> None:
    """Fit a personal head on your own ratings; prints its cross-validated figures beside the zero-shot ensemble's.

    Ridge on cached features, its strength chosen by cross-validation grouped by shoot (bursts never straddle folds).
    """
    if features not in ("projected", "pooled"):
        raise typer.BadParameter("--features is projected or pooled")
    with _taste(folders, models, unrated_as, darktable_default_counts) as taste:
        trained = run_research(taste, lambda: _personal_head(taste, output, features, start_from, resamples))
    _print(trained.rows(), False)
    ui.message(ui.stderr_console(), f"clipcull: wrote {output}. Use it: clipcull rank FOLDER --head {output}", "dim")


def _personal_head(taste: Taste, output: Path, features: str, start_from: Path | None, resamples: int):
    try:
        return taste.train(output, features=features, start_from=start_from, resamples=resamples)
    except NotALinearPrior as e:  # said with the option's name
        fail(f"--start-from needs a linear head on {e.features} features, like `clipcull train linear` writes")
