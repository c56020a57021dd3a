"""Trust on files other programs wrote and on a hostile library (issue 12), the cases found by
trying to break it: photos whose XMP exiftool wrote, sidecars that hold no properties, sidecars
changed between plan and write, and two clipcull processes at once. Results are read back with
exiftool and decoded with Pillow/rawpy, not with clipcull's own parser."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clip_cull.cli import app
from conftest import make_photo

EXIFTOOL, EXIV2 = shutil.which("exiftool"), shutil.which("exiv2")
pytestmark = pytest.mark.skipif(not (EXIFTOOL and EXIV2), reason=".ci/run installs exiftool and exiv2")


@pytest.fixture
def deadline():
    """A test that hangs fails after 300 s instead of hanging the suite."""
    def fail(*_):
        raise TimeoutError("test took over 300 s: something hangs")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def exiftool(path: Path, *args: str) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-struct", *args, str(path)], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)[0]


def exiftool_write(path: Path, *tags: str) -> None:
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", *tags, str(path)], check=True, timeout=60)


def all_but_xmp(path: Path) -> dict:
    found = exiftool(path, "-a", "-G1", "--XMP:all", "--File:all", "--ExifTool:all", "--Composite:all")
    return {k: v for k, v in found.items() if k != "SourceFile" and not k.endswith("Offsets")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- tag --embed into photos that already carry XMP -------------------------------------------------
# exiv2 rewrites TIFF-based files (TIFF, DNG) in place inside the buffer it is handed, even an
# immutable bytes object: the "before" bytes the pixels were compared against and whose hash was
# journaled changed under clipcull, so every TIFF with XMP stopped the whole run ("changed since
# the plan"), and the pixel check compared the new file with itself.


def test_embedding_never_changes_the_bytes_it_was_given(tmp_path):
    from test_raw_quality import make_dng

    from clip_cull.actions.embedded import embed_rating

    photos = [make_photo(tmp_path / "a.jpg", seed=1), make_photo(tmp_path / "b.tif", seed=2, fmt="TIFF"),
              make_dng(tmp_path / "c.dng")]
    for photo in photos:
        exiftool_write(photo, "-XMP-dc:Creator=Ann", "-XMP-xmp:Label=Blue", "-XMP-dc:Title-de=Hallo")
        data = photo.read_bytes()
        digest = sha(data)
        _, new = embed_rating(str(photo), data, 4, ["clipcull:rated"])
        assert sha(data) == digest, photo.name  # the input is what was read, still
        out = tmp_path / f"out{photo.suffix}"
        out.write_bytes(new)
        read = exiftool(out, "-XMP:all")
        assert (read["Rating"], read["Creator"], read["Label"], read["Title-de"]) == (4, ["Ann"], "Blue", "Hallo"), photo.name


def test_tag_embed_into_tiff_and_jpeg_with_exiftool_xmp_then_undo(tiny_env, tmp_path, deadline):
    folder = tmp_path / "shoot"
    jpg = make_photo(folder / "a.jpg", seed=1)
    tif = make_photo(folder / "b.tif", seed=2, fmt="TIFF")
    for photo in (jpg, tif):
        exiftool_write(photo, "-XMP-dc:Creator=Ann", "-XMP-iptcExt:PersonInImage=Bob", "-EXIF:Artist=Zoe",
                       "-XMP-dc:Title-de=Hallo")
    pixels = {p: np.asarray(Image.open(p)).copy() for p in (jpg, tif)}
    others = {p: all_but_xmp(p) for p in (jpg, tif)}
    xmp_before = {p: exiftool(p, "-XMP:all", "-G1") for p in (jpg, tif)}

    result = run("tag", folder, "--embed")
    assert result.exit_code == 0, result.stderr
    for p in (jpg, tif):
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p]) and all_but_xmp(p) == others[p]
        after = exiftool(p, "-XMP:all", "-G1")
        assert 1 <= after["XMP-xmp:Rating"] <= 5, p.name
        for key, value in xmp_before[p].items():
            if key != "XMP-x:XMPToolkit":
                assert after.get(key) == value, (p.name, key)

    undo = run("undo")
    assert undo.exit_code == 0, undo.stderr
    for p in (jpg, tif):
        back = exiftool(p, "-XMP:all", "-G1")
        assert "XMP-xmp:Rating" not in back
        assert {k: v for k, v in back.items() if k != "XMP-x:XMPToolkit"} == \
               {k: v for k, v in xmp_before[p].items() if k != "XMP-x:XMPToolkit"}
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p]) and all_but_xmp(p) == others[p]
