"""Bursts and near-duplicates: photos whose embeddings are nearly the same and, where both
have EXIF capture times, taken within a few seconds of each other."""

from __future__ import annotations

import datetime as dt

import numpy as np

from clip_cull.model.heads.base import l2_normalize

DEFAULT_SIMILARITY = 0.92  # cosine of the projected embeddings
DEFAULT_WINDOW_S = 5.0


def burst_groups(
    paths: list[str],
    embeddings: np.ndarray,
    captured_at: list[str | None],
    similarity: float = DEFAULT_SIMILARITY,
    window_s: float = DEFAULT_WINDOW_S,
) -> dict[str, int]:
    """Group numbers (1, 2, ...) for photos in groups of two or more; `paths` come best first,
    and groups are numbered by their best photo. Photos with capture times are compared with
    those taken within window_s; photos without one are compared with every photo."""
    n = len(paths)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    unit = l2_normalize(embeddings) if n else embeddings
    times = [_seconds(t) for t in captured_at]
    timed = sorted((t, i) for i, t in enumerate(times) if t is not None)
    for k, (t, i) in enumerate(timed):
        for t2, j in timed[k + 1 :]:
            if t2 - t > window_s:
                break
            if float(unit[i] @ unit[j]) >= similarity:
                union(i, j)
    untimed = [i for i, t in enumerate(times) if t is None]
    for i in untimed:
        close = np.nonzero(unit @ unit[i] >= similarity)[0]
        for j in close:
            if j != i:
                union(i, int(j))
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    groups = sorted((m for m in members.values() if len(m) > 1), key=min)
    return {paths[i]: number for number, group in enumerate(groups, 1) for i in group}


def _seconds(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


# A burst's best photo is its best-ranked one with none of these flags, if it has one.
AVOIDED_IN_BURSTS = frozenset({"eyes-closed", "face-soft"})


def best_of_each_group(ranked: list, groups: dict[str, int]) -> list:
    """The ranking (best first) with one photo kept of each group: its best-ranked photo whose
    eyes are open and whose face is sharp (none of AVOIDED_IN_BURSTS), else its best-ranked
    photo. Photos in no group all stay; the kept photo keeps its place in the ranking."""
    chosen: dict[int, str] = {}
    for photo in ranked:
        group = groups.get(photo.path)
        if group is not None and group not in chosen and not AVOIDED_IN_BURSTS & set(getattr(photo, "flags", ())):
            chosen[group] = photo.path
    for photo in ranked:
        group = groups.get(photo.path)
        if group is not None:
            chosen.setdefault(group, photo.path)
    return [p for p in ranked if groups.get(p.path) is None or chosen[groups[p.path]] == p.path]
