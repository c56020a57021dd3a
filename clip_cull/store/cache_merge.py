"""Folding cache files into one: how several machines (or torchrun processes) share work.

SQLite's WAL does not work across machines on a network filesystem, so several machines must
never write one cache file. Each process writes its own file instead (`--db cache-{rank}.db`:
`{rank}` becomes torchrun's RANK) and `clipcull cache merge` folds them into one afterwards.

What a merge takes from each source, in one transaction per source (all of it or nothing):
- embeddings, text embeddings and the analysers' measurements (focus and exposure, faces): keyed
  by content (fingerprint, model id, prompt, analyser), so a row the destination already has is
  kept (a source's older quality table became measurements when the source was opened);
- files rows: keyed by path; a source row replaces the destination's only when it was indexed
  later (so merging an old file again changes nothing: merging is idempotent);
- checkpoint hashes: keyed by path, size and mtime, added when missing.
Columns are matched by name, so a source written by an older clipcull (fewer columns) merges
too; a source written by a newer one is refused, as opening it would be.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.core.errors import CacheError, InputError
from clip_cull.store.cache import DamagedCache, Store

RANK_PLACEHOLDER = "{rank}"
# (table, how a source row enters): "keep" = INSERT OR IGNORE; "newer" = files rows by indexed_at.
MERGED_TABLES = (("embeddings", "keep"), ("text_embeddings", "keep"), ("measurements", "keep"),
                 ("checkpoints", "keep"), ("files", "newer"))


@dataclass
class MergeReport:
    sources: int = 0
    added: dict[str, int] = field(default_factory=dict)  # table -> rows added or updated


def per_process_path(path: str | Path, env: dict | None = None) -> Path:
    """A --db path with `{rank}` replaced by this process's torchrun RANK (0 outside torchrun)."""
    env = os.environ if env is None else env
    text = str(path)
    if RANK_PLACEHOLDER not in text:
        return Path(text)
    return Path(text.replace(RANK_PLACEHOLDER, str(int(env.get("RANK", "0") or 0))))


def sibling_paths(path: str | Path, world_size: int) -> list[Path]:
    """The per-process cache files of every torchrun process, for a --db path with `{rank}`."""
    return [Path(str(path).replace(RANK_PLACEHOLDER, str(r))) for r in range(world_size)]


def merge_caches(destination: Store, sources: list[str | Path]) -> MergeReport:
    """Fold each source cache file into destination (see the module's description)."""
    report = MergeReport()
    dest_path = Path(destination.path).resolve() if destination.path != ":memory:" else None
    for source in sources:
        source = Path(source).expanduser()
        if not source.is_file():
            raise InputError(f"no cache file {source}")
        if dest_path is not None and source.resolve() == dest_path:
            continue  # merging a cache into itself adds nothing
        try:  # brings an older source's schema up to date; refuses a newer one, and a damaged one
            Store.open(source, rebuild=False).close()
        except DamagedCache as e:
            raise InputError(f"the cache {source} is damaged ({e.reason}); nothing was merged from it, and it "
                             f"is left as it is") from None
        _merge_one(destination, source, report)
        report.sources += 1
    return report


def _merge_one(destination: Store, source: Path, report: MergeReport) -> None:
    conn = destination.db.conn
    try:
        conn.execute("ATTACH DATABASE ? AS merged_source", (str(source),))
    except sqlite3.DatabaseError as e:
        raise CacheError(f"cannot read the cache {source}: {e}") from None
    try:
        with destination.writing():
            for table, how in MERGED_TABLES:
                columns = _shared_columns(conn, table)
                if not columns:
                    continue
                before = conn.total_changes
                conn.execute(_merge_sql(table, how, columns))
                report.added[table] = report.added.get(table, 0) + conn.total_changes - before
    finally:
        conn.execute("DETACH DATABASE merged_source")


def _shared_columns(conn, table: str) -> list[str]:
    main = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
    other = {r[1] for r in conn.execute(f"PRAGMA merged_source.table_info({table})")}
    return [c for c in main if c in other]


def _merge_sql(table: str, how: str, columns: list[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    picked = ", ".join(f's."{c}"' for c in columns)
    if how == "keep":
        return f"INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {picked} FROM merged_source.{table} AS s"
    # files: a source row wins only where the destination has no row for its path, or an older one
    return (
        f"INSERT OR REPLACE INTO main.{table} ({cols}) SELECT {picked} FROM merged_source.{table} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM main.{table} AS m WHERE m.path = s.path "
        f"AND COALESCE(m.indexed_at, '') >= COALESCE(s.indexed_at, ''))"
    )
