"""The photographer's decisions, written to XMP sidecars at once and journaled.

Decisions are written by the one XMP writer (culling/writer.py), as `tag` writes: the same
sidecar naming (an existing IMG_0001.XMP is the sidecar, never a second IMG_0001.xmp beside it),
the journal's process lock (never while another clipcull process moves or tags), the
changed-since-read check, links never written through, mode and extended attributes kept.

A review session is journaled as runs of kind "review": one run while nothing else is journaled,
and a new one as soon as another run (a `tag`, a `move`, an undo's) was journaled after it, so
the journal's runs keep the order the writes happened in and `clipcull undo`, newest first, meets
them in that order. `undo_last` (U) reverts one action with the same undo as `clipcull undo`:
it follows a later move of the sidecar, undoes a later copy of it, and leaves a later run's
write on top of it in place (that run's undo then restores what was there before the decision). A decision is the photographer's, not clipcull's: the journal
records that clipcull claims nothing of it, so a later `clipcull tag` keeps the rating.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.culling.journal import CONFLICT, DONE, PLANNED, RUNNING, UNDONE, Journal, JournalBusy, Step
from clip_cull.culling.move import apply_moves, plan_moves
from clip_cull.culling.undo import UndoConflict, undo_write
from clip_cull.culling.writer import (LABEL, RATING, Edit, XmpChange, apply_changes, claims_now, plan_embedded,
                                      plan_sidecar, read_current, restore_embedded, restore_sidecar, shared_sidecar, steps_for,
                                      target_sidecar)
from clip_cull.culling.xmp import KEYWORD_PREFIX, LABELLED_KEYWORD, RATED_KEYWORD, XmpError, parse
from clip_cull.core.errors import ClipCullError
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store

REVIEW_RUN_KIND = "review"
REJECT = -1
DEFAULT_PICK_LABEL = "Green"  # Lightroom's and darktable's colour label for a pick
LOCK_WAIT_S = 5.0  # a key press waits this long for another clipcull process's move or tag, then says so


class ReviewError(ClipCullError):
    """A decision could not be written (or undone); str() names the file and why."""


COLOURS = ("Red", "Yellow", "Green", "Blue", "Purple")  # Lightroom's colour labels (6-9: the first four)


@dataclass
class Decision:
    rating: int | None = None  # the photographer's: 1-5 stars, -1 reject, None unrated (out of range as written)
    picked: bool = False  # the label is the pick label
    rating_text: str | None = None  # xmp:Rating as written when it is no number ("abc", "1e999")
    label: str | None = None  # xmp:Label as the sidecar holds it: the pick label, a colour, any text
    rejected: bool = False  # xmp:Rating is -1, whoever wrote it (a pick takes it off)
    problem: str | None = None  # the sidecars that cannot be read, and why (keys on the photo are refused)

    def as_dict(self) -> dict:
        return {"rating": self.rating, "picked": self.picked, "rating_text": self.rating_text, "label": self.label}


@dataclass
class _Action:
    photo: str
    client: str | None = None  # the page that made it (each tab of the review is one): U undoes its own
    run_id: int | None = None
    steps: list[Step] = field(default_factory=list)
    companions: list[str] = field(default_factory=list)


class DecisionWriter:
    """Writes decisions for one review session; thread-safe."""

    def __init__(self, state: StateStore, command: dict, style: str = "lightroom", pick_label: str = DEFAULT_PICK_LABEL,
                 embed: bool = False):
        self.state = state
        self.embed = embed  # also into the photo's own XMP (JPEG, TIFF, DNG), as `tag --embed`
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
        return list(dict.fromkeys(target_sidecar(f, self.style) for f in [photo, *companions]))

    def shared(self, photo: str, companions: list[str] = (), listings: dict | None = None) -> str | None:
        """One line when a sidecar of this photo is another photo's too (A.jpg and A.png, one A.xmp):
        no decision is written there, for either (writer.shared_sidecar)."""
        found = shared_sidecar(photo, list(companions), self.style, listings)
        return found[1] if found else None

    def current(self, photo: str, companions: list[str] = (), listings: dict | None = None) -> Decision:
        """The photographer's decision as clipcull's rating reader finds it now, on disk (the same
        reader `tag` keeps ratings by, culling/ratings.py): the photo's sidecars, its RAW's, the XMP
        embedded in the photo (what Lightroom Classic reads) and in its RAW, in that order. A value
        clipcull wrote with `tag`, by the journal, is clipcull's suggestion, not a decision.
        `problem`: the sidecars that cannot be read (a link, a folder, a FIFO, not XMP), by name."""
        from clip_cull.culling.ratings import find_rating

        found = find_rating(photo, list(companions), False, listings, self.journal)
        problems = {Path(where).name: why for where, why in found.problems}
        for path in self.sidecars(photo, companions):  # where a decision goes: writable, or why not
            try:
                data = read_current(path)
                if data is not None:
                    parse(data)
            except XmpError as e:
                problems.setdefault(path.name, str(e))
        written = found.written if found.rating is not None else None
        own = written if written not in (None, 0) else None
        odd = found.odd if found.rating is None else None
        problem = "; ".join(f"{name} {why}" for name, why in problems.items()) or None
        return Decision(own, found.label == self.pick_label, odd, found.label, written == REJECT,
                        None if problem is None else f"cannot be read: {problem}")

    # --- writing -------------------------------------------------------------------------

    def decide(self, photo: str, companions: list[str], rating: int | None = None, clear: bool = False,
               toggle_pick: bool = False, colour: str | None = None, client: str | None = None) -> Decision:
        """One action: set stars or reject (rating), clear the rating (clear), flip the pick, or
        set a colour label (the same colour again takes it off). Flags are Lightroom's: a photo
        is picked, rejected or neither, so a pick takes a reject off and a reject a pick (the
        pick is the pick label: a colour label replaces it, and the pick label's colour is a pick).
        Returns the decision as the sidecar holds it afterwards. `client`: the page that pressed the
        key (its U undoes its own actions only)."""
        with self._lock, self._holding_journal():
            if not os.path.isfile(photo):  # moved, deleted or replaced by something else since the review began
                raise ReviewError(f"{photo}: {not_a_photo(photo)}; no sidecar written")
            shared = self.shared(photo, companions)
            if shared:
                raise ReviewError(shared)
            before = self.current(photo, companions)
            rating_changed = clear or rating is not None
            new_rating = None if clear else (rating if rating is not None else before.rating)
            label_changed, new_label = toggle_pick or colour is not None, before.label
            if toggle_pick:
                new_label = None if before.picked else self.pick_label
            elif colour is not None:
                new_label = None if before.label == colour else colour
            if label_changed and new_label == self.pick_label and before.rejected and not rating_changed:
                new_rating, rating_changed = None, True  # a pick is no reject
            if rating == REJECT and before.picked:
                new_label, label_changed = None, True  # a reject is no pick
            after = Decision(new_rating, new_label == self.pick_label, label=new_label)
            changes = [self._planned(photo, path, after, rating_changed, label_changed, before.label)
                       for path in self.sidecars(photo, companions)]
            if self.embed:
                changes.append(self._planned_embedded(photo, after, rating_changed, label_changed, before.label))
            changes = [c for c in changes if c.writes]
            if changes:
                self._write(_Action(photo, client, companions=list(companions)), changes)
            return self.current(photo, companions)

    def holding(self):
        """The journal's process lock, re-entrant in this process (see _holding_journal): the
        session takes it before its own locks, so that a wait for another clipcull process never
        holds up the page's polls."""
        return self._holding_journal()

    @contextlib.contextmanager
    def _holding_journal(self):
        """The journal's process lock, as tag and move take it, waiting only briefly: a key press
        never writes while another clipcull process moves, tags or undoes."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.journal.exclusive(wait_s=LOCK_WAIT_S))
            except JournalBusy:
                raise ReviewError("another clipcull process is moving, tagging or undoing; nothing was "
                                  "written: press again when it has finished") from None
            yield

    def _planned(self, photo: str, path: Path, after: Decision, rating_changed: bool, label_changed: bool,
                 label_before: str | None) -> XmpChange:
        """The sidecar with this decision merged in. Only what the photographer changed is set:
        a rating key leaves the label alone, P leaves the rating alone (but for a reject)."""
        try:
            data = read_current(path)
            fields = parse(data).fields() if data is not None else None
        except XmpError as e:
            raise ReviewError(f"{path}: left alone, not XMP clipcull can edit safely ({e})") from None
        claims = claims_now(self.journal, path, fields, data)
        edit = self._edit(fields, claims, after, rating_changed, label_changed, label_before)
        change = plan_sidecar(photo, path, edit, claims=claims)
        if change.problem:
            raise ReviewError(f"{path}: {change.note}")
        return change

    def _planned_embedded(self, photo: str, after: Decision, rating_changed: bool, label_changed: bool,
                          label_before: str | None) -> XmpChange:
        """review --embed: the decision merged into the photo's own XMP too, as `tag --embed` writes
        it (JPEG, TIFF, DNG; pixels checked identical). Another format: nothing (the sidecar has it);
        a photo whose XMP cannot be written safely refuses the key (all or nothing)."""
        from clip_cull.culling.embedded import can_embed, embedded_packet

        if not can_embed(photo):
            return XmpChange(photo, Path(photo), None, None, note="not embedded: not JPEG, TIFF or DNG")
        try:
            packet = embedded_packet(photo)
            fields = parse(packet).fields() if packet else None
        except XmpError as e:
            raise ReviewError(f"{photo}: its own XMP is not XMP clipcull can edit safely ({e}); nothing written") from None
        edit = self._edit(fields, claims_now(self.journal, photo, fields, None), after, rating_changed, label_changed,
                          label_before)
        change = plan_embedded(photo, edit)
        if change.problem:
            raise ReviewError(f"{photo}: {change.note}; nothing written (review --embed)")
        return change

    def _edit(self, fields, claims: dict, after: Decision, rating_changed: bool, label_changed: bool,
              label_before: str | None) -> Edit:
        """What one file gets: the fields the photographer changed, which are theirs from now on
        (clipcull claims them no more), clipcull's keywords for them dropped."""
        owned = dict(claims)
        keywords = [k for k in (fields.keywords if fields else []) if k.startswith(KEYWORD_PREFIX)]
        rating, label, drop_label = None, None, False
        if rating_changed:
            rating = after.rating if after.rating is not None else 0
            owned.pop(RATING, None)
            keywords = [k for k in keywords if k != RATED_KEYWORD]
        if label_changed:
            label = after.label
            # only the label taken off: a companion's sidecar keeps a label of its own
            drop_label = after.label is None and fields is not None and fields.label == label_before
            owned.pop(LABEL, None)
            keywords = [k for k in keywords if k != LABELLED_KEYWORD]
        return Edit(rating, label, drop_label, keywords, owned)

    def _write(self, action: _Action, changes: list[XmpChange]) -> None:
        """Journal, then write each sidecar through the one writer. All or nothing: when one
        cannot be written, those already written get their bytes back."""
        run = self.journal.run(self.run_id) if self.run_id is not None else None
        if run is None or run.state not in (PLANNED, RUNNING, DONE) or self.journal.newest_run_id() != self.run_id:
            # The first decision; or `clipcull undo` reverted this session's run meanwhile; or
            # another run was journaled since (tag, move, undo): what follows is a new run, so
            # runs stay in the order their writes happened.
            self.run_id = self.journal.plan(REVIEW_RUN_KIND, self.command, [])
            self._drop_reverted()
        action.run_id = self.run_id
        steps = steps_for(changes)
        self.journal.add_steps(self.run_id, steps)  # journaled before any file changes
        notes: list[str] = []
        try:
            for step, change in zip(steps, changes):
                if apply_changes(self.journal, self.run_id, [step], [change], notes):
                    self._roll_back(action, notes[-1])
                action.steps.append(step)
        except OSError as e:  # a full disk, an I/O error
            self._roll_back(action, f"{changes[len(action.steps)].sidecar}: cannot write the sidecar ({e.strerror or e})")
        finally:
            if action.steps:
                self._done.append(action)
            self._settle(self.run_id)

    def _settle(self, run_id: int) -> None:
        """A review run is done while one of its writes is in effect, and undone once none is (a
        key press whose write failed and was rolled back, or every action taken back with U):
        `clipcull undo` then goes past it to the run before, instead of spending itself on it."""
        in_effect = any(s.state in (DONE, CONFLICT) for s in self.journal.steps(run_id))
        self.journal.set_state(run_id, DONE if in_effect else UNDONE)

    def _drop_reverted(self) -> None:
        """Actions of runs `clipcull undo` reverted are no longer U's to undo."""
        live = {}
        for action in self._done:
            if action.run_id not in live:
                run = self.journal.run(action.run_id)
                live[action.run_id] = run is not None and run.state in (PLANNED, RUNNING, DONE)
        self._done = [a for a in self._done if live[a.run_id]]

    def _roll_back(self, action: _Action, why: str) -> None:
        """One sidecar of an action could not be written: the sidecars it did write get their
        bytes back (the page keeps showing the photo as it was)."""
        try:
            for step in reversed(list(action.steps)):
                if step.action == "embedded":  # the photo's exact bytes back (review --embed)
                    problem = restore_embedded(step.dst, step)
                    if problem:
                        raise OSError(problem)
                else:
                    restore_sidecar(step.dst, step.before, step.before_mode)
                self.journal.mark(action.run_id, step.seq, UNDONE, why)
                action.steps.remove(step)
        except OSError as e:  # the written ones stay, and U can still take them back
            why += f"; {step.dst} keeps the new decision ({e.strerror or e})"
        raise ReviewError(why)

    # --- undo ----------------------------------------------------------------------------

    def undo_last(self, pages: set[str] | None = None) -> tuple[str, Decision] | None:
        """Revert the last action not yet reverted: (photo, its decision now), or None. Each of
        its writes is undone as `clipcull undo` would (see culling/undo.py undo_write), judged by
        the journal as it is now, not by what the page remembers. One that cannot be (another
        program changed the sidecar since) is left as it is and said once, with the others of the
        action undone all the same (a RAW's sidecar); that action is dropped from U's list, so the
        next U goes on to the action before it. An action undone with no file changed (a later
        run's write left on top, the sidecar renamed or deleted since) is said in one line too.
        `pages`: the ids of one page of the review (a browser tab, its loads); U there undoes that
        page's last action, never another page's (None: the session's last action, whoever made it)."""
        with self._lock, self._holding_journal():
            mine = [i for i, a in enumerate(self._done) if pages is None or a.client in pages]
            if not mine:
                if self._done:
                    raise ReviewError("nothing to undo on this page: the review's other decisions were made in "
                                      "another page (U there undoes them)")
                return None
            action = self._done.pop(mine[-1])
            now = {s.seq: s for s in self.journal.steps(action.run_id)}
            steps = [now[step.seq] for step in action.steps if step.seq in now]
            steps = [step for step in steps if step.state != UNDONE]  # `clipcull undo` may have taken some back
            if not steps:
                raise ReviewError(f"{action.photo}: that decision was undone already (`clipcull undo`); "
                                  f"U now goes on to the action before")
            problems, undone, notes, changed = [], [], [], False
            for step in reversed(steps):  # each sidecar of the action (a RAW's too), as `clipcull undo` does
                try:
                    wrote, said = undo_write(self.journal, action.run_id, step)
                    changed, notes = changed or wrote, notes + said
                except UndoConflict as e:
                    self.journal.mark(action.run_id, step.seq, CONFLICT, str(e))
                    problems.append(str(e))
                    continue
                except OSError as e:
                    problems.append(f"{e.filename or step.dst}: {e.strerror or e}; left as it is")
                    continue
                self.journal.mark(action.run_id, step.seq, UNDONE)
                undone.append(os.path.basename(step.dst))
            self._settle(action.run_id)
            if problems:
                also = f"; {', '.join(reversed(undone))} undone" if undone else ""
                raise ReviewError(f"{'; '.join(problems)}{also} (U now goes on to the action before)")
            if not changed and notes:  # undone by the journal, yet no file changed: the page says why
                raise ReviewError(f"{'; '.join(notes)} (U now goes on to the action before)")
            return action.photo, self.current(action.photo, action.companions)

    def forget(self, photos: set[str]) -> None:
        """Photos moved away: their actions can no longer be undone one by one from here."""
        with self._lock:
            self._done = [a for a in self._done if a.photo not in photos]

    @property
    def actions(self) -> int:
        return len(self._done)

    @property
    def action_runs(self) -> list[int]:
        """The run of each action U can still undo, oldest first."""
        return [a.run_id for a in self._done]


def not_a_photo(path: str) -> str:
    """What is at a photo's place that is no photo, in words: nothing, or a folder, a FIFO..."""
    from clip_cull.core.files import not_regular_reason

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "is gone (moved or deleted since the review began)"
    return f"is now {not_regular_reason(mode).split(';')[0]}, no photo"


def move_rejects(store: Store, journal: Journal, photos: list, roots: list[str]) -> int | None:
    """Move photos (with RAW companions and sidecars) to ROOT/_rejects with the same journaled
    move as `clipcull move`; the run id, or None when there is nothing to move."""
    if not photos:
        return None
    steps = plan_moves(photos, roots, None)
    return apply_moves(store, journal, steps, {"command": "review --move-rejects", "folders": roots})
