"""`clipcull report`: one self-contained HTML contact sheet (thumbnails embedded), best first.

Meant to be mailed or printed: paths relative to the folders given, thumbnails at twice their
shown size (sharp on HiDPI screens) without the photos' own metadata, bursts stacked in one
card, and cards never split across printed pages.
"""

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

from clip_cull.core.errors import ClipCullError

THUMB_PX = 320  # shown size in CSS pixels
THUMB_SCALE = 2  # stored at twice that: sharp on HiDPI screens and in print
FACE_PX = 72  # a face's close-up, shown size (the faces extra)
MAX_FACES = 6  # close-ups under one photo, largest faces first
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
figure {{ margin: 0; background: #fff; padding: 8px; border-radius: 6px; box-shadow: 0 1px 3px #0002;
  break-inside: avoid; page-break-inside: avoid; }}
figure.reject {{ opacity: .35; filter: grayscale(1); }}
figure.burst {{ box-shadow: 4px 4px 0 #ddd, 8px 8px 0 #eee, 0 1px 3px #0002; }}
.stack {{ display: flex; gap: 4px; overflow-x: auto; }}
.stack img {{ height: {small}px; width: auto; flex: none; }}
img {{ width: 100%; height: {px}px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .8em; line-height: 1.4; word-break: break-all; }}
.stars {{ color: #c90; letter-spacing: 1px; }}
.yours {{ color: #06c; }}
.flags {{ color: #b50; }}
.faces {{ display: flex; gap: 6px; flex-wrap: wrap; margin-top: 4px; }}
.face {{ font-size: .7em; text-align: center; width: {face}px; }}
.face img {{ width: {face}px; height: {face}px; object-fit: cover; }}
.face.closed, .face.soft {{ color: #b50; }}
.missing {{ height: {px}px; display: flex; align-items: center; justify-content: center; background: #eee; }}
@media print {{ body {{ background: #fff; margin: 0; }} figure {{ box-shadow: none; border: 1px solid #ccc; }} }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<div class="sheet">
{figures}
</div></body></html>
"""


def thumbnail_data(path: str, px: int = THUMB_PX * THUMB_SCALE) -> str | None:
    """A small upright JPEG as a data: URI, or None when the photo cannot be read. Only the
    pixels: no EXIF, no comment, no ICC or XMP of the photo rides along."""
    from clip_cull.core.images import decode_photo

    from clip_cull.core.files import read_file

    try:
        data, _ = read_file(path)  # regular files only, within the size bound
        image, _ = decode_photo(data, min_side=px // 2)
    except Exception:
        return None
    image.thumbnail((px, px), Image.BICUBIC)
    return _jpeg_uri(image)


def _jpeg_uri(image: Image.Image) -> str:
    clean = Image.new(image.mode, image.size)  # a new image carries none of the source's info
    clean.paste(image)
    if clean.mode not in ("RGB", "L"):
        clean = clean.convert("RGB")
    buf = io.BytesIO()
    clean.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def shown_path(path: str, roots: list[str] | None) -> str:
    """The path relative to the folder given (a sheet to mail carries no home folders)."""
    for root in sorted((os.path.abspath(os.path.expanduser(r)) for r in roots or []), key=len, reverse=True):
        if path == root:
            return os.path.basename(path)
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return path[len(root.rstrip(os.sep)) + 1:]
    return os.path.basename(path)


def star_text(rating: int | None) -> str:
    if rating is None or rating == 0:
        return ""
    return "reject" if rating == -1 else "★" * rating + "☆" * (5 - rating)


def render_report(
    ranked: list,
    stars: dict[str, int],
    groups: dict[str, int],
    rejects: set[str],
    title: str,
    progress: Callable[[int, int], None] | None = None,
    roots: list[str] | None = None,
    yours: dict[str, int | None] | None = None,
) -> str:
    """stars: clipcull's suggestion; yours: the photographer's own rating (-1 reject) where set.
    A burst is one card at the place of its best photo, its other photos beside it."""
    yours = yours or {}
    members: dict[int, list] = {}
    for photo in ranked:
        group = groups.get(photo.path)
        if group:
            members.setdefault(group, []).append(photo)
    figures = []
    shown = 0
    for photo in ranked:
        group = groups.get(photo.path)
        if group and members[group][0] is not photo:
            continue  # drawn in its burst's card
        stack = members.get(group, [photo]) if group else [photo]
        figures.append(_figure(stack, stars, rejects, roots, yours, group))
        shown += len(stack)
        if progress:
            progress(shown, len(ranked))
    summary = (f"{len(ranked)} photo{'s' if len(ranked) != 1 else ''}, best first; "
               f"{len(rejects)} greyed as rejects. Made by clipcull on {dt.date.today().isoformat()}.")
    return PAGE.format(marker=MARKER, title=html.escape(title), summary=html.escape(summary), px=THUMB_PX, small=THUMB_PX // 3,
                       face=FACE_PX, figures="\n".join(figures))


def _figure(stack: list, stars: dict, rejects: set, roots, yours: dict, group: int | None) -> str:
    lead = stack[0]
    pictures = [_picture(p, roots) for p in stack]
    picture = pictures[0] + (f'<div class="stack">{"".join(pictures[1:])}</div>' if len(pictures) > 1 else "")
    lines = [_caption(p, stars, roots, yours) for p in stack]
    classes = [c for c in ("reject" if lead.path in rejects else "", "burst" if len(stack) > 1 else "") if c]
    cls = f' class="{" ".join(classes)}"' if classes else ""
    head = f"burst {group} ({len(stack)} photos)<br>" if len(stack) > 1 else ""
    return f"<figure{cls}>{picture}{_face_row(stack)}<figcaption>{head}{'<br>'.join(lines)}</figcaption></figure>"


def _face_row(stack: list) -> str:
    """Close-ups of the faces judged (the faces extra): every face of a single photo; for a burst,
    its main face in each frame, in the burst's order, so one face is seen across the frames."""
    if len(stack) == 1:
        shown = [(stack[0], face) for face in _judged(stack[0])[:MAX_FACES]]
    else:
        shown = [(photo, _judged(photo)[0]) for photo in stack if _judged(photo)]
    cards = [_face_card(photo, face) for photo, face in shown]
    return f'<div class="faces">{"".join(cards)}</div>' if cards else ""


def _judged(photo) -> list[dict]:
    from clip_cull.core.faces import judged

    return judged(getattr(photo, "faces", None) or [])


def _face_card(photo, face: dict) -> str:
    """One face: its close-up and its assessment (eyes, focus), from the ranking's figures."""
    closed, soft = face.get("eyes_closed"), face.get("soft")
    eyes = ("eyes ?" if closed is None else
            f"eyes {'closed' if closed else 'open'} {sum(face['openness']) / 2:.2f}")
    focus = f"{'soft' if soft else 'sharp'} {face['focus']:.0f}"
    classes = " ".join(["face", *(["closed"] if closed else []), *(["soft"] if soft else [])])
    data = face_data(photo.path, face["box"])
    picture = f'<img src="{data}" alt="face">' if data else ""
    return f'<div class="{classes}">{picture}<br>{html.escape(eyes)}<br>{html.escape(focus)}</div>'


def face_data(path: str, box: list[float], px: int = FACE_PX * THUMB_SCALE) -> str | None:
    """A square close-up of a face (core/faces.py closeup: 1.4 x its box) as a data: URI."""
    from clip_cull.core.faces import closeup_of
    from clip_cull.core.files import read_file

    try:
        data, _ = read_file(path)
    except OSError:
        return None
    image = closeup_of(data, box, px)
    return _jpeg_uri(image) if image is not None else None


def _picture(photo, roots) -> str:
    data = thumbnail_data(photo.path)
    name = html.escape(os.path.basename(photo.path))
    return f'<img src="{data}" alt="{name}">' if data else '<div class="missing">no preview</div>'


def _caption(photo, stars: dict, roots, yours: dict) -> str:
    suggested = star_text(stars.get(photo.path))
    own = star_text(yours.get(photo.path))
    captured = (photo.captured_at or "").replace("T", " ")
    parts = [
        f"#{photo.rank}", f"{photo.score:+.4f}", html.escape(photo.label),
        f'<span class="stars" title="clipcull suggests">{suggested}</span>' if suggested else "",
        f'<span class="yours" title="your rating">yours: {own}</span>' if own else "",
        f'<span class="flags">{html.escape(", ".join(photo.flags))}</span>' if photo.flags else "",
        html.escape(captured),
    ]
    return " · ".join(x for x in parts if x) + "<br>" + html.escape(shown_path(photo.path, roots))


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
    if is_report(path):
        return
    if _holds_a_photo(path):  # --force never reaches a photo or its sidecar: nothing could bring it back
        raise ReportError(f"{path} is a photo or its sidecar; the report is never written over one. Choose another name")
    if not force:
        raise ReportError(f"{path} exists and is not a clipcull report; it is left as it is. "
                          f"Choose another name, or --force to replace it")


def _holds_a_photo(path: Path) -> bool:
    """A photo's or sidecar's name (any format clipcull reads), or content an image reader opens."""
    from PIL import Image

    from clip_cull.core.files import HEIF_EXTENSIONS, PHOTO_EXTENSIONS, RAW_EXTENSIONS

    if Path(path).suffix.lower() in PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS | {".xmp"}:
        return True
    try:
        with Image.open(path):
            return True
    except Exception:  # not an image Pillow knows (or unreadable): the name decided
        return False


def is_report(path: Path) -> bool:
    """True for a file clipcull wrote as a report (its marker near the top)."""
    from clip_cull.core.files import open_regular

    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return head.lstrip().startswith(b"<!DOCTYPE html>") and (
        MARKER.encode() in head or LEGACY_MARKER.encode() in head)


def _short(name: str) -> str:
    """At most 60 bytes of a name, cut on a character boundary: 100 characters of a name in
    another script would pass the 255 bytes a file name may have."""
    data = os.fsencode(name)[:60]
    while data:
        try:
            data.decode("utf-8")
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return os.fsdecode(data)


def write_report(page: str, path: Path, force: bool = False) -> None:
    """Write the page at path: folders made as needed, the file replaced whole (a temporary file
    renamed over it), never written onto a file that is not a report unless force."""
    path = Path(path)
    check_output(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_short(path.name)}.", suffix=".clipcull-partial", dir=path.parent)
    except OSError as e:
        raise ReportError(f"cannot write the report to {path}: {e.strerror or e}") from None
    try:
        # A name that is not UTF-8 (bytes kept as surrogates) shows as \udcff, the page stays UTF-8
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
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
