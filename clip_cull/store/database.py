"""Opening clipcull's SQLite files, one copy for the cache (store.py) and the state database
(state.py): whose file it is (SQLite's application_id), WAL and the busy timeout, schema steps,
write transactions, damage, and every SQLite error as one line naming the file.

A `Kind` says what one kind of file is called and how the user picks another; `SQLiteFile` is
the connection both stores share.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat as stat_mode
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import open_regular

BUSY_TIMEOUT_S = 60  # another clipcull writing the same file waits, it does not fail
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Kind:
    """One kind of clipcull database file."""

    noun: str  # "cache", "state database": how messages name it
    option: str  # the option that picks another file ("--db")
    env: str  # the environment variable that does ("CLIPCULL_DB")
    application_id: int  # SQLite's header field for "which application's file is this"
    migrations: Migrations  # its own schema steps
    own_table: str  # a table only this kind has: recognises a file from before the id was set
    error: type[ClipCullError]  # what goes wrong with it is raised as this
    damaged: type["Damaged"]  # ... and damage as this (a subclass of both Damaged and error)
    on_damage: str  # what to do about a damaged file of this kind; {path} is filled in


_KINDS: dict[int, Kind] = {}  # by application id: a file of the other kind is named as such


def register(kind: Kind) -> Kind:
    _KINDS[kind.application_id] = kind
    return kind


class Damaged(ClipCullError):
    """SQLite cannot read the file whole: it is not a database, or a page of it is damaged.
    Each kind raises its own subclass (also a subclass of the kind's error)."""

    def __init__(self, kind: Kind, path: Path, reason: str, note: str = ""):
        self.kind, self.path, self.reason = kind, Path(path), reason
        super().__init__(f"the {kind.noun} {path} is damaged ({reason}). {note}" + kind.on_damage.format(path=path))


class SQLiteFile:
    """One clipcull database file: a connection in WAL mode whose writes take the lock first."""

    KIND: Kind

    def __init__(self, db: Database, path: str, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.db = db
        self.path = path
        self.busy_timeout_s = busy_timeout_s

    @classmethod
    def connect(cls, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S):
        """Open (creating it if need be) and bring the schema up to date. Refuses another
        application's file without changing a byte; raises Damaged for a damaged one."""
        kind = cls.KIND
        memory = str(path) == ":memory:"
        if not memory:
            _make_folder(path, kind)
            check_ours(path, kind)  # before anything writes: another application's database stays untouched
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not memory:
                _check_whole(conn, path, kind)
            opened = cls(Database(conn), str(path), busy_timeout_s)
            if not memory:
                _retry_while_locked(opened.db.enable_wal)
            conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses no committed batch
            with opened.writing():  # two clipcull processes opening a new file migrate it once
                check_schema(opened.db, path, kind)
                kind.migrations.apply(opened.db)
                if conn.execute("PRAGMA application_id").fetchone()[0] != kind.application_id:
                    conn.execute(f"PRAGMA application_id = {kind.application_id}")
        except BaseException as e:
            if conn is not None:
                conn.close()  # a damaged file is moved aside next: nothing may hold it open
            if isinstance(e, sqlite3.DatabaseError):
                raise database_error(e, path, kind, busy_timeout_s) from None
            raise
        return opened

    @contextlib.contextmanager
    def writing(self):
        """A write transaction that takes the write lock first (BEGIN IMMEDIATE).

        Another process holding the lock makes this wait (busy timeout) instead of failing
        with "database is locked" halfway through, as a read-then-write transaction can in WAL
        mode. sqlite-utils calls inside nest as savepoints.
        """
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise self.error_for(e) from None
        try:
            yield self.db
        except BaseException as e:
            if conn.in_transaction:  # an error may already have ended it
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise self.error_for(e) from None
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self.error_for(e) from None

    def error_for(self, error: sqlite3.DatabaseError) -> ClipCullError:
        """A SQLite error of this file as the one line that says what to do."""
        return database_error(error, Path(self.path), self.KIND, self.busy_timeout_s)

    def close(self) -> None:
        self.db.close()


def _make_folder(path: Path, kind: Kind) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise kind.error(f"cannot create the {kind.noun} folder {path.parent}: {e.strerror or e}. "
                         f"Choose another place with {kind.option} or {kind.env}.") from None


def _check_whole(conn: sqlite3.Connection, path: Path, kind: Kind) -> None:
    """Raise Damaged unless every page of the file reads back as a well-formed b-tree.

    quick_check reads the whole file once (no index cross-checks, unlike integrity_check): a
    damaged page is found here, at open, instead of as a traceback halfway through a command."""
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as e:
        raise kind.damaged(kind, path, str(e)) from None
    if rows != [("ok",)]:
        found = " ".join(str(r[0]) for r in rows).replace("*** in database main ***", "")
        raise kind.damaged(kind, path, " ".join(found.split()))


def _retry_while_locked(action, attempts: int = 50, pause_s: float = 0.2):
    """Switching a new database to WAL needs a moment alone with it; another process that
    is doing the same gets SQLITE_BUSY at once, without the busy timeout."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(pause_s)


# --- whose file is it --------------------------------------------------------------------------


def known_steps(migrations: Migrations) -> set[str]:
    """The schema steps this version knows: all of them are pending on an empty database
    (sqlite-utils' public API; its list of registered migrations is private)."""
    return {m.name for m in migrations.pending(Database(memory=True))}


def check_schema(db: Database, path: Path, kind: Kind) -> None:
    """Refuse a file written by a newer clipcull instead of guessing at its tables."""
    applied = {m.name for m in kind.migrations.applied(db)}
    unknown = sorted(applied - known_steps(kind.migrations))
    if unknown:
        raise kind.error(
            f"the {kind.noun} {path} was written by a newer clipcull (schema steps {', '.join(unknown)} are "
            f"unknown to this version). Upgrade clipcull, or use another {kind.noun} with {kind.option}."
        )


def read_header(path: Path, kind: Kind) -> bytes:
    """The file's first 100 bytes (SQLite's header), read without following a FIFO or device."""
    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            return f.read(100)
    except OSError as e:
        raise kind.error(f"cannot read the {kind.noun} {path}: {e.strerror or e}") from None


SETTLING_S = 2.0  # how long a database file another process is writing may read inconsistently


def check_ours(path: Path, kind: Kind) -> None:
    """Refuse, without changing a byte, a database file that is not this kind of clipcull file.

    Ours: an empty or missing file; SQLite's application_id set to kind's; or, from before the
    id was set, a database whose tables and migrations are this kind's. Everything else (a
    Lightroom catalog, any other program's database, clipcull's other file) is refused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise kind.error(f"cannot use the {kind.noun} {path}: {e.strerror or e}") from None
    if stat_mode.S_ISDIR(st.st_mode):
        raise kind.error(f"the {kind.noun} {path} is a folder; give a file with {kind.option}")
    if not stat_mode.S_ISREG(st.st_mode):
        raise kind.error(f"the {kind.noun} {path} is not a regular file; give a file with {kind.option}")
    if st.st_size == 0:
        return
    deadline = time.monotonic() + SETTLING_S
    while True:
        header = read_header(path, kind)
        if not header.startswith(SQLITE_MAGIC):
            return  # not SQLite at all: opening says "damaged"
        application_id = int.from_bytes(header[68:72], "big") if len(header) == 100 else 0
        if application_id == kind.application_id:
            return
        tables = tables_untouched(path)
        if application_id == 0 and tables is not None and _looks_like(kind, tables, path):
            return  # a file from before the id: accepted, and given the id
        # Read without locks, a file another clipcull process is creating or checkpointing at
        # this moment can show pages of two states (unreadable, or its tables without their
        # rows): look again for a moment before refusing it. Another application's database
        # reads the same every time, and is refused at once.
        settling = application_id == 0 and (tables is None or kind.own_table in tables)
        if not settling or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise kind.error(
        f"{path} is not a clipcull {kind.noun} ({_what_it_is(application_id, tables)}). Nothing "
        f"was changed. Give clipcull its own file with {kind.option} or {kind.env}."
    )


def _what_it_is(application_id: int, tables: set[str] | None) -> str:
    if application_id in _KINDS:
        return f"it is clipcull's {_KINDS[application_id].noun}"
    if application_id:
        return f"an SQLite database of another application: application id {application_id:#x}"
    if not tables:
        return "an SQLite database of another application: no clipcull tables"
    shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
    return f"an SQLite database of another application: tables {shown}"


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes a byte: no lock, no journal (immutable)."""
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1", uri=True)


def tables_untouched(path: Path) -> set[str] | None:
    """Table names, read through an immutable connection; None where they cannot be read."""
    try:
        conn = _read_only(path)
        try:
            return {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def _looks_like(kind: Kind, tables: set[str], path: Path) -> bool:
    if not tables:
        return True  # a database without tables holds nothing to protect
    if not {kind.own_table, "_sqlite_migrations"} <= tables:
        return False
    try:
        conn = _read_only(path)
        try:
            sets = {r[0] for r in conn.execute("select distinct migration_set from _sqlite_migrations")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return sets == {kind.migrations.name}


# --- errors as one line ------------------------------------------------------------------------


def database_error(error: sqlite3.DatabaseError, path: Path, kind: Kind, busy_timeout_s: float) -> ClipCullError:
    text = str(error)
    if "not a database" in text or "malformed" in text:
        return kind.damaged(kind, path, text)
    if "disk is full" in text or "disk I/O error" in text:
        return kind.error(
            f"cannot write the {kind.noun} {path} ({text}). Nothing committed was lost: free some space "
            f"(or use {kind.option} on another disk) and run the command again to go on."
        )
    if "locked" in text or "busy" in text:
        return kind.error(
            f"the {kind.noun} {path} is locked by another program (waited {busy_timeout_s:g} s). Nothing was "
            f"changed: let the other clipcull finish, then run the command again."
        )
    if "readonly" in text or "unable to open" in text:
        return kind.error(f"cannot write the {kind.noun} {path} ({text}). Use a writable place with "
                          f"{kind.option} or {kind.env}.")
    return kind.error(f"the {kind.noun} {path} cannot be used: {text}")
