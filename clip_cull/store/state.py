"""The state database: what clipcull must never lose, kept apart from the rebuildable cache.

- runs and steps: the undo journal (culling/journal.py), with exactly the columns the cache's
  journal had (the cache's schema steps m002 and m004);
- settings: the settings of each folder's last `rank` (settings.py), JSON values by key;
- legacy_imports: when an older clipcull's journal and settings were copied here from its cache
  (state_import.py), so that it happens once.

The schema steps are sqlite-utils migrations of their own set, applied in the order they are
defined: a new step is one more `@migrations()` function `mNNN_...` after the last one.
A damaged state database is reported and left exactly as it is, never moved aside or rebuilt:
it is the photographer's history.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clip_cull.store.database import BUSY_TIMEOUT_S, Damaged, Kind, SQLiteFile, known_steps, register
from clip_cull.core.errors import StateError

# SQLite's application_id of a state database: "ClSt" (the cache's is "ClCu").
APPLICATION_ID = 0x436C5374

migrations = Migrations("clipcull-state")


@migrations()
def m001_journal_and_settings(db: Database) -> None:
    """The journal as the cache held it after its steps m002 and m004, folder settings, and the
    record of an import from an older clipcull's cache."""
    db["runs"].create({"id": int, "kind": str, "created_at": str, "command": str, "state": str}, pk="id")
    db["steps"].create(
        {"run_id": int, "seq": int, "action": str, "src": str, "dst": str, "before": bytes, "after_sha": str,
         "state": str, "src_id": str, "dst_id": str, "before_mode": int, "note": str},
        pk=("run_id", "seq"),
    )
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["legacy_imports"].create(
        {"source": str, "imported_at": str, "runs": int, "steps": int, "settings": int}
    )


@migrations()
def m002_journal_ownership(db: Database) -> None:
    """What each write claims (the rating and label clipcull set: ownership comes from the journal,
    not from a keyword), which moved files belong to one photo's set (they go back together), and
    how to restore a photo's exact bytes after `tag --embed` (the bytes that differ, and where)."""
    for column, kind in (("owned", str), ("set_id", int), ("patch", str)):
        db["steps"].add_column(column, kind)
    # Whose a value is, is asked of the journal for every sidecar a command reads: by path, in
    # O(log n) over years of runs, not a scan of every step each time.
    db["steps"].create_index(["dst"], if_not_exists=True)
    db["steps"].create_index(["src"], if_not_exists=True)


class DamagedState(Damaged, StateError):
    """The state database is damaged: reported, never changed."""


STATE = register(Kind(
    noun="state database", option="--state", env="CLIPCULL_STATE", application_id=APPLICATION_ID,
    migrations=migrations, own_table="runs", error=StateError, damaged=DamagedState,
    on_damage="It holds your undo history and folder settings, so clipcull leaves it as it is: recover it with "
              "`sqlite3 {path} .recover | sqlite3 {path}.recovered` (.dump where .recover fails), put "
              "{path}.recovered in its place, and run the command again (or use another with --state).",
))


class StateStore(SQLiteFile):
    """The state database. Open it with StateStore.open(path); Journal(state) keeps the undo
    journal in it, settings.py the folders' settings."""

    KIND = STATE

    @classmethod
    def open(cls, path: str | Path) -> "StateStore":
        """Open the state database at path, creating it if need be. A damaged one raises
        DamagedState and is left byte for byte as it was."""
        path = Path(path).expanduser()
        try:
            return cls.connect(path, BUSY_TIMEOUT_S)
        except DamagedState as e:
            raise DamagedState(STATE, e.path, e.reason, "Nothing was changed. ") from None

    def get_setting(self, key: str):
        row = self.db.execute("select value from settings where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value) -> None:
        with self.writing():
            self.db["settings"].insert({"key": key, "value": json.dumps(value)}, replace=True)

    def is_empty(self) -> bool:
        """No run, no setting, and nothing ever imported: a state database nobody used yet."""
        return not self.db.execute(
            "select exists(select 1 from runs) or exists(select 1 from settings) "
            "or exists(select 1 from legacy_imports)").fetchone()[0]


def _known_steps() -> set[str]:
    """The state database's schema steps this version knows."""
    return known_steps(migrations)
