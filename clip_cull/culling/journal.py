"""The journal: every tag and move run, planned in the database before anything changes on
disk, each step marked as it is done. `clipcull undo` reads it back; so does a re-run after a
crash.

States are an explicit state machine (`STEP_TRANSITIONS`, `RUN_TRANSITIONS`); a change that is
not allowed raises JournalError instead of being written.

Steps:  planned -> done            the change happened (identity of the result recorded)
        planned -> failed          an error stopped it; nothing of it remains on disk
        planned | failed -> undone  undo found nothing of it to reverse (or reversed a change a
                                    crash left unmarked)
        done | conflict -> undone  undo reversed it
        done | conflict -> conflict  undo met something unexpected and left it alone
        undone                     final: never done again, not by a re-run, not by `move`

Runs:   planned -> running -> done | failed     (forward; `failed` is never resumed)
        planned | running                       interrupted (killed): the next `move` finishes it
        any but undone -> undone | conflict     (undo; a conflict run may be undone again)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import stat
import threading
import time
from dataclasses import dataclass

from clip_cull.culling.fileops import OTHER_RUNS_PARTIAL_AGE_S, sweep_partials
from clip_cull.core.errors import ClipCullError
from clip_cull.store.state import StateStore


PLANNED, RUNNING, DONE, FAILED, UNDONE, CONFLICT = "planned", "running", "done", "failed", "undone", "conflict"

STEP_TRANSITIONS = {
    PLANNED: {DONE, FAILED, UNDONE, CONFLICT},
    DONE: {UNDONE, CONFLICT},
    FAILED: {UNDONE, CONFLICT},
    CONFLICT: {UNDONE, CONFLICT},
    UNDONE: set(),
}
RUN_TRANSITIONS = {
    PLANNED: {RUNNING, DONE, FAILED, UNDONE, CONFLICT},
    RUNNING: {RUNNING, DONE, FAILED, UNDONE, CONFLICT},
    DONE: {UNDONE, CONFLICT},
    FAILED: {UNDONE, CONFLICT},
    CONFLICT: {UNDONE, CONFLICT},
    UNDONE: set(),
}
INTERRUPTED = (PLANNED, RUNNING)  # forward work a killed process left: a re-run may finish it
UNDOABLE = (PLANNED, RUNNING, DONE, FAILED, CONFLICT)


class JournalError(ClipCullError):
    """A state change the journal's state machine does not allow."""


class JournalBusy(ClipCullError):
    """Another clipcull process holds the journal (it is moving, tagging or undoing)."""


JOURNAL_WAIT_S = 300.0  # how long a second `move`/`tag`/`undo` waits for the first to finish
_LOCK_SUFFIX = ".journal-lock"
_held: dict[str, list] = {}  # lock file -> [fd, depth, RLock]: re-entrant within one process
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Identity:
    """What sat at a path, by lstat (links are never followed): device, inode, kind, size, mtime."""

    dev: int
    ino: int
    kind: str  # "file", "link", "dir", "other"
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | None) -> "Identity | None":
        """The identity of what is at path now; None when nothing is there (or it cannot be seen)."""
        if path is None:
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return cls.from_stat(st)

    @classmethod
    def from_stat(cls, st: os.stat_result) -> "Identity":
        kind = ("file" if stat.S_ISREG(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode)
                else "dir" if stat.S_ISDIR(st.st_mode) else "other")
        return cls(st.st_dev, st.st_ino, kind, st.st_size, st.st_mtime_ns)

    def same_file(self, other: "Identity | None") -> bool:
        """The very same regular file, unchanged: same device and inode (a rename or hard link
        keeps them), and same size and modification time (an inode number freed and reused by
        a new file, or a file edited in place, differs there)."""
        return (other is not None and self.kind == other.kind == "file"
                and (self.dev, self.ino, self.size, self.mtime_ns) == (other.dev, other.ino, other.size, other.mtime_ns))

    def same_content_stamp(self, other: "Identity | None") -> bool:
        """A regular file with the same size and modification time (a verified cross-device copy
        keeps both)."""
        return other is not None and self.kind == other.kind == "file" and (self.size, self.mtime_ns) == (other.size, other.mtime_ns)

    def dump(self) -> str:
        return json.dumps([self.dev, self.ino, self.kind, self.size, self.mtime_ns])

    @classmethod
    def load(cls, text: str | None) -> "Identity | None":
        return cls(*json.loads(text)) if text else None


@dataclass
class Step:
    action: str  # "sidecar" (write dst), "move" or "copy" (src -> dst)
    src: str | None
    dst: str
    before: bytes | None = None  # a sidecar's bytes before clipcull wrote it; None: it did not exist
    after_sha: str | None = None  # sha256 of what clipcull wrote (sidecars)
    state: str = PLANNED
    seq: int = 0
    src_id: Identity | None = None  # move/copy: the source when planned; sidecar: the file before
    dst_id: Identity | None = None  # what clipcull left at dst when the step was done
    before_mode: int | None = None  # a sidecar's permission bits before clipcull wrote it
    note: str | None = None  # why a step failed or was left alone
    owned: dict | None = None  # XMP writes: the fields clipcull set and claims ({"rating": "3"}); {}: the photographer's
    set_id: int | None = None  # moves: the files of one photo (RAW, JPEG, sidecars) share it, and go back together
    patch: dict | None = None  # tag --embed: {"head", "tail", "before_sha"}; `before` holds the bytes between


@dataclass
class Run:
    id: int
    kind: str
    created_at: str
    command: str
    state: str
    steps: int = 0


def _record_what_is_there(steps: list[Step]) -> None:
    """Each step's source as it is now (a move's photo, or a sidecar's present file and mode)."""
    for step in steps:
        here = step.src if step.action in ("move", "copy") else step.dst
        try:
            st = os.lstat(here)
        except OSError:
            continue
        step.src_id = Identity.from_stat(st)
        if step.action == "sidecar" and stat.S_ISREG(st.st_mode):
            step.before_mode = stat.S_IMODE(st.st_mode)


def _take_flock(path: str, wait_s: float, db: str, on_wait=None) -> int | None:
    """An fd holding an exclusive flock on path; None where no lock file can be made (a read-only
    place: the state database cannot be written there either, and says so itself). on_wait(path) is
    called once, at once, when another process holds it and the wait begins."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if on_wait is not None:
                on_wait(path)
                on_wait = None
            if time.monotonic() >= deadline:
                os.close(fd)
                raise JournalBusy(f"another clipcull process is moving, tagging or undoing with the journal in {db} "
                                  f"(waited {wait_s:.0f} s); run this again when it has finished") from None
            time.sleep(0.1)
        except OSError:
            return fd  # a file system without flock: go on unlocked, as before


STEP_COLUMNS = "action, src, dst, before, after_sha, state, seq, src_id, dst_id, before_mode, note, owned, set_id, patch"


class Journal:
    def __init__(self, store: StateStore, on_wait=None):
        self.store = store
        self.db = store.db
        self.on_wait = on_wait  # on_wait(lock file): another process holds the journal, this one waits

    @contextlib.contextmanager
    def exclusive(self, wait_s: float | None = None):
        """Hold the journal for one process while it changes files: planning a run, carrying it
        out, finishing an interrupted one, undoing one. Two clipcull processes on one cache used
        to run side by side: each finished the other's run as if it had been killed, both copied
        into the same temporary file, and a run took credit for the other's moves. The second
        now waits (up to wait_s, JOURNAL_WAIT_S by default) and then raises JournalBusy. The lock
        is an flock on a file next to the state database, so a killed holder releases it at once.
        Re-entrant within a process (a thread waits for another thread's hold)."""
        path = self._lock_path()
        if path is None:
            yield
            return
        with _held_guard:
            entry = _held.setdefault(path, [None, 0, threading.RLock()])
        with entry[2]:
            if entry[1] == 0:
                entry[0] = _take_flock(path, JOURNAL_WAIT_S if wait_s is None else wait_s, self.store.path,
                                       self.on_wait)
            entry[1] += 1
            try:
                yield
            finally:
                entry[1] -= 1
                if entry[1] == 0 and entry[0] is not None:
                    os.close(entry[0])  # releases the flock
                    entry[0] = None

    def _lock_path(self) -> str | None:
        if self.store.path == ":memory:":
            return None
        return os.path.realpath(self.store.path) + _LOCK_SUFFIX

    def plan(self, kind: str, command: dict, steps: list[Step]) -> int:
        """Write the run and all its steps in one transaction, before anything is touched. Each
        step's source (or a sidecar's present file and its mode) is recorded as it is now.
        `.clipcull-partial` files that killed runs left next to an unfinished run's destinations
        are removed first."""
        sweep_partials(self.planned_destinations(), OTHER_RUNS_PARTIAL_AGE_S)
        _record_what_is_there(steps)
        with self.store.writing():
            cur = self.db.execute(
                "insert into runs (kind, created_at, command, state) values (?, ?, ?, ?)",
                [kind, dt.datetime.now().isoformat(timespec="seconds"), json.dumps(command), PLANNED],
            )
            run_id = cur.lastrowid
            self._insert_steps(run_id, steps, first_seq=0)
        return run_id

    def add_steps(self, run_id: int, steps: list[Step]) -> None:
        """Journal more steps in a run that grows one action at a time (a review session), before
        they are carried out, recorded as plan() records them. They are numbered after the last."""
        _record_what_is_there(steps)
        with self.store.writing():
            last = self.db.execute("select max(seq) from steps where run_id = ?", [run_id]).fetchone()[0]
            self._insert_steps(run_id, steps, first_seq=0 if last is None else last + 1)

    def _insert_steps(self, run_id: int, steps: list[Step], first_seq: int) -> None:
        for seq, step in enumerate(steps, start=first_seq):
            step.seq, step.state = seq, PLANNED
            self.db.execute(
                "insert into steps (run_id, seq, action, src, dst, before, after_sha, state, src_id, before_mode,"
                " owned, set_id, patch) values (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [run_id, seq, step.action, step.src, step.dst, step.before, step.after_sha, PLANNED,
                 step.src_id.dump() if step.src_id else None, step.before_mode,
                 None if step.owned is None else json.dumps(step.owned), step.set_id,
                 None if step.patch is None else json.dumps(step.patch)],
            )

    def mark(self, run_id: int, seq: int, state: str, note: str | None = None) -> None:
        """Move one step to `state`. Marking a step done records what is at its destination now
        (lstat identity), which undo later demands to find there."""
        with self.store.writing():
            row = self.db.execute("select state, dst, action from steps where run_id = ? and seq = ?",
                                  [run_id, seq]).fetchone()
            if row is None:
                raise JournalError(f"run {run_id} has no step {seq}")
            current, dst, action = row
            if state != current and state not in STEP_TRANSITIONS[current]:
                raise JournalError(f"run {run_id} step {seq}: {current} -> {state} is not allowed")
            if state == DONE:
                found = Identity.of(dst)
                self.db.execute("update steps set state = ?, dst_id = ?, note = ? where run_id = ? and seq = ?",
                                [state, found.dump() if found else None, note, run_id, seq])
                if action == "sidecar":
                    self._follow_rewrite(run_id, dst, found)
            else:
                self.db.execute("update steps set state = ?, note = ? where run_id = ? and seq = ?",
                                [state, note, run_id, seq])

    def rewritten(self, path: str, carried: list[tuple[int, Step]] = ()) -> None:
        """clipcull itself replaced the file at path (a sidecar written or restored): earlier
        moves that left it there expect the new file from now on, and so do the steps in
        `carried` (the copy and the moves that took it here: each puts back, by a rename, this file)."""
        found = Identity.of(path)
        with self.store.writing():
            self._follow_rewrite(None, path, found)
            for run_id, step in carried if found is not None else ():
                self.db.execute("update steps set dst_id = ? where run_id = ? and seq = ? and state in (?, ?)",
                                [found.dump(), run_id, step.seq, DONE, CONFLICT])

    def _follow_rewrite(self, run_id: int | None, path: str, found: Identity | None) -> None:
        if found is None:
            return
        self.db.execute(
            "update steps set dst_id = ? where dst = ? and action in ('move', 'copy') and state in (?, ?)"
            " and run_id is not ?",
            [found.dump(), path, DONE, CONFLICT, run_id],
        )

    def set_state(self, run_id: int, state: str) -> None:
        with self.store.writing():
            row = self.db.execute("select state from runs where id = ?", [run_id]).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id} in the journal")
            current = "running" if row[0] == "partial" else row[0]
            if state != current and state not in RUN_TRANSITIONS[current]:
                raise JournalError(f"run {run_id}: {current} -> {state} is not allowed")
            self.db.execute("update runs set state = ? where id = ?", [state, run_id])

    def steps(self, run_id: int) -> list[Step]:
        rows = self.db.execute(f"select {STEP_COLUMNS} from steps where run_id = ? order by seq", [run_id]).fetchall()
        return [_step(row) for row in rows]

    def runs(self, limit: int = 50) -> list[Run]:
        rows = self.db.execute(
            "select r.id, r.kind, r.created_at, r.command, r.state, count(s.seq) from runs r "
            "left join steps s on s.run_id = r.id group by r.id order by r.id desc limit ?",
            [limit],
        ).fetchall()
        return [Run(*row) for row in rows]

    def newest_run_id(self) -> int | None:
        """The id of the newest run journaled, of any kind and state."""
        row = self.db.execute("select max(id) from runs").fetchone()
        return row[0] if row else None

    def run(self, run_id: int) -> Run | None:
        row = self.db.execute(
            "select r.id, r.kind, r.created_at, r.command, r.state, count(s.seq) from runs r "
            "left join steps s on s.run_id = r.id where r.id = ? group by r.id", [run_id]).fetchone()
        return Run(*row) if row else None

    def last_undoable(self, before: int | None = None) -> Run | None:
        """The newest run (older than run `before`, when given) that is not wholly undone."""
        marks = ",".join("?" * len(UNDOABLE))
        row = self.db.execute(f"select id from runs where state in ({marks}) and (? is null or id < ?)"
                              " order by id desc limit 1", [*UNDOABLE, before, before]).fetchone()
        return self.run(row[0]) if row else None

    def unfinished(self, kind: str) -> Run | None:
        """The oldest run of this kind a killed process left half done (planned or running).
        Failed, undone and conflict runs are never picked: what was undone stays undone."""
        marks = ",".join("?" * len(INTERRUPTED))
        row = self.db.execute(f"select id from runs where kind = ? and state in ({marks}) order by id limit 1",
                              [kind, *INTERRUPTED]).fetchone()
        return self.run(row[0]) if row else None

    def later_moves_from(self, path: str, after_run: int) -> list[tuple[int, Step]]:
        """Moves done after run `after_run` that took the file at path elsewhere, followed from
        place to place in order: where a sidecar written then is now."""
        chain = []
        rows = self.db.execute(
            f"select run_id, {STEP_COLUMNS} from steps where action = 'move' and state in (?, ?) and run_id > ?"
            " order by run_id, seq", [DONE, CONFLICT, after_run]).fetchall()
        here = path
        for row in rows:
            step = _step(row[1:])
            if step.src == here:
                chain.append((row[0], step))
                here = step.dst
        return chain

    def later_write_of(self, path: str, after_run: int, action: str = "sidecar") -> tuple[int, Step] | None:
        """The next write (sidecar, or embedded) at path, in a run after `after_run`, not undone."""
        row = self.db.execute(
            f"select run_id, {STEP_COLUMNS} from steps where action = ? and dst = ? and run_id > ?"
            " and state != ? order by run_id, seq limit 1", [action, path, after_run, UNDONE]).fetchone()
        return (row[0], _step(row[1:])) if row else None

    def rebase(self, run_id: int, seq: int, before: bytes | None, before_mode: int | None,
               patch: dict | None = None) -> None:
        """A later write's "before" becomes what was there before an earlier write it sat on,
        now that the earlier one is undone beneath it: undoing the later run restores that."""
        with self.store.writing():
            self.db.execute("update steps set before = ?, before_mode = ?, patch = coalesce(?, patch)"
                            " where run_id = ? and seq = ?",
                            [before, before_mode, None if patch is None else json.dumps(patch), run_id, seq])

    def last_write(self, path: str) -> Step | None:
        """The XMP write (sidecar or embedded) whose result should be at `path` now, by the
        journal: the newest write there that was not undone, following moves and copies back
        to where the file was then. None when clipcull never wrote what is there (never wrote
        there, or the file it wrote was moved away since).

        Newest by the order steps were journaled (SQLite's rowid), not by run number: a review
        session is one run that takes more decisions after later tag runs, and its later
        decision is the newer write. Steps are journaled just before they are carried out, one
        process at a time (the journal's lock), so that order is the order of the writes."""
        here, before = path, None
        for _ in range(1000):  # a chain of moves: bounded, never a loop
            row = self.db.execute(
                f"select rowid, {STEP_COLUMNS} from steps where state in (?, ?) and ("
                "  (dst = ? and action in ('sidecar', 'embedded', 'move', 'copy'))"
                "  or (src = ? and action = 'move'))"
                " and (? is null or rowid < ?) order by rowid desc limit 1",
                [DONE, CONFLICT, here, here, before, before]).fetchone()
            if row is None:
                return None
            step = _step(row[1:])
            if step.action in ("sidecar", "embedded"):
                return step
            if step.src == here and step.action == "move":
                return None  # the file clipcull wrote here was moved away; what is here now is not its
            here, before = step.src, row[0]  # moved or copied here: look where it came from
        return None

    def later_copies_from(self, paths: list[str], after_run: int) -> list[tuple[int, Step]]:
        """Copies done after run `after_run` of a file at any of these paths."""
        if not paths:
            return []
        marks = ",".join("?" * len(paths))
        rows = self.db.execute(
            f"select run_id, {STEP_COLUMNS} from steps where action = 'copy' and state in (?, ?) and run_id > ?"
            f" and src in ({marks}) order by run_id, seq", [DONE, CONFLICT, after_run, *paths]).fetchall()
        return [(row[0], _step(row[1:])) for row in rows]

    def planned_destinations(self, states=(PLANNED, RUNNING, FAILED)) -> list[str]:
        """Destinations of steps in runs that did not finish: where a killed copy or write may
        have left a `.clipcull-partial` file."""
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"select s.dst from steps s join runs r on r.id = s.run_id where r.state in ({marks})", list(states)
        ).fetchall()
        return [r[0] for r in rows]


def _step(row) -> Step:
    action, src, dst, before, after_sha, state, seq, src_id, dst_id, before_mode, note, owned, set_id, patch = row
    return Step(action, src, dst, before, after_sha, "running" if state == "partial" else state, seq,
                Identity.load(src_id), Identity.load(dst_id), before_mode, note,
                None if owned is None else json.loads(owned), set_id, None if patch is None else json.loads(patch))
