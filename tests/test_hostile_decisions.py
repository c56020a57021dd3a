"""Hostile tests (round 18): sidecars and sequences from a photographer's real library, written
by other programs, that made clipcull lose or overwrite something of theirs.

Expected values come from exiftool and hashlib, never from clipcull's own reader."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from clip_cull.culling.writer import Edit, plan_sidecar, write
from helpers import exiftool_json, fails_after, make_photo

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")

RDF = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description rdf:about="" {}>{}</rdf:Description></rdf:RDF></x:xmpmeta>')


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(240):
        yield


def test_a_prefix_bound_elsewhere_in_one_sidecar_never_moves_anothers_lightroom_keywords(tmp_path):
    """exiv2 keeps one process-wide prefix table: after a sidecar that binds `lr` to another
    namespace, the next sidecar's Lightroom keyword hierarchy was written under that namespace
    (Lightroom no longer sees it), and nothing noticed."""
    first, second = make_photo(tmp_path / "A.jpg", 1), make_photo(tmp_path / "B.jpg", 2)
    (tmp_path / "A.xmp").write_text(RDF.format('xmlns:lr="http://example.com/not-lightroom/"', "<lr:x>1</lr:x>"))
    (tmp_path / "B.xmp").write_text(RDF.format(
        'xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"'
        ' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"',
        "<lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|Berlin</rdf:li></rdf:Bag></lr:hierarchicalSubject>"))
    before_b = exiftool_json(tmp_path / "B.xmp", "-struct", "-G1", "-XMP:all")
    assert before_b["XMP-lr:HierarchicalSubject"] == ["Places|Berlin"]
    changes = [plan_sidecar(str(photo), tmp_path / f"{photo.stem}.xmp", Edit(3, keywords=["clipcull:rated"]))
               for photo in (first, second)]
    for change in changes:
        if change.writes:
            write(change)
    after_b = exiftool_json(tmp_path / "B.xmp", "-struct", "-G1", "-XMP:all")
    # Written or left alone, Lightroom's keywords stay in Lightroom's namespace
    assert after_b.get("XMP-lr:HierarchicalSubject") == ["Places|Berlin"]
    assert not [k for k in after_b if k.startswith("XMP-") and k.endswith(":HierarchicalSubject")
                and k != "XMP-lr:HierarchicalSubject"]
    assert after_b.get("XMP-xmp:Rating") == 3  # and it is written (each sidecar read on its own)
    assert exiftool_json(tmp_path / "A.xmp", "-struct", "-G1", "-XMP:all").get("XMP-xmp:Rating") == 3


OURS = {"XMP-xmp:Rating", "XMP-dc:Subject", "XMP-xmp:Label", "XMP-x:XMPToolkit", "SourceFile"}


@pytest.mark.parametrize("namespaces, attributes", [
    # Photoshop CS2 and older: rdf:about="uuid:..." (exiv2 turned it into an added xmpMM:InstanceID)
    ('xmlns:xmp="http://ns.adobe.com/xap/1.0/"', 'rdf:about="uuid:faf5bdd5-ba3d-11da-ad31-d33d75182f1b" xmp:Label="Blue"'),
    # a namespace URI exiv2 knows with a trailing slash (it wrote the property under its own URI)
    ('xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0"', 'rdf:about="" MicrosoftPhoto:Rating="75"'),
])
def test_a_sidecar_exiv2_would_rewrite_differently_is_left_alone(tmp_path, namespaces, attributes):
    """exiv2's before/after comparison is by its own keys (prefixes); what it changes beyond them
    (a namespace URI, rdf:about turned into a property) is seen by an independent XML reading."""
    photo = make_photo(tmp_path / "IMG_1.jpg", 1)
    sidecar = tmp_path / "IMG_1.xmp"
    sidecar.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
                       f'syntax-ns#"><rdf:Description {namespaces} {attributes}/></rdf:RDF></x:xmpmeta>')
    before_bytes = sidecar.read_bytes()
    before = {k: v for k, v in exiftool_json(sidecar, "-struct", "-G1", "-XMP:all").items() if k not in OURS}
    change = plan_sidecar(str(photo), sidecar, Edit(3, keywords=["clipcull:rated"]))
    if change.writes:
        write(change)
    after = {k: v for k, v in exiftool_json(sidecar, "-struct", "-G1", "-XMP:all").items() if k not in OURS}
    raw = sidecar.read_bytes()
    assert raw == before_bytes or (after == before and b"InstanceID" not in raw
                                   and b'"http://ns.microsoft.com/photo/1.0/"' not in raw)


def _tag(journal, photos, **options):
    """`clipcull tag` on these photos through the library, every photo scored alike."""
    from types import SimpleNamespace

    from clip_cull.culling.tag import TagOptions, apply_tags, plan_tags

    ranked = [SimpleNamespace(path=str(p), score=0.5, flags=[], label="aesthetic", companions=[]) for p in photos]
    changes, _ = plan_tags(ranked, TagOptions(**options), journal)
    return apply_tags(journal, changes, {"command": "tag"})


def test_tag_label_never_claims_the_photographers_own_label_of_the_same_colour(tmp_path):
    """The photographer's Green label, and `tag --label Green` on a 5-star photo: the label was
    already there, so clipcull set nothing, but its journal claimed the label; the next
    `tag --label Green` where the photo was no longer 5 stars took the photographer's label off."""
    from clip_cull.culling.journal import Journal
    from clip_cull.store.state import StateStore

    photo = make_photo(tmp_path / "IMG_1.jpg", 1)
    sidecar = tmp_path / "IMG_1.xmp"
    subprocess.run([EXIFTOOL, "-q", "-o", str(sidecar), "-XMP-xmp:Label=Green", str(photo)], check=True)
    journal = Journal(StateStore.open(tmp_path / "state.db"))
    _tag(journal, [photo], label="Green", thresholds=[(5, 0.0)])
    assert exiftool_json(sidecar, "-struct", "-G1", "-XMP:all")["XMP-xmp:Rating"] == 5
    _tag(journal, [photo], label="Green", thresholds=[(5, 0.9), (4, 0.0)])
    after = exiftool_json(sidecar, "-struct", "-G1", "-XMP:all")
    assert after["XMP-xmp:Rating"] == 4
    assert after.get("XMP-xmp:Label") == "Green"  # the photographer's label stays


def test_a_review_decision_equal_to_clipculls_rating_becomes_the_photographers(tmp_path):
    """clipcull rated 3; the photographer (keywords cleaned up meanwhile) presses 3 in review. No
    byte changed, so nothing was journaled: the page still showed the photo unrated, and the
    journal still called the 3 clipcull's, so the next `tag` overwrote the photographer's 3."""
    from clip_cull.culling.journal import Journal
    from clip_cull.review.decisions import DecisionWriter
    from clip_cull.store.state import StateStore

    photo = make_photo(tmp_path / "IMG_1.jpg", 1)
    sidecar = tmp_path / "IMG_1.xmp"
    state = StateStore.open(tmp_path / "state.db")
    journal = Journal(state)
    _tag(journal, [photo], thresholds=[(3, 0.0)])
    assert exiftool_json(sidecar, "-struct", "-G1", "-XMP:all")["XMP-xmp:Rating"] == 3
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject=", str(sidecar)], check=True)
    writer = DecisionWriter(state, {"command": "review"})
    assert writer.decide(str(photo), [], rating=3).rating == 3  # the page shows the photographer's 3
    _tag(journal, [photo], thresholds=[(5, 0.0)])
    assert exiftool_json(sidecar, "-struct", "-G1", "-XMP:all")["XMP-xmp:Rating"] == 3  # kept: the photographer's


def test_a_new_photos_sidecar_under_a_reused_name_is_the_photographers(tmp_path):
    """clipcull rated IMG_0001 3; the shoot was archived by hand, the camera's counter wrapped, and
    the new IMG_0001 was rated 3 in Lightroom. Same path, same value: the journal called it
    clipcull's and `tag` overwrote the photographer's rating."""
    import os

    from clip_cull.culling.journal import Journal
    from clip_cull.store.state import StateStore

    photo = make_photo(tmp_path / "IMG_0001.jpg", 1)
    sidecar = tmp_path / "IMG_0001.xmp"
    journal = Journal(StateStore.open(tmp_path / "state.db"))
    _tag(journal, [photo], thresholds=[(3, 0.0)])
    (tmp_path / "archive").mkdir()
    os.rename(photo, tmp_path / "archive" / photo.name)
    os.rename(sidecar, tmp_path / "archive" / sidecar.name)
    make_photo(photo, 99)
    subprocess.run([EXIFTOOL, "-q", "-o", str(sidecar), "-XMP-xmp:Rating=3", "-XMP-dc:Subject=Holiday", str(photo)],
                   check=True)
    before = sidecar.read_bytes()
    _tag(journal, [photo], thresholds=[(5, 0.0)])
    assert exiftool_json(sidecar, "-struct", "-G1", "-XMP:all")["XMP-xmp:Rating"] == 3
    assert sidecar.read_bytes() == before
