"""The SQLite cache: files, their embeddings per model, prompt embeddings, settings.

Files are rows keyed by absolute path with size and mtime_ns; their content fingerprint
(sha256) links them to embeddings, which are keyed by (fingerprint, model id). So a renamed
or copied photo reuses its embedding, a changed photo gets a new one, and switching models
never throws anything away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clip_cull.errors import CacheError
from clip_cull.files import open_regular

BUSY_TIMEOUT_S = 60  # another clipcull writing the same cache waits, it does not fail
SQL_CHUNK = 500  # stays under SQLite's host-parameter limit
# SQLite's header field for "which application's file is this" (PRAGMA application_id): "ClCu".
# A file with another id, or with tables that are not clipcull's, is never changed.
APPLICATION_ID = 0x436C4375
SQLITE_MAGIC = b"SQLite format 3\x00"

migrations = Migrations("clipcull")


@migrations()
def m001_initial(db: Database) -> None:
    db["files"].create(
        {
            "path": str,
            "size": int,
            "mtime_ns": int,
            "fingerprint": str,
            "error": str,  # why the file cannot be read; NULL when it can
            "width": int,
            "height": int,
            "orientation": int,
            "captured_at": str,
            "camera": str,
            "indexed_at": str,
        },
        pk="path",
    )
    db["files"].create_index(["fingerprint"])
    db["embeddings"].create(
        {"fingerprint": str, "model_id": str, "projected": bytes, "pooled": bytes, "created_at": str},
        pk=("fingerprint", "model_id"),
    )
    db["text_embeddings"].create({"model_id": str, "prompt": str, "vector": bytes}, pk=("model_id", "prompt"))
    db["checkpoints"].create({"path": str, "size": int, "mtime_ns": int, "sha256": str}, pk="path")
    db["settings"].create({"key": str, "value": str}, pk="key")


@migrations()
def m002_journal(db: Database) -> None:
    """Runs of `tag` and `move` and their steps, for undo and crash recovery."""
    db["runs"].create({"id": int, "kind": str, "created_at": str, "command": str, "state": str}, pk="id")
    db["steps"].create(
        {"run_id": int, "seq": int, "action": str, "src": str, "dst": str, "before": bytes, "after_sha": str,
         "state": str},
        pk=("run_id", "seq"),
    )


@migrations()
def m003_quality(db: Database) -> None:
    """Focus and exposure per content, measured while decoding for embedding."""
    db["quality"].create(
        {"fingerprint": str, "focus": float, "highlights": float, "shadows": float, "brightness": float},
        pk="fingerprint",
    )


@migrations()
def m004_journal_identity(db: Database) -> None:
    """What each journaled step found and left (lstat identity, a sidecar's mode, why a step was
    left alone), and explicit run states: the old "partial" becomes "conflict" when undo had
    begun (some step undone), else "running" (a forward run a crash interrupted)."""
    for column, kind in (("src_id", str), ("dst_id", str), ("before_mode", int), ("note", str)):
        db["steps"].add_column(column, kind)
    db.execute("update runs set state = 'conflict' where state = 'partial' and exists "
               "(select 1 from steps s where s.run_id = runs.id and s.state = 'undone')")
    db.execute("update runs set state = 'running' where state = 'partial'")


@migrations()
def m005_forget_run_limits(db: Database) -> None:
    """Refusals of an earlier run's limits (--max-pixels, memory) were once remembered as the
    file's failure: forget them, so the files are read again."""
    db.execute(
        "delete from files where fingerprint is null and (error like '%(--max-pixels)%' "
        "or error like 'too many pixels%' or error like 'not enough memory%')"
    )


@migrations()
def m006_journal_ownership(db: Database) -> None:
    """What each write claims (the rating and label clipcull set: ownership comes from the journal,
    not from a keyword), which moved files belong to one photo's set, and how to restore a
    photo's exact bytes after `tag --embed`."""
    for column, kind in (("owned", str), ("set_id", int), ("patch", str)):
        db["steps"].add_column(column, kind)


@dataclass
class FileRecord:
    """One photo's row: identity, fingerprint, facts, or the reason it cannot be read."""

    path: str
    size: int
    mtime_ns: int
    fingerprint: str | None = None
    error: str | None = None
    width: int | None = None
    height: int | None = None
    orientation: int | None = None
    captured_at: str | None = None
    camera: str | None = None


@dataclass
class EmbeddingRecord:
    fingerprint: str
    projected: np.ndarray
    pooled: np.ndarray | None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def to_blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float16).tobytes()


def from_blob(blob: bytes, dtype=np.float16) -> np.ndarray:
    return np.frombuffer(blob, dtype=dtype)


class Store:
    """The cache database. Open it with Store.open(path)."""

    def __init__(self, db: Database, path: str):
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        path = Path(path).expanduser()
        if str(path) != ":memory:":
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(
                    f"cannot create the cache folder {path.parent}: {e.strerror or e}. "
                    f"Choose another place with --db or CLIPCULL_DB."
                ) from None
        if str(path) != ":memory:":
            _check_ours(path)  # before anything writes: another application's database stays untouched
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            store = cls(Database(conn), str(path))
            if str(path) != ":memory:":
                _retry_while_locked(store.db.enable_wal)
            conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses no committed batch
            with store.writing():  # two clipcull processes opening a new cache migrate it once
                _check_schema(store.db, path)
                migrations.apply(store.db)
                if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except sqlite3.DatabaseError as e:
            raise _cache_error(e, path) from None
        return store

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
            raise _cache_error(e, Path(self.path)) from None
        try:
            yield self.db
        except BaseException as e:
            if conn.in_transaction:  # an error may already have ended it
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise _cache_error(e, Path(self.path)) from None
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _cache_error(e, Path(self.path)) from None

    def close(self) -> None:
        self.db.close()

    # --- files -----------------------------------------------------------------------------

    def file_records(self, paths: Sequence[str]) -> dict[str, FileRecord]:
        out: dict[str, FileRecord] = {}
        columns = list(FileRecord.__dataclass_fields__)
        for start in range(0, len(paths), SQL_CHUNK):
            chunk = list(paths[start : start + SQL_CHUNK])
            marks = ",".join("?" * len(chunk))
            sql = f"select {', '.join(columns)} from files where path in ({marks})"
            for row in self.db.execute(sql, chunk).fetchall():
                out[row[0]] = FileRecord(*row)
        return out

    def forget_missing(self, folder: str, present: Iterable[str]) -> int:
        """Drop rows of files under folder that are no longer there. Embeddings stay, so the
        same photo found elsewhere later is not embedded again."""
        prefix = folder.rstrip(os.sep) + os.sep
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            return 0  # paths that are not UTF-8 are never stored, so none can be under this folder
        present = set(present)
        rows = self.db.execute("select path from files where substr(path, 1, ?) = ?", [len(prefix), prefix]).fetchall()
        gone = [r[0] for r in rows if r[0] not in present]
        with self.writing():
            for start in range(0, len(gone), SQL_CHUNK):
                chunk = gone[start : start + SQL_CHUNK]
                self.db.execute(f"delete from files where path in ({','.join('?' * len(chunk))})", chunk)
        return len(gone)

    # --- embeddings ------------------------------------------------------------------------

    def fingerprints_with_embedding(self, model_id: str) -> set[str]:
        rows = self.db.execute("select fingerprint from embeddings where model_id = ?", [model_id])
        return {r[0] for r in rows}

    def save(self, files: Iterable[FileRecord], embeddings: Iterable[EmbeddingRecord], model_id: str,
             quality: dict[str, tuple[float, float, float, float]] | None = None) -> None:
        """Write one batch (files, embeddings and their focus/exposure figures) in one transaction:
        an interruption loses at most this batch, and never leaves a photo half recorded."""
        now = _now()
        file_rows = [dict(vars(f), indexed_at=now) for f in files]
        emb_rows = [
            {
                "fingerprint": e.fingerprint,
                "model_id": model_id,
                "projected": to_blob(e.projected),
                "pooled": to_blob(e.pooled),
                "created_at": now,
            }
            for e in embeddings
        ]
        with self.writing():
            if emb_rows:
                self.db["embeddings"].insert_all(emb_rows, replace=True)
            if file_rows:
                self.db["files"].insert_all(file_rows, replace=True)
            if quality:
                self._insert_quality(quality)

    def embeddings(self, fingerprints: Sequence[str], model_id: str, kind: str = "projected") -> dict[str, np.ndarray]:
        """Cached vectors of one kind ("projected" or "pooled") by fingerprint."""
        if kind not in ("projected", "pooled"):
            raise ValueError(f"unknown feature kind {kind!r}")
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(fingerprints), SQL_CHUNK):
            chunk = list(fingerprints[start : start + SQL_CHUNK])
            sql = (
                f"select fingerprint, {kind} from embeddings where model_id = ? and {kind} is not null "
                f"and fingerprint in ({','.join('?' * len(chunk))})"
            )
            for fp, blob in self.db.execute(sql, [model_id, *chunk]).fetchall():
                out[fp] = from_blob(blob)
        return out

    # --- technical checks ------------------------------------------------------------------

    def fingerprints_with_quality(self) -> set[str]:
        return {r[0] for r in self.db.execute("select fingerprint from quality")}

    def save_quality(self, rows: dict[str, tuple[float, float, float, float]]) -> None:
        if not rows:
            return
        with self.writing():
            self._insert_quality(rows)

    def _insert_quality(self, rows: dict[str, tuple[float, float, float, float]]) -> None:
        self.db.conn.executemany(
            "insert or replace into quality (fingerprint, focus, highlights, shadows, brightness) values (?,?,?,?,?)",
            [(fp, *values) for fp, values in rows.items()],
        )

    def quality(self, fingerprints: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
        out = {}
        for start in range(0, len(fingerprints), SQL_CHUNK):
            chunk = list(fingerprints[start : start + SQL_CHUNK])
            sql = f"select fingerprint, focus, highlights, shadows, brightness from quality where fingerprint in ({','.join('?' * len(chunk))})"
            for fp, *values in self.db.execute(sql, chunk).fetchall():
                out[fp] = tuple(values)
        return out

    # --- prompts ---------------------------------------------------------------------------

    def text_embeddings(self, model_id: str, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(prompts), SQL_CHUNK):
            chunk = list(prompts[start : start + SQL_CHUNK])
            sql = (
                "select prompt, vector from text_embeddings where model_id = ? "
                f"and prompt in ({','.join('?' * len(chunk))})"
            )
            for prompt, blob in self.db.execute(sql, [model_id, *chunk]).fetchall():
                out[prompt] = from_blob(blob, np.float32)
        return out

    def save_text_embeddings(self, model_id: str, prompts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [
            {"model_id": model_id, "prompt": p, "vector": np.asarray(v, np.float32).tobytes()}
            for p, v in zip(prompts, vectors)
        ]
        with self.writing():
            self.db["text_embeddings"].insert_all(rows, replace=True)

    # --- checkpoints and settings ----------------------------------------------------------

    def checkpoint_sha256(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute(
            "select sha256 from checkpoints where path = ? and size = ? and mtime_ns = ?", [path, size, mtime_ns]
        ).fetchone()
        return row[0] if row else None

    def save_checkpoint_sha256(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        with self.writing():
            self.db["checkpoints"].insert(
                {"path": path, "size": size, "mtime_ns": mtime_ns, "sha256": sha256}, replace=True
            )

    def get_setting(self, key: str):
        row = self.db.execute("select value from settings where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value) -> None:
        with self.writing():
            self.db["settings"].insert({"key": key, "value": json.dumps(value)}, replace=True)


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


def _known_steps() -> set[str]:
    """The schema steps this version knows: all of them are pending on an empty database
    (sqlite-utils' public API; its list of registered migrations is private)."""
    return {m.name for m in migrations.pending(Database(memory=True))}


def _check_ours(path: Path) -> None:
    """Refuse, without changing a byte, a database file that is not clipcull's cache.

    Ours: an empty or missing file; SQLite's application_id set to APPLICATION_ID; or, from
    before the id was set, a database whose tables are clipcull's and whose migrations are
    clipcull's. Everything else (a Lightroom catalog, any other program's database) is refused."""
    import stat as stat_mode

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CacheError(f"cannot use the cache {path}: {e.strerror or e}") from None
    if stat_mode.S_ISDIR(st.st_mode):
        raise CacheError(f"the cache {path} is a folder; give a file with --db")
    if not stat_mode.S_ISREG(st.st_mode):
        raise CacheError(f"the cache {path} is not a regular file; give a file with --db")
    if st.st_size == 0:
        return
    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise CacheError(f"cannot read the cache {path}: {e.strerror or e}") from None
    if not header.startswith(SQLITE_MAGIC):
        return  # not SQLite at all: opening says "damaged", and changes nothing
    if len(header) == 100 and int.from_bytes(header[68:72], "big") == APPLICATION_ID:
        return
    application_id = int.from_bytes(header[68:72], "big") if len(header) == 100 else 0
    tables = _tables_untouched(path)
    if application_id == 0 and tables is not None and _looks_like_clipcull(tables, path):
        return  # a cache from before the id: accepted, and given the id
    what = f"application id {application_id:#x}" if application_id else (
        f"tables {', '.join(sorted(tables)[:6])}" + (", ..." if tables and len(tables) > 6 else "") if tables else "no clipcull tables")
    raise CacheError(
        f"{path} is not a clipcull cache (an SQLite database of another application: {what}). Nothing "
        f"was changed. Give clipcull its own file with --db or CLIPCULL_DB."
    )


def _tables_untouched(path: Path) -> set[str] | None:
    """Table names, read through an immutable connection: no lock, no journal, no byte written."""
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1", uri=True)
        try:
            return {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def _looks_like_clipcull(tables: set[str], path: Path) -> bool:
    if not tables:
        return True  # a database without tables holds nothing to protect
    if not {"files", "_sqlite_migrations"} <= tables:
        return False
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1", uri=True)
        try:
            sets = {r[0] for r in conn.execute("select distinct migration_set from _sqlite_migrations")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return sets == {"clipcull"}


def _check_schema(db: Database, path: Path) -> None:
    """Refuse a cache written by a newer clipcull instead of guessing at its tables."""
    known = _known_steps()
    applied = {m.name for m in migrations.applied(db)}
    unknown = sorted(applied - known)
    if unknown:
        raise CacheError(
            f"the cache {path} was written by a newer clipcull (schema steps {', '.join(unknown)} are "
            f"unknown to this version). Upgrade clipcull, or use another cache with --db."
        )


def _cache_error(error: sqlite3.DatabaseError, path: Path) -> CacheError:
    text = str(error)
    if "disk is full" in text or "disk I/O error" in text:
        return CacheError(
            f"cannot write the cache {path} ({text}). Nothing committed was lost: free some space "
            f"(or use --db on another disk) and run the command again to go on."
        )
    if "not a database" in text or "malformed" in text:
        return CacheError(
            f"the cache {path} is damaged ({text}). Nothing was changed: move it aside "
            f"(clipcull builds a new one) or use another cache with --db."
        )
    if "locked" in text or "busy" in text:
        return CacheError(
            f"the cache {path} is locked by another program (waited {BUSY_TIMEOUT_S} s). Nothing was "
            f"changed: let the other clipcull finish, then run the command again."
        )
    if "readonly" in text or "unable to open" in text:
        return CacheError(f"cannot write the cache {path} ({text}). Use a writable place with --db or CLIPCULL_DB.")
    return CacheError(f"the cache {path} cannot be used: {text}")
