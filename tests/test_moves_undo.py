"""Moves and undo never lose or duplicate a photo: identity checks (lstat) before anything is
unlinked, the journal's state machine, shared sidecars planned once, --to validated, leftover
partial files, undo out of order, read-only sidecars, other sidecar conventions, long names.

Photos are compared by sha256 of every regular file in the tree (computed here with hashlib);
sidecars are written and read back with exiftool."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from clip_cull.culling import fileops
from clip_cull.culling import move as move_module
from clip_cull.culling.fileops import PARTIAL_SUFFIX, write_atomic
from clip_cull.culling.journal import (CONFLICT, DONE, FAILED, PLANNED, RUNNING, UNDONE, Journal, JournalError,
                                       Step)
from clip_cull.culling.move import MoveStopped, apply_moves, check_destination, plan_moves, resume_unfinished
from clip_cull.culling.undo import undo_run
from clip_cull.core.errors import CacheError, InputError
from clip_cull.core.files import content_fingerprint
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store
from helpers import exiftool, fails_after, faults, make_photo, real_fs, run, sha, Shot, usage_error, xmp_of

EXIFTOOL = shutil.which("exiftool")


@pytest.fixture(autouse=True)
def time_limit():
    """No test here may hang: each gets 240 s, then fails."""
    with fails_after(240):
        yield


def tree(root: Path) -> dict[str, str]:
    """Every regular file (by lstat: links are not followed) and every symlink's target."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link->" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = sha(p)
    return out


def contents(*roots: Path) -> Counter:
    """The multiset of sha256s of the regular files under the roots."""
    return Counter(sha(p) for r in roots if r.exists() for p in r.rglob("*") if not p.is_symlink() and p.is_file())


def exiftool_sidecar(path: Path, **tags) -> Path:
    """A sidecar written by exiftool itself (not by clipcull)."""
    args = [f"-XMP-{k.replace('_', ':')}={v}" for k, v in tags.items()]
    exiftool("-q", "-o", path, *args)
    return path


def state_of(db: Path) -> Path:
    """The state database that goes with a cache here: the CLI's for conftest's cache, else one
    beside the cache (the state machine's)."""
    return Path(os.environ["CLIPCULL_STATE"]) if str(db) == os.environ.get("CLIPCULL_DB") else db.with_name("state.db")


def journal_at(db: Path) -> tuple[Store, Journal]:
    """The cache and a journal in its state database; closing the store closes both."""
    store, state = Store.open(db), StateStore.open(state_of(db))
    close_cache = store.close
    store.close = lambda: (close_cache(), state.close())
    return store, Journal(state)


def move_files(db: Path, root: Path, photos: list[Path], to: Path | None = None, copy=False, notes=None):
    store, journal = journal_at(db)
    try:
        steps = plan_moves([Shot(str(p)) for p in photos], [str(root)], str(to) if to else None, copy, notes)
        return apply_moves(store, journal, steps, {"command": "move"}), steps
    finally:
        store.close()


def undo(db: Path, run_id: int):
    store, journal = journal_at(db)
    try:
        return undo_run(store, journal, run_id)
    finally:
        store.close()


def states(db: Path, run_id: int) -> tuple[str, list[str]]:
    conn = sqlite3.connect(state_of(db))
    try:
        run_state = conn.execute("select state from runs where id = ?", [run_id]).fetchone()[0]
        return run_state, [r[0] for r in conn.execute("select state from steps where run_id = ? order by seq", [run_id])]
    finally:
        conn.close()


def run_count(db: Path) -> int:
    if not state_of(db).exists():
        return 0
    conn = sqlite3.connect(state_of(db))
    try:
        return conn.execute("select count(*) from runs").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def shoot(tmp_path) -> Path:
    folder = tmp_path / "shoot"
    for i in range(4):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    return folder


# --- 1. undo never deletes the only copy --------------------------------------------------------


def test_symlink_at_the_old_place_is_a_conflict_and_the_photo_survives(shoot, private_cache):
    photo = shoot / "IMG_0001.jpg"
    data = photo.read_bytes()
    run_id, steps = move_files(private_cache, shoot, [photo])
    moved = shoot / "_rejects" / "IMG_0001.jpg"
    assert moved.read_bytes() == data and not photo.exists()
    os.symlink("_rejects/IMG_0001.jpg", photo)  # the user's link at the old place

    report = undo(private_cache, run_id)
    assert report.restored == 0 and len(report.conflicts) == 1
    assert "IMG_0001.jpg is taken by a symbolic link" in report.conflicts[0]
    assert moved.read_bytes() == data and os.readlink(photo) == "_rejects/IMG_0001.jpg"
    assert states(private_cache, run_id) == (CONFLICT, [CONFLICT])

    photo.unlink()  # the cause removed: undo of the same run now finishes
    report = undo(private_cache, run_id)
    assert report.restored == 1 and not report.conflicts and photo.read_bytes() == data
    assert states(private_cache, run_id) == (UNDONE, [UNDONE])


def test_cli_symlink_after_move_then_undo_keeps_photo(tiny_env, shoot, private_cache):
    before = contents(shoot)
    assert run("move", shoot, "--worst", "25%").exit_code == 0
    [moved] = list((shoot / "_rejects").iterdir())
    link = shoot / moved.name
    os.symlink(f"_rejects/{moved.name}", link)
    result = run("undo")
    assert result.exit_code == 1
    assert f"not undone: {link} is taken by a symbolic link; {moved} stays where it is" in " ".join(result.stderr.split())
    assert moved.is_file() and link.is_symlink() and contents(shoot) == before


def test_copy_original_replaced_by_link_to_the_backup_keeps_the_backup(tiny_env, shoot, tmp_path, private_cache):
    backup = tmp_path / "backup"
    before = contents(shoot)
    result = run("move", shoot, "--worst", "50%", "--copy", "--to", backup)
    assert result.exit_code == 0, result.stderr
    copies = sorted(backup.iterdir())
    assert len(copies) == 2
    original = shoot / copies[0].name
    original.unlink()
    os.symlink(copies[0], original)  # the original replaced by a link to its backup copy
    result = run("undo")
    assert result.exit_code == 1
    assert f"{copies[0]} is kept: its original {original} is now a symbolic link" in " ".join(result.stderr.split())
    assert copies[0].is_file() and sha(copies[0]) in before
    assert not copies[1].exists()  # the other copy had its original: it went
    assert contents(shoot, backup) == before  # the linked original's bytes live on in the backup


def test_moved_photo_replaced_by_a_link_is_a_conflict_an_edited_one_goes_back(shoot, private_cache):
    photo = shoot / "IMG_0002.jpg"
    run_id, _ = move_files(private_cache, shoot, [photo])
    moved = shoot / "_rejects" / "IMG_0002.jpg"
    data = moved.read_bytes()
    moved.unlink()
    os.symlink("/etc/hostname", moved)  # not what clipcull put there
    report = undo(private_cache, run_id)
    assert report.conflicts == [f"{moved} is now a symbolic link; left as it is"]
    assert not photo.exists() and moved.is_symlink()
    moved.unlink()
    moved.write_bytes(data + b"edited")  # another file than clipcull left (edited there, say): a regular
    os.utime(moved, ns=(1, 1))  # file, and its old place is free, so it goes back as it is now
    report = undo(private_cache, run_id)
    assert report.conflicts == [] and photo.read_bytes() == data + b"edited" and not moved.exists()
    assert report.notes == [f"{photo}: back from {moved}, as it is now (changed there since the move)"]


def test_remove_if_duplicate_refuses_links_and_the_same_entry(tmp_path):
    a = make_photo(tmp_path / "a.jpg", 1)
    os.symlink(a, tmp_path / "link.jpg")
    assert not fileops.remove_if_duplicate(tmp_path / "link.jpg", a)  # a link is never "another copy"
    assert not fileops.remove_if_duplicate(a, tmp_path / "link.jpg")
    os.symlink(tmp_path, tmp_path / "same")
    assert not fileops.remove_if_duplicate(a, tmp_path / "same" / "a.jpg")  # one entry, two spellings
    b = tmp_path / "b.jpg"
    b.write_bytes(a.read_bytes() + b"x")
    assert not fileops.remove_if_duplicate(b, a)  # different bytes
    c = tmp_path / "c.jpg"
    shutil.copyfile(a, c)
    assert fileops.remove_if_duplicate(c, a) and a.exists() and not c.exists()


# --- 2. the journal's state machine ---------------------------------------------------------------


def test_journal_transitions_allowed_and_refused(tmp_path, private_cache):
    store, journal = journal_at(private_cache)
    target = tmp_path / "x"
    steps = [Step("move", str(target), str(tmp_path / f"y{i}")) for i in range(4)]
    run_id = journal.plan("move", {}, steps)
    assert journal.run(run_id).state == PLANNED
    assert [s.state for s in journal.steps(run_id)] == [PLANNED] * 4
    journal.set_state(run_id, RUNNING)
    journal.mark(run_id, 0, DONE)
    journal.mark(run_id, 1, FAILED, "disk full")
    journal.mark(run_id, 0, CONFLICT, "a link")
    journal.mark(run_id, 0, UNDONE)
    journal.mark(run_id, 1, UNDONE)
    journal.mark(run_id, 2, UNDONE)  # planned, nothing to reverse
    journal.mark(run_id, 3, DONE)
    assert [(s.state, s.note) for s in journal.steps(run_id)] == [
        (UNDONE, None), (UNDONE, None), (UNDONE, None), (DONE, None)]
    for seq, state in ((0, DONE), (0, PLANNED), (0, CONFLICT), (3, PLANNED), (3, FAILED)):
        with pytest.raises(JournalError):
            journal.mark(run_id, seq, state)
    journal.set_state(run_id, DONE)
    for state in (PLANNED, RUNNING, FAILED):
        with pytest.raises(JournalError):
            journal.set_state(run_id, state)
    journal.set_state(run_id, CONFLICT)
    journal.set_state(run_id, UNDONE)
    for state in (PLANNED, RUNNING, DONE, FAILED, CONFLICT):
        with pytest.raises(JournalError):
            journal.set_state(run_id, state)
    # the other ways in: planned -> conflict, failed -> conflict -> undone; a failed run is undone
    other = journal.plan("move", {}, [Step("move", str(target), str(tmp_path / "z0")),
                                      Step("move", str(target), str(tmp_path / "z1"))])
    journal.mark(other, 0, CONFLICT, "left alone")
    journal.mark(other, 1, FAILED, "disk full")
    journal.mark(other, 1, CONFLICT, "left alone")
    journal.mark(other, 1, UNDONE)
    journal.set_state(other, FAILED)
    journal.set_state(other, UNDONE)
    with pytest.raises(JournalError):
        journal.mark(other, 9, DONE)  # no such step
    store.close()


def test_undo_of_a_run_killed_before_its_first_step(shoot, private_cache):
    store, journal = journal_at(private_cache)
    steps = plan_moves([Shot(str(shoot / "IMG_0000.jpg"))], [str(shoot)], None)
    run_id = journal.plan("move", {}, steps)  # killed right after planning
    store.close()
    before = tree(shoot)
    report = undo(private_cache, run_id)
    assert report.restored == 0 and not report.conflicts and tree(shoot) == before
    assert states(private_cache, run_id) == (UNDONE, [UNDONE])
    store, journal = journal_at(private_cache)
    assert resume_unfinished(store, journal) is None and journal.last_undoable() is None
    store.close()


def test_only_interrupted_runs_are_resumed_and_undone_steps_stay_undone(shoot, private_cache):
    store, journal = journal_at(private_cache)
    photos = [shoot / "IMG_0000.jpg", shoot / "IMG_0001.jpg", shoot / "IMG_0002.jpg"]
    steps = plan_moves([Shot(str(p)) for p in photos], [str(shoot)], None)
    calls = []

    def killed_at_third(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_fs().link(src, dst)

    with faults(link=killed_at_third), pytest.raises(KeyboardInterrupt):
        apply_moves(store, journal, steps, {})
    run_id = journal.runs(1)[0].id
    assert states(private_cache, run_id) == (RUNNING, [DONE, DONE, PLANNED])
    assert journal.unfinished("move").id == run_id  # killed: resumable
    store.close()

    # The user puts a link where one moved photo was; undo reverses the other, leaves that one
    os.symlink("_rejects/IMG_0000.jpg", photos[0])
    report = undo(private_cache, run_id)
    assert len(report.conflicts) == 1 and report.restored == 1
    assert states(private_cache, run_id) == (CONFLICT, [CONFLICT, UNDONE, UNDONE])
    store, journal = journal_at(private_cache)
    assert journal.unfinished("move") is None
    assert resume_unfinished(store, journal) is None  # a conflict run is never "finished"
    store.close()
    assert photos[1].is_file() and photos[2].is_file()  # undone stays undone

    # and on the command line: a later move says nothing about an interrupted run
    photos[0].unlink()
    result = run("history")
    assert "conflict" in result.stdout


def test_cli_move_after_undo_with_conflict_does_not_move_back(tiny_env, shoot, private_cache):
    assert run("move", shoot, "--worst", "50%").exit_code == 0
    moved = sorted((shoot / "_rejects").iterdir())
    os.symlink(f"_rejects/{moved[0].name}", shoot / moved[0].name)
    assert run("undo").exit_code == 1
    back = shoot / moved[1].name
    assert back.is_file()
    result = run("move", shoot, "--below", "-1000")  # selects nothing
    assert "interrupted" not in result.stderr and "nothing to move; nothing journaled" in result.stderr
    assert back.is_file() and moved[0].is_file()


def test_failed_run_is_not_resumed_and_the_message_does_not_promise_it(shoot, private_cache):
    def disk_full_on_second(src, dst):
        if str(src).endswith("IMG_0001.jpg"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fs().link(src, dst)

    with faults(link=disk_full_on_second), pytest.raises(MoveStopped) as stopped:
        move_files(private_cache, shoot, [shoot / "IMG_0000.jpg", shoot / "IMG_0001.jpg"])
    assert stopped.value.done == 1 and "No space left on device" in stopped.value.reason
    assert states(private_cache, stopped.value.run_id) == (FAILED, [DONE, FAILED])
    store, journal = journal_at(private_cache)
    assert resume_unfinished(store, journal) is None
    store.close()


# --- 3. two photos with one stem share one sidecar --------------------------------------------------


@pytest.fixture
def one_stem(tmp_path) -> Path:
    folder = tmp_path / "stem"
    make_photo(folder / "IMG_0002.jpg", 1)
    make_photo(folder / "IMG_0002.tif", 2, fmt="TIFF")
    make_photo(folder / "IMG_0002.png", 3, fmt="PNG")
    make_photo(folder / "IMG_0003.jpg", 4)
    exiftool_sidecar(folder / "IMG_0002.xmp", dc_Creator="Ana", xmp_Label="Red")
    return folder


def test_shared_sidecar_moves_once_with_all_its_photos(one_stem, private_cache):
    before = tree(one_stem)
    photos = [one_stem / n for n in ("IMG_0002.tif", "IMG_0002.jpg", "IMG_0002.png")]
    run_id, steps = move_files(private_cache, one_stem, photos)
    assert [(Path(s.src).name, Path(s.dst).relative_to(one_stem).as_posix()) for s in steps] == [
        ("IMG_0002.tif", "_rejects/IMG_0002.tif"), ("IMG_0002.xmp", "_rejects/IMG_0002.xmp"),
        ("IMG_0002.jpg", "_rejects/IMG_0002.jpg"), ("IMG_0002.png", "_rejects/IMG_0002.png")]
    assert sorted(tree(one_stem / "_rejects").values()) == sorted(v for k, v in before.items() if "0002" in k)
    assert xmp_of(one_stem / "_rejects" / "IMG_0002.xmp")["Creator"] == "Ana"
    assert not undo(private_cache, run_id).conflicts
    assert tree(one_stem) == before


def test_shared_sidecar_stays_when_one_of_its_photos_stays(one_stem, private_cache):
    notes = []
    run_id, steps = move_files(private_cache, one_stem, [one_stem / "IMG_0002.jpg"], notes=notes)
    assert [Path(s.src).name for s in steps] == ["IMG_0002.jpg"]
    assert notes == [f"{one_stem / 'IMG_0002.xmp'}: shared with {one_stem / 'IMG_0002.png'}, which stays; the sidecar stays too"]
    assert (one_stem / "IMG_0002.xmp").is_file() and (one_stem / "_rejects" / "IMG_0002.jpg").is_file()


def test_entries_named_like_sidecars_but_not_files_stay_with_a_line(tmp_path, private_cache):
    """A FIFO or a folder with a sidecar's name is never opened nor moved, and the user is told."""
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    photo = shoot / "IMG_0001.jpg"
    photo.write_bytes(b"jpeg bytes")
    os.mkfifo(shoot / "IMG_0001.xmp")
    (shoot / "IMG_0001.jpg.xmp").mkdir()
    notes = []
    run_id, steps = move_files(private_cache, shoot, [photo], notes=notes)
    assert [Path(s.src).name for s in steps] == ["IMG_0001.jpg"]
    assert sorted(notes) == sorted(f"{shoot / name}: named like a sidecar but not a file; left where it is"
                                   for name in ("IMG_0001.xmp", "IMG_0001.jpg.xmp"))
    assert stat.S_ISFIFO(os.lstat(shoot / "IMG_0001.xmp").st_mode) and (shoot / "IMG_0001.jpg.xmp").is_dir()
    assert (shoot / "_rejects" / "IMG_0001.jpg").read_bytes() == b"jpeg bytes"


def test_cli_move_worst_100_percent_with_one_stem(tiny_env, one_stem, private_cache):
    before = tree(one_stem)
    result = run("move", one_stem, "--worst", "100%")
    assert result.exit_code == 0, result.stderr
    assert "move run 1: 4 photos (5 files)" in result.stderr
    assert sorted(tree(one_stem).values()) == sorted(before.values())
    assert sorted(tree(one_stem / "_rejects")) == sorted(before)
    assert run("undo").exit_code == 0 and tree(one_stem) == before
    assert run("move", one_stem, "--worst", "100%").exit_code == 0  # nothing blocks the next move
    assert sorted(tree(one_stem / "_rejects")) == sorted(before)


# --- 4. --to validated before anything is journaled ------------------------------------------------


def test_destination_checks(shoot, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="it exists and is not a folder"):
        check_destination(str(tmp_path / "a-file"), [str(shoot)])
    with pytest.raises(InputError, match="it is the folder being culled"):
        check_destination(str(shoot), [str(shoot)])
    with pytest.raises(InputError, match="it is inside the folder being culled"):
        check_destination(str(shoot / "keep" / "deeper"), [str(shoot)])
    with pytest.raises(InputError, match="inside the folder being culled"):
        check_destination(str(shoot / "sub"), [str(shoot / "IMG_0001.jpg")])  # a photo given: its folder
    os.symlink(shoot, tmp_path / "alias")
    with pytest.raises(InputError, match="the folder being culled"):
        check_destination(str(tmp_path / "alias"), [str(shoot)])
    check_destination(str(shoot / "_rejects" / "day1"), [str(shoot)])
    check_destination(str(tmp_path / "elsewhere"), [str(shoot)])


@pytest.mark.parametrize("where", ["file", "self", "inside"])
def test_cli_bad_destination_is_exit_2_and_journals_nothing(tiny_env, shoot, tmp_path, private_cache, where):
    (tmp_path / "a-file").write_text("x")
    to = {"file": tmp_path / "a-file", "self": shoot, "inside": shoot / "sub"}[where]
    before = tree(shoot)
    result = run("move", shoot, "--worst", "50%", "--to", to)
    problem = {"file": "it exists and is not a folder", "self": "it is the folder being culled",
               "inside": "it is inside the folder being culled"}[where]
    usage_error(result, "Invalid value: --to", problem)
    assert "Traceback" not in result.stderr
    assert tree(shoot) == before and run_count(private_cache) == 0


# --- 5. leftover .clipcull-partial files ---------------------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path):
    """A 64 KiB tmpfs at folder (we are root in CI), unmounted after the block; else a full disk
    simulated on copies into folder (ENOSPC after half the bytes, as a real file system would)."""
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True,
                       capture_output=True, timeout=30)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError):
        pass
    else:
        try:
            yield
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
        return
    used = [0]

    def other_device(a, b):
        if str(b).startswith(str(folder)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_fs().link(a, b)

    def filling(fin, fout):
        data = fin.read()
        if used[0] + len(data) > 64 * 1024 and fout.name.startswith(str(folder)):
            fout.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        used[0] += len(data)
        fout.write(data)

    with faults(link=other_device, copy=filling):
        yield


def test_enospc_on_the_destination(tiny_env, tmp_path, private_cache):
    shoot = tmp_path / "big"
    for i in range(4):
        make_photo(shoot / f"IMG_{i:04d}.jpg", seed=i, size=(240, 170), quality=100)
    assert all(24 * 1024 < p.stat().st_size < 48 * 1024 for p in shoot.iterdir())  # one or two fit in 64 KiB
    small = tmp_path / "small"
    with small_disk(small):
        before = contents(shoot)
        result = run("move", shoot, "--worst", "100%", "--to", small)
        assert result.exit_code == 1
        err = " ".join(result.stderr.split())
        assert "No space left on device" in err and "run again" not in err and "finishes it" not in err
        assert "journaled as failed (not resumed): `clipcull undo 1` puts them back" in err
        assert not list(small.rglob(f"*{PARTIAL_SUFFIX}"))  # no half copy stays
        assert contents(shoot, small) == before and 0 < len(list(small.iterdir())) < 4
        assert run_count(private_cache) == 1
        again = run("move", shoot, "--below", "-1000")
        assert "interrupted" not in again.stderr  # a failed run is not "finished" later
        assert run("undo", "1").exit_code == 0
        assert contents(shoot) == before and not list(small.iterdir())


def test_partials_killed_runs_left_are_swept_by_the_next_run_and_by_undo(shoot, private_cache):
    store, journal = journal_at(private_cache)
    steps = plan_moves([Shot(str(shoot / "IMG_0000.jpg")), Shot(str(shoot / "IMG_0001.jpg"))], [str(shoot)], None)

    def killed_mid_copy(src, dst):
        if str(src).endswith("IMG_0001.jpg"):
            Path(str(dst) + PARTIAL_SUFFIX).write_bytes(b"half a photo")  # SIGKILL while copying
            raise KeyboardInterrupt
        real_fs().link(src, dst)

    with faults(link=killed_mid_copy), pytest.raises(KeyboardInterrupt):
        apply_moves(store, journal, steps, {})
    partial = Path(steps[1].dst + PARTIAL_SUFFIX)
    assert partial.exists()
    stranger = shoot / "_rejects" / "notes.txt.clipcull-partial"  # not next to a planned destination
    stranger.write_text("someone's")
    assert resume_unfinished(store, journal) is not None  # the next move
    assert not partial.exists() and stranger.exists()
    store.close()

    # a tag killed while writing (SIGKILL: no chance to clean): undo removes the temporary file
    store, journal = journal_at(private_cache)
    side = shoot / "IMG_0002.xmp"
    tag_run = journal.plan("tag", {}, [Step("sidecar", str(shoot / "IMG_0002.jpg"), str(side), None, "0" * 64)])
    journal.set_state(tag_run, RUNNING)
    store.close()
    Path(str(side) + PARTIAL_SUFFIX).write_text("<x:xmpmeta")
    report = undo(private_cache, tag_run)
    assert report.cleaned == [str(side) + PARTIAL_SUFFIX] and not Path(str(side) + PARTIAL_SUFFIX).exists()
    assert states(private_cache, tag_run) == (UNDONE, [UNDONE])


def test_interrupted_writes_and_copies_leave_no_partial(tmp_path):
    side = tmp_path / "IMG.xmp"
    side.write_text("old")

    def interrupted(fd):
        raise KeyboardInterrupt  # Ctrl-C while the temporary file is written

    with faults(fsync=interrupted):
        with pytest.raises(KeyboardInterrupt):
            write_atomic(side, b"new")
        with pytest.raises(KeyboardInterrupt):
            fileops._copy_verified(side, tmp_path / "copy.xmp")
    assert side.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["IMG.xmp"]


# --- 6. undo out of order ------------------------------------------------------------------------------


@pytest.mark.skipif(EXIFTOOL is None, reason="needs exiftool")
def test_undo_of_a_tag_run_after_a_move_restores_sidecars_where_they_are(tiny_env, shoot, private_cache):
    exiftool_sidecar(shoot / "IMG_0000.xmp", dc_Creator="Ana")  # the photographer's own sidecar
    before = tree(shoot)
    assert run("tag", shoot).exit_code == 0  # run 1
    assert run("move", shoot, "--worst", "100%").exit_code == 0  # run 2: photos and sidecars
    moved_side = shoot / "_rejects" / "IMG_0000.xmp"
    assert xmp_of(moved_side).get("Rating") is not None
    result = run("undo", "1")
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert f"{shoot / 'IMG_0000.xmp'}: restored at {moved_side}, where move run 2 took it" in err
    assert sha(moved_side) == before["IMG_0000.xmp"]  # the photographer's bytes, in its new place
    assert "Rating" not in xmp_of(moved_side) and xmp_of(moved_side)["Creator"] == "Ana"
    assert sorted(p.name for p in (shoot / "_rejects").iterdir()) == sorted([f"IMG_000{i}.jpg" for i in range(4)] + ["IMG_0000.xmp"])
    result = run("undo", "2")
    assert result.exit_code == 0, result.stderr
    assert tree(shoot) == before


# --- 7. nothing to move is not journaled; undo of an undone run -----------------------------------


def test_empty_move_is_not_journaled_and_undo_twice_says_so(tiny_env, shoot, private_cache):
    assert run("move", shoot, "--worst", "50%").exit_code == 0
    result = run("move", shoot, "--below", "-1000")
    assert result.exit_code == 0 and "nothing to move; nothing journaled" in result.stderr
    assert run_count(private_cache) == 1
    before_undo = sorted((shoot / "_rejects").iterdir())
    result = run("undo")  # the last real run: the move
    assert result.exit_code == 0 and "undid move run 1: 2 photos (2 files) put back." in result.stderr
    assert all((shoot / p.name).is_file() for p in before_undo)
    result = run("undo", "1")
    assert result.exit_code == 0
    assert result.stderr.strip() == "clipcull: move run 1 was already undone; nothing to do."
    assert run("undo").exit_code == 1  # nothing left to undo
    store, journal = journal_at(private_cache)
    assert apply_moves(store, journal, [], {}) is None
    store.close()


# --- 8. modes kept, bytes and mode restored, sidecars replaced by links or folders --------------


def sidecar_run(db: Path, photo: Path, side: Path, new: bytes) -> int:
    """What `tag` does, through the journal: plan the write, write atomically, mark it done."""
    store, journal = journal_at(db)
    before = side.read_bytes() if side.exists() else None
    run_id = journal.plan("tag", {}, [Step("sidecar", str(photo), str(side), before, content_fingerprint(new))])
    journal.set_state(run_id, RUNNING)
    write_atomic(side, new)
    journal.mark(run_id, 0, DONE)
    journal.set_state(run_id, DONE)
    store.close()
    return run_id


@pytest.mark.skipif(EXIFTOOL is None, reason="needs exiftool")
def test_read_only_sidecar_stays_read_only_and_undo_restores_bytes_and_mode(shoot, private_cache):
    side = exiftool_sidecar(shoot / "IMG_0001.xmp", dc_Creator="Ana")
    old = side.read_bytes()
    side.chmod(0o444)
    new = old.replace(b"Ana", b"Bob")
    run_id = sidecar_run(private_cache, shoot / "IMG_0001.jpg", side, new)
    assert side.read_bytes() == new and stat.S_IMODE(side.stat().st_mode) == 0o444
    side.chmod(0o640)  # the mode changes, the bytes are clipcull's: undo puts back both
    assert not undo(private_cache, run_id).conflicts
    assert side.read_bytes() == old and stat.S_IMODE(side.stat().st_mode) == 0o444
    assert xmp_of(side)["Creator"] == "Ana"


@pytest.mark.parametrize("replacement", ["symlink", "folder"])
def test_sidecar_replaced_by_a_link_or_folder_is_a_conflict(shoot, tmp_path, private_cache, replacement):
    side = shoot / "IMG_0001.xmp"
    side.write_bytes(b"before")
    run_id = sidecar_run(private_cache, shoot / "IMG_0001.jpg", side, b"after")
    elsewhere = tmp_path / "real.xmp"
    elsewhere.write_bytes(b"after")
    side.unlink()
    if replacement == "symlink":
        os.symlink(elsewhere, side)
    else:
        side.mkdir()
    report = undo(private_cache, run_id)
    kind = "a symbolic link" if replacement == "symlink" else "a folder"
    assert report.conflicts == [f"{side} is now {kind}; left as it is"]
    assert elsewhere.read_bytes() == b"after"


# --- 9. sidecars by other conventions -----------------------------------------------------------


def test_other_sidecar_conventions_move_and_are_renamed_by_suffix(shoot, tmp_path, private_cache, monkeypatch):
    photo = shoot / "IMG_0001.jpg"
    upper = shoot / "IMG_0001.XMP"
    duplicate = shoot / "IMG_0001_01.jpg.xmp"
    dt = shoot / "IMG_0001.jpg.xmp"
    for p in (upper, duplicate, dt):
        p.write_text(p.name)
    monkeypatch.setattr(move_module, "existing_sidecars",
                        lambda p: [upper, duplicate, dt] if Path(p) == photo else [])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "IMG_0001.jpg").write_text("taken")  # the name is taken: the set becomes IMG_0001-1
    run_id, steps = move_files(private_cache, shoot, [photo], to=dest)
    assert {Path(s.src).name: Path(s.dst).name for s in steps} == {
        "IMG_0001.jpg": "IMG_0001-1.jpg", "IMG_0001.XMP": "IMG_0001-1.XMP",
        "IMG_0001_01.jpg.xmp": "IMG_0001-1_01.jpg.xmp", "IMG_0001.jpg.xmp": "IMG_0001-1.jpg.xmp"}
    assert (dest / "IMG_0001-1_01.jpg.xmp").read_text() == "IMG_0001_01.jpg.xmp"
    assert (dest / "IMG_0001-1.XMP").read_text() == "IMG_0001.XMP"
    undo(private_cache, run_id)
    assert upper.read_text() == "IMG_0001.XMP" and duplicate.exists() and dt.exists() and photo.exists()
    # not renamed: every name is kept exactly
    steps = plan_moves([Shot(str(photo))], [str(shoot)], None)
    assert sorted(Path(s.dst).name for s in steps) == ["IMG_0001.XMP", "IMG_0001.jpg", "IMG_0001.jpg.xmp",
                                                       "IMG_0001_01.jpg.xmp"]


# --- 10. long names, locked cache ----------------------------------------------------------------


def test_a_name_too_long_is_one_line_and_the_others_move(tmp_path, private_cache):
    folder = tmp_path / "long"
    long_photo = make_photo(folder / ("a" * 251 + ".jpg"), 1)  # 255 bytes: the sidecar's name cannot exist
    other = make_photo(folder / "IMG_0001.jpg", 2)
    (folder / "_rejects").mkdir()
    (folder / "_rejects" / long_photo.name).write_text("taken")  # the renamed name (-1) would be 257 bytes
    notes = []
    run_id, steps = move_files(private_cache, folder, [long_photo, other], notes=notes)
    assert len(notes) == 1 and notes[0].startswith(str(long_photo)) and "File name too long" in notes[0]
    assert [Path(s.src).name for s in steps] == ["IMG_0001.jpg"] and long_photo.exists()


def test_cli_a_locked_cache_during_move_is_one_line_and_the_next_move_finishes(tiny_env, shoot, private_cache,
                                                                              monkeypatch):
    real = move_module._follow_in_cache
    calls = []

    def locked(store, src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise CacheError(f"the cache {private_cache} is locked by another clipcull")
        real(store, src, dst)

    monkeypatch.setattr(move_module, "_follow_in_cache", locked)
    before = contents(shoot)
    result = run("move", shoot, "--worst", "75%")
    assert result.exit_code == 1
    assert "is locked by another clipcull" in result.stderr and "Traceback" not in result.stderr
    assert "next `clipcull move` finishes it" in " ".join(result.stderr.split())
    monkeypatch.setattr(move_module, "_follow_in_cache", real)
    result = run("move", shoot, "--below", "-1000")
    assert "finished move run 1, which had been interrupted" in " ".join(result.stderr.split())
    assert len(list((shoot / "_rejects").iterdir())) == 3 and contents(shoot) == before
    assert run("undo", "1").exit_code == 0 and contents(shoot) == before
    assert not (shoot / "_rejects").exists()


# --- 11. any sequence of move, tag, undo and user actions --------------------------------------

from hypothesis import HealthCheck, settings, strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test  # noqa: E402


class Killed(BaseException):
    """The process dies here (as SIGKILL would: nothing after it runs)."""


class MovesUndoMachine(RuleBasedStateMachine):
    """Library calls (the CLI's move = resume, then plan and apply) on a few small files, with a
    shared-stem pair and a photographer's sidecar. Invariant: every photo's bytes stay present as
    a regular file somewhere (root or backup). When no user action interfered, undoing every run
    restores the original tree exactly."""

    def __init__(self):
        super().__init__()
        import tempfile

        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory: fsync costs nothing
        self.tmp = Path(tempfile.mkdtemp(prefix="clipcull-machine-", dir=shm))
        self.root, self.backup, self.db = self.tmp / "shoot", self.tmp / "backup", self.tmp / "cache.db"
        self.root.mkdir()
        for i, name in enumerate(["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0002.tif", "IMG_0003.jpg", "IMG_0004.png"]):
            (self.root / name).write_bytes(hashlib.sha256(str(i).encode()).digest() * (20 + i))
        (self.root / "IMG_0002.xmp").write_bytes(b"<photographer's sidecar of IMG_0002/>")
        (self.root / "IMG_0004.png.xmp").write_bytes(b"<darktable sidecar/>")
        self.photos = Counter(sha(p) for p in self.root.iterdir() if p.suffix in (".jpg", ".tif", ".png"))
        self.original = tree(self.root)
        self.interfered = False
        self.edits = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # helpers

    def _root_photos(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir()
                      if p.suffix in (".jpg", ".tif", ".png") and not p.is_symlink() and p.is_file())

    def _pick(self, picks: list[int]) -> list[Path]:
        photos = self._root_photos()
        return sorted({photos[i % len(photos)] for i in picks}) if photos else []

    def _runs(self) -> list[tuple[int, str]]:
        if not state_of(self.db).exists():
            return []
        conn = sqlite3.connect(state_of(self.db))
        try:
            return conn.execute("select id, state from runs order by id").fetchall()
        finally:
            conn.close()

    # rules

    @initialize(picks=st.lists(st.integers(0, 9), min_size=1, max_size=3), copy=st.booleans())
    def first_move(self, picks, copy):
        self.move(picks, copy, False, None, False)

    @rule(picks=st.lists(st.integers(0, 9), min_size=1, max_size=3), copy=st.booleans(), to_backup=st.booleans(),
          kill_at=st.one_of(st.none(), st.integers(1, 3)), after=st.booleans())
    def move(self, picks, copy, to_backup, kill_at, after):
        store, journal = journal_at(self.db)
        real, calls = move_module.transfer, []

        def dying(src, dst, copy=False):
            calls.append(src)
            if kill_at is not None and len(calls) == kill_at and not after:
                raise Killed
            real(src, dst, copy)
            if kill_at is not None and len(calls) == kill_at and after:
                raise Killed  # moved, not yet marked done

        move_module.transfer = dying
        try:
            resume_unfinished(store, journal, [])
            steps = plan_moves([Shot(str(p)) for p in self._pick(picks)], [str(self.root)],
                               str(self.backup) if to_backup else None, copy, [])
            apply_moves(store, journal, steps, {"command": "move"}, notes=[])
        except Killed:
            pass
        finally:
            move_module.transfer = real
            store.close()

    @rule(picks=st.lists(st.integers(0, 9), min_size=1, max_size=3), kill=st.booleans(), text=st.binary(max_size=8))
    def tag(self, picks, kill, text):
        sidecars = list(dict.fromkeys(p.with_suffix(".xmp") for p in self._pick(picks)))
        sidecars = [s for s in sidecars if not s.is_symlink() and not s.is_dir()]
        if not sidecars:
            return
        store, journal = journal_at(self.db)
        try:
            plan = []
            for s in sidecars:
                before = s.read_bytes() if s.exists() else None
                after = (before or b"") + b"<rating " + text + b"/>"
                plan.append((s, Step("sidecar", str(s.with_suffix(".jpg")), str(s), before, content_fingerprint(after)), after))
            run_id = journal.plan("tag", {}, [p[1] for p in plan])
            journal.set_state(run_id, RUNNING)
            for i, (s, step, after) in enumerate(plan):
                write_atomic(s, after)
                if kill and i == 0:
                    return  # killed after the write, before it was marked
                journal.mark(run_id, step.seq, DONE)
            journal.set_state(run_id, DONE)
        finally:
            store.close()

    @rule()
    def undo_last(self):
        store, journal = journal_at(self.db)
        try:
            target = journal.last_undoable()
            if target is not None:
                undo_run(store, journal, target.id)
        finally:
            store.close()

    @rule(which=st.integers(0, 20))
    def undo_one(self, which):
        runs = self._runs()
        if runs:
            undo(self.db, runs[which % len(runs)][0])

    @rule(pick=st.integers(0, 9))
    def user_renames(self, pick):
        photos = self._root_photos()
        if photos:
            p = photos[pick % len(photos)]
            p.rename(p.with_name("u_" + p.name))
            self.interfered = True

    @rule(pick=st.integers(0, 9), how=st.sampled_from(["link", "new file", "moved back by hand", "folder"]))
    def user_takes_old_place(self, pick, how):
        """Where a moved file was: a symlink to where it is now, another file, a folder, or the
        file itself put back by hand."""
        if not state_of(self.db).exists():
            return
        conn = sqlite3.connect(state_of(self.db))
        rows = conn.execute("select src, dst from steps where action = 'move' and state = 'done'").fetchall()
        conn.close()
        free = [(s, d) for s, d in rows if not os.path.lexists(s) and os.path.lexists(d)]
        if free:
            src, dst = free[pick % len(free)]
            if how == "link":
                os.symlink(dst, src)
            elif how == "new file":
                Path(src).write_bytes(b"the user's new file")
            elif how == "folder":
                os.mkdir(src)
            elif not os.path.islink(dst):
                os.rename(dst, src)
            self.interfered = True

    @rule(pick=st.integers(0, 9), photo=st.booleans())
    def user_edits(self, pick, photo):
        files = [p for p in self.root.rglob("*") if not p.is_symlink() and p.is_file()
                 and (p.suffix in (".jpg", ".tif", ".png")) == photo and not p.name.endswith(PARTIAL_SUFFIX)]
        if not files:
            return
        f = sorted(files)[pick % len(files)]
        old = sha(f)
        self.edits += 1
        with open(f, "ab") as out:
            out.write(b"edited %d" % self.edits)
        if photo and self.photos[old] > 0:
            self.photos[old] -= 1  # the photographer changed this photo: its new bytes must survive
            self.photos[sha(f)] += 1
        self.interfered = True

    @invariant()
    def no_photo_lost(self):
        present = contents(self.root, self.backup)
        missing = self.photos - present
        assert not missing, f"photo contents lost: {missing}"

    @invariant()
    def journal_states_are_known(self):
        for _, state in self._runs():
            assert state in (PLANNED, RUNNING, DONE, FAILED, UNDONE, CONFLICT)

    def check_undo_everything(self):
        for _ in range(50):
            store, journal = journal_at(self.db) if self.db.exists() else (None, None)
            if store is None:
                break
            try:
                target = journal.last_undoable()
                if target is None:
                    break
                report = undo_run(store, journal, target.id)
            finally:
                store.close()
            if report.conflicts:
                break
        if not self.interfered:
            assert tree(self.root) == self.original
            assert not [p for p in self.backup.rglob("*") if p.is_file() or p.is_symlink()]
        assert not (self.photos - contents(self.root, self.backup))


@pytest.mark.slow
def test_any_sequence_of_moves_tags_undos_and_user_actions_keeps_every_photo():
    class Machine(MovesUndoMachine):
        def teardown(self):
            try:
                self.check_undo_everything()
            finally:
                super().teardown()

    run_state_machine_as_test(Machine, settings=settings(max_examples=200, stateful_step_count=15, deadline=None,
                                                         suppress_health_check=list(HealthCheck), database=None))


def test_an_old_journal_is_migrated_to_explicit_states(private_cache):
    """A cache from before m004: "partial" meant either a killed forward run or an undo that met
    a conflict. The first is resumable ("running"); the second never is ("conflict"). Its journal
    comes over into the state database so (state_import.py)."""
    from clip_cull.store.state_import import import_legacy

    Store.open(private_cache).close()
    conn = sqlite3.connect(private_cache)
    with conn:
        conn.execute("delete from _sqlite_migrations where name = 'm004_journal_identity'")
        for column in ("src_id", "dst_id", "before_mode", "note"):
            conn.execute(f"alter table steps drop column {column}")
        conn.executemany("insert into runs (id, kind, created_at, command, state) values (?, 'move', '', '{}', 'partial')",
                         [(1,), (2,)])
        conn.executemany("insert into steps (run_id, seq, action, src, dst, state) values (?, ?, 'move', 'a', 'b', ?)",
                         [(1, 0, "done"), (1, 1, "planned"), (2, 0, "undone"), (2, 1, "done")])
    conn.close()
    state = StateStore.open(state_of(private_cache))
    assert import_legacy(state, private_cache).runs == 2  # read as it is: the cache is not migrated first
    journal = Journal(state)
    assert [(r.id, r.state) for r in journal.runs()] == [(2, CONFLICT), (1, RUNNING)]
    assert journal.unfinished("move").id == 1
    assert [s.src_id for s in journal.steps(1)] == [None, None]
    state.close()


def test_undo_of_a_tag_run_also_restores_the_copies_a_later_copy_run_made(shoot, tmp_path, private_cache):
    photo, side = shoot / "IMG_0001.jpg", shoot / "IMG_0001.xmp"
    side.write_bytes(b"photographer's")
    tag_run = sidecar_run(private_cache, photo, side, b"clipcull's")
    backup = tmp_path / "backup"
    copy_run, _ = move_files(private_cache, shoot, [photo], to=backup, copy=True)
    report = undo(private_cache, tag_run)
    assert side.read_bytes() == b"photographer's" and (backup / "IMG_0001.xmp").read_bytes() == b"photographer's"
    assert report.notes == [f"{backup / 'IMG_0001.xmp'}: the copy run {copy_run} made of it is restored too"]
    assert not undo(private_cache, copy_run).conflicts
    assert not list(backup.iterdir()) and side.read_bytes() == b"photographer's" and photo.exists()


def test_a_copy_changed_since_keeps_its_bytes_and_is_named(shoot, tmp_path, private_cache):
    photo, side = shoot / "IMG_0001.jpg", shoot / "IMG_0001.xmp"
    tag_run = sidecar_run(private_cache, photo, side, b"clipcull's")  # created by clipcull
    backup = tmp_path / "backup"
    copy_run, _ = move_files(private_cache, shoot, [photo], to=backup, copy=True)
    (backup / "IMG_0001.xmp").write_bytes(b"edited in the backup")
    report = undo(private_cache, tag_run)
    assert not side.exists() and (backup / "IMG_0001.xmp").read_bytes() == b"edited in the backup"
    assert report.notes == [f"{backup / 'IMG_0001.xmp'}: the copy run {copy_run} made of {side} changed since; left as it is"]
    report = undo(private_cache, copy_run)
    assert report.conflicts == [f"{backup / 'IMG_0001.xmp'} was replaced or changed since the copy (now another file); left as it is"]
    assert (backup / "IMG_0001.xmp").read_bytes() == b"edited in the backup"


def test_every_interrupted_run_is_finished_oldest_first(shoot, private_cache):
    def ctrl_c(src, dst):
        raise KeyboardInterrupt

    with faults(link=ctrl_c):
        for name in ("IMG_0000.jpg", "IMG_0001.jpg"):
            with pytest.raises(KeyboardInterrupt):
                move_files(private_cache, shoot, [shoot / name])
    store, journal = journal_at(private_cache)
    finished = []
    assert resume_unfinished(store, journal, [], finished) == 2 and finished == [1, 2]
    store.close()
    assert sorted(p.name for p in (shoot / "_rejects").iterdir()) == ["IMG_0000.jpg", "IMG_0001.jpg"]
    assert states(private_cache, 1) == (DONE, [DONE]) and states(private_cache, 2) == (DONE, [DONE])


def test_undo_of_a_killed_tag_run_leaves_sidecars_it_never_wrote(shoot, private_cache):
    """Found by the state machine: a step planned but never written is not a conflict, even when
    the file changed since it was planned (an earlier run's undo restored it meanwhile)."""
    side = shoot / "IMG_0001.xmp"
    side.write_bytes(b"photographer's")
    first = sidecar_run(private_cache, shoot / "IMG_0001.jpg", side, b"first")
    store, journal = journal_at(private_cache)
    killed = journal.plan("tag", {}, [Step("sidecar", str(shoot / "IMG_0001.jpg"), str(side), b"first",
                                           content_fingerprint(b"second"))])
    journal.set_state(killed, RUNNING)  # killed before it wrote anything
    store.close()
    assert not undo(private_cache, first).conflicts and side.read_bytes() == b"photographer's"
    report = undo(private_cache, killed)
    assert not report.conflicts and report.restored == 0 and side.read_bytes() == b"photographer's"
    assert states(private_cache, killed) == (UNDONE, [UNDONE])


def test_undo_of_a_tag_run_beneath_a_later_one_hands_its_before_to_it(shoot, private_cache):
    side = shoot / "IMG_0001.xmp"
    side.write_bytes(b"photographer's")
    first = sidecar_run(private_cache, shoot / "IMG_0001.jpg", side, b"first")
    second = sidecar_run(private_cache, shoot / "IMG_0001.jpg", side, b"second")
    report = undo(private_cache, first)  # out of order: the second wrote on top of the first
    assert not report.conflicts and side.read_bytes() == b"second"
    assert report.notes == [f"{side}: left as run {second} wrote it; undoing run {second} now restores what was "
                            f"there before run {first}"]
    assert not undo(private_cache, second).conflicts and side.read_bytes() == b"photographer's"


def test_undo_beneath_killed_runs_that_wrote_without_marking(shoot, private_cache):
    """Found by the state machine: runs killed after writing (never marked done) on top of each
    other, one undone out of order; undoing the rest restores the photographer's bytes."""
    side = shoot / "IMG_0001.xmp"
    side.write_bytes(b"P")
    store, journal = journal_at(private_cache)
    runs = []
    for content in (b"P1", b"P12", b"P123"):
        before = side.read_bytes()
        run_id = journal.plan("tag", {}, [Step("sidecar", str(shoot / "IMG_0001.jpg"), str(side), before,
                                               content_fingerprint(content))])
        journal.set_state(run_id, RUNNING)
        write_atomic(side, content)  # killed before marking, except the last run
        runs.append(run_id)
    journal.mark(runs[-1], 0, DONE)
    journal.set_state(runs[-1], DONE)
    store.close()
    assert not undo(private_cache, runs[0]).conflicts and side.read_bytes() == b"P123"
    for run_id in reversed(runs[1:]):
        assert not undo(private_cache, run_id).conflicts
    assert side.read_bytes() == b"P"


def test_cli_a_name_too_long_in_move_is_one_line(tiny_env, tmp_path, private_cache):
    folder = tmp_path / "long"
    long_photo = make_photo(folder / ("b" * 251 + ".jpg"), 1)
    make_photo(folder / "IMG_0001.jpg", 2)
    result = run("move", folder, "--worst", "100%")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    err = "".join(result.stderr.split())  # rich wraps long lines
    assert (folder / "_rejects" / "IMG_0001.jpg").is_file()
    assert long_photo.exists() != (folder / "_rejects" / long_photo.name).exists()  # exactly one place
    if long_photo.exists():  # its sidecar names cannot exist: one line names it, and it stays
        assert err.count("Filenametoolong") == 1 and f"{long_photo.name}:Filenametoolong;notmoved" in err
