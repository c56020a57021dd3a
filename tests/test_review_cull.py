"""`clipcull review` as photographers cull (issue 21), in Debian's chromium through Selenium: real
keys pressed, the results read back with exiftool (the sidecar, or the photo itself with --embed).

One server and one browser for the module (the machine is small); the tests run in file order and
each says what state it leaves. A second server, with --embed, runs for its own test only.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from helpers import exiftool, exiftool_json, fails_after, make_photo, xmp_of
from test_review import (CHROMEDRIVER, CHROMIUM, EXIFTOOL, cell_names, go_to, press, review_env, shown_name,
                         start_server, stop_server, wait_for)
from test_review import browser, server  # noqa: F401  the module's server and browser, on this module's shoot

pytestmark = pytest.mark.skipif(EXIFTOOL is None or CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs exiftool, chromium and chromedriver (.ci/run installs them)")
LENS = "EF50mm f/1.8 STM"


@pytest.fixture(autouse=True)
def time_limit():
    with fails_after(150):
        yield


def camera_exif(when: str, seconds: int = 250) -> Image.Exif:
    """EXIF as a camera writes it: capture time, camera, lens, exposure, aperture, ISO, focal length."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R6"
    exif[0x8769] = {0x9003: when, 0x829A: IFDRational(1, seconds), 0x829D: IFDRational(28, 10), 0x8827: 400,
                    0x920A: IFDRational(50, 1), 0xA434: LENS}
    return exif


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, tiny_model_files):
    """Eight photos large enough to look at 100 % (2400 x 1600), hours apart; a burst of three, a
    second apart (the same pixels: one stack); and one name with a zero-width space."""
    base = tmp_path_factory.mktemp("cull")
    folder = base / "shoot"
    for i in range(1, 9):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i, size=(2400, 1600), quality=90,
                   exif=camera_exif(f"2024:05:01 0{i}:00:00", seconds=125 * i))
    for i in range(3):
        make_photo(folder / f"BURST_{i}.jpg", seed=20, size=(600, 400), exif=camera_exif(f"2024:05:01 10:00:0{i}"))
    make_photo(folder / "ZERO\u200bWIDTH.jpg", seed=30)
    env = review_env(base, tiny_model_files)
    return folder, env


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def rating_of(sidecar: Path):
    return xmp_of(sidecar).get("Rating") if sidecar.exists() else None


def current_name(driver) -> str:
    return js(driver, "return current().name")


# --- flags, labels, auto-advance ---------------------------------------------------------------


def test_flags_are_exclusive_and_6_to_9_set_colour_labels(browser, shoot):
    folder, _ = shoot
    sidecar = folder / "IMG_0001.xmp"
    go_to(browser, "IMG_0001.jpg")
    press(browser, "x")
    wait_for(lambda: rating_of(sidecar) == -1, what="the reject")
    press(browser, "p")  # picked: no longer rejected
    wait_for(lambda: xmp_of(sidecar).get("Label") == "Green", what="the pick")
    assert rating_of(sidecar) == 0
    wait_for(lambda: text(browser, "info-yours") == "unrated · pick", what="the pick on the page")
    press(browser, "x")  # rejected: no longer picked
    wait_for(lambda: rating_of(sidecar) == -1 and "Label" not in xmp_of(sidecar), what="the reject again")
    press(browser, "6")
    wait_for(lambda: xmp_of(sidecar).get("Label") == "Red", what="the red label")
    assert rating_of(sidecar) == -1  # a colour is no flag: the reject stays
    wait_for(lambda: text(browser, "info-yours") == "reject · label Red", what="the label on the page")
    press(browser, "9")
    wait_for(lambda: xmp_of(sidecar).get("Label") == "Blue", what="the blue label")
    press(browser, "9")  # the same key again takes it off
    wait_for(lambda: "Label" not in xmp_of(sidecar), what="the label taken off")
    press(browser, "7", "u")  # U undoes the yellow label
    wait_for(lambda: text(browser, "status").startswith("undone: IMG_0001.jpg"), what="the undo")
    assert "Label" not in xmp_of(sidecar) and rating_of(sidecar) == -1


def test_auto_advance_is_a_key_shown_on_screen_and_moves_on_after_a_rating(browser, shoot):
    folder, _ = shoot
    go_to(browser, "IMG_0002.jpg")
    after = js(browser, "return state.byId.get(state.view[state.cur + 1]).name")
    press(browser, "a")
    assert text(browser, "auto") == "auto-advance on"
    press(browser, "3")
    wait_for(lambda: current_name(browser) == after, what="the next photo")
    wait_for(lambda: rating_of(folder / "IMG_0002.xmp") == 3, what="the rating of the photo rated")
    press(browser, "p")  # a flag moves on too, and lands on the photo it was pressed on
    wait_for(lambda: (folder / Path(after).with_suffix(".xmp")).exists()
             and xmp_of(folder / Path(after).with_suffix(".xmp")).get("Label") == "Green", what="the pick")
    press(browser, "a")
    assert text(browser, "auto") == "auto-advance off"
    here = current_name(browser)
    press(browser, "2")
    wait_for(lambda: rating_of(folder / Path(here).with_suffix(".xmp")) == 2, what="the rating")
    assert current_name(browser) == here  # off: the photo stays


# --- filters -------------------------------------------------------------------------------------


def choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def option_counts(driver, select_id: str) -> dict[str, int]:
    return {o["value"]: int(o["text"].rsplit("(", 1)[1].rstrip(")")) for o in js(
        driver, f"return [...document.getElementById('{select_id}').options].map(o => ({{value: o.value, text: o.text}}))")}


def test_filters_by_rating_label_flag_and_checks_combine_and_count(browser, server):
    rows = server.photos()  # what the sidecars hold, as the server reads them: the counts computed here
    stars = {n: r["rating"] for n, r in rows.items()}
    at_least_3 = sum(1 for v in stars.values() if isinstance(v, int) and v >= 3)
    # the page's counts come from its own last poll (every 2 s): the earlier tests' keys reach it then
    wait_for(lambda: option_counts(browser, "rating-op")["ge"] == at_least_3, what="the counts of the page")
    choose(browser, "rating-op", "ge")
    choose(browser, "rating-n", "2")
    expected = sorted(n for n, v in stars.items() if v in (2, 3, 4, 5))
    wait_for(lambda: sorted(cell_names(browser)) == expected, what="stars at least 2")
    choose(browser, "rating-op", "eq")
    wait_for(lambda: sorted(cell_names(browser)) == sorted(n for n, v in stars.items() if v == 2), what="exactly 2")
    choose(browser, "rating-op", "le")
    choose(browser, "rating-n", "3")
    wait_for(lambda: sorted(cell_names(browser)) == sorted(n for n, v in stars.items() if v in (1, 2, 3)),
             what="at most 3")
    choose(browser, "rating-op", "any")
    choose(browser, "filter", "picks")
    picks = sorted(n for n, r in rows.items() if r["picked"])
    wait_for(lambda: sorted(cell_names(browser)) == picks, what="the picks")
    choose(browser, "rating-op", "ge")  # combined: picks rated at least 3
    wait_for(lambda: sorted(cell_names(browser)) == sorted(n for n in picks if (stars[n] or 0) >= 3),
             what="picks with 3 stars or more")
    choose(browser, "rating-op", "any")
    choose(browser, "filter", "unflagged")
    unlabelled = sum(1 for r in rows.values() if not r["picked"] and r["rating"] != -1 and not r["colour"])
    wait_for(lambda: option_counts(browser, "colour")["none"] == unlabelled, what="the unlabelled count")
    choose(browser, "filter", "rejects")
    rejects = sorted(n for n, v in stars.items() if v == -1)
    wait_for(lambda: sorted(cell_names(browser)) == rejects, what="the rejects")
    choose(browser, "filter", "all")
    unflagged = sum(1 for r in rows.values() if not r["flags"])  # clipcull's own flags
    wait_for(lambda: (option_counts(browser, "check")["none"], option_counts(browser, "check")["any"])
             == (unflagged, len(rows)), what="the checks' counts")
    choose(browser, "check", "none")
    wait_for(lambda: text(browser, "status").endswith(" · no flags"), what="no flags")
    choose(browser, "check", "any")
    wait_for(lambda: text(browser, "status").endswith(" · all"), what="all again")


# --- the info panel ---------------------------------------------------------------------------


def test_info_panel_shows_exif_facts_score_focus_and_the_previews_histogram(browser, server, shoot):
    folder, _ = shoot
    go_to(browser, "IMG_0003.jpg")
    wait_for(lambda: text(browser, "info-lens") != "", what="the facts")
    facts = exiftool_json(folder / "IMG_0003.jpg", "-n", "-ExposureTime", "-FNumber", "-ISO", "-FocalLength",
                          "-LensModel", "-Model", "-DateTimeOriginal")
    assert text(browser, "info-lens") == facts["LensModel"] == LENS
    assert text(browser, "info-exposure") == (f"1/{round(1 / facts['ExposureTime'])} s · f/{facts['FNumber']:g} · "
                                              f"ISO {facts['ISO']} · {facts['FocalLength']:g} mm")
    assert text(browser, "info-camera") == facts["Model"]
    assert text(browser, "info-captured") == facts["DateTimeOriginal"].replace(":", "-", 2)
    row = server.photos()["IMG_0003.jpg"]
    assert text(browser, "info-rank").startswith(f"#{row['rank']} · score {row['score']:.4f}")
    assert float(text(browser, "info-focus").split()[0]) == row["focus"]
    # The histogram is of the preview the page shows: counted again here with numpy
    drawn = js(browser, "return state.info.get(`${current().id}:${current().v}`).histogram")
    status, _, data = server.request("GET", f"/img/{row['id']}/preview?v={row['v']}")
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for channel, name in enumerate("rgb"):
        assert drawn[name] == np.bincount(pixels[..., channel].ravel(), minlength=256).tolist()
    assert js(browser, "return document.getElementById('histogram').dataset.v") == row["v"]
    painted = js(browser, "const c = document.getElementById('histogram'); "
                          "return [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data].some(v => v > 0)")
    assert painted
    press(browser, "i")  # I hides the panel, I brings it back
    assert js(browser, "return document.getElementById('info').hidden") is True
    press(browser, "i")
    assert js(browser, "return document.getElementById('info').hidden") is False


# --- compare, survey, 100 % ---------------------------------------------------------------------


def panels(driver) -> list[dict]:
    return js(driver, """return [...document.querySelectorAll('#compare figure')].map(f => {
        const frame = f.querySelector('.frame'), img = f.querySelector('img'), r = img.getBoundingClientRect();
        return {name: f.querySelector('figcaption').textContent.split('  ')[0], current: f.classList.contains('current'),
                zoomed: frame.classList.contains('zoomed'), natural: [img.naturalWidth, img.naturalHeight],
                shown: [r.width, r.height], rect: [r.left, r.top, r.right, r.bottom],
                outline: getComputedStyle(img).outlineStyle,
                centre: img.offsetWidth ? [(frame.scrollLeft + frame.clientWidth / 2) / img.offsetWidth,
                                           (frame.scrollTop + frame.clientHeight / 2) / img.offsetHeight] : null,
                src: img.getAttribute('src')};
    })""")


def test_compare_marked_photos_zoom_to_100_at_the_click_linked_and_pan_linked(browser, shoot):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    folder, _ = shoot
    marked = ["IMG_0004.jpg", "IMG_0005.jpg", "IMG_0006.jpg"]
    for name in marked:
        go_to(browser, name)
        press(browser, "s")
    press(browser, "c")
    shown = wait_for(lambda: panels(browser) if len(panels(browser)) == 3 and all(p["natural"][0] for p in panels(browser))
                     else None, what="three photos side by side")
    assert sorted(p["name"] for p in shown) == marked
    current = [p for p in shown if p["current"]]
    assert [p["name"] for p in current] == [current_name(browser)]
    # The outline frames the photo itself: the image element is the photo's shape, not the column's
    for p in shown:
        assert abs(p["shown"][0] / p["shown"][1] - p["natural"][0] / p["natural"][1]) < 0.01
    assert current[0]["outline"] == "solid"
    # A click at a point of one photo: every photo at 100 % around that point
    first = browser.find_elements("css selector", "#compare figure img")[0]
    ActionChains(browser).move_to_element_with_offset(first, -first.size["width"] // 4, first.size["height"] // 4).click().perform()
    zoomed = wait_for(lambda: panels(browser) if js(browser, "return document.getElementById('compare').dataset.ready") == "1"
                      and all(p["zoomed"] for p in panels(browser)) else None, what="100 %")
    ratio = js(browser, "return devicePixelRatio")
    for p in zoomed:
        assert p["src"].split("?")[0].endswith("/full") and p["natural"] == [2400, 1600]
        assert abs(p["shown"][0] - 2400 / ratio) < 1  # one image pixel a screen pixel
        assert abs(p["centre"][0] - 0.25) < 0.02 and abs(p["centre"][1] - 0.75) < 0.02  # where it was clicked
    # A drag pans this photo, and the others follow to the same point
    frame = browser.find_elements("css selector", "#compare .frame")[1]
    ActionChains(browser).move_to_element(frame).click_and_hold().move_by_offset(-200, -100).release().perform()
    moved = wait_for(lambda: panels(browser) if abs(panels(browser)[1]["centre"][0] - 0.25) > 0.04 else None, what="the pan")
    centres = [p["centre"] for p in moved]
    assert all(abs(c[0] - centres[1][0]) < 0.01 and abs(c[1] - centres[1][1]) < 0.01 for c in centres)
    assert centres[1][0] > 0.25  # dragged to the left: further right in the photo
    # Keys act on the photo outlined; → moves the outline through the photos compared
    before = current_name(browser)
    press(browser, "4")
    wait_for(lambda: rating_of(folder / Path(before).with_suffix(".xmp")) == 4, what="the rating in compare")
    order = js(browser, "return navIds().map(id => state.byId.get(id).name)")
    press(browser, Keys.ARROW_RIGHT)
    assert current_name(browser) == order[min(order.index(before) + 1, len(order) - 1)]
    assert [p["name"] for p in panels(browser)] == order  # the same photos, in the same places
    press(browser, "z")  # back to the whole photos
    wait_for(lambda: not any(p["zoomed"] for p in panels(browser)), what="the whole photos")
    press(browser, Keys.ESCAPE)  # one photo again
    wait_for(lambda: js(browser, "return document.getElementById('compare').hidden"), what="the single view")


def test_survey_shows_every_marked_photo_fitted_to_the_screen(browser):
    for name in ("IMG_0007.jpg", "IMG_0008.jpg"):  # five marked now
        go_to(browser, name)
        press(browser, "s")
    press(browser, "n")
    shown = wait_for(lambda: panels(browser) if len(panels(browser)) == 5 and all(p["natural"][0] for p in panels(browser))
                     else None, what="the survey")
    box = js(browser, "const r = document.getElementById('compare').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]")
    for p in shown:  # every photo whole, within the viewer, no scrolling
        assert p["rect"][0] >= box[0] - 1 and p["rect"][1] >= box[1] - 1 and p["rect"][2] <= box[2] + 1 and p["rect"][3] <= box[3] + 1
    assert js(browser, "return document.documentElement.scrollHeight <= innerHeight")
    press(browser, "n")  # N again: one photo
    wait_for(lambda: js(browser, "return document.getElementById('compare').hidden"), what="the single view")


def test_in_compare_a_key_always_acts_on_the_photo_outlined(browser, shoot):
    """C on a photo that is not marked, Home, End, the arrows, S taking the mark off the current
    photo: the current photo (the one a key rates) is always the outlined panel on screen, and one
    photo left to compare is the single view of it."""
    from selenium.webdriver.common.keys import Keys

    folder, _ = shoot
    js(browser, "state.marked.clear(); render()")
    marked = ["IMG_0003.jpg", "IMG_0006.jpg", "IMG_0007.jpg"]
    for name in marked:
        go_to(browser, name)
        press(browser, "s")
    go_to(browser, "IMG_0002.jpg")  # not marked
    before = rating_of(folder / "IMG_0002.xmp")

    def outlined():
        assert not js(browser, "return document.getElementById('compare').hidden")
        shown = panels(browser)
        assert sorted(p["name"] for p in shown) == marked
        assert [p["name"] for p in shown if p["current"]] == [current_name(browser)]
        return current_name(browser)

    press(browser, "c")
    assert outlined() in marked
    for key in (Keys.END, Keys.HOME, Keys.ARROW_DOWN, Keys.ARROW_UP, Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN):
        press(browser, key)
        outlined()
    press(browser, Keys.HOME)
    first = outlined()
    press(browser, "2")
    wait_for(lambda: rating_of(folder / Path(first).with_suffix(".xmp")) == 2, what="the rating of the outlined photo")
    press(browser, "s")  # its mark taken off: the outline goes to a photo still compared
    marked.remove(first)
    assert outlined() != first
    press(browser, "s")  # one marked photo left: the single view, of the photo the keys act on
    wait_for(lambda: js(browser, "return document.getElementById('compare').hidden"), what="the single view")
    assert shown_name(browser).startswith(current_name(browser) + " ")
    assert rating_of(folder / "IMG_0002.xmp") == before  # never rated off screen
    js(browser, "state.marked.clear(); render()")


def test_a_burst_compares_in_its_order_and_its_stack_shows_its_hidden_frames_decisions(browser, shoot):
    from selenium.webdriver.common.keys import Keys

    folder, _ = shoot
    js(browser, "state.marked.clear()")
    stack = next(n for n in cell_names(browser) if n.startswith("BURST_"))
    go_to(browser, stack)
    press(browser, Keys.ENTER)
    order = wait_for(lambda: [p["name"] for p in panels(browser)] if len(panels(browser)) == 3 else None, what="the burst")
    ranks = js(browser, "return state.view.map(id => state.byId.get(id).name)")
    assert order == ranks  # in the burst's order, whichever frame is current
    for _ in range(3):  # to the last frame and past it: the order never flips
        press(browser, Keys.ARROW_RIGHT)
        assert [p["name"] for p in panels(browser)] == ranks
    assert current_name(browser) == ranks[-1]
    press(browser, "x")
    wait_for(lambda: rating_of(folder / Path(ranks[-1]).with_suffix(".xmp")) == -1, what="the reject")
    press(browser, Keys.ARROW_LEFT, "5")
    wait_for(lambda: rating_of(folder / Path(ranks[1]).with_suffix(".xmp")) == 5, what="the stars")
    press(browser, Keys.ESCAPE)
    wait_for(lambda: js(browser, "return state.burst === null"), what="the grid")
    cell = next(c for c in browser.find_elements("css selector", ".cell") if c.get_attribute("title").startswith("BURST_"))
    assert cell.find_element("css selector", ".stack").text == "burst ×3 · 1 ★ · 1 reject"


# --- prefetch, narrow screens, live updates, small things -----------------------------------------


def test_previews_either_side_are_prefetched(browser):
    go_to(browser, "IMG_0005.jpg")
    view = js(browser, "return state.view.map(id => imageUrl(state.byId.get(id), 'preview'))")
    at = js(browser, "return state.cur")

    def fetched():
        return js(browser, "return performance.getEntriesByType('resource').map(e => e.name)")

    for k in (-2, -1, 1, 2):
        if 0 <= at + k < len(view):
            wait_for(lambda: any(name.endswith(view[at + k]) for name in fetched()), what=f"the preview at {k:+d}")


def test_usable_390_px_wide_no_horizontal_scrolling_every_control_reachable(browser):
    browser.set_window_size(390, 844)
    try:
        wait_for(lambda: js(browser, "return innerWidth") <= 390, what="the narrow window")
        width = js(browser, "return innerWidth")
        assert js(browser, "return document.documentElement.scrollWidth") <= width
        controls = js(browser, """return [...document.querySelectorAll(
            'header input, header select, header button, #actions button, #status, #grid, #viewer')].map(e => {
            const r = e.getBoundingClientRect(); return [e.id || e.textContent, r.left, r.right, r.width]; })""")
        for name, left, right, w in controls:
            assert w > 0 and left >= -0.5 and right <= width + 0.5, name
        press(browser, "\ue00c")
        press(browser, "m")  # the status line is on screen and says what M does
        status = browser.find_element("id", "status")
        assert status.is_displayed() and status.text.startswith("press M again to move ")
        assert js(browser, "return [plural(1, 'reject'), plural(2, 'reject')]") == ["1 reject", "2 rejects"]
        browser.find_element("css selector", "#actions button[data-key='j']").click()  # a tap moves on
    finally:
        browser.set_window_size(1400, 900)


def test_the_page_learns_of_another_clients_decision_without_a_reload(browser, server, shoot):
    folder, _ = shoot
    go_to(browser, "IMG_0008.jpg")
    row = server.photos()["IMG_0008.jpg"]
    body = json.dumps({"id": row["id"], "action": "stars", "value": 5, "v": row["v"], "gen": row["gen"]})
    status, _, _ = server.request("POST", "/api/decide", body, {"Content-Type": "application/json",
                                                                "X-CSRF-Token": server.csrf()})
    assert status == 200 and rating_of(folder / "IMG_0008.xmp") == 5
    wait_for(lambda: text(browser, "info-yours").startswith("★★★★★"), timeout=10, what="the other client's stars")
    exiftool("-overwrite_original", "-XMP-xmp:Label=Yellow", folder / "IMG_0008.xmp")  # and another program's label
    wait_for(lambda: text(browser, "info-yours") == "★★★★★ · label Yellow", timeout=10, what="the label from disk")


def test_an_error_leaves_the_status_line_once_a_later_key_succeeds_and_names_show_zero_width(browser, shoot):
    folder, _ = shoot
    go_to(browser, "IMG_0007.jpg")
    js(browser, "current().gen += 7")  # the page believes it showed another state: the key is refused
    press(browser, "1")
    wait_for(lambda: text(browser, "status").startswith("not saved:"), what="the refusal")
    assert "error" in browser.find_element("id", "status").get_attribute("class")
    press(browser, "1")
    wait_for(lambda: text(browser, "status").startswith("IMG_0007.jpg: ★☆☆☆☆"), what="the success")
    assert "error" not in browser.find_element("id", "status").get_attribute("class")
    names = cell_names(browser)
    assert "ZERO⟨U+200B⟩WIDTH.jpg" in names
    assert js(browser, "return shown('a\\u200cb\\u200dc\\u2060d\\ufeffe\\u00adf')") == \
        "a⟨U+200C⟩b⟨U+200D⟩c⟨U+2060⟩d⟨U+FEFF⟩e⟨U+00AD⟩f"


# --- review --embed ---------------------------------------------------------------------------


def test_review_embed_writes_into_the_jpeg_as_tag_embed_and_u_restores_its_bytes(browser, server, shoot):
    from selenium.webdriver.common.keys import Keys

    folder, env = shoot
    stop_server(server)  # one server writes at a time: the module's is done
    photo, sidecar = folder / "IMG_0006.jpg", folder / "IMG_0006.xmp"
    original, sidecar_before = photo.read_bytes(), sidecar.read_bytes() if sidecar.exists() else None
    embed = start_server(folder, env, "--embed")
    try:
        browser.get(embed.url)
        wait_for(lambda: js(browser, "return document.body.dataset.ready === '1'"), 60, "the page")
        go_to(browser, "IMG_0006.jpg")
        press(browser, "3", "8")  # three stars, then green (the pick label: a pick)
        wait_for(lambda: xmp_of(photo).get("Label") == "Green", what="the pick in the photo")
        own = xmp_of(photo)
        assert own["Rating"] == 3 and "clipcull:rated" not in str(own.get("Subject", ""))
        assert xmp_of(folder / "IMG_0006.xmp")["Rating"] == 3  # the sidecar too, as tag --embed
        with Image.open(photo) as after, Image.open(io.BytesIO(original)) as before:
            assert np.array_equal(np.asarray(after), np.asarray(before))
        new_v = hashlib.sha256(photo.read_bytes()).hexdigest()[:16]
        wait_for(lambda: js(browser, "return current().v") == new_v, what="the new version")
        assert js(browser, "return document.getElementById('preview').naturalWidth") > 0
        press(browser, "2")  # keys go on working on the rewritten photo
        wait_for(lambda: xmp_of(photo).get("Rating") == 2, what="the second rating")
        press(browser, "u", "u", "u")
        wait_for(lambda: text(browser, "status").startswith("undone: IMG_0006.jpg: ") and
                 js(browser, "return writes.then(() => true)"), what="the three undos")
        wait_for(lambda: js(browser, "return current().v") == hashlib.sha256(original).hexdigest()[:16],
                 what="the third undo's answer")
        assert photo.read_bytes() == original  # the photo's exact bytes back
        assert (sidecar.read_bytes() if sidecar.exists() else None) == sidecar_before  # and the sidecar's
        press(browser, Keys.ESCAPE)
    finally:
        stop_server(embed)

