"""The state database: the undo journal and folder settings live apart from the cache.

Deleting or damaging the cache never loses a run's undo; a damaged cache is moved aside and
built anew with one line; a damaged state database stops the command with one line and is left
exactly as it was; an older clipcull's journal and settings come over from its cache once."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clip_cull.culling.journal import Journal
from clip_cull.core.errors import StateError
from clip_cull.store.state import APPLICATION_ID, StateStore
from clip_cull.store.state_import import import_legacy
from clip_cull.store.cache import EmbeddingRecord, FileRecord, Store
from helpers import fails_after, run, Shot


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield



def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def lines(text: str, *words: str) -> list[str]:
    """The lines of text (rich may wrap long ones: joined first) that hold every word."""
    joined = " ".join(text.split())
    return [part for part in joined.split("clipcull: ") if all(w in part for w in words)]


def remove_cache(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# --- the file itself ----------------------------------------------------------------------------


def test_the_journal_has_exactly_the_columns_the_cache_journal_has(tmp_path):
    Store.open(tmp_path / "c.db").close()
    StateStore.open(tmp_path / "s.db").close()
    cache, state = sqlite3.connect(tmp_path / "c.db"), sqlite3.connect(tmp_path / "s.db")
    info = "select name, type, pk from pragma_table_info(?)"
    for table in ("runs", "settings"):
        assert state.execute(info, [table]).fetchall() == cache.execute(info, [table]).fetchall()
    # the cache journal's steps, then what the state database's step m002 added (ownership, sets, byte patches)
    assert state.execute(info, ["steps"]).fetchall() == cache.execute(info, ["steps"]).fetchall() + [
        ("owned", "TEXT", 0), ("set_id", "INTEGER", 0), ("patch", "TEXT", 0)]
    assert state.execute("pragma application_id").fetchone()[0] == APPLICATION_ID != cache.execute(
        "pragma application_id").fetchone()[0]
    assert state.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert {r[0] for r in state.execute("select distinct migration_set from _sqlite_migrations")} == {"clipcull-state"}


def test_schema_steps_are_all_known_and_use_no_private_sqlite_utils_attribute():
    import ast
    import inspect
    import re

    from clip_cull.store import database
    from clip_cull.store import state

    for module in (state, database):
        tree = ast.parse(inspect.getsource(module))
        assert not [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
                    and isinstance(n.value, ast.Name) and n.value.id == "migrations"]
    assert state._known_steps() == {name for name in vars(state) if re.match(r"m\d{3}_", name)}


def test_a_newer_or_foreign_state_database_is_refused_untouched(tmp_path):
    newer = tmp_path / "newer.db"
    StateStore.open(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) values ('clipcull-state', 'm999', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer clipcull"):
        StateStore.open(newer)
    cache = tmp_path / "clipcull.db"
    Store.open(cache).close()
    before = cache.read_bytes()
    with pytest.raises(StateError, match="it is clipcull's cache"):
        StateStore.open(cache)
    assert cache.read_bytes() == before


# --- the journal survives the cache -------------------------------------------------------------


def test_deleting_the_cache_between_tag_move_and_undo_keeps_undo(tiny_env, photo_folder, private_cache,
                                                                 private_state):
    before = tree(photo_folder)
    assert run("tag", photo_folder).exit_code == 0
    assert run("move", photo_folder, "--worst", "50%").exit_code == 0
    assert (photo_folder / "_rejects").is_dir() and private_state.is_file()
    remove_cache(private_cache)

    history = run("history")
    assert history.exit_code == 0 and "move" in history.stdout and "tag" in history.stdout
    undo_move = run("undo")
    assert undo_move.exit_code == 0, undo_move.stderr
    assert "undid move run 2" in undo_move.stderr
    assert run("undo").exit_code == 0  # the tag run: sidecars go, as clipcull had created them
    assert tree(photo_folder) == before
    assert private_cache.is_file()  # undo made a new, empty cache; the journal never was in it


def test_state_option_and_environment_are_honoured(tiny_env, photo_folder, tmp_path, monkeypatch):
    mine = tmp_path / "elsewhere" / "mine.db"
    result = run("tag", photo_folder, "--state", mine)
    assert result.exit_code == 0 and "tag run 1" in result.stderr
    assert mine.is_file() and os.path.exists(f"{mine}.journal-lock")  # the journal's lock sits beside it
    assert "tag" not in run("history").stdout  # the default (conftest's CLIPCULL_STATE) holds nothing
    assert "tag" in run("history", "--state", mine).stdout
    monkeypatch.setenv("CLIPCULL_STATE", str(mine))
    assert "tag" in run("history").stdout
    undone = run("undo")
    assert undone.exit_code == 0 and "undid tag run 1" in undone.stderr
    assert not list(photo_folder.rglob("*.xmp"))


# --- a damaged cache is one line and built anew -------------------------------------------------


def fill(db: Path, photos: int = 300) -> None:
    """A few hundred photos' embeddings of ViT-B-32's sizes: a cache of many pages."""
    rng = np.random.default_rng(0)
    store = Store.open(db)
    store.save([FileRecord(f"/elsewhere/IMG_{i:04d}.jpg", 1000 + i, i, fingerprint=f"{i:064x}") for i in range(photos)],
               [EmbeddingRecord(f"{i:064x}", rng.standard_normal(512), rng.standard_normal(768)) for i in range(photos)],
               "ViT-B-32/openai")
    store.close()


def damage(db: Path, how: str) -> bytes:
    """Damage the cache as disks and sync tools do; its bytes after."""
    assert not os.path.exists(f"{db}-wal") or os.path.getsize(f"{db}-wal") == 0
    if how == "not a database":
        db.write_bytes(os.urandom(64 * 1024))
    else:  # a few KB in the middle overwritten: SQLite's header intact, a page damaged
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(size // 2 // 4096 * 4096 + 1000)
            f.write(os.urandom(8 * 1024))
    return db.read_bytes()


@pytest.mark.parametrize("how, command", [("not a database", "rank"), ("damaged page", "rank"),
                                          ("damaged page", "move"), ("not a database", "tag")])
def test_a_damaged_cache_is_one_line_moved_aside_and_the_command_goes_on(tiny_env, photo_folder, private_cache,
                                                                        private_state, how, command):
    assert run("rank", photo_folder).exit_code == 0
    fill(private_cache)
    damaged = damage(private_cache, how)
    args = {"rank": [], "move": ["--worst", "25%"], "tag": []}[command]
    result = run(command, photo_folder, *args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    said = lines(result.stderr, "was damaged")
    assert len(said) == 1, result.stderr
    aside = [p for p in private_cache.parent.iterdir() if p.name.startswith("clipcull.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # moved, never deleted or changed
    assert said[0].startswith(f"the cache {private_cache} was damaged (")
    assert f"moved aside to {aside[0]} and rebuilt" in said[0] and str(private_state) in said[0]
    assert "0 cached" in result.stderr and "8 embedded" in result.stderr  # computed again, in a new cache
    if command != "rank":  # the run is journaled in the state database, and undone from there
        assert run("undo").exit_code == 0


def test_the_cache_failing_mid_command_is_one_line(tiny_env, photo_folder, monkeypatch):
    def malformed(self, paths):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Store, "file_records", malformed)
    result = run("rank", photo_folder)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert " ".join(result.stderr.split()).count("clipcull: error:") == 1
    assert lines(result.stderr, "error: the cache", "is damaged (database disk image is malformed)",
                 "moves it aside and builds a new one")


def test_a_sqlite_error_escaping_any_command_is_one_line(monkeypatch, capsys):
    import sys

    from clip_cull.cli import main

    def malformed(self, limit=50):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Journal, "runs", malformed)
    monkeypatch.setattr(sys, "argv", ["clipcull", "history"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in err
    assert " ".join(err.split()).startswith("clipcull: error: a clipcull database failed mid-command "
                                            "(database disk image is malformed).")


# --- a damaged state database is one line, and nothing changes ----------------------------------


def damage_state(path: Path, how: str) -> None:
    if how == "not a database":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        with open(path, "r+b") as f:
            f.seek(2 * 4096)  # the third page: a table's root, past SQLite's header
            f.write(os.urandom(4096))


@pytest.mark.parametrize("how", ["not a database", "damaged page"])
def test_a_damaged_state_database_stops_with_one_line_and_changes_nothing(tiny_env, photo_folder, private_state, how):
    assert run("tag", photo_folder).exit_code == 0
    damage_state(private_state, how)
    state_bytes, photos = private_state.read_bytes(), tree(photo_folder)
    for command in (["undo"], ["move", photo_folder, "--worst", "50%"], ["tag", photo_folder, "--overwrite"],
                    ["history"]):
        result = run(*command)
        assert result.exit_code == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        said = " ".join(result.stderr.split())
        assert said.count("clipcull: ") == 1, said
        assert said.startswith(f"clipcull: error: the state database {private_state} is damaged (")
        assert "Nothing was changed." in said and f"sqlite3 {private_state} .recover" in said
    assert tree(photo_folder) == photos  # no half-undo, no move, no sidecar written
    assert private_state.read_bytes() == state_bytes  # never moved aside or rebuilt: it is the history
    assert [p.name for p in private_state.parent.iterdir() if "damaged" in p.name] == []


def test_a_state_database_recovered_with_sqlite3_is_taken_back(private_state, tmp_path):
    """What the damaged-state line advises works: .recover's output opens as a state database."""
    import shutil
    import subprocess

    if shutil.which("sqlite3") is None:
        pytest.skip("needs the sqlite3 command")
    state = StateStore.open(private_state)
    Journal(state).plan("tag", {"folders": ["/photos"]}, [])
    state.close()
    recovered = tmp_path / "recovered.db"
    dump = subprocess.run(["sqlite3", str(private_state), ".recover"], capture_output=True, timeout=60)
    if dump.returncode != 0:  # SQLite 3.40's .recover fails on WAL files; the line names .dump for that
        dump = subprocess.run(["sqlite3", str(private_state), ".dump"], capture_output=True, check=True, timeout=60)
    subprocess.run(["sqlite3", str(recovered)], input=dump.stdout, capture_output=True, check=True, timeout=60)
    state = StateStore.open(recovered)
    assert [r.kind for r in Journal(state).runs()] == ["tag"]
    state.close()


# --- an older clipcull's journal and settings come over once -----------------------------------


def legacy_cache(db: Path, folder: Path) -> int:
    """A cache as clipcull kept it before the state database: a move run journaled in it (through
    today's Journal on the cache, whose runs and steps tables are the old ones) and a setting."""
    from clip_cull.culling.move import apply_moves, plan_moves
    from clip_cull.scoring.settings import LAST_RANK

    store = Store.open(db)
    new_columns = ("owned", "set_id", "patch")  # today's Journal writes them; an older cache had none
    for column in new_columns:
        store.db.execute(f"alter table steps add column {column}")
    steps = plan_moves([Shot(str(folder / "IMG_0000.jpg")), Shot(str(folder / "IMG_0001.jpg"))], [str(folder)], None)
    run_id = apply_moves(store, Journal(store), steps, {"command": "move", "folders": [str(folder)]})
    for column in new_columns:
        store.db.execute(f"alter table steps drop column {column}")
    with store.writing():
        store.db.execute("insert into settings (key, value) values (?, ?)",
                         [LAST_RANK, json.dumps({"roots": [str(folder)], "head": "fixed"})])
    store.close()
    return run_id


def test_an_older_clipcull_journal_comes_over_once_and_undo_works(photo_folder, private_cache, private_state):
    before = tree(photo_folder)
    run_id = legacy_cache(private_cache, photo_folder)
    assert (photo_folder / "_rejects" / "IMG_0000.jpg").exists()

    history = run("history")
    assert history.exit_code == 0 and "move" in history.stdout and str(photo_folder) in history.stdout.replace("\n", "")
    assert lines(history.stderr, "brought the undo history (1 run) and 1 setting", str(private_cache))
    again = run("history")
    assert "brought" not in again.stderr  # once

    undone = run("undo")
    assert undone.exit_code == 0 and f"undid move run {run_id}: 2 photos (2 files) put back" in " ".join(undone.stderr.split())
    assert tree(photo_folder) == before
    state = StateStore.open(private_state)
    assert state.get_setting("last_rank")["head"] == "fixed"
    assert state.db.execute("select source, runs, steps, settings from legacy_imports").fetchall() == [
        (str(private_cache), 1, 2, 1)]
    state.close()
    conn = sqlite3.connect(private_cache)  # the cache's old tables are left as they were
    assert conn.execute("select state from runs").fetchall() == [("done",)]
    conn.close()


def test_a_cache_opened_later_never_brings_old_runs_over_newer_ones(photo_folder, tmp_path):
    old = tmp_path / "old" / "clipcull.db"
    legacy_cache(old, photo_folder)
    state = StateStore.open(tmp_path / "state.db")
    Journal(state).plan("tag", {}, [])  # the state database is in use
    assert import_legacy(state, old) is None
    assert [r.kind for r in Journal(state).runs()] == ["tag"]
    state.close()

    fresh = StateStore.open(tmp_path / "fresh.db")
    assert import_legacy(fresh, old).runs == 1
    other = tmp_path / "other" / "clipcull.db"
    legacy_cache(other, photo_folder / "day2")
    assert import_legacy(fresh, other) is None  # imported once: never again, from any cache
    assert len(Journal(fresh).runs()) == 1
    fresh.close()


def test_a_foreign_file_given_as_the_cache_is_refused_before_any_import(tmp_path):
    catalog = tmp_path / "Lightroom Catalog.lrcat"
    conn = sqlite3.connect(catalog)
    conn.execute("create table runs (id integer primary key, kind text)")
    conn.commit()
    conn.close()
    result = run("history", "--db", catalog)
    assert result.exit_code == 1 and "is not a clipcull cache" in result.stderr


def test_journal_columns_are_matched_by_name_on_import(photo_folder, tmp_path):
    """A cache whose steps have a column this state database does not know (a later clipcull's)
    still comes over; what both know is copied."""
    cache = tmp_path / "cache" / "clipcull.db"
    legacy_cache(cache, photo_folder)
    conn = sqlite3.connect(cache)
    with conn:
        conn.execute("alter table steps add column later_column text")
        conn.execute("update steps set later_column = 'rating'")
    conn.close()
    state = StateStore.open(tmp_path / "state.db")
    assert import_legacy(state, cache).steps == 2
    steps = Journal(state).steps(1)
    assert [s.state for s in steps] == ["done", "done"] and all(s.dst_id is not None for s in steps)
    state.close()


# --- two processes opening a new state database at once ---------------------------------------


def _open_and_close(path: str, go, answers) -> None:
    go.wait()
    try:
        StateStore.open(Path(path)).close()
        answers.put("ok")
    except StateError as e:
        answers.put(str(e))


def test_a_state_database_another_process_is_writing_is_not_taken_for_another_applications(tmp_path, monkeypatch):
    """The check that a file is clipcull's reads it without locks; while another clipcull process
    creates or checkpoints it, that read can fail. It looks again rather than refusing the file
    (`rank --shard` processes started together failed with "is not a clipcull state database")."""
    from clip_cull.store import database

    path = tmp_path / "state.db"
    StateStore.open(path).close()
    real = database.tables_untouched
    reads, torn = [], [None, None]  # two reads caught the writer half-way

    def torn_twice(p):
        reads.append(p)
        return torn.pop() if torn else real(p)

    monkeypatch.setattr(database, "tables_untouched", torn_twice)
    conn = sqlite3.connect(path)  # as from before the application id: only the tables say whose it is
    conn.execute("PRAGMA application_id = 0")
    conn.close()
    database.check_ours(path, database._KINDS[APPLICATION_ID])
    assert len(reads) == 3
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("create table photos (x)")
    conn.close()
    reads.clear()
    with pytest.raises(StateError, match="is not a clipcull state database"):
        database.check_ours(foreign, database._KINDS[APPLICATION_ID])
    assert len(reads) == 1  # another application's file is refused at once


@pytest.mark.slow
def test_processes_opening_a_new_state_database_together_all_succeed(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(15):
        go, answers = context.Event(), context.Queue()
        workers = [context.Process(target=_open_and_close, args=(str(tmp_path / f"state-{attempt}.db"), go, answers))
                   for _ in range(3)]
        for w in workers:
            w.start()
        go.set()
        for w in workers:
            w.join(60)
        assert [answers.get(timeout=10) for _ in workers] == ["ok"] * 3
