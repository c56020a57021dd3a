#!/usr/bin/env python3
"""`clipcull review` and `clipcull search` speed, in a real (headless) browser.

    python bench/bench_review.py [--photos 1000] [--search-rows 10000] [--screenshot bench/.work/review.png]

Measures, on this machine:
  (a) `clipcull review` start to a usable page, 1,000 cached photos: the command started, the URL
      printed, the page's grid drawn, every thumbnail in view loaded. Twice: first review (the
      thumbnails are made) and second review (they come from the disk cache);
  (b) key-to-screen latency in chromium: key event to the frame after the change is drawn
      (arrow moves and star ratings, which also write XMP), median / 95th percentile / max;
  (c) search over 10,000 cached photos: random 512-d embeddings inserted into a cache, the query
      embedded by a ViT-B-32 text tower (random weights, the same cost as real ones): the first
      search (loading the 10,000 embeddings from SQLite) and warm searches;
  (d) the page's own search (HTTP round trip + drawing) over the 1,000 photos of (a);
  (e) next and previous preview: J or K to the preview loaded in the page, among 12 camera-size
      photos (6000 x 4000 JPEGs) at a photographer's pace (a second on each photo: the neighbours'
      previews are prefetched meanwhile), and ten quick K presses to the last preview shown;
  (f) compare of 4 of those photos at 100 %: Z pressed to every photo shown at full size,
      positioned at the same point (the full-size images made: first time; then from the cache).

To make the 1,000-photo cache quickly, the photos are small (320x213 JPEGs, ten seconds apart: no
bursts) and the model is a
tiny random open_clip (16-d embeddings): review never runs the model for cached photos, so what
(a) and (b) measure does not depend on it. Needs chromium, chromedriver and selenium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_model(work: Path) -> tuple[Path, Path]:
    import open_clip
    import torch

    config = work / "bench-tiny.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = work / "bench-tiny.pt"
    torch.save(open_clip.create_model("bench-tiny", pretrained=None).state_dict(), checkpoint)
    return config, checkpoint


def make_shoot(folder: Path, count: int, big: int = 12) -> None:
    from PIL import Image

    from conftest import make_photo

    for i in range(count):  # ten seconds apart, a day after the big ones: no bursts, no stacks
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2024:05:02 {8 + i // 360:02d}:{i // 6 % 60:02d}:{i % 6 * 10:02d}"}
        make_photo(folder / f"IMG_{i:05d}.jpg", seed=i, size=(320, 213), quality=85, exif=exif)
    for i in range(big):  # camera-size photos (24 MP), ten minutes apart (no burst): first by capture time
        small = make_photo(folder / f"BIG_{i:02d}.jpg", seed=10_000 + i, size=(750, 500))
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2024:05:01 {10 + i // 6}:{i % 6 * 10:02d}:00"}
        with Image.open(small) as im:
            im.resize((6000, 4000), Image.BICUBIC).save(small, quality=90, exif=exif)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--disable-dev-shm-usage",
                "--no-proxy-server", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(120)
    return driver


def wait_for(condition, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.01)
    raise TimeoutError("waited too long")


VISIBLE_THUMBS_LOADED = """
const grid = document.getElementById('grid'), box = grid.getBoundingClientRect();
const imgs = [...grid.querySelectorAll('img')].filter(i => {
  const r = i.getBoundingClientRect(); return r.bottom > box.top && r.top < box.bottom; });
return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
"""


def review_start(driver, env, folder) -> tuple[subprocess.Popen, str, dict]:
    """Start `clipcull review`; seconds to the URL, the drawn grid, the thumbnails in view."""
    t0 = time.perf_counter()
    # --similarity: the tiny random model finds all photos alike at the default 0.92 (one burst)
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "review", str(folder), "--no-browser",
                             "--similarity", "0.9995"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    t_url = time.perf_counter() - t0
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"))
    t_grid = time.perf_counter() - t0
    wait_for(lambda: driver.execute_script(VISIBLE_THUMBS_LOADED))
    t_thumbs = time.perf_counter() - t0
    return proc, url, {"url": t_url, "grid": t_grid, "thumbs": t_thumbs}


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


def key_latencies(driver, keys: list[str]) -> list[float]:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("window.__latencies = []")
    for k in keys:
        ActionChains(driver).send_keys(k).perform()
        time.sleep(0.05)  # a photographer's pace, far above the frame time
    wait_for(lambda: driver.execute_script("return window.__latencies.length") >= len(keys), 30)
    return driver.execute_script("return window.__latencies")


PREVIEW_TIMES = """
window.__preview = [];
document.addEventListener('keydown', (e) => { window.__pressed = e.timeStamp; }, true);
document.getElementById('preview').addEventListener('load', () => window.__preview.push(performance.now() - window.__pressed));
"""


def preview_times(driver, key: str, times: int, dwell_s: float) -> list[float]:
    """ms from each key press to the new preview loaded, one press every dwell_s (the last press's
    preview only, when dwell_s is 0: ten quick presses, then the time to the last preview)."""
    from selenium.webdriver.common.action_chains import ActionChains

    out = []
    for _ in range(times):
        n = driver.execute_script("return window.__preview.length")
        ActionChains(driver).send_keys(key).perform()
        if dwell_s:
            wait_for(lambda: driver.execute_script("return window.__preview.length") > n, 60)
            out.append(driver.execute_script("return window.__preview[window.__preview.length - 1]"))
            time.sleep(dwell_s)
    return out


def compare_at_100(driver) -> float:
    """Z pressed in compare to every photo at 100 %, positioned; seconds."""
    from selenium.webdriver.common.action_chains import ActionChains

    t = time.perf_counter()
    ActionChains(driver).send_keys("z").perform()
    wait_for(lambda: driver.execute_script(
        "const c = document.getElementById('compare'); return c.dataset.ready === '1' && "
        "c.querySelectorAll('.frame.zoomed').length === 4"), 120)
    return time.perf_counter() - t


def summary(values: list[float]) -> str:
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return f"median {statistics.median(v):.1f} ms, p95 {p95:.1f} ms, max {v[-1]:.1f} ms (n={len(v)})"


def search_bench(work: Path, rows: int) -> dict:
    """Search over `rows` random embeddings in a cache, with a ViT-B-32 text tower."""
    import open_clip
    import torch

    from clip_cull.model.encoder import ClipEncoder, ModelSpec
    from clip_cull.model.session import ModelSession
    from clip_cull.scoring.search import EmbeddingIndex, query_embedding
    from clip_cull.store.cache import EmbeddingRecord, FileRecord, Store

    store = Store.open(work / "search.db")
    rng = np.random.default_rng(0)
    model_id = "bench-vit-b-32"
    paths = [f"/bench/photo_{i:05d}.jpg" for i in range(rows)]
    files = [FileRecord(p, 1, 1, f"fp{i:05d}") for i, p in enumerate(paths)]
    embs = [EmbeddingRecord(f"fp{i:05d}", rng.normal(size=512).astype(np.float32), None) for i in range(rows)]
    store.save(files, embs, model_id)

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    encoder = ClipEncoder(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), torch.device("cpu"))
    session = ModelSession(ModelSpec("ViT-B-32", "random"), store, "cpu", loader=lambda: encoder, model_id=model_id)
    t0 = time.perf_counter()
    index = EmbeddingIndex(store, paths, model_id)
    t_load = time.perf_counter() - t0
    timings = []
    for query in ["cutting the cake", "the bride laughing", "a dog on the lawn", "fireworks", "the first dance",
                  "rings on a table"]:
        t = time.perf_counter()
        hits = index.top(query_embedding(store, session, query), 20)
        timings.append(time.perf_counter() - t)
        assert len(hits) == 20
    store.close()
    return {"load": t_load, "first": timings[0], "warm": statistics.median(timings[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--search-rows", type=int, default=10000)
    parser.add_argument("--screenshot", type=Path, default=ROOT / "bench" / ".work" / "review.png")
    args = parser.parse_args()
    from bench_index import machine

    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (the machine is shared)")
    print(f"chromium: {subprocess.run([shutil.which('chromium') or 'chromium', '--version'], capture_output=True, text=True).stdout.strip()}")
    work = Path(tempfile.mkdtemp(prefix="clipcull-bench-review-"))
    try:
        config, checkpoint = tiny_model(work)
        folder = work / "shoot"
        t = time.perf_counter()
        make_shoot(folder, args.photos)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CLIPCULL_DB": str(work / "cache" / "c.db"),
               "CLIPCULL_MODEL": str(config), "CLIPCULL_PRETRAINED": str(checkpoint), "XDG_CACHE_HOME": str(work / "xdg")}
        subprocess.run([sys.executable, "-m", "clip_cull", "rank", str(folder), "--limit", "1"], env=env, check=True,
                       capture_output=True, timeout=1200)
        print(f"setup: {args.photos} photos made and ranked (cached) in {time.perf_counter() - t:.1f} s")

        driver = browser()
        proc = subprocess.Popen(["true"])
        try:
            proc, _, cold = review_start(driver, env, folder)
            stop(proc)
            proc, url, warm = review_start(driver, env, folder)
            for name, r in (("first review (thumbnails made)", cold), ("second review (thumbnails cached)", warm)):
                print(f"(a) {name}: URL {r['url']:.2f} s, grid drawn {r['grid']:.2f} s, "
                      f"thumbnails in view {r['thumbs']:.2f} s")
            moves = key_latencies(driver, ["j"] * 40 + ["k"] * 10)
            stars = key_latencies(driver, ["3", "j", "4", "j", "x", "j", "p", "j", "5", "j"] * 3)
            print(f"(b) key to screen, moves: {summary(moves)}")
            print(f"(b) key to screen, decisions and moves (XMP written): {summary(stars)}")
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.keys import Keys

            searches = []
            for query in ["a red sky", "green grass", "the bride", "blue water", "a dark room"]:
                ActionChains(driver).send_keys("/").perform()
                t = time.perf_counter()
                ActionChains(driver).send_keys(query, Keys.ENTER).perform()
                wait_for(lambda: "search results" in driver.find_element("id", "status").text)
                searches.append(time.perf_counter() - t)
                ActionChains(driver).send_keys(Keys.ESCAPE).perform()
                wait_for(lambda: "search results" not in driver.find_element("id", "status").text)
            print(f"(d) page search over {args.photos} photos (typing included): first {searches[0]:.2f} s, "
                  f"then median {statistics.median(searches[1:]):.2f} s")
            from selenium.webdriver.support.ui import Select

            Select(driver.find_element("id", "sort")).select_by_value("time")  # the 12 camera-size photos first
            driver.execute_script(PREVIEW_TIMES)
            ActionChains(driver).send_keys(Keys.HOME).perform()
            time.sleep(2.0)
            print(f"    (first by capture time: {driver.execute_script('return state.view.slice(0, 13).map(id => state.byId.get(id).name)')})")
            forward = preview_times(driver, "j", 10, 1.0)
            backward = preview_times(driver, "k", 10, 1.0)
            name = lambda: driver.execute_script("return current().name")  # noqa: E731
            print(f"    (after 10 J and 10 K: {name()})")
            ActionChains(driver).send_keys(*["j"] * 10).perform()
            cells = driver.execute_script("return state.view.slice(0, 11).map(id => state.byId.get(id).name)")
            wait_for(lambda: name() == cells[10], 30)  # (a burst stacks photos: its cell counts once)
            time.sleep(2.0)
            t = time.perf_counter()
            ActionChains(driver).send_keys(*["k"] * 10).perform()
            wait_for(lambda: driver.execute_script(
                "const i = document.getElementById('preview'); return current().id === state.view[0] && "
                "i.complete && i.naturalWidth > 0 && i.getAttribute('src') === imageUrl(current(), 'preview')"), 120)
            quick = time.perf_counter() - t
            print(f"(e) next preview (J, 24 MP photos, a second on each): {summary(forward)}")
            print(f"(e) previous preview (K, the same): {summary(backward)}")
            print(f"(e) ten quick K presses to the last preview shown: {quick:.2f} s")
            ActionChains(driver).send_keys(Keys.HOME, "s", "j", "s", "j", "s", "j", "s", "c").perform()
            wait_for(lambda: driver.execute_script(
                "return [...document.querySelectorAll('#compare img')].filter(i => i.complete && i.naturalWidth).length") == 4)
            first = compare_at_100(driver)
            time.sleep(0.5)
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot.with_name("review-compare-bench.png")))
            ActionChains(driver).send_keys("z").perform()
            time.sleep(0.5)
            again = compare_at_100(driver)
            print(f"(f) compare of 4 photos (24 MP) at 100 %: {first:.2f} s the first time (full-size images made), "
                  f"{again:.2f} s again")
            ActionChains(driver).send_keys(Keys.ESCAPE, Keys.ESCAPE).perform()
            Select(driver.find_element("id", "sort")).select_by_value("best")
            ActionChains(driver).send_keys(Keys.HOME, "j", "j").perform()
            time.sleep(1.0)
            wait_for(lambda: driver.execute_script(VISIBLE_THUMBS_LOADED))
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot))
            print(f"screenshot: {args.screenshot.relative_to(ROOT) if args.screenshot.is_relative_to(ROOT) else args.screenshot}")
            stop(proc)
        finally:
            driver.quit()
            if proc.poll() is None:  # a measurement failed: the review stops all the same
                stop(proc)
        s = search_bench(work, args.search_rows)
        print(f"(c) search over {args.search_rows} cached photos, ViT-B-32 text tower: embeddings loaded "
              f"{s['load']:.2f} s, first query {s['first'] * 1000:.0f} ms, warm query {s['warm'] * 1000:.0f} ms (median of 5)")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
