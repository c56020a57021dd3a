"""Culling actions on real files: XMP ratings (read back by exiftool), journaled moves, undo,
crashes half-way, bursts, and the HTML contact sheet in a real browser."""

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_cull.scoring.groups import burst_groups
from clip_cull.culling.tag import parse_star_thresholds, star_ratings
from clip_cull.culling.xmp import merge, read_fields, sidecar_path
from helpers import exiftool, faults, make_photo, real_fs, run

EXIFTOOL = shutil.which("exiftool")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEEDS_EXIFTOOL = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs libimage-exiftool-perl)")

DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="1"
    darktable:xmp_version="5"
    darktable:history_end="2">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:params="0000000000000000"/>
     <rdf:li darktable:operation="colorin" darktable:enabled="1" darktable:params="gz48eJxjZBgFo2AU0AsAAAAA"/>
    </rdf:Seq>
   </darktable:history>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
     <rdf:li>family &amp; friends</rdf:li>
    </rdf:Bag>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- XMP ----------------------------------------------------------------------------------------


def test_merge_changes_only_clipculls_fields(tmp_path):
    merged = merge(DARKTABLE_SIDECAR, 5, None, ["clipcull:rated", "clipcull:aesthetic"])
    (tmp_path / "before.xmp").write_text(DARKTABLE_SIDECAR)
    (tmp_path / "after.xmp").write_bytes(merged)
    before, after = (json.loads(exiftool("-j", "-struct", "-XMP:all", str(tmp_path / n)))[0]
                     for n in ("before.xmp", "after.xmp"))
    assert after["Rating"] == 5 and after["Subject"] == ["holiday", "family & friends", "clipcull:rated", "clipcull:aesthetic"]
    for key in set(before) | set(after):  # darktable's history, version, everything else: same values
        if key not in ("Rating", "Subject", "SourceFile", "XMPToolkit"):
            assert after.get(key) == before.get(key), key
    again = merge(merged, 2, None, ["clipcull:rated"])  # clipcull's old keywords are replaced, not piled up
    fields = read_fields(again)
    assert fields.rating == 2 and fields.keywords == ["holiday", "family & friends", "clipcull:rated"]


def test_merge_handles_element_form_and_self_closing_descriptions(tmp_path):
    element_form = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
                    '<xmp:Rating>2</xmp:Rating><xmp:CreatorTool>Other</xmp:CreatorTool></rdf:Description></rdf:RDF></x:xmpmeta>')
    (tmp_path / "a.xmp").write_bytes(merge(element_form, 4, "Red", []))
    self_closing = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Make="Canon"/></rdf:RDF></x:xmpmeta>')
    (tmp_path / "b.xmp").write_bytes(merge(self_closing, 3, None, ["clipcull:rated"]))
    a, b = json.loads(exiftool("-j", "-XMP:all", str(tmp_path / "a.xmp"), str(tmp_path / "b.xmp")))
    assert (a["Rating"], a["Label"], a["CreatorTool"]) == (4, "Red", "Other")  # one rating, not two
    assert (b["Rating"], b["Subject"], b["Make"]) == (3, "clipcull:rated", "Canon")


def test_sidecar_names_follow_both_conventions():
    assert sidecar_path("/a/IMG_0001.JPG", "lightroom") == Path("/a/IMG_0001.xmp")
    assert sidecar_path("/a/IMG_0001.JPG", "darktable") == Path("/a/IMG_0001.JPG.xmp")


def test_star_ratings_by_quantile_threshold_and_reject():
    scores = np.arange(10, dtype=float)[::-1]  # 9 (best) ... 0
    assert star_ratings(scores).tolist() == [5, 4, 4, 3, 3, 3, 3, 2, 2, 1]
    rules = parse_star_thresholds("5:8,4:6,3:4,2:2")
    assert star_ratings(scores, rules).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert star_ratings(scores, rules, reject_below=1.5).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, -1, -1]


# --- tag ------------------------------------------------------------------------------------------


@NEEDS_EXIFTOOL
def test_history_names_the_folders_absolutely_whatever_folder_the_run_started_in(tiny_env, photo_folder, monkeypatch):
    monkeypatch.chdir(photo_folder.parent)
    assert run("tag", photo_folder.name).exit_code == 0
    monkeypatch.chdir("/")
    table = run("history", terminal_width=400).stdout
    assert str(photo_folder.resolve()) in table


def test_tag_writes_ratings_exiftool_reads_and_undo_restores_every_byte(tiny_env, photo_folder):
    side = photo_folder / "IMG_0001.xmp"
    side.write_text(DARKTABLE_SIDECAR.replace('xmp:Rating="1"\n    ', ""))  # foreign sidecar without a rating
    before = tree_hashes(photo_folder)
    dry = run("tag", photo_folder, "--dry-run")
    assert dry.exit_code == 0 and tree_hashes(photo_folder) == before
    assert dry.stdout.count("would ") == 8

    result = run("tag", photo_folder)
    assert result.exit_code == 0, result.stderr
    ranked = [json.loads(l) for l in run("rank", photo_folder, "--json").stdout.splitlines()]
    # 8 photos, cumulative shares 10/30/70/90/100% -> rounded edges 1, 2, 6, 7, 8
    expected = dict(zip([r["path"] for r in ranked], [5, 4, 3, 3, 3, 3, 2, 1]))
    read = json.loads(exiftool("-j", "-Rating", "-Subject", "-XMP-darktable:all", str(photo_folder), "-r", "-ext", "xmp"))
    ratings = {str(Path(r["SourceFile"]).with_suffix(".jpg")): r["Rating"] for r in read}
    assert ratings == {p: expected[p] for p in ratings}
    foreign = next(r for r in read if r["SourceFile"].endswith("IMG_0001.xmp"))
    assert {"holiday", "family & friends", "clipcull:rated"} <= set(foreign["Subject"])
    assert "exposure" in json.dumps(foreign["HistoryOperation"])  # darktable's history survives
    for photo in photo_folder.rglob("*.jpg"):  # image files are never modified
        assert before[str(photo.relative_to(photo_folder))] == hashlib.sha256(photo.read_bytes()).hexdigest()

    undo = run("undo")
    assert undo.exit_code == 0, undo.stderr
    assert tree_hashes(photo_folder) == before


def test_photographers_own_rating_is_kept_unless_overwrite(tiny_env, photo_folder):
    side = photo_folder / "IMG_0002.xmp"
    rated = DARKTABLE_SIDECAR.replace('xmp:Rating="1"', 'xmp:Rating="3"')  # rated 3 by the photographer
    side.write_text(rated)
    run("tag", photo_folder)
    assert side.read_text() == rated
    run("tag", photo_folder, "--overwrite")
    text = side.read_text()
    assert "clipcull:rated" in read_fields(text).keywords and 'darktable:operation="exposure"' in text
    assert read_fields(text).rating in (1, 2, 3, 4, 5)


def test_darktable_naming_and_reject_label(tiny_env, photo_folder):
    result = run("tag", photo_folder, "--sidecar", "darktable", "--stars", "5:10", "--reject-below", "-10", "--label", "Green")
    assert result.exit_code == 0
    sidecars = sorted(photo_folder.rglob("*.jpg.xmp"))
    assert len(sidecars) == 8 and not list(photo_folder.rglob("IMG_0000.xmp"))
    assert {read_fields(s.read_text()).rating for s in sidecars} == {1}  # no score reaches 10, none below -10


# --- move and undo ------------------------------------------------------------------------------------


def test_move_worst_with_sidecars_keeps_relative_paths_and_undo_restores(tiny_env, photo_folder, private_cache):
    (photo_folder / "day2" / "IMG_0006.xmp").write_text(DARKTABLE_SIDECAR)
    before = tree_hashes(photo_folder)
    ranked = [json.loads(l)["path"] for l in run("rank", photo_folder, "--json").stdout.splitlines()]
    worst = ranked[-3:]  # --keep-top 5 of 8 moves the three lowest
    dry = run("move", photo_folder, "--keep-top", "5", "--dry-run")
    assert tree_hashes(photo_folder) == before and dry.stdout.count("would move") >= 3

    result = run("move", photo_folder, "--keep-top", "5")
    assert result.exit_code == 0, result.stderr
    for path in worst:
        rel = Path(path).relative_to(photo_folder)
        assert not Path(path).exists() and (photo_folder / "_rejects" / rel).is_file()
    if str(photo_folder / "day2" / "IMG_0006.jpg") in worst:
        assert (photo_folder / "_rejects" / "day2" / "IMG_0006.xmp").is_file()
    conn = sqlite3.connect(private_cache)  # the cache follows: no re-embedding after a move
    paths = {r[0] for r in conn.execute("select path from files")}
    assert all(str(photo_folder / "_rejects" / Path(p).relative_to(photo_folder)) in paths for p in worst)
    again = run("rank", photo_folder, "--json")
    assert "5 photos: 0 embedded, 5 cached" in again.stderr

    assert run("undo").exit_code == 0
    assert tree_hashes(photo_folder) == before
    assert not (photo_folder / "_rejects").exists()


def test_name_collisions_get_a_suffix_and_copy_leaves_originals(tiny_env, photo_folder):
    rejects = photo_folder / "_rejects"
    rejects.mkdir()
    ranked = [json.loads(l)["path"] for l in run("rank", photo_folder, "--json").stdout.splitlines()]
    worst = Path(ranked[-1])
    taken = rejects / worst.relative_to(photo_folder)
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"someone else's file")
    result = run("move", photo_folder, "--keep-top", "7", "--copy")
    assert result.exit_code == 0, result.stderr
    assert taken.read_bytes() == b"someone else's file"
    suffixed = taken.with_name(taken.stem + "-1" + taken.suffix)
    assert suffixed.read_bytes() == worst.read_bytes() and worst.exists()


def _plan_for(folder, private_cache, keep_top=4):
    from clip_cull.culling.move import plan_moves

    ranked = [type("P", (), json.loads(l)) for l in run("rank", folder, "--json").stdout.splitlines()]
    return plan_moves(ranked[keep_top:], [str(folder)], None)


def test_crash_half_way_then_undo_or_rerun_loses_and_duplicates_nothing(tiny_env, photo_folder, private_cache,
                                                                         private_state):
    from clip_cull.culling.journal import Journal
    from clip_cull.culling.move import apply_moves, resume_unfinished
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store

    before = tree_hashes(photo_folder)
    steps = _plan_for(photo_folder, private_cache)
    calls = {"n": 0}

    def crashing(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed in the middle
        return real_fs().link(src, dst)

    store, state = Store.open(private_cache), StateStore.open(private_state)
    with faults(link=crashing), pytest.raises(KeyboardInterrupt):
        apply_moves(store, Journal(state), steps, {})
    assert sorted(before.values()) == sorted(tree_hashes(photo_folder).values())  # nothing lost or doubled

    assert resume_unfinished(store, Journal(state)) is not None  # a re-run completes it
    after = tree_hashes(photo_folder)
    assert sorted(before.values()) == sorted(after.values())
    assert sum(1 for p in after if p.startswith("_rejects")) == 4
    store.close()
    state.close()
    assert run("undo").exit_code == 0
    assert tree_hashes(photo_folder) == before


def test_crash_after_a_rename_before_it_was_journaled(tiny_env, photo_folder, private_cache, private_state, monkeypatch):
    from clip_cull.culling.journal import Journal
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store
    from clip_cull.culling.move import apply_moves

    before = tree_hashes(photo_folder)
    steps = _plan_for(photo_folder, private_cache)
    store, state = Store.open(private_cache), StateStore.open(private_state)
    journal = Journal(state)
    real_mark = journal.mark

    def mark_then_die(run_id, seq, state):
        if seq == 2:
            raise SystemExit("power cut")  # the file moved, the journal never heard
        real_mark(run_id, seq, state)

    monkeypatch.setattr(journal, "mark", mark_then_die)
    with pytest.raises(SystemExit):
        apply_moves(store, journal, steps, {})
    store.close()
    state.close()
    assert sorted(before.values()) == sorted(tree_hashes(photo_folder).values())
    assert run("undo").exit_code == 0
    assert tree_hashes(photo_folder) == before


def test_cross_filesystem_move_copies_verifies_then_removes(tmp_path):
    from clip_cull.culling import fileops

    src = make_photo(tmp_path / "a" / "x.jpg", 1)
    data = src.read_bytes()

    def no_cross_device_rename(a, b):
        if str(a) == str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_fs().rename(a, b)

    def no_cross_device_link(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    with faults(rename=no_cross_device_rename, link=no_cross_device_link):
        fileops.transfer(src, tmp_path / "b" / "x.jpg")
    assert not src.exists() and (tmp_path / "b" / "x.jpg").read_bytes() == data
    assert not list(tmp_path.rglob("*.clipcull-partial"))
    with pytest.raises(fileops.FileOpError, match="never overwrites"):
        fileops.transfer(tmp_path / "b" / "x.jpg", tmp_path / "b" / "x.jpg")


# --- bursts ---------------------------------------------------------------------------------------


def burst_folder(tmp_path) -> Path:
    """A burst of three near-identical frames a second apart, and three other photos hours apart."""
    folder = tmp_path / "bursty"
    for i in range(3):
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2026:05:01 09:00:0{i}"}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
        make_photo(folder / f"burst_{i}.jpg", seed=7, exif=exif.tobytes(), quality=95 - i)
    for i in range(3):
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2026:05:01 1{i}:00:00"}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
        make_photo(folder / f"other_{i}.jpg", seed=20 + i, exif=exif.tobytes())
    return folder


def test_burst_groups_need_similar_embeddings_and_close_capture_times():
    vec = np.array([[1.0, 0], [0.99, 0.01], [1.0, 0.0], [0, 1.0]])
    times = ["2026-05-01T09:00:00", "2026-05-01T09:00:01", "2026-05-01T11:00:00", "2026-05-01T09:00:02"]
    groups = burst_groups(["a", "b", "c", "d"], vec, times, similarity=0.95, window_s=5)
    assert groups == {"a": 1, "b": 1}  # c is similar but hours later; d is close in time but different
    untimed = burst_groups(["a", "b", "c"], vec[:3], [None, None, None], similarity=0.95)
    assert untimed == {"a": 1, "b": 1, "c": 1}


def test_rank_groups_best_unique_and_move_per_group(tiny_env, tmp_path):
    folder = burst_folder(tmp_path)
    rows = [json.loads(l) for l in run("rank", folder, "--groups", "--json").stdout.splitlines()]
    by_name = {Path(r["path"]).name: r["group"] for r in rows}
    assert by_name["burst_0.jpg"] == by_name["burst_1.jpg"] == by_name["burst_2.jpg"] is not None
    assert {by_name[f"other_{i}.jpg"] for i in range(3)} == {None}
    unique = run("best", folder, "--unique", "--top", "10").stdout.splitlines()
    assert len(unique) == 4 and sum("burst_" in p for p in unique) == 1
    best_burst = next(r["path"] for r in rows if "burst_" in r["path"])
    assert best_burst in unique
    moved = run("move", folder, "--per-group")
    assert moved.exit_code == 0, moved.stderr
    assert sorted(p.name for p in (folder / "_rejects").iterdir()) == sorted(
        Path(r["path"]).name for r in rows if "burst_" in r["path"] and r["path"] != best_burst)


# --- report ---------------------------------------------------------------------------------------


HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def test_report_is_self_contained_and_escapes_file_names(tiny_env, photo_folder, tmp_path):
    make_photo(photo_folder / HOSTILE, seed=50)
    out = tmp_path / "sheet.html"
    result = run("report", photo_folder, "-o", out, "--similarity", 1)  # the tiny model finds every photo alike: no stacks
    assert result.exit_code == 0, result.stderr
    page = out.read_text()
    assert page.count("<figure") == 9 and page.count('src="data:image/jpeg;base64,') == 9
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's chromium)")
def test_report_opens_in_a_real_browser(tiny_env, photo_folder, tmp_path):
    make_photo(photo_folder / HOSTILE, seed=50)
    out = tmp_path / "sheet.html"
    run("report", photo_folder, "-o", out, "--similarity", 1)  # the tiny model finds every photo alike: no stacks
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<img ") == 9  # the hostile name made no element of its own
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900", out.as_uri()],
                   capture_output=True, timeout=120)
    image = Image.open(shot)
    assert image.size == (1200, 900) and len(np.unique(np.asarray(image.convert("L")))) > 20  # thumbnails drawn


def _other_device_dir(near: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != near.stat().st_dev:
        return shm
    return None


def test_move_to_another_file_system_and_back(tiny_env, photo_folder, tmp_path):
    other = _other_device_dir(tmp_path)
    if other is None:
        pytest.skip("no writable tmpfs on another device here (/dev/shm)")
    dest = Path(other) / f"clipcull-test-{os.getpid()}-{tmp_path.name}"
    try:
        before = tree_hashes(photo_folder)
        result = run("move", photo_folder, "--keep-top", "5", "--to", dest)
        assert result.exit_code == 0, result.stderr
        moved = tree_hashes(dest)
        assert len(moved) == 3 and sorted(moved.values()) == sorted(set(before.values()) - set(tree_hashes(photo_folder).values()))
        assert not list(dest.rglob("*.clipcull-partial"))
        assert run("undo").exit_code == 0
        assert tree_hashes(photo_folder) == before
    finally:
        shutil.rmtree(dest, ignore_errors=True)
