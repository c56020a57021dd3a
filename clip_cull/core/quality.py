"""Technical checks culling needs beside the aesthetic score: focus and exposure.

Measured on the image already decoded for embedding (no second decode), at a fixed working
size so that photos decoded at different scales compare:

- focus: the variance of the Laplacian of the luminance, per tile of an 8 x 8 grid; the photo's
  focus is the 95th percentile over tiles, so a sharp subject on a soft background counts as sharp;
- highlights / shadows: the share of pixels at or above 250 / at or below 5 (luminance, 0-255);
- brightness: the mean luminance, 0-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

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


def measure(image: Image.Image) -> Quality:
    grey = image.convert("L")
    scale = WORK_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(8, round(grey.width * scale)), max(8, round(grey.height * scale))), Image.BILINEAR)
    y = np.asarray(grey, dtype=np.float32)
    return Quality(_focus(y), float(np.mean(y >= CLIP_HIGH)), float(np.mean(y <= CLIP_LOW)), float(y.mean() / 255.0))


def _focus(y: np.ndarray) -> float:
    if min(y.shape) < 3:
        return 0.0
    lap = (y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1]) - 4.0 * y[1:-1, 1:-1]
    h, w = lap.shape
    tiles = [
        lap[i * h // GRID : (i + 1) * h // GRID, j * w // GRID : (j + 1) * w // GRID].var()
        for i in range(GRID)
        for j in range(GRID)
        if (i + 1) * h // GRID > i * h // GRID and (j + 1) * w // GRID > j * w // GRID
    ]
    return float(np.percentile(tiles, FOCUS_PERCENTILE)) if tiles else 0.0


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
