"""Head files: safe to load and self-describing.

clipcull writes heads as safetensors (or .npz) with a JSON metadata block: kind, backbone
(the model identity the features came from), feature kind, normalisation, what it was trained
on and its evaluation figures. Foreign LAION `.pth` heads are read with
torch.load(weights_only=True) and nothing else, so no pickled code can ever run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from clip_cull.errors import ClipCullError
from clip_cull.heads.linear import LinearHead
from clip_cull.heads.prompt import PromptHead

FORMAT = "clipcull-head"
VERSION = 1
LAION_ARCHITECTURES = {"vit_b_32": "ViT-B-32", "vit_b_16": "ViT-B-16", "vit_l_14": "ViT-L-14"}


class HeadError(ClipCullError):
    """A head file cannot be used (unreadable, unsafe, or made for another model)."""


def save_head(head, path: str | Path, trained_on: dict | None = None, evaluation: dict | None = None) -> Path:
    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": head.backbone,
        "features": head.features,
        "trained_on": trained_on or {},
        "eval": evaluation or {},
    }
    if isinstance(head, PromptHead):
        meta.update(kind="prompt", prompt={"kind": head.kind, "positive": head.positive, "negative": head.negative,
                                           "scoring": head.scoring})
    elif isinstance(head, LinearHead):
        meta.update(kind="linear", name=head.name, l2_input=head.l2_input, threshold=head.threshold,
                    normalisation="standardise" if head.mean is not None else "none", layers=len(head.layers))
        for i, (w, b) in enumerate(head.layers):
            tensors[f"layers.{i}.weight"] = np.ascontiguousarray(w, np.float32)
            tensors[f"layers.{i}.bias"] = np.ascontiguousarray(b, np.float32)
        if head.mean is not None:
            tensors["mean"] = np.ascontiguousarray(head.mean, np.float64)
            tensors["std"] = np.ascontiguousarray(head.std, np.float64)
    else:
        raise HeadError(f"cannot save a head of type {type(head).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, __metadata__=np.array(json.dumps(meta)), **tensors)
    else:
        from safetensors.numpy import save_file

        save_file(tensors, str(path), metadata={"clipcull": json.dumps(meta)})
    return path


def load_head(path: str | Path):
    """A head from a clipcull head file (.safetensors, .npz) or a LAION .pth."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HeadError(f"no such head file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return _from_clipcull(*_read_safetensors(path), path)
        if suffix == ".npz":
            return _from_clipcull(*_read_npz(path), path)
        if suffix in (".pth", ".pt", ".bin"):
            return _from_laion(_read_torch(path), path)
    except HeadError:
        raise
    except Exception as e:
        raise HeadError(f"cannot read head file {path}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    raise HeadError(f"unknown head file type {path.name}: expected .safetensors, .npz or a LAION .pth")


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta_text = (f.metadata() or {}).get("clipcull")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta_text is None:
        raise HeadError(f"{path} is a safetensors file but not a clipcull head (no clipcull metadata)")
    return json.loads(meta_text), tensors


def _read_npz(path: Path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as data:
        if "__metadata__" not in data:
            raise HeadError(f"{path} is not a clipcull head (no __metadata__)")
        meta = json.loads(str(data["__metadata__"]))
        tensors = {k: data[k] for k in data.files if k != "__metadata__"}
    return meta, tensors


def _from_clipcull(meta: dict, tensors: dict, path: Path):
    if meta.get("format") != FORMAT:
        raise HeadError(f"{path} is not a clipcull head file")
    if meta.get("version", 0) > VERSION:
        raise HeadError(f"{path} was written by a newer clipcull (head format {meta['version']}); upgrade clipcull")
    if meta["kind"] == "prompt":
        p = meta["prompt"]
        return PromptHead(p["kind"], p["positive"], p["negative"], meta.get("features", "projected"), meta.get("backbone"),
                          p.get("scoring", "paper"))
    if meta["kind"] == "linear":
        layers = [(tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]) for i in range(meta["layers"])]
        return LinearHead(
            layers,
            tensors.get("mean"),
            tensors.get("std"),
            l2_input=meta.get("l2_input", False),
            features=meta.get("features", "projected"),
            backbone=meta.get("backbone"),
            name=meta.get("name", path.stem),
            threshold=meta.get("threshold", 5.0),
            metadata=meta,
        )
    raise HeadError(f"{path}: unknown head kind {meta['kind']!r}")


def _read_torch(path: Path) -> dict:
    import pickle

    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise HeadError(
            f"refused {path}: it holds pickled objects beyond plain tensors, which could run code. "
            f"Only state dicts of tensors are loaded ({str(e).splitlines()[0]})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HeadError(f"{path} is not a state dict of tensors")
    return {k: v.detach().float().numpy() for k, v in state.items()}


def _from_laion(state: dict, path: Path) -> LinearHead:
    """LAION's aesthetic predictors, on L2-normalised projected CLIP embeddings."""
    if set(state) == {"weight", "bias"} and state["weight"].ndim == 2 and state["weight"].shape[0] == 1:
        layers = [(state["weight"], state["bias"])]
    else:
        indices = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.weight$", k))})
        if not indices:
            raise HeadError(f"{path} is not a LAION aesthetic head (expected 'weight'/'bias' or 'layers.N.*' tensors)")
        # The improved predictor is Linear layers with dropout between them and no activations.
        layers = [(state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]) for i in indices]
    for (w, _), (w_next, _) in zip(layers, layers[1:]):
        if w.shape[0] != w_next.shape[1]:
            raise HeadError(f"{path}: layer shapes do not chain ({w.shape} then {w_next.shape})")
    if layers[-1][0].shape[0] != 1:
        raise HeadError(f"{path}: the last layer must give one score, not {layers[-1][0].shape[0]}")
    arch = next((a for key, a in LAION_ARCHITECTURES.items() if key in path.name.lower()), None)
    return LinearHead(
        layers,
        l2_input=True,
        features="projected",
        backbone=f"arch:{arch}" if arch else None,
        name=f"laion({path.name})",
        metadata={"kind": "laion", "source": str(path)},
    )


def embedding_space(architecture: str) -> str:
    """The architecture as it names an embedding space: `ViT-B-32-quickgelu` and `ViT-B-32` are
    one network with two spellings of its activation (which weights need which is the
    loader's business), so a head made for one is valid for the other."""
    return architecture[: -len("-quickgelu")] if architecture.endswith("-quickgelu") else architecture


def check_backbone(head, weights_id: str, architecture: str, feature_dim: int | None = None) -> None:
    """Refuse a head made for other features than the ones this run has."""
    backbone = getattr(head, "backbone", None)
    if backbone and backbone.startswith("arch:"):
        if embedding_space(backbone[5:]) != embedding_space(architecture):
            raise HeadError(
                f"{head.name} was made for {backbone[5:]} embeddings, but this run uses {architecture}. "
                f"Pass --model {backbone[5:]}."
            )
    elif backbone and backbone != weights_id:
        raise HeadError(
            f"{head.name} was made for the model {backbone}, but this run uses {weights_id}: its scores would be "
            f"meaningless. Run with the --model and --pretrained the head was trained with."
        )
    input_dim = getattr(head, "input_dim", None)
    if feature_dim is not None and input_dim is not None and input_dim != feature_dim:
        raise HeadError(f"{head.name} takes {input_dim}-d {head.features} features, but this model gives {feature_dim}-d")
