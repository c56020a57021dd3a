"""A first run's fixed costs with random-weights ViT-B-32 (no download possible here): loading the
model from a local file, and embedding the ensemble's prompts.

Usage: PYTHONPATH=. python bench/bench_first_run.py [THREADS]
"""

import os
import sys
import tempfile
import time

import open_clip
import torch
from clip_cull.model.encoder import ModelSpec, load_encoder
from clip_cull.model.heads.prompt import PromptHead

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
d = tempfile.mkdtemp()
ckpt = os.path.join(d, "vitb32-random.pt")
m = open_clip.create_model("ViT-B-32", pretrained=None)
torch.save(m.state_dict(), ckpt)
del m
for attempt in range(2):
    t = time.perf_counter(); enc = load_encoder(ModelSpec("ViT-B-32", ckpt), "cpu"); load = time.perf_counter() - t
    print(f"load {attempt}: {load:.1f} s", flush=True)
prompts = list(dict.fromkeys(PromptHead("ensemble").prompts()))
t = time.perf_counter(); enc.encode_texts(prompts); print(f"{len(prompts)} prompts: {time.perf_counter() - t:.1f} s; threads {torch.get_num_threads()}", flush=True)
