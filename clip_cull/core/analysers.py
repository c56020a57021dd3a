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

Measure = Callable[[np.ndarray], dict]  # RGB uint8 (H, W, 3), upright -> JSON-able dict


@dataclass(frozen=True)
class Analyser:
    name: str  # the key in the cache and in results: "quality", "faces"
    version: int  # bump when the result for the same pixels changes: cached results are redone
    measure: Measure
    work_side: int = 640  # long side of the image it wants (the worker scales down to this, never up)
    requires: tuple[str, ...] = field(default=())  # importable modules it needs (an optional extra)

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
