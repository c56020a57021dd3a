"""`clipcull undo`: put back what a tag or move run changed, step by step, newest first.

Undo trusts the files, not only the journal, and it never deletes the only copy of anything.
What clipcull left at each place when a step was done is recorded (lstat: device, inode, kind);
a step is reversed only when exactly that is still there and the old place is free. A name is
unlinked only when another regular file (not a symlink) holds the same bytes. Anything else (a
symlink or another file at the old place, a file replaced or edited since) is a conflict:
reported, left as it is, and the step is marked `conflict` (never redone; `clipcull undo RUN`
tries it again once the cause is gone).

A sidecar a later move took elsewhere is restored where it is now (the journal's later move
steps are followed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from clip_cull.actions.fileops import remove_if_duplicate, sweep_partials, transfer, write_atomic
from clip_cull.actions.journal import (CONFLICT, DONE, FAILED, PLANNED, UNDONE, Identity, Journal, Step)
from clip_cull.files import HEIF_EXTENSIONS, PHOTO_EXTENSIONS, RAW_EXTENSIONS, REJECTS_DIRNAME, content_fingerprint
from clip_cull.store import Store


@dataclass
class UndoReport:
    run_id: int
    restored: int = 0  # steps whose change was reversed on disk
    conflicts: list[str] = field(default_factory=list)  # left alone: what and why
    notes: list[str] = field(default_factory=list)  # done, but not at the journaled place
    cleaned: list[str] = field(default_factory=list)  # leftover .clipcull-partial files removed
    already_undone: bool = False
    reversed: list[Step] = field(default_factory=list)  # the steps of `restored`

    @property
    def photos(self) -> int:
        """How many photos the reversed steps concern, counted as `move` counts them: a photo
        and the files that went with it (its RAW, its sidecars: one stem at the destination)
        are one; a sidecar or embedded XMP restored counts for its photo."""
        return len({_photo_of(s) for s in self.reversed} - {None})


def _photo_of(step: Step) -> str | None:
    if step.action in ("sidecar", "embedded"):
        return step.src  # the photo the rating was written for
    stem, ext = os.path.splitext(step.dst)
    return stem if ext.lower() in _PHOTO_EXTENSIONS else None  # a sidecar travels with a photo


_PHOTO_EXTENSIONS = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS


class _Conflict(Exception):
    pass


def undo_run(store: Store, journal: Journal, run_id: int) -> UndoReport:
    """See _undo_run_held; done while holding the journal (Journal.exclusive)."""
    with journal.exclusive():  # one clipcull process at a time changes files and journal
        return _undo_run_held(store, journal, run_id)


def _undo_run_held(store: Store, journal: Journal, run_id: int) -> UndoReport:
    report = UndoReport(run_id)
    run = journal.run(run_id)
    if run is None or run.state == UNDONE:
        report.already_undone = run is not None
        return report
    steps = journal.steps(run_id)
    report.cleaned = sweep_partials(s.dst for s in steps)
    for step in reversed(steps):
        if step.state == UNDONE:
            continue
        try:
            changed = _undo_step(store, journal, run_id, step, report)
        except _Conflict as e:
            problem = str(e)
        except OSError as e:
            problem = f"{e.filename or step.dst}: {e.strerror or e}; left as it is"
        else:
            journal.mark(run_id, step.seq, UNDONE)
            report.restored += changed
            if changed:
                report.reversed.append(step)
            continue
        journal.mark(run_id, step.seq, CONFLICT, problem)
        report.conflicts.append(problem)
    journal.set_state(run_id, CONFLICT if report.conflicts else UNDONE)
    _remove_empty_reject_folders(steps)
    return report


def _remove_empty_reject_folders(steps: list[Step]) -> None:
    """Folders a move made under _rejects go again once undo has emptied them."""
    folders = {os.path.dirname(s.dst) for s in steps if s.action in ("move", "copy")}
    for folder in sorted(folders, key=len, reverse=True):
        while REJECTS_DIRNAME in folder.split(os.sep):
            try:
                os.rmdir(folder)  # only ever removes an empty folder
            except OSError:
                break
            if os.path.basename(folder) == REJECTS_DIRNAME:
                break
            folder = os.path.dirname(folder)


def _undo_step(store: Store, journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    """Reverse one step; True when something changed on disk, False when nothing of it was
    there to reverse. Raises _Conflict to leave it alone."""
    if step.action == "sidecar":
        return _undo_sidecar(journal, run_id, step, report)
    if step.action == "embedded":
        return _undo_embedded(journal, run_id, step, report)
    if step.action == "move":
        return _undo_move(store, step)
    return _undo_copy(step)


def _ours(step: Step, found: Identity | None) -> bool:
    """Is what sits at step.dst what this step put there? Done steps compare with the identity
    recorded then; a step a crash left unmarked with the source as planned (a rename keeps the
    inode, a verified copy keeps size and time)."""
    if found is None:
        return False
    if step.dst_id is not None:
        return step.dst_id.same_file(found)
    return step.src_id is not None and (step.src_id.same_file(found) or step.src_id.same_content_stamp(found))


def _describe(found: Identity | None) -> str:
    return {"link": "a symbolic link", "dir": "a folder", "other": "not a regular file"}.get(
        found.kind if found else "", "another file")


def _undo_move(store: Store, step: Step) -> bool:
    src_now, dst_now = Identity.of(step.src), Identity.of(step.dst)
    was_done = step.state not in (PLANNED, FAILED)
    if not _ours(step, dst_now):
        if dst_now is None and src_now is not None and src_now.kind == "file":
            return False  # already back where it was (or never moved)
        if not was_done and (src_now is not None and src_now.kind == "file"):
            return False  # never moved: the destination, if any, is someone else's
        if dst_now is None:
            raise _Conflict(f"{step.src} is not at {step.dst} any more"
                            + (f", and {step.src} is {_describe(src_now)}" if src_now else " nor where it was")
                            + "; nothing done")
        raise _Conflict(f"{step.dst} was replaced or changed since the move (now {_describe(dst_now)}); left as it is")
    if src_now is None:
        transfer(step.dst, step.src)
        with store.writing():
            store.db.execute("update or replace files set path = ? where path = ?", [step.src, step.dst])
        return True
    # Both places are taken. Only a second regular file with the same bytes at the old place
    # (an undo or move killed half way) lets the moved name go.
    if src_now.kind == "file" and remove_if_duplicate(step.dst, step.src):
        with store.writing():
            store.db.execute("update or replace files set path = ? where path = ?", [step.src, step.dst])
        return True
    raise _Conflict(f"{step.src} is taken by {_describe(src_now)}; {step.dst} stays where it is")


def _undo_copy(step: Step) -> bool:
    dst_now = Identity.of(step.dst)
    if dst_now is None:
        return False
    if not _ours(step, dst_now):
        if step.state in (PLANNED, FAILED):
            return False  # never copied: what is there is someone else's
        raise _Conflict(f"{step.dst} was replaced or changed since the copy (now {_describe(dst_now)}); left as it is")
    if remove_if_duplicate(step.dst, step.src):
        return True
    src_now = Identity.of(step.src)
    why = "is gone" if src_now is None else f"is now {_describe(src_now)}" if src_now.kind != "file" else "differs"
    raise _Conflict(f"{step.dst} is kept: its original {step.src} {why}")


def _undo_embedded(journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    """tag --embed: the photo's previous XMP packet goes back, where the photo is now (a later
    move may have taken it elsewhere)."""
    from clip_cull.actions.embedded import undo_embedded

    chain = journal.later_moves_from(step.dst, run_id)
    where = chain[-1][1].dst if chain else step.dst
    if step.state in (PLANNED, FAILED) and not _holds(where, step.after_sha):
        return False  # never written (killed first, or the photo changed before the write)
    problem = undo_embedded(replace(step, dst=where))
    if problem:
        raise _Conflict(problem)
    journal.rewritten(where)  # the moves that left the photo there expect the rewritten file now
    if chain:
        report.notes.append(f"{step.dst}: its earlier XMP put back at {where}, where move run {chain[-1][0]} took it")
    return True


def _undo_sidecar(journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    later = journal.later_write_of(step.dst, run_id)
    if later is not None and _sits_on(journal, later[0], later[1], step):
        # A later run wrote on top of this write. Leave the file as that run left it, and let
        # undoing that run restore what was there before this one.
        later_run, later_step = later
        journal.rebase(later_run, later_step.seq, step.before, step.before_mode)
        report.notes.append(f"{step.dst}: left as run {later_run} wrote it; undoing run {later_run} now restores "
                            f"what was there before run {run_id}")
        return False
    where, moved_by = step.dst, None
    chain = journal.later_moves_from(step.dst, run_id)
    for later_run, later_move in chain:
        where, moved_by = later_move.dst, later_run
    found = Identity.of(where)
    if found is not None and found.kind != "file":
        raise _Conflict(f"{where} is now {_describe(found)}; left as it is")
    current = _read(where) if found is not None else None
    if current == step.before:
        return False  # never written, or already restored
    written = current is not None and content_fingerprint(current) == step.after_sha
    if step.state in (PLANNED, FAILED) and not written:
        return False  # a killed run never wrote it: what is there is not clipcull's to change
    if current is None:
        raise _Conflict(f"{where} is gone; its earlier content was not put back")
    if content_fingerprint(current) != step.after_sha:
        raise _Conflict(f"{where} changed since clipcull wrote it; left as it is")
    if step.before is None:
        os.unlink(where)  # clipcull created it, and it holds exactly what clipcull wrote
        for later_run, later_move in chain:  # those moves have nothing left to put back
            journal.mark(later_run, later_move.seq, UNDONE, f"{where} removed by undo of run {run_id}")
    else:
        write_atomic(where, step.before, mode=step.before_mode)
        journal.rewritten(where)
    for copy_run, copy in journal.later_copies_from([step.dst, *(m.dst for _, m in chain)], run_id):
        _undo_in_copy(journal, step, copy_run, copy, report)
    if moved_by is not None:
        what = "restored" if step.before is not None else "removed (clipcull had created it)"
        report.notes.append(f"{step.dst}: {what} at {where}, where move run {moved_by} took it")
    return True


def _undo_in_copy(journal: Journal, step: Step, copy_run: int, copy: Step, report: UndoReport) -> None:
    """A later `--copy` run copied the sidecar this step wrote: the copy gets the same undo when
    it still holds exactly what clipcull wrote, else it is named as left."""
    found = Identity.of(copy.dst)
    if found is None:
        return
    if found.kind != "file" or content_fingerprint(_read(copy.dst)) != step.after_sha:
        report.notes.append(f"{copy.dst}: the copy run {copy_run} made of {copy.src} changed since; left as it is")
        return
    if step.before is None:
        os.unlink(copy.dst)  # clipcull's own bytes, copied by clipcull: nothing of anyone else's
        journal.mark(copy_run, copy.seq, UNDONE, f"{copy.dst} removed by undo of the run that wrote it")
        report.notes.append(f"{copy.dst}: the copy run {copy_run} made of it is removed too")
    else:
        write_atomic(copy.dst, step.before, mode=step.before_mode)
        journal.rewritten(copy.dst)
        report.notes.append(f"{copy.dst}: the copy run {copy_run} made of it is restored too")


def _sits_on(journal: Journal, later_run: int, later: Step, step: Step) -> bool:
    """Did the later write happen, on top of what this step wrote? (Its plan read this step's
    result as its "before", and it wrote: see _wrote.)"""
    if later.before is None or content_fingerprint(later.before) != step.after_sha:
        return False
    return _wrote(journal, later_run, later)


def _wrote(journal: Journal, run_id: int, step: Step) -> bool:
    """Did this sidecar write happen? Marked done; or the file holds its result; or a later
    run's plan read its result as the file's content (a killed run wrote before it was marked)."""
    if step.state in (DONE, CONFLICT):
        return True
    found = Identity.of(step.dst)
    if found is not None and found.kind == "file" and content_fingerprint(_read(step.dst)) == step.after_sha:
        return True
    later = journal.later_write_of(step.dst, run_id)
    return later is not None and later[1].before is not None and content_fingerprint(later[1].before) == step.after_sha


def _holds(path: str, sha: str | None) -> bool:
    """Is path a regular file with exactly the content whose sha256 is sha?"""
    found = Identity.of(path)
    if found is None or found.kind != "file":
        return False
    try:
        return content_fingerprint(_read(path)) == sha
    except OSError:
        return False


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


__all__ = ["UndoReport", "undo_run", "DONE"]
