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

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from clip_cull.errors import ClipCullError
from clip_cull.heads.base import labels_from

BINS = 10
FORMAT = "clipcull-finetuned"


@dataclass
class FinetuneSettings:
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 128
    lr_head: float = 1e-2
    lr_backbone: float = 1e-4
    momentum: float = 0.5
    workers: int = 0
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


def distribution_mean(p: np.ndarray) -> np.ndarray:
    return np.asarray(p, np.float64) @ np.arange(1, BINS + 1)


def build_model(visual, pooled_dim: int):
    """The image tower (projection removed) followed by Linear(pooled_dim, 10)."""
    import torch

    class AestheticModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual
            self.visual.proj = None
            self.head = torch.nn.Linear(pooled_dim, BINS)

        def forward(self, pixels):
            return torch.softmax(self.head(self.visual(pixels)), dim=-1)

    return AestheticModel()


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

        from clip_cull.preprocess import open_exact

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


# --- saving and loading ---------------------------------------------------------------------------


def save_finetuned(model, encoder, out_dir: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out_dir / "model.safetensors")
    visual = encoder.model.visual
    info = {
        "format": FORMAT,
        "architecture": metadata["architecture"],
        "model_config": metadata["model_config"],
        "preprocess": dict(getattr(visual, "preprocess_cfg", {}) or {}),
        **{k: v for k, v in metadata.items() if k not in ("architecture", "model_config")},
    }
    (out_dir / "head.json").write_text(json.dumps(info, indent=2, default=str))


def is_finetuned_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "head.json").is_file()


def finetuned_identity(path: str | Path) -> str:
    from clip_cull.files import file_sha256

    return f"finetune@sha256:{file_sha256(Path(path) / 'model.safetensors')}"


class FinetunedEncoder:
    """Looks like a ClipEncoder to the indexer: its 'projected embedding' is the predicted
    ten-bin distribution, so the cache keeps it and a warm run does not run the model."""

    def __init__(self, model, preprocess, device):
        from clip_cull.preprocess import CentreSquarePreprocess

        self.model = model
        self.preprocess = preprocess
        self._fast = CentreSquarePreprocess.from_transform(preprocess)
        self.device = device
        self.image_size = 224

    def pixels(self, image, exact: bool = False):
        """As ClipEncoder.pixels: a float32 array (3, H, W)."""
        if self._fast is not None and not exact:
            return self._fast(image)
        return self.preprocess(image).numpy()

    def encode_images(self, pixels):
        import torch

        with torch.inference_mode():
            return self.model(pixels.to(self.device)).float().cpu().numpy(), None


def uses_quick_gelu(module) -> bool:
    """Whether a network was built with QuickGELU (OpenAI's activation) rather than GELU."""
    return any(type(m).__name__ == "QuickGELU" for m in module.modules())


def trained_architecture(architecture: str, model) -> dict:
    """The exact architecture of a loaded open_clip model, for head.json: open_clip's config of
    `architecture` with the activation the model really runs (open_clip's own config for
    ViT-B-32 has no `quick_gelu` key; OpenAI's weights are loaded with force_quick_gelu)."""
    import open_clip

    config = json.loads(json.dumps(open_clip.get_model_config(architecture)))
    config["quick_gelu"] = uses_quick_gelu(model.visual if hasattr(model, "visual") else model)
    return config


def recorded_quick_gelu(info: dict) -> bool:
    """The activation a saved model was trained with. head.json written since clipcull records
    `quick_gelu` in model_config; older ones did not, and are inferred from what they were
    trained from: a pretrained tag that open_clip loads with QuickGELU (`openai`, the
    laion400m ones) or an architecture named *-quickgelu. A checkpoint file without either was
    loaded with GELU then, so GELU it is."""
    import open_clip

    config = info.get("model_config") or {}
    if "quick_gelu" in config:
        return bool(config["quick_gelu"])
    backbone = str(info.get("backbone", ""))
    if "/" in backbone and "@" not in backbone:
        arch, _, tag = backbone.partition("/")
        arch = arch.split("#", 1)[0]
        try:
            if open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False):
                return True
        except Exception:
            pass
    return str(info.get("architecture", "")).endswith("-quickgelu")


def build_recorded_visual(info: dict):
    """The image tower exactly as head.json records it (activation included), randomly
    initialised: the saved weights then overwrite every parameter."""
    from open_clip.model import _build_vision_tower

    config = info["model_config"]
    return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=recorded_quick_gelu(info))


def load_finetuned(path: str | Path, device: str = "cpu") -> FinetunedEncoder:
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from safetensors.torch import load_file

    path = Path(path)
    try:
        info = json.loads((path / "head.json").read_text())
        if info.get("format") != FORMAT:
            raise ClipCullError(f"{path} is not a clipcull fine-tuned model")
        visual = build_recorded_visual(info)
        pooled_dim = int(visual.proj.shape[0])
        model = build_model(visual, pooled_dim)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except ClipCullError:
        raise
    except Exception as e:
        raise ClipCullError(f"cannot load the fine-tuned model in {path}: {e}") from None
    model.eval().to(device)
    cfg = PreprocessCfg(**{k: v for k, v in info.get("preprocess", {}).items() if k in PreprocessCfg.__dataclass_fields__})
    preprocess = image_transform_v2(cfg, is_train=False)
    image_size = cfg.size if isinstance(cfg.size, int) else max(cfg.size)
    encoder = FinetunedEncoder(model, preprocess, torch.device(device))
    encoder.image_size = image_size
    return encoder


@dataclass(frozen=True)
class FinetunedHead:
    """Scores cached ten-bin distributions: the predicted mean rating; label mean > 5."""

    name: str
    backbone: str
    features: str = "projected"
    path: str = ""

    def session(self, store, device: str, local_rank: int | None = None, on_load=None):
        """A model session that runs this fine-tuned model and caches its outputs."""
        from clip_cull.encoder import ModelSpec, resolve_device
        from clip_cull.indexer import ModelSession

        def load():
            resolved = resolve_device(device)
            if resolved == "cuda" and local_rank is not None:
                resolved = f"cuda:{local_rank}"
            return load_finetuned(self.path, resolved)

        spec = ModelSpec(self.name, self.path)
        return ModelSession(spec, store, device, on_load=on_load, loader=load, model_id=self.backbone)

    def prompts(self) -> list[str]:
        return []

    def score(self, features: np.ndarray, prompt_vectors=None):
        means = distribution_mean(features)
        return means, labels_from(means > 5.0)
