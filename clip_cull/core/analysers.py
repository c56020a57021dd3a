"""Per-photo measurements beside the embedding: focus and exposure, faces and eyes, and more.

Each analyser has a name and a version. Its result is a JSON-able dict, cached per content
fingerprint in the cache database (``measurements`` table) and computed again only when the
analyser's version changes (or the content does). Analysers run in the indexing workers on
the decoded, upright image, so they must be picklable (module-level functions) and must not
import torch.

An analyser whose optional dependency is missing (faces without the ``faces`` extra) reports
``available() == False`` and is skipped: clipcull works as before without it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Measure = Callable[[np.ndarray], dict]  # uint8 (H, W, 3) RGB or (H, W) luminance, upright -> JSON-able dict


@dataclass(frozen=True)
class Analyser:
    name: str  # the key in the cache and in results: "quality", "faces"
    version: int  # bump when the result for the same pixels changes: cached results are redone
    measure: Measure
    work_side: int = 640  # long side of the image it wants (the worker scales down to this, never up)
    requires: tuple[str, ...] = field(default=())  # importable modules it needs (an optional extra)
    mode: str = "RGB"  # "RGB", or "L": luminance, converted before scaling (a third of the resize's work)

    def available(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.requires)


_REGISTRY: dict[str, Analyser] = {}


def register(analyser: Analyser) -> Analyser:
    """Add (or replace, by name) an analyser; returns it, so a module can register at import."""
    _REGISTRY[analyser.name] = analyser
    return analyser


def registered() -> list[Analyser]:
    return list(_REGISTRY.values())


def get(name: str) -> Analyser:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no analyser named {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})") from None


# Modules that register the analysers clipcull ships; imported on first use of active().
BUILTIN_MODULES: tuple[str, ...] = ("clip_cull.core.quality", "clip_cull.core.faces")


def _import_builtins() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def active(names: tuple[str, ...] | list[str]) -> list[Analyser]:
    """The analysers named that can run here: an unknown name is an error (KeyError), one whose
    optional extra is not installed is left out, so clipcull works as before without it."""
    _import_builtins()
    return [a for a in (get(n) for n in names) if a.available()]


def available() -> list[Analyser]:
    """Every registered analyser that can run here (clipcull's own imported first): what the
    pipeline benchmark measures."""
    _import_builtins()
    return [a for a in registered() if a.available()]


Result = tuple[str, int, dict]  # (analyser name, version, result)


def measure_all(image, analysers: list[Analyser]) -> list[Result]:
    """Run analysers on one decoded, upright PIL image, each at its own working size and mode.

    An analyser that fails records {"error": "..."} for this content (cached like a result, so
    it is not retried every run; a new version retries it): a face detector's bug must not
    drop the photo from the ranking."""
    arrays: dict[tuple[int, str], np.ndarray] = {}  # analysers that want the same size and mode share it
    out: list[Result] = []
    for analyser in analysers:
        key = (analyser.work_side, analyser.mode)
        if key not in arrays:
            arrays[key] = _working_array(image, *key)
        try:
            result = analyser.measure(arrays[key])
        except Exception as e:  # noqa: BLE001 - any analyser fault is this photo's measurement, not the run's
            result = {"error": f"{type(e).__name__}: {e}"[:200]}
        out.append((analyser.name, analyser.version, result))
    return out


def _working_array(image, side: int, mode: str) -> np.ndarray:
    """The image in mode, its long side scaled down (bilinear) to side, never up."""
    from PIL import Image

    converted = image if image.mode == mode else image.convert(mode)
    scale = side / max(converted.size)
    if scale < 1:
        converted = converted.resize((max(1, round(converted.width * scale)), max(1, round(converted.height * scale))),
                                     Image.BILINEAR)
    return np.asarray(converted)
