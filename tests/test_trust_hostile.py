"""Trust on files other programs wrote and on a hostile library (issue 12), the cases found by
trying to break it: photos whose XMP exiftool wrote, sidecars that hold no properties, sidecars
changed between plan and write, and two clipcull processes at once. Results are read back with
exiftool and decoded with Pillow/rawpy, not with clipcull's own parser."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import exiftool, exiftool_json, faults, make_photo, real_fs, run, sha, usage_error

EXIFTOOL, EXIV2 = shutil.which("exiftool"), shutil.which("exiv2")
pytestmark = pytest.mark.skipif(not (EXIFTOOL and EXIV2), reason=".ci/run installs exiftool and exiv2")


def all_but_xmp(path: Path) -> dict:
    found = exiftool_json(path, "-struct", "-a", "-G1", "--XMP:all", "--File:all", "--ExifTool:all", "--Composite:all", check=False)
    return {k: v for k, v in found.items() if k != "SourceFile" and not k.endswith("Offsets")}


# --- tag --embed into photos that already carry XMP -------------------------------------------------
# exiv2 rewrites TIFF-based files (TIFF, DNG) in place inside the buffer it is handed, even an
# immutable bytes object: the "before" bytes the pixels were compared against and whose hash was
# journaled changed under clipcull, so every TIFF with XMP stopped the whole run ("changed since
# the plan"), and the pixel check compared the new file with itself.


def test_embedding_never_changes_the_bytes_it_was_given(tmp_path):
    from test_raw_quality import make_dng

    from clip_cull.culling.embedded import embed_rating

    photos = [make_photo(tmp_path / "a.jpg", seed=1), make_photo(tmp_path / "b.tif", seed=2, fmt="TIFF"),
              make_dng(tmp_path / "c.dng")]
    for photo in photos:
        exiftool("-q", "-overwrite_original", "-XMP-dc:Creator=Ann", "-XMP-xmp:Label=Blue", "-XMP-dc:Title-de=Hallo", photo)
        data = photo.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        _, new = embed_rating(str(photo), data, 4, ["clipcull:rated"])
        assert hashlib.sha256(data).hexdigest() == digest, photo.name  # the input is what was read, still
        out = tmp_path / f"out{photo.suffix}"
        out.write_bytes(new)
        read = exiftool_json(out, "-struct", "-XMP:all", check=False)
        assert (read["Rating"], read["Creator"], read["Label"], read["Title-de"]) == (4, ["Ann"], "Blue", "Hallo"), photo.name


def test_tag_embed_into_tiff_and_jpeg_with_exiftool_xmp_then_undo(tiny_env, tmp_path, deadline):
    folder = tmp_path / "shoot"
    jpg = make_photo(folder / "a.jpg", seed=1)
    tif = make_photo(folder / "b.tif", seed=2, fmt="TIFF")
    for photo in (jpg, tif):
        exiftool("-q", "-overwrite_original", "-XMP-dc:Creator=Ann", "-XMP-iptcExt:PersonInImage=Bob", "-EXIF:Artist=Zoe", "-XMP-dc:Title-de=Hallo", photo)
    pixels = {p: np.asarray(Image.open(p)).copy() for p in (jpg, tif)}
    others = {p: all_but_xmp(p) for p in (jpg, tif)}
    xmp_before = {p: exiftool_json(p, "-struct", "-XMP:all", "-G1", check=False) for p in (jpg, tif)}

    result = run("tag", folder, "--embed")
    assert result.exit_code == 0, result.stderr
    for p in (jpg, tif):
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p]) and all_but_xmp(p) == others[p]
        after = exiftool_json(p, "-struct", "-XMP:all", "-G1", check=False)
        assert 1 <= after["XMP-xmp:Rating"] <= 5, p.name
        for key, value in xmp_before[p].items():
            if key != "XMP-x:XMPToolkit":
                assert after.get(key) == value, (p.name, key)

    undo = run("undo")
    assert undo.exit_code == 0, undo.stderr
    for p in (jpg, tif):
        back = exiftool_json(p, "-struct", "-XMP:all", "-G1", check=False)
        assert "XMP-xmp:Rating" not in back
        assert {k: v for k, v in back.items() if k != "XMP-x:XMPToolkit"} == \
               {k: v for k, v in xmp_before[p].items() if k != "XMP-x:XMPToolkit"}
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p]) and all_but_xmp(p) == others[p]


# --- a file another program writes between clipcull's plan and its write ----------------------------
# tag merged each sidecar when it planned and later wrote that result over whatever was there by
# then: darktable or a second clipcull that wrote the sidecar meanwhile lost its edit.


def test_tag_never_writes_over_a_file_changed_since_the_plan(tmp_path, private_cache, private_state):
    from types import SimpleNamespace

    from clip_cull.culling.journal import FAILED, Journal
    from clip_cull.culling.tag import TagOptions, apply_tags, plan_tags
    from clip_cull.culling.undo import undo_run
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store

    folder = tmp_path / "shoot"
    a, b, c, d, e = (make_photo(folder / f"{n}.jpg", seed=i) for i, n in enumerate("abcde"))
    subprocess.run([EXIFTOOL, "-q", "-o", str(folder / "a.xmp"), "-XMP-dc:Creator=Ann", str(a)], check=True, timeout=60)
    ranked = [SimpleNamespace(path=str(p), score=0.3 - 0.01 * i, label="aesthetic", flags=[], companions=[])
              for i, p in enumerate((a, b, c, d, e))]
    changes, _ = plan_tags(ranked, TagOptions(embed=True))
    # meanwhile: the sidecar edited, a sidecar created, a photo's EXIF changed, by exiftool
    exiftool("-q", "-overwrite_original", "-XMP-dc:Creator=Changed", folder / "a.xmp")
    subprocess.run([EXIFTOOL, "-q", "-o", str(folder / "b.xmp"), "-XMP-dc:Creator=Dt", str(b)], check=True, timeout=60)
    exiftool("-q", "-overwrite_original", "-EXIF:Artist=Zoe", c)
    e.rename(folder / "moved.jpg")  # and a photo moved away: no sidecar left behind for it
    kept = {p: p.read_bytes() for p in (folder / "a.xmp", folder / "b.xmp", c)}

    store, state = Store.open(private_cache), StateStore.open(private_state)
    journal = Journal(state)
    notes: list[str] = []
    run_id = apply_tags(journal, changes, {"command": "tag"}, notes)
    assert {p: p.read_bytes() for p in kept} == kept  # all three untouched
    # e.jpg twice: its sidecar and its embedded XMP
    assert sorted(Path(n.split(" ")[0].rstrip(":")).name for n in notes) == ["a.xmp", "b.xmp", "c.jpg", "e.jpg", "e.jpg"]
    assert not (folder / "e.xmp").exists()
    assert exiftool_json(folder / "a.xmp", "-struct", check=False)["Creator"] == ["Changed"] and "Rating" not in exiftool_json(folder / "a.xmp", "-struct", check=False)
    assert 1 <= exiftool_json(d, "-struct", check=False)["Rating"] <= 5 and 1 <= exiftool_json(folder / "d.xmp", "-struct", check=False)["Rating"] <= 5  # the rest written
    assert journal.run(run_id).state == FAILED

    report = undo_run(store, journal, run_id)
    assert report.conflicts == []  # the skipped steps are nothing to undo, not conflicts
    assert {p: p.read_bytes() for p in kept} == kept
    assert "Rating" not in exiftool_json(d, "-struct", check=False) and not (folder / "d.xmp").exists() and not (folder / "c.xmp").exists()
    store.close()
    state.close()


# --- two clipcull processes on one cache at once -----------------------------------------------------
# Each took the other's running run for one a killed process had left and "finished" it, both
# copied into the same .clipcull-partial file, and a run took credit for the other's moves (so
# undoing it moved back photos it never moved). Now one process at a time holds the journal.


def cli(*args):
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-m", "clip_cull", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_moves_at_once_move_each_photo_once_and_undo_restores(tiny_env, photo_folder, tmp_path, deadline):
    assert cli("rank", photo_folder).wait(timeout=240) == 0
    subprocess.run([EXIFTOOL, "-q", "-o", str(photo_folder / "IMG_0001.xmp"), "-XMP-dc:Creator=Ann",
                    str(photo_folder / "IMG_0001.jpg")], check=True, timeout=60)
    before = sorted(sha(p) for p in photo_folder.rglob("*") if p.is_file())
    dest = tmp_path / "dest"
    first, second = (cli("move", photo_folder, "--worst", "100%", "--to", dest) for _ in range(2))
    outs = [p.communicate(timeout=240) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert not list(photo_folder.rglob("*.jpg"))
    moved = sorted(sha(p) for p in dest.rglob("*") if p.is_file())
    assert moved == before  # every file once: nothing lost, nothing twice, no partial file
    runs = [line for line in (outs[0][1] + outs[1][1]).splitlines() if "move run" in line]
    assert len(runs) == 1, outs  # one run made the moves; the other found nothing left to plan

    undo = cli("undo")
    assert undo.wait(timeout=240) == 0, undo.communicate()
    assert sorted(sha(p) for p in photo_folder.rglob("*") if p.is_file()) == before
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_a_held_journal_makes_a_second_process_wait_then_say_so(photo_folder, private_cache, private_state, monkeypatch):
    import os
    import sys

    from clip_cull.culling import journal as journal_module
    from clip_cull.culling.journal import Journal, JournalBusy, Step
    from clip_cull.culling.move import apply_moves
    from clip_cull.store.state import StateStore
    from clip_cull.store.cache import Store

    store, state = Store.open(private_cache), StateStore.open(private_state)
    lock = os.path.realpath(private_state) + ".journal-lock"  # beside the state database, which holds the journal
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"), lock],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(journal_module, "JOURNAL_WAIT_S", 0.5)
        photo = photo_folder / "IMG_0000.jpg"
        step = Step("move", str(photo), str(photo_folder / "_rejects" / "IMG_0000.jpg"))
        with pytest.raises(JournalBusy, match="another clipcull process"):
            apply_moves(store, Journal(state), [step], {"command": "move"})
        assert photo.exists() and Journal(state).runs() == []  # nothing moved, nothing journaled
    finally:
        holder.kill()
        holder.wait(timeout=30)
    notes: list[str] = []
    gone = photo_folder / "IMG_0001.jpg"
    steps = [Step("move", str(photo), str(photo_folder / "_rejects" / "IMG_0000.jpg")),
             Step("move", str(gone), str(photo_folder / "_rejects" / "IMG_0001.jpg"))]
    gone.rename(tmp := photo_folder / "elsewhere.jpg")  # moved by someone else after the listing
    run_id = apply_moves(store, Journal(state), steps, {"command": "move"}, notes=notes)
    assert (photo_folder / "_rejects" / "IMG_0000.jpg").exists() and tmp.exists()
    assert [s.src for s in Journal(state).steps(run_id)] == [str(photo)]  # only what was there is journaled
    assert notes and str(gone) in notes[0]
    store.close()
    state.close()


# --- a sidecar with no properties at all ------------------------------------------------------------
# A zero-byte or blank sidecar (`touch IMG_0001.xmp`) was "not well-formed XML" and left alone, so
# the photo never got its rating although there was nothing in the file to keep.


def test_empty_sidecars_get_the_rating_and_undo_puts_them_back(tiny_env, tmp_path, deadline):
    folder = tmp_path / "shoot"
    for i in range(3):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    blanks = {folder / "IMG_0000.xmp": b"", folder / "IMG_0001.xmp": b"  \r\n\t\n",
              folder / "IMG_0002.xmp": b'<?xml version="1.0" encoding="UTF-8"?>\n'}
    for path, data in blanks.items():
        path.write_bytes(data)
    result = run("tag", folder)
    assert result.exit_code == 0, result.stderr
    assert "left alone" not in result.stderr
    for path in blanks:
        read = exiftool_json(path, "-struct", check=False)
        assert 1 <= read["Rating"] <= 5 and "clipcull:rated" in read["Subject"], path.name
        check = subprocess.run([EXIV2, "-PX", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "Xmp.xmp.Rating" in check.stdout, check.stderr
    assert run("undo").exit_code == 0
    assert {p: p.read_bytes() for p in blanks} == blanks


# --- names that differ only in case or Unicode normalisation ----------------------------------------
# IMG_0003.JPG and IMG_0003.jpg (or café in NFC and NFD) were planned to names that an exFAT or
# FAT backup drive, or macOS, sees as one: `move --to` that drive stopped half-way.


def test_names_one_on_a_case_insensitive_drive_are_planned_apart(tmp_path):
    import unicodedata
    from types import SimpleNamespace

    from clip_cull.culling.move import plan_moves

    folder = tmp_path / "shoot"
    names = ["IMG_0003.JPG", "img_0003.jpg", unicodedata.normalize("NFC", "café.jpg"),
             unicodedata.normalize("NFD", "café.jpg")]
    photos = [SimpleNamespace(path=str(make_photo(folder / n, seed=i)), companions=[]) for i, n in enumerate(names)]
    assert len(list(folder.iterdir())) == len(names)  # four files here (Linux keeps the names apart)
    steps = plan_moves(photos, [str(folder)], str(tmp_path / "backup"))
    destinations = [Path(s.dst).name for s in steps]
    folded = {unicodedata.normalize("NFC", d).casefold() for d in destinations}
    assert len(folded) == len(names), destinations
    assert destinations[0] == "IMG_0003.JPG" and destinations[1] == "img_0003-1.jpg"


# --- the default destination is not a real folder --------------------------------------------------
# `_rejects` a symlink to the folder itself: the rejects were "moved" to IMG_0001-1.jpg beside the
# others; a symlink elsewhere sent them wherever it points; a file named _rejects journaled a run
# that failed at its first step. Each is now refused before anything is planned (exit code 2).


@pytest.mark.parametrize("make", ["link-to-itself", "link-elsewhere", "file"])
def test_rejects_that_is_not_a_real_folder_is_refused_before_planning(tiny_env, photo_folder, tmp_path, make, deadline):
    import os

    rejects = photo_folder / "_rejects"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if make == "link-to-itself":
        rejects.symlink_to(".")
    elif make == "link-elsewhere":
        rejects.symlink_to(elsewhere)
    else:
        rejects.write_text("notes")
    before = {p: sha(p) for p in photo_folder.rglob("*.jpg")}
    result = run("move", photo_folder, "--worst", "50%")
    kind = "is not a folder" if make == "file" else "is a symbolic link"
    usage_error(result, f"{kind}; clipcull moves rejects only into a real folder there", "choose a destination with --to")
    assert {p: sha(p) for p in photo_folder.rglob("*.jpg")} == before
    assert os.listdir(elsewhere) == []
    assert "move" not in run("history").stdout  # nothing journaled


def test_a_symlinked_folder_inside_the_destination_is_not_followed(tiny_env, photo_folder, tmp_path, deadline):
    import os

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (photo_folder / "_rejects").mkdir()
    (photo_folder / "_rejects" / "day2").symlink_to(elsewhere)
    result = run("move", photo_folder, "--worst", "100%")
    assert result.exit_code == 1, result.output  # not every photo asked for moved
    assert ("clipcull: move run 1: 6 of 8 photos (6 files) moved; 2 photos stayed where they were (see above). "
            "Undo: clipcull undo 1") in result.stderr.splitlines()
    assert os.listdir(elsewhere) == []
    assert sorted(p.name for p in (photo_folder / "day2").iterdir()) == ["IMG_0006.jpg", "IMG_0007.jpg"]
    assert "_rejects/day2 is a symbolic link" in result.stderr.replace("\n", "")
    assert sorted(p.name for p in (photo_folder / "_rejects").glob("*.jpg")) == [f"IMG_{i:04d}.jpg" for i in range(6)]


# --- a JPEG with two XMP segments --------------------------------------------------------------------
# Only the first was read (Rating 0: "unrated by choice"), while exiftool reads the last one's 5
# stars; and `tag --embed` rewrote the photo so that the 5 came first, leaving readers to disagree.


def two_xmp_segments(path: Path, first: str, second: str) -> Path:
    import struct

    def segment(attrs: str) -> bytes:
        xmp = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
               '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
               f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" {attrs}/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
        body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp.encode()
        return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body

    data = make_photo(path, seed=5).read_bytes()
    path.write_bytes(data[:2] + segment(first) + segment(second) + data[2:])
    return path


def test_every_xmp_segment_of_a_jpeg_is_read_and_none_is_written_into(tiny_env, tmp_path, deadline):
    from clip_cull.culling.ratings import find_rating

    folder = tmp_path / "shoot"
    photo = two_xmp_segments(folder / "a.jpg", 'xmp:Rating="0" xmp:Label="Red"', 'xmp:Rating="5"')
    make_photo(folder / "b.jpg", seed=6)
    assert exiftool_json(photo, "-struct", check=False)["Rating"] == 5  # what exiftool shows the photographer
    found = find_rating(str(photo))
    assert found.rating == 5 and "disagree" in found.disagreement

    original = photo.read_bytes()
    kept = run("tag", folder, "--embed")
    assert kept.exit_code == 0 and "keeps the photographer's rating 5" in kept.stdout
    assert photo.read_bytes() == original and not (folder / "a.xmp").exists()

    result = run("tag", folder, "--embed", "--overwrite")
    assert result.exit_code == 0, result.output
    assert photo.read_bytes() == original  # never written into
    assert "holds 2 XMP packets" in result.stdout + result.stderr
    assert 1 <= exiftool_json(folder / "a.xmp", "-struct", check=False)["Rating"] <= 5  # the sidecar has the rating
    assert 1 <= exiftool_json(folder / "b.jpg", "-struct", check=False)["Rating"] <= 5  # the other photo is embedded as usual


# --- a folder that cannot be written ---------------------------------------------------------------
# A read-only folder (a mount, a card with its lock switch on): `move` hard-linked the photo into
# _rejects, could not remove the old name, and stopped with the photo in two places; `tag` stopped
# the whole run at the first sidecar there. (Root ignores permission bits, so the read-only
# file system is simulated where clipcull meets it: the unlink, the write.)


def read_only(real, folder: Path):
    """real (a file operation), except that it refuses a path in folder as a read-only file system would."""
    import errno

    def refuse(path, *args, **kwargs):
        if Path(path).parent == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *args, **kwargs)
    return refuse


@pytest.mark.parametrize("across_file_systems", [False, True])
def test_a_move_whose_source_cannot_go_leaves_the_photo_in_one_place(tmp_path, across_file_systems):
    import errno
    import os

    from clip_cull.culling import fileops

    photo = make_photo(tmp_path / "card" / "IMG_0001.jpg", seed=1)
    data = photo.read_bytes()
    dst = tmp_path / "backup" / "IMG_0001.jpg"

    def no_link(*_a):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    disk = {"link": no_link} if across_file_systems else {}
    with faults(unlink=read_only(real_fs().unlink, photo.parent), **disk), pytest.raises(OSError, match="Read-only"):
        fileops.transfer(photo, dst)
    assert photo.read_bytes() == data and not os.path.lexists(dst)
    assert not list(dst.parent.glob("*.clipcull-partial"))


def test_tag_writes_what_it_can_when_one_folder_is_read_only(tiny_env, photo_folder, deadline):
    with faults(create=read_only(real_fs().create, photo_folder / "day2")):
        result = run("tag", photo_folder)
    assert result.exit_code == 1, result.output  # not every file asked for was written
    assert ("clipcull: tag run 1: 6 of 8 files written; 2 could not be (see above). Undo: clipcull undo 1"
            in result.stderr.splitlines())
    assert sorted(p.name for p in photo_folder.glob("*.xmp")) == [f"IMG_{i:04d}.xmp" for i in range(6)]
    assert not list((photo_folder / "day2").glob("*.xmp"))
    for name in ("IMG_0006.xmp", "IMG_0007.xmp"):
        assert f"{name}: Read-only file system; not written" in result.stderr.replace("\n", "")
    for sidecar in photo_folder.glob("*.xmp"):
        assert 1 <= exiftool_json(sidecar, "-struct", check=False)["Rating"] <= 5
    assert run("undo").exit_code == 0
    assert not list(photo_folder.rglob("*.xmp"))


# --- exiv2's namespace registry is global to the process ---------------------------------------------
# After exiv2 parsed one sidecar with xml:lang on its rdf:Description (legal RDF), every packet it
# wrote in that process declared the reserved xml prefix (bound to a wrong name): no XML parser
# accepts that, so every later sidecar with a title or copyright (lang-alt, xml:lang) was refused.


def test_one_sidecar_with_xml_lang_does_not_spoil_the_others(tmp_path):
    import xml.etree.ElementTree as ET

    from clip_cull.culling.xmp import merge

    odd = tmp_path / "odd.xmp"
    odd.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                   '<rdf:Description rdf:about="" xml:lang="en" xmlns:dc="http://purl.org/dc/elements/1.1/">'
                   '<dc:subject><rdf:Bag><rdf:li>sunset</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    photo = make_photo(tmp_path / "a.jpg", seed=1)
    titled = tmp_path / "a.xmp"
    subprocess.run([EXIFTOOL, "-q", "-o", str(titled), "-XMP-dc:Title=Sea", "-XMP-dc:Title-de=Meer",
                    "-XMP-dc:Rights=(c) Ann", "-XMP-dc:Creator=Ann", str(photo)], check=True, timeout=60)
    expected = {p: exiftool_json(p, "-struct", "-XMP:all", "-G1", "-a", check=False) for p in (odd, titled)}
    for path in (odd, titled, odd):  # the odd one first: what it leaves behind must not matter
        original = path.read_bytes()
        path.write_bytes(merge(original, 3, None, ["clipcull:rated"]))
        ET.fromstring(path.read_bytes())  # namespace-aware parse
        check = subprocess.run([EXIV2, "-PX", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "rror" not in check.stderr, check.stderr
        read = exiftool_json(path, "-struct", "-XMP:all", "-G1", "-a", check=False)
        assert read["XMP-xmp:Rating"] == 3
        for key, value in expected[path].items():
            if key not in ("XMP-x:XMPToolkit", "XMP-dc:Subject"):
                assert read.get(key) == value, (path.name, key)
        path.write_bytes(original)


def test_move_leaves_a_read_only_folders_photos_whole_and_moves_the_rest(tiny_env, photo_folder, deadline):
    day2 = photo_folder / "day2"
    subprocess.run([EXIFTOOL, "-q", "-o", str(day2 / "IMG_0006.xmp"), "-XMP-dc:Creator=Ann",
                    str(day2 / "IMG_0006.jpg")], check=True, timeout=60)
    before = {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()}
    with faults(unlink=read_only(real_fs().unlink, day2)):
        result = run("move", photo_folder, "--worst", "100%")
    assert result.exit_code == 1, result.output  # the others moved, but not everything asked for
    assert ("clipcull: move run 1: 6 of 8 photos (6 of 9 files) moved; 2 photos stayed where they were (see above). "
            "Undo: clipcull undo 1") in result.stderr.splitlines()
    assert sorted(p.name for p in day2.iterdir()) == ["IMG_0006.jpg", "IMG_0006.xmp", "IMG_0007.jpg"]
    assert not (photo_folder / "_rejects" / "day2").exists() or not any((photo_folder / "_rejects" / "day2").iterdir())
    assert sorted(p.name for p in (photo_folder / "_rejects").glob("*.jpg")) == [f"IMG_{i:04d}.jpg" for i in range(6)]
    for name in ("IMG_0006.jpg", "IMG_0007.jpg"):
        assert f"{name}: Read-only file system; not moved" in result.stderr.replace("\n", "")
    undo = run("undo")
    assert undo.exit_code == 0, undo.output
    assert {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()} == before
