"""Reading photos safely: decode, orientation, colour modes, size limits, EXIF facts.

Everything here works on the bytes of one file and raises UnreadableImage with a reason a
photographer can read; the indexer records that reason and goes on with the next photo.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 250_000_000  # above any camera; stops decompression bombs
MIN_PREVIEW_SIDE = 256  # a RAW's embedded preview smaller than this is not used
RAW_HINT = "RAW files need the optional extra: pip install 'clipcull[raw]'"
ALPHA_BACKGROUND = (255, 255, 255)  # transparent areas are shown on white, as viewers do


class UnreadableImage(Exception):
    """This file cannot be used as a photo; str() is the reason."""


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
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"too many pixels ({e})") from None
    except Exception as e:  # UnidentifiedImageError, struct errors from mangled headers, ...
        raise UnreadableImage(_reason(e, "not an image Pillow can read")) from None
    width, height = img.size
    if width * height > max_pixels:
        raise UnreadableImage(
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
    try:
        img.load()
    except Exception as e:
        raise UnreadableImage(_reason(e, "the image data cannot be decoded")) from None
    img = _upright(img)
    return to_rgb(img), (width, height)


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


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit integer or float greyscale to 8 bits, keeping the tonal range."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 257.0
    elif img.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


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
    make = str(tags.get("Image Make", "")).strip()
    model = str(tags.get("Image Model", "")).strip()
    if model and make and model.lower().startswith(make.split()[0].lower()):
        make = ""  # "Canon Canon EOS R6" reads badly
    facts.camera = " ".join(p for p in (make, model) if p) or None
    return facts


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
    make, model = (str(exif.get(tag) or "").strip().rstrip("\x00") for tag in (0x010F, 0x0110))
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


def _exif_datetime(tag) -> str | None:
    if tag is None:
        return None
    text = str(tag).strip().rstrip("\x00")
    try:
        return dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
