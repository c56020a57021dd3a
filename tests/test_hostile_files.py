"""Files that must never hang, exhaust memory or crash a run: FIFOs, devices, sparse giants,
16-bit scans, foreign databases, damaged heads, reports aimed at photos, libtiff's chatter.

Every command runs in a subprocess with a timeout, so a hang fails the test instead of the
suite. Expected values come from the operating system (stat), numpy and sqlite3 themselves."""

from __future__ import annotations

import hashlib
import shutil
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_photo, noise_pngs, run, until_embedded

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

# Runs clipcull with os.open refusing files whose name holds NOPERM, as it would for a file of
# mode 000 read by another user (the tests run as root, which permissions do not stop).
BOOT = """
import errno, os, sys
_real_open = os.open
def _open(path, *a, **k):
    if "NOPERM" in os.fsdecode(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return _real_open(path, *a, **k)
os.open = _open
sys.argv = ["clipcull", *sys.argv[1:]]
from clip_cull.cli import main
main()
"""


def clipcull(*args, timeout: float = TIMEOUT_S, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", BOOT, *[os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args]],
                          capture_output=True, timeout=timeout, env=env, cwd=cwd)


def text(stream: bytes) -> str:
    return stream.decode("utf-8", "replace")


def webp_tiff(path: Path) -> Path:
    """A TIFF whose Compression tag says WEBP (50001): libtiff without WEBP prints a warning of its
    own to the process's stderr when asked to decode it."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, "TIFF", compression="tiff_deflate")
    data = bytearray(buf.getvalue())
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    for i in range(struct.unpack(order + "H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack(order + "H", data[entry:entry + 2])[0] == 259:
            data[entry + 8:entry + 10] = struct.pack(order + "H", 50001)
    path.write_bytes(bytes(data))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 100-byte PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def hostile_corpus(tmp_path):
    """A folder of good photos and every class of hostile file, with what the line about each must say.

    Returns (folder, good file names, {hostile file name: words its one line must hold})."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    good = []
    for i in range(3):
        good.append(make_photo(folder / f"good_{i}.jpg", seed=i).name)
    make_photo(folder / "jpeg_named.png", seed=7, fmt="JPEG")  # wrong extension, good content
    good.append("jpeg_named.png")
    long_name = "L" * 251 + ".jpg"  # 255 bytes: the longest name a file system allows
    make_photo(folder / long_name, seed=8)
    good.append(long_name)
    hostile = {}
    os.mkfifo(folder / "fifo.jpg")
    hostile["fifo.jpg"] = "FIFO"
    os.symlink("/dev/zero", folder / "zero.jpg")
    hostile["zero.jpg"] = "character device"
    os.symlink("/dev/null", folder / "null.png")
    hostile["null.png"] = "character device"
    with open(folder / "sparse.jpg", "wb") as f:
        f.truncate(8 * 2**30)  # 8 GB of nothing, on no disk space
    hostile["sparse.jpg"] = "over the limit"
    (folder / "empty.jpg").write_bytes(b"")
    hostile["empty.jpg"] = "empty file"
    whole = make_photo(tmp_path / "whole.jpg", seed=9, size=(300, 200)).read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    hostile["truncated.jpg"] = "truncated"
    (folder / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    hostile["noise.jpg"] = "not an image"
    png_claiming(folder / "bomb.png", 100_000, 100_000)
    hostile["bomb.png"] = "megapixels"
    os.symlink("loop.jpg", folder / "loop.jpg")
    hostile["loop.jpg"] = "symbolic links"
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    hostile["dangling.jpg"] = "No such file"
    (tmp_path / "a-folder").mkdir()
    os.symlink(tmp_path / "a-folder", folder / "folderlink.jpg")
    hostile["folderlink.jpg"] = "folder"
    make_photo(folder / "NOPERM.jpg", seed=10)
    hostile["NOPERM.jpg"] = "Permission denied"
    webp_tiff(folder / "webp.tif")
    hostile["webp.tif"] = "WEBP compression support is not configured"
    (folder / "bad\nname.jpg").write_bytes(b"not a jpeg at all")
    hostile["bad\\nname.jpg"] = "not an image"  # as clipcull shows it: the newline escaped
    os.mkfifo(os.fsencode(folder) + b"/fifo_\xff.jpg")
    hostile["fifo_\\xff.jpg"] = "UTF-8"
    return folder, good, hostile


def as_lines(stderr: str) -> list[str]:
    """stderr as lines, with `--json`'s failure objects shown as clipcull shows a path and reason."""
    from clip_cull.cli.ui import shown_path

    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            line = f"clipcull (json): {shown_path(row['path'])}: {row['error']}"
        lines.append(line)
    return lines


def assert_each_named_once(stderr: str, hostile: dict[str, str]) -> None:
    lines = as_lines(stderr)
    for name, reason in hostile.items():
        mine = [line for line in lines if f"/{name}:" in line or f"/{name}\"" in line]
        assert len(mine) == 1, f"{name!r} should be named once on stderr, got {mine}\n{stderr}"
        assert reason in mine[0], f"the line about {name!r} should say {reason!r}: {mine[0]}"


def assert_clean(proc: subprocess.CompletedProcess, command: str) -> str:
    stderr = text(proc.stderr)
    assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{stderr}"
    assert "Traceback" not in stderr and "Error:" not in stderr.replace("error:", ""), stderr
    stray = [line for line in as_lines(stderr) if line.strip() and not line.startswith("clipcull")]
    assert not stray, f"{command}: lines on stderr that are not clipcull's own: {stray}"
    return stderr


def test_every_command_over_a_hostile_corpus_names_each_file_once_and_never_hangs(tiny_env, hostile_corpus, tmp_path):
    folder, good, hostile = hostile_corpus
    report = tmp_path / "new" / "folder" / "sheet.html"
    commands = {
        "rank": ["rank", folder, "--json"],
        "best": ["best", folder, "--top", "50"],
        "tag": ["tag", folder, "--dry-run"],
        "move": ["move", folder, "--worst", "50%", "--dry-run"],
        "report": ["report", folder, "-o", report],
    }
    for command, args in commands.items():
        # files remembered as unreadable are otherwise summed up in one line (issue 13)
        proc = clipcull(*args, "--show-skipped")
        stderr = assert_clean(proc, command)
        assert_each_named_once(stderr, hostile)
        if command == "rank":
            ranked = [json.loads(line) for line in text(proc.stdout).splitlines()]
            assert sorted(Path(r["path"]).name for r in ranked) == sorted(good)
    assert report.is_file() and "good_0.jpg" in report.read_text()
    assert not any(p.name.endswith(".clipcull-partial") for p in report.parent.iterdir())


def test_a_fifo_photo_given_directly_and_a_fifo_head_are_one_line(tiny_env, tmp_path):
    os.mkfifo(tmp_path / "x.jpg")
    proc = clipcull("rank", tmp_path / "x.jpg", timeout=120)
    assert proc.returncode == 0 and "FIFO" in text(proc.stderr), text(proc.stderr)
    make_photo(tmp_path / "shoot" / "a.jpg", seed=1)
    os.mkfifo(tmp_path / "head.safetensors")
    proc = clipcull("rank", tmp_path / "shoot", "--head", tmp_path / "head.safetensors", timeout=120)
    stderr = text(proc.stderr)
    assert proc.returncode == 1 and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "error" in line] == [
        line for line in stderr.splitlines() if "head.safetensors" in line and "FIFO" in line]


@pytest.mark.slow
def test_ctrl_c_while_indexing_ends_the_run(tiny_env, tmp_path):
    folder = noise_pngs(tmp_path / "many", 400)
    os.mkfifo(folder / "0000_fifo.jpg")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "rank", str(folder), "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    until_embedded(Path(os.environ["CLIPCULL_DB"]), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # a hang here fails the test
    assert proc.returncode == 130, text(err)
    assert "interrupted" in text(err) and "Traceback" not in text(err)


@pytest.mark.slow
def test_a_sparse_giant_is_refused_before_reading_and_the_bound_can_be_raised(tiny_env, tmp_path):
    folder = tmp_path / "shoot"
    make_photo(folder / "a.jpg", seed=1)
    big = folder / "big.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (800, 1000, 3), dtype=np.uint8)).save(big)
    size_mib = os.stat(big).st_size / 2**20
    assert size_mib > 1
    proc = clipcull("rank", folder, "--json", "--max-file-size", "1")
    assert proc.returncode == 0
    assert [json.loads(x)["path"] for x in text(proc.stdout).splitlines()] == [str(folder / "a.jpg")]
    line = [x for x in text(proc.stderr).splitlines() if "big.png" in x][0]
    assert "over the limit of 1 MiB" in line
    again = clipcull("rank", folder, "--json")  # not remembered: the default bound reads it
    assert sorted(json.loads(x)["path"] for x in text(again.stdout).splitlines()) == [str(folder / "a.jpg"), str(big)]


@pytest.mark.slow
def test_a_refusal_by_this_runs_max_pixels_is_not_remembered(tiny_env, tmp_path):
    folder = tmp_path / "shoot"
    for i in range(3):
        make_photo(folder / f"p{i}.jpg", seed=i, size=(1000, 800))  # 0.8 MP each
    low = clipcull("rank", folder, "--json", "--max-pixels", "500000")
    assert low.returncode == 0 and text(low.stdout) == ""
    assert text(low.stderr).count("over the limit of 0.5 megapixels") == 3 or text(low.stderr).count("--max-pixels") == 3, text(low.stderr)
    plain = clipcull("rank", folder, "--json")
    assert plain.returncode == 0, text(plain.stderr)
    assert len(text(plain.stdout).splitlines()) == 3
    assert "skipped" not in text(plain.stderr)


def test_old_remembered_max_pixel_refusals_are_forgotten_by_the_migration(tmp_path):
    from clip_cull.store.cache import Store

    db = tmp_path / "old.db"
    store = Store.open(db)
    store.db.execute("delete from _sqlite_migrations where name = 'm005_forget_run_limits'")
    store.db.execute("insert into files (path, size, mtime_ns, error) values ('/a.jpg', 1, 1, "
                     "'1000x800 is 1 megapixels, over the limit of 0 (--max-pixels)')")
    store.db.execute("insert into files (path, size, mtime_ns, error) values ('/b.jpg', 1, 1, 'empty file (0 bytes)')")
    store.db.conn.commit()
    store.close()
    Store.open(db).close()
    rows = sqlite3.connect(db).execute("select path from files").fetchall()
    assert rows == [("/b.jpg",)]


# --- memory of one photo -----------------------------------------------------------------------

MEASURE = """
import resource, sys
from clip_cull.core.images import decode_photo
data = open(sys.argv[1], "rb").read()
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image, size = decode_photo(data, min_side=224, max_pixels=10**9, fast=sys.argv[2] == "fast")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, image.size[0], image.size[1], image.mode)
"""


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_large_16_bit_scan_stays_within_the_documented_memory_bound(tmp_path, mode):
    from clip_cull.core.images import BYTES_PER_PIXEL_BOUND

    width, height = 8000, 5000  # 40 MP of 16-bit greyscale
    rows = np.linspace(0, 65535, width, dtype=np.uint16)[None, :].repeat(height, 0)
    path = tmp_path / "scan16.png"
    Image.fromarray(rows).save(path, compress_level=1)
    assert Image.open(path).mode in ("I;16", "I;16B", "I")  # Pillow 10.1 opens it as 32-bit "I"
    del rows
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), mode], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    peak, w, h, image_mode = proc.stdout.split()
    pixels = width * height
    float64_cost = 8 * pixels * 3  # what the float64 conversion used to hold at once
    assert int(peak) <= BYTES_PER_PIXEL_BOUND * pixels + 64 * 2**20, f"{int(peak) / pixels:.1f} bytes a pixel"
    assert int(peak) < float64_cost / 4
    assert image_mode == "RGB"
    if mode == "fast":
        assert min(int(w), int(h)) >= 448 and int(w) < width  # reduced, short side still 2 x 224
    else:
        assert (int(w), int(h)) == (width, height)


def test_16_bit_conversion_in_strips_matches_numpy_on_the_whole(tmp_path):
    from clip_cull.core.images import decode_photo

    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, (1100, 1300), dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    image, _ = decode_photo(path.read_bytes(), min_side=224, fast=False)
    expected = np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image)[..., 0], expected)
    assert np.array_equal(np.asarray(image)[..., 2], expected)


# --- the cache file ------------------------------------------------------------------------------


def foreign_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("create table Adobe_images (id_local integer primary key, rating real);"
                       "create table AgLibraryFile (id_local integer primary key, baseName text);"
                       "insert into Adobe_images values (1, 5.0); insert into AgLibraryFile values (1, 'IMG_0001');")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", [["rank"], ["history"]])
def test_another_applications_database_is_never_changed(tiny_env, photo_folder, tmp_path, command):
    catalog = foreign_database(tmp_path / "Lightroom Catalog.lrcat")
    before = (catalog.read_bytes(), os.stat(catalog).st_mtime_ns)
    args = [*command, photo_folder] if command == ["rank"] else command
    proc = clipcull(*args, "--db", catalog)
    stderr = text(proc.stderr)
    assert proc.returncode == 1 and "Traceback" not in stderr
    assert "not a clipcull cache" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert (catalog.read_bytes(), os.stat(catalog).st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("Lightroom")) == ["Lightroom Catalog.lrcat"]
    conn = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"
    assert conn.execute("pragma application_id").fetchone()[0] == 0


@pytest.mark.slow
def test_new_empty_and_old_caches_are_clipcull_caches(tiny_env, photo_folder, tmp_path):
    from clip_cull.store.cache import APPLICATION_ID

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert clipcull("rank", photo_folder, "--db", empty).returncode == 0
    assert sqlite3.connect(empty).execute("pragma application_id").fetchone()[0] == APPLICATION_ID
    # a cache written before the id existed: clipcull's tables and migrations, id 0
    old = tmp_path / "old.db"
    old.write_bytes(empty.read_bytes())
    conn = sqlite3.connect(old)
    conn.execute("pragma application_id = 0")
    conn.commit()
    conn.close()
    proc = clipcull("rank", photo_folder, "--db", old, "--json")
    assert proc.returncode == 0, text(proc.stderr)
    assert "8 cached" in text(proc.stderr)
    assert sqlite3.connect(old).execute("pragma application_id").fetchone()[0] == APPLICATION_ID


@pytest.mark.slow
def test_a_cache_locked_for_a_minute_during_move_is_one_line(tiny_env, photo_folder, tmp_path, monkeypatch):
    import clip_cull.store.cache as store_module

    db = Path(os.environ["CLIPCULL_DB"])
    assert clipcull("rank", photo_folder).returncode == 0
    locker = sqlite3.connect(db, timeout=1)
    locker.execute("begin immediate")  # another program holds the write lock
    try:
        # the busy timeout shortened through the environment would need a knob; patch it in-process instead


        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 1)
        result = run("move", str(photo_folder), "--worst", "50%", catch_exceptions=True)
    finally:
        locker.rollback()
        locker.close()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "locked" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in photo_folder.rglob("*.jpg")) == sorted(f"IMG_{i:04d}.jpg" for i in range(8))


def test_a_folder_whose_name_is_not_utf8_is_one_line_per_file(tiny_env, tmp_path):
    folder = os.fsencode(tmp_path) + b"/shoot_\xff"
    os.mkdir(folder)
    make_photo(Path(os.fsdecode(folder)) / "a.jpg", seed=1)
    proc = clipcull(folder)  # not a command: usage error, exit 2, no traceback
    assert "Traceback" not in text(proc.stderr)
    proc = clipcull("rank", folder)
    stderr = text(proc.stderr)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "shoot_\\xff/a.jpg" in stderr and "UTF-8" in stderr


# --- head files --------------------------------------------------------------------------------


def write_head(path: Path, meta: dict, tensors: dict) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"clipcull": json.dumps(meta)})
    return path


def linear_meta(**changes) -> dict:
    meta = {"format": "clipcull-head", "version": 1, "kind": "linear", "backbone": None, "features": "projected",
            "layers": 1, "threshold": 5.0, "l2_input": False, "name": "probe"}
    meta.update(changes)
    return meta


def good_tensors(dim: int = 16) -> dict:
    rng = np.random.default_rng(0)
    return {"layers.0.weight": rng.normal(size=(1, dim)).astype(np.float32), "layers.0.bias": np.zeros(1, np.float32),
            "mean": np.zeros(dim), "std": np.ones(dim)}


def with_value(tensors: dict, key: str, index, value) -> dict:
    out = {k: v.copy() for k, v in tensors.items()}
    out[key][index] = value
    return out


BAD_HEADS = {
    "nan_weight": (linear_meta(), with_value(good_tensors(), "layers.0.weight", (0, 3), np.nan), "NaN or infinite"),
    "inf_bias": (linear_meta(), with_value(good_tensors(), "layers.0.bias", 0, np.inf), "NaN or infinite"),
    "nan_mean": (linear_meta(), with_value(good_tensors(), "mean", 2, np.nan), "NaN or infinite"),
    "inf_std": (linear_meta(), with_value(good_tensors(), "std", 2, np.inf), "NaN or infinite"),
    "zero_std": (linear_meta(), with_value(good_tensors(), "std", 2, 0.0), "zero"),
    "bad_shape": (linear_meta(), {**good_tensors(), "layers.0.weight": np.ones((2, 16), np.float32)}, "shapes"),
    "missing_bias": (linear_meta(), {k: v for k, v in good_tensors().items() if k != "layers.0.bias"}, "missing"),
    "string_threshold": (linear_meta(threshold="high"), good_tensors(), "threshold"),
    "nan_threshold": (linear_meta(threshold=float("nan")), good_tensors(), "threshold"),
    "string_layers": (linear_meta(layers="one"), good_tensors(), "layers"),
    "int_dtype_mean_shape": (linear_meta(), {**good_tensors(), "mean": np.zeros(3)}, "mean"),
    "bool_weights": (linear_meta(), {**good_tensors(), "layers.0.weight": np.ones((1, 16), bool)}, "not numbers"),
    "unknown_kind": ({**linear_meta(), "kind": "magic"}, good_tensors(), "unknown head kind"),
    "prompt_without_words": ({"format": "clipcull-head", "version": 1, "kind": "prompt", "prompt": {"kind": "fixed"}},
                             good_tensors(), "adjective"),
    "bad_features": (linear_meta(features="everything"), good_tensors(), "features"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADS))
def test_a_damaged_or_malformed_head_is_refused_with_one_line(tmp_path, case):
    from clip_cull.model.heads import HeadError, load_head

    meta, tensors, words = BAD_HEADS[case]
    path = write_head(tmp_path / f"{case}.safetensors", meta, tensors)
    with pytest.raises(HeadError) as refused:
        load_head(path)
    message = str(refused.value)
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.slow
def test_a_nan_head_never_reaches_rank_json(tiny_env, photo_folder, tmp_path):
    path = write_head(tmp_path / "nan.safetensors", linear_meta(),
                      with_value(good_tensors(), "layers.0.weight", (0, 0), np.nan))
    proc = clipcull("rank", photo_folder, "--json", "--head", path)
    assert proc.returncode == 1 and text(proc.stdout) == ""
    assert "NaN or infinite" in text(proc.stderr) and "Traceback" not in text(proc.stderr)
    good = write_head(tmp_path / "good.safetensors", linear_meta(), good_tensors())
    proc = clipcull("rank", photo_folder, "--json", "--head", good)
    assert proc.returncode == 0, text(proc.stderr)
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) for line in text(proc.stdout).splitlines()]
    assert len(rows) == 8 and all(np.isfinite(r["score"]) for r in rows)


def test_ranked_photo_json_never_holds_nan():
    from clip_cull.core.quality import Quality
    from clip_cull.scoring.ranking import RankedPhoto

    row = RankedPhoto(1, "/a.jpg", float("nan"), "aesthetic", quality=Quality(float("inf"), 0.1, 0.2, float("nan"))).as_dict()
    json.dumps(row, allow_nan=False)  # raises on NaN or infinity
    assert row["score"] is None and row["focus"] is None and row["highlights"] == 0.1


# --- the report ------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_refuses_to_overwrite_a_photo_and_replaces_its_own(tiny_env, photo_folder, tmp_path):
    photo = photo_folder / "IMG_0000.jpg"
    before = hashlib.sha256(photo.read_bytes()).hexdigest()
    for forced in ((), ("--force",)):  # --force replaces other files, never a photo (nothing could bring it back)
        proc = clipcull("report", photo_folder, "-o", photo, *forced)
        assert proc.returncode == 1 and "is a photo or its sidecar" in text(proc.stderr)
        assert hashlib.sha256(photo.read_bytes()).hexdigest() == before
    renamed = tmp_path / "holiday.html"  # a photo under another name is still a photo
    shutil.copyfile(photo, renamed)
    assert clipcull("report", photo_folder, "-o", renamed, "--force").returncode == 1
    assert hashlib.sha256(renamed.read_bytes()).hexdigest() == before
    notes = tmp_path / "notes.html"
    notes.write_text("<!DOCTYPE html><html><body>my notes</body></html>")
    assert clipcull("report", photo_folder, "-o", notes).returncode == 1
    assert "my notes" in notes.read_text()
    out = tmp_path / "made" / "here" / "r.html"
    assert clipcull("report", photo_folder, "-o", out).returncode == 0
    first = out.read_text()
    assert clipcull("report", photo_folder, "-o", out).returncode == 0  # its own report: replaced
    assert out.read_text().count("<img ") == first.count("<img ") == 8  # bursts share a card: count photos
    forced = clipcull("report", photo_folder, "-o", notes, "--force")
    assert forced.returncode == 0 and "<figure" in notes.read_text()


@pytest.mark.slow
def test_report_into_a_folder_or_an_unwritable_place_is_one_line(tiny_env, photo_folder, tmp_path):
    for target in (tmp_path, Path("/proc/version"), Path("/proc/no/such/place.html")):
        proc = clipcull("report", photo_folder, "-o", target)
        stderr = text(proc.stderr)
        assert proc.returncode == 1 and "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("clipcull: error:") and str(target) in errors[0], stderr


def test_libtiff_messages_become_part_of_the_files_line(tmp_path):
    script = ("from clip_cull.core.images import decode_photo, UnreadableImage\n"
              f"data = open({str(webp_tiff(tmp_path / 'w.tif'))!r}, 'rb').read()\n"
              "try:\n    decode_photo(data, min_side=224)\nexcept UnreadableImage as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stderr == ""  # nothing from libtiff on fd 2
    assert "WEBP compression support is not configured" in proc.stdout
