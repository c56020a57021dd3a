"""The paper's fine-tuned CLIP: EMD loss, training that lowers it, resuming, scoring through
the cache, and DistributedDataParallel across two CPU processes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from clip_cull.research.finetune import emd_loss
from clip_cull.model.heads.finetuned import distribution_mean
from helpers import run


def test_emd_of_known_distributions():
    p = torch.zeros(1, 10)
    q = torch.zeros(1, 10)
    p[0, 0] = 1.0
    q[0, 1] = 1.0
    # CDFs differ by 1 in the first bin only: sqrt(1/10)
    assert float(emd_loss(p, q)) == pytest.approx(np.sqrt(0.1))
    uniform = torch.full((1, 10), 0.1)
    point = torch.zeros(1, 10)
    point[0, 9] = 1.0
    cdf_diff = np.cumsum(np.full(10, 0.1)) - np.cumsum(np.eye(10)[9])
    assert float(emd_loss(uniform, point)) == pytest.approx(np.sqrt(np.mean(cdf_diff**2)), rel=1e-6)
    both = emd_loss(torch.cat([p, uniform]), torch.cat([q, point]))
    assert float(both) == pytest.approx((np.sqrt(0.1) + np.sqrt(np.mean(cdf_diff**2))) / 2, rel=1e-6)
    assert distribution_mean(np.eye(10)[[4]])[0] == 5.0


def test_finetuning_lowers_the_emd(tiny_model_files, mini_ava):
    from clip_cull.research.ava import load_ava
    from clip_cull.model.encoder import ModelSpec, load_encoder
    from clip_cull.research.finetune import AvaImages, FinetuneSettings, train_finetune

    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    ava = load_ava(mini_ava)
    rows = [i for i, p in enumerate(ava.paths) if p is not None]
    counts = ava.counts[rows].astype(float)
    data = AvaImages([str(ava.paths[i]) for i in rows], counts / counts.sum(1, keepdims=True), encoder.preprocess)
    import open_clip

    meta = {"architecture": config.stem, "model_config": open_clip.get_model_config(config.stem), "backbone": "tiny"}
    settings = FinetuneSettings(max_epochs=6, patience=10, batch_size=16, lr_head=0.5, lr_backbone=1e-3)
    state = train_finetune(encoder, data, data, mini_ava.parent / "ft", settings, meta)
    first, last = state.history[0][2], min(h[2] for h in state.history)
    assert last < first * 0.9
    assert (mini_ava.parent / "ft" / "model.safetensors").is_file()


def test_finetune_command_resumes_and_its_model_ranks_through_the_cache(tiny_env, mini_ava, photo_folder, tmp_path):
    out = tmp_path / "model"
    common = ["train", "finetune", mini_ava, "-o", out, "--train-batch-size", "8", "--test-ids", mini_ava / "test_ids.txt"]
    first = run(*common, "--epochs", "2")
    assert first.exit_code == 0, first.stderr
    assert "epoch 2:" in first.stderr and {"model.safetensors", "head.json", "last.pt", "split.json"} <= {p.name for p in out.iterdir()}
    again = run(*common, "--epochs", "3")
    assert again.exit_code == 0, again.stderr
    assert "epoch 3:" in again.stderr and "epoch 1:" not in again.stderr  # resumed, not restarted
    info = json.loads((out / "head.json").read_text())
    assert info["architecture"] == "clipcull-test-tiny" and info["settings"]["momentum"] == 0.5

    ranked = run("rank", photo_folder, "--head", out, "--json")
    assert ranked.exit_code == 0, ranked.stderr
    rows = [json.loads(l) for l in ranked.stdout.splitlines()]
    assert len(rows) == 8 and all(1.0 <= r["score"] <= 10.0 for r in rows)
    warm = run("rank", photo_folder, "--head", out, "--json")
    assert "0 embedded, 8 cached" in warm.stderr

    evaluation = run("eval", mini_ava, "--head", out, "--split", out / "split.json", "--json", "--resamples", "20")
    assert evaluation.exit_code == 0, evaluation.stderr
    row = json.loads(evaluation.stdout.splitlines()[-1])
    assert row["paper"]["row"] == "fine-tuned CLIP" and row["n"] == 20


@pytest.mark.slow
def test_finetune_runs_distributed_on_two_cpu_processes(tiny_env, mini_ava, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "clip_cull", "train", "finetune", str(mini_ava), "-o", str(out), "--epochs", "2",
           "--train-batch-size", "8", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 2
    # The paper's batch is the total: 8 images per step across both processes, 4 each.
    assert result.stderr.count("total batch 8 (2 process(es) x 4)") == 1
    assert json.loads((out / "head.json").read_text())["settings"]["batch_size"] == 8
