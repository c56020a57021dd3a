"""Scoring cached embeddings with a head and putting photos in order, best first."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from clip_cull.core.files import FileStat, PhotoSource
from clip_cull.model.heads.base import Head
from clip_cull.model.heads.files import check_backbone
from clip_cull.scoring.indexer import Failure, IndexOptions, IndexReport, ProgressFn, index_photos, prompt_embeddings
from clip_cull.model.session import ModelSession
from clip_cull.core.quality import ANALYSER as QUALITY
from clip_cull.core.quality import Flags, Quality, penalized_scores
from clip_cull.core.quality import flag as quality_flags
from clip_cull.store.cache import Store


@dataclass
class RankedPhoto:
    rank: int
    path: str
    score: float
    label: str
    captured_at: str | None = None
    camera: str | None = None
    quality: Quality | None = None
    flags: list[str] = field(default_factory=list)  # blurry, overexposed, underexposed, eyes-closed, face-soft
    companions: list[str] = field(default_factory=list)  # RAW files that go with this photo
    faces: list[dict] | None = None  # per face (core/faces.py), largest first, with "soft"; None: not analysed

    def face_figures(self) -> dict:
        """The face count and figures --json and --csv print: the main face's focus, the lowest
        eye openness (mean EAR of a face's eyes) of the faces judged, and each face's figures."""
        if self.faces is None:
            return {"faces": None, "face_focus": None, "eye_openness": None, "face_details": None}
        judged = [f for f in self.faces if f.get("focus") is not None]
        open_ = [float(np.mean(f["openness"])) for f in judged if f.get("openness")]
        return {
            "faces": len(self.faces),
            "face_focus": _finite(judged[0]["focus"], 2) if judged else None,
            "eye_openness": _finite(min(open_), 3) if open_ else None,
            "face_details": [{"box": f["box"], "score": f["score"], "openness": f.get("openness"),
                              "eyes_closed": f.get("eyes_closed"), "focus": _finite(f.get("focus"), 2),
                              "soft": f.get("soft")} for f in self.faces],
        }

    def as_dict(self) -> dict:
        q = self.quality
        return {
            "rank": self.rank,
            "path": self.path,
            "score": _finite(self.score),  # full precision: json writes the shortest exact repr
            "label": self.label,
            "captured_at": self.captured_at,
            "camera": self.camera,
            "focus": None if q is None else _finite(q.focus, 2),
            "highlights": None if q is None else _finite(q.highlights, 4),
            "shadows": None if q is None else _finite(q.shadows, 4),
            "brightness": None if q is None else _finite(q.brightness, 4),
            "flags": self.flags,
            **self.face_figures(),
            "raw": self.companions,
        }


def _finite_or(value, default: float) -> float:
    value = float(value)
    return value if np.isfinite(value) else default


def _finite(value, digits: int | None = None) -> float | None:
    """A number for JSON: NaN and infinities (which json.dumps would print as invalid JSON) are null.
    digits=None keeps full precision."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(value):
        return None
    return value if digits is None else round(value, digits)


@dataclass(frozen=True)
class Checks:
    """How focus and exposure enter the ranking."""

    penalize: frozenset = frozenset()  # {"blur", "exposure", "eyes", "face"}: see quality.penalized_scores
    blur_below: float | None = None  # absolute focus threshold instead of the shoot-relative one


def rank_photos(
    store: Store,
    photos: list[FileStat],
    session: ModelSession,
    head: Head,
    text_progress: ProgressFn | None = None,
    checks: Checks = Checks(),
) -> list[RankedPhoto]:
    """Rank photos that already have embeddings for session's model; best first, ties by path."""
    if not photos:
        return []
    records = store.file_records([p.path for p in photos])
    rows = [records[p.path] for p in photos if p.path in records and records[p.path].fingerprint]
    vectors = store.embeddings([r.fingerprint for r in rows], session.model_id, head.features)
    rows = [r for r in rows if r.fingerprint in vectors]
    if not rows:
        return []
    prompts = head.prompts()
    features = np.stack([vectors[r.fingerprint] for r in rows]).astype(np.float32)
    check_backbone(head, session.text_model_id, session.spec.architecture, features.shape[1])
    prompt_vectors = prompt_embeddings(store, session, prompts, text_progress) if prompts else {}
    scores, labels = head.score(features, prompt_vectors)
    measured = {fp: q for fp, value in store.measurements([r.fingerprint for r in rows], QUALITY.name,
                                                          QUALITY.version).items()
                if (q := Quality.from_measurement(value)) is not None}
    qualities = {r.path: measured[r.fingerprint] for r in rows if r.fingerprint in measured}
    flags = quality_flags(qualities, blur_below=checks.blur_below)
    none = Flags(False, False, False)
    faces = _faces_of(store, rows, flags)
    order_scores = penalized_scores(scores, [flags.get(r.path, none) for r in rows], set(checks.penalize))
    # A score that is not a number (a damaged embedding) sorts last instead of scrambling the order.
    order = sorted(range(len(rows)), key=lambda i: (-_finite_or(order_scores[i], -np.inf), rows[i].path))
    return [
        RankedPhoto(n + 1, rows[i].path, float(scores[i]), labels[i], rows[i].captured_at, rows[i].camera,
                    qualities.get(rows[i].path), flags.get(rows[i].path, none).names(), faces=faces.get(rows[i].path))
        for n, i in enumerate(order)
    ]


def _faces_of(store: Store, rows: list, flags: dict[str, Flags]) -> dict[str, list[dict]]:
    """The faces of each photo analysed (core/faces.py), each with its "soft" judgement, and
    the photo's eyes-closed and face-soft flags set in flags (judged against these photos)."""
    from clip_cull.core import faces as face_analysis

    measured = store.measurements([r.fingerprint for r in rows], face_analysis.NAME, face_analysis.VERSION)
    results = {r.path: measured[r.fingerprint] for r in rows
               if r.fingerprint in measured and "error" not in measured[r.fingerprint]}
    out = {}
    for path, judged in face_analysis.judge(results).items():
        flags[path] = replace(flags.get(path, Flags(False, False, False)), eyes_closed=judged.eyes_closed,
                              face_soft=judged.face_soft)
        out[path] = [{**f, "soft": soft} for f, soft in zip(results[path].get("faces") or [], judged.soft)]
    return out


@dataclass
class FolderRanking:
    ranked: list[RankedPhoto]
    report: IndexReport
    unsupported: list[str]  # files of a format this installation cannot read (a hint, not an error)
    groups: dict[str, int] = field(default_factory=dict)  # burst group of each photo in a group
    companions: dict[str, list[str]] = field(default_factory=dict)  # photo -> its RAW files


def group_ranked(store: Store, ranked: list[RankedPhoto], model_id: str, similarity: float, window_s: float) -> dict[str, int]:
    """Burst groups of ranked photos from their cached embeddings and capture times."""
    from clip_cull.scoring.groups import burst_groups

    if not ranked:
        return {}
    records = store.file_records([p.path for p in ranked])
    vectors = store.embeddings([records[p.path].fingerprint for p in ranked], model_id, "projected")
    usable = [p for p in ranked if records[p.path].fingerprint in vectors]
    matrix = np.stack([vectors[records[p.path].fingerprint] for p in usable]).astype(np.float32)
    return burst_groups([p.path for p in usable], matrix, [p.captured_at for p in usable], similarity, window_s)


def index_folders(
    store: Store,
    source: PhotoSource,
    session: ModelSession,
    options: IndexOptions | None = None,
    *,
    shard: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> tuple[IndexReport, list[str], dict[str, list[str]]]:
    """Find the photos of source and embed what is new or changed. With shard=(k, n) only
    the k-th of n disjoint shares is embedded, so n processes can split a folder between them.
    Returns the report, the files of unsupported formats and the RAW companions of photos."""
    walk = source.walk()
    early_failures = [Failure(path, reason) for path, reason in walk.errors]
    for failure in early_failures:
        if on_failure:
            on_failure(failure)
    photos = walk.photos if shard is None else [p for p in walk.photos if shard_of(p.path, shard[1]) == shard[0]]
    report = index_photos(store, photos, session, options, progress=progress, on_failure=on_failure)
    report.failures[:0] = early_failures
    if shard is None:
        present = {p.path for p in walk.photos}
        for root in source.roots:
            folder = os.path.abspath(os.path.expanduser(root))
            if os.path.isdir(folder):
                store.forget_missing(folder, present)
    return report, walk.unsupported, walk.companions


def rank_folders(
    store: Store,
    source: PhotoSource,
    session: ModelSession,
    head: Head,
    options: IndexOptions | None = None,
    *,
    checks: Checks = Checks(),
    progress: ProgressFn | None = None,
    text_progress: ProgressFn | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> FolderRanking:
    """Find the photos of source, embed what is new or changed, and rank them all."""
    report, unsupported, companions = index_folders(store, source, session, options, progress=progress,
                                                    on_failure=on_failure)
    ranked = rank_photos(store, report.ready, session, head, text_progress, checks)
    for photo in ranked:
        photo.companions = companions.get(photo.path, [])
    return FolderRanking(ranked, report, unsupported, companions=companions)


def shard_of(path: str, shards: int) -> int:
    """Which of `shards` shares a file belongs to: stable across processes and runs."""
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % shards
