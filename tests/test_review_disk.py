"""The review page while other programs change the disk under it, as a photographer meets it:
the real `clipcull review` in a subprocess, chromium (Selenium) pressing real keys, sidecars read
back with exiftool. Ratings of any value, a photo replaced under its name, a sidecar re-rated by
another program, an undo conflict, a clicked button.

One server and one browser for the module; the tests run in file order and each says what it leaves.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from test_review import (CHROMEDRIVER, CHROMIUM, EXIFTOOL, exif_read, go_to, press, start_browser, start_server,
                         stop_server, wait_for)
from helpers import exiftool, fails_after, make_photo

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    EXIFTOOL is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs exiftool, chromium and chromedriver (.ci/run installs them)",
)]  # slow: browser tests beyond the quick subset's one smoke test (test_review.py)
# xmp:Rating as other programs wrote it
ODD = {"ODD_SEVEN": "7", "ODD_MINUS": "-5", "ODD_HUGE": "1e300", "ODD_OVER": "1e999", "ODD_WORD": "lots"}
REFUSED = "changed on disk since it was shown; reloaded — press again"


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


def status_line(driver) -> str:
    return text_of(driver, "status")


def polling(driver, on: bool) -> None:
    """Pause the page's every-two-seconds look at the disk, to press a key before it has looked
    (returns once a look already under way has come back)."""
    driver.execute_async_script(f"state.polling = {'true' if on else 'false'};"
                                "Promise.resolve(polled).then(() => arguments[arguments.length - 1]())")


def preview(driver) -> dict:
    return driver.execute_script("const i = document.getElementById('preview');"
                                 "return {src: i.src, width: i.complete ? i.naturalWidth : 0}")


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


def test_a_photo_replaced_on_disk_is_refused_once_then_shown_anew_and_rated_on_the_next_press(browser, shoot):
    folder, _ = shoot
    photo = folder / "IMG_0003.jpg"
    go_to(browser, "IMG_0003.jpg")
    wait_for(lambda: preview(browser)["width"] == 96, what="the first preview")
    polling(browser, False)
    make_photo(photo, seed=99, size=(120, 80))  # another photo under the same name, the page not told
    press(browser, "4")
    wait_for(lambda: status_line(browser) == f"not saved: IMG_0003.jpg {REFUSED}", what="the refusal")
    assert not (folder / "IMG_0003.xmp").exists()  # the photographer never saw the new photo: no stars for it
    new_version = hashlib.sha256(photo.read_bytes()).hexdigest()[:16]
    wait_for(lambda: preview(browser)["width"] == 120, what="the new photo's preview")
    assert preview(browser)["src"].endswith(f"/preview?v={new_version}")
    cell = browser.find_element("css selector", ".cell.current img").get_attribute("src")
    assert cell.endswith(f"/thumb?v={new_version}")
    assert "changed on disk since clipcull ranked it" in text_of(browser, "info-rank")
    press(browser, "4")
    wait_for(lambda: (folder / "IMG_0003.xmp").exists() and exif_read(folder / "IMG_0003.xmp")[0].get("Rating") == 4,
             what="the rating on the second press")
    wait_for(lambda: status_line(browser) == "IMG_0003.jpg: ★★★★☆", what="the saved line")
    polling(browser, True)


def test_a_sidecar_another_program_changed_is_shown_and_p_never_brings_back_a_removed_label(browser, server, shoot):
    folder, _ = shoot
    sidecar = folder / "IMG_0004.xmp"

    go_to(browser, "IMG_0004.jpg")
    polling(browser, False)
    press(browser, "p")
    wait_for(lambda: sidecar.exists() and exif_read(sidecar)[0].get("Label") == "Green", what="the pick")
    wait_for(lambda: text_of(browser, "info-yours") == "unrated · pick", what="the pick on the page")
    exiftool("-overwrite_original", "-XMP-xmp:Label=", "-XMP-xmp:Rating=2", sidecar)  # darktable re-rates it and takes the label off
    press(browser, "p")  # meant as "unpick" on the page that still shows the pick
    wait_for(lambda: status_line(browser) == f"not saved: IMG_0004.xmp {REFUSED}", what="the refusal")
    assert "Label" not in exif_read(sidecar)[0] and exif_read(sidecar)[0]["Rating"] == 2
    wait_for(lambda: text_of(browser, "info-yours") == "★★☆☆☆", what="the sidecar as it is now")
    press(browser, "p")
    wait_for(lambda: exif_read(sidecar)[0].get("Label") == "Green", what="the pick on the second press")
    wait_for(lambda: text_of(browser, "info-yours") == "★★☆☆☆ · pick",
             what="the answer: the sidecar after it")
    assert exif_read(sidecar)[0]["Rating"] == 2

    exiftool("-overwrite_original", "-XMP-xmp:Rating=5", sidecar)  # the window comes back into focus: the page looks again
    browser.execute_script("window.dispatchEvent(new Event('focus'))")
    wait_for(lambda: text_of(browser, "info-yours") == "★★★★★ · pick", what="the re-read on focus")
    exiftool("-overwrite_original", "-XMP-xmp:Rating=1", sidecar)  # a reload reads every sidecar again
    browser.refresh()
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), 60, "the reloaded page")
    go_to(browser, "IMG_0004.jpg")
    assert text_of(browser, "info-yours") == "★☆☆☆☆ · pick"
    exiftool("-overwrite_original", "-XMP-xmp:Rating=3", sidecar)  # and while the page is in view, it looks every few seconds
    wait_for(lambda: text_of(browser, "info-yours") == "★★★☆☆ · pick", what="the re-read by polling")


def test_after_an_undo_conflict_the_next_keys_go_through_and_the_error_leaves_the_status_line(browser, shoot):
    import subprocess

    folder, _ = shoot
    sidecar = folder / "IMG_0001.xmp"
    go_to(browser, "IMG_0001.jpg")
    press(browser, "2")
    wait_for(lambda: sidecar.exists() and exif_read(sidecar)[0].get("Rating") == 2, what="the rating")
    subprocess.run([EXIFTOOL, "-overwrite_original", "-XMP-xmp:Rating=5", str(sidecar)], check=True,
                   capture_output=True, timeout=60)
    press(browser, "u")
    line = wait_for(lambda: status_line(browser) if status_line(browser).startswith("undo failed: ") else None,
                    what="the undo conflict")
    assert "IMG_0001.xmp" in line and line.count("undo failed") == 1
    assert exif_read(sidecar)[0]["Rating"] == 5  # left as the other program made it
    go_to(browser, "IMG_0002.jpg")
    press(browser, "3")
    wait_for(lambda: status_line(browser) == "IMG_0002.jpg: ★★★☆☆", what="the old error replaced")
    assert "error" not in browser.find_element("id", "status").get_attribute("class")
    press(browser, "u")  # sent as ever: undoes the 3
    wait_for(lambda: status_line(browser) == "undone: IMG_0002.jpg: unrated", what="the next undo")
    assert not (folder / "IMG_0002.xmp").exists()  # clipcull made it; undo took it away


def test_a_clicked_button_keeps_no_focus_space_is_the_pages_zoom_not_a_second_click(browser, shoot):
    folder, _ = shoot
    go_to(browser, "IMG_0002.jpg")
    press(browser, "x")
    wait_for(lambda: (folder / "IMG_0002.xmp").exists() and exif_read(folder / "IMG_0002.xmp")[0].get("Rating") == -1,
             what="the reject")
    browser.find_element("id", "move").click()  # one click moves the rejects
    wait_for(lambda: status_line(browser).startswith("moved 1 reject "), what="the move")
    assert (folder / "_rejects" / "IMG_0002.jpg").exists()
    go_to(browser, "IMG_0001.jpg")
    press(browser, "x")  # another reject, after the click
    wait_for(lambda: exif_read(folder / "IMG_0001.xmp")[0].get("Rating") == -1, what="the second reject")
    press(browser, " ")  # Lightroom's zoom: the page's loupe, not the button pressed again
    wait_for(lambda: browser.execute_script("return document.getElementById('loupe').hidden === false"),
             what="the loupe")
    time.sleep(1.0)  # a second click would have moved it by now
    assert (folder / "IMG_0001.jpg").exists() and not (folder / "_rejects" / "IMG_0001.jpg").exists()
    press(browser, " ")
    wait_for(lambda: browser.execute_script("return document.getElementById('loupe').hidden === true"),
             what="the loupe closed")
    assert browser.execute_script("return document.activeElement === document.body")  # the button never took it
