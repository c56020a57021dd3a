"""Decoding: orientation, colour modes, broken files, size limits, EXIF facts."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clip_cull.core.images import UnreadableImage, decode_photo, read_facts, to_rgb


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def two_halves(w=80, h=40) -> Image.Image:
    """Left half red, right half blue: orientation is easy to read back."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_exif_orientation_6_is_rotated_upright():
    # Stored landscape 80x40 with Orientation=6 (rotate 90 CW to view): the viewer sees 40x80,
    # the stored left edge (red) on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg_bytes(two_halves(), exif=exif.tobytes())
    img, stored = decode_photo(data, min_side=16)
    assert stored == (80, 40)
    assert img.size == (40, 80)
    top, bottom = np.asarray(img)[5, 20], np.asarray(img)[75, 20]
    assert top[0] > 200 and top[2] < 60  # red
    assert bottom[2] > 200 and bottom[0] < 60  # blue


def test_cmyk_jpeg_becomes_rgb_with_right_colours():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    img, _ = decode_photo(jpeg_bytes(cmyk), min_side=8)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_keeps_its_tones_instead_of_clipping():
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    img16 = Image.fromarray(values)
    assert img16.mode.startswith("I;16")
    img, _ = decode_photo(png_bytes(img16), min_side=2)
    row = np.asarray(img)[0, :, 0]
    expected = np.rint(values[0] / 257.0).astype(np.uint8)  # 0, 64, 128, 255
    np.testing.assert_array_equal(row, expected)


def _png_16bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_rgb_png_is_read_as_8_bit_rgb():
    pixels = np.zeros((4, 4, 3), np.uint16)
    pixels[..., 0] = 65535
    pixels[..., 1] = 32896  # 128 * 257
    img, _ = decode_photo(_png_16bit_rgb(pixels), min_side=2)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img)[0, 0], [255, 128, 0])


def test_palette_with_transparency_is_flattened_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    pal.putpixel((0, 0), 1)
    img, _ = decode_photo(png_bytes(pal, transparency=0), min_side=2)
    arr = np.asarray(img)
    np.testing.assert_array_equal(arr[0, 0], [255, 0, 0])  # opaque red pixel
    np.testing.assert_array_equal(arr[4, 4], [255, 255, 255])  # transparent: white, not black


def test_rgba_alpha_is_composited():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    arr = np.asarray(to_rgb(rgba))
    np.testing.assert_array_equal(arr[1, 1], [0, 0, 255])
    np.testing.assert_array_equal(arr[0, 0], [255, 255, 255])


def test_gif_first_frame_is_used():
    frames = [Image.new("P", (8, 8), i) for i in (1, 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 255] + [0] * 759)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img, _ = decode_photo(buf.getvalue(), min_side=2)
    np.testing.assert_array_equal(np.asarray(img)[0, 0], [0, 255, 0])


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not a photo\n", "not an image"),
    ],
)
def test_unreadable_inputs_give_a_reason(data, reason):
    with pytest.raises(UnreadableImage, match=reason):
        decode_photo(data, min_side=16)


def test_truncated_jpeg_is_reported_as_truncated():
    data = jpeg_bytes(Image.effect_noise((256, 256), 60).convert("RGB"))
    with pytest.raises(UnreadableImage, match="truncated"):
        decode_photo(data[: len(data) // 2], min_side=16)


def test_pixel_limit_refuses_before_decoding():
    data = png_bytes(Image.new("L", (100, 100)))
    with pytest.raises(UnreadableImage, match="10000|over the limit"):
        decode_photo(data, min_side=8, max_pixels=5_000)


def test_fast_jpeg_decode_keeps_twice_the_model_size():
    data = jpeg_bytes(Image.effect_noise((2000, 1200), 40).convert("RGB"))
    fast, stored = decode_photo(data, min_side=224, fast=True)
    exact, _ = decode_photo(data, min_side=224, fast=False)
    assert stored == (2000, 1200) and exact.size == (2000, 1200)
    assert min(fast.size) >= 448 and fast.size[0] < 2000  # DCT-scaled, never below 2x224


def test_exif_facts_are_read():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R6"
    exif[0x0112] = 8
    exif[0x8769] = {0x9003: "2026:05:01 09:00:07"}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
    data = jpeg_bytes(two_halves(), exif=exif.tobytes())
    facts = read_facts(data, (80, 40))
    assert (facts.width, facts.height, facts.orientation) == (80, 40, 8)
    assert facts.captured_at == "2026-05-01T09:00:07"
    assert facts.camera == "Canon EOS R6"


def test_missing_exif_leaves_facts_empty():
    facts = read_facts(png_bytes(Image.new("RGB", (4, 4))), (4, 4))
    assert facts.captured_at is None and facts.camera is None and facts.orientation is None
