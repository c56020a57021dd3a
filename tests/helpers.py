"""What many test files need, in one place: the CLI run as a user runs it (`run`), files' sha256
(`sha`), exiftool's reading and writing (`exiftool`, `exiftool_json`, `xmp_of`), photos made here
(`make_photo`, `noise_pngs`), a run waited on until it has embedded photos (`until_embedded`), a time limit (`fails_after`), and faults injected into clipcull's file operations
(`faults`). Test files import these rather than copying them; conftest.py keeps the fixtures.

This module imports clip_cull only inside the helpers that need it: conftest.py imports it, and
some tests check what importing clipcull loads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

EXIFTOOL = shutil.which("exiftool")


def run(*args, env: dict | None = None, catch_exceptions: bool = False, **invoke):
    """clipcull ARGS in this process (typer's CliRunner). Exceptions are not caught unless asked
    (a traceback fails the test); env adds environment variables for the run; the rest
    (terminal_width, input, ...) goes to CliRunner.invoke."""
    from typer.testing import CliRunner

    from clip_cull.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=catch_exceptions, env=env, **invoke)


def usage_error(result, *words: str) -> str:
    """Assert that a run was refused as a usage error (exit 2) whose message holds each of words
    (the option and the problem: a misspelt option fails with "No such option" instead). The
    message is compared with the error box and line breaks taken out; it is returned."""
    message = " ".join(result.stderr.replace("\u2502", " ").split())
    assert result.exit_code == 2, (result.exit_code, result.output)
    for word in words:
        assert word in message, (word, message)
    return message


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def exiftool(*args, check: bool = True) -> str:
    """exiftool ARGS; its standard output. check: a non-zero exit raises (CalledProcessError)."""
    return subprocess.run([EXIFTOOL, *map(str, args)], capture_output=True, text=True, timeout=60,
                          check=check).stdout


def exiftool_json(path: str | Path, *args, check: bool = True) -> dict:
    """What exiftool reads from one file (-j), with ARGS (tags, -struct, -G1, ...)."""
    return json.loads(exiftool("-j", *args, path, check=check))[0]


def xmp_of(path: str | Path) -> dict:
    """Every XMP tag of a file as exiftool reads it (-j -XMP:all)."""
    return exiftool_json(path, "-XMP:all")


def make_photo(path: Path, seed: int, size=(96, 64), fmt="JPEG", exif=None, **save_kwargs) -> Path:
    """A small, distinct picture: smooth colour gradients plus noise, different per seed."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-2, 2, (3, 2))
    pixels = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif is not None:
        save_kwargs["exif"] = exif
    img.save(path, fmt, **save_kwargs)
    return path


def noise_pngs(folder: Path, count: int) -> Path:
    """count 400x300 PNGs of random noise (slow to decode: a run long enough to interrupt)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def until_embedded(db: Path, proc: subprocess.Popen, timeout_s: float = 120, each=None) -> None:
    """Wait until the cache db holds an embedding (a batch was written) or proc has ended;
    each() is called at every look."""
    import sqlite3
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if each:
            each()
        try:
            if sqlite3.connect(db, timeout=1).execute("select count(*) from embeddings").fetchone()[0] > 0:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)


def counts_for_mean(target: float, votes: int = 100) -> list[int]:
    """Ten rating counts whose mean is close to target (two neighbouring bins)."""
    low = int(np.clip(np.floor(target), 1, 9))
    frac = target - low
    counts = [0] * 10
    counts[low - 1] = round(votes * (1 - frac))
    counts[low] = votes - counts[low - 1]
    return counts


@contextlib.contextmanager
def fails_after(seconds: int):
    """A test that hangs fails after `seconds` (SIGALRM) instead of hanging the suite."""
    def expire(*_):
        raise TimeoutError(f"test took over {seconds} s: something hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def real_fs():
    """The file operations as they are, for a fault that passes most calls on:
    `real_fs().link(src, dst)` (clip_cull.culling.fileops.FileSystem)."""
    from clip_cull.culling.fileops import FileSystem

    return FileSystem()


@contextlib.contextmanager
def faults(**operations):
    """Within the block, clipcull's file operations (clip_cull.culling.fileops.fs: create, link,
    rename, replace, unlink, fsync, copy) named here are these functions instead, called with the same
    arguments: `with faults(link=other_device):`. A fault raises where the disk would (OSError
    with an errno, or KeyboardInterrupt for Ctrl-C) and calls real_fs() for the calls it lets
    through. Blocks nest; each puts back what it replaced."""
    from clip_cull.culling.fileops import FileSystem, fs

    unknown = [name for name in operations if not callable(getattr(FileSystem, name, None))]
    assert not unknown, f"no such file operation: {unknown}"
    missing = object()
    before = {name: vars(fs).get(name, missing) for name in operations}
    for name, fault in operations.items():
        setattr(fs, name, fault)
    try:
        yield
    finally:
        for name, previous in before.items():
            if previous is missing:
                delattr(fs, name)
            else:
                setattr(fs, name, previous)


def jpeg_with_xmp(data: bytes, packet: bytes) -> bytes:
    """A JPEG with an XMP packet embedded as cameras and editors do: an APP1 segment named
    http://ns.adobe.com/xap/1.0/, after the JFIF and Exif segments. Pillow's `save(xmp=...)`
    does the same from Pillow 11.0 only; this works with every Pillow the project allows."""
    assert data[:2] == b"\xff\xd8"
    at = 2
    while data[at] == 0xFF and data[at + 1] in (0xE0, 0xE1):  # APP0 (JFIF), APP1 (Exif)
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    assert len(body) + 2 <= 0xFFFF
    return data[:at] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[at:]


@dataclass
class Shot:
    """A ranked photo as the library's planners see it (tag.plan_tags, move.plan_moves,
    select_rejects): a path with a score drawn by the test, not CLIP's."""

    path: str
    score: float = 0.5
    label: str = ""
    flags: tuple = ()
    companions: list = field(default_factory=list)
