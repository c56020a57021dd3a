"""Hostile tests (round 18b): the review page's U mixed with `move`, `tag`, `undo` and other
people, checked by the bytes of every file (sha256), never by clipcull's own reader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clip_cull.culling import tag as tagging
from clip_cull.culling.journal import Journal
from clip_cull.culling.move import apply_moves, plan_moves
from clip_cull.culling.undo import undo_run
from clip_cull.review.decisions import DecisionWriter, ReviewError
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store
from helpers import fails_after, make_photo, Shot

FOREIGN = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator><rdf:Seq>'
           '<rdf:li>Ann Example</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>')


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield


@pytest.fixture
def world(tmp_path):
    store = Store.open(tmp_path / "cache" / "c.db")
    state = StateStore.open(tmp_path / "state" / "state.db")
    yield store, state, Journal(state)
    store.close()
    state.close()


def tree(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(top.rglob("*")) if p.is_file() and not {"cache", "state"} & set(p.relative_to(top).parts)}


def move(store, journal, photo: Path, root: Path, to: Path, copy: bool = False) -> int:
    return apply_moves(store, journal, plan_moves([Shot(str(photo))], [str(root)], str(to), copy=copy),
                       {"command": "move"})


def undo_everything(store, journal) -> list[str]:
    conflicts, before = [], None
    while (run := journal.last_undoable(before)) is not None:
        conflicts += undo_run(store, journal, run.id).conflicts
        before = run.id
    return conflicts


@pytest.mark.parametrize("foreign", [False, True])
def test_u_after_a_copy_that_was_moved_since_undoes_the_copy_where_it_is(tmp_path, world, foreign):
    """A decision, `move --copy` to a backup, then a move of the backup's copy elsewhere, then U:
    the photo's sidecar got its bytes back but the copy (moved on) kept the decision, so undoing
    everything left the backup's sidecar with the rating ("its original is gone" / "differs")."""
    store, state, journal = world
    root = tmp_path / "shoot"
    photo = make_photo(root / "IMG_1.jpg", seed=1)
    if foreign:
        (root / "IMG_1.xmp").write_text(FOREIGN)
    start = tree(tmp_path)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    move(store, journal, photo, root, tmp_path / "backup", copy=True)
    move(store, journal, tmp_path / "backup" / "IMG_1.jpg", tmp_path / "backup", tmp_path / "far")
    writer.undo_last()
    assert undo_everything(store, journal) == []
    assert tree(tmp_path) == start


@pytest.mark.parametrize("embed", [False, True])
def test_undo_of_a_tag_run_follows_its_copy_moved_twice(tmp_path, world, embed):
    """The same for `clipcull undo` of a tag run (sidecar or --embed) out of order, the copy moved twice."""
    store, state, journal = world
    root = tmp_path / "shoot"
    photo = make_photo(root / "IMG_1.jpg", seed=1)
    start = tree(tmp_path)
    changes, _ = tagging.plan_tags([Shot(str(photo))], tagging.TagOptions(embed=embed), journal)
    tag_run = tagging.apply_tags(journal, changes, {"command": "tag"})
    move(store, journal, photo, root, tmp_path / "backup", copy=True)
    move(store, journal, tmp_path / "backup" / "IMG_1.jpg", tmp_path / "backup", tmp_path / "far")
    move(store, journal, tmp_path / "far" / "IMG_1.jpg", tmp_path / "far", tmp_path / "farther")
    assert undo_run(store, journal, tag_run).conflicts == []
    assert undo_everything(store, journal) == []
    assert tree(tmp_path) == start


@pytest.mark.parametrize("edited", [0, 1])
def test_u_of_a_raw_jpeg_decision_with_one_sidecar_changed_since_undoes_the_other_and_says_so(tmp_path, world, edited):
    """darktable naming, a RAW+JPEG set: a decision writes IMG_1.jpg.xmp and IMG_1.CR2.xmp; darktable
    re-rates one of them; U. It stopped at the first conflict: with the RAW's sidecar edited the
    JPEG's kept the decision unsaid and out of U's reach; with the JPEG's edited the RAW's was
    undone unsaid. Now every sidecar that can go back goes back, and the one line names both."""
    store, state, journal = world
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    raw = tmp_path / "IMG_1.CR2"
    raw.write_bytes(b"II*\x00 the RAW " * 40)
    writer = DecisionWriter(state, {"command": "review"}, style="darktable")
    writer.decide(str(photo), [str(raw)], rating=4)
    sidecars = writer.sidecars(str(photo), [str(raw)])
    changed, other = sidecars[edited], sidecars[1 - edited]
    changed.write_text(changed.read_text().replace('Rating="4"', 'Rating="2"'))  # darktable
    theirs = changed.read_bytes()
    with pytest.raises(ReviewError) as e:
        writer.undo_last()
    assert changed.read_bytes() == theirs and not other.exists()  # theirs stays, clipcull's goes back
    message = str(e.value)
    assert "\n" not in message and changed.name in message and f"{other.name} undone" in message
    assert writer.actions == 0


def test_undo_of_a_review_run_counts_a_sidecar_written_twice_once(tmp_path, private_state):
    """Stars, then a pick, on each of two photos: `clipcull undo` said "2 photos (4 files)" for two sidecars."""
    from helpers import run

    photos = [make_photo(tmp_path / f"IMG_{i}.jpg", seed=i) for i in (1, 2)]
    state = StateStore.open(private_state)
    writer = DecisionWriter(state, {"command": "review", "folders": [str(tmp_path)]})
    for photo in photos:
        writer.decide(str(photo), [], rating=3)
        writer.decide(str(photo), [], toggle_pick=True)
    state.close()
    result = run("undo")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ["clipcull: undid review run 1: the XMP of 2 photos (2 files) restored."]
    assert not list(tmp_path.glob("*.xmp"))


def test_u_after_the_photographer_renamed_the_sidecar_says_nothing_was_undone(tmp_path, world):
    """A decision made IMG_1.xmp; another program renamed it IMG_1.XMP (the photo's sidecar still:
    the page reads it); U. It counted the decision as undone (nothing at IMG_1.xmp, as before it)
    and said nothing: the page kept showing 4 stars after U, with no word why."""
    store, state, journal = world
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    (tmp_path / "IMG_1.xmp").rename(tmp_path / "IMG_1.XMP")
    theirs = (tmp_path / "IMG_1.XMP").read_bytes()
    with pytest.raises(ReviewError, match=r"IMG_1\.xmp is gone") as e:
        writer.undo_last()
    assert "\n" not in str(e.value)
    assert (tmp_path / "IMG_1.XMP").read_bytes() == theirs and writer.actions == 0


def test_u_that_leaves_a_later_runs_write_on_top_says_so(tmp_path, world):
    """A decision (4 stars), `tag --overwrite` rates the photo 2 on top, U: the sidecar stays as the
    tag run wrote it (its undo now restores what was there before the decision), and U said nothing."""
    store, state, journal = world
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    writer = DecisionWriter(state, {"command": "review"})
    writer.decide(str(photo), [], rating=4)
    changes, _ = tagging.plan_tags([Shot(str(photo))], tagging.TagOptions(thresholds=[(2, -1e9)], overwrite=True), journal)
    tag_run = tagging.apply_tags(journal, changes, {"command": "tag"})
    tagged = (tmp_path / "IMG_1.xmp").read_bytes()
    with pytest.raises(ReviewError, match=f"left as run {tag_run} wrote it"):
        writer.undo_last()
    assert (tmp_path / "IMG_1.xmp").read_bytes() == tagged and writer.actions == 0
    assert undo_run(store, journal, tag_run).conflicts == []
    assert not (tmp_path / "IMG_1.xmp").exists()


def test_u_after_clipcull_undo_stopped_between_a_raw_and_its_jpeg_finishes_the_action(tmp_path, world):
    """darktable naming, a RAW+JPEG decision (two sidecars); `clipcull undo` of the session's run
    stopped (Ctrl-C) after the first of them; U said "undone already" and dropped the action, the
    JPEG's sidecar keeping the decision."""
    from clip_cull.culling.journal import UNDONE
    from clip_cull.culling.undo import undo_write

    store, state, journal = world
    photo = make_photo(tmp_path / "IMG_1.jpg", seed=1)
    raw = tmp_path / "IMG_1.CR2"
    raw.write_bytes(b"II*\x00 the RAW " * 40)
    writer = DecisionWriter(state, {"command": "review"}, style="darktable")
    writer.decide(str(photo), [str(raw)], rating=4)
    last = journal.steps(writer.run_id)[-1]  # `clipcull undo` goes newest first: the RAW's sidecar
    with journal.exclusive():
        undo_write(journal, writer.run_id, last)
        journal.mark(writer.run_id, last.seq, UNDONE)
    writer.undo_last()
    assert not list(tmp_path.glob("*.xmp"))
    assert [s.state for s in journal.steps(writer.run_id)] == ["undone", "undone"]
