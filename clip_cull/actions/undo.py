"""`clipcull undo`: put back what a tag or move run changed, step by step, newest first.

Undo trusts the files, not only the journal: a step a crash left unmarked is recognised by
where the file is. It never overwrites: a sidecar changed since clipcull wrote it, or a photo
whose old place is taken by a different file, is left alone and reported."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from clip_cull.actions.fileops import transfer, write_atomic
from clip_cull.actions.journal import DONE, PARTIAL, UNDONE, Journal, Step
from clip_cull.files import REJECTS_DIRNAME, content_fingerprint, file_sha256
from clip_cull.store import Store


@dataclass
class UndoReport:
    run_id: int
    restored: int = 0
    conflicts: list[str] = field(default_factory=list)


def undo_run(store: Store, journal: Journal, run_id: int) -> UndoReport:
    report = UndoReport(run_id)
    for step in reversed(journal.steps(run_id)):
        if step.state == UNDONE:
            continue
        problem = _undo_step(store, step)
        if problem:
            report.conflicts.append(problem)
            continue
        journal.mark(run_id, step.seq, UNDONE)
        report.restored += 1
    journal.set_state(run_id, PARTIAL if report.conflicts else UNDONE)
    _remove_empty_reject_folders(journal.steps(run_id))
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


def _undo_step(store: Store, step: Step) -> str | None:
    if step.action == "sidecar":
        return _undo_sidecar(step)
    if step.action == "embedded":  # tag --embed: the photo's previous XMP packet goes back
        from clip_cull.actions.embedded import undo_embedded

        return undo_embedded(step)
    if step.action == "move":
        return _undo_move(store, step)
    return _undo_copy(step)


def _undo_sidecar(step: Step) -> str | None:
    current = open(step.dst, "rb").read() if os.path.exists(step.dst) else None
    if current == step.before:
        return None  # never written (or already restored)
    if current is None or content_fingerprint(current) != step.after_sha:
        return f"{step.dst} changed since clipcull wrote it; left as it is"
    if step.before is None:
        os.unlink(step.dst)
    else:
        write_atomic(step.dst, step.before)
    return None


def _undo_move(store: Store, step: Step) -> str | None:
    src_there, dst_there = os.path.lexists(step.src), os.path.lexists(step.dst)
    if not dst_there:
        return None if src_there else f"{step.src} is neither where it was nor at {step.dst}"
    if src_there:
        if file_sha256(step.src) == file_sha256(step.dst):
            os.unlink(step.dst)  # a crash left both copies; the original stays
            return None
        return f"{step.src} is taken by another file; {step.dst} stays where it is"
    transfer(step.dst, step.src)
    with store.writing():
        store.db.execute("update or replace files set path = ? where path = ?", [step.src, step.dst])
    return None


def _undo_copy(step: Step) -> str | None:
    if not os.path.lexists(step.dst):
        return None
    if not os.path.isfile(step.src) or file_sha256(step.src) != file_sha256(step.dst):
        return f"{step.dst} is kept: its original {step.src} is gone or differs"
    os.unlink(step.dst)
    return None


__all__ = ["UndoReport", "undo_run", "DONE"]
