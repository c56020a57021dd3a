"""XMP inside the photo itself: found in linear time with a bounded read.

JPEG: the APP1 segment named http://ns.adobe.com/xap/1.0/, found by walking the segments before the
image data (nothing after the start of scan is read). Other formats (TIFF, DNG and other TIFF-based
RAWs, HEIC, PNG, WebP): the first complete `<x:xmpmeta ... </x:xmpmeta>` in the first or the last
WINDOW bytes, found with two substring searches (never a backtracking pattern, so crafted input with
many openings and no end costs one pass)."""

from __future__ import annotations

import os
import stat

from clip_cull.actions.xmp import MAX_XMP_BYTES

WINDOW = 4 << 20
_OPEN, _CLOSE = b"<x:xmpmeta", b"</x:xmpmeta>"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


def embedded_packet(photo: str) -> bytes | None:
    """The photo's XMP packet, or None (none, or the file cannot be read: indexing reports that)."""
    try:
        if not stat.S_ISREG(os.stat(photo).st_mode):
            return None
        fd = os.open(photo, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            start = f.read(2)
            if start == b"\xff\xd8":
                return _jpeg_packet(f)
            f.seek(0)
            return _scan_windows(f)
    except OSError:
        return None


def _jpeg_packet(f) -> bytes | None:
    """Walk the JPEG's marker segments up to the start of scan; at most 64 KiB each."""
    for _ in range(4096):  # bounded: a JPEG has a handful of segments before the scan
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker, length = head[1], int.from_bytes(head[2:4], "big")
        if marker == 0xFF:  # fill byte: step one back and read the marker again
            f.seek(-3, os.SEEK_CUR)
            continue
        if marker in (0xDA, 0xD9) or length < 2:  # start of scan / end of image: no XMP after this
            return None
        if marker == 0xE1:
            body = f.read(length - 2)
            if body.startswith(_JPEG_XMP):
                return find_packet(body[len(_JPEG_XMP):])
        else:
            f.seek(length - 2, os.SEEK_CUR)
    return None


def _scan_windows(f) -> bytes | None:
    head = f.read(WINDOW)
    found = find_packet(head)
    if found is not None or len(head) < WINDOW:
        return found
    size = os.fstat(f.fileno()).st_size
    f.seek(max(WINDOW, size - WINDOW))
    return find_packet(f.read(WINDOW))


def find_packet(buffer: bytes) -> bytes | None:
    """The first `<x:xmpmeta ... </x:xmpmeta>` in buffer: linear (one search for the opening, one
    for the end after it; when there is no end after the first opening there is none after any
    later one either), and no longer than MAX_XMP_BYTES."""
    start = buffer.find(_OPEN)
    if start < 0:
        return None
    end = buffer.find(_CLOSE, start, start + MAX_XMP_BYTES)
    if end < 0:
        return None
    return buffer[start:end + len(_CLOSE)]
