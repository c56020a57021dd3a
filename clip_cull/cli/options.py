"""The options several commands share, declared once.

A command names a group by a parameter annotated with the group's class (for example
`scoring: ScoringFlags`); `@shared_options` puts the group's options on the command line and
hands the command one object holding their values.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from clip_cull.scoring.groups import DEFAULT_SIMILARITY, DEFAULT_WINDOW_S
from clip_cull.core.files import DEFAULT_MAX_FILE_BYTES
from clip_cull.core.images import DEFAULT_MAX_PIXELS
from clip_cull.model.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE
from clip_cull.scoring.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

CORES = max(1, os.cpu_count() or 1)
SETTINGS_NOTE = "\\[default: as last ranked, else"

# The help's panels, in the order they are shown; a command's own options without a panel come
# first, in Typer's "Options" panel, with --help. Everything up to ADVANCED fits a screen
# (tests/test_help.py).
OUTPUT = "Output"
WRITE = "What to write"
SCORING = "What to score"
PHOTOS = "Which photos"
SPLIT = "AVA split"
RATINGS = "With `ratings`"
ADVANCED = "Advanced / distributed"
PANELS = (None, OUTPUT, WRITE, SCORING, PHOTOS, SPLIT, RATINGS, ADVANCED)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Pool(str, Enum):
    auto = "auto"
    threads = "threads"
    processes = "processes"


class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


def flag(*names: str, help: str, panel: str | None = None) -> typer.models.OptionInfo:
    """An on/off option: shows no value in the help (it takes none)."""
    return typer.Option(*names, help=help, metavar="", rich_help_panel=panel)


@dataclass
class CacheFlags:
    db: Annotated[Optional[Path], typer.Option(
        "--db", envvar="CLIPCULL_DB", metavar="FILE", rich_help_panel=ADVANCED,
        help="Cache database file. \\[default: the user cache folder]")] = None
    state: Annotated[Optional[Path], typer.Option(
        "--state", envvar="CLIPCULL_STATE", metavar="FILE", rich_help_panel=ADVANCED,
        help="State database file: the undo journal and each folder's settings. \\[default: the user state folder]")] = None


@dataclass
class ModelFlags(CacheFlags):
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="NAME|FILE", rich_help_panel=SCORING,
        help=f"open_clip model, or a JSON config (env CLIPCULL_MODEL). {SETTINGS_NOTE} {DEFAULT_MODEL}]")] = None
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", "-p", metavar="TAG|FILE", rich_help_panel=SCORING,
        help=f"Weights: a tag or a file (env CLIPCULL_PRETRAINED). {SETTINGS_NOTE} {DEFAULT_PRETRAINED}]")] = None
    device: Annotated[Device, typer.Option(
        "--device", rich_help_panel=ADVANCED, help="Where the model runs; auto: CUDA, else MPS, else the CPU.")] = Device.auto
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, metavar="N", rich_help_panel=ADVANCED,
        help="Photos per model batch. \\[default: 32 on the CPU, 128 on a GPU]")] = None
    workers: Annotated[int, typer.Option(
        "--workers", min=1, metavar="N", rich_help_panel=ADVANCED,
        help="Workers that read and decode photos. \\[default: the CPU cores]", show_default=False)] = CORES
    pool: Annotated[Pool, typer.Option(
        "--pool", rich_help_panel=ADVANCED,
        help="Workers as threads or as processes (faster with many cores; each starts in a fraction of a "
             "second); auto: processes from 3 workers and 256 new photos.")] = Pool.auto


@dataclass
class HeadFlags(ModelFlags):
    """What scores: the model with its precision, and the head."""

    precision: Annotated[Optional[Precision], typer.Option(
        "--precision", rich_help_panel=ADVANCED,
        # The figures: BENCHMARKS.md, 2026-11-29 (int8 1.44-1.50x fp32 end to end, bf16 0.70-0.71x).
        help="Image model precision on the CPU: fp32 (exact), int8 (about 1.5x faster measured, embeddings "
             "slightly different, cached apart) or bf16 (slower on the CPUs measured) (env CLIPCULL_PRECISION). "
             f"{SETTINGS_NOTE} fp32]")] = None
    head: Annotated[Optional[str], typer.Option(
        "--head", metavar="NAME|FILE", rich_help_panel=SCORING,
        help="fixed, context, ensemble, or a head file (env CLIPCULL_HEAD). "
             f"{SETTINGS_NOTE} ensemble]")] = None
    positive: Annotated[Optional[str], typer.Option(
        "--positive", metavar="ADJECTIVE", rich_help_panel=SCORING,
        help=f"Positive adjective of a prompt head. {SETTINGS_NOTE} {DEFAULT_POSITIVE}]")] = None
    negative: Annotated[Optional[str], typer.Option(
        "--negative", metavar="ADJECTIVE", rich_help_panel=SCORING,
        help=f"Negative adjective of a prompt head. {SETTINGS_NOTE} {DEFAULT_NEGATIVE}]")] = None


@dataclass
class ScoringFlags(HeadFlags):
    """What scores, and which files are read."""

    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, metavar="N", rich_help_panel=ADVANCED,
        help="Refuse images with more pixels than this (decompression bombs).")] = DEFAULT_MAX_PIXELS
    max_file_size: Annotated[int, typer.Option(
        "--max-file-size", min=1, metavar="MiB", rich_help_panel=ADVANCED,
        help="Refuse files larger than this before reading them (each is read whole into memory).")
    ] = DEFAULT_MAX_FILE_BYTES // 2**20
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOB", rich_help_panel=PHOTOS,
        help=f"Skip files and folders named like GLOB (repeatable; env CLIPCULL_EXCLUDE, '{os.pathsep}'-separated). "
             "@eaDir, .thumbnails, *.lrdata: always.")] = None
    show_skipped: Annotated[bool, flag(
        "--show-skipped", help="List every unreadable file, also those known from earlier runs.", panel=PHOTOS)] = False
    strict: Annotated[bool, flag("--strict", help="Exit with code 3 when any photo could not be read.", panel=PHOTOS)] = False


@dataclass
class CheckFlags:
    penalize: Annotated[Optional[str], typer.Option(
        "--penalize", metavar="CHECKS", rich_help_panel=SCORING,
        help="Rank photos below all others when flagged: blur, exposure, eyes (closed), face (soft); "
             f"comma-separated. {SETTINGS_NOTE} none]")] = None
    blur_below: Annotated[Optional[float], typer.Option(
        "--blur-below", metavar="FOCUS", rich_help_panel=SCORING,
        help=f"Focus below which a photo is 'blurry'. {SETTINGS_NOTE} a quarter of the folder's median]")] = None


# Ranges checked here rather than by Typer, whose help would show them in the type column and
# narrow every help text of the panel.
def _cosine(value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 1:
        raise typer.BadParameter("a cosine between 0 and 1")
    return value


def _seconds(value: float | None) -> float | None:
    if value is not None and not value >= 0:
        raise typer.BadParameter("0 seconds or more")
    return value


@dataclass
class GroupFlags:
    similarity: Annotated[Optional[float], typer.Option(
        "--similarity", metavar="COSINE", rich_help_panel=SCORING, callback=_cosine,
        help=f"Embedding cosine above which photos are near-duplicates. {SETTINGS_NOTE} {DEFAULT_SIMILARITY}]")] = None
    burst_window: Annotated[Optional[float], typer.Option(
        "--burst-window", metavar="SECONDS", rich_help_panel=SCORING, callback=_seconds,
        help=f"Near-duplicates taken within this many seconds form a burst. {SETTINGS_NOTE} {DEFAULT_WINDOW_S:g}]")] = None


FoldersArg = Annotated[list[Path], typer.Argument(
    metavar="FOLDER_OR_PHOTO", help="Folders (searched recursively) or photo files.", show_default=False)]
DryRunOpt = Annotated[bool, flag("--dry-run", "-n", help="Show exactly what would change, and change nothing.")]
DarktableDefaultOpt = Annotated[bool, flag(
    "--darktable-default-rating-counts", panel=ADVANCED,
    help="Count xmp:Rating 1 in a darktable sidecar as your rating (by default: darktable's import default, unrated).")]
JsonOpt = Annotated[bool, flag("--json", help="One JSON object a line instead of a table.", panel=OUTPUT)]


def shared_options(command):
    """Replace each parameter annotated with an option group by the group's own options."""
    signature = inspect.signature(command, eval_str=True)
    groups = {name: p.annotation for name, p in signature.parameters.items()
              if inspect.isclass(p.annotation) and is_dataclass(p.annotation)}
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for name, p in signature.parameters.items() if name not in groups]
    members: dict[str, list[str]] = {}
    for name, group in groups.items():
        hints = get_type_hints(group, include_extras=True)
        members[name] = [f.name for f in fields(group)]
        params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
                   for f in fields(group)]

    @functools.wraps(command)
    def with_groups(**kwargs):
        for name, group in groups.items():
            kwargs[name] = group(**{member: kwargs.pop(member) for member in members[name]})
        try:
            return command(**kwargs)
        except KeyboardInterrupt:  # where the command has no word of its own for it: still one line, 130
            from clip_cull.cli.common import EXIT_INTERRUPTED
            from clip_cull.cli.ui import message, stderr_console

            message(stderr_console(), "clipcull: interrupted.", "yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    params.sort(key=_panel_order)  # stable: within a panel, the order declared
    with_groups.__signature__ = signature.replace(parameters=params)
    with_groups.__annotations__ = {p.name: p.annotation for p in params}
    return with_groups


def _panel_order(parameter: inspect.Parameter) -> int:
    """Where a parameter's help panel comes (arguments first: they have none)."""
    info = next((m for m in getattr(parameter.annotation, "__metadata__", ()) if hasattr(m, "rich_help_panel")), None)
    panel = getattr(info, "rich_help_panel", None)
    return PANELS.index(panel) if panel in PANELS else len(PANELS)
