"""Opening the review page in the browser without putting its token on a command line.

A browser started with the URL as an argument shows the token to every user of the machine
(`ps`). As Jupyter does, the browser is given a file instead: a page, readable by the user alone,
that sends it on to the URL. The file goes when the review stops.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import webbrowser
from pathlib import Path

REDIRECT_NAME = "open-review.html"


def write_redirect(url: str) -> Path:
    """A 0600 HTML file, in a new 0700 folder, that sends the browser on to url."""
    folder = Path(tempfile.mkdtemp(prefix="clipcull-review-"))  # 0700, a name nobody could guess
    path = folder / REDIRECT_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as f:
        f.write(_redirect_page(url))
    return path


def _redirect_page(url: str) -> str:
    shown = html.escape(url, quote=True)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"refresh\" content=\"0;url={shown}\">\n"
            "<title>clipcull review</title></head>\n"
            f"<body><p>Opening the review page: <a href=\"{shown}\">{shown}</a></p></body></html>\n")


def remove_redirect(path: Path) -> None:
    shutil.rmtree(path.parent, ignore_errors=True)


def open_browser(url: str) -> Path:
    """Open the page through a redirect file (the browser's command line names only the file);
    the file's path, for remove_redirect once the review stops."""
    path = write_redirect(url)
    webbrowser.open(path.as_uri())
    return path
