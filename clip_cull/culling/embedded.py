"""XMP inside the photo itself: found in linear time with a bounded read.

JPEG: the APP1 segment named http://ns.adobe.com/xap/1.0/, found by walking the segments before the
image data (nothing after the start of scan is read). Other formats (TIFF, DNG and other TIFF-based
RAWs, HEIC, PNG, WebP): the first complete `<x:xmpmeta ... </x:xmpmeta>` in the first or the last
WINDOW bytes, found with two substring searches (never a backtracking pattern, so crafted input with
many openings and no end costs one pass)."""

from __future__ import annotations

import os
import re

from clip_cull.culling.xmp import MAX_XMP_BYTES
from clip_cull.core.files import open_regular

WINDOW = 4 << 20
_OPEN, _CLOSE = b"<x:xmpmeta", b"</x:xmpmeta>"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


def embedded_packet(photo: str) -> bytes | None:
    """The photo's XMP packet, or None (none, or the file cannot be read: indexing reports that)."""
    packets = embedded_packets(photo)
    return packets[0] if packets else None


def embedded_packets(photo: str) -> list[bytes]:
    """Every XMP packet in the photo: a JPEG may carry more than one standard XMP segment (some
    tools append one instead of replacing it), and readers disagree which counts (exiftool lets
    the last one win, exiv2 reads the first). Empty when there is none or the file cannot be read."""
    try:
        fd, _ = open_regular(photo)  # NotRegularFile is an OSError: a FIFO gives [] at once
        with os.fdopen(fd, "rb") as f:
            start = f.read(2)
            if start == b"\xff\xd8":
                return _jpeg_packets(f)
            f.seek(0)
            found = _scan_windows(f)
            return [found] if found is not None else []
    except OSError:
        return []


def _jpeg_packets(f) -> list[bytes]:
    """Walk the JPEG's marker segments up to the start of scan; at most 64 KiB each."""
    packets = []
    for _ in range(4096):  # bounded: a JPEG has a handful of segments before the scan
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            break
        marker, length = head[1], int.from_bytes(head[2:4], "big")
        if marker == 0xFF:  # fill byte: step one back and read the marker again
            f.seek(-3, os.SEEK_CUR)
            continue
        if marker in (0xDA, 0xD9) or length < 2:  # start of scan / end of image: no XMP after this
            break
        if marker == 0xE1:
            body = f.read(length - 2)
            if body.startswith(_JPEG_XMP):
                found = find_packet(body[len(_JPEG_XMP):])
                if found is not None:
                    packets.append(found)
        else:
            f.seek(length - 2, os.SEEK_CUR)
    return packets


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


# --- writing the rating into the photo (tag --embed) ------------------------------------------------

EMBEDDABLE = (".jpg", ".jpeg", ".tif", ".tiff", ".dng")  # exiv2 0.28 reads HEIC but cannot write it
NO_PACKET = b""  # the journal's `before` for a photo that had no XMP
_WRAP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n', '\n<?xpacket end="w"?>')


def can_embed(photo: str) -> bool:
    return os.path.splitext(photo)[1].lower() in EMBEDDABLE


def current_packet(data: bytes) -> bytes:
    """The XMP packet exiv2 reads from the photo's bytes (NO_PACKET when there is none)."""
    image, _buffer = _open(data)
    return image.xmpPacket().encode("utf-8")


def with_packet(photo: str, data: bytes, packet: bytes) -> bytes:
    """The photo's bytes with its XMP packet replaced (NO_PACKET: removed), everything else as
    exiv2 keeps it. The pixels are decoded before and after and must be identical, else
    XmpError: nothing is written."""
    from clip_cull.culling.xmp import XmpError

    image, buffer = _open(data)
    if packet == NO_PACKET:
        image.clearXmpPacket()
        image.clearXmpData()
    else:
        text = packet.decode("utf-8")
        if not text.lstrip().startswith("<?xpacket"):
            text = _WRAP[0] + re.sub(r"\A\s*<\?xml[^>]*\?>\s*", "", text) + _WRAP[1]
        image.setXmpPacket(text)
    image.writeXmpFromPacket(True)
    try:
        image.writeMetadata()
        io = image.io()
        with io.mmap() as view:
            out = bytes(view)
        del buffer  # exiv2 wrote into its own copy; only now may it go
    except Exception as e:  # exiv2's own errors: the photo is not touched
        raise XmpError(f"exiv2 could not write into it ({e})") from None
    if not same_pixels(photo, data, out):
        raise XmpError("its pixels would change; not written")
    return out


def embed_rating(photo: str, data: bytes, rating: int | None, keywords: list[str], label: str | None = None,
                 drop_label: bool = False) -> tuple[bytes, bytes]:
    """(the XMP packet the photo has now, the photo's new bytes with the rating, the label (review
    --embed) and clipcull's keywords merged into its XMP as xmp.merge does; every other property
    kept, pixels identical)."""
    from clip_cull.culling.xmp import XmpError, merge

    if data.startswith(b"\xff\xd8"):
        import io

        count = len(_jpeg_packets(_skip_soi(io.BytesIO(data))))
        if count > 1:
            raise XmpError(f"holds {count} XMP packets, and programs disagree which one counts; "
                           f"clipcull does not write into it (the sidecar has the rating)")
    before = current_packet(data)
    merged = merge(before if before.strip() else None, rating, label, keywords, drop_label)
    return before, with_packet(photo, data, merged)


def _skip_soi(f):
    f.seek(2)
    return f


def same_pixels(photo: str, before: bytes, after: bytes) -> bool:
    """Decode both and compare every pixel (RAW data for DNG, through rawpy)."""
    import io

    import numpy as np

    if os.path.splitext(photo)[1].lower() == ".dng":
        try:
            import rawpy
        except ImportError:
            return False  # cannot verify: refuse
        arrays = []
        for data in (before, after):
            with rawpy.imread(io.BytesIO(data)) as raw:
                arrays.append(raw.raw_image.copy())
        return np.array_equal(*arrays)
    from PIL import Image

    def decode(data):
        with Image.open(io.BytesIO(data)) as img:
            frames = []
            for i in range(getattr(img, "n_frames", 1)):
                img.seek(i)
                frames.append(np.asarray(img))
            return frames

    a, b = decode(before), decode(after)
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def _open(data: bytes):
    """(an exiv2 image, the buffer it works on). exiv2 reads from and, for TIFF and DNG, writes
    metadata in place into the buffer it is given, even an immutable bytes object: so it gets a
    private copy, and the caller's bytes (which the pixels are compared against, and whose hash
    the journal holds) stay what was read. The caller keeps the buffer alive while it uses the
    image."""
    from clip_cull.culling.xmp import XmpError, _exiv2

    exiv2 = _exiv2()
    buffer = bytearray(data)
    try:
        image = exiv2.ImageFactory.open(buffer)
        image.readMetadata()
    except exiv2.Exiv2Error as e:
        raise XmpError(f"exiv2 cannot read it ({e.args[-1] if e.args else e})") from None
    return image, buffer
