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
from typer.testing import CliRunner

from clip_cull.actions.fileops import PARTIAL_SUFFIX, partial_path, sweep_partials, write_atomic
from clip_cull.cli import app
from conftest import fails_after, make_photo

EXIFTOOL = shutil.which("exiftool")
NEEDS_EXIFTOOL = pytest.mark.skipif(EXIFTOOL is None, reason=".ci/run installs exiftool")

ASCII_255 = "a" * 251 + ".jpg"  # 255 bytes
UTF8_255 = "é" * 125 + "x.jpg"  # 125 x 2 + 5 = 255 bytes


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


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
