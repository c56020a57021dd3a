"""RAW files (small DNGs made here), RAW+JPEG pairs, and the focus and exposure checks."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clip_cull.core.images import decode_raw
from clip_cull.core.quality import flag, measure
from helpers import make_photo, run


def make_dng(path: Path, preview_size=(384, 256), preview_colour=(200, 30, 30), orientation=1) -> Path:
    """A minimal DNG: an RGB preview in IFD0 (as cameras embed one) and a 12-bit RGGB mosaic in a SubIFD."""
    import tifffile

    h, w = 256, 384
    y, x = np.mgrid[0:h, 0:w]
    cfa = np.zeros((h, w), np.uint16)
    cfa[0::2, 0::2] = 300  # red sites dark
    cfa[0::2, 1::2] = (3000 + x[0::2, 1::2]).astype(np.uint16)  # green sites bright
    cfa[1::2, 0::2] = (3000 + y[1::2, 0::2]).astype(np.uint16)
    cfa[1::2, 1::2] = 300
    preview = np.zeros((preview_size[1], preview_size[0], 3), np.uint8)
    preview[:] = preview_colour
    preview[: preview_size[1] // 4, : preview_size[0] // 4] = (255, 255, 255)  # a white corner shows orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        tif.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=[
            (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
            (50708, "s", 0, "clipcull test camera", True),  # UniqueCameraModel
            (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),  # ColorMatrix1
            (271, "s", 0, "clipcull", True), (272, "s", 0, "test", True), (274, "H", 1, orientation, True),
        ])
        tif.write(cfa, photometric=32803, subfiletype=0, extratags=[
            (33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50717, "I", 1, 4095, True),
        ])
    return path


# --- RAW ----------------------------------------------------------------------------------------


def test_dng_is_read_through_its_embedded_preview_upright():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = make_dng(Path(tmp) / "a.dng", orientation=6).read_bytes()
    image, size = decode_raw(data)
    assert size == (384, 256)
    assert image.size == (256, 384)  # orientation 6: rotated upright
    arr = np.asarray(image)
    assert tuple(arr[200, 128]) == (200, 30, 30)  # the preview, not a demosaic
    assert tuple(arr[10, 250]) == (255, 255, 255)  # stored top-left corner is now top-right


def test_tiny_preview_falls_back_to_a_half_size_demosaic(tmp_path):
    data = make_dng(tmp_path / "b.dng", preview_size=(96, 64)).read_bytes()
    image, _ = decode_raw(data)
    assert image.size == (192, 128)  # half of the 384 x 256 sensor
    r, g, b = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert g > r and g > b  # the mosaic's bright green sites, not the red preview


def test_raw_jpeg_pair_is_one_photo_and_moves_together(tiny_env, tmp_path):
    folder = tmp_path / "pairs"
    make_photo(folder / "IMG_0001.jpg", seed=1)
    make_dng(folder / "IMG_0001.dng")
    make_photo(folder / "IMG_0002.jpg", seed=2)
    make_dng(folder / "IMG_0003.dng")  # a lone RAW
    rows = [json.loads(l) for l in run("rank", folder, "--json").stdout.splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.dng"]
    pair = next(r for r in rows if r["path"].endswith("IMG_0001.jpg"))
    assert pair["raw"] == [str(folder / "IMG_0001.dng")]

    assert run("tag", folder, "--sidecar", "darktable").exit_code == 0
    assert (folder / "IMG_0001.dng.xmp").is_file() and (folder / "IMG_0001.jpg.xmp").is_file()
    result = run("move", folder, "--keep-top", "0", "--dry-run")
    assert result.stdout.count("would move") == 8  # 3 photos, the RAW beside IMG_0001.jpg, 4 sidecars
    moved = run("move", folder, "--below", "100")
    assert moved.exit_code == 0, moved.stderr
    assert sorted(p.name for p in (folder / "_rejects").iterdir()) == sorted([
        "IMG_0001.jpg", "IMG_0001.dng", "IMG_0001.jpg.xmp", "IMG_0001.dng.xmp",
        "IMG_0002.jpg", "IMG_0002.jpg.xmp", "IMG_0003.dng", "IMG_0003.dng.xmp"])
    assert run("undo").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "IMG_0001.jpg", "IMG_0001.dng", "IMG_0001.jpg.xmp", "IMG_0001.dng.xmp",
        "IMG_0002.jpg", "IMG_0002.jpg.xmp", "IMG_0003.dng", "IMG_0003.dng.xmp"])


def test_without_rawpy_raw_files_are_one_hint(tiny_env, tmp_path, monkeypatch):
    monkeypatch.setattr("clip_cull.cli.scoring.rawpy_available", lambda: False)
    folder = tmp_path / "raws"
    make_dng(folder / "IMG_0003.dng")
    make_dng(folder / "IMG_0004.dng")
    make_photo(folder / "IMG_0005.jpg", seed=3)
    result = run("rank", folder, "--json", "--strict")
    assert result.exit_code == 0
    hints = [l for l in result.stderr.splitlines() if "RAW" in l]
    assert hints == [f"clipcull: skipped 2 RAW files (e.g. {folder / 'IMG_0003.dng'}): "
                     "RAW files need the optional extra: pip install 'clipcull[raw]'"]


# --- focus and exposure --------------------------------------------------------------------------


def detailed(size=(600, 400), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.NEAREST)  # hard edges everywhere
    return Image.fromarray(np.clip(np.asarray(img) + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255).astype(np.uint8))


def test_focus_orders_known_gaussian_blurs():
    sharp = detailed()
    focus = [measure(sharp.filter(ImageFilter.GaussianBlur(r)) if r else sharp).focus for r in (0, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(focus, focus[1:])), focus


def test_clipped_photo_is_flagged_and_a_sharp_subject_on_a_soft_background_is_not():
    sharp = detailed(seed=1)
    soft = sharp.filter(ImageFilter.GaussianBlur(6))
    subject = soft.copy()
    subject.paste(sharp.crop((225, 150, 375, 250)), (225, 150))  # sharp subject, 1/16 of the frame
    blown = Image.fromarray(np.clip(np.asarray(sharp).astype(int) * 3, 0, 255).astype(np.uint8))
    dark = Image.fromarray((np.asarray(sharp) // 40).astype(np.uint8))  # pushed down to clip
    shoot = {f"p{i}": measure(detailed(seed=10 + i)) for i in range(4)}
    shoot.update(soft=measure(soft), subject=measure(subject), blown=measure(blown), dark=measure(dark))
    flags = flag(shoot)
    assert flags["soft"].blurry and not flags["subject"].blurry
    assert not any(flags[f"p{i}"].blurry or flags[f"p{i}"].badly_exposed for i in range(4))
    assert flags["blown"].overexposed and not flags["blown"].underexposed
    assert flags["dark"].underexposed
    assert flag(shoot, blur_below=1e9)["subject"].blurry  # an absolute threshold overrides the shoot's


def test_blurry_photos_in_rank_best_move_and_tag(tiny_env, tmp_path):
    folder = tmp_path / "focus"
    folder.mkdir()
    for i in range(4):
        detailed(seed=20 + i).save(folder / f"sharp_{i}.jpg", quality=95)
    detailed(seed=30).filter(ImageFilter.GaussianBlur(8)).save(folder / "blurred.jpg", quality=95)
    rows = [json.loads(l) for l in run("rank", folder, "--json", "--penalize", "blur").stdout.splitlines()]
    assert rows[-1]["path"].endswith("blurred.jpg") and rows[-1]["flags"] == ["blurry"]
    assert all(r["focus"] > rows[-1]["focus"] for r in rows[:-1])
    assert not any(p.endswith("blurred.jpg") for p in run("best", folder, "--top", "10").stdout.splitlines())
    assert len(run("best", folder, "--top", "10", "--include-blurry").stdout.splitlines()) == 5
    tagged = run("tag", folder, "--reject-blurry")
    assert tagged.exit_code == 0
    assert 'xmp:Rating="-1"' in (folder / "blurred.xmp").read_text()
    moved = run("move", folder, "--blurry")
    assert moved.exit_code == 0, moved.stderr
    assert sorted(p.name for p in (folder / "_rejects").iterdir()) == ["blurred.jpg", "blurred.xmp"]


def straightforward_focus(y: np.ndarray) -> float:
    """The definition, computed plainly and independently: scipy's Laplacian (4-neighbour, the
    border left out), each tile of the 8 x 8 grid (tile i of n rows spans i*n//8 to (i+1)*n//8)
    with np.var in float64, the 95th percentile over the non-empty tiles."""
    from scipy import ndimage

    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
    lap = ndimage.convolve(y.astype(np.float64), kernel, mode="constant")[1:-1, 1:-1]
    h, w = lap.shape
    tiles = [lap[i * h // 8:(i + 1) * h // 8, j * w // 8:(j + 1) * w // 8] for i in range(8) for j in range(8)]
    return float(np.percentile([t.var() for t in tiles if t.size], 95))


@pytest.mark.parametrize("shape", [(427, 640), (640, 427), (480, 640), (9, 640), (5, 13), (64, 64), (3, 3)])
def test_focus_in_a_few_numpy_calls_equals_the_tile_by_tile_definition(shape):
    from clip_cull.core.quality import _focus

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    base = rng.integers(0, 256, (max(1, shape[0] // 4), max(1, shape[1] // 4)), dtype=np.uint8)
    y = np.asarray(Image.fromarray(base).resize((shape[1], shape[0]), Image.BICUBIC), np.float32)
    y = np.clip(y + rng.normal(0, 20, shape), 0, 255).round().astype(np.float32)  # texture and flat areas
    np.testing.assert_allclose(_focus(y), straightforward_focus(y), rtol=1e-9)


def test_exposure_figures_are_the_shares_of_clipped_pixels_and_the_mean():
    from clip_cull.core.quality import measure_luminance

    y = np.random.default_rng(3).integers(0, 256, (300, 400), dtype=np.uint8)
    got = measure_luminance(y)
    assert got["highlights"] == pytest.approx(float(np.mean(y >= 250)), abs=1e-12)
    assert got["shadows"] == pytest.approx(float(np.mean(y <= 5)), abs=1e-12)
    assert got["brightness"] == pytest.approx(float(y.mean()) / 255, abs=1e-12)

