"""Faces in `clipcull review` (issue 20, point 3), on real portraits: the current photo's faces
close up beside it with their eyes and focus, a burst's main face across its frames, and the
filters for closed eyes and soft faces. The real command in a subprocess, Debian's chromium.

The shoot is test_faces_culling's (scikit-image's astronaut, matplotlib's Grace Hopper, the
astronaut mirrored with her lids moved shut in the cache's result, the astronaut with her head
blurred, scikit-image's cat) plus a burst: the astronaut twice more, a second apart.
"""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers import fails_after
from test_faces_culling import portraits, shut_eyes_in_cache
from test_review import (CHROMEDRIVER, CHROMIUM, EXIFTOOL, _exif, cell_names, clipcull, go_to, press,
                         review_env, wait_for)
from test_review import browser, server  # noqa: F401  the module's server and browser, on this module's shoot

pytestmark = [
    pytest.mark.skipif(EXIFTOOL is None or CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs exiftool, chromium and chromedriver"),
    pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="the faces extra is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image ships the portraits"),
]


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(200):
        yield


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, tiny_model_files):
    import skimage.data

    base = tmp_path_factory.mktemp("review-faces")
    folder = base / "shoot"
    paths = portraits(folder)
    for minute, path in enumerate(paths.values()):  # minutes apart: no portrait is in another's burst
        with Image.open(path) as im:
            im.convert("RGB").save(path, quality=95, exif=_exif(f"2024:05:01 09:{10 * minute:02d}:00"))
    astronaut = Image.fromarray(skimage.data.astronaut())
    for i, when in enumerate(("2024:05:01 10:00:00", "2024:05:01 10:00:01")):
        astronaut.save(folder / f"BURST_{i}.jpg", quality=95, exif=_exif(when))
    env = review_env(base, tiny_model_files)
    ranked = clipcull(env, "rank", folder, timeout=180)
    assert ranked.returncode == 0, ranked.stderr
    shut_eyes_in_cache(env["CLIPCULL_DB"], paths["closed"])
    return folder, env


def face_cards(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#faces .face')].map((f) => ({
          cls: f.className, text: f.querySelector('figcaption').textContent,
          src: f.querySelector('img').getAttribute('src'),
          loaded: f.querySelector('img').complete && f.querySelector('img').naturalWidth}))""")


def test_the_current_photos_faces_are_shown_close_up_with_eyes_and_focus(browser, server, shoot):
    folder, _ = shoot
    go_to(browser, "closed.jpg")
    (card,) = wait_for(lambda: face_cards(browser) if len(face_cards(browser)) == 1 else None, what="one face")
    assert "closed" in card["cls"].split() and card["text"].startswith("eyes closed 0.00 · sharp ")
    go_to(browser, "soft.jpg")
    (card,) = wait_for(lambda: face_cards(browser) if "soft" in str(face_cards(browser)) else None, what="the soft face")
    assert card["text"].startswith("eyes open ") and " · soft " in card["text"]
    go_to(browser, "cat.jpg")
    wait_for(lambda: browser.execute_script("return document.getElementById('faces').hidden"), what="no faces strip")
    go_to(browser, "grace.jpg")
    (card,) = wait_for(lambda: face_cards(browser) if len(face_cards(browser)) == 1 else None, what="Grace's face")
    assert card["text"].startswith("eyes open ") and " · sharp " in card["text"]
    wait_for(lambda: face_cards(browser)[0]["loaded"], what="the close-up")
    # The close-up is her face: computed here from the box `rank --json` prints, on the photo itself
    status, _, data = server.request("GET", "/" + card["src"])
    assert status == 200
    close_up = np.asarray(Image.open(io.BytesIO(data)).convert("L"), float)
    rows = [json.loads(line) for line in clipcull(shoot[1], "rank", "--json", folder).stdout.splitlines()]
    x0, y0, x1, y1 = next(r for r in rows if r["path"] == str(folder / "grace.jpg"))["face_details"][0]["box"]
    with Image.open(folder / "grace.jpg") as im:
        photo = im.convert("L")
    w, h = photo.size
    cx, cy, half = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h, 0.7 * max((x1 - x0) * w, (y1 - y0) * h)
    region = photo.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    expected = np.asarray(region.resize(close_up.shape[::-1], Image.BICUBIC), float)
    assert close_up.shape == (192, 192)
    assert np.abs(close_up - expected).mean() < 12  # JPEG twice and a resample apart: the same face


def test_a_burst_shows_its_main_face_across_its_frames(browser, server):
    from selenium.webdriver.common.keys import Keys

    stacked = cell_names(browser)
    lead = next(n for n in stacked if n.startswith("BURST_"))
    go_to(browser, lead)
    cards = wait_for(lambda: face_cards(browser) if len(face_cards(browser)) == 2 else None, what="the burst's faces")
    ids = {p["name"]: p["id"] for p in server.photos().values()}
    assert [c["src"].split("/")[1] for c in cards] == sorted(
        [str(ids["BURST_0.jpg"]), str(ids["BURST_1.jpg"])], key=lambda i: server_rank(server, int(i)))
    assert sum("current" in c["cls"].split() for c in cards) == 1
    press(browser, Keys.ENTER)
    wait_for(lambda: len(browser.find_elements("css selector", ".cell")) == 2, what="the open burst")
    assert len(face_cards(browser)) == 2
    press(browser, Keys.ESCAPE)
    wait_for(lambda: len(browser.find_elements("css selector", ".cell")) == len(stacked), what="the closed burst")


def server_rank(server, photo_id: int) -> int:
    return next(p["rank"] for p in server.photos().values() if p["id"] == photo_id)


def test_filters_for_closed_eyes_and_soft_faces(browser):
    from selenium.webdriver.support.ui import Select

    choose = Select(browser.find_element("id", "check")).select_by_value
    choose("eyes-closed")
    wait_for(lambda: cell_names(browser) == ["closed.jpg"], what="the closed-eyes filter")
    choose("face-soft")
    wait_for(lambda: cell_names(browser) == ["soft.jpg"], what="the soft-face filter")
    choose("any")
    wait_for(lambda: "cat.jpg" in cell_names(browser), what="all again")
