"""Thumbnails and previews for the review page, made on first request and kept on disk.

Keyed by the photo's content hash (the cache's fingerprint) and the size, never by its path: a
renamed photo keeps its thumbnails, a photo replaced under its name gets new ones, and a second
review of a shoot starts with all of them ready. Images are
upright (EXIF orientation applied); RAW files show their embedded preview.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import threading
from pathlib import Path

from PIL import Image

from clip_cull.core.files import content_fingerprint, is_raw, read_file
from clip_cull.core.images import UnreadableImage, decode_photo, decode_raw

# Long side in device pixels: twice the CSS size the page shows them at, sharp on HiDPI screens.
SIZES = {"thumb": 2 * 200, "preview": 2 * 1200, "full": None}  # full: every pixel, for the 100% loupe
JPEG_QUALITY = {"thumb": 82, "preview": 88, "full": 92}
FACE_PX = 2 * 96  # a face close-up beside the photo: 96 CSS px square, twice that in device pixels
MAX_CACHED_BYTES = 256 * 2**20
MAX_RENDERS = max(1, min(4, os.cpu_count() or 1))  # photos decoded at once
JPEG_START = b"\xff\xd8\xff"


class PhotoChanged(OSError):
    """The photo's file no longer holds the content the page was shown (the fingerprint asked for)."""


class ThumbnailCache:
    def __init__(self, folder: str | Path, max_renders: int = MAX_RENDERS):
        self.folder = Path(folder)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # The server answers from up to 40 threads; a grid of uncached TIFFs or RAWs asked for at
        # once would decode as many full photos into memory together. Cached images skip the queue.
        self._renders = threading.BoundedSemaphore(max_renders)

    def path_for(self, fingerprint: str, size: str) -> Path:
        return self.folder / fingerprint[:2] / f"{fingerprint}-{size}.jpg"

    def get(self, photo_path: str, fingerprint: str, size: str) -> bytes:
        """The JPEG bytes of a photo at one of SIZES; raises UnreadableImage or OSError
        (PhotoChanged where the file no longer holds the content fingerprint names)."""
        if size not in SIZES:
            raise KeyError(size)
        return self._made(self.path_for(fingerprint, size), photo_path, fingerprint,
                          lambda data: render_bytes(data, photo_path, SIZES[size], JPEG_QUALITY[size]))

    def face(self, photo_path: str, fingerprint: str, key: str, box) -> bytes:
        """A face's close-up (core/faces.py closeup), FACE_PX square; key names the face within
        the content (the analyser's version and the face's place): kept like the thumbnails."""
        from clip_cull.core.faces import closeup_of

        def make(data: bytes) -> bytes:
            image = closeup_of(data, box, FACE_PX)
            if image is None:
                raise UnreadableImage("cannot be decoded")
            out = io.BytesIO()
            image.save(out, "JPEG", quality=JPEG_QUALITY["thumb"])
            return out.getvalue()

        return self._made(self.path_for(fingerprint, f"face-{key}"), photo_path, fingerprint, make)

    def _made(self, target: Path, photo_path: str, fingerprint: str, make) -> bytes:
        with self._lock_for(target):  # two requests for the same image make it once
            cached = _read_cached(target)
            if cached is not None:
                return cached
            with self._renders:
                data = read_file(photo_path)[0]  # a regular file only: a FIFO swapped in never blocks
                if content_fingerprint(data) != fingerprint:
                    # The image would be kept under the fingerprint of other content (and shown
                    # for it in every later review): refuse instead.
                    raise PhotoChanged("changed on disk since it was shown")
                image = make(data)
            _write_quietly(target, image)
            return image

    def alias(self, old: str, new: str) -> None:
        """The images kept for content `old` kept for `new` too: review --embed rewrote the photo's
        metadata, its pixels are the same (checked by the writer), so its images are."""
        for path in (self.folder / old[:2]).glob(f"{old}-*.jpg"):
            data = _read_cached(path)
            if data is not None:
                _write_quietly(self.folder / new[:2] / (new + path.name[len(old):]), data)

    def _lock_for(self, target: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(str(target), threading.Lock())


def render(photo_path: str, long_side: int | None, quality: int) -> bytes:
    """An upright RGB JPEG of the photo, its long side at most long_side."""
    return render_bytes(read_file(photo_path)[0], photo_path, long_side, quality)


def render_bytes(data: bytes, photo_path: str, long_side: int | None, quality: int) -> bytes:
    """An upright RGB JPEG of a photo's bytes (photo_path says whether it is RAW)."""
    if is_raw(photo_path):
        image, _ = decode_raw(data)
    else:
        # decode_photo applies the EXIF orientation; min_side lets a JPEG decode at reduced scale
        min_side = (long_side // 2) if long_side else 1 << 30
        image, _ = decode_photo(data, min_side=min_side, fast=long_side is not None)
    if long_side and max(image.size) > long_side:
        image.thumbnail((long_side, long_side), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()


def _read_cached(target: Path) -> bytes | None:
    """A cached image, or None where there is none, or something else is there: a FIFO, a
    symbolic link (never followed: the cache serves only what it wrote), not a JPEG."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CACHED_BYTES:
            return None
        data = f.read(MAX_CACHED_BYTES + 1)
    return data if data.startswith(JPEG_START) and len(data) <= MAX_CACHED_BYTES else None


def _write_quietly(target: Path, data: bytes) -> None:
    """Cache the bytes; a cache folder that cannot be written costs speed, not the page."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except OSError:
        pass


__all__ = ["SIZES", "PhotoChanged", "ThumbnailCache", "UnreadableImage", "render"]
