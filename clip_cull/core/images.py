"""Reading photos safely: decode, orientation, colour modes, size limits, EXIF facts.

Everything here works on the bytes of one file and raises UnreadableImage with a reason a
photographer can read; the indexer records that reason and goes on with the next photo.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import glob
import io
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# clipcull refuses images over its own limit (max_pixels, DEFAULT_MAX_PIXELS) before decoding
# them; Pillow's check, at a lower limit, would refuse (over 2x its limit) or warn about photos
# clipcull reads on purpose. So Pillow's is off wherever clipcull decodes: the CLI, the Python
# API, the indexing workers (docs/api.md says so).
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 250_000_000  # above any camera; stops decompression bombs
MIN_PREVIEW_SIDE = 256  # a RAW's embedded preview smaller than this is not used
RAW_HINT = "RAW files need the optional extra: pip install 'clipcull[raw]'"
ALPHA_BACKGROUND = (255, 255, 255)  # transparent areas are shown on white, as viewers do


# Memory for one photo (measured in tests/test_hostile_files.py): its file's bytes, the decoded
# image as Pillow holds it (1 byte a pixel for greyscale, 2 for 16-bit greyscale, 4 for RGB, RGBA,
# 32-bit and float), plus at most one more byte a pixel while 16-bit and float images become
# 8 bits (in strips of STRIP_PIXELS), plus the reduced copy the model sees.
STRIP_PIXELS = 1 << 20
BYTES_PER_PIXEL_BOUND = 5  # the decoded image and its conversion, per pixel, at most


class UnreadableImage(Exception):
    """This file cannot be used as a photo; str() is the reason."""


class RunLimitExceeded(UnreadableImage):
    """Refused by a limit of this run (--max-pixels, memory), not by a fault of the file:
    never remembered as the file's failure, so a run with other limits reads it."""


@dataclass
class PhotoFacts:
    """What clipcull stores about a photo besides its embedding."""

    width: int | None = None  # as stored in the file, before orientation
    height: int | None = None
    orientation: int | None = None  # EXIF orientation tag, 1-8
    captured_at: str | None = None  # ISO 8601, from DateTimeOriginal
    camera: str | None = None  # "Make Model"


def decode_photo(data: bytes, *, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS, fast: bool = True):
    """Decode image bytes to an upright RGB PIL image, and return it with its stored size.

    With fast=True a JPEG is decoded at a reduced DCT scale (Pillow's draft) while keeping its
    short side at least 2 x min_side, so the later resize to min_side stays as sharp as one
    from the full image, at a fraction of the cost.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    quiet_libtiff()
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise RunLimitExceeded(f"too many pixels ({e})") from None
    except Exception as e:  # UnidentifiedImageError, struct errors from mangled headers, ...
        raise UnreadableImage(_reason(e, "not an image Pillow can read")) from None
    width, height = img.size
    if width * height > max_pixels:
        raise RunLimitExceeded(
            f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f} (--max-pixels)"
        )
    if fast and img.format == "JPEG":
        scale = 2 * min_side / min(width, height)
        if scale < 1:
            img.draft("RGB", (max(1, int(width * scale + 1)), max(1, int(height * scale + 1))))
        # The whole file to the decoder in one call (Pillow's default is 64 KB chunks): each
        # chunk re-takes the GIL, which stalls decoding while another thread imports torch.
        img.decodermaxblock = max(img.decodermaxblock, len(data))
    _libtiff_messages.clear()
    try:
        img.load()
    except MemoryError:
        raise RunLimitExceeded("not enough memory to decode this image") from None
    except Exception as e:
        raise UnreadableImage(_reason(e, "the image data cannot be decoded") + _libtiff_said()) from None
    if _is_high_depth(img.mode):
        img = _high_depth_to_grey(img)  # in strips: never a float64 copy of the whole image
    if fast and img.format != "JPEG":
        return to_rgb(_reduced_upright(img, min_side)), (width, height)
    img = _upright(img)
    return to_rgb(img), (width, height)


REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "CMYK"})


def _reduced_upright(img: Image.Image, min_side: int) -> Image.Image:
    """A large non-JPEG reduced by a whole factor (box filter) while its short side stays at
    least 2 x min_side, as a JPEG's draft decode does; then upright by its EXIF orientation."""
    factor = min(img.size) // (2 * min_side) if min_side > 0 else 1
    if factor < 2 or img.mode not in REDUCIBLE_MODES:
        return _upright(img)
    transpose = _exif_transpose_method(img)  # read before reducing: the reduced copy has no EXIF
    small = img.reduce(factor)
    return small.transpose(transpose) if transpose is not None else small


def _exif_transpose_method(img: Image.Image):
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:
        return None
    return {
        2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)


# --- libtiff's own messages ------------------------------------------------------------------
# libtiff prints warnings and errors ("WEBP compression support is not configured") straight to
# the process's stderr from C, past Python's warnings. Its handlers are replaced once: warnings
# are dropped, errors are kept per thread and become part of that file's one line.

_libtiff_local = threading.local()
_libtiff_lock = threading.Lock()
_libtiff_handlers: list = []  # keeps the ctypes callbacks alive


class _Messages:
    def clear(self) -> None:
        _libtiff_local.messages = []

    def add(self, text: str) -> None:
        if not hasattr(_libtiff_local, "messages"):
            _libtiff_local.messages = []
        if text not in _libtiff_local.messages and len(_libtiff_local.messages) < 3:
            _libtiff_local.messages.append(text)

    def get(self) -> list[str]:
        return getattr(_libtiff_local, "messages", [])


_libtiff_messages = _Messages()


def _libtiff_said() -> str:
    said = _libtiff_messages.get()
    return f" (libtiff: {'; '.join(said)})" if said else ""


def _loaded_libtiff_paths() -> list[str]:
    """The libtiff Pillow uses: the copy bundled with its wheel, or the system's."""
    import PIL

    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libtiff" in line and "/" in line})
    except OSError:
        pass
    base = os.path.dirname(os.path.dirname(PIL.__file__))
    paths += glob.glob(os.path.join(base, "pillow.libs", "libtiff*")) + glob.glob(os.path.join(base, "PIL", ".dylibs", "libtiff*"))
    if not paths:
        import ctypes.util

        found = ctypes.util.find_library("tiff")
        paths = [found] if found else []
    return list(dict.fromkeys(paths))


def quiet_libtiff() -> None:
    """Install clipcull's libtiff handlers once (where libtiff can be found through ctypes)."""
    if _libtiff_handlers:
        return
    with _libtiff_lock:
        if _libtiff_handlers:
            return
        from PIL import features

        _libtiff_handlers.append(None)  # tried: whatever happens below, only once
        if not features.check("libtiff"):
            return
        try:
            libc = ctypes.CDLL(None)
            vsnprintf = libc.vsnprintf
            vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        except (OSError, AttributeError):
            vsnprintf = None
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

        def on_error(module, fmt, args):
            text = (fmt or b"").decode("utf-8", "replace")
            if vsnprintf is not None:
                buf = ctypes.create_string_buffer(512)
                try:
                    vsnprintf(buf, len(buf), fmt, args)
                    text = buf.value.decode("utf-8", "replace")
                except Exception:
                    pass
            _libtiff_messages.add(text.strip())

        def on_warning(module, fmt, args):
            pass

        callbacks = (handler_type(on_error), handler_type(on_warning))
        _libtiff_handlers.extend(callbacks)
        for path in _loaded_libtiff_paths():
            try:
                lib = ctypes.CDLL(path)
                lib.TIFFSetErrorHandler.argtypes = lib.TIFFSetWarningHandler.argtypes = [handler_type]
                lib.TIFFSetErrorHandler.restype = lib.TIFFSetWarningHandler.restype = ctypes.c_void_p
                lib.TIFFSetErrorHandler(callbacks[0])
                lib.TIFFSetWarningHandler(callbacks[1])
            except (OSError, AttributeError):
                continue


def rawpy_available() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


# LibRaw's flip codes to the rotation that makes the image upright.
_FLIP_TO_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def decode_raw(data: bytes):
    """A RAW file through its embedded preview (rawpy / LibRaw), or a half-size demosaic where
    there is no usable preview; upright by the RAW's own orientation. Returns (image, size)."""
    try:
        import rawpy
    except ImportError:
        raise UnreadableImage(RAW_HINT) from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            size = (raw.sizes.width, raw.sizes.height)
            preview = _raw_preview(raw)
            if preview is not None:
                transpose = _FLIP_TO_TRANSPOSE.get(raw.sizes.flip)
                return to_rgb(preview.transpose(transpose) if transpose is not None else preview), size
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # applies the flip itself
            return Image.fromarray(rgb), size
    except UnreadableImage:
        raise
    except Exception as e:
        raise UnreadableImage(_reason(e, "the RAW data cannot be decoded")) from None


def _raw_preview(raw) -> Image.Image | None:
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(thumb.data))
        image.load()
    else:
        image = Image.fromarray(thumb.data)
    return image if min(image.size) >= MIN_PREVIEW_SIDE else None


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not cost the photo
        return img


def _reason(error: Exception, fallback: str) -> str:
    text = str(error).strip()
    if isinstance(error, Image.UnidentifiedImageError) or text.startswith("cannot identify image file"):
        return "not an image (or a format Pillow cannot read)"
    if "truncated" in text.lower():
        return "file is truncated (incomplete download or copy?)"
    return f"{fallback}: {text}" if text else fallback


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit and float scaled (not clipped), alpha flattened
    onto white, CMYK and palettes converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


def _is_high_depth(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    return _high_depth_to_grey(img).convert("RGB")


def _high_depth_to_grey(img: Image.Image) -> Image.Image:
    """16-bit integer or float greyscale to 8 bits, keeping the tonal range: 16 bits / 257,
    32-bit integers the same when they go above 255, floats in 0..1 x 255; NaN counts as 0.

    Converted in strips of about STRIP_PIXELS: the float64 arithmetic never holds more than
    one strip, so a 195 MP scan costs one byte a pixel on top of its decoded image."""
    width, height = img.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    strips = [(top, min(height, top + rows)) for top in range(0, height, rows)]

    def strip(top: int, bottom: int) -> np.ndarray:
        return np.asarray(img.crop((0, top, width, bottom)), dtype=np.float64)

    divide = img.mode.startswith("I;16")  # 16 bits: / 257
    multiply = False  # floats in 0..1: x 255
    if img.mode in ("I", "F"):
        peak = max((float(np.nanmax(strip(t, b), initial=0)) for t, b in strips), default=0.0)
        divide = img.mode == "I" and peak > 255
        multiply = img.mode == "F" and peak <= 1.0
    out = np.empty((height, width), np.uint8)
    for top, bottom in strips:
        arr = strip(top, bottom)
        if divide:
            arr = arr / 257.0
        elif multiply:
            arr = arr * 255.0
        out[top:bottom] = np.clip(np.rint(np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)), 0, 255)
    return Image.fromarray(out)


def read_facts(data: bytes, size: tuple[int, int] | None = None) -> PhotoFacts:
    """Capture time, camera and orientation from EXIF (exifread); missing tags stay None."""
    facts = PhotoFacts()
    if size:
        facts.width, facts.height = size
    try:
        import exifread

        logging.getLogger("exifread").setLevel(logging.CRITICAL)
        tags = exifread.process_file(io.BytesIO(data), details=False, strict=False)
    except Exception:
        tags = {}
    if not tags:
        # exifread cannot read some containers' EXIF (pillow-heif's HEIC Exif item): Pillow can
        return _pillow_facts(data, facts)
    facts.orientation = _orientation(tags.get("Image Orientation"))
    facts.captured_at = _exif_datetime(tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTime"))
    make = exif_text(tags.get("Image Make")) or ""
    model = exif_text(tags.get("Image Model")) or ""
    if model and make and model.lower().startswith(make.split()[0].lower()):
        make = ""  # "Canon Canon EOS R6" reads badly
    facts.camera = " ".join(p for p in (make, model) if p) or None
    return facts


def read_exposure(data: bytes) -> dict:
    """What the review's info panel shows beside the capture time and camera, from EXIF (exifread):
    lens, exposure time (s), f-number, ISO, focal length (mm); a tag missing or unreadable is None."""
    try:
        import exifread

        logging.getLogger("exifread").setLevel(logging.CRITICAL)
        tags = exifread.process_file(io.BytesIO(data), details=False, strict=False)
    except Exception:
        tags = {}

    def number(*names) -> float | None:
        for name in names:
            try:
                value = float(tags[name].values[0])
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, AttributeError):
                continue
            if np.isfinite(value) and value > 0:
                return value
        return None

    lens = exif_text(tags.get("EXIF LensModel"))
    return {"lens": lens, "exposure_time": number("EXIF ExposureTime"), "f_number": number("EXIF FNumber"),
            "iso": number("EXIF ISOSpeedRatings", "EXIF PhotographicSensitivity"),
            "focal_length": number("EXIF FocalLength")}


def _pillow_facts(data: bytes, facts: PhotoFacts) -> PhotoFacts:
    """Capture time, camera and orientation through Pillow's getexif(), for formats Pillow
    opens (HEIC with pillow-heif) whose EXIF exifread does not find. Reads no pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            sub = exif.get_ifd(0x8769)  # the Exif IFD: DateTimeOriginal lives there
    except Exception:
        return facts
    orientation = exif.get(0x0112)
    facts.orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    facts.captured_at = _exif_datetime(sub.get(0x9003) or exif.get(0x0132))
    make, model = (exif_text(exif.get(tag)) or "" for tag in (0x010F, 0x0110))
    if model and make and model.lower().startswith(make.split()[0].lower()):
        make = ""
    facts.camera = " ".join(p for p in (make, model) if p) or None
    return facts


def _orientation(tag) -> int | None:
    try:
        value = int(tag.values[0])
    except Exception:
        return None
    return value if 1 <= value <= 8 else None


MAX_EXIF_TEXT = 120  # a lens or camera name; a 20,000-character LensModel is cut here


def exif_text(value) -> str | None:
    """An EXIF text (camera, lens) as a person reads it, whatever a file holds: an exifread tag or
    Pillow's value; bytes decoded (UTF-8, else Latin-1), a list of byte values likewise, never
    shown as `b'...'` or `[67, 97, ...]`; cut at the first NUL; at most MAX_EXIF_TEXT characters."""
    if value is None:
        return None
    values = getattr(value, "values", value)  # an exifread tag: what it holds
    if isinstance(values, (list, tuple)) and values and all(type(v) is int and 0 <= v < 256 for v in values):
        values = bytes(values)
    if isinstance(values, (bytes, bytearray)):
        raw = bytes(values).split(b"\x00", 1)[0]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    elif isinstance(values, str):
        text = values.split("\x00", 1)[0]
    else:
        text = str(value)
    text = " ".join(text.split())
    if len(text) > MAX_EXIF_TEXT:
        text = text[:MAX_EXIF_TEXT - 1] + "…"
    return text or None


def _exif_datetime(tag) -> str | None:
    if tag is None:
        return None
    text = str(tag).strip().rstrip("\x00")
    try:
        return dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
