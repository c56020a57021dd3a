"""The photographer's decisions, written to XMP sidecars at once and journaled.

Every call into the rest of clipcull that changes files is gathered here: the XMP merge and
sidecar naming `tag` uses, the journal `clipcull undo` reads, and the journaled move of `move`.

A review session is one journaled run (kind "review"): `clipcull undo` reverts the whole session;
`undo_last` reverts one action. A decision is the photographer's, not clipcull's: the sidecar does
not carry the `clipcull:rated` keyword, so a later `clipcull tag` keeps the rating.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.actions.fileops import write_atomic
from clip_cull.actions.journal import DONE, FAILED, PLANNED, RUNNING, UNDONE, Journal, Step
from clip_cull.actions.move import apply_moves, plan_moves
from clip_cull.actions.xmp import RATED_KEYWORD, XmpError, merge, read_fields, read_xmp_file, sidecar_path
from clip_cull.errors import ClipCullError
from clip_cull.files import content_fingerprint
from clip_cull.state import StateStore
from clip_cull.store import Store

REVIEW_RUN_KIND = "review"
REJECT = -1
DEFAULT_PICK_LABEL = "Green"  # Lightroom's and darktable's colour label for a pick


class ReviewError(ClipCullError):
    """A decision could not be written (or undone); str() names the file and why."""


@dataclass
class Decision:
    rating: int | None = None  # the photographer's: 1-5 stars, -1 reject, None unrated
    picked: bool = False

    def as_dict(self) -> dict:
        return {"rating": self.rating, "picked": self.picked}


@dataclass
class _Action:
    photo: str
    before: Decision
    steps: list[Step] = field(default_factory=list)


class DecisionWriter:
    """Writes decisions for one review session; thread-safe."""

    def __init__(self, state: StateStore, command: dict, style: str = "lightroom", pick_label: str = DEFAULT_PICK_LABEL):
        self.state = state
        self.journal = Journal(state)
        self.command = command
        self.style = style
        self.pick_label = pick_label
        self.run_id: int | None = None
        self._done: list[_Action] = []
        self._lock = threading.Lock()

    # --- reading -------------------------------------------------------------------------

    def sidecars(self, photo: str, companions: list[str] = ()) -> list[Path]:
        """The sidecars a decision goes to: the same ones `tag` writes for this photo."""
        return list(dict.fromkeys(sidecar_path(f, self.style) for f in [photo, *companions]))

    def current(self, photo: str) -> Decision:
        """The photographer's decision as the photo's sidecar holds it (a rating clipcull wrote
        with `tag` is clipcull's suggestion, not a decision)."""
        path = sidecar_path(photo, self.style)
        try:
            fields = read_fields(read_xmp_file(path))
        except XmpError:  # missing, unreadable, not XMP: no decision of the photographer's there
            return Decision()
        own = fields.rating if fields.rating not in (None, 0) and RATED_KEYWORD not in fields.keywords else None
        return Decision(own, fields.label == self.pick_label)

    # --- writing -------------------------------------------------------------------------

    def decide(self, photo: str, companions: list[str], rating: int | None = None, clear: bool = False,
               toggle_pick: bool = False) -> Decision:
        """One action: set stars or reject (rating), clear the rating (clear), or flip the pick."""
        with self._lock:
            if not os.path.isfile(photo):  # moved or deleted by another program since the review began
                raise ReviewError(f"{photo}: is gone (moved or deleted since the review began); no sidecar written")
            before = self.current(photo)
            after = Decision(None if clear else (rating if rating is not None else before.rating),
                             (not before.picked) if toggle_pick else before.picked)
            changes = []
            for path in self.sidecars(photo, companions):
                old = _read_bytes(path)
                new = self._merged(path, old, after, rating_changed=clear or rating is not None)
                if new != old:
                    changes.append((path, old, new))
            if changes:
                self._write(_Action(photo, before), changes)
            return after

    def _merged(self, path: Path, old: bytes | None, after: Decision, rating_changed: bool) -> bytes:
        if path.is_symlink():  # as `tag` does: a linked sidecar is the photographer's arrangement
            raise ReviewError(f"{path}: left alone, the sidecar is a symbolic link")
        try:
            fields = read_fields(old) if old is not None else None
            keywords = [k for k in (fields.keywords if fields else []) if k.startswith("clipcull:")]
            if rating_changed:  # the rating is now the photographer's: tag must keep it
                keywords = [k for k in keywords if k != RATED_KEYWORD]
                rating = after.rating if after.rating is not None else 0
            else:
                rating = fields.rating if fields else None
            old_label = fields.label if fields else None
            label = self.pick_label if after.picked else None
            unpicked = not after.picked and old_label == self.pick_label
            return merge(old, rating, label, keywords, drop_label=unpicked)
        except XmpError as e:
            raise ReviewError(f"{path}: left alone, not XMP clipcull can edit safely ({e})") from None

    def _write(self, action: _Action, changes: list[tuple[Path, bytes | None, bytes]]) -> None:
        run = self.journal.run(self.run_id) if self.run_id is not None else None
        if run is None or run.state not in (PLANNED, RUNNING, DONE):
            # First decision, or `clipcull undo` reverted this session meanwhile: what follows
            # is a new run, and the reverted actions are no longer U's to undo.
            self.run_id = self.journal.plan(REVIEW_RUN_KIND, self.command, [])
            self._done.clear()
        steps = [Step("sidecar", action.photo, str(path), old, content_fingerprint(new)) for path, old, new in changes]
        self.journal.add_steps(self.run_id, steps)  # journaled before any file changes
        try:
            for step, (path, _, new) in zip(steps, changes):
                try:
                    write_atomic(path, new)
                except OSError as e:
                    self._fail(action, steps, path, e)
                self.journal.mark(self.run_id, step.seq, DONE)
                action.steps.append(step)
        finally:
            if action.steps:
                self._done.append(action)
            self.journal.set_state(self.run_id, DONE)

    def _fail(self, action: _Action, steps: list[Step], path: Path, error: OSError) -> None:
        """One sidecar of an action could not be written: the action is all or nothing, so the
        sidecars it did write get their bytes back (the page keeps showing the photo as it was)."""
        why = f"{path}: cannot write the sidecar ({error.strerror or error})"
        for step in steps[len(action.steps):]:
            self.journal.mark(self.run_id, step.seq, FAILED, why)
        try:
            for step in reversed(action.steps):
                _restore(step)
                self.journal.mark(self.run_id, step.seq, UNDONE, why)
                action.steps.remove(step)
        except OSError as e:  # the written ones stay, and U can still take them back
            why += f"; {step.dst} keeps the new decision ({e.strerror or e})"
        raise ReviewError(why)

    # --- undo ----------------------------------------------------------------------------

    def undo_last(self) -> tuple[str, Decision] | None:
        """Revert the last action still in effect: (photo, its decision now), or None."""
        with self._lock:
            if not self._done:
                return None
            action = self._done[-1]
            for step in reversed(action.steps):
                current = _read_bytes(Path(step.dst))
                if current != step.before and (current is None or content_fingerprint(current) != step.after_sha):
                    raise ReviewError(f"{step.dst} changed since clipcull wrote it; left as it is")
            for step in reversed(action.steps):
                _restore(step)
                self.journal.mark(self.run_id, step.seq, UNDONE)
            self._done.pop()
            return action.photo, self.current(action.photo)

    def forget(self, photos: set[str]) -> None:
        """Photos moved away: their actions can no longer be undone one by one from here."""
        with self._lock:
            self._done = [a for a in self._done if a.photo not in photos]

    @property
    def actions(self) -> int:
        return len(self._done)


def move_rejects(store: Store, journal: Journal, photos: list, roots: list[str]) -> int | None:
    """Move photos (with RAW companions and sidecars) to ROOT/_rejects with the same journaled
    move as `clipcull move`; the run id, or None when there is nothing to move."""
    if not photos:
        return None
    steps = plan_moves(photos, roots, None)
    return apply_moves(store, journal, steps, {"command": "review --move-rejects", "folders": roots})


def _restore(step: Step) -> None:
    """Put back what was at a sidecar step's file before it was written (nothing: remove it)."""
    if step.before is None:
        Path(step.dst).unlink(missing_ok=True)
    else:
        write_atomic(step.dst, step.before)


def _read_bytes(path: Path) -> bytes | None:
    """The sidecar's bytes, None where there is none; never opens a FIFO or device."""
    if not os.path.lexists(path):
        return None
    try:
        return read_xmp_file(path)
    except XmpError as e:
        raise ReviewError(f"{path}: left alone, {e}") from None
