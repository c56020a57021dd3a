"""The journal: every tag and move run, planned in the database before anything changes on
disk, each step marked as it is done. `clipcull undo` reads it back; so does a re-run after a
crash."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from clip_cull.store import Store


PLANNED, DONE, UNDONE, PARTIAL = "planned", "done", "undone", "partial"


@dataclass
class Step:
    action: str  # "sidecar" (write dst), "move" or "copy" (src -> dst)
    src: str | None
    dst: str
    before: bytes | None = None  # a sidecar's bytes before clipcull wrote it; None: it did not exist
    after_sha: str | None = None  # sha256 of what clipcull wrote (sidecars) or of the file moved
    state: str = PLANNED
    seq: int = 0


@dataclass
class Run:
    id: int
    kind: str
    created_at: str
    command: str
    state: str
    steps: int = 0


class Journal:
    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    def plan(self, kind: str, command: dict, steps: list[Step]) -> int:
        """Write the run and all its steps in one transaction, before anything is touched."""
        with self.store.writing():
            cur = self.db.execute(
                "insert into runs (kind, created_at, command, state) values (?, ?, ?, ?)",
                [kind, dt.datetime.now().isoformat(timespec="seconds"), json.dumps(command), PLANNED],
            )
            run_id = cur.lastrowid
            for seq, step in enumerate(steps):
                step.seq = seq
                self.db.execute(
                    "insert into steps (run_id, seq, action, src, dst, before, after_sha, state) values (?,?,?,?,?,?,?,?)",
                    [run_id, seq, step.action, step.src, step.dst, step.before, step.after_sha, PLANNED],
                )
        return run_id

    def mark(self, run_id: int, seq: int, state: str) -> None:
        with self.store.writing():
            self.db.execute("update steps set state = ? where run_id = ? and seq = ?", [state, run_id, seq])

    def set_state(self, run_id: int, state: str) -> None:
        with self.store.writing():
            self.db.execute("update runs set state = ? where id = ?", [state, run_id])

    def steps(self, run_id: int) -> list[Step]:
        rows = self.db.execute(
            "select action, src, dst, before, after_sha, state, seq from steps where run_id = ? order by seq", [run_id]
        ).fetchall()
        return [Step(*row) for row in rows]

    def runs(self, limit: int = 50) -> list[Run]:
        rows = self.db.execute(
            "select r.id, r.kind, r.created_at, r.command, r.state, count(s.seq) from runs r "
            "left join steps s on s.run_id = r.id group by r.id order by r.id desc limit ?",
            [limit],
        ).fetchall()
        return [Run(*row) for row in rows]

    def run(self, run_id: int) -> Run | None:
        return next((r for r in self.runs(10_000) if r.id == run_id), None)

    def last_undoable(self) -> Run | None:
        return next((r for r in self.runs(10_000) if r.state in (DONE, PARTIAL, PLANNED)), None)

    def unfinished(self, kind: str) -> Run | None:
        return next((r for r in self.runs(10_000) if r.kind == kind and r.state in (PLANNED, PARTIAL)), None)
