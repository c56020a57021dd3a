#!/usr/bin/env python3
"""Fine-tuning's data loading: one epoch of `train finetune` with 0 DataLoader workers (decode in
the training process) against the GPU default (the cores available), in one run.

    python bench/bench_finetune_loader.py [--images 96] [--size 800x600] [--model tiny|ViT-B-32]

With `--model tiny` (default) the network costs almost nothing, which is the situation on a GPU:
the epoch time is then the data path (JPEG decode + open_clip's transform), and the ratio says
how much the workers take off a GPU's wait. `--model ViT-B-32` runs the real architecture (random
weights) on the CPU, where the workers compete with the model for the same cores. Compare the
ratio, not the absolute figures: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import logging

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A 224-pixel tower of one narrow layer: open_clip's real preprocessing, almost no model.
TINY_224 = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.3, 0.3, (3, 2))
        pixels = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
        pixels += rng.normal(0, 12, pixels.shape)
        path = folder / f"{i}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def load_model(name: str, folder: Path):
    import open_clip
    import torch

    from clip_cull.model.encoder import ModelSpec, load_encoder

    if name == "tiny":
        config = folder / "bench-tiny-224.json"
        config.write_text(json.dumps(TINY_224))
        open_clip.add_model_config(config)
        arch = config.stem
    else:
        config, arch = None, name
    torch.manual_seed(0)
    checkpoint = folder / "weights.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), checkpoint)
    return load_encoder(ModelSpec(str(config) if config else name, str(checkpoint)), "cpu"), arch


def one_epoch(encoder, arch, paths, workers: int, batch: int, out: Path) -> float:
    from clip_cull.research.finetune import AvaImages, FinetuneSettings, train_finetune
    from clip_cull.model.heads.finetuned import trained_architecture

    targets = np.full((len(paths), 10), 0.1)
    train = AvaImages(paths, targets, encoder.preprocess)
    val = AvaImages(paths[:batch], targets[:batch], encoder.preprocess)
    meta = {"architecture": arch, "model_config": trained_architecture(arch, encoder.model), "backbone": "bench"}
    settings = FinetuneSettings(max_epochs=1, batch_size=batch, workers=workers)
    start = time.perf_counter()
    train_finetune(encoder, train, val, out, settings, meta, fresh=True)
    return time.perf_counter() - start


def main() -> None:
    import torch

    from clip_cull.research.finetune import available_cores, default_loader_workers

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", default="800x600")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's 'no pretrained weights' lines
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp, args.images, size)
        encoder, arch = load_model(args.model, tmp)
        workers = default_loader_workers()
        one_epoch(encoder, arch, paths[: args.batch], 0, args.batch, tmp / "warm")  # imports, first touches
        serial = one_epoch(encoder, arch, paths, 0, args.batch, tmp / "w0")
        parallel = one_epoch(encoder, arch, paths, workers, args.batch, tmp / "wn")
    n = args.images + args.batch  # training images plus the validation batch
    print(f"machine: {platform.processor() or platform.machine()}, {available_cores()} cores available, "
          f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model {args.model}, {args.images} JPEGs of {args.size}, batch {args.batch}, one epoch + validation")
    print(f"--loader-workers 0: {serial:.2f} s ({n / serial:.1f} img/s)")
    print(f"--loader-workers {workers} (the GPU default): {parallel:.2f} s ({n / parallel:.1f} img/s)")
    print(f"ratio: {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
