"""`clipcull tag`: star ratings (and rejects, a colour label, keywords) in XMP sidecars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.culling.interrupt import whole_step
from clip_cull.culling.journal import DONE, FAILED, RUNNING, Journal
from clip_cull.culling.ratings import find_rating
from clip_cull.culling.writer import (LABEL, RATING, Edit, XmpChange, apply_changes, claims_now, plan_embedded,
                                      plan_sidecar, read_current, shared_sidecar, steps_for, target_sidecar)
from clip_cull.culling.xmp import KEYWORD_PREFIX, LABELLED_KEYWORD, RATED_KEYWORD, XmpError, parse
from clip_cull.core.errors import Interrupted

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


SidecarChange = XmpChange  # the name tag's callers know


@dataclass(frozen=True)
class TagOptions:
    """What `tag` writes: the sidecar naming, how scores become stars, and what else changes."""

    style: str = "lightroom"  # lightroom (IMG_0001.xmp) or darktable (IMG_0001.JPG.xmp)
    thresholds: list[tuple[int, float]] | None = None  # (stars, lowest score); None: by rank
    reject_below: float | None = None  # rate photos below this score -1
    label: str | None = None  # also set this colour label on 5-star photos
    keywords: bool = True  # clipcull:aesthetic / clipcull:not-aesthetic
    overwrite: bool = False  # replace ratings the photographer set
    reject_blurry: bool = False
    darktable_default_counts: bool = False  # darktable's 1 star on import counts as the photographer's
    embed: bool = False  # also the photo's own XMP (JPEG, TIFF, DNG)


def plan_tags(ranked: list, options: TagOptions = TagOptions(),
              journal: Journal | None = None) -> tuple[list[XmpChange], list[str]]:
    """What each photo's sidecar would become, and one line for each photo whose ratings disagree.

    A rating the photographer set anywhere (either sidecar naming, the RAW companion's sidecar, XMP
    embedded in the photo or its RAW; see culling/ratings.py) is kept unless overwrite: then no
    sidecar of that photo is written. A value is clipcull's only where `journal` says clipcull
    wrote exactly that value there (writer.claims_now); without a journal every value is the
    photographer's. With darktable naming a RAW companion gets its own sidecar; with Lightroom
    naming the RAW and the JPEG share one. The photographer's colour label is left as it is."""
    o = options
    scores = np.array([p.score for p in ranked])
    stars = star_ratings(scores, o.thresholds, o.reject_below)
    if o.reject_blurry:
        stars = np.where([("blurry" in p.flags) for p in ranked], REJECT, stars)
    changes, disagreements, listings, planned = [], [], {}, set()
    for photo, rating in zip(ranked, stars):
        members = [photo.path, *getattr(photo, "companions", [])]
        found = find_rating(photo.path, members[1:], o.darktable_default_counts, listings, journal)
        changes += [XmpChange(photo.path, Path(where), None, None, int(rating), f"left alone: {why}", True)
                    for where, why in found.problems]
        if found.disagreement:
            disagreements.append(found.disagreement)
        if not o.overwrite and (kept := _kept(found)):
            changes.append(XmpChange(photo.path, Path(found.source), None, None, int(rating), kept))
            continue
        unreadable = {where for where, _ in found.problems}
        shared = shared_sidecar(photo.path, members[1:], o.style, listings)
        if shared:  # A.jpg and A.png under Lightroom's naming: neither photo's rating goes there
            changes.append(XmpChange(photo.path, shared[0], None, None, int(rating), shared[1], True))
            members = []
        for member in members:
            path = target_sidecar(member, o.style, listings)
            if path in planned or str(path) in unreadable:
                continue
            planned.add(path)
            changes.append(_sidecar_change(photo, int(rating), path, o.label, o.keywords, o.overwrite, journal))
        if o.embed:
            changes.append(plan_embedded(photo.path, Edit(int(rating), keywords=_words(photo, o.keywords),
                                                          owned={RATING: str(int(rating))}), int(rating)))
    return changes, disagreements


def _kept(found) -> str | None:
    """Why the photographer's value stays (None: clipcull may rate the photo)."""
    if found.rating not in (None, 0):
        return f"keeps the photographer's rating {found.rating} (--overwrite to replace)"
    if found.odd is not None:
        return (f"keeps the value {found.odd[:20]!r} someone set as its rating "
                f"(not a rating clipcull understands; --overwrite to replace)")
    return None


def _words(photo, keywords: bool) -> list[str]:
    return [RATED_KEYWORD] + ([f"{KEYWORD_PREFIX}{photo.label.replace(' ', '-')}"] if keywords else [])


def _sidecar_change(photo, rating: int, path: Path, label: str | None, keywords: bool, overwrite: bool,
                    journal: Journal | None) -> XmpChange:
    """The edit of one sidecar: clipcull's rating and keywords; with --label, the colour label on a
    5-star photo where the label is free or clipcull's own (a photographer's label stays unless
    --overwrite), and clipcull's own label taken off a photo that is no longer 5 stars."""
    try:
        before = read_current(path)
        fields = parse(before).fields() if before is not None else None
    except XmpError as e:
        return XmpChange(photo.path, path, None, None, rating, f"left alone: {e}", True)
    claims = claims_now(journal, path, fields, before)
    current_label = fields.label if fields else None
    words, owned = _words(photo, keywords), {RATING: str(rating)}
    new_label, drop_label = None, False
    # The photographer's own label of the same colour is not free: clipcull sets nothing there, so
    # it claims nothing (a claim would let a later run take the photographer's label off)
    label_free = current_label is None or LABEL in claims or overwrite
    if label and rating == 5 and label_free:
        new_label, owned[LABEL] = label, label
        words.append(LABELLED_KEYWORD)
    elif label and LABEL in claims and rating != 5:
        drop_label = True  # clipcull's own label, and the photo is no longer a 5-star one
    elif LABEL in claims:
        owned[LABEL] = claims[LABEL]  # kept, and still clipcull's
        words.append(LABELLED_KEYWORD)
    return plan_sidecar(photo.path, path, Edit(rating, new_label, drop_label, words, owned), rating)


def apply_tags(journal: Journal, changes: list[XmpChange], command: dict,
               notes: list[str] | None = None) -> int | None:
    """Journal the plan, then write each file through the one writer (culling/writer.py), marking
    each step done. Nothing to write: no run is journaled, and None is returned. A file changed
    between plan and write is not written: a line in `notes`, the run goes on and ends failed. An
    error that stops the run (a full disk) marks it failed before it propagates. One clipcull
    process at a time changes files and journal (Journal.exclusive)."""
    notes = notes if notes is not None else []
    writes = [c for c in changes if c.writes]
    if not writes:
        return None
    with journal.exclusive():
        steps = steps_for(writes)
        with whole_step():  # journaled whole, with its id known, or not at all
            run_id = journal.plan("tag", command, steps)
            journal.set_state(run_id, RUNNING)
        try:
            skipped = apply_changes(journal, run_id, steps, writes, notes)
        except KeyboardInterrupt:  # between two writes: the run stays running (interrupted)
            done = sum(c.written for c in writes)
            raise Interrupted(run_id, done, len(writes) - done - sum(c.problem for c in writes)) from None
        except BaseException:
            journal.set_state(run_id, FAILED)
            raise
        with whole_step():
            journal.set_state(run_id, FAILED if skipped else DONE)
    return run_id
