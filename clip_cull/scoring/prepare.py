"""One photo's work in an indexing worker: read, fingerprint, decode, EXIF facts, the analysers'
measurements, and the pixels the model sees as a uint8 square.

It runs in a worker thread or in a worker process (scoring/indexer.py chooses). A process
imports this module and what it needs (Pillow, numpy, exifread, the analysers), never torch:
it hands back bytes, facts and measurements, and the model's normalisation happens where the
model runs. Everything a process is given is picklable: the plan once when it starts, then
(photo, square) per photo.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Callable, Collection

import numpy as np

from clip_cull.core.analysers import Analyser, measure_all
from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import FileStat, FileTooLarge, NotRegularFile, content_fingerprint, is_raw, read_file
from clip_cull.core.images import RunLimitExceeded, UnreadableImage, decode_photo, decode_raw, quiet_libtiff, read_facts
from clip_cull.model.preprocess import CentreSquarePreprocess, open_exact

# decode_photo keeps a photo's short side at least 2 x min_side: a 3:2 photo's long side is then
# at least 3 x min_side, which an analyser's working side (its long side) needs.
_LONG_PER_MIN_SIDE = 3
# Decoding for the analysers alone (the content already has its embedding): the size the
# checks were always measured at, whatever the model (224 gives a 3:2 photo 672 px, over 640).
ANALYSIS_MIN_SIDE = 224


@dataclass
class Plan:
    """What every worker knows for the whole run. In a process: a snapshot taken when it starts;
    in a thread: the indexer's own sets, which it grows as batches are embedded."""

    max_file_bytes: int
    max_pixels: int
    fast_decode: bool
    decode_side: int | Callable[[], int]  # the model's input side (threads: may ask the model); the decode keeps twice that
    known: Collection[str]  # contents with an embedding for this model and preprocessing
    analysers: tuple[Analyser, ...] = ()
    analysed: dict[str, Collection[str]] = field(default_factory=dict)  # analyser name -> contents measured
    heif: bool = False  # register pillow-heif's opener in a worker process (the main process has)


@dataclass
class Prepared:
    """What a worker made of one file."""

    stat: FileStat
    fingerprint: str | None = None
    facts: object | None = None
    square: np.ndarray | None = None  # uint8 (S, S, 3): the model's input before normalisation
    geometry: tuple[int, int] | None = None  # the (side, filter) square was made with
    pixels: np.ndarray | None = None  # float32 (3, S, S) from the model's own transform (threads only)
    image: object | None = None  # decoded, waiting for the model to load (threads only, exact path)
    measurements: list = field(default_factory=list)  # (analyser, version, result)
    needs_embedding: bool = False
    error: str | None = None
    remember_error: bool = True  # False when the file may be fine next time (it was changing)


Late = Callable[[object], "np.ndarray | None"]  # a decoded PIL image -> float pixels, or None: hold it


def prepare(photo: FileStat, plan: Plan, square: CentreSquarePreprocess | None, late: Late | None = None) -> Prepared:
    """Read one file and make of it what the run needs. square: make the model's uint8 square
    with it; else late(image) gives the model's float pixels (a thread with the model at hand)."""
    try:
        data, stat = read_file(photo.path, plan.max_file_bytes)
    except FileNotFoundError:
        return Prepared(photo, error="file disappeared while indexing", remember_error=False)
    except (FileTooLarge, NotRegularFile) as e:
        return Prepared(photo, error=str(e), remember_error=False)  # cheap to tell again from stat
    except OSError as e:
        # Not remembered: permissions or a file in flux get fixed without touching the
        # file's size or mtime, so it must be tried again next run.
        return Prepared(photo, error=f"cannot read file: {e.strerror or e}", remember_error=False)
    fingerprint = content_fingerprint(data)
    item = Prepared(stat, fingerprint, needs_embedding=fingerprint not in plan.known)
    to_analyse = [a for a in plan.analysers if fingerprint not in plan.analysed.get(a.name, ())]
    try:
        if not item.needs_embedding and not to_analyse:
            item.facts = read_facts(data, _stored_size(data))
            return item
        base_side = _base_min_side(plan, item.needs_embedding)
        finer = [a for a in to_analyse if _min_side_for(a) > base_side] if _reduced_decode(photo.path, plan) else []
        image, size = _decode(photo.path, data, plan, base_side)
        item.facts = read_facts(data, size)
        if to_analyse:
            item.measurements = measure_all(image, [a for a in to_analyse if a not in finer])
        for need in sorted({_min_side_for(a) for a in finer}):  # each at the decode it asks for, whoever else runs
            wanting = [a for a in finer if _min_side_for(a) == need]
            item.measurements += measure_all(_finer_image(data, plan, image, size, need), wanting)
        if item.needs_embedding:
            _model_input(item, image, square, late)
    except RunLimitExceeded as e:
        item.error = str(e)
        item.remember_error = False  # another run, with other limits or more memory, may read it
    except UnreadableImage as e:
        item.error = str(e)
    except MemoryError:
        item.error = "not enough memory to decode this image"
        item.remember_error = False
    except ClipCullError:
        raise  # the model cannot load (late): that ends the run, it is not this photo's fault
    except Exception as e:  # a decoder or converter failing in a way nobody foresaw: one line, go on
        item.error = f"cannot decode: {type(e).__name__}: {_first_line(e)}".rstrip(": ")
    return item


def _base_min_side(plan: Plan, embed: bool) -> int:
    """The decode the model and the checks have always had: the model's side when the content
    needs embedding, else ANALYSIS_MIN_SIDE."""
    if not embed:
        return ANALYSIS_MIN_SIDE
    return plan.decode_side() if callable(plan.decode_side) else plan.decode_side


def _min_side_for(analyser: Analyser) -> int:
    """The decode an analyser's working side needs (its long side, for a 3:2 photo)."""
    return -(-analyser.work_side // _LONG_PER_MIN_SIDE)


def _reduced_decode(path: str, plan: Plan) -> bool:
    """Whether the decode's size depends on min_side (the fast path, not a RAW's preview)."""
    return plan.fast_decode and not is_raw(path)


def _decode(path: str, data: bytes, plan: Plan, min_side: int):
    if not plan.fast_decode:  # the paper's exact path: Image.open(...).convert("RGB")
        image = open_exact(data, plan.max_pixels)
        return image, image.size
    if is_raw(path):
        return decode_raw(data)
    return decode_photo(data, min_side=min_side, max_pixels=plan.max_pixels, fast=True)


def _finer_image(data: bytes, plan: Plan, image, size: tuple[int, int], min_side: int):
    """The decode an analyser that needs more than the model's decode asks for (the faces
    analyser): a decode of its own, so that the embedding and each analyser's figures come from
    the same decode whichever analysers are installed, and caches compare whoever made them.
    The model's decode serves where it is already the whole image."""
    if max(image.size) >= max(size):
        return image
    finer, _ = decode_photo(data, min_side=min_side, max_pixels=plan.max_pixels, fast=True)
    return finer


def _model_input(item: Prepared, image, square: CentreSquarePreprocess | None, late: Late | None) -> None:
    if square is not None:
        item.square, item.geometry = square.square(image), square.geometry
    elif late is not None:
        item.pixels = late(image)
        if item.pixels is None:
            item.image = image  # held until the model has loaded
    else:
        raise ValueError("a photo to embed needs a square or the model's transform")


def _stored_size(data: bytes) -> tuple[int, int] | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# --- in a worker process -------------------------------------------------------------------------

_plan: Plan | None = None


def start_process(plan: Plan) -> None:
    """A worker process's initializer: keep the plan; leave Ctrl-C to the main process (a
    terminal sends SIGINT to every process of the group: a worker must not print a traceback),
    which ends the workers itself."""
    global _plan
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _plan = plan
    quiet_libtiff()
    if plan.heif:
        from clip_cull.core.files import heif_available

        heif_available()


def prepare_in_process(photo: FileStat, square: CentreSquarePreprocess) -> Prepared:
    return prepare(photo, _plan, square)
