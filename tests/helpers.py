"""What many test files need: the CLI run as a user runs it, files' sha256, exiftool's reading.

New test files import these rather than copying them (older files still carry their own
copies; issue 22 gathers them here)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from clip_cull.cli import app

EXIFTOOL = shutil.which("exiftool")


def run(*args):
    """clipcull ARGS in this process (typer's CliRunner), exceptions not caught: a traceback fails the test."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def exiftool(*args) -> str:
    return subprocess.run([EXIFTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=True).stdout


def xmp_of(path: str | Path) -> dict:
    """Every XMP tag of a file as exiftool reads it (-j -XMP:all)."""
    return json.loads(exiftool("-j", "-XMP:all", path))[0]
