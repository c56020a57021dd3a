"""The SQLite cache: files, their embeddings per model, prompt embeddings, per-photo measurements
(focus and exposure, faces: the analysers of core/analysers.py).
Everything in it can be computed again: the undo journal and per-folder settings live in the
state database (state.py), so a damaged cache is moved aside and built anew.

Files are rows keyed by absolute path with size and mtime_ns; their content fingerprint
(sha256) links them to embeddings, which are keyed by (fingerprint, model id). So a renamed
or copied photo reuses its embedding, a changed photo gets a new one, and switching models
never throws anything away.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clip_cull.store import database
from clip_cull.store.database import SQLITE_MAGIC, Damaged, Kind, SQLiteFile, known_steps, read_header, register
from clip_cull.core.errors import CacheError

BUSY_TIMEOUT_S = database.BUSY_TIMEOUT_S  # another clipcull writing the same cache waits, it does not fail
SQL_CHUNK = 500  # stays under SQLite's host-parameter limit
# SQLite's header field for "which application's file is this" (PRAGMA application_id): "ClCu".
# A file with another id, or with tables that are not clipcull's, is never changed.
APPLICATION_ID = 0x436C4375

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
    """Runs of `tag` and `move` and their steps, for undo and crash recovery. (They, and the
    settings table, now live in the state database; these stay for caches of older versions,
    whose rows state_import.py copies over once.)"""
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
def m006_measurements(db: Database) -> None:
    """Per-content results of the pluggable analysers (core/analysers.py), by name and version."""
    db["measurements"].create(
        {"fingerprint": str, "analyser": str, "version": int, "value": str},
        pk=("fingerprint", "analyser"),
    )


@migrations()
def m007_quality_as_measurements(db: Database) -> None:
    """Focus and exposure became the analyser "quality" (version 1): its figures move from their
    own table into measurements, so the photos are not decoded again, and the table goes (one
    place holds them). The same figures: the analyser measures as the old code did."""
    rows = db.execute("select fingerprint, focus, highlights, shadows, brightness from quality").fetchall()
    db.conn.executemany(  # in Python, not SQLite's json_object: older SQLite builds lack JSON functions
        "insert or ignore into measurements (fingerprint, analyser, version, value) values (?, 'quality', 1, ?)",
        [(fp, json.dumps(dict(zip(("focus", "highlights", "shadows", "brightness"), values)), separators=(",", ":")))
         for fp, *values in rows],
    )
    db["quality"].drop()


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


class DamagedCache(Damaged, CacheError):
    """The cache is damaged: Store.open moves it aside and builds a new one."""


CACHE = register(Kind(
    noun="cache", option="--db", env="CLIPCULL_DB", application_id=APPLICATION_ID, migrations=migrations,
    own_table="files", error=CacheError, damaged=DamagedCache,
    on_damage="It is only a cache: run the command again, and clipcull moves it aside and builds a new one.",
))
# A file that is not SQLite at all is taken for a damaged cache (and moved aside) only under a
# database's name: `--db IMG_0001.jpg` given by mistake is refused, never renamed.
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")


class Store(SQLiteFile):
    """The cache database. Open it with Store.open(path).

    rebuilt_from: where a damaged cache found at open was moved aside (None: it was not);
    damage: what was wrong with it."""

    KIND = CACHE

    def __init__(self, db: Database, path: str, busy_timeout_s: float = BUSY_TIMEOUT_S):
        super().__init__(db, path, busy_timeout_s)
        self.rebuilt_from: Path | None = None
        self.damage: str | None = None

    @classmethod
    def open(cls, path: str | Path, rebuild: bool = True) -> "Store":
        """Open the cache at path, creating it if need be. A damaged cache (not a database, or
        a damaged page) is moved aside, never deleted, and a new one is built in its place;
        with rebuild=False it is refused (DamagedCache) and left as it is."""
        path = Path(path).expanduser()
        found = _identity(path)
        try:
            return cls.connect(path, BUSY_TIMEOUT_S)  # looked up now: tests shorten it
        except DamagedCache as damage:
            if not rebuild:
                raise
            if not _rebuildable(path):
                raise CacheError(f"{path} is not a clipcull cache (not an SQLite database: {damage.reason}). Nothing "
                                 f"was changed. Give clipcull its own file with --db or CLIPCULL_DB.") from None
            aside = move_aside(path, found)
            store = cls.connect(path, BUSY_TIMEOUT_S)
            if aside is not None:  # None: another clipcull moved it aside first, and says so
                store.rebuilt_from, store.damage = aside, damage.reason
            return store

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
             measurements: Sequence[tuple[str, str, int, dict]] = ()) -> None:
        """Write one batch (files, embeddings and the analysers' results for them) in one transaction:
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
            if measurements:
                self._insert_measurements(measurements)

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

    # --- analysers' measurements -----------------------------------------------------------

    def fingerprints_measured(self, analyser: str, version: int) -> set[str]:
        """Contents with a result of this analyser at this version (an older version is redone)."""
        rows = self.db.execute("select fingerprint from measurements where analyser = ? and version = ?",
                               [analyser, version])
        return {r[0] for r in rows}

    def save_measurements(self, rows: Iterable[tuple[str, str, int, dict]]) -> None:
        """Store (fingerprint, analyser, version, result) rows in one transaction."""
        rows = list(rows)
        if not rows:
            return
        with self.writing():
            self._insert_measurements(rows)

    def _insert_measurements(self, rows: Sequence[tuple[str, str, int, dict]]) -> None:
        self.db.conn.executemany(
            "insert or replace into measurements (fingerprint, analyser, version, value) values (?,?,?,?)",
            [(fp, name, version, json.dumps(value, separators=(",", ":"))) for fp, name, version, value in rows],
        )

    def measurements(self, fingerprints: Sequence[str], analyser: str, version: int) -> dict[str, dict]:
        """This analyser's results at this version, by fingerprint (absent: not measured)."""
        out: dict[str, dict] = {}
        for start in range(0, len(fingerprints), SQL_CHUNK):
            chunk = list(fingerprints[start : start + SQL_CHUNK])
            sql = (f"select fingerprint, value from measurements where analyser = ? and version = ? "
                   f"and fingerprint in ({','.join('?' * len(chunk))})")
            for fp, value in self.db.execute(sql, [analyser, version, *chunk]).fetchall():
                out[fp] = json.loads(value)
        return out

    # --- clipcull's own rewrites ------------------------------------------------------------

    def carry_over(self, rewrites: Iterable[tuple[str, str, str]]) -> int:
        """(path, old fingerprint, new fingerprint) of photos clipcull itself rewrote with their
        pixels checked identical (`tag --embed`, `review --embed`): what the cache knows of the old
        content (embeddings of every model, the analysers' measurements: focus and exposure, faces) is
        the new content's too, and the file's row names the new content, so the next `rank` embeds
        nothing again. Never over anything already known of the new content. Returns how many."""
        rewrites = [(path, old, new) for path, old, new in rewrites if old and new and old != new]
        with self.writing():
            for path, old, new in rewrites:
                self.db.execute("insert or ignore into embeddings (fingerprint, model_id, projected, pooled, created_at) "
                                "select ?, model_id, projected, pooled, created_at from embeddings where fingerprint = ?",
                                [new, old])
                self.db.execute("insert or ignore into measurements (fingerprint, analyser, version, value) "
                                "select ?, analyser, version, value from measurements where fingerprint = ?", [new, old])
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                self.db.execute("update files set fingerprint = ?, size = ?, mtime_ns = ? where path = ? and fingerprint = ?",
                                [new, st.st_size, st.st_mtime_ns, path, old])
        return len(rewrites)

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

    # --- checkpoints -------------------------------------------------------------------------

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


def _known_steps() -> set[str]:
    """The cache's schema steps this version knows."""
    return known_steps(migrations)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _rebuildable(path: Path) -> bool:
    """A damaged file clipcull may move aside: SQLite with the cache's id (check_ours let it
    through), or garbage under a database's name."""
    if read_header(path, CACHE).startswith(SQLITE_MAGIC):
        return True
    return path.suffix.lower() in DATABASE_SUFFIXES


def move_aside(path: Path, found: tuple[int, int] | None = None) -> Path | None:
    """Rename a damaged cache and its -wal and -shm to PATH.damaged-YYYYmmdd-HHMMSS(-wal/-shm);
    the aside path, or None where the file is no longer the one found damaged (another clipcull
    moved it aside first and made a new one, which stays). Nothing is deleted, nothing is
    overwritten. The -wal goes first: a new cache must never find the old one's log."""
    if found is not None and _identity(path) != found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.damaged-{stamp}"), 0
    while any(os.path.lexists(f"{aside}{suffix}") for suffix in ("", "-wal", "-shm")):
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        for suffix in ("-wal", "-shm", ""):
            if os.path.lexists(f"{path}{suffix}"):
                os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    except OSError as e:
        raise CacheError(f"the cache {path} is damaged and cannot be moved aside ({e.strerror or e}): move it "
                         f"aside yourself (clipcull builds a new one) or use another cache with --db.") from None
    return aside
