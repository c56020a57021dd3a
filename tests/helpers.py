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
