"""A model fine-tuned by `clipcull train finetune` (the paper's section 4.3), as a head: the
saved folder's format (`model.safetensors` and `head.json`), loading it, and scoring with it. Its
outputs, a ten-bin rating distribution, are cached like embeddings, keyed by the weights' sha256.
Training lives in research/finetune.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.core.errors import ClipCullError
from clip_cull.model.heads.base import labels_from

BINS = 10
FORMAT = "clipcull-finetuned"


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
    from clip_cull.core.files import file_sha256

    return f"finetune@sha256:{file_sha256(Path(path) / 'model.safetensors')}"


class FinetunedEncoder:
    """Looks like a ClipEncoder to the indexer: its 'projected embedding' is the predicted
    ten-bin distribution, so the cache keeps it and a warm run does not run the model."""

    def __init__(self, model, preprocess, device):
        from clip_cull.model.preprocess import CentreSquarePreprocess

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

    @property
    def square_preprocess(self):
        """As ClipEncoder.square_preprocess: the transform as a centre square, or None."""
        return self._fast

    def encode_squares(self, squares):
        """As ClipEncoder.encode_squares: uint8 squares normalised on the device, then the model."""
        from clip_cull.model.encoder import squares_on_device

        return self.encode_images(squares_on_device(squares, self._fast, self.device))

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
        from clip_cull.model.encoder import ModelSpec, resolve_device
        from clip_cull.model.session import ModelSession

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
