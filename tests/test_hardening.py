"""Nothing lost, nothing crashes: SIGKILL in the middle of indexing and of moves, files that
change while read, a full disk, a read-only cache location, hostile names, and a property test
of the cache against a model of what it should hold."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from helpers import make_photo, run


def tree_hashes(root: Path) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file())


def small_photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"IMG_{i:04d}.png")
    return folder


def embeddings_count(db: Path) -> int:
    try:
        conn = sqlite3.connect(db, timeout=5)
        return conn.execute("select count(*) from embeddings").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_while_indexing_loses_only_the_batch_in_flight(tiny_env, tmp_path, private_cache):
    folder = small_photos(tmp_path / "many", 300)
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "rank", str(folder), "--json", "--batch-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while embeddings_count(private_cache) < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = embeddings_count(private_cache)
    assert 0 < committed < 300, "the kill should land in the middle of indexing"
    again = run("rank", folder, "--json")
    assert again.exit_code == 0, again.stderr
    assert f"300 photos: {300 - committed} embedded, {committed} cached" in again.stderr  # nothing committed is redone
    conn = sqlite3.connect(private_cache)
    assert conn.execute("select count(*) from embeddings").fetchone()[0] == 300  # exactly one each
    assert conn.execute("select count(*) from files where error is null").fetchone()[0] == 300


KILL_AFTER = """
import os, signal, sys
import clip_cull.culling.move as move
import clip_cull.culling.writer as writer
real_transfer, real_write = move.transfer, writer.write_atomic
calls = {{"n": 0}}
def die_at(n):
    calls["n"] += 1
    if calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
def transfer(*a, **k):
    real_transfer(*a, **k)
    die_at({n})  # the file has moved; the journal has not heard yet
def write(*a, **k):
    real_write(*a, **k)
    die_at({n})
move.transfer, writer.write_atomic = transfer, write
from clip_cull.cli import app
app(sys.argv[1:])
"""


@pytest.mark.parametrize("command", [["move", "--keep-top", "2"], ["tag"]])
def test_sigkill_in_the_middle_of_move_or_tag_then_undo(tiny_env, photo_folder, private_cache, command):
    (photo_folder / "IMG_0003.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf="
                                              "'http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description "
                                              "rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/' xmp:Rating='2'/>"
                                              "</rdf:RDF></x:xmpmeta>")
    run("rank", photo_folder)  # embed first, so the killed process gets to the file work quickly
    before = tree_hashes(photo_folder)
    files_before = sorted(str(p.relative_to(photo_folder)) for p in photo_folder.rglob("*") if p.is_file())
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER.format(n=3), command[0], str(photo_folder), *command[1:],
                           "--overwrite"] if command == ["tag"] else
                          [sys.executable, "-c", KILL_AFTER.format(n=3), command[0], str(photo_folder), *command[1:]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    if command[0] == "move":
        assert tree_hashes(photo_folder) == before  # moved, not lost or doubled
    history = run("history").stdout
    assert "running" in history  # the journal says it did not finish (state "running": killed)
    assert run("undo").exit_code == 0
    assert tree_hashes(photo_folder) == before
    assert sorted(str(p.relative_to(photo_folder)) for p in photo_folder.rglob("*") if p.is_file()) == files_before


def test_killed_move_is_finished_by_a_rerun(tiny_env, photo_folder):
    run("rank", photo_folder)
    before = tree_hashes(photo_folder)
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER.format(n=2), "move", str(photo_folder), "--worst", "50%"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    again = run("move", photo_folder, "--worst", "50%")  # the same command again
    assert again.exit_code == 0, again.stderr
    assert "finished move run 1, which had been interrupted" in again.stderr
    assert "nothing else was moved; run the command again" in " ".join(again.stderr.split())
    assert tree_hashes(photo_folder) == before
    # the worst half of the 8, as asked: not that and then the worst half of the 4 left
    assert len(list((photo_folder / "_rejects").rglob("*.jpg"))) == 4


def test_a_photo_changing_while_read_is_reported_not_cached(tiny_env, photo_folder, monkeypatch):
    import clip_cull.core.files as files

    target = str(photo_folder / "IMG_0002.jpg")
    real_stat = os.stat

    def stat_sees_a_change(path, *a, **k):
        st = real_stat(path, *a, **k)
        if str(path) == target:
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                                   st.st_size + 1, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
        return st

    monkeypatch.setattr(files.os, "stat", stat_sees_a_change)
    result = run("rank", photo_folder)
    monkeypatch.setattr(files.os, "stat", real_stat)
    assert f"skipped {target}: cannot read file: file changed while it was being read" in result.stderr
    assert "unchanged since an earlier run" not in run("rank", photo_folder).stderr  # retried, not remembered


def test_a_full_disk_is_one_clear_line(tiny_env, photo_folder, monkeypatch, private_cache):
    from clip_cull.store.cache import Store

    private_cache.unlink()  # a new cache: the prompts' embeddings need pages of their own too

    real_open = Store.open.__func__

    def open_on_a_full_disk(cls, path):
        store = real_open(cls, path)
        pages = store.db.conn.execute("pragma page_count").fetchone()[0]
        store.db.conn.execute(f"pragma max_page_count = {pages + 1}")  # SQLite's own SQLITE_FULL from here on
        return store

    monkeypatch.setattr(Store, "open", classmethod(open_on_a_full_disk))
    result = run("rank", photo_folder)
    assert result.exit_code == 1
    assert "clipcull: error: cannot write the cache" in result.stderr and "free some space" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_cache_location_is_one_clear_line(tiny_env, photo_folder):
    result = run("rank", photo_folder, "--db", "/proc/clipcull-test/cache.db")
    assert result.exit_code == 1
    assert result.stderr.startswith("clipcull: error: cannot create the cache folder /proc/clipcull-test")
    result = run("rank", photo_folder, "--db", "/proc/clipcull.db")
    assert result.exit_code == 1 and "Use a writable place with --db" in result.stderr


HOSTILE = "we\"ird, <name> & 'quotes'\n.jpg"


def test_hostile_names_survive_csv_xmp_and_print0(tiny_env, tmp_path):
    import csv
    import io

    folder = tmp_path / "hostile"
    make_photo(folder / HOSTILE, seed=3)
    make_photo(folder / "plain.jpg", seed=4)
    rows = list(csv.DictReader(io.StringIO(run("rank", folder, "--csv").stdout)))
    assert sorted(r["path"] for r in rows) == sorted([str(folder / HOSTILE), str(folder / "plain.jpg")])
    printed = run("best", folder, "--print0").stdout.split("\0")
    assert sorted(printed[:-1]) == sorted([str(folder / HOSTILE), str(folder / "plain.jpg")]) and printed[-1] == ""
    assert run("tag", folder, "--label", '<Red & "Blue">').exit_code == 0
    from clip_cull.culling.xmp import read_fields, sidecar_path

    text = sidecar_path(folder / HOSTILE).read_text()
    fields = read_fields(text)
    assert fields.rating in range(1, 6) and "<Red" not in text


@pytest.mark.slow
def test_ten_thousand_tiny_files(tiny_env, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    data = (make_photo(tmp_path / "one.png", seed=1, size=(8, 8), fmt="PNG")).read_bytes()
    for i in range(10_000):
        (folder / f"{i:05d}.png").write_bytes(data)
    (folder / "broken.png").write_bytes(data[:20])
    result = run("rank", folder, "--json")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 10_000
    assert "10001 photos: 1 embedded, 0 cached, 9999 recognised after a rename or copy, 1 unreadable" in result.stderr
    assert [json.loads(l)["path"] for l in result.stderr.splitlines() if l.startswith("{")] == [str(folder / "broken.png")]


# --- a property test of the cache ------------------------------------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["add", "modify", "rename", "delete", "rerun"]), st.integers(0, 5), st.integers(0, 50)),
    min_size=1, max_size=10,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_cache_matches_a_model_of_what_it_should_hold(tiny_model_files, tmp_path_factory, ops):
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.core.files import walk_photos
    from clip_cull.scoring.indexer import IndexOptions, index_photos
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store

    root = tmp_path_factory.mktemp("prop")
    folder = root / "photos"
    folder.mkdir()
    store = Store.open(root / "cache.db")
    config, checkpoint = tiny_model_files
    embedded_contents: set[str] = set()  # the model: every content ever embedded

    def rerun():
        session = ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu")
        report = index_photos(store, walk_photos([folder]).photos, session, IndexOptions(batch_size=2))
        store.forget_missing(str(folder), [p.path for p in walk_photos([folder]).photos])
        on_disk = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        new_contents = set(on_disk.values()) - embedded_contents
        assert report.embedded == len(new_contents)
        embedded_contents.update(on_disk.values())
        rows = dict(store.db.execute("select path, fingerprint from files").fetchall())
        assert rows == on_disk  # every file, with its current content, and nothing else
        have = store.fingerprints_with_embedding(session.model_id)
        assert set(on_disk.values()) <= have

    for op, slot, seed in ops:
        path = folder / f"p{slot}.png"
        existing = sorted(folder.iterdir())
        if op == "add" and not path.exists():
            make_photo(path, seed=seed, size=(16, 16), fmt="PNG")
        elif op == "modify" and existing:
            target = existing[slot % len(existing)]
            make_photo(target, seed=seed + 1000, size=(16, 16), fmt="PNG")
            os.utime(target, ns=(time.time_ns(), time.time_ns() + seed))
        elif op == "rename" and existing and not path.exists():
            existing[slot % len(existing)].rename(path)
        elif op == "delete" and existing:
            existing[slot % len(existing)].unlink()
        else:
            rerun()
    rerun()
    store.close()


def test_an_unreadable_file_is_reported_and_retried_once_readable(tiny_env, photo_folder, monkeypatch):
    locked = str(photo_folder / "IMG_0004.jpg")
    real_open = os.open

    def guarded_open(path, *a, **k):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)  # as for a chmod 000 file (tests run as root)
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", guarded_open)
    first = run("rank", photo_folder, "--strict")
    assert first.exit_code == 3
    assert f"clipcull: skipped {locked}: cannot read file: Permission denied" in first.stderr
    monkeypatch.setattr(os, "open", real_open)
    second = run("rank", photo_folder)
    assert "skipped" not in second.stderr and "8 photos: 1 embedded, 7 cached" in second.stderr


def test_a_corpus_of_broken_and_odd_files(tiny_env, tmp_path):
    """Every kind of bad input in one folder: the run finishes, each failure is one line, the
    rest is ranked, and `best --print0` stays parseable."""
    folder = tmp_path / "odd"
    folder.mkdir()
    good = make_photo(folder / "good one.jpg", seed=1)
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "random.webp").write_bytes(np.random.default_rng(0).bytes(3000))
    Image.new("CMYK", (40, 30), (10, 200, 30, 5)).save(folder / "cmyk.tif")
    Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16)).save(folder / "gray16.png")
    pal = Image.new("P", (40, 30), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(folder / "palette.png", transparency=0)
    frames = [Image.new("RGB", (40, 30), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "multi.tif", save_all=True, append_images=frames[1:])
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 40001 * 4)) + chunk(b"IEND", b"")
    (folder / "bomb.png").write_bytes(bomb)
    os.symlink(folder, folder / "loop")
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    make_photo(folder / "new\nline.jpg", seed=2)
    with open(os.path.join(os.fsencode(folder), b"latin-\xe9.jpg"), "wb") as f:
        f.write(data)
    result = run("rank", folder, "--json")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    ranked = sorted(Path(json.loads(l)["path"]).name for l in result.stdout.splitlines())
    assert ranked == sorted(["good one.jpg", "cmyk.tif", "gray16.png", "palette.png", "animated.gif",
                             "animated.webp", "multi.tif", "new\nline.jpg"])
    failures = {Path(f["path"]).name: f["error"] for f in map(json.loads, (l for l in result.stderr.splitlines() if l.startswith("{")))}
    assert set(failures) == {"truncated.jpg", "zero.jpg", "random.webp", "bomb.png", "dangling.jpg", "latin-\udce9.jpg"}
    assert "megapixels" in failures["bomb.png"] and "truncated" in failures["truncated.jpg"]
    printed = run("best", folder, "--print0", "--top", "100").stdout.split("\0")
    assert sorted(Path(p).name for p in printed[:-1]) == ranked and printed[-1] == ""


def test_a_photo_disappearing_mid_run_is_reported_and_forgotten(tiny_model_files, photo_folder, private_cache):
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.core.files import walk_photos
    from clip_cull.scoring.indexer import IndexOptions, index_photos
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store

    photos = walk_photos([photo_folder]).photos
    gone = photo_folder / "IMG_0005.jpg"
    gone.unlink()  # between the walk and the read
    store = Store.open(private_cache)
    config, checkpoint = tiny_model_files
    report = index_photos(store, photos, ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu"), IndexOptions())
    assert [(f.path, f.reason, f.remembered) for f in report.failures] == [
        (str(gone), "file disappeared while indexing", False)]
    assert report.embedded == 7 and str(gone) not in store.file_records([str(gone)])
    store.close()


def test_an_unforeseen_decoder_error_is_one_line(tiny_env, photo_folder, monkeypatch):
    import clip_cull.scoring.prepare as worker

    real = worker.decode_photo
    odd = (photo_folder / "IMG_0001.jpg").read_bytes()

    def explode(data, **kwargs):
        if data == odd:
            raise ValueError("conversion from LAB to RGB not supported")
        return real(data, **kwargs)

    monkeypatch.setattr(worker, "decode_photo", explode)
    result = run("rank", photo_folder, "--json")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    failures = [json.loads(l) for l in result.stderr.splitlines() if l.startswith("{")]
    assert failures == [{"path": str(photo_folder / "IMG_0001.jpg"), "remembered": False,
                         "error": "cannot decode: ValueError: conversion from LAB to RGB not supported"}]
    assert len(result.stdout.splitlines()) == 7
