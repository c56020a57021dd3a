"""`clipcull review` options without a running server: address, port, browser, the URL line."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import run
from clip_cull.review import server
from clip_cull.review.server import Access


@pytest.fixture
def no_serving(monkeypatch):
    """Serving is replaced by a note of what would be served, and the browser by a list."""
    served, opened = [], []
    monkeypatch.setattr(server, "serve", lambda app_, sock, **_: served.append(sock.getsockname()) or sock.close())
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    return served, opened


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_by_default_url_alone_on_stdout_and_browser_opened(tiny_env, photo_folder, no_serving):
    served, opened = no_serving
    port = free_port()
    result = run("review", str(photo_folder), "--port", str(port))
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/r/[\w-]{{22}}/\?token=[\w-]{{43}}\n", result.stdout)
    assert served == [("127.0.0.1", port)]
    assert len(opened) == 1 and opened[0].startswith("file:///")  # the redirect file, not the URL
    assert "warning" not in result.stderr


def test_no_browser_and_another_host_warns(tiny_env, photo_folder, no_serving):
    served, opened = no_serving
    result = run("review", str(photo_folder), "--no-browser", "--host", "0.0.0.0")
    assert result.exit_code == 0
    assert opened == [] and served[0][0] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0, not only on this machine" in result.stderr
    assert result.stdout.startswith("http://0.0.0.0:")


def test_a_port_in_use_is_one_line(tiny_env, photo_folder, no_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("review", str(photo_folder), "--no-browser", "--port", str(port), catch_exceptions=True)
    assert result.exit_code == 1
    assert f"clipcull: error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("bound, header, allowed", [
    ("127.0.0.1", "127.0.0.1:8765", True),
    ("127.0.0.1", "localhost:8765", True),
    ("127.0.0.1", "attacker.example:8765", False),  # DNS rebinding: a name that resolves to us
    ("127.0.0.1", "127.0.0.1:8766", False),
    ("127.0.0.1", "127.0.0.1", False),
    ("127.0.0.1", None, False),
    ("0.0.0.0", "192.168.1.20:8765", True),  # a wildcard bind: any address of this machine ...
    ("0.0.0.0", "nas.local:8765", False),  # ... but never a name
    ("192.168.1.20", "192.168.1.20:8765", True),
    ("192.168.1.20", "localhost:8765", False),
])
def test_host_header_rule(bound, header, allowed):
    assert Access(bound, 8765).host_allowed(header) is allowed


def test_the_browser_is_opened_on_a_private_redirect_file_never_on_the_token(tiny_env, photo_folder, monkeypatch):
    """The browser's command line (the one argument webbrowser.open hands it) is visible to every
    user in `ps`: it names a 0600 file in a 0700 folder, and the file, which holds the URL, goes
    when the review stops."""
    import stat
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    seen = {}

    def browser_opener(argument):  # the seam: what the browser is started with
        path = Path(unquote(urlparse(argument).path))
        seen.update(argument=argument, path=path, mode=stat.S_IMODE(path.stat().st_mode),
                    folder_mode=stat.S_IMODE(path.parent.stat().st_mode), text=path.read_text())
        return True

    monkeypatch.setattr("webbrowser.open", browser_opener)
    monkeypatch.setattr(server, "serve", lambda app_, sock, **_: sock.close())
    result = run("review", str(photo_folder))
    assert result.exit_code == 0, result.stderr
    url = result.stdout.strip()
    token = url.rsplit("token=", 1)[1]
    assert seen["argument"].startswith("file:///") and seen["argument"].endswith(".html")
    assert token not in seen["argument"] and "token" not in seen["argument"]
    assert seen["mode"] == 0o600 and seen["folder_mode"] == 0o700
    assert f'<meta http-equiv="refresh" content="0;url={url}">' in seen["text"]
    assert not seen["path"].exists() and not seen["path"].parent.exists()  # removed when the review stopped


def test_the_redirect_file_goes_even_when_serving_fails(tiny_env, photo_folder, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda argument: opened.append(argument))

    def fails(app_, sock, **_):
        sock.close()
        raise KeyboardInterrupt  # a second Ctrl-C while shutting down

    monkeypatch.setattr(server, "serve", fails)
    run("review", str(photo_folder), catch_exceptions=True)
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    assert len(opened) == 1 and not Path(unquote(urlparse(opened[0]).path)).parent.exists()


def test_help_tells_of_the_token_undo_and_a_changing_disk():
    result = run("review", "--help", env={"COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=True)
    text = " ".join(result.stdout.split())
    assert "prints the page's URL (it holds an access token)" in text
    assert "the session is one run: `clipcull undo` reverts it" in text
    assert "A key on a photo that changed on disk since the page showed it is refused: press again." in text


# --- stopping: Ctrl-C at any moment, the text model loaded only for a search ------------------


ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/r/[\w-]{22})/\?token=([\w-]{43})")
STOPS_WITHIN_S = 2.0
# Exit status 130, or killed by SIGINT: CPython ends a process that way when a Ctrl-C went
# through code it ran nested (a module's initialisation), even once handled; a shell shows 130
# for both.
INTERRUPTED = (130, -signal.SIGINT)


class Review:
    """`clipcull review FOLDER --no-browser` in a subprocess, its stderr read as it comes."""

    def __init__(self, folder: Path, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "review", str(folder), "--no-browser", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.err: list[str] = []
        self.out: list[str] = []
        self.readers = [threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True),
                        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)]
        for reader in self.readers:
            reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def wait_until(self, condition, what: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"review ended before {what}: {''.join(self.err)}"
            assert time.monotonic() < end, f"timed out waiting for {what}: {''.join(self.err)}"
            time.sleep(0.01)

    def serving(self) -> None:
        self.wait_until(lambda: self.out, "the URL")
        port, self.prefix, self.token = URL.fullmatch(self.out[0].strip()).groups()
        self.port = int(port)
        page = self.request("GET", "/")[1]
        self.csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": f"127.0.0.1:{self.port}", "Cookie": f"clipcull_review_{self.port}={self.token}"}
        if body is not None:
            headers.update({"Content-Type": "application/json", "X-CSRF-Token": self.csrf})
        try:
            conn.request(method, self.prefix + path, body=None if body is None else json.dumps(body), headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def interrupt(self) -> tuple[int, float, list[str]]:
        """Ctrl-C: (exit code, seconds until it exited, stderr lines)."""
        self.proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            code = self.proc.wait(30)
        finally:
            self.proc.kill()
        took = time.monotonic() - sent
        for reader in self.readers:
            reader.join(10)
        return code, took, [line.rstrip("\n") for line in self.err]


@pytest.fixture
def ranked(tiny_env, photo_folder, deadline):
    """A folder ranked before (photos and prompts cached): a review of it needs no model."""
    assert run("rank", str(photo_folder), catch_exceptions=True).exit_code == 0
    return photo_folder


def test_ctrl_c_while_the_model_loads_at_start_stops_at_once(ranked):
    """A new photo: the review's ranking loads the model; Ctrl-C while it loads stops the
    command within a second or two with one line (it took 17 s, saying nothing)."""
    from helpers import make_photo

    make_photo(ranked / "NEW.jpg", seed=50)
    review = Review(ranked)
    review.wait_until(lambda: review.said("clipcull: loading model"), "the model load")
    code, took, err = review.interrupt()
    assert code in INTERRUPTED and took < STOPS_WITHIN_S, (code, took, err)
    assert err[-1] == "clipcull: interrupted. Every finished batch is saved; run the command again to go on."
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("after_s", [0.2, 0.6, 1.0])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line_and_130(ranked, after_s):
    review = Review(ranked)
    time.sleep(after_s)
    code, took, err = review.interrupt()
    assert code in INTERRUPTED and took < STOPS_WITHIN_S, (code, took, err)
    assert err, f"nothing said; stdout: {review.out}"
    assert err[-1] in ("clipcull: interrupted while starting; nothing was done.",
                       "clipcull: interrupted.",
                       "clipcull: interrupted. Every finished batch is saved; run the command again to go on.",
                       "clipcull: review stopped before the page was served; nothing was decided.",
                       "clipcull: review stopped; nothing was decided.")
    assert not any("Traceback" in line for line in err)


def test_ctrl_c_while_serving_says_what_was_decided(ranked):
    review = Review(ranked)
    review.serving()
    photos = json.loads(review.request("GET", "/api/photos")[1])["photos"]
    first = photos[0]
    status, _ = review.request("POST", "/api/decide", {"action": "stars", "id": first["id"], "value": 4,
                                                      "v": first["v"], "gen": first["gen"]})
    assert status == 200
    code, took, err = review.interrupt()
    assert code in INTERRUPTED and took < STOPS_WITHIN_S, (code, took, err)
    said = re.fullmatch(r"clipcull: review stopped; review run (\d+): 1 photo decided \(1 rated\)\. "
                       r"Undo: clipcull undo (\d+)", err[-1])
    assert said and said.group(1) == said.group(2), err[-1]
    assert not review.said("loading model")  # no search, no model
    undone = run("undo", said.group(1), catch_exceptions=True)
    assert undone.exit_code == 0  # counted in photos, as the review counted them
    assert undone.stderr == f"clipcull: undid review run {said.group(1)}: the XMP of 1 photo (1 file) restored.\n"


def test_ctrl_c_while_a_search_waits_for_the_text_model(ranked):
    """The text model loads on the first search, not at start; Ctrl-C while it loads stops at once."""
    review = Review(ranked)
    review.serving()
    assert review.request("GET", "/api/photos")[0] == 200
    assert not review.said("loading model")
    answers = []
    search = threading.Thread(target=lambda: answers.append(review.request("POST", "/api/search", {"q": "a dog"})),
                              daemon=True)
    search.start()
    review.wait_until(lambda: review.said("clipcull: loading model"), "the search to load the model")
    code, took, err = review.interrupt()
    assert code in INTERRUPTED and took < STOPS_WITHIN_S, (code, took, err)
    assert err[-1] == "clipcull: review stopped; nothing was decided."
    search.join(10)
    assert answers in ([], [(400, b'{"error":"the review is stopping"}')]) or "loaded" in " ".join(err)


def test_the_text_model_loads_on_the_first_search_not_at_start(ranked, monkeypatch):
    """In process, without timing: while the review serves, no model is loaded and none is
    loading; the first search loads it."""
    seen = {}

    def serve(app_, sock, on_stop=None):
        sock.close()
        session = on_stop.__self__  # the review session the page would use
        seen["before"] = (session.text_model_loaded,
                          [t.name for t in threading.enumerate() if t.name == "clipcull-model-load"])
        seen["hits"] = session.search("a dog on the beach", 3)
        seen["after"] = session.text_model_loaded
        return False

    monkeypatch.setattr(server, "serve", serve)
    result = run("review", str(ranked), "--no-browser")
    assert result.exit_code == 0, result.stderr
    assert seen["before"] == (False, [])
    assert len(seen["hits"]) == 3 and seen["after"] is True
    assert result.stderr.count("clipcull: loading model") == 1  # the search's
    assert result.stderr.splitlines()[-1] == "clipcull: review stopped; nothing was decided."


def test_review_counts_photos_and_stacks_as_its_page_does(ranked, no_serving):
    """Eight photos the tiny model finds alike at the default similarity: one stack."""
    result = run("review", str(ranked), "--no-browser", catch_exceptions=True)
    assert "clipcull: reviewing 8 photos in 1 stack; Ctrl-C stops." in result.stderr
    apart = run("review", str(ranked), "--no-browser", "--similarity", "1", catch_exceptions=True)
    assert "clipcull: reviewing 8 photos; Ctrl-C stops." in apart.stderr


def test_ctrl_c_while_typer_builds_the_commands_is_one_line(monkeypatch, capsys):
    """Typer builds every command from its signature before any of them runs (the window the
    start test above can hit): Ctrl-C there is one line and 130, not a traceback."""
    import clip_cull.cli as cli

    def building():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", building)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "clipcull: interrupted while starting; nothing was done.\n"
