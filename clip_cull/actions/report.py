"""`clipcull report`: one self-contained HTML contact sheet (thumbnails embedded), best first."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import stat as stat_mode
import tempfile
from pathlib import Path
from typing import Callable

from PIL import Image

from clip_cull.errors import ClipCullError

THUMB_PX = 320
# Every report carries this line near its top: only a file that has it is replaced without --force.
MARKER = '<meta name="generator" content="clipcull report">'
LEGACY_MARKER = "Made by clipcull on "  # reports written before the marker
SNIFF_BYTES = 64 * 1024


class ReportError(ClipCullError):
    """The report cannot be written where it was asked to go."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{marker}
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
h1 {{ font-size: 1.3em; }}
.sheet {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({px}px, 1fr)); gap: 14px; }}
figure {{ margin: 0; background: #fff; padding: 8px; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
figure.reject {{ opacity: .35; filter: grayscale(1); }}
img {{ width: 100%; height: {px}px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .8em; line-height: 1.4; word-break: break-all; }}
.stars {{ color: #c90; letter-spacing: 1px; }}
.missing {{ height: {px}px; display: flex; align-items: center; justify-content: center; background: #eee; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<div class="sheet">
{figures}
</div></body></html>
"""


def thumbnail_data(path: str, px: int = THUMB_PX) -> str | None:
    """A small upright JPEG as a data: URI, or None when the photo cannot be read."""
    from clip_cull.images import decode_photo

    from clip_cull.files import read_file

    try:
        data, _ = read_file(path)  # regular files only, within the size bound
        image, _ = decode_photo(data, min_side=px // 2)
    except Exception:
        return None
    image.thumbnail((px, px), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_report(
    ranked: list,
    stars: dict[str, int],
    groups: dict[str, int],
    rejects: set[str],
    title: str,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    figures = []
    for n, photo in enumerate(ranked, 1):
        data = thumbnail_data(photo.path)
        picture = (f'<img src="{data}" alt="{html.escape(Path(photo.path).name)}">' if data
                   else '<div class="missing">no preview</div>')
        rating = stars.get(photo.path)
        star_text = "reject" if rating == -1 else ("★" * rating + "☆" * (5 - rating) if rating else "")
        group = groups.get(photo.path)
        captured = (photo.captured_at or "").replace("T", " ")
        caption = " · ".join(x for x in [
            f"#{photo.rank}", f"{photo.score:+.4f}", html.escape(photo.label),
            f'<span class="stars">{star_text}</span>' if star_text else "",
            f"burst {group}" if group else "", html.escape(captured),
        ] if x)
        cls = ' class="reject"' if photo.path in rejects else ""
        figures.append(f"<figure{cls}>{picture}<figcaption>{caption}<br>{html.escape(photo.path)}</figcaption></figure>")
        if progress:
            progress(n, len(ranked))
    summary = (f"{len(ranked)} photos, best first; {len(rejects)} greyed as rejects. "
               f"Made by clipcull on {dt.date.today().isoformat()}.")
    return PAGE.format(marker=MARKER, title=html.escape(title), summary=html.escape(summary), px=THUMB_PX,
                       figures="\n".join(figures))


def check_output(path: Path, force: bool = False) -> None:
    """Refuse a place the report must not go, before any work is done: a folder, something that
    is not a regular file, or an existing file that is not a clipcull report (a photo, say)
    unless force."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ReportError(f"cannot write the report to {path}: {e.strerror or e}") from None
    if stat_mode.S_ISDIR(st.st_mode):
        raise ReportError(f"{path} is a folder; give the report a file name, e.g. {Path(path) / 'clipcull-report.html'}")
    if not stat_mode.S_ISREG(st.st_mode):
        raise ReportError(f"{path} is not a regular file; the report is not written there")
    if not force and not is_report(path):
        raise ReportError(f"{path} exists and is not a clipcull report; it is left as it is. "
                          f"Choose another name, or --force to replace it")


def is_report(path: Path) -> bool:
    """True for a file clipcull wrote as a report (its marker near the top)."""
    from clip_cull.files import open_regular

    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return head.lstrip().startswith(b"<!DOCTYPE html>") and (
        MARKER.encode() in head or LEGACY_MARKER.encode() in head)


def write_report(page: str, path: Path, force: bool = False) -> None:
    """Write the page at path: folders made as needed, the file replaced whole (a temporary file
    renamed over it), never written onto a file that is not a report unless force."""
    path = Path(path)
    check_output(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".clipcull-partial", dir=path.parent)
    except OSError as e:
        raise ReportError(f"cannot write the report to {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be
        check_output(path, force)  # still no photo there
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ReportError(f"cannot write the report to {path}: {e.strerror or e}") from None
        raise
