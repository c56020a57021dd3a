"""The paper's fine-tuned CLIP (section 4.3): the image encoder without its projection, a
Linear(768, 10) and a softmax over AVA's ten rating bins, trained with the EMD loss (r = 2),
SGD (momentum 0.5; lr 1e-2 for the head, 1e-4 for the encoder), batch 128, early stopping on
the validation EMD with patience 10, keeping the best checkpoint.

A fine-tuned model is saved as a folder: `model.safetensors` (the weights), `head.json`
(architecture, preprocessing, what it was trained on, its figures) and, while training,
`last.pt` to resume from. Scoring with it runs the model; its outputs (the ten-bin
distribution) are cached like embeddings, keyed by the weights' sha256.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from clip_cull.core.errors import ClipCullError
from clip_cull.model.heads.finetuned import (build_model, save_finetuned)



@dataclass
class FinetuneSettings:
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 128
    lr_head: float = 1e-2
    lr_backbone: float = 1e-4
    momentum: float = 0.5
    workers: int | None = 0  # DataLoader processes; None: default_loader_workers, for the caller to resolve
    seed: int = 0


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_loader_workers(env: dict | None = None, device_type: str = "cuda") -> int:
    """DataLoader workers by default: on a GPU, the cores available, shared among the processes
    torchrun starts on this machine (LOCAL_WORLD_SIZE), so the GPU does not wait on decoding
    (2.1x faster epochs where the model costs little: BENCHMARKS.md). On the CPU none: there
    the workers take cores from the model itself (0.86x measured with ViT-B-32)."""
    if device_type == "cpu":
        return 0
    env = os.environ if env is None else env
    try:
        local_world = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_world = 1
    return max(1, available_cores() // local_world)


def per_process_batch(total: int, world_size: int) -> int:
    """The paper's batch (128) is the total over all processes: under DistributedDataParallel
    each process takes total / world_size images per step, and the gradients are averaged, so
    one step is the same SGD step as on one GPU. A total that does not divide is refused."""
    if world_size < 1 or total % world_size:
        raise ClipCullError(
            f"the training batch of {total} images does not divide among {world_size} processes: "
            f"pass --train-batch-size a multiple of {world_size} (the paper's is 128)"
        )
    return total // world_size


def emd_loss(predicted, target, r: float = 2.0):
    """Earth mover's distance between distributions over ordered bins, per image
    (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r), averaged over the batch."""
    import torch

    cdf_diff = torch.cumsum(predicted, dim=-1) - torch.cumsum(target, dim=-1)
    return torch.mean(torch.mean(torch.abs(cdf_diff) ** r, dim=-1) ** (1.0 / r))


# --- data ------------------------------------------------------------------------------------


class AvaImages:
    """(pixels, target distribution) pairs, decoded exactly as the authors' code did:
    preprocess(Image.open(path).convert("RGB")) (no EXIF rotation, no aspect handling)."""

    def __init__(self, paths: list[str], targets: np.ndarray, preprocess):
        self.paths = paths
        self.targets = np.asarray(targets, np.float32)
        self.preprocess = preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        from clip_cull.model.preprocess import open_exact

        with open(self.paths[i], "rb") as f:
            image = open_exact(f.read())
        return self.preprocess(image), torch.from_numpy(self.targets[i])


# --- training ----------------------------------------------------------------------------------


@dataclass
class EpochReport:
    epoch: int
    train_emd: float
    val_emd: float
    best_epoch: int
    stopped: bool = False


@dataclass
class TrainState:
    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)


def train_finetune(
    encoder,
    train_data: AvaImages,
    val_data: AvaImages,
    out_dir: Path,
    settings: FinetuneSettings,
    metadata: dict,
    on_epoch: Callable[[EpochReport], None] | None = None,
    fresh: bool = False,
) -> TrainState:
    """Train (or resume) the fine-tuned model; the best epoch's weights end in out_dir.
    Under torchrun (an initialised process group) the model is wrapped in
    DistributedDataParallel and each process trains on its share of every epoch."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    batch = per_process_batch(settings.batch_size, dist.get_world_size() if distributed else 1)
    device = encoder.device
    torch.manual_seed(settings.seed)
    pooled_dim = int(encoder._proj.shape[0]) if encoder._proj is not None else int(encoder.model.visual.output_dim)
    model = build_model(encoder.model.visual, pooled_dim).to(device).float()
    optimizer = torch.optim.SGD(
        [
            {"params": model.head.parameters(), "lr": settings.lr_head},
            {"params": model.visual.parameters(), "lr": settings.lr_backbone},
        ],
        momentum=settings.momentum,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState()
    last = out_dir / "last.pt"
    if last.exists() and not fresh:
        saved = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
    if distributed:  # one GPU per process: name it, as DDP wants for NCCL
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    else:
        net = model
    sampler = DistributedSampler(train_data, shuffle=True, seed=settings.seed) if distributed else None
    pin = device.type == "cuda"
    loader = DataLoader(train_data, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                        num_workers=settings.workers, pin_memory=pin, persistent_workers=settings.workers > 0,
                        generator=torch.Generator().manual_seed(settings.seed + state.epoch))
    val_sampler = DistributedSampler(val_data, shuffle=False) if distributed else None
    val_loader = DataLoader(val_data, batch_size=batch, sampler=val_sampler, num_workers=settings.workers,
                            pin_memory=pin, persistent_workers=settings.workers > 0)

    while state.epoch < settings.max_epochs and state.bad_epochs < settings.patience:
        if sampler is not None:
            sampler.set_epoch(state.epoch)
        net.train()
        train_sum, train_n = 0.0, 0
        for pixels, target in loader:
            pixels, target = pixels.to(device), target.to(device)
            loss = emd_loss(net(pixels), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_sum += float(loss.detach()) * len(pixels)
            train_n += len(pixels)
        val_emd = _mean_emd(net, val_loader, device, distributed)
        train_emd = _reduce_mean(train_sum, train_n, distributed)
        state.epoch += 1
        if val_emd < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_emd, state.epoch, 0
            if rank == 0:
                save_finetuned(model, encoder, out_dir, metadata | {"best_epoch": state.epoch, "val_emd": val_emd})
        else:
            state.bad_epochs += 1
        state.history.append([state.epoch, train_emd, val_emd])
        if rank == 0:
            _atomic_torch_save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": vars(state)}, last
            )
        if distributed:
            dist.barrier()
        if on_epoch:
            stopped = state.bad_epochs >= settings.patience
            on_epoch(EpochReport(state.epoch, train_emd, val_emd, state.best_epoch, stopped))
    return state


def _mean_emd(net, loader, device, distributed) -> float:
    import torch

    net.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for pixels, target in loader:
            total += float(emd_loss(net(pixels.to(device)), target.to(device))) * len(pixels)
            n += len(pixels)
    return _reduce_mean(total, n, distributed)


def _reduce_mean(total: float, n: int, distributed: bool) -> float:
    if distributed:
        import torch
        import torch.distributed as dist

        t = torch.tensor([total, float(n)], dtype=torch.float64)
        dist.all_reduce(t)
        total, n = float(t[0]), int(t[1])
    return total / max(n, 1)


def _atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary file and rename: a crash never leaves half a checkpoint."""
    import torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)
