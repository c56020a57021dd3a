"""Technical checks culling needs beside the aesthetic score: focus and exposure.

Measured on the image already decoded for embedding (no second decode), as its luminance scaled
to a fixed working size, so that photos decoded at different scales compare. An analyser
(core/analysers.py) named "quality": its figures are cached per content and version.

- focus: the variance of the Laplacian of the luminance, per tile of an 8 x 8 grid; the photo's
  focus is the 95th percentile over tiles, so a sharp subject on a soft background counts as sharp;
- highlights / shadows: the share of pixels at or above 250 / at or below 5 (luminance, 0-255);
- brightness: the mean luminance, 0-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clip_cull.core.analysers import Analyser, measure_all, register

# The cache keeps the figures per content under this version (analyser "quality"); bump it when
# the same pixels give other figures. Version 1 is also what caches from before the analysers
# held in their own table (migrated, not measured again: see store/cache.py m007).
QUALITY_VERSION = 1
WORK_SIDE = 640  # long side of the working image
GRID = 8
FOCUS_PERCENTILE = 95
CLIP_HIGH, CLIP_LOW = 250, 5

# Flags, relative to the shoot with absolute overrides.
BLUR_RELATIVE = 0.25  # blurry: focus below a quarter of the folder's median
HIGHLIGHTS_LIMIT = 0.10  # over-exposed: more than 10% of the frame clipped
SHADOWS_LIMIT = 0.50  # under-exposed: more than half of the frame crushed


@dataclass
class Quality:
    focus: float
    highlights: float
    shadows: float
    brightness: float

    @classmethod
    def from_measurement(cls, value: dict) -> "Quality | None":
        """The figures of a cached result of the "quality" analyser; None for a recorded error."""
        try:
            return cls(*(float(value[k]) for k in ("focus", "highlights", "shadows", "brightness")))
        except (KeyError, TypeError, ValueError):
            return None


def measure_luminance(y8: np.ndarray) -> dict:
    """The checks on the upright luminance (H, W) uint8 at the working size: the analyser's measure."""
    # One pass over the 8-bit values gives all three exposure figures.
    counts = np.bincount(y8.ravel(), minlength=256)
    n = max(1, y8.size)
    return {
        "focus": _focus(y8.astype(np.float32)),
        "highlights": float(counts[CLIP_HIGH:].sum() / n),
        "shadows": float(counts[: CLIP_LOW + 1].sum() / n),
        "brightness": float(counts @ np.arange(256) / n / 255.0),
    }


# Luminance first, then scaled: the figures of caches made before the analysers, to float rounding.
ANALYSER = register(Analyser("quality", QUALITY_VERSION, measure_luminance, work_side=WORK_SIDE, mode="L"))


def measure(image: Image.Image) -> Quality:
    """The checks on a decoded PIL image, scaled to the working size as the indexer does."""
    ((_, _, value),) = measure_all(image, [ANALYSER])
    return Quality.from_measurement(value)


def _focus(y: np.ndarray) -> float:
    """The 95th percentile over the tiles of an 8 x 8 grid of the Laplacian's variance.

    The tile sums of the Laplacian and of its square come from two np.add.reduceat calls each
    (rows, then columns): a few numpy calls a photo instead of 64 slices and variances, each of
    which took the GIL (16 decode threads queued on it). The Laplacian of 8-bit values is an
    integer within +-1020 and its square below 2**24, both exact in float32; the sums are
    accumulated in float64, exact too, so the variances differ from np.var's only by rounding."""
    if min(y.shape) < 3:
        return 0.0
    lap = (y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1]) - 4.0 * y[1:-1, 1:-1]
    rows, row_len = _tile_starts(lap.shape[0])
    cols, col_len = _tile_starts(lap.shape[1])

    def tile_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, rows, axis=0, dtype=np.float64), cols, axis=1)

    n = np.outer(row_len, col_len)
    mean = tile_sums(lap) / n
    variances = np.maximum(tile_sums(lap * lap) / n - mean * mean, 0.0)  # E[x^2] - E[x]^2, >= 0 but for rounding
    return float(np.percentile(variances, FOCUS_PERCENTILE))


def _tile_starts(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of the grid's non-empty tiles along one axis: tile i spans
    [i * length // GRID, (i + 1) * length // GRID); an empty one (length < GRID) is left out,
    and its neighbour's start is also its end, as reduceat needs."""
    edges = np.arange(GRID + 1) * length // GRID
    sizes = np.diff(edges)
    keep = sizes > 0
    return edges[:-1][keep], sizes[keep]


@dataclass
class Flags:
    blurry: bool
    overexposed: bool
    underexposed: bool
    eyes_closed: bool = False  # a face with its eyes closed (core/faces.py: judge)
    face_soft: bool = False  # the main face soft for this shoot (core/faces.py: judge)

    @property
    def badly_exposed(self) -> bool:
        return self.overexposed or self.underexposed

    def names(self) -> list[str]:
        return [n for n, on in (("blurry", self.blurry), ("overexposed", self.overexposed),
                                ("underexposed", self.underexposed), ("eyes-closed", self.eyes_closed),
                                ("face-soft", self.face_soft)) if on]


def flag(qualities: dict[str, Quality], blur_below: float | None = None, highlights_limit: float = HIGHLIGHTS_LIMIT,
         shadows_limit: float = SHADOWS_LIMIT) -> dict[str, Flags]:
    """Flags per photo. Focus is judged against the shoot: below BLUR_RELATIVE x the median focus
    of these photos, or below blur_below when given (an absolute threshold)."""
    if not qualities:
        return {}
    median = float(np.median([q.focus for q in qualities.values()]))
    limit = blur_below if blur_below is not None else BLUR_RELATIVE * median
    return {
        path: Flags(q.focus < limit, q.highlights > highlights_limit, q.shadows > shadows_limit)
        for path, q in qualities.items()
    }


def penalized_scores(scores: np.ndarray, flags: list[Flags], penalize: set[str]) -> np.ndarray:
    """score - spread x (number of penalised flags), where spread = max - min score of the
    folder: a penalised photo ranks below every photo without that flag, and photos with the
    same flags keep their order."""
    scores = np.asarray(scores, np.float64)
    if not len(scores) or not penalize:
        return scores
    spread = float(scores.max() - scores.min()) or 1.0
    counts = np.array([
        ("blur" in penalize and f.blurry) + ("exposure" in penalize and f.badly_exposed)
        + ("eyes" in penalize and f.eyes_closed) + ("face" in penalize and f.face_soft) for f in flags
    ], dtype=np.float64)
    return scores - (spread + 1e-9) * counts
