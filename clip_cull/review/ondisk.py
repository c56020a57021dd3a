"""What the review page shows, checked against the disk: cheap file stamps, content fingerprints,
and ratings as JSON can carry them whatever another program wrote.

A photo or sidecar is re-read only when its stamp (device, inode, size, mtime, ctime) changed: a
check of a whole shoot is a few stat calls a photo. ctime cannot be set back by the program that
writes, and a file replaced by renaming another over it has another inode.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from clip_cull.core.files import content_fingerprint, read_file

Stamp = tuple[int, int, int, int, int]
UNCHECKED = ()  # a stamp no file has: the first check always looks
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's numbers hold whole numbers exactly up to here
MAX_SHOWN_CHARS = 40


def stamp(path: str | Path) -> Stamp | None:
    """The file's stamp, None where there is none (or it cannot be looked at)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def stamps(paths: list[Path]) -> tuple:
    return tuple(stamp(p) for p in paths)


def fingerprint(path: str) -> str:
    """The content fingerprint of the file as it is now (the cache's: sha256 of the bytes);
    raises OSError (a FIFO, a file too large, one changing while read)."""
    return content_fingerprint(read_file(path)[0])


def json_rating(value):
    """A rating as the page can be handed it unchanged: a number within what JavaScript holds
    exactly, None, or else its text, short. Any value another program wrote (7, -5, 2.5, 1e300,
    a word, a 5,000-digit number) is answered, never a JSON encoding error for the whole listing."""
    if value is None or (type(value) is int and abs(value) <= MAX_SAFE_INTEGER):
        return value
    if type(value) is float and math.isfinite(value) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    return shown_text(value)


def shown_text(value) -> str:
    """A value's text, at most about MAX_SHOWN_CHARS long: a long number in exponent form."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**(MAX_SHOWN_CHARS - 1):
        try:
            return f"{value:.6g}"  # 10**300: 1e+300
        except OverflowError:  # past what a float holds (and past Python's int-to-text limit)
            return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = str(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS // 2]}… ({len(text)} characters)"
