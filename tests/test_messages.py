"""Honest messages and exit codes for tag, move and undo (issue 18, point 6): names at the file
system's limit, a destination that cannot be written, a closed pipe or stdout, a second process
waiting for the journal, Ctrl-C in the middle of a run, and what undo says it did.

Files are checked on disk independently of clipcull (sha256, os.listdir, exiftool); commands
that meet a real pipe, a closed stdout or a signal run as real processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clip_cull.culling.fileops import PARTIAL_SUFFIX, partial_path, sweep_partials, write_atomic
from helpers import faults, fails_after, make_photo, real_fs, run

EXIFTOOL = shutil.which("exiftool")
NEEDS_EXIFTOOL = pytest.mark.skipif(EXIFTOOL is None, reason=".ci/run installs exiftool")

ASCII_255 = "a" * 251 + ".jpg"  # 255 bytes
UTF8_255 = "é" * 125 + "x.jpg"  # 125 x 2 + 5 = 255 bytes


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield



def files(root: Path) -> dict[str, str]:
    """Every regular file under root (os.walk, links not followed) by relative path: its sha256."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def journal(db: Path) -> list[tuple[int, str, list[str]]]:
    """(run, state, [step states]) for every run, read with sqlite3 itself."""
    conn = sqlite3.connect(db)
    try:
        runs = conn.execute("select id, state from runs order by id").fetchall()
        return [(r, state, [s for (s,) in conn.execute("select state from steps where run_id = ? order by seq", [r])])
                for r, state in runs]
    finally:
        conn.close()


def stderr_lines(result) -> list[str]:
    return result.stderr.splitlines()


def exif_rating(path: Path) -> int:
    out = subprocess.run([EXIFTOOL, "-j", "-XMP:Rating", str(path)], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)[0]["Rating"]


# --- names at the limit: 255 bytes ----------------------------------------------------------------
# The temporary name was the name + `.clipcull-partial` (17 bytes): a photo or sidecar named with
# 239-255 bytes could not be copied, tagged or restored by undo.


def test_temporary_names_fit_whatever_the_name_and_are_found_again(tmp_path):
    for name in (ASCII_255, UTF8_255, "IMG_0001.xmp"):
        dst = tmp_path / name
        tmp = partial_path(dst)
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(PARTIAL_SUFFIX)
        assert len(os.fsencode(tmp.name)) <= 255 and partial_path(str(dst)) == tmp  # derived from dst alone
        write_atomic(dst, b"data")
        assert dst.read_bytes() == b"data" and sorted(os.listdir(tmp_path)) == sorted(
            n for n in (ASCII_255, UTF8_255, "IMG_0001.xmp") if (tmp_path / n).exists())
    assert len({partial_path(tmp_path / n) for n in (ASCII_255, UTF8_255, "IMG_0001.xmp")}) == 3

    # what a killed write left, in today's name and in the old one, is swept; nothing else
    short = tmp_path / "IMG_0001.xmp"
    partial_path(tmp_path / ASCII_255).write_bytes(b"half")
    partial_path(short).write_bytes(b"half")
    Path(str(short) + PARTIAL_SUFFIX).write_bytes(b"half, old style")
    stranger = tmp_path / f"notes.txt{PARTIAL_SUFFIX}"
    stranger.write_bytes(b"not clipcull's")
    removed = sweep_partials([tmp_path / ASCII_255, short])
    assert sorted(removed) == sorted(map(str, [partial_path(tmp_path / ASCII_255), partial_path(short),
                                               Path(str(short) + PARTIAL_SUFFIX)]))
    assert sorted(os.listdir(tmp_path)) == sorted([ASCII_255, UTF8_255, "IMG_0001.xmp", stranger.name])


@pytest.fixture
def long_names(tmp_path) -> Path:
    """Three photos: named with 255 bytes of ASCII, 255 bytes of UTF-8, and a short name."""
    folder = tmp_path / "shoot"
    for seed, name in enumerate((ASCII_255, UTF8_255, "IMG_0002.jpg")):
        make_photo(folder / name, seed=seed)
    assert sorted(len(os.fsencode(n)) for n in os.listdir(folder)) == [12, 255, 255]
    return folder


@NEEDS_EXIFTOOL
def test_tag_and_undo_with_255_byte_names(tiny_env, long_names, private_cache, private_state):
    # the ASCII one has a sidecar already (255 bytes too): tag merges into it, undo writes it back
    side = long_names / (ASCII_255[:-4] + ".xmp")
    subprocess.run([EXIFTOOL, "-q", "-o", str(side), "-XMP-dc:Creator=Ann", str(long_names / ASCII_255)],
                   check=True, timeout=60)
    before = files(long_names)
    result = run("tag", long_names)
    assert result.exit_code == 0, result.stderr
    assert stderr_lines(result)[-1] == "clipcull: tag run 1: 3 files written. Undo: clipcull undo 1"
    sidecars = sorted(n for n in os.listdir(long_names) if n.endswith(".xmp"))
    assert sidecars == sorted([ASCII_255[:-4] + ".xmp", UTF8_255[:-4] + ".xmp", "IMG_0002.xmp"])
    assert all(1 <= exif_rating(long_names / n) <= 5 for n in sidecars)
    assert len(os.listdir(long_names)) == 6  # no temporary file left
    assert journal(private_state) == [(1, "done", ["done"] * 3)]

    result = run("undo")
    assert result.exit_code == 0, result.stderr
    assert stderr_lines(result) == ["clipcull: undid tag run 1: the XMP of 3 photos (3 files) restored."]
    assert files(long_names) == before


def test_move_copy_and_undo_with_255_byte_names(tiny_env, long_names, tmp_path, private_cache, private_state):
    before = files(long_names)
    backup = tmp_path / "backup"
    result = run("move", long_names, "--worst", "100%", "--copy", "--to", backup)
    assert result.exit_code == 0, result.stderr
    assert stderr_lines(result)[-1] == "clipcull: move run 1: 3 photos (3 files) copied. Undo: clipcull undo 1"
    assert files(backup) == before and files(long_names) == before  # every byte, no temporary file

    result = run("move", long_names, "--worst", "100%")
    assert result.exit_code == 0, result.stderr
    assert stderr_lines(result)[-1] == "clipcull: move run 2: 3 photos (3 files) moved. Undo: clipcull undo 2"
    assert files(long_names) == {f"_rejects/{name}": sha for name, sha in before.items()}

    assert stderr_lines(run("undo")) == ["clipcull: undid move run 2: 3 photos (3 files) put back."]
    assert stderr_lines(run("undo")) == ["clipcull: undid move run 1: the copies of 3 photos (3 files) removed."]
    assert files(long_names) == before and files(backup) == {}
    assert [state for _, state, _ in journal(private_state)] == ["undone", "undone"]


def test_a_sidecar_name_over_the_limit_is_one_line_and_the_others_are_written(tiny_env, long_names, private_cache, private_state):
    result = run("tag", long_names, "--sidecar", "darktable")  # IMG.jpg.xmp: the photo's 255 bytes + 4
    assert result.exit_code == 0, result.stderr
    for name in (ASCII_255, UTF8_255):
        assert (f"clipcull: {long_names / name}.xmp: left alone: a name of 259 bytes is more than the file system "
                f"allows; no sidecar can have it") in stderr_lines(result)
    assert stderr_lines(result)[-1] == "clipcull: tag run 1: 1 file written. Undo: clipcull undo 1"
    assert sorted(os.listdir(long_names)) == sorted([ASCII_255, UTF8_255, "IMG_0002.jpg", "IMG_0002.jpg.xmp"])
    assert journal(private_state) == [(1, "done", ["done"])]


# --- a destination that cannot be written ---------------------------------------------------------
# An unwritable _rejects was blamed on each photo in turn ("IMG_0002.jpg: Permission denied; not
# moved"), the summary said "move run 1: 3 photos", exit 0, and nothing had moved.


@pytest.fixture
def unwritable():
    """unwritable(folder) -> the error the file system gives: read-only by its mode or, for root
    (which ignores modes), by the immutable attribute (chattr +i). Undone after the test."""
    made = []

    def make(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        if not os.access(folder, os.W_OK):
            return os.strerror(13)  # Permission denied
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                            capture_output=True).returncode != 0:
            pytest.skip("running as root, and chattr +i is not available here")
        return os.strerror(1)  # Operation not permitted

    yield make
    for folder in made:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_an_unwritable_rejects_folder_is_named_once_and_nothing_is_claimed(tiny_env, photo_folder, private_cache, private_state,
                                                                          unwritable):
    rejects = photo_folder / "_rejects"
    why = unwritable(rejects)
    before = files(photo_folder)
    result = run("move", photo_folder, "--worst", "50%")
    assert result.exit_code == 1
    assert result.stdout == ""  # no "move A -> B" for a move that did not happen
    assert stderr_lines(result)[-1] == (f"clipcull: error: the move stopped: {rejects} cannot be written ({why}). "
                                        f"Nothing was moved; run 1 is journaled as failed (not resumed).")
    assert not any("IMG_" in line for line in stderr_lines(result))  # no photo is blamed
    assert files(photo_folder) == before and os.listdir(rejects) == []
    assert journal(private_state) == [(1, "failed", ["failed", "planned", "planned", "planned"])]

    undo = run("undo")
    assert undo.exit_code == 0 and stderr_lines(undo) == ["clipcull: undid move run 1: nothing was left to reverse."]
    assert files(photo_folder) == before


@pytest.mark.parametrize("copy", [False, True])
def test_a_read_only_to_folder_is_named_once(tiny_env, photo_folder, tmp_path, private_cache, private_state, unwritable, copy):
    backup = tmp_path / "backup"
    why = unwritable(backup)
    before = files(photo_folder)
    result = run("move", photo_folder, "--worst", "25%", "--to", backup, *(["--copy"] if copy else []))
    assert result.exit_code == 1 and result.stdout == ""
    verb, past = ("copy", "copied") if copy else ("move", "moved")
    assert stderr_lines(result)[-1] == (f"clipcull: error: the {verb} stopped: {backup} cannot be written ({why}). "
                                        f"Nothing was {past}; run 1 is journaled as failed (not resumed).")
    assert files(photo_folder) == before and os.listdir(backup) == []
    assert journal(private_state) == [(1, "failed", ["failed", "planned"])]


def test_a_photo_whose_own_folder_is_read_only_stays_and_the_exit_code_says_so(tiny_env, photo_folder,
                                                                              private_cache, private_state, unwritable):
    day2 = photo_folder / "day2"
    why = unwritable(day2)
    before = files(photo_folder)
    result = run("move", photo_folder, "--worst", "100%")
    assert result.exit_code == 1
    for name in ("IMG_0006.jpg", "IMG_0007.jpg"):
        assert f"clipcull: {day2 / name}: {why}; not moved, nor the files that go with it" in stderr_lines(result)
    assert stderr_lines(result)[-1] == ("clipcull: move run 1: 6 of 8 photos (6 of 8 files) moved; 2 photos stayed "
                                        "where they were (see above). Undo: clipcull undo 1")
    moved = sorted(f"IMG_{i:04d}.jpg" for i in range(6))
    assert sorted(line.split(" -> ")[1].rsplit("/", 1)[1] for line in result.stdout.splitlines()) == moved
    assert sorted(files(photo_folder / "_rejects")) == moved and sorted(os.listdir(day2)) == [
        "IMG_0006.jpg", "IMG_0007.jpg"]
    [(_, state, steps)] = journal(private_state)
    assert state == "failed" and sorted(steps) == ["done"] * 6 + ["failed"] * 2

    assert stderr_lines(run("undo")) == ["clipcull: undid move run 1: 6 photos (6 files) put back."]
    assert files(photo_folder) == before


def test_tag_says_which_files_it_could_not_write_and_exits_1(tiny_env, photo_folder, private_cache, private_state, unwritable):
    day2 = photo_folder / "day2"
    why = unwritable(day2)
    result = run("tag", photo_folder)
    assert result.exit_code == 1
    for name in ("IMG_0006.xmp", "IMG_0007.xmp"):
        assert f"clipcull: {day2 / name}: {why}; not written" in stderr_lines(result)
    assert stderr_lines(result)[-1] == ("clipcull: tag run 1: 6 of 8 files written; 2 could not be (see above). "
                                        "Undo: clipcull undo 1")
    written = sorted(f"IMG_{i:04d}.xmp" for i in range(6))
    assert sorted(line.rsplit("/", 1)[1] for line in result.stdout.splitlines()) == written
    assert sorted(n for n in os.listdir(photo_folder) if n.endswith(".xmp")) == written
    assert sorted(os.listdir(day2)) == ["IMG_0006.jpg", "IMG_0007.jpg"]
    [(_, state, steps)] = journal(private_state)
    assert state == "failed" and sorted(steps) == ["done"] * 6 + ["failed"] * 2


# --- real processes: a closed pipe, a closed stdout, a second process, Ctrl-C ----------------------


def clipcull_command() -> str:
    """The installed `clipcull` entry point (running this checkout's code: PYTHONPATH)."""
    found = shutil.which("clipcull", path=os.path.dirname(sys.executable)) or shutil.which("clipcull")
    if found is None:
        pytest.skip("the clipcull entry point is not installed")
    return found


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), COLUMNS="200")


def shell(line: str, timeout: float = 200) -> subprocess.CompletedProcess:
    """A command line run by bash, as a user types it; CLIPCULL is the entry point."""
    return subprocess.run(["bash", "-c", line], env=dict(environment(), CLIPCULL=clipcull_command()),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["tag"], ["move", "--worst", "50%"]])
@pytest.mark.parametrize("output", ["| head -1", ">&-"])
def test_a_closed_pipe_or_stdout_never_decides_what_is_done(tiny_env, photo_folder, tmp_path, private_cache, private_state, command,
                                                           output):
    twin = tmp_path / "twin"
    shutil.copytree(photo_folder, twin)
    expected = run(command[0], twin, *command[1:], "--db", tmp_path / "twin.db",  # the same, without a pipe
                   "--state", tmp_path / "twin-state.db")
    assert expected.exit_code == 0, expected.stderr

    done = shell(f'"$CLIPCULL" {command[0]} {photo_folder} {" ".join(command[1:])} {output}; '
                 f'exit ${{PIPESTATUS[0]}}')
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr
    summary = stderr_lines(expected)[-1]
    assert done.stderr.splitlines()[-1] == summary
    assert files(photo_folder) == files(twin)  # every file moved or written as without the pipe
    assert journal(private_state) == journal(tmp_path / "twin-state.db")
    if output.startswith("|"):  # head got the first line clipcull printed
        assert done.stdout.splitlines() == [expected.stdout.splitlines()[0].replace(str(twin), str(photo_folder))]
    else:
        assert done.stdout == ""


def hold_the_journal(db: Path) -> tuple[subprocess.Popen, str]:
    """A second process holding the journal's lock until its stdin is closed."""
    lock = os.path.realpath(db) + ".journal-lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"), lock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder, lock


def started(*args) -> subprocess.Popen:
    return subprocess.Popen([clipcull_command(), *map(str, args)], env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, text: str) -> list[str]:
    """The lines read from stream up to (and with) the first that contains text."""
    lines = []
    while True:
        line = stream.readline()
        assert line, f"no line with {text!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines


@pytest.mark.slow
@pytest.mark.parametrize("command", [["tag"], ["move", "--worst", "50%"]])
def test_a_second_process_says_at_once_that_it_waits_and_for_what(tiny_env, photo_folder, private_cache, private_state, command):
    holder, lock = hold_the_journal(private_state)
    try:
        second = started(command[0], photo_folder, *command[1:])
        seen = wait_for_line(second.stderr, "waiting")
        assert seen[-1] == (f"clipcull: waiting for another clipcull process that is moving, tagging or undoing "
                            f"(lock {lock}) ...")
        assert files(photo_folder).keys() == {*(f"IMG_{i:04d}.jpg" for i in range(6)), "day2/IMG_0006.jpg",
                                              "day2/IMG_0007.jpg"}  # nothing done while it waits
    finally:
        holder.stdin.close()  # the first process is done
        holder.wait(timeout=30)
    out, err = second.communicate(timeout=200)
    assert second.returncode == 0, err
    lines = seen + err.splitlines()
    assert sum("waiting" in line for line in lines) == 1 and "Traceback" not in err
    changed = sum(n.endswith(".xmp") for n in files(photo_folder)) if command[0] == "tag" else len(
        files(photo_folder / "_rejects"))
    assert changed == (8 if command[0] == "tag" else 4)
    assert journal(private_state)[0][1] == "done"


def test_ctrl_c_while_waiting_for_the_journal_changes_nothing(tiny_env, photo_folder, private_cache, private_state):
    import signal

    before = files(photo_folder)
    holder, _ = hold_the_journal(private_state)
    try:
        second = started("move", photo_folder, "--worst", "50%")
        wait_for_line(second.stderr, "waiting")
        second.send_signal(signal.SIGINT)
        out, err = second.communicate(timeout=60)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert second.returncode == 130 and out == ""
    assert err.splitlines() == ["clipcull: interrupted: nothing was journaled or moved."]
    assert files(photo_folder) == before and not private_state.exists() or journal(private_state) == []


# Ctrl-C in the middle of a run. A seam without environment variables: the command runs through
# this driver, which slows every file operation down (after it is done, before it is journaled:
# the moment a Ctrl-C used to leave unsaid) so that the signal lands in the middle of the run.
SLOW_DRIVER = """
import sys, time
from clip_cull.culling import move, writer
real_transfer, real_write = move.transfer, writer.write_atomic

def transfer(*args, **kwargs):
    real_transfer(*args, **kwargs)
    time.sleep(0.3)

def write_atomic(*args, **kwargs):
    real_write(*args, **kwargs)
    time.sleep(0.3)

move.transfer, writer.write_atomic = transfer, write_atomic
sys.argv = ["clipcull", *sys.argv[1:]]
from clip_cull.cli import main
main()
"""


def interrupted_run(tmp_path: Path, args: list, watch: Path, done) -> subprocess.CompletedProcess:
    """Run clipcull (slowed down) and send SIGINT once done(watch) says two files are there."""
    import signal
    import time

    driver = tmp_path / "slow_clipcull.py"
    driver.write_text(SLOW_DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), *map(str, args)], env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while done(watch) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def twelve(tmp_path) -> Path:
    folder = tmp_path / "twelve"
    for i in range(12):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    return folder


@pytest.mark.slow
def test_ctrl_c_during_a_move_says_what_moved_and_undo_puts_it_back(tiny_env, twelve, tmp_path, private_cache, private_state):
    before = files(twelve)
    rejects = twelve / "_rejects"
    result = interrupted_run(tmp_path, ["move", twelve, "--worst", "100%"], rejects,
                             lambda d: len(os.listdir(d)) if d.exists() else 0)
    assert result.returncode == 130, result.stderr
    moved = len(os.listdir(rejects))
    assert 2 <= moved < 12
    assert result.stderr.splitlines()[-2:] == [
        f"clipcull: interrupted: move run 1: {moved} of 12 photos ({moved} of 12 files) moved, the others not.",
        "clipcull: `clipcull undo 1` puts them back; the next `clipcull move` finishes the run first."]
    assert "Traceback" not in result.stderr
    assert len(result.stdout.splitlines()) == moved  # one line per photo moved, none for the others
    [(_, state, steps)] = journal(private_state)
    assert state == "running" and steps == ["done"] * moved + ["planned"] * (12 - moved)  # the step in progress ended
    assert len(os.listdir(twelve)) == 12 - moved + 1  # the others, and _rejects

    undo = run("undo")
    assert undo.exit_code == 0 and stderr_lines(undo) == [
        f"clipcull: undid move run 1: {moved} photos ({moved} files) put back."]
    assert files(twelve) == before and not rejects.exists()


@pytest.mark.slow
def test_ctrl_c_during_tag_says_what_was_written_and_undo_removes_it(tiny_env, twelve, tmp_path, private_cache, private_state):
    before = files(twelve)
    result = interrupted_run(tmp_path, ["tag", twelve], twelve,
                             lambda d: sum(n.endswith(".xmp") for n in os.listdir(d)))
    assert result.returncode == 130, result.stderr
    written = sorted(n for n in os.listdir(twelve) if n.endswith(".xmp"))
    assert 2 <= len(written) < 12
    assert result.stderr.splitlines()[-2:] == [
        f"clipcull: interrupted: tag run 1: {len(written)} of 12 files written, the others not.",
        "clipcull: `clipcull undo 1` reverses it; `clipcull tag` again writes the rest."]
    assert "Traceback" not in result.stderr
    assert sorted(line.rsplit("/", 1)[1] for line in result.stdout.splitlines()) == written
    [(_, state, steps)] = journal(private_state)
    assert state == "running" and steps == ["done"] * len(written) + ["planned"] * (12 - len(written))

    undo = run("undo")
    assert undo.exit_code == 0 and stderr_lines(undo) == [
        f"clipcull: undid tag run 1: the XMP of {len(written)} photos ({len(written)} files) restored."]
    assert files(twelve) == before


def _ctrl_c_after_links(n: int):
    """A file-system link (how a move or an undo puts a file in place) that presses Ctrl-C right
    after the n-th link, before its step is journaled."""
    import signal

    calls = []

    def link_then_ctrl_c(src, dst):
        real_fs().link(src, dst)
        calls.append(src)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)  # held until the step is journaled

    return link_then_ctrl_c


def test_ctrl_c_in_the_middle_of_a_step_lets_it_end_and_be_journaled(tmp_path):
    """In-process, the mechanism itself: SIGINT arrives after a file has moved and before its
    step is journaled; the step ends (journaled done), then Interrupted says what was done."""
    import signal

    from clip_cull.culling import move as move_module
    from clip_cull.culling.journal import Journal, Step
    from clip_cull.core.errors import Interrupted
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store

    shoot = tmp_path / "shoot"
    photos = [make_photo(shoot / f"IMG_{i}.jpg", seed=i) for i in range(4)]
    steps = [Step("move", str(p), str(shoot / "_rejects" / p.name)) for p in photos]
    store, state = Store.open(tmp_path / "cache.db"), StateStore.open(tmp_path / "state.db")
    try:
        with faults(link=_ctrl_c_after_links(2)), pytest.raises(Interrupted) as stopped:
            move_module.apply_moves(store, Journal(state), steps, {"command": "move"})
        assert (stopped.value.run_id, stopped.value.done, stopped.value.left) == (1, 2, 2)
        assert isinstance(stopped.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        store.close()
        state.close()
    assert journal(tmp_path / "state.db") == [(1, "running", ["done", "done", "planned", "planned"])]
    assert sorted(os.listdir(shoot / "_rejects")) == ["IMG_0.jpg", "IMG_1.jpg"]
    assert sorted(os.listdir(shoot)) == ["IMG_2.jpg", "IMG_3.jpg", "_rejects"]


def test_ctrl_c_during_undo_lets_the_step_end_and_a_second_undo_finishes(tmp_path):
    """SIGINT after undo put one file back and before the journal knew: the step ends (marked
    undone), undo stops, and the next undo puts back the rest, with nothing in conflict."""
    import signal

    from clip_cull.culling import move as move_module
    from clip_cull.culling import undo as undo_module
    from clip_cull.culling.journal import Journal, Step
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store

    shoot = tmp_path / "shoot"
    photos = [make_photo(shoot / f"IMG_{i}.jpg", seed=i) for i in range(4)]
    steps = [Step("move", str(p), str(shoot / "_rejects" / p.name)) for p in photos]
    store, state = Store.open(tmp_path / "cache.db"), StateStore.open(tmp_path / "state.db")
    try:
        run_id = move_module.apply_moves(store, Journal(state), steps, {"command": "move"})
        with faults(link=_ctrl_c_after_links(2)), pytest.raises(KeyboardInterrupt):
            undo_module.undo_run(store, Journal(state), run_id)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert [s.state for s in Journal(state).steps(run_id)] == ["done", "done", "undone", "undone"]
        report = undo_module.undo_run(store, Journal(state), run_id)
        assert not report.conflicts and report.restored == 2
    finally:
        store.close()
        state.close()
    assert sorted(os.listdir(shoot)) == [p.name for p in photos]


def test_a_report_named_in_another_script_is_written(tmp_path):
    """A report name of 80 CJK characters (240 bytes) is a valid name; its temporary name must
    be too (100 characters of it were 300 bytes: ENAMETOOLONG)."""
    from clip_cull.culling.report import write_report

    path = tmp_path / ("写真" * 40 + ".html")
    assert len(os.fsencode(path.name)) <= 255
    write_report("<!DOCTYPE html><html></html>", path)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
