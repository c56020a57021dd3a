#!/usr/bin/env python3
"""The review page's screenshots in docs/: the grid, compare at 100 %, the info panel.

    python bench/review_screenshots.py [--out docs]

A shoot of real photographs that ship inside packages (scikit-image's and matplotlib's samples),
with camera EXIF written here for the example, ranked with a tiny random model (the order means
nothing), reviewed in headless chromium at 1400 x 900. Needs chromium, chromedriver, selenium,
scikit-image, and the faces extra for the face close-ups.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]


def shoot(folder: Path) -> None:
    import matplotlib
    import skimage.data
    from PIL import Image, ImageFilter
    from PIL.TiffImagePlugin import IFDRational

    astronaut = Image.fromarray(skimage.data.astronaut())
    with Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg") as im:
        grace = im.convert("RGB")
    soft = astronaut.copy()
    head = (160, 50, 290, 190)
    soft.paste(astronaut.crop(head).filter(ImageFilter.GaussianBlur(3)), head[:2])
    photos = {"astronaut": astronaut, "astronaut_2": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
              "astronaut_3": soft, "grace": grace}
    for name in ("coffee", "chelsea", "rocket", "astronaut", "motorcycle", "camera", "coins", "hubble_deep_field",
                 "immunohistochemistry", "eagle", "lily", "retina"):
        try:
            data = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        except Exception:  # a sample that needs a download (pooch): left out
            continue
        if name != "astronaut":
            photos[name] = Image.fromarray(data).convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, image) in enumerate(photos.items()):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R6"
        second = i if name.startswith("astronaut") else 30 + 10 * i  # the astronauts: a burst, a second apart
        exif[0x8769] = {0x9003: f"2024:05:01 10:{second // 60:02d}:{second % 60:02d}", 0x829A: IFDRational(1, 250),
                        0x829D: IFDRational(28, 10), 0x8827: 400, 0x920A: IFDRational(85, 1), 0xA434: "EF85mm f/1.8 USM"}
        image.save(folder / f"{name}.jpg", quality=92, exif=exif)


def jpeg(png: bytes, path: Path, box=None) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if box:
            im = im.crop(box)
        im.save(path, quality=82, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def main() -> None:
    from bench_review import browser, tiny_model, wait_for
    from selenium.webdriver.common.action_chains import ActionChains

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipcull-shots-"))
    proc = driver = None
    try:
        config, checkpoint = tiny_model(work)
        folder = work / "wedding"
        shoot(folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CLIPCULL_DB": str(work / "c.db"),
               "CLIPCULL_MODEL": str(config), "CLIPCULL_PRETRAINED": str(checkpoint), "XDG_CACHE_HOME": str(work / "x"),
               "CLIPCULL_STATE": str(work / "state.db")}
        proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "review", str(folder), "--no-browser",
                                 "--similarity", "0.999"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        url = proc.stdout.readline().strip()
        driver = browser()
        driver.get(url)
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"))
        keys = lambda *k: ActionChains(driver).send_keys(*k).perform()  # noqa: E731
        # a few decisions, as a photographer would have made them
        names = driver.execute_script("return state.view.map(id => state.byId.get(id).name)")
        for name, key in (("coffee.jpg", "4"), ("chelsea.jpg", "p"), ("rocket.jpg", "x"), ("grace.jpg", "5"),
                          ("eagle.jpg", "6")):
            if name in names:
                driver.execute_script("selectId(state.byId.get([...state.byId.keys()].find(id => "
                                      "state.byId.get(id).name === arguments[0])).id)", name)
                keys(key)
        time.sleep(1.0)
        driver.execute_script("selectId([...state.byId.values()].find(p => p.name === 'grace.jpg').id)")
        time.sleep(2.0)
        jpeg(driver.get_screenshot_as_png(), args.out / "review-grid.jpg")
        # the info panel: the viewer's lower part, a portrait with its face
        view = driver.execute_script("const r = document.getElementById('viewer').getBoundingClientRect();"
                                     "return [r.left, r.top, r.right, r.bottom, devicePixelRatio]")
        scale = view[4]
        jpeg(driver.get_screenshot_as_png(), args.out / "review-info.jpg",
             tuple(round(v * scale) for v in view[:4]))
        # compare at 100 %: the astronaut's burst, zoomed on her eyes
        for name in ("astronaut.jpg", "astronaut_2.jpg", "astronaut_3.jpg"):  # marked with S, compared with C
            driver.execute_script("selectId([...state.byId.values()].find(p => p.name === arguments[0]).id)", name)
            keys("s")
        keys("c")
        wait_for(lambda: driver.execute_script(
            "return [...document.querySelectorAll('#compare img')].filter(i => i.complete && i.naturalWidth).length") >= 3)
        driver.execute_script("zoomAt(0.44, 0.2)")
        wait_for(lambda: driver.execute_script("return document.getElementById('compare').dataset.ready === '1'"))
        time.sleep(1.0)
        jpeg(driver.get_screenshot_as_png(), args.out / "review-compare.jpg")
    finally:
        if driver is not None:
            driver.quit()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
