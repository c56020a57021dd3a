#!/usr/bin/env python3
"""A short smoke test of the AVA reproduction on a GPU, offline: every `--device cuda` path runs
once on a small AVA-format folder with a random ViT-B-32 (the real architecture).

    python bench/cuda_smoke.py [--device cuda] [--images 256] [--batch 32] [--gpus 1]

Runs, each as the user would (subprocesses of `python -m clip_cull`), and checks exit codes:
  1. train finetune --device cuda (2 epochs), checks head.json records QuickGELU (the checkpoint's
     path names OpenAI, so it runs with QuickGELU as OpenAI's weights need) and the total batch line;
  2. eval --head MODEL (the fine-tuned model scores through the cache on the GPU);
  3. torchrun --nproc-per-node GPUS train finetune (NCCL; per-process batch = total / GPUS);
  4. train linear (CV ridge) and eval --all (prompt rows with the code's scoring, OLS probe).
Prints the wall time of each. Nothing here needs the network (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_ava(folder: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(count):
        brightness = rng.uniform(20, 235)
        pixels = np.clip(rng.normal(brightness, 30, (300, 400, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i + 1}.jpg", quality=90)
        mean = 2 + 6 * (brightness - 20) / 215
        counts = np.bincount(np.clip(np.round(rng.normal(mean, 1.2, 100)), 1, 10).astype(int) - 1, minlength=10)
        lines.append(" ".join(map(str, [i + 1, i + 1, *counts, 0, 0, 1])))
    (folder / "AVA.txt").write_text("\n".join(lines) + "\n")


def step(name: str, cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    took = time.perf_counter() - start
    status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    print(f"{name}: {status} in {took:.1f} s", flush=True)
    if result.returncode != 0:
        print(result.stderr[-4000:])
        sys.exit(1)
    return result


def main() -> None:
    import open_clip
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gpus", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_ava(tmp / "ava", args.images)
        torch.manual_seed(0)
        checkpoint = tmp / "openai-random" / "ViT-B-32-openai-random.safetensors"
        checkpoint.parent.mkdir()
        from safetensors.torch import save_file

        state = open_clip.create_model("ViT-B-32", pretrained=None).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(checkpoint))
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), CLIPCULL_DB=str(tmp / "cache.db"),
                   CLIPCULL_MODEL="ViT-B-32", CLIPCULL_PRETRAINED=str(checkpoint))
        cli = [sys.executable, "-m", "clip_cull"]
        model = tmp / "ft"
        first = step("1. train finetune", [*cli, "train", "finetune", str(tmp / "ava"), "-o", str(model), "--epochs", "2",
                                           "--train-batch-size", str(args.batch), "--device", args.device], env)
        info = json.loads((model / "head.json").read_text())
        assert info["model_config"]["quick_gelu"] is True, "head.json does not record QuickGELU"
        assert f"total batch {args.batch} (1 process(es) x {args.batch})" in first.stderr, first.stderr[-2000:]
        print("   head.json records quick_gelu = true; " + next(l for l in first.stderr.splitlines() if "total batch" in l))
        evaluation = step("2. eval --head MODEL", [*cli, "eval", str(tmp / "ava"), "--head", str(model), "--split",
                                                   str(model / "split.json"), "--device", args.device, "--json",
                                                   "--resamples", "50"], env)
        print("   " + evaluation.stdout.strip().splitlines()[-1][:200])
        step(f"3. torchrun x{args.gpus} train finetune",
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.gpus),
              "-m", "clip_cull", "train", "finetune", str(tmp / "ava"), "-o", str(tmp / "ft-ddp"), "--epochs", "1",
              "--train-batch-size", str(args.batch * args.gpus), "--device", args.device], env)
        step("4a. train linear", [*cli, "train", "linear", str(tmp / "ava"), "-o", str(tmp / "probe.safetensors"),
                                  "--device", args.device], env)
        table = step("4b. eval --all --ols", [*cli, "eval", str(tmp / "ava"), "--all", "--ols", "--split",
                                              str(tmp / "probe.split.json"), "--device", args.device, "--json",
                                              "--resamples", "50"], env)
        for line in table.stdout.splitlines():
            row = json.loads(line)
            print(f"   {row['method']}: n {row['n']}, acc {row['accuracy']['value']:.3f}")
    print("smoke test passed")


if __name__ == "__main__":
    main()
