"""A review session against a disk that other programs change while the page is open: ratings
of any value. In process (the real ReviewSession and server app, Starlette's TestClient); the
page in chromium is in test_review_disk.py."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from clip_cull.ranking import RankedPhoto
from clip_cull.review.decisions import Decision, DecisionWriter
from clip_cull.review.server import Access, build_app
from clip_cull.review.session import ReviewSession
from clip_cull.review.thumbs import ThumbnailCache
from clip_cull.state import StateStore
from clip_cull.store import FileRecord, Store
from conftest import make_photo

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exiftool(*args) -> str:
    return subprocess.run([EXIFTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=True).stdout


def read_back(path: Path) -> dict:
    return json.loads(exiftool("-j", "-XMP:Rating", "-XMP:Label", path))[0]


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
    store.save([FileRecord(str(p), p.stat().st_size, p.stat().st_mtime_ns, sha256(p)) for p in photos], [], "m")
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

    def current(self, photo: str) -> Decision:
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
