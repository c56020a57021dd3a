"""The review page while other programs change the disk under it, as a photographer meets it:
the real `clipcull review` in a subprocess, chromium (Selenium) pressing real keys, sidecars read
back with exiftool. Ratings of any value.

One server and one browser for the module; the tests run in file order and each says what it leaves.
"""

from __future__ import annotations

import os

import pytest

from conftest import fails_after, make_photo
from test_review import (CHROMEDRIVER, CHROMIUM, EXIFTOOL, exif_read, go_to, press, start_browser, start_server,
                         stop_server, wait_for)

pytestmark = pytest.mark.skipif(
    EXIFTOOL is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs exiftool, chromium and chromedriver (.ci/run installs them)",
)
# xmp:Rating as other programs wrote it
ODD = {"ODD_SEVEN": "7", "ODD_MINUS": "-5", "ODD_HUGE": "1e300", "ODD_OVER": "1e999", "ODD_WORD": "lots"}


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(150):
        yield


def xmp_with_rating(text: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="{text}"/>'
            '</rdf:RDF></x:xmpmeta>\n')


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, tiny_model_files):
    base = tmp_path_factory.mktemp("review-disk")
    folder = base / "shoot"
    for i in range(1, 5):
        make_photo(folder / f"IMG_000{i}.jpg", seed=i)
    for i, (name, rating) in enumerate(ODD.items()):
        make_photo(folder / f"{name}.jpg", seed=10 + i)
        (folder / f"{name}.xmp").write_text(xmp_with_rating(rating))
    config, checkpoint = tiny_model_files
    env = {**os.environ, "PYTHONPATH": str(__import__("test_review").ROOT), "HF_HUB_OFFLINE": "1",
           "CLIPCULL_DB": str(base / "cache" / "c.db"), "CLIPCULL_MODEL": str(config),
           "CLIPCULL_PRETRAINED": str(checkpoint), "XDG_CACHE_HOME": str(base / "xdg"),
           "CLIPCULL_STATE": str(base / "state" / "state.db")}
    return folder, env


@pytest.fixture(scope="module")
def server(shoot):
    srv = start_server(*shoot)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser(server):
    driver = start_browser(server.url)
    yield driver
    driver.quit()


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_ratings_other_programs_wrote_out_of_range_are_shown_as_they_are_and_the_page_works(browser, shoot):
    folder, _ = shoot
    assert len(browser.find_elements("css selector", ".cell")) == 9  # the page is drawn: not blank
    for name, shown in [("ODD_SEVEN", "7 (out of range)"), ("ODD_MINUS", "-5 (out of range)"),
                        ("ODD_HUGE", "1e+300 (out of range)"), ("ODD_OVER", "1e999 (out of range)"),
                        ("ODD_WORD", "lots (not a rating)"), ("IMG_0001", "unrated")]:
        go_to(browser, f"{name}.jpg")
        assert text_of(browser, "info-yours") == shown
        badge = browser.find_element("css selector", ".cell.current .badges").text
        assert ("★" not in badge and "range" not in badge) if shown == "unrated" else shown in badge
    # what the reader may hand over one day, as the page shows it
    assert browser.execute_script("return [2.5, 'lots', 6, -1, 3, null].map(ratingText)") == [
        "2.5 (out of range)", "lots (not a rating)", "6 (out of range)", "reject", "★★★☆☆", "unrated"]
    go_to(browser, "ODD_SEVEN.jpg")
    press(browser, "3")  # the odd value is the photographer's to replace
    wait_for(lambda: exif_read(folder / "ODD_SEVEN.xmp")[0].get("Rating") == 3, what="the new rating")
    wait_for(lambda: text_of(browser, "info-yours") == "★★★☆☆", what="the new rating on the page")
