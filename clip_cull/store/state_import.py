"""Bringing an older clipcull's journal and settings over from its cache, once.

Before the state database, the runs, steps and settings tables lived in the cache. When a state
database is opened that nobody used yet (no run, no setting, nothing imported) and the cache
beside it holds some, they are copied over in one transaction, with the same run ids and step
rows, and the copy is recorded: it never happens twice, and a cache opened later never brings
its old runs in over newer ones. The cache's tables are read, never changed or dropped.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from clip_cull.store.database import SQLITE_MAGIC, check_ours, read_header
from clip_cull.core.errors import ClipCullError
from clip_cull.store.state import StateStore
from clip_cull.store.cache import CACHE

# Before the cache's step m004 a run was "partial" both when a kill interrupted it (now "running":
# the next move finishes it) and when undo had begun on it (now "conflict"), as m004 sorts them.
EXPLICIT_STATE = ("case when state != 'partial' then state when exists (select 1 from steps s where "
                  "s.run_id = runs.id and s.state = 'undone') then 'conflict' else 'running' end")


class LegacyUnreadable(ClipCullError):
    """The cache holds an older clipcull's journal that cannot be read (a damaged file)."""


@dataclass
class Imported:
    source: Path
    runs: int
    steps: int
    settings: int


@dataclass
class _Legacy:
    run_columns: list[str]
    runs: list[tuple]
    step_columns: list[str]
    steps: list[tuple]
    settings: list[tuple]


def import_legacy(state: StateStore, cache_path: str | Path) -> Imported | None:
    """Copy the journal and settings an older clipcull kept in the cache at cache_path into a
    state database nobody used yet. None when there is nothing to do. Raises CacheError for a
    file that is not clipcull's cache, LegacyUnreadable for a damaged one that holds a journal."""
    cache_path = Path(cache_path).expanduser()
    if str(cache_path) == ":memory:" or not state.is_empty():
        return None
    legacy = _read(cache_path, {table: _columns(state.db.conn, table) for table in ("runs", "steps")})
    if legacy is None:
        return None
    with state.writing() as db:
        if not state.is_empty():  # another clipcull imported (or journaled) meanwhile
            return None
        db.conn.executemany(_insert("runs", legacy.run_columns), legacy.runs)
        db.conn.executemany(_insert("steps", legacy.step_columns), legacy.steps)
        db.conn.executemany(_insert("settings", ("key", "value")), legacy.settings)
        db.conn.execute("insert into legacy_imports (source, imported_at, runs, steps, settings) values (?,?,?,?,?)",
                        [str(cache_path), dt.datetime.now().isoformat(timespec="seconds"),
                         len(legacy.runs), len(legacy.steps), len(legacy.settings)])
    return Imported(cache_path, len(legacy.runs), len(legacy.steps), len(legacy.settings))


def _insert(table: str, columns: list[str]) -> str:
    return f"insert into {table} ({_names(columns)}) values ({','.join('?' * len(columns))})"


def _names(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute("select * from pragma_table_info(?)", [table])]


def _read(path: Path, wanted: dict[str, list[str]]) -> _Legacy | None:
    """The cache's runs, steps and settings, in the state database's columns (wanted) that the
    cache has too; None where it has none (or no cache is there)."""
    try:
        if os.stat(path).st_size == 0:
            return None
    except OSError:
        return None  # no cache yet: nothing to bring over (opening it says what else is wrong)
    check_ours(path, CACHE)  # another application's database: refused, as opening it would be
    if not read_header(path, CACHE).startswith(SQLITE_MAGIC):
        return None  # not a database at all: nothing can be read from it
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)  # sees the WAL too
        try:
            return _rows(conn, wanted)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise LegacyUnreadable(f"could not read the undo history an older clipcull kept in the cache {path} "
                               f"({e}); it stays in that file") from None


def _rows(conn: sqlite3.Connection, wanted: dict[str, list[str]]) -> _Legacy | None:
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    if not {"runs", "steps", "settings"} <= tables:
        return None
    settings = conn.execute("select key, value from settings").fetchall()
    # Columns are matched by name: those a cache from before its step m004 lacks stay empty.
    run_columns = [c for c in wanted["runs"] if c in _columns(conn, "runs")]
    picked = ", ".join(EXPLICIT_STATE if c == "state" else f'"{c}"' for c in run_columns)
    runs = conn.execute(f"select {picked} from runs order by id").fetchall()
    if not runs and not settings:
        return None
    step_columns = [c for c in wanted["steps"] if c in _columns(conn, "steps")]
    steps = conn.execute(f"select {_names(step_columns)} from steps order by run_id, seq").fetchall()
    return _Legacy(run_columns, runs, step_columns, steps, settings)
