"""`clipcull review` options without a running server: address, port, browser, the URL line."""

from __future__ import annotations

import re
import socket

import pytest
from typer.testing import CliRunner

from clip_cull.cli import app
from clip_cull.review import server
from clip_cull.review.server import Access


@pytest.fixture
def no_serving(monkeypatch):
    """Serving is replaced by a note of what would be served, and the browser by a list."""
    served, opened = [], []
    monkeypatch.setattr(server, "serve", lambda app_, sock: served.append(sock.getsockname()) or sock.close())
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    return served, opened


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_by_default_url_alone_on_stdout_and_browser_opened(tiny_env, photo_folder, no_serving):
    served, opened = no_serving
    port = free_port()
    result = CliRunner().invoke(app, ["review", str(photo_folder), "--port", str(port)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/r/[\w-]{{22}}/\?token=[\w-]{{43}}\n", result.stdout)
    assert served == [("127.0.0.1", port)]
    assert len(opened) == 1 and opened[0].startswith("file:///")  # the redirect file, not the URL
    assert "warning" not in result.stderr


def test_no_browser_and_another_host_warns(tiny_env, photo_folder, no_serving):
    served, opened = no_serving
    result = CliRunner().invoke(app, ["review", str(photo_folder), "--no-browser", "--host", "0.0.0.0"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert opened == [] and served[0][0] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0, not only on this machine" in result.stderr
    assert result.stdout.startswith("http://0.0.0.0:")


def test_a_port_in_use_is_one_line(tiny_env, photo_folder, no_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["review", str(photo_folder), "--no-browser", "--port", str(port)])
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
    monkeypatch.setattr(server, "serve", lambda app_, sock: sock.close())
    result = CliRunner().invoke(app, ["review", str(photo_folder)], catch_exceptions=False)
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

    def fails(app_, sock):
        sock.close()
        raise KeyboardInterrupt  # a second Ctrl-C while shutting down

    monkeypatch.setattr(server, "serve", fails)
    CliRunner().invoke(app, ["review", str(photo_folder)])
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    assert len(opened) == 1 and not Path(unquote(urlparse(opened[0]).path)).parent.exists()


def test_help_tells_of_the_prefix_the_redirect_file_and_a_changing_disk():
    result = CliRunner().invoke(app, ["review", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    text = " ".join(result.stdout.split())
    assert "/r/RANDOM/" in text and "cookie for that path only" in text
    assert "redirect file (0600, removed when the review stops)" in text
    assert "whose sidecar another program changed, since the page showed it is refused with one line" in text
