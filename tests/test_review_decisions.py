"""The review's decisions on sidecars other programs wrote: merged, journaled, undone to the byte."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from clip_cull.culling.journal import Journal
from clip_cull.review.decisions import DecisionWriter, ReviewError
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store
from helpers import exiftool, faults, make_photo, real_fs, xmp_of

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "c.db")
    yield s
    s.close()


@pytest.fixture
def state(tmp_path):
    """The state database: the journal a review session's decisions go to."""
    s = StateStore.open(tmp_path / "state.db")
    yield s
    s.close()


def test_decision_merges_into_a_foreign_sidecar_and_undo_restores_its_bytes(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    sidecar = tmp_path / "IMG_1.xmp"
    exiftool("-o", sidecar, "-XMP-dc:Creator=Ann Example", "-XMP-dc:Subject=wedding", "-XMP-xmp:Rating=2",
             "-XMP-xmp:Label=Red", photo)
    original = sidecar.read_bytes()
    writer = DecisionWriter(state, {"command": "review"})
    assert writer.current(str(photo)).rating == 2  # the photographer's own rating, read back

    writer.decide(str(photo), [], rating=5)
    after = xmp_of(sidecar)
    assert after["Rating"] == 5 and after["Label"] == "Red"  # a colour label that is not a pick stays
    assert after["Creator"] == "Ann Example" and after["Subject"] == "wedding"
    writer.decide(str(photo), [], toggle_pick=True)
    assert xmp_of(sidecar)["Label"] == "Green"

    steps = Journal(state).steps(writer.run_id)
    assert [s.state for s in steps] == ["done", "done"]  # one run, a step an action
    writer.undo_last()
    writer.undo_last()
    assert sidecar.read_bytes() == original
    assert [s.state for s in Journal(state).steps(writer.run_id)] == ["undone", "undone"]
    assert writer.undo_last() is None


def _tag(state, photo, rating: int) -> None:
    """clipcull tag's write of one rating, journaled as tag journals it."""
    from clip_cull.culling import tag as tagging
    from clip_cull.culling.writer import RATING, Edit, plan_sidecar

    change = plan_sidecar(str(photo), photo.with_suffix(".xmp"), Edit(rating, keywords=["clipcull:rated"],
                                                                     owned={RATING: str(rating)}), rating)
    assert tagging.apply_tags(Journal(state), [change], {"command": "tag"}) is not None


def test_a_rating_clipcull_tag_wrote_is_not_taken_for_the_photographers(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_2.jpg", seed=2)
    _tag(state, photo, 3)
    writer = DecisionWriter(state, {"command": "review"})
    assert writer.current(str(photo)).rating is None  # the journal says clipcull wrote exactly this 3
    writer.decide(str(photo), [], rating=-1)
    after = xmp_of(tmp_path / "IMG_2.xmp")
    assert after["Rating"] == -1 and "Subject" not in after  # now the photographer's: no clipcull:rated


def test_a_keyword_alone_makes_no_rating_clipculls(tmp_path, state):
    """Ownership comes from the journal: a sidecar another program wrote with clipcull's keyword
    (or one the photographer re-rated after clipcull) holds the photographer's rating."""
    photo = make_photo(tmp_path / "IMG_2.jpg", seed=2)
    exiftool("-o", tmp_path / "IMG_2.xmp", "-XMP-xmp:Rating=3", "-XMP-dc:Subject=clipcull:rated", photo)
    assert DecisionWriter(state, {"command": "review"}).current(str(photo)).rating == 3
    other = make_photo(tmp_path / "IMG_4.jpg", seed=4)
    _tag(state, other, 2)
    exiftool("-overwrite_original", "-XMP-xmp:Rating=5", tmp_path / "IMG_4.xmp")  # re-rated in Lightroom
    assert DecisionWriter(state, {"command": "review"}).current(str(other)).rating == 5


def test_undo_of_one_action_leaves_a_sidecar_changed_since_alone(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_3.jpg", seed=3)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    exiftool("-overwrite_original", "-XMP-xmp:Rating=1", tmp_path / "IMG_3.xmp")  # another program edits it
    with pytest.raises(ReviewError, match="changed since clipcull wrote it"):
        writer.undo_last()
    assert xmp_of(tmp_path / "IMG_3.xmp")["Rating"] == 1


def test_darktable_naming_and_raw_companions_get_their_own_sidecars(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_4.jpg", seed=4)
    raw = tmp_path / "IMG_4.CR2"
    raw.write_bytes(b"raw")
    writer = DecisionWriter(state, {"command": "review"}, style="darktable")
    writer.decide(str(photo), [str(raw)], rating=3)
    assert xmp_of(tmp_path / "IMG_4.jpg.xmp")["Rating"] == 3 and xmp_of(tmp_path / "IMG_4.CR2.xmp")["Rating"] == 3
    writer.undo_last()
    assert not (tmp_path / "IMG_4.jpg.xmp").exists() and not (tmp_path / "IMG_4.CR2.xmp").exists()


def test_a_decision_after_another_run_goes_into_a_new_run_and_u_reaches_both(tmp_path, store, state):
    """A `move` (any run) journaled while the page is open: the next decision starts a new review
    run, so runs keep the order of the writes; U still takes back every decision, newest first,
    across the session's runs, to the byte."""
    from types import SimpleNamespace

    from clip_cull.culling.move import apply_moves, plan_moves

    photo, other = make_photo(tmp_path / "IMG_1.jpg", seed=1), make_photo(tmp_path / "IMG_2.jpg", seed=2)
    sidecar = tmp_path / "IMG_1.xmp"
    exiftool("-o", sidecar, "-XMP-dc:Creator=Ann Example", "-XMP-xmp:Rating=2", photo)
    original = sidecar.read_bytes()
    journal = Journal(state)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    first = writer.run_id
    moved = apply_moves(store, journal, plan_moves([SimpleNamespace(path=str(other), companions=[])], [str(tmp_path)], None),
                        {"command": "move"})
    writer.decide(str(photo), [], rating=5)
    assert first < moved < writer.run_id and writer.action_runs == [first, writer.run_id]
    assert [r.id for r in journal.runs(3)] == [writer.run_id, moved, first]
    assert xmp_of(sidecar)["Rating"] == 5
    writer.undo_last()
    assert xmp_of(sidecar)["Rating"] == 4
    writer.undo_last()
    assert sidecar.read_bytes() == original


def test_decisions_after_the_session_was_undone_start_a_new_run(tmp_path, store, state):
    """`clipcull undo` of a review session while the page is still open: later keys go into a
    new journaled run, and U no longer reaches into the reverted one."""
    from clip_cull.culling.undo import undo_run

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    sidecar = tmp_path / "IMG_1.xmp"
    exiftool("-o", sidecar, "-XMP-dc:Creator=Ann Example", "-XMP-xmp:Rating=2", photo)
    original = sidecar.read_bytes()
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    first = writer.run_id
    journal = Journal(state)
    assert undo_run(store, journal, first).conflicts == []
    assert sidecar.read_bytes() == original and journal.run(first).state == "undone"

    writer.decide(str(photo), [], rating=1)
    assert writer.run_id != first and journal.run(writer.run_id).state == "done"
    assert xmp_of(sidecar)["Rating"] == 1 and xmp_of(sidecar)["Creator"] == "Ann Example"
    writer.undo_last()
    assert sidecar.read_bytes() == original
    assert writer.undo_last() is None  # the action of the reverted run is not U's any more
    assert [s.state for s in journal.steps(first)] == ["undone"]


def test_a_run_whose_every_action_u_took_back_is_undone_and_clipcull_undo_goes_past_it(tmp_path, store, state):
    """Every key press of a session taken back with U: `clipcull undo` then undoes the run before
    (a tag run), not the emptied review run ("nothing was left to reverse")."""
    from clip_cull.culling.undo import undo_run

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    sidecar = tmp_path / "IMG_1.xmp"
    exiftool("-o", sidecar, "-XMP-dc:Creator=Ann Example", "-XMP-xmp:Rating=2", photo)
    original = sidecar.read_bytes()
    journal = Journal(state)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    writer.decide(str(photo), [], toggle_pick=True)
    writer.undo_last()
    assert journal.run(writer.run_id).state == "done"  # the first decision is still in effect
    writer.undo_last()
    assert sidecar.read_bytes() == original
    assert journal.run(writer.run_id).state == "undone" and journal.last_undoable() is None
    writer.decide(str(photo), [], rating=3)  # a new run: the emptied one stays undone
    assert journal.last_undoable().id == writer.run_id
    assert undo_run(store, journal, writer.run_id).conflicts == [] and sidecar.read_bytes() == original


def test_a_sidecar_that_cannot_be_written_undoes_the_whole_action_and_the_writer_goes_on(tmp_path, store, state):
    """The RAW's sidecar cannot be written (read-only share, full disk): the JPEG's sidecar, already
    written for the same key press, gets its bytes back, so the files match what the page shows."""
    from clip_cull.culling.fileops import partial_path
    from clip_cull.culling.undo import undo_run

    photo = make_photo(tmp_path / "IMG_5.jpg", seed=5)
    raw = tmp_path / "IMG_5.CR2"
    raw.write_bytes(b"raw")
    exiftool("-o", tmp_path / "IMG_5.jpg.xmp", "-XMP-dc:Creator=Ann Example", "-XMP-xmp:Rating=2", photo)
    original = (tmp_path / "IMG_5.jpg.xmp").read_bytes()
    raws_sidecar = partial_path(tmp_path / "IMG_5.CR2.xmp")  # the temporary file its write starts with

    def refuse_the_raws(path):
        if Path(path) == raws_sidecar:
            raise PermissionError(13, "Permission denied", str(path))
        return real_fs().create(path)

    writer = DecisionWriter(state, {"command": "review"}, style="darktable")
    with faults(create=refuse_the_raws), pytest.raises(ReviewError, match=r"IMG_5\.CR2\.xmp: Permission denied; not written"):
        writer.decide(str(photo), [str(raw)], rating=5)
    assert (tmp_path / "IMG_5.jpg.xmp").read_bytes() == original and not (tmp_path / "IMG_5.CR2.xmp").exists()
    journal = Journal(state)
    assert [s.state for s in journal.steps(writer.run_id)] == ["undone", "failed"]
    assert writer.actions == 0 and writer.current(str(photo)).rating == 2
    # nothing of the run is in effect: `clipcull undo` goes past it instead of spending itself on it
    assert journal.run(writer.run_id).state == "undone" and journal.last_undoable() is None

    # the share is writable again
    writer.decide(str(photo), [str(raw)], rating=4)
    assert xmp_of(tmp_path / "IMG_5.jpg.xmp")["Rating"] == 4 and xmp_of(tmp_path / "IMG_5.CR2.xmp")["Rating"] == 4
    assert undo_run(store, journal, writer.run_id).conflicts == []  # `clipcull undo` of the session
    assert (tmp_path / "IMG_5.jpg.xmp").read_bytes() == original and not (tmp_path / "IMG_5.CR2.xmp").exists()


def test_a_move_of_rejects_stopped_part_way_drops_only_the_moved_photos_from_the_page(tmp_path, store, state):
    from types import SimpleNamespace

    from clip_cull.review.session import MoveIncomplete, ReviewSession
    from clip_cull.review.thumbs import ThumbnailCache

    photos = [make_photo(tmp_path / f"IMG_{i}.jpg", seed=10 + i) for i in range(3)]
    ranked = [SimpleNamespace(path=str(p), score=1.0 - i / 10, rank=i + 1, label="aesthetic", flags=[], captured_at=None,
                              camera=None, quality=None, companions=[]) for i, p in enumerate(photos)]
    writer = DecisionWriter(state, {"command": "review"})
    session = ReviewSession(store, ranked, {}, [str(tmp_path)], writer, ThumbnailCache(tmp_path / "thumbs"), "m")
    session.decide(0, "reject")
    session.decide(1, "reject")

    def disk_full_on_the_second(src, dst):
        if str(src) == str(photos[1]):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_fs().link(src, dst)

    with faults(link=disk_full_on_the_second), pytest.raises(
            MoveIncomplete, match="No space left on device; 1 of 2 rejects moved") as stopped:
        session.move_rejects()
    assert stopped.value.moved == [0]
    assert (tmp_path / "_rejects" / "IMG_0.jpg").exists() and photos[1].exists()
    assert [row["id"] for row in session.listing()] == [1, 2]
    assert session.decide(0, "stars", 5) is None  # the moved photo takes no decision: no stray sidecar
    assert not (tmp_path / "IMG_0.xmp").exists()
    # space again: the rest go
    run_id, moved = session.move_rejects()
    assert moved == [1] and not photos[1].exists() and [row["id"] for row in session.listing()] == [2]


def test_decisions_from_many_requests_at_once_keep_the_journal_and_the_files_in_step(tmp_path, store, state):
    import hashlib
    import threading
    from types import SimpleNamespace

    from clip_cull.review.session import ReviewSession
    from clip_cull.review.thumbs import ThumbnailCache

    photos = [make_photo(tmp_path / f"IMG_{i}.jpg", seed=30 + i) for i in range(4)]
    ranked = [SimpleNamespace(path=str(p), score=1.0 - i / 10, rank=i + 1, label="aesthetic", flags=[], captured_at=None,
                              camera=None, quality=None, companions=[]) for i, p in enumerate(photos)]
    session = ReviewSession(store, ranked, {}, [str(tmp_path)], DecisionWriter(state, {"command": "review"}),
                            ThumbnailCache(tmp_path / "thumbs"), "m")
    errors = []

    def press(photo_id, stars):
        try:
            session.decide(photo_id, "stars", stars)
        except Exception as e:  # noqa: BLE001 - any error is the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=press, args=(i % 4, 1 + n % 5)) for n, i in enumerate(range(40))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    steps = Journal(state).steps(session.writer.run_id)
    assert all(s.state == "done" for s in steps)
    for p in photos:  # the last journaled write of each sidecar is what the file holds
        mine = [s for s in steps if s.dst == str(p.with_suffix(".xmp"))]
        assert mine[-1].after_sha == hashlib.sha256(p.with_suffix(".xmp").read_bytes()).hexdigest()
        assert xmp_of(p.with_suffix(".xmp"))["Rating"] == session.photos[photos.index(p)].decision.rating
    session.undo()
    assert session.writer.actions == len(steps) - 1


def test_a_photo_gone_since_the_review_began_gets_no_orphan_sidecar(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_6.jpg", seed=6)
    writer = DecisionWriter(state, {"command": "review"})
    photo.rename(tmp_path / "elsewhere.jpg")  # another program moved it
    with pytest.raises(ReviewError, match=r"IMG_6\.jpg: is gone"):
        writer.decide(str(photo), [], rating=5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".xmp") == []
    assert writer.run_id is None  # nothing journaled


def test_p_twice_on_a_photo_with_nothing_else_leaves_a_valid_empty_sidecar(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_7.jpg", seed=7)
    sidecar = tmp_path / "IMG_7.xmp"
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], toggle_pick=True)
    assert xmp_of(sidecar)["Label"] == "Green"
    assert writer.decide(str(photo), [], toggle_pick=True).picked is False  # was "not XMP clipcull can edit"
    assert "Label" not in xmp_of(sidecar) and "Rating" not in xmp_of(sidecar)
    listed = subprocess.run(["exiv2", "-px", str(sidecar)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout == "" and listed.stderr == ""  # exiv2 reads it: no properties
    writer.decide(str(photo), [], rating=2)  # and it takes the next decision
    assert xmp_of(sidecar)["Rating"] == 2
    for _ in range(3):
        writer.undo_last()
    assert not sidecar.exists()


def test_a_sidecar_that_became_a_folder_is_one_error_and_other_photos_go_on(tmp_path, state):
    photo, other = make_photo(tmp_path / "IMG_8.jpg", seed=8), make_photo(tmp_path / "IMG_9.jpg", seed=9)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=3)
    (tmp_path / "IMG_8.xmp").unlink()
    (tmp_path / "IMG_8.xmp").mkdir()  # meanwhile, by someone else
    with pytest.raises(ReviewError, match=r"IMG_8\.xmp: left alone, .*a folder"):
        writer.decide(str(photo), [], rating=5)
    with pytest.raises(ReviewError, match=r"IMG_8\.xmp"):
        writer.undo_last()  # U of the earlier 3 stars: the folder is not clipcull's to remove
    assert (tmp_path / "IMG_8.xmp").is_dir()
    writer.decide(str(other), [], rating=4)
    assert xmp_of(tmp_path / "IMG_9.xmp")["Rating"] == 4


def test_flags_are_lightrooms_a_pick_takes_a_reject_off_and_a_reject_a_pick(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    sidecar = tmp_path / "IMG_1.xmp"
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=-1)
    decision = writer.decide(str(photo), [], toggle_pick=True)
    assert (decision.picked, decision.rating) == (True, None)
    assert xmp_of(sidecar)["Rating"] == 0 and xmp_of(sidecar)["Label"] == "Green"
    decision = writer.decide(str(photo), [], rating=-1)
    assert (decision.picked, decision.rating) == (False, -1)
    assert xmp_of(sidecar)["Rating"] == -1 and "Label" not in xmp_of(sidecar)
    writer.decide(str(photo), [], rating=4)  # stars leave a pick alone, and replace a reject
    writer.decide(str(photo), [], toggle_pick=True)
    assert (xmp_of(sidecar)["Rating"], xmp_of(sidecar)["Label"]) == (4, "Green")
    writer.undo_last()  # each action is one U, the flag's two fields together
    writer.undo_last()
    writer.undo_last()
    assert xmp_of(sidecar)["Rating"] == 0 and xmp_of(sidecar)["Label"] == "Green"


def test_colour_labels_toggle_and_the_pick_labels_colour_is_a_pick(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    sidecar = tmp_path / "IMG_1.xmp"
    writer = DecisionWriter(state, {"command": "review"})
    assert writer.decide(str(photo), [], colour="Red").label == "Red"
    assert xmp_of(sidecar)["Label"] == "Red"
    assert writer.decide(str(photo), [], colour="Blue").label == "Blue"  # one label a photo: it replaces
    assert writer.decide(str(photo), [], colour="Blue").label is None  # the same key again takes it off
    assert "Label" not in xmp_of(sidecar)
    writer.decide(str(photo), [], rating=-1)
    decision = writer.decide(str(photo), [], colour="Green")  # Green is the pick label here
    assert decision.picked and decision.rating is None and xmp_of(sidecar)["Rating"] == 0
    exiftool("-overwrite_original", "-XMP-xmp:Label=Red", sidecar)  # another program's label stays until changed
    assert writer.decide(str(photo), [], rating=3).label == "Red"


def test_embed_writes_the_decision_into_the_photo_too_and_u_restores_its_exact_bytes(tmp_path, state):
    import hashlib
    import io

    import numpy as np
    from PIL import Image

    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    original = photo.read_bytes()
    writer = DecisionWriter(state, {"command": "review", "embed": True}, embed=True)
    writer.decide(str(photo), [], rating=4)
    writer.decide(str(photo), [], colour="Red")
    own = xmp_of(photo)  # exiftool reads the photo's own XMP
    assert own["Rating"] == 4 and own["Label"] == "Red"
    assert xmp_of(tmp_path / "IMG_1.xmp")["Rating"] == 4  # and the sidecar, as `tag --embed` writes both
    with Image.open(photo) as after, Image.open(io.BytesIO(original)) as before:
        assert np.array_equal(np.asarray(after), np.asarray(before))  # the pixels are the same
    steps = Journal(state).steps(writer.run_id)
    assert sorted(s.action for s in steps) == ["embedded", "embedded", "sidecar", "sidecar"]
    writer.undo_last()
    assert xmp_of(photo)["Rating"] == 4 and "Label" not in xmp_of(photo)
    writer.undo_last()
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == hashlib.sha256(original).hexdigest()
    assert not (tmp_path / "IMG_1.xmp").exists()


def test_embed_leaves_formats_it_cannot_write_to_the_sidecar(tmp_path, state):
    photo = make_photo(tmp_path / "IMG_1.png", seed=1, fmt="PNG")
    original = photo.read_bytes()
    writer = DecisionWriter(state, {"command": "review", "embed": True}, embed=True)
    writer.decide(str(photo), [], rating=2)
    assert photo.read_bytes() == original and xmp_of(tmp_path / "IMG_1.xmp")["Rating"] == 2


# --- two photos, one sidecar name --------------------------------------------------------------


def test_two_photos_that_share_a_lightroom_sidecar_get_no_decision_there_from_tag_or_review(tmp_path, state):
    """A.jpg and A.png are two photos, and Lightroom's naming gives both A.xmp: a rating written
    there for one is read as the other's. Neither tag nor review writes it; a RAW+JPEG pair (one
    photo) shares its sidecar as before, and darktable's naming gives each photo its own."""
    from clip_cull.culling.tag import TagOptions, apply_tags, plan_tags
    from helpers import Shot

    a_jpg, a_png = make_photo(tmp_path / "A.jpg", 1), make_photo(tmp_path / "A.png", 2, fmt="PNG")
    b_jpg = make_photo(tmp_path / "B.jpg", 3)
    (tmp_path / "B.CR2").write_bytes(b"raw")  # B.jpg's RAW: one photo with it
    line = ("A.jpg and A.png share the sidecar A.xmp (a decision written there is read as both photos'); "
            "not written. --sidecar darktable gives each photo its own (A.jpg.xmp, A.png.xmp)")
    writer = DecisionWriter(state, {"command": "review"})
    with pytest.raises(ReviewError) as refused:
        writer.decide(str(a_jpg), [], rating=5)
    assert str(refused.value) == line
    with pytest.raises(ReviewError, match=r"^A\.png and A\.jpg share the sidecar A\.xmp"):
        writer.decide(str(a_png), [], rating=1)
    assert not (tmp_path / "A.xmp").exists()
    writer.decide(str(b_jpg), [str(tmp_path / "B.CR2")], rating=4)
    assert xmp_of(tmp_path / "B.xmp")["Rating"] == 4

    journal = Journal(state)
    shots = [Shot(str(a_jpg)), Shot(str(a_png)), Shot(str(b_jpg), companions=[str(tmp_path / "B.CR2")])]
    changes, _ = plan_tags(shots, TagOptions(thresholds=[(3, 0.0)]), journal)
    problems = {Path(c.photo).name: (c.sidecar.name, c.note) for c in changes if c.problem}
    assert problems == {"A.jpg": ("A.xmp", line),
                        "A.png": ("A.xmp", line.replace("A.jpg", "@").replace("A.png", "A.jpg").replace("@", "A.png"))}
    apply_tags(journal, changes, {"command": "tag"})
    assert not (tmp_path / "A.xmp").exists()

    changes, _ = plan_tags(shots[:2], TagOptions(style="darktable", thresholds=[(3, 0.0)]), journal)
    apply_tags(journal, changes, {"command": "tag"})
    assert [xmp_of(tmp_path / n)["Rating"] for n in ("A.jpg.xmp", "A.png.xmp")] == [3, 3]
    darktable = DecisionWriter(state, {"command": "review"}, style="darktable")
    darktable.decide(str(a_png), [], rating=1)
    assert [xmp_of(tmp_path / n)["Rating"] for n in ("A.jpg.xmp", "A.png.xmp")] == [3, 1]


def test_a_read_only_photo_is_left_alone_by_review_embed_and_tag_embed(tmp_path, state):
    """0444: the photographer's "leave it alone", even where clipcull could write it (as root)."""
    from clip_cull.culling.tag import TagOptions, apply_tags, plan_tags
    from helpers import Shot, sha

    photo = make_photo(tmp_path / "RO.jpg", 1)
    photo.chmod(0o444)
    before = sha(photo)
    line = "it is read-only (no write permission), so clipcull leaves it alone"
    writer = DecisionWriter(state, {"command": "review"}, embed=True)
    with pytest.raises(ReviewError) as refused:
        writer.decide(str(photo), [], rating=4)
    assert str(refused.value) == f"{photo}: not embedded: {line} (the sidecar has the rating); nothing written (review --embed)"
    assert not (tmp_path / "RO.xmp").exists()  # all or nothing: no sidecar either

    journal = Journal(state)
    changes, _ = plan_tags([Shot(str(photo))], TagOptions(embed=True, thresholds=[(3, 0.0)]), journal)
    assert [(c.action, c.note) for c in changes if c.problem] == [
        ("embedded", f"not embedded: {line} (the sidecar has the rating)")]
    apply_tags(journal, changes, {"command": "tag"})
    assert sha(photo) == before and photo.stat().st_mode & 0o777 == 0o444
    assert xmp_of(tmp_path / "RO.xmp")["Rating"] == 3  # the sidecar, as tag --embed does for a PNG
