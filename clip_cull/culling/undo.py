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
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.culling.fileops import (
    FileOpError,
    remove_if_duplicate,
    sweep_partials,
    transfer,
)
from clip_cull.culling.interrupt import whole_step
from clip_cull.culling.journal import (
    CONFLICT,
    DONE,
    FAILED,
    PLANNED,
    UNDONE,
    Identity,
    Journal,
    Step,
)
from clip_cull.culling.writer import (
    difference,
    restore_embedded,
    restore_sidecar,
    restored,
)
from clip_cull.culling.xmp import XmpError, existing_sidecars
from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import (
    HEIF_EXTENSIONS,
    PHOTO_EXTENSIONS,
    RAW_EXTENSIONS,
    REJECTS_DIRNAME,
    content_fingerprint,
    file_sha256,
)
from clip_cull.store.cache import Store

_PHOTO_EXTENSIONS = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS


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
    def files(self) -> int:
        """How many files the reversed steps put back: a sidecar a review session wrote twice
        (the stars, then the pick) is one file."""
        return len({s.dst for s in self.reversed})

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


class UndoConflict(ClipCullError):
    """A write could not be undone; str() names the file and why (it is left as it is)."""


def undo_write(journal: Journal, run_id: int, step: Step) -> tuple[bool, list[str]]:
    """Undo one journaled sidecar write (or a photo's own XMP, review --embed) on its own (review's
    U), with everything `clipcull undo` knows: a later move took the sidecar elsewhere, a later copy holds the same bytes, a later
    run wrote on top of it (that run's way back now leads to what was there before), a run
    beneath it was undone meanwhile (the step's "before" was rebased). The caller holds the
    journal (Journal.exclusive) and marks the step. Returns whether the file changed, and notes
    (why it did not, where it did elsewhere); raises UndoConflict."""
    report = UndoReport(run_id)
    try:
        undo = _undo_embedded if step.action == "embedded" else _undo_sidecar
        changed = undo(journal, run_id, step, report)
    except _Conflict as e:
        raise UndoConflict(str(e)) from None
    return changed, report.notes


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
    held = _sets_held_back(steps)
    moved_back = []
    for step in reversed(steps):
        if step.state == UNDONE:
            continue
        with whole_step():  # Ctrl-C waits for the step's file operation and its mark
            try:
                if step.seq in held:
                    raise _Conflict(held[step.seq])
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
                if changed and step.action == "move":
                    moved_back.append(step)
                continue
            journal.mark(run_id, step.seq, CONFLICT, problem)
            report.conflicts.append(problem)
    _bring_back_later_sidecars(moved_back, {s.dst for s in steps}, report)
    journal.set_state(run_id, CONFLICT if report.conflicts else UNDONE)
    _remove_empty_reject_folders(steps)
    return report


def _bring_back_later_sidecars(moved_back: list[Step], journaled: set[str], report: UndoReport) -> None:
    """A sidecar made beside a moved photo after the move (the photographer rated it in _rejects
    with darktable or Lightroom) goes back with the photo, renamed as the photo is, so the rating
    is not left behind apart from its photo. Only when its old name is free and no other photo
    there shares it; else it stays, said in a note."""
    for step in moved_back:
        if Path(step.dst).suffix.lower() == ".xmp":
            continue
        dst_stem, src_stem = Path(step.dst).stem, Path(step.src).stem
        for sidecar in existing_sidecars(step.dst):
            name = sidecar.name
            if str(sidecar) in journaled or os.path.islink(sidecar) or not name.startswith(dst_stem):
                continue
            if _shared_with_another(sidecar, step.dst):
                continue
            target = Path(step.src).with_name(src_stem + name[len(dst_stem):])
            if os.path.lexists(target):
                report.notes.append(f"{sidecar}: made after the move; stays, as {target} is taken")
                continue
            try:
                transfer(sidecar, target)
            except (OSError, FileOpError) as e:
                report.notes.append(f"{sidecar}: made after the move; stays ({getattr(e, 'strerror', None) or e})")
                continue
            report.notes.append(f"{sidecar}: made after the move, back with its photo as {target}")


def _shared_with_another(sidecar: Path, photo: str) -> bool:
    """Is the sidecar also another photo's there (IMG_1.xmp of IMG_1.jpg and IMG_1.tif)?"""
    folder = sidecar.parent
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return True
    for name in names:
        other = folder / name
        if str(other) == photo or other.suffix.lower() not in _PHOTO_EXTENSIONS or not name.startswith(other.stem):
            continue
        if sidecar in existing_sidecars(other, names=names):
            return True
    return False


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
    if step.action in ("sidecar", "embedded") and step.state == FAILED:
        return False  # its (atomic) write did not happen: bytes like the planned ones there are another write's
    if step.action == "sidecar":
        return _undo_sidecar(journal, run_id, step, report)
    if step.action == "embedded":
        return _undo_embedded(journal, run_id, step, report)
    if step.action == "move":
        return _undo_move(store, step, report)
    return _undo_copy(journal, run_id, step, report)


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


def _sets_held_back(steps: list[Step]) -> dict[int, str]:
    """A photo's files (RAW, JPEG, sidecars: one set_id) go back together or not at all: when one
    of them cannot go back, every file of its set stays, each with the reason."""
    blocked: dict[int, str] = {}
    sets: dict[int, list[Step]] = {}
    for step in steps:
        if step.action == "move" and step.set_id is not None and step.state != UNDONE:
            sets.setdefault(step.set_id, []).append(step)
    for members in sets.values():
        reasons = [(m, why) for m in members if (why := _move_blocker(m)) is not None]
        if reasons:
            first, why = reasons[0]
            for m in members:
                blocked[m.seq] = why if m is first else f"{m.dst} stays with {first.src}'s set: {why}"
    return blocked


def _move_blocker(step: Step) -> str | None:
    """Why this move cannot be undone now (None: it can, or there is nothing of it to undo)."""
    src_now, dst_now = Identity.of(step.src), Identity.of(step.dst)
    if step.state in (PLANNED, FAILED) and not _ours(step, dst_now) or _moved_by_another(step, src_now):
        return None  # never carried out: nothing to reverse
    if dst_now is None:
        if src_now is not None and src_now.kind == "file":
            return None  # already back where it was
        return (f"{step.src} is not at {step.dst} any more"
                + (f", and {step.src} is {_describe(src_now)}" if src_now else " nor where it was") + "; nothing done")
    if dst_now.kind != "file":
        return f"{step.dst} is now {_describe(dst_now)}; left as it is"
    if src_now is not None and not (src_now.kind == "file" and _same_bytes(step.dst, step.src)):
        return f"{step.src} is taken by {_describe(src_now)}; {step.dst} stays where it is"
    return None


def _moved_by_another(step: Step, src_now: Identity | None) -> bool:
    """A failed move moved nothing (transfer leaves the photo where it was, or takes back what it
    made): when its file has gone from the old place, a later run took it, maybe to this very
    destination, and what is there is that run's to undo, not this one's."""
    return step.state == FAILED and src_now is None


def _undo_move(store: Store, step: Step, report: UndoReport) -> bool:
    """Put a moved file back. What sits at the destination goes back even when it was edited
    there since (the photographer re-rated the JPEG in _rejects): it is a regular file and the old
    place is free, so nothing can be lost. A link, a folder, or an old place taken is a conflict."""
    why = _move_blocker(step)
    if why is not None:
        raise _Conflict(why)
    src_now, dst_now = Identity.of(step.src), Identity.of(step.dst)
    if (dst_now is None or (step.state in (PLANNED, FAILED) and not _ours(step, dst_now))
            or _moved_by_another(step, src_now)):
        return False  # never moved, or already back
    edited = not _ours(step, dst_now)
    if src_now is None:
        transfer(step.dst, step.src)
    elif not remove_if_duplicate(step.dst, step.src):  # an undo killed half way left both names
        raise _Conflict(f"{step.src} is taken by {_describe(src_now)}; {step.dst} stays where it is")
    with store.writing():
        store.db.execute("update or replace files set path = ? where path = ?", [step.src, step.dst])
    if edited:
        report.notes.append(f"{step.src}: back from {step.dst}, as it is now (changed there since the move)")
    return True


def _same_bytes(a: str, b: str) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and file_sha256(a) == file_sha256(b)
    except OSError:
        return False


def _undo_copy(journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    """Remove a copy clipcull made, where it is now (a later move may have taken it, or its
    original, elsewhere), only while it holds the same bytes as its original."""
    copy_chain = journal.later_moves_from(step.dst, run_id)
    where = copy_chain[-1][1].dst if copy_chain else step.dst
    dst_now = Identity.of(where)
    if dst_now is None:
        return False
    if not copy_chain and not _ours(step, dst_now):
        if step.state in (PLANNED, FAILED):
            return False  # never copied: what is there is someone else's
        raise _Conflict(f"{step.dst} was replaced or changed since the copy (now {_describe(dst_now)}); left as it is")
    original_chain = journal.later_moves_from(step.src, run_id)
    original = original_chain[-1][1].dst if original_chain else step.src
    if remove_if_duplicate(where, original):
        for later_run, later_move in copy_chain:  # nothing left for those moves to put back
            journal.mark(later_run, later_move.seq, UNDONE, f"{where} removed by undo of copy run {run_id}")
        if where != step.dst:
            report.notes.append(f"{step.dst}: the copy is removed from {where}, where move run {copy_chain[-1][0]} took it")
        return True
    src_now = Identity.of(original)
    why = "is gone" if src_now is None else f"is now {_describe(src_now)}" if src_now.kind != "file" else "differs"
    raise _Conflict(f"{where} is kept: its original {original} {why}")


def _undo_embedded(journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    """tag --embed: the photo gets its exact previous bytes back, where it is now (a later move may
    have taken it elsewhere). When later `tag --embed` runs wrote on top of this one, the photo stays
    as the last of them left it, and undoing the first of them now brings back what was there
    before this one. That is decided before looking at the bytes: later runs that wrote the same
    bytes again (rating 3, then 4, then 3) must not make this run's undo take theirs back."""
    chain = journal.later_moves_from(step.dst, run_id)
    where = chain[-1][1].dst if chain else step.dst
    later = _later_embedded_writes(journal, step.dst, chain, run_id)
    if later:
        first = later[0][1]
        if step.state != FAILED and step.patch and first.patch and first.patch["before_sha"] == step.after_sha:
            # A later run wrote on top of this write: the photo stays as the last of them left it
            _rebase_embedded(journal, where, step, later)
            for copy_run, copy in journal.later_copies_from([step.dst, *(m.dst for _, m in chain)], run_id):
                if copy_run < later[0][0]:  # a copy of this step's bytes, made before the later run wrote
                    _undo_embedded_in_copy(journal, step, copy_run, copy, report)
            report.notes.append(f"{where}: left as run {later[-1][0]} wrote it; undoing run {later[0][0]} now "
                                f"restores what was there before run {run_id}")
            return False
        if any(_holds(where, w.after_sha) for _, w in later):
            # Bytes a later run left (one that did not write on top of this step) are that run's,
            # even when they are the very bytes this step wrote or planned.
            if step.state in (PLANNED, FAILED):
                return False
            raise _Conflict(f"{where} changed since clipcull wrote its rating into it; left as it is")
    if _holds(where, step.after_sha):
        problem = restore_embedded(where, step)
        if problem:
            raise _Conflict(problem)
        journal.rewritten(where)  # the moves that left the photo there expect the rewritten file now
        for copy_run, copy in journal.later_copies_from([step.dst, *(m.dst for _, m in chain)], run_id):
            _undo_embedded_in_copy(journal, step, copy_run, copy, report)
        if chain:
            report.notes.append(f"{step.dst}: its earlier bytes put back at {where}, where move run {chain[-1][0]} took it")
        return True
    if step.state in (PLANNED, FAILED) or (step.patch and _holds(where, step.patch["before_sha"])):
        return False  # never written, or already back as it was
    raise _Conflict(f"{where} changed since clipcull wrote its rating into it; left as it is")


def _undo_embedded_in_copy(journal: Journal, step: Step, copy_run: int, copy: Step, report: UndoReport) -> None:
    """A later `--copy` run copied the photo this step wrote into: the copy gets its earlier bytes
    back too while it holds exactly what clipcull wrote (else undoing the copy run would keep it,
    as it no longer matches its original), and is named when it cannot."""
    where, chain = _where_copy_is(journal, copy_run, copy)
    if Identity.of(where) is None:
        return
    if not _holds(where, step.after_sha):
        report.notes.append(f"{where}: the copy run {copy_run} made of {copy.src} changed since; left as it is")
        return
    problem = restore_embedded(where, step)
    if problem:
        report.notes.append(problem)
        return
    journal.rewritten(where, [(copy_run, copy), *chain])  # the copy and its moves expect the rewritten file now
    report.notes.append(f"{where}: the copy run {copy_run} made of it is restored too")


def _later_embedded_writes(journal: Journal, path: str, chain: list[tuple[int, Step]],
                           run_id: int) -> list[tuple[int, Step]]:
    """The `tag --embed` writes into this photo after run `run_id` that happened (done, or left by
    an undo's conflict), oldest first: at `path` until a later move took it elsewhere (`chain`),
    then at each place it was taken to, until the next move."""
    places = [path, *(move.dst for _, move in chain)]
    since = [run_id, *(move_run for move_run, _ in chain)]
    until = [move_run for move_run, _ in chain] + [None]
    writes = []
    for where, after, end in zip(places, since, until):
        while (later := journal.later_write_of(where, after, action="embedded")) is not None:
            if end is not None and later[0] > end:
                break
            if later[1].state in (DONE, CONFLICT):
                writes.append(later)
            after = later[0]
    return writes


def _rebase_embedded(journal: Journal, where: str, step: Step, later: list[tuple[int, Step]]) -> None:
    """The first later write's way back now leads to what was there before this step. What that
    write left is rebuilt from the photo as it is now, back through the writes made on top of it."""
    with open(where, "rb") as f:
        current = f.read()
    if content_fingerprint(current) != later[-1][1].after_sha:
        raise _Conflict(f"{where} changed since clipcull wrote its rating into it; left as it is")
    first_run, first = later[0]
    try:
        top = current
        for _, on_top in reversed(later[1:]):
            if on_top.patch is None:
                raise XmpError("journaled by an older clipcull; its earlier bytes cannot be rebuilt")
            top = restored(top, on_top.before or b"", on_top.patch)
        if content_fingerprint(top) != first.after_sha:
            raise XmpError("its earlier bytes could not be rebuilt exactly; left as it is")
        middle = restored(restored(top, first.before or b"", first.patch), step.before or b"", step.patch)
    except XmpError as e:
        raise _Conflict(f"{where}: {e}") from None
    before, patch = difference(middle, top)
    journal.rebase(first_run, first.seq, before, first.before_mode, patch)


def _undo_sidecar(journal: Journal, run_id: int, step: Step, report: UndoReport) -> bool:
    later = _later_sidecar_writes(journal, step.dst, run_id)
    if later and step.state != FAILED and _sits_on(journal, later[0][0], later[0][1], step):
        # A later run wrote on top of this write. Leave the file as that run left it, and let
        # undoing that run restore what was there before this one.
        later_run, later_step = later[0]
        journal.rebase(later_run, later_step.seq, step.before, step.before_mode)
        for copy_run, copy in journal.later_copies_from([step.dst], run_id):
            if copy_run < later_run:  # a copy of this step's bytes, made before the later run wrote
                _undo_in_copy(journal, step, copy_run, copy, report)
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
    # Bytes a later run left there (one that did not write on top of this step: someone else wrote
    # between) are that run's, even when they are the very bytes this step wrote or planned.
    theirs = current is not None and content_fingerprint(current) in {w.after_sha for _, w in later}
    if theirs and step.state in (PLANNED, FAILED):
        return False
    if current == step.before:
        if current is None and step.state == DONE:  # the sidecar clipcull made was renamed or deleted since
            report.notes.append(f"{where} is gone (renamed, moved or deleted since); nothing to undo there")
        return False  # never written, or already restored
    written = current is not None and content_fingerprint(current) == step.after_sha and not theirs
    if step.state in (PLANNED, FAILED) and not written:
        return False  # a killed run never wrote it: what is there is not clipcull's to change
    if current is None:
        raise _Conflict(f"{where} is gone; its earlier content was not put back")
    if not written:
        raise _Conflict(f"{where} changed since clipcull wrote it; left as it is")
    restore_sidecar(where, step.before, step.before_mode)  # clipcull created it: it goes; else its bytes come back
    if step.before is None:
        for later_run, later_move in chain:  # those moves have nothing left to put back
            journal.mark(later_run, later_move.seq, UNDONE, f"{where} removed by undo of run {run_id}")
    else:
        journal.rewritten(where)
    for copy_run, copy in journal.later_copies_from([step.dst, *(m.dst for _, m in chain)], run_id):
        _undo_in_copy(journal, step, copy_run, copy, report)
    if moved_by is not None:
        what = "restored" if step.before is not None else "removed (clipcull had created it)"
        report.notes.append(f"{step.dst}: {what} at {where}, where move run {moved_by} took it")
    return True


def _later_sidecar_writes(journal: Journal, path: str, run_id: int) -> list[tuple[int, Step]]:
    """The sidecar writes at path in runs after run `run_id` that happened (see _wrote), oldest first."""
    writes, after = [], run_id
    while (later := journal.later_write_of(path, after)) is not None:
        if _wrote(journal, *later):
            writes.append(later)
        after = later[0]
    return writes


def _where_copy_is(journal: Journal, copy_run: int, copy: Step) -> tuple[str, list[tuple[int, Step]]]:
    """Where a copy is now: a later move may have taken it elsewhere (followed as for the original)."""
    chain = journal.later_moves_from(copy.dst, copy_run)
    return (chain[-1][1].dst if chain else copy.dst), chain


def _undo_in_copy(journal: Journal, step: Step, copy_run: int, copy: Step, report: UndoReport) -> None:
    """A later `--copy` run copied the sidecar this step wrote: the copy gets the same undo, where
    it is now, when it still holds exactly what clipcull wrote, else it is named as left."""
    where, chain = _where_copy_is(journal, copy_run, copy)
    found = Identity.of(where)
    if found is None:
        return
    if found.kind != "file" or content_fingerprint(_read(where)) != step.after_sha:
        report.notes.append(f"{where}: the copy run {copy_run} made of {copy.src} changed since; left as it is")
        return
    restore_sidecar(where, step.before, step.before_mode)  # clipcull's own bytes, copied by clipcull
    if step.before is None:
        journal.mark(copy_run, copy.seq, UNDONE, f"{where} removed by undo of the run that wrote it")
        for later_run, later_move in chain:  # nothing left for those moves to put back
            journal.mark(later_run, later_move.seq, UNDONE, f"{where} removed by undo of the run that wrote it")
        report.notes.append(f"{where}: the copy run {copy_run} made of it is removed too")
    else:
        journal.rewritten(where, [(copy_run, copy), *chain])
        report.notes.append(f"{where}: the copy run {copy_run} made of it is restored too")


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
    if step.state == FAILED:
        return False  # an error stopped it before the (atomic) write: the same bytes there are another write's
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


__all__ = ["UndoReport", "UndoConflict", "undo_run", "undo_write", "DONE"]
