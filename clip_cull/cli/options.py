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

from clip_cull.actions.groups import DEFAULT_SIMILARITY, DEFAULT_WINDOW_S
from clip_cull.files import DEFAULT_MAX_FILE_BYTES
from clip_cull.images import DEFAULT_MAX_PIXELS
from clip_cull.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE
from clip_cull.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

CORES = max(1, os.cpu_count() or 1)
SETTINGS_NOTE = "\\[default: as the folder was last ranked, else"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


def flag(*names: str, help: str) -> typer.models.OptionInfo:
    """An on/off option: shows no value in the help (it takes none)."""
    return typer.Option(*names, help=help, metavar="")


@dataclass
class CacheFlags:
    db: Annotated[Optional[Path], typer.Option(
        "--db", envvar="CLIPCULL_DB", metavar="FILE",
        help="Cache database file. \\[default: the user cache folder]")] = None
    state: Annotated[Optional[Path], typer.Option(
        "--state", envvar="CLIPCULL_STATE", metavar="FILE",
        help="State database file: the undo journal and each folder's settings, kept apart from the cache. "
             "\\[default: the user state folder]")] = None


@dataclass
class ModelFlags(CacheFlags):
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="NAME|FILE",
        help=f"open_clip model name, or a JSON model config file (env CLIPCULL_MODEL). {SETTINGS_NOTE} {DEFAULT_MODEL}]")] = None
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", "-p", metavar="TAG|FILE",
        help="Pretrained tag, or a local checkpoint file (.pt/.bin/.safetensors) (env CLIPCULL_PRETRAINED). "
             f"{SETTINGS_NOTE} {DEFAULT_PRETRAINED}]")] = None
    device: Annotated[Device, typer.Option(
        "--device", help="Where the model runs; auto tries CUDA, then MPS, then the CPU.")] = Device.auto
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="Photos per model batch. \\[default: 32 on the CPU, 128 on a GPU]")] = None
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Threads that read and decode photos beside the model. \\[default: the number of CPU cores]",
        show_default=False)] = CORES


@dataclass
class HeadFlags(ModelFlags):
    """What scores: the model with its precision, and the head."""

    precision: Annotated[Optional[Precision], typer.Option(
        "--precision",
        help="CPU precision of the image model: fp32 (exact), int8 (several times faster, embeddings slightly "
             f"different and cached apart) or bf16 (env CLIPCULL_PRECISION). See BENCHMARKS.md. {SETTINGS_NOTE} fp32]")] = None
    head: Annotated[Optional[str], typer.Option(
        "--head", metavar="NAME|FILE",
        help="fixed, context, ensemble (the paper's prompt heads), or a head file: a trained .safetensors/.npz or a "
             "LAION aesthetic .pth (env CLIPCULL_HEAD). `clipcull heads` lists them. "
             f"{SETTINGS_NOTE} ensemble]")] = None
    positive: Annotated[Optional[str], typer.Option(
        "--positive", metavar="ADJECTIVE",
        help=f"Positive adjective of a prompt head. {SETTINGS_NOTE} {DEFAULT_POSITIVE}]")] = None
    negative: Annotated[Optional[str], typer.Option(
        "--negative", metavar="ADJECTIVE",
        help=f"Negative adjective of a prompt head. {SETTINGS_NOTE} {DEFAULT_NEGATIVE}]")] = None


@dataclass
class ScoringFlags(HeadFlags):
    """What scores, and which files are read."""

    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, help="Refuse images with more pixels than this (decompression bombs).")] = DEFAULT_MAX_PIXELS
    max_file_size: Annotated[int, typer.Option(
        "--max-file-size", min=1, metavar="MiB",
        help="Refuse files larger than this many MiB before reading them (each photo is read whole into memory).")
    ] = DEFAULT_MAX_FILE_BYTES // 2**20
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOB",
        help="Skip files and folders whose name matches GLOB; repeatable. Also CLIPCULL_EXCLUDE (separated by "
             f"'{os.pathsep}'). @eaDir, .thumbnails and *.lrdata are always skipped.")] = None
    show_skipped: Annotated[bool, flag(
        "--show-skipped", help="List every unreadable file, also those remembered from earlier runs.")] = False
    strict: Annotated[bool, flag("--strict", help="Exit with code 3 when any photo could not be read.")] = False


@dataclass
class CheckFlags:
    penalize: Annotated[Optional[str], typer.Option(
        "--penalize", metavar="blur,exposure",
        help="Rank blurry and/or badly exposed photos below all others: score - (max - min score) x number of such "
             f"flags. {SETTINGS_NOTE} none]")] = None
    blur_below: Annotated[Optional[float], typer.Option(
        "--blur-below", metavar="FOCUS",
        help=f"Absolute focus threshold for 'blurry'. {SETTINGS_NOTE} a quarter of the folder's median focus]")] = None


@dataclass
class GroupFlags:
    similarity: Annotated[Optional[float], typer.Option(
        "--similarity", min=0.0, max=1.0, metavar="COSINE",
        help=f"Cosine of the embeddings above which two photos are near-duplicates. {SETTINGS_NOTE} {DEFAULT_SIMILARITY}]")] = None
    burst_window: Annotated[Optional[float], typer.Option(
        "--burst-window", min=0.0, metavar="SECONDS",
        help="Seconds between capture times within which near-duplicates form a burst. "
             f"{SETTINGS_NOTE} {DEFAULT_WINDOW_S:g}]")] = None


FoldersArg = Annotated[list[Path], typer.Argument(
    metavar="FOLDER_OR_PHOTO", help="Folders (searched recursively) or photo files.", show_default=False)]
DryRunOpt = Annotated[bool, flag("--dry-run", "-n", help="Show exactly what would change, and change nothing.")]
DarktableDefaultOpt = Annotated[bool, flag(
    "--darktable-default-rating-counts",
    help="Count xmp:Rating 1 in a darktable sidecar as your rating (by default it is darktable's import default: unrated).")]
JsonOpt = Annotated[bool, flag("--json", help="One JSON object a line instead of a table.")]


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
        return command(**kwargs)

    with_groups.__signature__ = signature.replace(parameters=params)
    with_groups.__annotations__ = {p.name: p.annotation for p in params}
    return with_groups
