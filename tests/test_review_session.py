"""A review session against a disk that other programs change while the page is open: ratings
of any value, photos replaced under their names, sidecars re-rated by exiftool. In process (the
real ReviewSession and server app, Starlette's TestClient); the page in chromium is in
test_review_disk.py."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from clip_cull.scoring.ranking import RankedPhoto
from clip_cull.review.decisions import Decision, DecisionWriter
from clip_cull.review.server import Access, build_app
from clip_cull.review.session import ChangedSinceShown, ReviewSession
from clip_cull.review.thumbs import ThumbnailCache
from clip_cull.store.state import StateStore
from clip_cull.store.cache import FileRecord, Store
from helpers import exiftool, exiftool_json, make_photo, sha

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


def read_back(path: Path) -> dict:
    return exiftool_json(path, "-XMP:Rating", "-XMP:Label")


def xmp_with_rating(text: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="{text}"/>'
            '</rdf:RDF></x:xmpmeta>\n')


@pytest.fixture
def store(tmp_path):
    """The cache (the photos' records) and the state database (the journal decisions go to)."""
    s, state = Store.open(tmp_path / "c.db"), StateStore.open(tmp_path / "state.db")
    s.state = state
    yield s
    s.close()
    state.close()


def open_session(tmp_path, store, names: list[str], writer: DecisionWriter | None = None) -> ReviewSession:
    """A session over freshly made photos, recorded in the cache as `rank` leaves them."""
    folder = tmp_path / "shoot"
    photos = [make_photo(folder / name, seed=i + 1) for i, name in enumerate(names)]
    store.save([FileRecord(str(p), p.stat().st_size, p.stat().st_mtime_ns, sha(p)) for p in photos], [], "m")
    ranked = [RankedPhoto(rank=i + 1, path=str(p), score=1.0 - i / 100, label="") for i, p in enumerate(photos)]
    writer = writer or DecisionWriter(store.state, {"command": "review"})
    return ReviewSession(store, ranked, {}, [str(folder)], writer, ThumbnailCache(tmp_path / "thumbs"), "m")


def rows(session: ReviewSession) -> dict[str, dict]:
    return {r["name"]: r for r in session.listing()}


def shown(row: dict) -> tuple:
    return row["v"], row["gen"]


def site(session: ReviewSession):
    access = Access("127.0.0.1", PORT)
    client = TestClient(build_app(session, access, "shoot"), base_url=ORIGIN + access.prefix)
    client.cookies.set(access.cookie_name, access.token)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    return client, {"Content-Type": "application/json", "X-CSRF-Token": csrf}


# --- any rating another program wrote ----------------------------------------------------------


class OddWriter(DecisionWriter):
    """A writer whose sidecars hold whatever a test says, as a reader might hand it over."""

    def __init__(self, state, values: dict[str, object]):
        super().__init__(state, {"command": "review"})
        self.values = values

    def current(self, photo: str, companions=(), listings=None) -> Decision:
        value = self.values[Path(photo).stem]
        if isinstance(value, Exception):
            raise value
        return Decision(value, False)


ODD = {"SEVEN": 7, "MINUS": -5, "HALF": 2.5, "HUGE": 10**300, "ENORMOUS": 10**5000, "INF": math.inf,
       "NAN": math.nan, "WORD": "lots", "BOOL": True,
       "BROKEN": OverflowError("cannot convert float infinity to integer"),
       "THREE": 3, "REJECT": -1, "NONE": None}
SHOWN_AS = {"SEVEN": 7, "MINUS": -5, "HALF": 2.5, "HUGE": "1e+300", "ENORMOUS": "a number of about 5001 digits",
            "INF": "inf", "NAN": "nan", "WORD": "lots", "BOOL": "True", "BROKEN": None, "THREE": 3, "REJECT": -1,
            "NONE": None}


def test_any_rating_value_reaches_the_page_as_json_and_one_odd_sidecar_never_affects_the_others(tmp_path, store):
    session = open_session(tmp_path, store, [f"{name}.jpg" for name in ODD], OddWriter(store.state, ODD))
    listing = session.listing()
    json.dumps(listing, allow_nan=False)  # strict JSON: what the page's JSON.parse takes
    by_name = {r["name"][:-4]: r for r in listing}
    assert {name: r["rating"] for name, r in by_name.items()} == SHOWN_AS
    assert by_name["BROKEN"]["problem"] == "its sidecar cannot be read: cannot convert float infinity to integer"
    assert [name for name, r in by_name.items() if r["problem"]] == ["BROKEN"]
    client, _ = site(session)
    answer = client.get("/api/photos")
    assert answer.status_code == 200
    assert {r["name"][:-4]: r["rating"] for r in answer.json()["photos"]} == SHOWN_AS


def test_real_sidecars_with_out_of_range_ratings_are_listed_and_the_others_stay_as_they_are(tmp_path, store):
    written = {"SEVEN": "7", "MINUS": "-5", "HUGE": "1e300", "WORD": "lots", "OVER": "1e999"}
    session = open_session(tmp_path, store, [f"{name}.jpg" for name in [*written, "PLAIN"]])
    for name, text in written.items():
        (tmp_path / "shoot" / f"{name}.xmp").write_text(xmp_with_rating(text))
    by_name = {r["name"][:-4]: r for r in session.listing()}  # a reload reads them all again
    json.dumps(by_name, allow_nan=False)
    assert {name: r["rating"] for name, r in by_name.items()} == {
        "SEVEN": 7, "MINUS": -5, "HUGE": "1e+300", "WORD": "lots", "OVER": "1e999", "PLAIN": None}
    assert [name for name, r in by_name.items() if r["problem"]] == []


# --- a photo replaced under its name -----------------------------------------------------------


def test_a_photo_replaced_under_its_name_is_refused_once_and_handed_back_as_it_is_now(tmp_path, store):
    session = open_session(tmp_path, store, ["IMG_0001.jpg", "IMG_0003.jpg"])
    photo = tmp_path / "shoot" / "IMG_0003.jpg"
    seen = rows(session)["IMG_0003.jpg"]
    make_photo(photo, seed=99, size=(120, 80))  # another photo under the same name, written in place
    with pytest.raises(ChangedSinceShown) as refused:
        session.decide(seen["id"], "stars", 4, shown=shown(seen))
    assert str(refused.value) == "IMG_0003.jpg changed on disk since it was shown; reloaded — press again"
    now = refused.value.row
    assert now["v"] == sha(photo)[:16] and now["gen"] == seen["gen"] + 1 and now["changed"] is True
    assert not (tmp_path / "shoot" / "IMG_0003.xmp").exists()  # nothing rated the unseen photo
    assert Image.open(io.BytesIO(session.image(now["id"], "preview"))).size == (120, 80)
    answer = session.decide(now["id"], "stars", 4, shown=shown(now))  # pressed again, on what is shown
    assert answer["rating"] == 4 and answer["gen"] == now["gen"] + 1  # a decision is a change too


def test_over_http_the_refusal_is_one_line_and_the_old_images_url_never_serves_the_new_photo(tmp_path, store):
    session = open_session(tmp_path, store, ["IMG_0003.jpg"])
    client, headers = site(session)
    seen = client.get("/api/photos").json()["photos"][0]
    assert client.get(f"/img/0/preview?v={seen['v']}").status_code == 200
    make_photo(tmp_path / "shoot" / "IMG_0003.jpg", seed=98, size=(120, 80))
    r = client.post("/api/decide", json={"id": 0, "action": "reject", "v": seen["v"], "gen": seen["gen"]},
                    headers=headers)
    assert r.status_code == 409
    assert r.json()["error"] == "IMG_0003.jpg changed on disk since it was shown; reloaded — press again"
    new = r.json()["photo"]
    old_url = client.get(f"/img/0/preview?v={seen['v']}")
    assert old_url.status_code == 404 and old_url.text == "IMG_0003.jpg changed on disk since it was shown"
    image = client.get(f"/img/0/preview?v={new['v']}")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (120, 80)
    no_version = client.post("/api/decide", json={"id": 0, "action": "reject"}, headers=headers)
    assert no_version.status_code == 400
    assert no_version.json() == {"error": "bad request: a decision names the version (v, gen) of the photo shown"}


# --- a sidecar another program changed ---------------------------------------------------------


@needs_exiftool
def test_a_sidecar_re_rated_elsewhere_is_read_again_and_p_on_the_old_state_is_refused(tmp_path, store):
    session = open_session(tmp_path, store, ["IMG_0001.jpg", "IMG_0004.jpg"])
    sidecar = tmp_path / "shoot" / "IMG_0004.xmp"
    seen = rows(session)["IMG_0004.jpg"]
    picked = session.decide(seen["id"], "pick", shown=shown(seen))
    assert picked["picked"] is True and read_back(sidecar)["Label"] == "Green"
    rev = session.changes()["rev"]
    exiftool("-overwrite_original", "-XMP-xmp:Label=", "-XMP-xmp:Rating=2", sidecar)  # darktable, say
    changed = session.changes(rev)
    assert [(r["name"], r["rating"], r["picked"]) for r in changed["photos"]] == [("IMG_0004.jpg", 2, False)]
    assert session.changes(changed["rev"])["photos"] == []  # nothing more changed since
    with pytest.raises(ChangedSinceShown, match=r"^IMG_0004\.xmp changed on disk since it was shown; "
                                                r"reloaded — press again$"):
        session.decide(seen["id"], "pick", shown=shown(picked))  # P on the page that still showed the pick
    assert "Label" not in read_back(sidecar)  # the label the photographer removed stays removed
    now = changed["photos"][0]
    answer = session.decide(now["id"], "stars", 5, shown=shown(now))
    assert (answer["rating"], answer["picked"]) == (5, False)  # the answer is what the sidecar holds
    assert read_back(sidecar) == {"SourceFile": str(sidecar), "Rating": 5}


def test_keys_faster_than_the_answers_all_carry_what_was_shown_and_all_land(tmp_path, store):
    """A page's own writes are never taken for another's change: what it showed stays good for it."""
    session = open_session(tmp_path, store, ["IMG_0001.jpg"])
    seen = rows(session)["IMG_0001.jpg"]
    for action, value in [("stars", 1), ("stars", 2), ("reject", None), ("pick", None), ("clear", None)]:
        answer = session.decide(seen["id"], action, value, shown=shown(seen), client="page")
    assert (answer["rating"], answer["picked"], answer["gen"]) == (None, True, seen["gen"] + 5)
    assert session.changes(answer["rev"])["photos"] == []


def test_move_leaves_a_reject_replaced_since_it_was_shown_and_the_page_hears_it_stayed(tmp_path, store):
    session = open_session(tmp_path, store, ["A.jpg", "B.jpg"])
    for row in session.listing():
        session.decide(row["id"], "reject", shown=shown(row))
    client, headers = site(session)
    rev = client.get("/api/photos").json()["rev"]
    make_photo(tmp_path / "shoot" / "A.jpg", seed=77, size=(120, 80))  # the page has not seen this one
    r = client.post("/api/move-rejects", json={"since": rev}, headers=headers)
    assert r.status_code == 200
    moved, changed = r.json()["moved"], r.json()["changed"]
    assert [session.photos[i].ranked.path for i in moved] == [str(tmp_path / "shoot" / "B.jpg")]
    assert [(row["name"], row["rating"]) for row in changed] == [("A.jpg", -1)]
    assert (tmp_path / "shoot" / "A.jpg").exists() and not (tmp_path / "shoot" / "B.jpg").exists()


# --- two photos, one sidecar; two pages ----------------------------------------------------------


def test_two_photos_sharing_a_sidecar_are_shown_with_the_problem_and_their_keys_refused(tmp_path, store):
    session = open_session(tmp_path, store, ["A.jpg", "A.png", "B.jpg"])
    listing = rows(session)
    expected = {"A.jpg": "A.jpg and A.png share the sidecar A.xmp", "A.png": "A.png and A.jpg share the sidecar A.xmp",
                "B.jpg": None}
    assert {n: r["problem"] and r["problem"].split(" (")[0] for n, r in listing.items()} == expected
    client, headers = site(session)
    body = {"id": listing["A.png"]["id"], "action": "stars", "value": 1, "v": listing["A.png"]["v"],
            "gen": listing["A.png"]["gen"], "client": "tab1"}
    answer = client.post("/api/decide", json=body, headers=headers)
    assert answer.status_code == 409 and answer.json()["error"].startswith(expected["A.png"])
    assert not (tmp_path / "shoot" / "A.xmp").exists()


@needs_exiftool
def test_a_key_from_a_page_that_did_not_see_another_pages_decision_is_refused(tmp_path, store):
    """Two tabs on one review: tab 2 picks, tab 1 (not yet polled) presses P meaning "pick": it
    would take tab 2's pick off. Refused, whatever the key (a toggle, stars, a colour), and handed
    the photo as it is; pressed again on what it now shows, it lands. Each tab's own keys, faster
    than their answers, are no news to it."""
    session = open_session(tmp_path, store, ["IMG_0006.jpg", "IMG_0005.jpg"])
    sidecar = tmp_path / "shoot" / "IMG_0006.xmp"
    seen = rows(session)["IMG_0006.jpg"]  # both tabs show it unpicked, unrated
    session.decide(seen["id"], "pick", shown=shown(seen), client="tab2")
    for action, value in [("pick", None), ("stars", 2), ("colour", "Red"), ("clear", None)]:
        with pytest.raises(ChangedSinceShown, match=r"^IMG_0006\.jpg: its decision was changed in another page of "
                                                    r"this review since it was shown; reloaded — press again$") as e:
            session.decide(seen["id"], action, value, shown=shown(seen), client="tab1")
        assert (e.value.row["picked"], e.value.row["rating"]) == (True, None)
    assert read_back(sidecar) == {"SourceFile": str(sidecar), "Label": "Green"}
    now = e.value.row
    first = session.decide(now["id"], "stars", 2, shown=shown(now), client="tab1")
    second = session.decide(now["id"], "stars", 3, shown=shown(now), client="tab1")  # before the first's answer
    assert (first["rating"], second["rating"], second["picked"]) == (2, 3, True)
    with pytest.raises(ChangedSinceShown):  # tab 2 still shows the pick alone
        session.decide(seen["id"], "stars", 5, shown=(now["v"], now["gen"]), client="tab2")
    assert read_back(sidecar)["Rating"] == 3


@needs_exiftool
def test_u_undoes_this_pages_own_last_action_never_another_pages(tmp_path, store):
    session = open_session(tmp_path, store, ["IMG_0005.jpg", "IMG_0006.jpg"])
    listing = rows(session)
    five, six = listing["IMG_0005.jpg"], listing["IMG_0006.jpg"]
    session.decide(five["id"], "stars", 4, shown=shown(five), client="tab1")
    session.decide(six["id"], "stars", 3, shown=shown(six), client="tab2")
    undone = session.undo("tab1")  # tab 1's own last action, though tab 2's came after
    assert (undone["name"], undone["rating"]) == ("IMG_0005.jpg", None)
    assert read_back(tmp_path / "shoot" / "IMG_0006.xmp")["Rating"] == 3
    with pytest.raises(Exception, match="^nothing to undo on this page"):
        session.undo("tab1")
    assert session.undo("tab3", ["tab2"])["name"] == "IMG_0006.jpg"  # tab 2 reloaded: the same tab
    assert session.undo("tab1") is None


@needs_exiftool
def test_the_page_shows_the_decision_where_the_rating_reader_finds_it_embedded_xmp_and_the_raws_sidecar(tmp_path, store):
    """What Lightroom Classic reads of a JPEG is its own XMP: the page shows it (2 stars, Purple),
    as `tag` reads it, and a key is made on that; exiftool changing it while it is shown refuses
    the next key. A RAW's sidecar (darktable rates the RAW) is read too."""
    folder = tmp_path / "shoot"
    b, c = make_photo(folder / "B.jpg", seed=1), make_photo(folder / "C.jpg", seed=2)
    raw = folder / "C.CR2"
    raw.write_bytes(b"raw")
    exiftool("-overwrite_original", "-XMP-xmp:Rating=2", "-XMP-xmp:Label=Purple", b)
    (folder / "C.CR2.xmp").write_text(xmp_with_rating("4"))
    store.save([FileRecord(str(p), p.stat().st_size, p.stat().st_mtime_ns, sha(p)) for p in (b, c)], [], "m")
    ranked = [RankedPhoto(rank=1, path=str(b), score=0.9, label=""),
              RankedPhoto(rank=2, path=str(c), score=0.8, label="", companions=[str(raw)])]
    writer = DecisionWriter(store.state, {"command": "review"}, embed=True)
    session = ReviewSession(store, ranked, {}, [str(folder)], writer, ThumbnailCache(tmp_path / "thumbs"), "m")
    listing = rows(session)
    assert [(r["rating"], r["colour"], r["picked"]) for r in (listing["B.jpg"], listing["C.jpg"])] == [
        (2, "Purple", False), (4, None, False)]
    seen = listing["B.jpg"]
    answer = session.decide(seen["id"], "stars", 4, shown=shown(seen), client="tab")
    assert (answer["rating"], answer["colour"]) == (4, "Purple")
    assert exiftool_json(b, "-XMP:Rating", "-XMP:Label") == {"SourceFile": str(b), "Rating": 4, "Label": "Purple"}
    exiftool("-overwrite_original", "-XMP-xmp:Label=Red", b)  # Lightroom, say, while the page shows Purple
    with pytest.raises(ChangedSinceShown, match=r"^B\.jpg changed on disk since it was shown"):
        session.decide(seen["id"], "pick", shown=shown(answer), client="tab")
    now = rows(session)["B.jpg"]
    assert (now["rating"], now["colour"]) == (4, "Red")
    assert exiftool_json(b, "-XMP:Label")["Label"] == "Red"


def test_odd_exif_texts_are_decoded_and_cut_for_the_info_panel(tmp_path, store):
    from clip_cull.core.images import MAX_EXIF_TEXT, exif_text

    assert exif_text(b"Ca\xffnon\x00junk") == "Ca\u00ffnon"  # not UTF-8: Latin-1, cut at the NUL
    assert exif_text([69, 70, 32, 53, 48, 0, 0]) == "EF 50"  # a byte list, as exifread hands UNDEFINED
    assert exif_text("Canon\nEOS  R6\x00") == "Canon EOS R6"
    assert exif_text(b"") is None and exif_text(None) is None
    exif = Image.Exif()
    exif[0x8769] = {0xA434: "L" * 20_000}
    photo = make_photo(tmp_path / "shoot" / "LONG.jpg", seed=1, exif=exif)
    store.save([FileRecord(str(photo), photo.stat().st_size, photo.stat().st_mtime_ns, sha(photo))], [], "m")
    session = ReviewSession(store, [RankedPhoto(rank=1, path=str(photo), score=1.0, label="")], {}, [str(tmp_path)],
                            DecisionWriter(store.state, {"command": "review"}), ThumbnailCache(tmp_path / "thumbs"), "m")
    assert session.info(0)["lens"] == "L" * (MAX_EXIF_TEXT - 1) + "…"


@pytest.mark.parametrize("kind", ["link", "folder", "fifo", "huge", "not xml", "doctype"])
def test_a_sidecar_that_cannot_be_read_is_the_rows_problem_not_unrated(tmp_path, store, kind):
    import os

    session = open_session(tmp_path, store, ["IMG_0011.jpg"])
    sidecar = tmp_path / "shoot" / "IMG_0011.xmp"
    elsewhere = tmp_path / "elsewhere.xmp"
    elsewhere.write_text(xmp_with_rating("3"))
    if kind == "link":
        sidecar.symlink_to(elsewhere)
    elif kind == "folder":
        sidecar.mkdir()
    elif kind == "fifo":
        os.mkfifo(sidecar)
    elif kind == "huge":
        with open(sidecar, "wb") as f:
            f.truncate(200 << 20)
    elif kind == "not xml":
        sidecar.write_text("hello <not xml")
    else:
        sidecar.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + xmp_with_rating("&a;"))
    row = rows(session)["IMG_0011.jpg"]
    assert row["problem"] and row["problem"].startswith("cannot be read: IMG_0011.xmp "), row["problem"]
    with pytest.raises(Exception, match="IMG_0011.xmp"):
        session.decide(row["id"], "stars", 4, shown=shown(row), client="tab")


@pytest.mark.parametrize("kind", ["fifo", "folder", "truncated"])
def test_a_photo_replaced_by_a_fifo_a_folder_or_a_truncated_file_says_so_and_refuses_keys(tmp_path, store, kind):
    import os

    session = open_session(tmp_path, store, ["IMG_0001.jpg"])
    photo = tmp_path / "shoot" / "IMG_0001.jpg"
    if kind == "truncated":
        data = photo.read_bytes()
        photo.write_bytes(data[:len(data) // 3])
    else:
        photo.unlink()
        os.mkfifo(photo) if kind == "fifo" else photo.mkdir()
    row = rows(session)["IMG_0001.jpg"]
    if kind == "truncated":
        with pytest.raises(Exception):
            session.image(row["id"], "preview")
        row = rows(session)["IMG_0001.jpg"]
    expected = {"fifo": "the photo is now not a regular file (a FIFO / named pipe), no photo",
                "folder": "the photo is now not a regular file (a folder), no photo",
                "truncated": "the photo cannot be shown: "}[kind]
    assert row["problem"].startswith(expected), row["problem"]
    with pytest.raises(Exception, match=f"^IMG_0001.jpg: {re.escape(expected)}"):
        session.decide(row["id"], "stars", 4, shown=shown(row), client="tab")
    assert not (tmp_path / "shoot" / "IMG_0001.xmp").exists()


def test_a_key_waiting_for_another_clipcull_holds_up_no_poll(tmp_path, store):
    """Another clipcull process holds the journal (a move, a tag): the key waits for it, and the
    page's polls are answered meanwhile, not after the wait (the key is still waiting then)."""
    import fcntl
    import os
    import threading

    from clip_cull.culling.journal import _LOCK_SUFFIX

    session = open_session(tmp_path, store, ["IMG_0001.jpg"])
    seen = rows(session)["IMG_0001.jpg"]
    waiting = threading.Event()
    session.writer.journal.on_wait = lambda *args: waiting.set()
    fd = os.open(os.path.realpath(store.state.path) + _LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another process holds it

    def press():
        try:
            session.decide(seen["id"], "stars", 4, shown=shown(seen), client="tab")
        except Exception:
            pass

    key = threading.Thread(target=press)
    try:
        key.start()
        assert waiting.wait(30)  # the key is waiting for the journal
        listing = session.changes()  # a poll meanwhile
        assert key.is_alive() and [r["name"] for r in listing["photos"]] == ["IMG_0001.jpg"]
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        key.join()


@needs_exiftool
def test_review_embed_carries_the_caches_embedding_over_to_the_rewritten_photo(tmp_path, store):
    """--embed rewrites the photo's bytes, pixels identical: the next rank must find its embedding
    (and focus figures) under the new content, and the file's row naming it, not embed it again."""
    import numpy as np

    from clip_cull.store.cache import EmbeddingRecord

    folder = tmp_path / "shoot"
    photo = make_photo(folder / "E.jpg", seed=1)
    old = sha(photo)
    vector = np.arange(8, dtype=np.float32) / 8
    store.save([FileRecord(str(photo), photo.stat().st_size, photo.stat().st_mtime_ns, old)],
               [EmbeddingRecord(old, vector, None)], "m", [(old, "quality", 1, {"focus": 12.5})])
    writer = DecisionWriter(store.state, {"command": "review"}, embed=True)
    session = ReviewSession(store, [RankedPhoto(rank=1, path=str(photo), score=1.0, label="")], {}, [str(folder)],
                            writer, ThumbnailCache(tmp_path / "thumbs"), "m")
    seen = rows(session)["E.jpg"]
    session.decide(seen["id"], "stars", 4, shown=shown(seen), client="tab")
    new = sha(photo)
    assert new != old and exiftool_json(photo, "-XMP:Rating")["Rating"] == 4
    assert np.allclose(store.embeddings([new], "m")[new], vector)
    assert store.measurements([new], "quality", 1) == {new: {"focus": 12.5}}
    record = store.file_records([str(photo)])[str(photo)]
    assert (record.fingerprint, record.size, record.mtime_ns) == (new, photo.stat().st_size, photo.stat().st_mtime_ns)
