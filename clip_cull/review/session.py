"""What one review serves: the ranked photos by id, their suggestions and decisions, search.

Photos are known to the page only by their number in this ranking: the server never takes a
path from a request, so nothing outside the ranked set can be read.

What the page shows is what is on disk. Every listing, poll, image and decision checks the photos
and their sidecars first (a stat each; a photo is hashed, a sidecar re-read, only when its stamp
changed). A photo's `gen` counts its changes: those found on disk (the photo replaced, its sidecar
re-rated by darktable or exiftool) and every decision a page of this review made (each browser tab
is a page, with its own `client` id). The page sends back the content version `v` and the `gen` it
showed with every decision, and a decision on what changed since is refused, unless every change
since was that same page's own (keys pressed faster than the answers come).
`rev` orders the rows the page is handed, so an answer that arrives late never overwrites a newer one.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from clip_cull.culling.move import MoveStopped
from clip_cull.culling.report import MAX_FACES  # close-ups beside the photo, as the report shows them
from clip_cull.culling.tag import star_ratings
from clip_cull.culling.xmp import sidecar_path
from clip_cull.core.files import NotRegularFile
from clip_cull.review.decisions import REJECT, Decision, DecisionWriter, ReviewError, not_a_photo, move_rejects
from clip_cull.review.ondisk import UNCHECKED, fingerprint, json_rating, shown_text, stamp, stamps
from clip_cull.review.thumbs import ThumbnailCache
from clip_cull.scoring.search import EmbeddingIndex, query_prompt
from clip_cull.store.cache import Store

MAX_SEARCH_HITS = 200
WAIT_STEP_S = 0.1  # how often a search waiting for the model looks whether the review is stopping
PRESS_AGAIN = "reloaded — press again"


class MoveIncomplete(ReviewError):
    """Moving the rejects stopped part way: `moved` holds the ids of the photos that went."""

    def __init__(self, message: str, run_id: int, moved: list[int]):
        super().__init__(message)
        self.run_id, self.moved = run_id, moved


class ChangedSinceShown(ReviewError):
    """A decision about a photo (or sidecar) that changed on disk since the page showed it;
    `row` is the photo as it is now, for the page to show instead."""

    def __init__(self, message: str, row: dict):
        super().__init__(message)
        self.row = row


@dataclass
class ReviewPhoto:
    id: int
    ranked: object  # a RankedPhoto: path, score, label, flags, captured_at, companions
    fingerprint: str | None  # the content on disk, as last checked (None: cannot be read)
    group: int | None
    suggested_stars: int
    decision: Decision = field(default_factory=Decision)  # as the sidecar held it when last checked
    moved: bool = False
    ranked_fingerprint: str | None = None  # the content clipcull ranked: the score is of that
    ranked_size_mtime: tuple[int, int] | None = None
    gen: int = 0  # changes to the photo or its decision: found on disk, or made by a page of this review
    gen_by: dict = field(default_factory=dict)  # gen -> the page (client) whose decision made it; absent: the disk
    rev: int = 0  # the session's change counter when this photo's row last changed
    last_change: str = "photo"  # what the last change was: "photo" or "sidecar" (found on disk), or "decision"
    photo_stamp: tuple | None = UNCHECKED
    sidecar_stamp: tuple = UNCHECKED
    sidecar_names: list[Path] = field(default_factory=list)  # looked at to see a sidecar change
    own_versions: set = field(default_factory=set)  # contents this session's own writes replaced (--embed)
    problem: str | None = None  # why the photo cannot be read now
    sidecar_problem: str | None = None  # why its sidecar cannot be read now
    image_problem: tuple[str, str] | None = None  # (content, why it cannot be shown): a truncated file


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
        self.stopping = False  # set by Ctrl-C: searches stop waiting for the model
        self._before: dict[int, Decision] = {}  # each photo's decision before this session first changed it
        self.move_runs: list[int] = []
        self._store_lock = threading.RLock()  # one SQLite connection, used from the server's threads
        # The photos' on-disk state; taken after _store_lock where both are (a sidecar is read
        # with the journal, a SQLite connection the server's threads share: only under _store_lock).
        self._disk_lock = threading.Lock()
        self._rev = 0
        self._info: dict[str, dict] = {}  # the info panel's facts by content
        self._listings: dict | None = {}  # each folder listed once while the session starts; afresh after
        records = store.file_records([p.path for p in ranked])
        stars = star_ratings(np.array([p.score for p in ranked])) if ranked else []
        self.photos = [self._photo(i, p, records.get(p.path), groups.get(p.path), int(stars[i]))
                       for i, p in enumerate(ranked)]
        self._listings = None

    def _photo(self, i: int, ranked, record, group: int | None, stars: int) -> ReviewPhoto:
        fp = record.fingerprint if record else None
        photo = ReviewPhoto(i, ranked, fp, group, stars, ranked_fingerprint=fp,
                            ranked_size_mtime=(record.size, record.mtime_ns) if record else None)
        photo.sidecar_names = self._sidecar_names(ranked)
        self._check_photo(photo)
        self._check_sidecar(photo)
        return photo

    def _sidecar_names(self, ranked) -> list[Path]:
        """The files whose change may change what the page shows of the photo's decision (all that
        the rating reader reads): the sidecars decisions go to, the photo's and its RAW's under both
        namings, and the photo and its RAW themselves (their embedded XMP)."""
        members = [ranked.path, *ranked.companions]
        names = [*self.writer.sidecars(ranked.path, ranked.companions),
                 *(sidecar_path(m, style) for m in members for style in ("lightroom", "darktable")), *members]
        return list(dict.fromkeys(Path(n) for n in names))

    # --- the page's data -----------------------------------------------------------------

    def stacks(self) -> int:
        """How many cells the page's grid shows at first: a burst or near-duplicate group is one."""
        live = [p for p in self.photos if not p.moved]
        return sum(1 for p in live if p.group is None) + len({p.group for p in live if p.group is not None})

    def photo(self, photo_id: int) -> ReviewPhoto | None:
        if 0 <= photo_id < len(self.photos) and not self.photos[photo_id].moved:
            return self.photos[photo_id]
        return None

    def check(self, photo_id: int) -> ReviewPhoto | None:
        """The photo, its content checked against the disk first (None: no such photo). Its
        sidecar is left to the next poll: an image never waits for the cache (a search holds it)."""
        with self._disk_lock:
            photo = self.photo(photo_id)
            if photo is not None:
                self._refresh(photo, sidecar=False)
        return photo

    def listing(self) -> list[dict]:
        return self.changes()["photos"]

    def changes(self, since: int = -1) -> dict:
        """Every photo checked against the disk; the rows changed after `since` (a `rev` the page
        was handed), and the rev to ask from next time."""
        with self._store_lock, self._disk_lock:
            live = [p for p in self.photos if not p.moved]
            for p in live:
                self._refresh(p)
            return {"photos": [self._row(p) for p in live if p.rev > since], "rev": self._rev}

    def _row(self, p: ReviewPhoto) -> dict:
        r = p.ranked
        return {
            "id": p.id,
            "v": self.version(p),
            "gen": p.gen,
            "rev": p.rev,
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
            "colour": None if p.decision.label is None else shown_text(p.decision.label),
            "changed": p.ranked_fingerprint is not None and p.fingerprint != p.ranked_fingerprint,
            "problem": p.problem or self._image_problem(p) or p.sidecar_problem,
            "faces": _faces_shown(r),
        }

    @staticmethod
    def version(photo: ReviewPhoto) -> str | None:
        """What the page puts in an image's URL and sends back with a decision: ids are places in
        this ranking, so the same URL names another photo in a later review on the same port, and
        a photo replaced under its name is another photo; the content hash never is."""
        return photo.fingerprint[:16] if photo.fingerprint else None

    def image(self, photo_id: int, size: str) -> bytes | None:
        """The photo's image; a photo that cannot be shown (a truncated file) raises, and its row
        says why from then on (its keys are refused: nothing is decided on a photo not seen)."""
        from clip_cull.core.images import UnreadableImage

        photo = self.photo(photo_id)
        if photo is None or photo.fingerprint is None:
            return None
        content = photo.fingerprint
        try:
            return self.thumbs.get(photo.ranked.path, content, size)
        except (UnreadableImage, OSError) as e:
            reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
            with self._disk_lock:
                if photo.fingerprint == content and photo.image_problem != (content, reason):
                    photo.image_problem = (content, reason)
                    self._touch(photo)
            raise

    @staticmethod
    def _image_problem(p: ReviewPhoto) -> str | None:
        if p.image_problem and p.image_problem[0] == p.fingerprint:
            return f"the photo cannot be shown: {p.image_problem[1]}"
        return None

    def face(self, photo_id: int, index: int) -> bytes | None:
        """The close-up of the photo's index-th judged face (as its row lists them); None when
        there is none, or the photo is no longer the content the faces were found in."""
        from clip_cull.core import faces

        photo = self.photo(photo_id)
        if photo is None or photo.fingerprint is None or photo.fingerprint != photo.ranked_fingerprint:
            return None
        shown = faces.judged(getattr(photo.ranked, "faces", None) or [])[:MAX_FACES]
        if not 0 <= index < len(shown):
            return None
        return self.thumbs.face(photo.ranked.path, photo.fingerprint, f"{faces.VERSION}-{index}", shown[index]["box"])

    def info(self, photo_id: int) -> dict | None:
        """The info panel's facts beyond the row: lens, exposure time, f-number, ISO, focal
        length (EXIF), and the histogram of the preview the page shows (256 bins a channel)."""
        from PIL import Image

        from clip_cull.core.files import read_file
        from clip_cull.core.images import read_exposure

        photo = self.photo(photo_id)
        if photo is None or photo.fingerprint is None:
            return None
        known = self._info.get(photo.fingerprint)
        if known is None:
            exposure = read_exposure(read_file(photo.ranked.path)[0])
            preview = self.thumbs.get(photo.ranked.path, photo.fingerprint, "preview")
            with Image.open(io.BytesIO(preview)) as image:
                counts = image.convert("RGB").histogram()
            known = self._info[photo.fingerprint] = {
                **exposure, "histogram": {"r": counts[:256], "g": counts[256:512], "b": counts[512:]}}
        return {"id": photo.id, "v": self.version(photo), **known}

    # --- the disk ------------------------------------------------------------------------

    def _refresh(self, p: ReviewPhoto, sidecar: bool = True) -> bool:
        """Check the photo and (under _store_lock) its sidecar on disk, under _disk_lock; True when
        either changed since last checked. The row's rev moves on whenever what the page shows changes."""
        problems = (p.problem, p.sidecar_problem)
        photo_changed = self._check_photo(p)
        sidecar_changed = sidecar and self._check_sidecar(p)
        if photo_changed or sidecar_changed:
            p.gen += 1
            p.last_change = "photo" if photo_changed else "sidecar"
        if photo_changed or sidecar_changed or problems != (p.problem, p.sidecar_problem):
            self._touch(p)
        return photo_changed or sidecar_changed

    def _check_photo(self, p: ReviewPhoto) -> bool:
        """True when the photo's content is no longer the one last seen."""
        now = stamp(p.ranked.path)
        if now == p.photo_stamp:
            return False
        first, p.photo_stamp = p.photo_stamp == UNCHECKED, now
        if now is None:  # the content stays what it was: a photo put back is the same photo
            p.problem = "the photo is gone from disk (moved or deleted since the review began)"
            return False
        p.problem = None
        if first and p.fingerprint and p.ranked_size_mtime == (now[2], now[3]):
            return False  # as clipcull ranked it a moment ago: no need to read it again
        try:
            content = fingerprint(p.ranked.path)
        except NotRegularFile:  # replaced by a folder, a FIFO: said as what it is
            content, p.problem = None, f"the photo {not_a_photo(p.ranked.path)}"
        except OSError as e:
            content, p.problem = None, f"the photo cannot be read: {e.strerror or e}"
        changed, p.fingerprint = content != p.fingerprint, content
        return changed

    def _check_sidecar(self, p: ReviewPhoto) -> bool:
        """True when the decision its sidecar holds is no longer the one last seen."""
        now = stamps(p.sidecar_names)
        if now == p.sidecar_stamp:
            return False
        p.sidecar_stamp = now  # taken before reading: a write after it is seen next time
        try:
            decision = self.writer.current(p.ranked.path, p.ranked.companions, self._listings)
            p.sidecar_problem = self.writer.shared(p.ranked.path, p.ranked.companions, self._listings) or decision.problem
        except Exception as e:  # one sidecar's odd content must never take the others' listing down
            decision, p.sidecar_problem = Decision(), f"its sidecar cannot be read: {e}"
        changed = _shown_state(decision) != _shown_state(p.decision)
        p.decision = decision
        return changed

    def _touch(self, p: ReviewPhoto) -> None:
        self._rev += 1
        p.rev = self._rev

    def _check_shown(self, p: ReviewPhoto, shown: tuple[str | None, int], client: str | None = None) -> None:
        """Refuse a decision made on what is no longer there: the photo replaced, its sidecar
        re-rated by another program, or its decision changed by another page of this review (a
        second tab). Changes since that this same page made (its earlier keys, answered or not) are
        what it pressed on; the page is handed the photo as it is now."""
        version, gen = shown
        # a version this session's own --embed write replaced shows the same pixels and decision
        if version == self.version(p) or version in p.own_versions:
            since = range(gen + 1, p.gen + 1)
            if gen == p.gen or (client is not None and 0 <= gen < p.gen
                                and all(p.gen_by.get(g) == client for g in since)):
                return
            if gen < p.gen and all(p.gen_by.get(g) is not None for g in since):
                raise ChangedSinceShown(f"{os.path.basename(p.ranked.path)}: its decision was changed in another page "
                                        f"of this review since it was shown; {PRESS_AGAIN}", self._row(p))
        if version != self.version(p) or p.last_change == "photo":
            what = os.path.basename(p.ranked.path)
        else:
            what = self.writer.sidecars(p.ranked.path)[0].name
        raise ChangedSinceShown(f"{what} changed on disk since it was shown; {PRESS_AGAIN}", self._row(p))

    def _written(self, p: ReviewPhoto, decision: Decision, client: str | None) -> None:
        """A page of this session wrote the photo's sidecar: a change (a stale page's key on it is
        refused), but none another program made (the stamps are taken again, not compared)."""
        self._before.setdefault(p.id, p.decision)
        p.gen += 1
        p.gen_by[p.gen] = client
        p.last_change = "decision"
        p.decision = decision
        p.sidecar_stamp = stamps(p.sidecar_names)
        if self.writer.embed:
            self._rewritten(p)
        self._touch(p)

    def _rewritten(self, p: ReviewPhoto) -> None:
        """review --embed wrote the decision into the photo itself (or U took it out): new bytes,
        the same pixels (the writer checks them identical). Not another program's change: the
        page's images and faces stay (copied under the new content), so does the score."""
        now = stamp(p.ranked.path)
        if now is None or now == p.photo_stamp:
            return
        try:
            content = fingerprint(p.ranked.path)
        except OSError:
            return  # the next check says why
        old, p.photo_stamp = p.fingerprint, now
        if content == old or old is None:
            return
        self.thumbs.alias(old, content)
        with self._store_lock:  # the next rank embeds nothing again (store/cache.py carry_over)
            self.store.carry_over([(p.ranked.path, old, content)])
        if p.ranked_fingerprint == old:
            p.ranked_fingerprint = content
        p.own_versions.add(self.version(p))
        p.fingerprint = content

    # --- decisions -----------------------------------------------------------------------

    def decide(self, photo_id: int, action: str, value: int | None = None,
               shown: tuple[str | None, int] | None = None, client: str | None = None) -> dict | None:
        """One decision; `shown`: the (version, gen) the page showed, checked against the disk
        first (raises ChangedSinceShown); `client`: the page (a tab) that pressed the key. The
        answer is the photo as its sidecar now holds it."""
        kwargs = {"stars": {"rating": value}, "reject": {"rating": REJECT}, "clear": {"clear": True},
                  "pick": {"toggle_pick": True}, "colour": {"colour": value}}[action]
        # The journal first: while another clipcull process holds it, the key waits (up to 5 s)
        # holding nothing of the session's, so the page's polls and images go on meanwhile.
        # _store_lock: not while its rejects are being moved (a sidecar would be left behind);
        # _disk_lock: no check in between takes this session's own write for another program's.
        with self.writer.holding(), self._store_lock, self._disk_lock:
            photo = self.photo(photo_id)
            if photo is None:
                return None
            self._refresh(photo)
            if shown is not None:
                self._check_shown(photo, shown, client)
            unseen = photo.problem or self._image_problem(photo)
            if unseen:  # nothing is decided on a photo that cannot be read or shown
                raise ReviewError(f"{os.path.basename(photo.ranked.path)}: {unseen}; nothing written")
            try:
                decision = self.writer.decide(photo.ranked.path, photo.ranked.companions, client=client, **kwargs)
            except BaseException:
                photo.sidecar_stamp = UNCHECKED  # whatever was put back, the next check reads it
                raise
            self._written(photo, decision, client)
            return self._row(photo)

    def undo(self, client: str | None = None, earlier: list[str] = ()) -> dict | None:
        """U: the last action of this page undone (`client`: its id, `earlier`: its earlier loads';
        no client: the session's last action); None when there is none."""
        pages = None if client is None else {client, *earlier}
        with self.writer.holding(), self._store_lock, self._disk_lock:
            undone = self.writer.undo_last(pages)
            if undone is None:
                return None
            path, decision = undone
            photo = next(p for p in self.photos if p.ranked.path == path)
            self._written(photo, decision, client)
            return self._row(photo)

    def move_rejects(self) -> tuple[int | None, list[int]]:
        """Move the rejects as the page showed them: (run id, ids moved). A reject that changed on
        disk since it was shown (replaced, or re-rated elsewhere) stays, and its row moves on
        (`changes` hands it to the page)."""
        with self.writer.holding(), self._store_lock, self._disk_lock:  # no decision lands between choosing the rejects and moving them
            live = [p for p in self.photos if not p.moved]
            changed = {p.id for p in live if self._refresh(p)}
            rejects = [p for p in live if p.decision.rating == REJECT and p.id not in changed]
            try:
                run_id = move_rejects(self.store, self.writer.journal, [p.ranked for p in rejects], self.roots)
            except MoveStopped as e:
                # Those already moved leave the page (a decision there would write a sidecar
                # beside nothing); the others stay, and the page hears which went.
                gone = [p for p in rejects if not os.path.lexists(p.ranked.path)]
                self._moved(gone)
                self.move_runs.append(e.run_id)
                raise MoveIncomplete(
                    f"the move stopped: {e.reason}; {len(gone)} of {len(rejects)} rejects moved "
                    f"(clipcull undo {e.run_id} puts them back)", e.run_id, [p.id for p in gone]) from None
            self._moved(rejects)
            if run_id is not None:
                self.move_runs.append(run_id)
            return run_id, [p.id for p in rejects]

    def _moved(self, photos: list[ReviewPhoto]) -> None:
        for p in photos:
            p.moved = True
        self.writer.forget({p.ranked.path for p in photos})

    # --- search --------------------------------------------------------------------------

    def search(self, query: str, top: int = MAX_SEARCH_HITS) -> list[dict]:
        """Ids (with similarity) of the photos closest to the text, most similar first. The text
        model loads on the first search that needs it (a query embedded before is in the cache),
        outside the cache's lock: the page's keys keep working meanwhile, and a review that stops
        stops waiting for it (ReviewStopped)."""
        prompt = query_prompt(query)
        with self._store_lock:
            self._check_open()
            if self._index is None:
                self._index = EmbeddingIndex(self.store, [p.ranked.path for p in self.photos], self.model_id)
            session = self.text_session()
            vector = self.store.text_embeddings(session.text_model_id, [prompt]).get(prompt)
        if vector is None:
            vector = self._encoder(session).encode_texts([prompt])[0]
            with self._store_lock:
                self._check_open()
                self.store.save_text_embeddings(session.text_model_id, [prompt], [vector])
        by_path = {p.ranked.path: p for p in self.photos if not p.moved}
        return [{"id": by_path[h.path].id, "similarity": round(h.similarity, 4)}
                for h in self._index.top(np.asarray(vector, np.float32)) if h.path in by_path][:top]

    def text_session(self):
        """The model session search embeds text with (made on first use; loading the model is
        left to the first text that needs it)."""
        with self._store_lock:  # the model's identity may be read from the cache
            if self._text_session is None:
                self._text_session = self._text_session_factory()
            return self._text_session

    def _encoder(self, session):
        """The loaded text model, loaded in the background; waiting for it ends when the review stops."""
        session.start_loading()
        while not session.wait_loaded(WAIT_STEP_S):
            if self.stopping:
                raise ReviewStopped("the review is stopping")
        return session.encoder  # the load's error, if it failed

    def _check_open(self) -> None:
        if self._closed or self.stopping:
            raise ReviewStopped("the review is stopping")

    @property
    def text_model_loaded(self) -> bool:
        return self._text_session is not None and self._text_session.loaded

    # --- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """The review is stopping (Ctrl-C): searches stop waiting for the model. Safe to call
        from a signal handler (it only sets a flag)."""
        self.stopping = True

    def close(self) -> None:
        """No more use of the cache from here: waits for a decision or move being written."""
        self.stopping = True
        with self._store_lock:
            self._closed = True

    def summary(self) -> "SessionSummary":
        """What this session decided: the photos whose decision it changed, by what they hold
        now, and the rejects it moved."""
        with self._disk_lock:
            changed = [p for p in self.photos if p.id in self._before
                       and _shown_state(p.decision) != _shown_state(self._before[p.id])]
            return SessionSummary(
                photos=len(changed),
                rated=sum(1 for p in changed if p.decision.rating in (1, 2, 3, 4, 5)),
                rejected=sum(1 for p in changed if p.decision.rating == REJECT),
                picked=sum(1 for p in changed if p.decision.picked),
                cleared=sum(1 for p in changed if p.decision.rating is None and not p.decision.picked),
                moved=sum(1 for p in self.photos if p.moved),
                run_id=self.writer.run_id,
                move_runs=list(self.move_runs),
            )


@dataclass
class SessionSummary:
    photos: int  # photos whose decision the session changed
    rated: int  # of those, now rated 1-5 stars
    rejected: int
    picked: int
    cleared: int  # now unrated and not picked
    moved: int  # rejects moved to _rejects
    run_id: int | None  # the session's journaled run (its decisions)
    move_runs: list[int]


class ReviewStopped(ReviewError):
    """The review stopped while a request was waiting (for the text model)."""


def _faces_shown(ranked) -> list[dict] | None:
    """The faces judged (eyes and focus measured), largest first, as the page shows them beside
    the photo; None where the faces were not analysed (no faces extra)."""
    every = getattr(ranked, "faces", None)
    if every is None:
        return None
    from clip_cull.core.faces import judged

    return [{"closed": f.get("eyes_closed"),
             "openness": None if not f.get("openness") else round(sum(f["openness"]) / len(f["openness"]), 3),
             "focus": round(float(f["focus"]), 1), "soft": f.get("soft")}
            for f in judged(every)[:MAX_FACES]]


def _shown_rating(decision: Decision):
    """The rating as the page shows it: the number, or as written where it is none ("1e999", "abc")."""
    rating = decision.rating if decision.rating is not None else getattr(decision, "rating_text", None)
    return json_rating(rating)


def _shown_state(decision: Decision) -> tuple:
    """What the page shows of a decision (a NaN rating equals itself here)."""
    return repr(_shown_rating(decision)), bool(decision.picked), decision.label
