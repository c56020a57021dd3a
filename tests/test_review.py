"""`clipcull review` as a user runs it: the real command in a subprocess, plain HTTP requests for
the security rules, and Debian's chromium (Selenium) pressing keys, read back with exiftool.

One server and one browser for the whole module (the machine is small); the tests run in file
order and each says what state it leaves.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from test_search import independent_search_order
from helpers import fails_after, make_photo

ROOT = Path(__file__).resolve().parent.parent
EXIFTOOL = shutil.which("exiftool")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    EXIFTOOL is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs exiftool, chromium and chromedriver (.ci/run installs them)",
)
HOSTILE = '<img src=x onerror="window.pwned=1">.jpg'
SIMILARITY = "0.9995"  # the tiny random model finds every photo alike at the default 0.92


@pytest.fixture(autouse=True)
def time_limit():
    """No test here may hang: SIGALRM after 150 s fails it."""
    with fails_after(150):
        yield


def _exif(when: str | None = None, orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if when:
        exif[0x8769] = {0x9003: when}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
    return exif


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, tiny_model_files):
    """The photos and the environment every clipcull command here runs with."""
    base = tmp_path_factory.mktemp("review")
    folder = base / "shoot"
    for i in range(1, 6):
        make_photo(folder / f"IMG_000{i}.jpg", seed=i)
    # a burst: the same pixels a second apart (identical embeddings)
    make_photo(folder / "BURST_A.jpg", seed=20, exif=_exif("2024:05:01 10:00:00"))
    make_photo(folder / "BURST_B.jpg", seed=20, exif=_exif("2024:05:01 10:00:01"))
    make_photo(folder / "ROT.jpg", seed=30, size=(96, 64), exif=_exif(orientation=6))  # upright: 64 x 96
    make_photo(folder / HOSTILE, seed=40)
    soft = folder / "SOFT.jpg"  # far softer than the rest: flagged blurry
    make_photo(soft, seed=50, size=(96, 64))
    Image.open(soft).filter(ImageFilter.GaussianBlur(4)).save(soft, quality=95)
    return folder, review_env(base, tiny_model_files)


def review_env(base: Path, tiny_model_files) -> dict:
    """The environment the clipcull commands of a test module run with: the tiny model, and a
    cache, state and XDG folders of its own under base."""
    config, checkpoint = tiny_model_files
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CLIPCULL_DB": str(base / "cache" / "c.db"),
            "CLIPCULL_MODEL": str(config), "CLIPCULL_PRETRAINED": str(checkpoint),
            "XDG_CACHE_HOME": str(base / "xdg"), "CLIPCULL_STATE": str(base / "state" / "state.db")}


def clipcull(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clip_cull", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/r/[A-Za-z0-9_-]{22})/\?token=([A-Za-z0-9_-]{43})")


class Server:
    def __init__(self, proc, url, stderr_lines):
        self.proc, self.url = proc, url
        m = URL.fullmatch(url)
        self.port, self.prefix, self.token = int(m.group(1)), m.group(2), m.group(3)
        self.stderr_lines = stderr_lines

    @property
    def cookie(self) -> str:
        return f"clipcull_review_{self.port}={self.token}"

    def request(self, method, path, body=None, headers=None, host=None, cookie=True, prefix=True):
        """`path` under the review's prefix (as the page's requests are), unless prefix=False."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Host": host or f"127.0.0.1:{self.port}"}
        if cookie:
            h["Cookie"] = self.cookie
        h.update(headers or {})
        conn.request(method, self.prefix + path if prefix else path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def csrf(self) -> str:
        _, _, page = self.request("GET", "/")
        return re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()

    def photos(self) -> dict[str, dict]:
        return {p["name"]: p for p in json.loads(self.request("GET", "/api/photos")[2])["photos"]}


def start_server(folder, env, *options) -> Server:
    """`clipcull review FOLDER [OPTIONS]` in a subprocess, once it has printed its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "review", str(folder), "--no-browser",
                             "--similarity", SIMILARITY, *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stderr_lines: list[str] = []
    errors = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    errors.start()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    assert lines and lines[0].strip(), f"no URL printed; stderr: {stderr_lines}"
    srv = Server(proc, lines[0].strip(), stderr_lines)
    srv.stderr_reader = errors
    return srv


def stop_server(srv: Server) -> None:
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGINT)
        srv.proc.wait(30)


@pytest.fixture(scope="module")
def server(shoot):
    srv = start_server(*shoot)
    yield srv
    stop_server(srv)


def exif_read(*files) -> list[dict]:
    out = subprocess.run([EXIFTOOL, "-j", "-XMP:Rating", "-XMP:Label", "-XMP:Subject", *map(str, files)],
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def wait_for(condition, timeout=15.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the command line and plain HTTP ----------------------------------------------------------


def test_url_is_one_stdout_line_on_loopback_with_a_long_token(server):
    assert URL.fullmatch(server.url)
    assert server.proc.poll() is None


def test_token_in_url_becomes_httponly_strict_cookie_and_page_has_self_only_csp(server):
    status, headers, page = server.request("GET", f"/?token={server.token}", cookie=False)
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"clipcull_review_{server.port}={server.token};")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert f"Path={server.prefix}/" in cookie  # other servers on 127.0.0.1 never receive it
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    assert not re.search(rb"(src|href)=\"(https?:)?//", page)  # nothing from the network
    status, _, _ = server.request("GET", "/api/photos")  # the cookie alone is enough afterwards
    assert status == 200


@pytest.mark.parametrize("path", ["/", "/api/photos", "/img/0/thumb", "/static/review.js", "/api/changes?since=0"])
def test_without_the_token_every_request_is_refused(server, path):
    assert server.request("GET", path, cookie=False)[0] == 403
    assert server.request("GET", path, cookie=False, headers={"Cookie": f"clipcull_review_{server.port}=guess"})[0] == 403
    assert server.request("GET", path + ("&" if "?" in path else "?") + "token=wrong", cookie=False)[0] == 403


def test_foreign_host_header_is_refused_even_with_the_token(server):
    assert server.request("GET", "/api/photos", host=f"evil.example:{server.port}")[0] == 403
    assert server.request("GET", "/api/photos", host=f"127.0.0.1:{server.port + 1}")[0] == 403
    assert server.request("GET", "/api/photos", host="127.0.0.1")[0] == 403
    assert server.request("GET", "/api/photos", host=f"localhost:{server.port}")[0] == 200


def test_changes_need_a_post_with_the_csrf_token(server, shoot):
    folder, _ = shoot
    shown = server.photos()["ROT.jpg"]
    rot = shown["id"]
    body = json.dumps({"id": rot, "action": "stars", "value": 2, "v": shown["v"], "gen": shown["gen"]})
    sidecar = folder / "ROT.xmp"
    json_type = {"Content-Type": "application/json"}
    assert server.request("POST", "/api/decide", body, json_type)[0] == 403  # no CSRF token
    assert server.request("POST", "/api/decide", body, {**json_type, "X-CSRF-Token": "nope"})[0] == 403
    token = server.csrf()
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": token}
    assert server.request("POST", "/api/decide", body, form)[0] == 403  # a form cannot make changes
    foreign = {**json_type, "X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert server.request("POST", "/api/decide", body, foreign)[0] == 403
    assert server.request("GET", f"/api/decide?id={rot}&action=stars&value=2")[0] == 405
    assert not sidecar.exists()  # nothing changed so far
    status, _, data = server.request("POST", "/api/decide", body, {**json_type, "X-CSRF-Token": token})
    assert status == 200 and json.loads(data)["rating"] == 2
    assert exif_read(sidecar)[0]["Rating"] == 2
    status, _, data = server.request("POST", "/api/undo", "{}", {**json_type, "X-CSRF-Token": token})
    assert status == 200 and json.loads(data)["name"] == "ROT.jpg"
    assert not sidecar.exists()  # clipcull created it; undo takes it away again


@pytest.mark.parametrize("path", [
    "/img/999/thumb", "/img/-1/thumb", "/img/0/../../../etc/passwd", "/img/0/..%2f..%2fetc%2fpasswd",
    "/img/0/original", "/static/../cli.py", "/static/..%2f..%2fcli.py", "/static/", "/etc/passwd",
    "/img/%2Fetc%2Fpasswd/thumb", "/api/photos/../../x",
])
def test_only_ranked_photos_by_id_no_paths_no_traversal(server, path):
    status, _, data = server.request("GET", path)
    assert status in (404, 405)
    assert b"root:" not in data and b"import" not in data


def test_thumbnails_upright_hidpi_and_cached_by_content_hash(server, shoot):
    folder, env = shoot
    photo = server.photos()["ROT.jpg"]
    status, headers, data = server.request("GET", f"/img/{photo['id']}/full")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    from io import BytesIO

    assert Image.open(BytesIO(data)).size == (64, 96)  # orientation 6: stored 96x64, shown upright
    fingerprint = hashlib.sha256((folder / "ROT.jpg").read_bytes()).hexdigest()
    thumbs = Path(env["CLIPCULL_DB"]).parent / "thumbs"
    assert (thumbs / fingerprint[:2] / f"{fingerprint}-full.jpg").read_bytes() == data
    # the page's image URLs name the content, so the browser may keep them: ids are places in
    # this ranking, and the same id is another photo in a later review on this port
    assert photo["v"] == fingerprint[:16]
    status, headers, named = server.request("GET", f"/img/{photo['id']}/full?v={photo['v']}")
    assert status == 200 and named == data and "immutable" in headers["cache-control"]
    assert server.request("GET", f"/img/{photo['id']}/full?v={'0' * 16}")[0] == 404
    assert "max-age" not in server.request("GET", f"/img/{photo['id']}/full")[1]["cache-control"]
    # a larger photo: the grid thumbnail is 400 px on its long side (twice its 200 CSS px)
    big = server.photos()["IMG_0001.jpg"]
    assert server.request("GET", f"/img/{big['id']}/thumb")[0] == 200


# --- the page in a real browser --------------------------------------------------------------


def start_browser(url: str):
    """Headless chromium (Selenium) on the page, once it has drawn the photos."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                "--disable-dev-shm-usage", "--no-proxy-server", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), 60, "the page")
    return driver


@pytest.fixture(scope="module")
def browser(server):
    driver = start_browser(server.url)
    yield driver
    driver.quit()


def press(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for k in keys:
        chain.send_keys(k)
    chain.perform()


def shown_name(driver) -> str:
    return driver.find_element("id", "info-name").text


def go_to(driver, name: str) -> None:
    """Move with the arrow keys (Home, then right) until the photo is the current one."""
    from selenium.webdriver.common.keys import Keys

    press(driver, Keys.HOME)
    for _ in range(20):
        if shown_name(driver).startswith(name + " "):
            return
        press(driver, Keys.ARROW_RIGHT)
    raise AssertionError(f"{name} not reached with the arrow keys")


def test_keys_write_stars_rejects_picks_to_xmp_and_u_undoes_one(browser, shoot):
    from selenium.webdriver.common.keys import Keys

    folder, _ = shoot
    go_to(browser, "IMG_0001.jpg")
    press(browser, "4")
    wait_for(lambda: (folder / "IMG_0001.xmp").exists(), what="IMG_0001.xmp")
    first = exif_read(folder / "IMG_0001.xmp")[0]
    assert first["Rating"] == 4 and "clipcull:rated" not in str(first.get("Subject", ""))
    go_to(browser, "IMG_0002.jpg")
    press(browser, "x", "p")
    wait_for(lambda: exif_read(folder / "IMG_0002.xmp")[0].get("Label") == "Green", what="the pick label")
    assert exif_read(folder / "IMG_0002.xmp")[0]["Rating"] == 0  # flags as Lightroom's: a pick is no reject
    press(browser, "u")  # undoes the pick only: the reject is back
    wait_for(lambda: "Label" not in exif_read(folder / "IMG_0002.xmp")[0], what="the undone pick")
    assert exif_read(folder / "IMG_0002.xmp")[0]["Rating"] == -1
    go_to(browser, "IMG_0003.jpg")
    # Keys faster than the server answers still land in their order: the last one (0 clears) wins.
    press(browser, "1", "2", "3", "4", "5", "x", "2", "3", "0")
    wait_for(lambda: (folder / "IMG_0003.xmp").exists() and exif_read(folder / "IMG_0003.xmp")[0].get("Rating") == 0,
             what="the cleared rating")
    time.sleep(1.0)  # nothing still in flight may overwrite it
    assert exif_read(folder / "IMG_0003.xmp")[0].get("Rating") == 0
    before = shown_name(browser)
    press(browser, "j", "k")
    assert shown_name(browser) == before
    press(browser, Keys.ARROW_RIGHT)
    assert shown_name(browser) != before
    cell = browser.find_element("css selector", ".cell.current .badges").text
    assert cell == "" or "★" not in cell


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_hostile_file_name_is_shown_as_text_never_run(browser):
    cells = [c for c in browser.find_elements("css selector", ".cell") if c.get_attribute("title") == HOSTILE]
    assert len(cells) == 1
    assert cells[0].find_element("css selector", ".name").text == HOSTILE
    assert browser.execute_script("return document.querySelectorAll('img[onerror]').length") == 0
    assert browser.execute_script("return window.pwned === undefined")
    go_to(browser, HOSTILE)
    assert shown_name(browser).startswith(HOSTILE)


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_names_are_shown_as_spelled_not_as_bidi_controls_and_newlines_make_them_look(browser):
    # U+202E would make "IMG_1\u202egpj.exe.jpg" read "IMG_1gpj.exe" backwards, i.e. like a .jpg
    spoof = "IMG_1\u202egpj.exe.jpg"
    assert browser.execute_script("return shown(arguments[0])", spoof) == "IMG_1⟨U+202E⟩gpj.exe.jpg"
    assert browser.execute_script("return shown(arguments[0])", "a\nb\u2066c.jpg") == "a⟨U+000A⟩b⟨U+2066⟩c.jpg"
    assert browser.execute_script("return shown(arguments[0])", HOSTILE) == HOSTILE
    # and the page uses it wherever a name from the server is written
    script = (ROOT / "clip_cull" / "review" / "static" / "review.js").read_text()
    assert not re.search(r"\$\{(p|other|row)\.(name|folder)\}|textContent = (data\.title|p\.name)", script)


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_the_content_security_policy_really_blocks_inline_and_foreign_script(browser):
    """Were a name ever to reach the page as HTML, its script would still not run."""
    browser.execute_script("""
        const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1'; document.body.append(s);
        const d = document.createElement('div'); d.innerHTML = '<img src=x onerror="window.handlerRan = 1">';
        document.body.append(d);
        const f = document.createElement('script'); f.src = 'http://127.0.0.1:9/x.js'; document.body.append(f);""")
    time.sleep(0.5)
    assert browser.execute_script("return [window.inlineRan, window.handlerRan]") == [None, None]
    assert browser.execute_script("return window.top === window.self")  # not framed


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_z_shows_every_pixel_and_enter_opens_the_burst_side_by_side(browser):
    from selenium.webdriver.common.keys import Keys

    go_to(browser, "ROT.jpg")
    press(browser, "z")
    wait_for(lambda: browser.execute_script(
        "const i = document.getElementById('full'); return i.complete && i.naturalWidth > 0"), what="the loupe")
    assert browser.execute_script("return document.getElementById('loupe').hidden") is False
    assert browser.execute_script("return [document.getElementById('full').naturalWidth,"
                                  " document.getElementById('full').naturalHeight]") == [64, 96]
    press(browser, "z")
    assert browser.execute_script("return document.getElementById('loupe').hidden") is True
    stacked = [c.get_attribute("title") for c in browser.find_elements("css selector", ".cell")]
    assert ("BURST_A.jpg" in stacked) != ("BURST_B.jpg" in stacked)  # one stack stands for both
    go_to(browser, "BURST_A.jpg" if "BURST_A.jpg" in stacked else "BURST_B.jpg")
    press(browser, Keys.ENTER)
    wait_for(lambda: len(browser.find_elements("css selector", ".cell")) == 2, what="the open burst")
    assert browser.execute_script("return document.getElementById('compare').hidden") is False
    names = {c.text.split()[0] for c in browser.find_elements("css selector", "#compare figcaption")}
    assert names == {"BURST_A.jpg", "BURST_B.jpg"}
    press(browser, Keys.ESCAPE)
    wait_for(lambda: len(browser.find_elements("css selector", ".cell")) == len(stacked), what="the closed burst")


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_slash_focuses_search_and_results_come_by_text_similarity(browser, shoot, tiny_model_files):
    from selenium.webdriver.common.keys import Keys

    folder, env = shoot
    press(browser, "/")
    assert browser.execute_script("return document.activeElement.id") == "search"
    press(browser, "red sky", Keys.ENTER)
    wait_for(lambda: "search results" in browser.find_element("id", "status").text, 60, "search results")
    shown = [c.get_attribute("title") for c in browser.find_elements("css selector", ".cell")]
    assert shown == independent_search_order(env, folder, "red sky", tiny_model_files)
    press(browser, Keys.ESCAPE)
    wait_for(lambda: "search results" not in browser.find_element("id", "status").text, what="search closed")
    assert len(browser.find_elements("css selector", ".cell.current")) == 1  # one current photo, always


def cell_names(driver) -> list[str]:
    return [c.get_attribute("title") for c in driver.find_elements("css selector", ".cell")]


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_filters_and_capture_time_order(browser):
    from selenium.webdriver.support.ui import Select

    choose = Select(browser.find_element("id", "filter")).select_by_value
    Select(browser.find_element("id", "check")).select_by_value("blurry")  # clipcull's flags
    wait_for(lambda: cell_names(browser) == ["SOFT.jpg"], what="the blurry filter")
    Select(browser.find_element("id", "check")).select_by_value("any")
    choose("picks")
    wait_for(lambda: cell_names(browser) == [], what="the picks filter (the one pick was undone)")
    choose("unrated")
    wait_for(lambda: "IMG_0003.jpg" in cell_names(browser), what="the unrated filter")
    assert "IMG_0001.jpg" not in cell_names(browser) and "IMG_0002.jpg" not in cell_names(browser)
    choose("all")
    best_first = wait_for(lambda: cell_names(browser) if len(cell_names(browser)) > 5 else None, what="all")
    Select(browser.find_element("id", "sort")).select_by_value("time")
    # only the burst has capture times: its stack comes first, the others keep their best-first order
    wait_for(lambda: cell_names(browser)[0].startswith("BURST_"), what="capture-time order")
    by_time = cell_names(browser)
    assert by_time[1:] == [n for n in best_first if not n.startswith("BURST_")]
    Select(browser.find_element("id", "sort")).select_by_value("best")
    wait_for(lambda: cell_names(browser) == best_first, what="best-first order again")


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_the_header_counts_stacks_and_photos_as_the_terminal_does(browser, server):
    """A burst is one cell of the grid: the header says "9 stacks (10 photos)", and the terminal
    said "reviewing 10 photos in 9 stacks" (the header said "9 photos" where stderr said 10)."""
    rows = list(server.photos().values())
    groups = {r["group"] for r in rows if r["group"] is not None}
    stacks = sum(1 for r in rows if r["group"] is None) + len(groups)
    assert groups and stacks < len(rows)  # the burst is stacked
    wait_for(lambda: browser.find_element("id", "status").text.endswith(" · all"), what="the whole grid")
    assert browser.find_element("id", "status").text == f"{stacks} stacks ({len(rows)} photos) · all"
    said = [line for line in server.stderr_lines if "clipcull: reviewing" in line]
    assert said == [f"clipcull: reviewing {len(rows)} photos in {stacks} stacks; Ctrl-C stops.\n"]


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_filter_then_m_twice_moves_the_sessions_rejects_with_their_sidecars(browser, shoot):
    from selenium.webdriver.support.ui import Select

    folder, _ = shoot
    Select(browser.find_element("id", "filter")).select_by_value("rejects")
    wait_for(lambda: [c.get_attribute("title") for c in browser.find_elements("css selector", ".cell")] == ["IMG_0002.jpg"],
             what="the rejects filter")
    Select(browser.find_element("id", "filter")).select_by_value("all")
    press(browser, "m")
    assert (folder / "IMG_0002.jpg").exists()  # one M only arms it
    press(browser, "m")
    wait_for(lambda: "moved 1 reject " in browser.find_element("id", "status").text, what="the move")
    assert (folder / "_rejects" / "IMG_0002.jpg").exists() and (folder / "_rejects" / "IMG_0002.xmp").exists()
    assert not (folder / "IMG_0002.jpg").exists() and not (folder / "IMG_0002.xmp").exists()
    wait_for(lambda: "IMG_0002.jpg" not in [c.get_attribute("title") for c in browser.find_elements("css selector", ".cell")],
             what="the reject leaving the grid")


@pytest.mark.slow  # the quick subset keeps one browser test: the keys one above
def test_the_redirect_file_the_browser_is_opened_on_leads_to_the_working_page(browser, server):
    from clip_cull.review.launch import remove_redirect, write_redirect

    redirect = write_redirect(server.url)
    try:
        browser.get(redirect.as_uri())  # a navigation from file:// : another site to the server
        wait_for(lambda: browser.current_url.startswith(f"http://127.0.0.1:{server.port}{server.prefix}/"),
                 what="the redirect")
        wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), 60, "the page")
        assert "token" not in browser.current_url  # and the token left the address bar
    finally:
        remove_redirect(redirect)
    assert not redirect.parent.exists()


@pytest.mark.slow
def test_tag_keeps_the_photographers_decisions_and_undo_reverts_the_whole_session(server, shoot):
    folder, env = shoot
    import socket

    # a client holding a request open (a body that never comes) does not keep the server up
    held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    held.sendall(f"POST {server.prefix}/api/decide HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nCookie: {server.cookie}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(15) in (130, -signal.SIGINT)  # interrupted (a shell shows 130 for both)
    held.close()
    server.stderr_reader.join(10)
    summary = "".join(server.stderr_lines)
    run = int(re.search(r"review run (\d+)", summary).group(1))
    tagged = clipcull(env, "tag", folder)
    assert tagged.returncode == 0, tagged.stderr
    assert exif_read(folder / "IMG_0001.xmp")[0]["Rating"] == 4  # the photographer's stars stay
    other = exif_read(folder / "IMG_0004.xmp")[0]
    assert "clipcull:rated" in str(other["Subject"])  # tag rated the photos nobody had rated
    for _ in ("tag", "move"):
        assert clipcull(env, "undo").returncode == 0
    assert (folder / "IMG_0002.jpg").exists() and (folder / "IMG_0002.xmp").exists()
    undone = clipcull(env, "undo", run)
    assert undone.returncode == 0, undone.stderr
    assert sorted(p.name for p in folder.rglob("*.xmp")) == []  # every sidecar of the session was new
    assert not (folder / "_rejects").exists()
