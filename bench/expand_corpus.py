#!/usr/bin/env python3
"""Make a larger benchmark corpus from a small one, where the corpus tool cannot run (a GPU
machine with no network): each new photo is a photo of SRC cropped a little and re-encoded, so
every file has its own content (the cache keys embeddings by content).

    python bench/expand_corpus.py SRC DST COUNT
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image


def variant(job: tuple[Path, Path, int]) -> None:
    src, dst, n = job
    with Image.open(src) as img:
        exif = img.info.get("exif", b"")
        w, h = img.size
        inset = 1 + n % 17  # a different crop for each copy: different bytes and embeddings
        img.crop((inset, inset, w - inset, h - inset)).save(dst, quality=90 + n % 6, exif=exif)


def main() -> None:
    src_dir, dst_dir, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    sources = sorted(src_dir.glob("*.jpg"))
    dst_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sources[i % len(sources)], dst_dir / f"IMG_{i + 1:04d}.jpg", i) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(variant, jobs, chunksize=4))
    print(f"{count} photos in {dst_dir}")


if __name__ == "__main__":
    main()
