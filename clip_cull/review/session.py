"""What one review serves: the ranked photos by id, their suggestions and decisions, search.

Photos are known to the page only by their number in this ranking: the server never takes a
path from a request, so nothing outside the ranked set can be read.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from clip_cull.actions.tag import star_ratings
from clip_cull.actions.move import MoveStopped
from clip_cull.review.decisions import REJECT, Decision, DecisionWriter, ReviewError, move_rejects
from clip_cull.review.ondisk import json_rating
from clip_cull.review.thumbs import ThumbnailCache
from clip_cull.search import EmbeddingIndex, query_embedding
from clip_cull.store import Store

MAX_SEARCH_HITS = 200


class MoveIncomplete(ReviewError):
    """Moving the rejects stopped part way: `moved` holds the ids of the photos that went."""

    def __init__(self, message: str, run_id: int, moved: list[int]):
        super().__init__(message)
        self.run_id, self.moved = run_id, moved


@dataclass
class ReviewPhoto:
    id: int
    ranked: object  # a RankedPhoto: path, score, label, flags, captured_at, companions
    fingerprint: str | None
    group: int | None
    suggested_stars: int
    decision: Decision
    sidecar_problem: str | None  # why its sidecar cannot be read (None: it can)
    moved: bool = False


class ReviewSession:
    def __init__(self, store: Store, ranked: list, groups: dict[str, int], roots: list[str],
                 writer: DecisionWriter, thumbs: ThumbnailCache, model_id: str,
                 text_session_factory: Callable[[], object] | None = None):
        self.store = store
        self.roots = roots
        self.writer = writer
        self.thumbs = thumbs
        self.model_id = model_id
        self._text_session_factory = text_session_factory
        self._text_session = None
        self._index: EmbeddingIndex | None = None
        self._closed = False
        self._store_lock = threading.RLock()  # one SQLite connection, used from the server's threads
        records = store.file_records([p.path for p in ranked])
        stars = star_ratings(np.array([p.score for p in ranked])) if ranked else []
        self.photos = [
            ReviewPhoto(i, p, records[p.path].fingerprint if p.path in records else None, groups.get(p.path),
                        int(stars[i]), *self._read_decision(p.path))
            for i, p in enumerate(ranked)
        ]

    def _read_decision(self, path: str) -> tuple[Decision, str | None]:
        """The decision the photo's sidecar holds, and why it cannot be read (None: it can)."""
        try:
            return self.writer.current(path), None
        except Exception as e:  # one sidecar's odd content must never take the others' listing down
            return Decision(), f"its sidecar cannot be read: {e}"

    # --- the page's data -----------------------------------------------------------------

    def photo(self, photo_id: int) -> ReviewPhoto | None:
        if 0 <= photo_id < len(self.photos) and not self.photos[photo_id].moved:
            return self.photos[photo_id]
        return None

    def listing(self) -> list[dict]:
        return [self._row(p) for p in self.photos if not p.moved]

    def _row(self, p: ReviewPhoto) -> dict:
        r = p.ranked
        return {
            "id": p.id,
            "v": self.version(p),
            "name": os.path.basename(r.path),
            "folder": os.path.dirname(r.path),
            "rank": r.rank,
            "score": round(r.score, 4),
            "label": r.label,
            "flags": list(r.flags),
            "captured": r.captured_at,
            "camera": r.camera,
            "group": p.group,
            "suggested": p.suggested_stars,
            "focus": None if r.quality is None else round(r.quality.focus, 1),
            "rating": _shown_rating(p.decision),
            "picked": bool(p.decision.picked),
            "problem": p.sidecar_problem,
        }

    @staticmethod
    def version(photo: ReviewPhoto) -> str | None:
        """What the page puts in an image's URL: ids are places in this ranking, so the same URL
        names another photo in a later review on the same port; the content hash never does."""
        return photo.fingerprint[:16] if photo.fingerprint else None

    def image(self, photo_id: int, size: str) -> bytes | None:
        photo = self.photo(photo_id)
        if photo is None or photo.fingerprint is None:
            return None
        return self.thumbs.get(photo.ranked.path, photo.fingerprint, size)

    # --- decisions -----------------------------------------------------------------------

    def decide(self, photo_id: int, action: str, value: int | None = None) -> dict | None:
        kwargs = {"stars": {"rating": value}, "reject": {"rating": REJECT}, "clear": {"clear": True},
                  "pick": {"toggle_pick": True}}[action]
        with self._store_lock:  # not while its rejects are being moved: a sidecar would be left behind
            photo = self.photo(photo_id)
            if photo is None:
                return None
            photo.decision = self.writer.decide(photo.ranked.path, photo.ranked.companions, **kwargs)
        return self._row(photo)

    def undo(self) -> dict | None:
        with self._store_lock:
            undone = self.writer.undo_last()
        if undone is None:
            return None
        path, decision = undone
        photo = next(p for p in self.photos if p.ranked.path == path)
        photo.decision = decision
        return self._row(photo)

    def move_rejects(self) -> tuple[int | None, list[int]]:
        with self._store_lock:  # no decision lands between choosing the rejects and moving them
            rejects = [p for p in self.photos if not p.moved and p.decision.rating == REJECT]
            try:
                run_id = move_rejects(self.store, self.writer.journal, [p.ranked for p in rejects], self.roots)
            except MoveStopped as e:
                # Those already moved leave the page (a decision there would write a sidecar
                # beside nothing); the others stay, and the page hears which went.
                gone = [p for p in rejects if not os.path.lexists(p.ranked.path)]
                self._moved(gone)
                raise MoveIncomplete(
                    f"the move stopped: {e.reason}; {len(gone)} of {len(rejects)} rejects moved "
                    f"(clipcull undo {e.run_id} puts them back)", e.run_id, [p.id for p in gone]) from None
            self._moved(rejects)
        return run_id, [p.id for p in rejects]

    def _moved(self, photos: list[ReviewPhoto]) -> None:
        for p in photos:
            p.moved = True
        self.writer.forget({p.ranked.path for p in photos})

    # --- search --------------------------------------------------------------------------

    def search(self, query: str, top: int = MAX_SEARCH_HITS) -> list[dict]:
        """Ids (with similarity) of the photos closest to the text, most similar first."""
        with self._store_lock:
            if self._index is None:
                self._index = EmbeddingIndex(self.store, [p.ranked.path for p in self.photos], self.model_id)
            vector = query_embedding(self.store, self.text_session(), query)
        by_path = {p.ranked.path: p for p in self.photos if not p.moved}
        return [{"id": by_path[h.path].id, "similarity": round(h.similarity, 4)}
                for h in self._index.top(vector) if h.path in by_path][:top]

    def text_session(self):
        with self._store_lock:  # the model's identity may be read from the cache
            if self._text_session is None:
                self._text_session = self._text_session_factory()
            return self._text_session

    def warm_up(self) -> None:
        """Load the text model and the embeddings now (in the background), so the first search is quick."""
        try:
            with self._store_lock:
                if self._closed:
                    return
                if self._index is None:
                    self._index = EmbeddingIndex(self.store, [p.ranked.path for p in self.photos], self.model_id)
            self.text_session().encoder
        except Exception:
            pass  # the search itself reports the problem when someone searches

    def close(self) -> None:
        """No more use of the cache from here (the caller closes it once the warm-up is over)."""
        with self._store_lock:
            self._closed = True


def _shown_rating(decision: Decision):
    """The rating as the page shows it: the number, or as written where it is none ("1e999", "abc")."""
    rating = decision.rating if decision.rating is not None else getattr(decision, "rating_text", None)
    return json_rating(rating)
