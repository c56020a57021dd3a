"""What a command scores with, resolved in one place for every command.

Order, first wins: the flags given on the command line, the settings of the last `rank` of
the folder (or of a folder above it), the environment (CLIPCULL_MODEL, ...), the defaults.
`rank` records the settings it used per folder in the state database's settings table
(state.py; a cleared cache keeps them), so `best`, `tag`, `move` and `report` act on the ranking
the photographer looked at.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Mapping

from clip_cull.scoring.groups import DEFAULT_SIMILARITY, DEFAULT_WINDOW_S
from clip_cull.core.errors import ClipCullError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
DEFAULT_HEAD = "ensemble"
LAST_RANK = "last_rank"  # the folders of the last `rank` anywhere (for `best` without folders)
FOLDER_KEY = "rank_settings:"  # + absolute folder: the settings of that folder's last `rank`

# Settings the environment can give (below a folder's recorded settings, above the defaults).
ENVIRONMENT = {
    "model": "CLIPCULL_MODEL",
    "pretrained": "CLIPCULL_PRETRAINED",
    "precision": "CLIPCULL_PRECISION",
    "head": "CLIPCULL_HEAD",
}
PENALTIES = frozenset({"blur", "exposure", "eyes", "face"})  # eyes, face: the faces extra's flags
PRECISIONS = ("fp32", "int8", "bf16")


class SettingsError(ClipCullError):
    """A setting has a value clipcull cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides a ranking's order: the same for every command on a folder."""

    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    precision: str = "fp32"
    head: str = DEFAULT_HEAD
    positive: str | None = None
    negative: str | None = None
    penalize: tuple[str, ...] = ()  # blur, exposure, eyes, face: ranked below all others
    blur_below: float | None = None  # absolute focus threshold; None: relative to the shoot
    similarity: float = DEFAULT_SIMILARITY  # near-duplicate cosine
    burst_window: float = DEFAULT_WINDOW_S  # seconds

    def as_dict(self) -> dict:
        d = asdict(self)
        d["penalize"] = list(self.penalize)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> dict:
        """The known, non-missing fields of a recorded dict (old records may lack some)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        if "penalize" in values:
            values["penalize"] = tuple(values["penalize"])
        return values


@dataclass(frozen=True)
class Resolved:
    settings: Settings
    source: str | None  # the folder whose recorded settings were used, or None


def parse_penalize(text: str | None) -> tuple[str, ...]:
    wanted = tuple(sorted({p.strip() for p in (text or "").split(",") if p.strip()}))
    if set(wanted) - PENALTIES:
        raise SettingsError("--penalize takes blur, exposure, eyes (closed eyes) or face (a soft face), "
                            "or several: blur,eyes")
    return wanted


def folder_key(folder: str) -> str:
    """The settings key of a folder. A name that is not valid UTF-8 (held as surrogates) is
    written with backslash escapes: SQLite takes only UTF-8 text."""
    text = os.path.abspath(os.path.expanduser(folder))
    return FOLDER_KEY + text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def recorded_for(state, roots: list[str]) -> tuple[dict, str | None]:
    """The settings of the last `rank` of the first root (or a folder above it) that has some."""
    for root in roots:
        path = Path(os.path.abspath(os.path.expanduser(root)))
        for folder in (path, *path.parents):
            recorded = state.get_setting(folder_key(str(folder)))
            if recorded:
                return Settings.from_dict(recorded), str(folder)
    return {}, None


def resolve(flags: Mapping, state, roots: list[str], environ: Mapping[str, str] | None = None) -> Resolved:
    """flags: the settings given on the command line (None: not given); state: the StateStore;
    environ: the environment to honour (CLIPCULL_MODEL, ...), which only the CLI reads: None is none."""
    environ = {} if environ is None else environ
    values: dict = {name: environ[var] for name, var in ENVIRONMENT.items() if environ.get(var)}
    recorded, source = recorded_for(state, roots)
    values.update(recorded)
    given = {k: v for k, v in flags.items() if v is not None}
    values.update(given)
    if values.get("precision", "fp32") not in PRECISIONS:
        raise SettingsError(f"precision {values['precision']!r} is not one of {', '.join(PRECISIONS)}")
    settings = Settings(**values)
    # A folder's record counts as used only if it decided something the flags did not.
    used = source if source and set(recorded) - set(given) else None
    return Resolved(settings, used)


def record(state, roots: list[str], settings: Settings) -> None:
    """Remember the settings of a `rank` for each of its folders, and the folders themselves."""
    folders = [os.path.abspath(os.path.expanduser(r)) for r in roots]
    for folder in folders:
        state.set_setting(folder_key(folder), settings.as_dict())
    state.set_setting(LAST_RANK, {"roots": folders, **settings.as_dict()})


def last_rank_roots(state) -> list[str] | None:
    last = state.get_setting(LAST_RANK)
    return last.get("roots") if last else None


def is_head_file(head: str) -> bool:
    from clip_cull.model.heads.prompt import PROMPT_KINDS

    return head not in PROMPT_KINDS


def head_id(settings: Settings) -> str:
    """A short name that tells heads apart: a prompt head by its adjectives, a file by its
    name and the start of its SHA-256 (two files of one name are two heads)."""
    from clip_cull.model.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE

    if not is_head_file(settings.head):
        return f"{settings.head}({settings.positive or DEFAULT_POSITIVE}/{settings.negative or DEFAULT_NEGATIVE})"
    path = Path(settings.head).expanduser()
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        return f"{path.name}@{digest}"
    return path.name or str(path)


def model_name(settings: Settings) -> str:
    """The model as a person calls it: a JSON config file by its stem."""
    model = settings.model
    return Path(model).stem if model.endswith(".json") else model


def describe(settings: Settings, source: str | None = None) -> str:
    """One line saying what a command scores with, e.g.
    'scoring with head mine.safetensors on ViT-B-32 (file /home/me/mine.safetensors)'."""
    if is_head_file(settings.head):
        head = Path(settings.head).expanduser()
        what = f"head {head.name} on {model_name(settings)} (file {head.resolve()})"
    else:
        what = f"head {head_id(settings)} on {model_name(settings)} ({Path(settings.pretrained).name})"
    extras = []
    if settings.penalize:
        extras.append(f"penalizing {','.join(settings.penalize)}")
    if settings.precision != "fp32":
        extras.append(settings.precision)
    if source:
        extras.append(f"as last ranked in {source}")
    return "scoring with " + what + (f"; {'; '.join(extras)}" if extras else "")


def unknown_adjectives(settings: Settings) -> list[str]:
    """A warning for each adjective not among the paper's lists: still used (it may be meant),
    but a typo would cost a minute of prompt encoding for a meaningless score."""
    from clip_cull.model.prompts import negative_adjectives, positive_adjectives

    if is_head_file(settings.head):
        return []
    warnings = []
    for word, known, side in ((settings.positive, positive_adjectives(), "positive"),
                              (settings.negative, negative_adjectives(), "negative")):
        if word and word not in known:
            warnings.append(f"'{word}' is not one of the paper's {len(known)} {side} adjectives "
                            f"({', '.join(list(known)[:4])}, ...); using it anyway")
    return warnings


def with_roots_made_absolute(roots: list[str]) -> list[str]:
    return [os.path.abspath(os.path.expanduser(r)) for r in roots]


__all__ = ["Settings", "Resolved", "resolve", "record", "describe", "head_id", "replace"]
