"""Scoring cached embeddings with a head and putting photos in order, best first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from clip_cull.files import FileStat, walk_photos
from clip_cull.heads.prompt import EnsembleHead
from clip_cull.indexer import (
    Failure,
    IndexOptions,
    IndexReport,
    ModelSession,
    ProgressFn,
    index_photos,
    prompt_embeddings,
)
from clip_cull.store import Store


@dataclass
class RankedPhoto:
    rank: int
    path: str
    score: float
    label: str
    captured_at: str | None = None
    camera: str | None = None

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "path": self.path,
            "score": round(self.score, 6),
            "label": self.label,
            "captured_at": self.captured_at,
            "camera": self.camera,
        }


def rank_photos(
    store: Store,
    photos: list[FileStat],
    session: ModelSession,
    head: EnsembleHead,
    text_progress: ProgressFn | None = None,
) -> list[RankedPhoto]:
    """Rank photos that already have embeddings for session's model; best first, ties by path."""
    if not photos:
        return []
    records = store.file_records([p.path for p in photos])
    rows = [records[p.path] for p in photos if p.path in records and records[p.path].fingerprint]
    vectors = store.projected_embeddings([r.fingerprint for r in rows], session.model_id)
    rows = [r for r in rows if r.fingerprint in vectors]
    if not rows:
        return []
    text = head.text_vectors(prompt_embeddings(store, session, head.prompts(), text_progress))
    image = np.stack([vectors[r.fingerprint] for r in rows]).astype(np.float32)
    scores, labels = head.score(image, text)
    order = sorted(range(len(rows)), key=lambda i: (-float(scores[i]), rows[i].path))
    return [
        RankedPhoto(n + 1, rows[i].path, float(scores[i]), labels[i], rows[i].captured_at, rows[i].camera)
        for n, i in enumerate(order)
    ]


@dataclass
class FolderRanking:
    ranked: list[RankedPhoto]
    report: IndexReport
    unsupported: list[str]  # files of a format this installation cannot read (a hint, not an error)


def rank_folders(
    store: Store,
    roots: list[str],
    session: ModelSession,
    head: EnsembleHead,
    options: IndexOptions | None = None,
    *,
    heif: bool = False,
    progress: ProgressFn | None = None,
    text_progress: ProgressFn | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> FolderRanking:
    """Find the photos under roots, embed what is new or changed, and rank them all."""
    walk = walk_photos(roots, heif=heif)
    early_failures = [Failure(path, reason) for path, reason in walk.errors]
    for failure in early_failures:
        if on_failure:
            on_failure(failure)
    report = index_photos(store, walk.photos, session, options, progress=progress, on_failure=on_failure)
    report.failures[:0] = early_failures
    present = {p.path for p in walk.photos}
    for root in roots:
        folder = os.path.abspath(os.path.expanduser(root))
        if os.path.isdir(folder):
            store.forget_missing(folder, present)
    ranked = rank_photos(store, report.ready, session, head, text_progress)
    return FolderRanking(ranked, report, walk.unsupported)
