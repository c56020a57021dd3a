"""The photographer's decisions are never overwritten or lost (issue 18): packets exiv2 reads only
in part are never written, ownership comes from the journal (not a keyword), undo restores exact
bytes and whole sets, links and extended attributes survive, odd values never crash.

Expected values come from exiftool and hashlib, never from clipcull's own reader."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest

from clip_cull.culling.journal import Journal
from clip_cull.culling.undo import undo_run
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store
from helpers import EXIFTOOL, exiftool, fails_after, make_photo, run, sha, xmp_of

pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")

RDF = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">{}</rdf:RDF></x:xmpmeta>'
NS = 'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
TITLE = '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Golden hour</rdf:li></rdf:Alt></dc:title>'
# Well-formed XMP that exiftool reads and exiv2 reads only in part (each seen in real libraries)
UNDECODABLE = {
    "property twice (digiKam 3.5/4.0)": RDF.format(
        f'<rdf:Description rdf:about="" {NS} xmp:Rating="5">{TITLE}<xmp:Label>Red</xmp:Label>'
        '<xmp:Label>Red</xmp:Label></rdf:Description>'),
    "mismatched rdf:about": RDF.format(
        f'<rdf:Description rdf:about="a" {NS} xmp:Rating="5">{TITLE}</rdf:Description>'
        f'<rdf:Description rdf:about="b" {NS} xmp:Label="Red"/>'),
    "top-level typed node": RDF.format(f'<xmp:Thing rdf:about="" {NS}><xmp:Rating>5</xmp:Rating>{TITLE}</xmp:Thing>'),
    "xml:space on a property": RDF.format(
        f'<rdf:Description rdf:about="" {NS}><xmp:Rating>5</xmp:Rating>{TITLE}'
        '<dc:description xml:space="preserve"><rdf:Alt><rdf:li xml:lang="x-default">x</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description>'),
}


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield






def journal():
    """The journal the commands use (conftest points CLIPCULL_STATE into the test's folder)."""
    return Journal(StateStore.open(os.environ["CLIPCULL_STATE"]))


# --- never write what was not fully read -------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
def test_a_sidecar_exiv2_reads_in_part_is_left_alone_by_tag(tiny_env, photo_folder, case, deadline):
    sidecar = photo_folder / "IMG_0001.xmp"
    sidecar.write_text(UNDECODABLE[case])
    before = sidecar.read_bytes()
    read = xmp_of(sidecar)
    assert "Golden hour" in (read.get("Title"), read.get("ThingTitle"))  # exiftool reads it
    result = run("tag", photo_folder, "--overwrite")
    assert sidecar.read_bytes() == before  # not one byte changed: the photographer's 5 stars and title stay
    lines = [line for line in result.stderr.splitlines() if "IMG_0001.xmp" in line]
    assert len(lines) == 1 and "left alone" in lines[0], result.stderr
    assert (photo_folder / "IMG_0002.xmp").exists()  # the run went on


def test_the_refusal_does_not_depend_on_logging(tmp_path):
    """Even with exiv2's warnings silenced (as an application's logging setup can do), the
    independent XML reading finds what exiv2 did not read."""
    from clip_cull.culling import xmp

    xmp._exiv2()
    logger = logging.getLogger("exiv2")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 10)
    try:
        for text in UNDECODABLE.values():
            with pytest.raises(xmp.XmpError):
                xmp.parse(text.encode())
    finally:
        logger.setLevel(level)


def test_embed_leaves_a_photo_whose_xmp_exiv2_reads_in_part(tiny_env, photo_folder, deadline):
    photo = photo_folder / "IMG_0003.jpg"
    packet = photo_folder / "packet.xmp"
    packet.write_text(UNDECODABLE["property twice (digiKam 3.5/4.0)"])
    exiftool("-q", "-overwrite_original", f"-XMP<={packet}", photo)
    packet.unlink()
    assert xmp_of(photo)["Title"] == "Golden hour"
    before = sha(photo)
    result = run("tag", photo_folder, "--embed", "--overwrite")
    assert sha(photo) == before
    assert "IMG_0003.jpg: not embedded" in result.stderr
    undo = run("undo")
    assert undo.exit_code == 0, undo.stderr  # never a traceback on such a packet
    assert sha(photo) == before


# --- ownership from the journal ----------------------------------------------------------------------


def test_a_photographers_re_rating_and_label_survive_the_next_tag(tiny_env, photo_folder, deadline):
    assert run("tag", photo_folder, "--label", "Green").exit_code == 0
    sidecars = sorted(photo_folder.rglob("*.xmp"))
    five = next(s for s in sidecars if xmp_of(s).get("Rating") == 5)
    three = next(s for s in sidecars if xmp_of(s).get("Rating") == 3)
    exiftool("-q", "-overwrite_original", "-XMP-xmp:Rating=1", "-XMP-xmp:Label=Red", five)  # re-rated in Lightroom
    exiftool("-q", "-overwrite_original", "-XMP-xmp:Rating=-1", three)  # rejected in darktable
    result = run("tag", photo_folder, "--label", "Green")
    assert result.exit_code == 0, result.stderr
    assert (xmp_of(five)["Rating"], xmp_of(five)["Label"]) == (1, "Red")
    assert xmp_of(three)["Rating"] == -1
    assert "keeps the photographer's rating 1" in result.stdout and "keeps the photographer's rating -1" in result.stdout

    from clip_cull.research.taste import read_rating

    j = journal()
    rated = {str(s): read_rating(str(s.with_suffix(".jpg")), journal=j) for s in sidecars}
    assert {k for k, v in rated.items() if v is not None} == {str(five), str(three)}  # eval/train count them
    j.store.close()


def test_clipculls_own_rating_is_updated_and_the_same_value_set_by_hand_is_not_stolen(tiny_env, photo_folder, deadline):
    assert run("tag", photo_folder).exit_code == 0
    side = photo_folder / "IMG_0000.xmp"
    first = xmp_of(side)["Rating"]
    # clipcull's own rating: a second tag with other thresholds rewrites it
    assert run("tag", photo_folder, "--stars", "5:-1e9").exit_code == 0
    assert xmp_of(side)["Rating"] == 5
    # the photographer sets 5 by hand in an edit that changes the file but keeps the value: still
    # clipcull's value exactly, so a later tag may change it; set another value and it is theirs
    exiftool("-q", "-overwrite_original", "-XMP-xmp:Rating=2", side)
    assert run("tag", photo_folder).exit_code == 0
    assert xmp_of(side)["Rating"] == 2 and first is not None


def test_a_rating_that_is_no_number_is_kept_and_crashes_nothing(tiny_env, photo_folder, deadline):
    for name, value in (("IMG_0001.xmp", "1e999"), ("IMG_0002.xmp", "7"), ("IMG_0003.xmp", "abc")):
        (photo_folder / name).write_text(RDF.format(f'<rdf:Description rdf:about="" {NS} xmp:Rating="{value}"/>'))
    before = {n: sha(photo_folder / n) for n in ("IMG_0001.xmp", "IMG_0002.xmp", "IMG_0003.xmp")}
    result = run("tag", photo_folder)
    assert result.exit_code == 0, result.stderr
    assert {n: sha(photo_folder / n) for n in before} == before
    assert "keeps the value '1e999'" in result.stdout and "keeps the photographer's rating 5" in result.stdout


# --- undo restores bytes ------------------------------------------------------------------------------


def test_two_embed_runs_undone_in_either_order_give_the_exact_bytes_back(tiny_env, photo_folder, deadline):
    photos = sorted(photo_folder.glob("*.jpg"))
    exiftool("-q", "-overwrite_original", "-XMP-dc:Creator=Ann", photos[0])
    original = {p: sha(p) for p in photos}
    assert run("tag", photo_folder, "--embed", "--stars", "5:1e9").exit_code == 0  # every photo 1 star
    assert run("tag", photo_folder, "--embed", "--stars", "5:-1e9").exit_code == 0  # then 5
    assert all(xmp_of(p)["Rating"] == 5 for p in photos)
    assert run("undo", "1").exit_code == 0  # the older first: the newer one's way back is rebased
    assert all(xmp_of(p)["Rating"] == 5 for p in photos)
    assert run("undo", "2").exit_code == 0
    assert {p: sha(p) for p in photos} == original

    assert run("tag", photo_folder, "--embed").exit_code == 0
    assert run("tag", photo_folder, "--embed", "--stars", "5:-1e9").exit_code == 0
    assert run("undo").exit_code == 0 and run("undo").exit_code == 0
    assert {p: sha(p) for p in photos} == original


def test_embed_keeps_extended_attributes_and_mode_and_never_replaces_a_link(tiny_env, photo_folder, deadline):
    photo = photo_folder / "IMG_0001.jpg"
    try:
        os.setxattr(photo, "user.baloo.rating", b"8")
    except OSError:
        pytest.skip("this file system has no user extended attributes")
    os.chmod(photo, 0o640)
    target = photo_folder / "IMG_0002.jpg"
    elsewhere = photo_folder.parent / "elsewhere.jpg"
    shutil.move(target, elsewhere)
    target.symlink_to(elsewhere)
    linked_before = sha(elsewhere)
    result = run("tag", photo_folder, "--embed")
    assert result.exit_code == 0, result.stderr
    assert xmp_of(photo)["Rating"] in range(1, 6)
    assert os.getxattr(photo, "user.baloo.rating") == b"8" and (os.stat(photo).st_mode & 0o777) == 0o640
    assert target.is_symlink() and sha(elsewhere) == linked_before
    assert run("undo").exit_code == 0
    assert os.getxattr(photo, "user.baloo.rating") == b"8" and (os.stat(photo).st_mode & 0o777) == 0o640


def test_undo_of_a_move_brings_back_a_photo_re_rated_in_rejects_with_its_set(tiny_env, photo_folder, deadline):
    raw = photo_folder / "IMG_0000.CR2"
    raw.write_bytes(b"raw bytes")  # a RAW companion of IMG_0000.jpg
    assert run("move", photo_folder, "--keep-top", "0").exit_code == 0
    moved = photo_folder / "_rejects" / "IMG_0000.jpg"
    exiftool("-q", "-overwrite_original", "-XMP-xmp:Rating=4", moved)  # re-rated there (new inode)
    rated = sha(moved)
    result = run("undo")
    assert result.exit_code == 0, result.stderr
    assert sha(photo_folder / "IMG_0000.jpg") == rated and (photo_folder / "IMG_0000.CR2").exists()
    assert not (photo_folder / "_rejects").exists()


def test_a_set_stays_together_when_one_file_cannot_go_back(tiny_env, photo_folder, deadline):
    (photo_folder / "IMG_0000.CR2").write_bytes(b"raw bytes")
    assert run("move", photo_folder, "--keep-top", "0").exit_code == 0
    (photo_folder / "IMG_0000.CR2").write_bytes(b"another file took the RAW's old name")
    result = run("undo")
    assert result.exit_code == 1
    assert (photo_folder / "_rejects" / "IMG_0000.jpg").exists() and (photo_folder / "_rejects" / "IMG_0000.CR2").exists()
    assert not (photo_folder / "IMG_0000.jpg").exists()
    assert "stays with" in result.stderr
    assert (photo_folder / "IMG_0001.jpg").exists()  # other sets came back


def test_undo_of_a_copy_run_follows_a_later_move_of_the_original(tiny_env, photo_folder, tmp_path, deadline):
    copies = tmp_path / "copies"
    assert run("move", photo_folder, "--keep-top", "6", "--copy", "--to", copies).exit_code == 0
    copied = sorted(p for p in copies.rglob("*.jpg"))
    assert copied
    assert run("move", photo_folder, "--keep-top", "6").exit_code == 0  # the originals go to _rejects
    result = run("undo", "1")
    assert result.exit_code == 0, result.stderr
    assert not any(copies.rglob("*.jpg"))


def test_a_run_that_moved_nothing_does_not_block_undo(tiny_env, photo_folder, deadline):
    j = journal()
    from clip_cull.culling.journal import FAILED, Step

    ghost = str(photo_folder / "gone.jpg")
    run_id = j.plan("move", {"command": "move"}, [Step("move", ghost, str(photo_folder / "_rejects" / "gone.jpg"))])
    j.set_state(run_id, FAILED)
    j.store.close()
    assert run("tag", photo_folder).exit_code == 0
    assert run("undo").exit_code == 0  # the tag run
    result = run("undo")  # the move run that never moved anything: its step is skipped, not a conflict
    assert result.exit_code == 0, result.stderr
    assert "not undone" not in result.stderr


# --- review goes through the same writer --------------------------------------------------------------


def test_review_writes_into_an_existing_upper_case_sidecar(tmp_path):
    from clip_cull.review.decisions import DecisionWriter

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    upper = tmp_path / "IMG_1.XMP"
    exiftool("-q", "-o", upper, "-XMP-dc:Creator=Ann", photo)
    store = StateStore.open(tmp_path / "state.db")
    DecisionWriter(store, {"command": "review"}).decide(str(photo), [], rating=4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix.lower() == ".xmp") == ["IMG_1.XMP"]
    assert xmp_of(upper)["Rating"] == 4 and xmp_of(upper)["Creator"] == "Ann"
    store.close()


def test_review_does_not_write_while_another_process_holds_the_journal(tmp_path):
    import sys

    from clip_cull.review import decisions
    from clip_cull.review.decisions import DecisionWriter, ReviewError

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    store = StateStore.open(tmp_path / "state.db")
    lock = os.path.realpath(store.path) + ".journal-lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        writer = DecisionWriter(store, {"command": "review"})
        original = decisions.LOCK_WAIT_S
        decisions.LOCK_WAIT_S = 0.3
        try:
            with pytest.raises(ReviewError, match="another clipcull process"):
                writer.decide(str(photo), [], rating=4)
        finally:
            decisions.LOCK_WAIT_S = original
        assert not (tmp_path / "IMG_1.xmp").exists()
    finally:
        holder.kill()
        holder.wait()
    writer.decide(str(photo), [], rating=4)
    assert xmp_of(tmp_path / "IMG_1.xmp")["Rating"] == 4
    store.close()


def test_after_an_undo_conflict_u_goes_on_to_the_action_before(tmp_path):
    from clip_cull.review.decisions import DecisionWriter, ReviewError

    one, two = make_photo(tmp_path / "IMG_1.jpg", seed=1), make_photo(tmp_path / "IMG_2.jpg", seed=2)
    store = StateStore.open(tmp_path / "state.db")
    writer = DecisionWriter(store, {"command": "review"})
    writer.decide(str(one), [], rating=3)
    writer.decide(str(two), [], rating=4)
    exiftool("-q", "-overwrite_original", "-XMP-xmp:Rating=1", tmp_path / "IMG_2.xmp")  # edited elsewhere
    with pytest.raises(ReviewError, match="changed since clipcull wrote it"):
        writer.undo_last()
    photo, decision = writer.undo_last()  # not the same conflict again: the action before
    assert photo == str(one) and not (tmp_path / "IMG_1.xmp").exists()
    assert xmp_of(tmp_path / "IMG_2.xmp")["Rating"] == 1
    assert writer.undo_last() is None
    store.close()


def test_the_undo_of_a_legacy_embedded_step_never_dies(tmp_path):
    """A run journaled by an older clipcull (the previous packet, no byte patch) whose packet
    exiv2 cannot take back: one conflict line, undo goes on."""
    from clip_cull.culling.journal import DONE, Step

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    store, state = Store.open(tmp_path / "c.db"), StateStore.open(tmp_path / "state.db")
    j = Journal(state)
    step = Step("embedded", str(photo), str(photo), UNDECODABLE["top-level typed node"].encode(), sha(photo))
    run_id = j.plan("tag", {"command": "tag"}, [step])
    j.mark(run_id, 0, DONE)
    before = sha(photo)
    report = undo_run(store, j, run_id)
    assert sha(photo) == before and len(report.conflicts) == 1
    store.close()
    state.close()


def test_tag_copy_tag_then_undo_of_all_three_leaves_nothing_of_clipculls(tiny_env, photo_folder, tmp_path, deadline):
    copies = tmp_path / "copies"
    original = {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()}
    assert run("tag", photo_folder).exit_code == 0
    assert run("move", photo_folder, "--keep-top", "4", "--copy", "--to", copies).exit_code == 0
    assert any(copies.rglob("*.xmp"))
    assert run("tag", photo_folder, "--stars", "5:-1e9").exit_code == 0
    for _ in range(3):
        result = run("undo")
        assert result.exit_code == 0, result.stderr
    assert {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()} == original
    assert not copies.exists() or not any(p.is_file() for p in copies.rglob("*"))
