"""`clipcull tag`: star ratings (and rejects, a colour label, keywords) in XMP sidecars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.actions.fileops import write_atomic
from clip_cull.actions.journal import DONE, PARTIAL, Journal, Step
from clip_cull.actions.xmp import KEYWORD_PREFIX, RATED_KEYWORD, XmpError, merge, read_fields, sidecar_path
from clip_cull.files import content_fingerprint

# Default stars by rank in the folder: the top 10% get 5, the next 20% 4, the middle 40% 3,
# the next 20% 2 and the bottom 10% 1.
DEFAULT_QUANTILE_SHARES = ((5, 0.10), (4, 0.20), (3, 0.40), (2, 0.20), (1, 0.10))
REJECT = -1


def parse_star_thresholds(text: str) -> list[tuple[int, float]]:
    """'5:0.31,4:0.29' -> [(5, 0.31), (4, 0.29)]: a score at or above a threshold earns its stars."""
    rules = []
    for part in text.split(","):
        stars, _, value = part.partition(":")
        stars_i = int(stars)
        if not 1 <= stars_i <= 5:
            raise ValueError(f"stars must be 1-5, got {stars_i}")
        rules.append((stars_i, float(value)))
    return sorted(rules, key=lambda r: -r[0])


def star_ratings(scores: np.ndarray, thresholds: list[tuple[int, float]] | None = None,
                 reject_below: float | None = None) -> np.ndarray:
    """Stars 1-5 by quantiles of these scores (default) or by thresholds; -1 below reject_below."""
    scores = np.asarray(scores, np.float64)
    stars = np.ones(len(scores), int)
    if thresholds:
        for value_stars, threshold in sorted(thresholds, key=lambda r: r[0]):
            stars[scores >= threshold] = value_stars
    else:
        order = np.argsort(-scores, kind="stable")
        edges = np.round(np.cumsum([share for _, share in DEFAULT_QUANTILE_SHARES]) * len(scores)).astype(int)
        start = 0
        for (value_stars, _), end in zip(DEFAULT_QUANTILE_SHARES, edges):
            stars[order[start:end]] = value_stars
            start = end
    if reject_below is not None:
        stars[scores < reject_below] = REJECT
    return stars


@dataclass
class SidecarChange:
    photo: str
    sidecar: Path
    before: bytes | None
    after: bytes | None  # None: nothing to write (kept, or unchanged)
    rating: int
    note: str = ""  # why nothing is written, or what happens


def plan_tags(
    ranked: list,
    style: str = "lightroom",
    thresholds: list[tuple[int, float]] | None = None,
    reject_below: float | None = None,
    label: str | None = None,
    keywords: bool = True,
    overwrite: bool = False,
    reject_blurry: bool = False,
) -> list[SidecarChange]:
    """What each photo's sidecar would become. A rating the photographer set (one clipcull did
    not write) is kept unless overwrite. With darktable naming a RAW companion gets its own
    sidecar; with Lightroom naming the RAW and the JPEG share one."""
    scores = np.array([p.score for p in ranked])
    stars = star_ratings(scores, thresholds, reject_below)
    if reject_blurry:
        stars = np.where([("blurry" in p.flags) for p in ranked], REJECT, stars)
    changes = []
    targets = [
        (photo, rating, sidecar)
        for photo, rating in zip(ranked, stars)
        for sidecar in dict.fromkeys(sidecar_path(f, style) for f in [photo.path, *getattr(photo, "companions", [])])
    ]
    for photo, rating, path in targets:
        before = path.read_bytes() if path.exists() else None
        text = before.decode("utf-8") if before is not None else None
        if text is not None:
            try:
                fields = read_fields(text)
            except XmpError as e:
                changes.append(SidecarChange(photo.path, path, before, None, int(rating), f"left alone: {e}"))
                continue
            if fields.rating not in (None, 0) and RATED_KEYWORD not in fields.keywords and not overwrite:
                changes.append(SidecarChange(photo.path, path, before, None, int(rating),
                                             f"keeps the photographer's rating {fields.rating} (--overwrite to replace)"))
                continue
        words = [RATED_KEYWORD] + ([f"{KEYWORD_PREFIX}{photo.label.replace(' ', '-')}"] if keywords else [])
        try:
            after = merge(text, int(rating), label if rating == 5 and label else None, words).encode("utf-8")
        except XmpError as e:
            changes.append(SidecarChange(photo.path, path, before, None, int(rating), f"left alone: {e}"))
            continue
        if after == before:
            changes.append(SidecarChange(photo.path, path, before, None, int(rating), "unchanged"))
            continue
        changes.append(SidecarChange(photo.path, path, before, after, int(rating), "create" if before is None else "merge"))
    return changes


def apply_tags(journal: Journal, changes: list[SidecarChange], command: dict) -> int:
    """Journal the plan, then write each sidecar atomically, marking each step done."""
    writes = [c for c in changes if c.after is not None]
    steps = [Step("sidecar", c.photo, str(c.sidecar), c.before, content_fingerprint(c.after)) for c in writes]
    run_id = journal.plan("tag", command, steps)
    journal.set_state(run_id, PARTIAL)
    for step, change in zip(steps, writes):
        write_atomic(change.sidecar, change.after)
        journal.mark(run_id, step.seq, DONE)
    journal.set_state(run_id, DONE)
    return run_id
