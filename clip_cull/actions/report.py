"""`clipcull report`: one self-contained HTML contact sheet (thumbnails embedded), best first."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path
from typing import Callable

from PIL import Image

THUMB_PX = 320

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
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

    try:
        with open(path, "rb") as f:
            image, _ = decode_photo(f.read(), min_side=px // 2)
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
    return PAGE.format(title=html.escape(title), summary=html.escape(summary), px=THUMB_PX, figures="\n".join(figures))
