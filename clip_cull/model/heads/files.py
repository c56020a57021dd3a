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

from clip_cull.core.errors import ClipCullError
from clip_cull.model.heads.linear import LinearHead
from clip_cull.model.heads.prompt import PromptHead

FORMAT = "clipcull-head"
VERSION = 1
MAX_HEAD_BYTES = 1 << 30  # LAION's largest head is a few MB; a larger file is refused unread
FEATURE_KINDS = ("projected", "pooled")
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
    _check_regular(path)
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


def _check_regular(path: Path) -> None:
    """Only a regular file of a sane size is opened: a FIFO would block the run forever."""
    from clip_cull.core.files import open_regular

    try:
        fd, _ = open_regular(path, MAX_HEAD_BYTES)
    except FileNotFoundError:
        raise HeadError(f"no such head file: {path}") from None
    except OSError as e:
        reason = str(e).replace("(--max-file-size)", "for a head file") if e.strerror is None else e.strerror
        raise HeadError(f"cannot read head file {path}: {reason}") from None
    import os

    os.close(fd)


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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HeadError(f"{path} is not a clipcull head file")
    version = meta.get("version", 0)
    if not _is_number(version):
        raise HeadError(f"{path}: the head format version {version!r} is not a number")
    if version > VERSION:
        raise HeadError(f"{path} was written by a newer clipcull (head format {meta['version']}); upgrade clipcull")
    features = meta.get("features", "projected")
    if features not in FEATURE_KINDS:
        raise HeadError(f"{path}: features must be one of {', '.join(FEATURE_KINDS)}, not {features!r}")
    backbone = meta.get("backbone")
    if backbone is not None and not isinstance(backbone, str):
        raise HeadError(f"{path}: backbone must be text, not {backbone!r}")
    kind = meta.get("kind")
    if kind == "prompt":
        return _prompt_head(meta.get("prompt"), features, backbone, path)
    if kind == "linear":
        count = meta.get("layers")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 64:
            raise HeadError(f"{path}: 'layers' must be a count of 1 to 64, not {count!r}")
        missing = [k for i in range(count) for k in (f"layers.{i}.weight", f"layers.{i}.bias") if k not in tensors]
        if missing:
            raise HeadError(f"{path}: tensors missing: {', '.join(missing[:4])}")
        layers = [(tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]) for i in range(count)]
        threshold = meta.get("threshold", 5.0)
        if not _is_number(threshold) or not np.isfinite(threshold):
            raise HeadError(f"{path}: the threshold must be a finite number, not {threshold!r}")
        l2_input = meta.get("l2_input", False)
        if not isinstance(l2_input, bool):
            raise HeadError(f"{path}: l2_input must be true or false, not {l2_input!r}")
        name = meta.get("name", path.stem)
        mean, std = tensors.get("mean"), tensors.get("std")
        layers = _checked_layers(layers, path)
        mean, std = _checked_statistics(mean, std, layers[0][0].shape[1], path)
        return LinearHead(
            layers,
            mean,
            std,
            l2_input=l2_input,
            features=features,
            backbone=backbone,
            name=name if isinstance(name, str) else path.stem,
            threshold=float(threshold),
            metadata=meta,
        )
    raise HeadError(f"{path}: unknown head kind {kind!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _prompt_head(prompt, features: str, backbone, path: Path) -> PromptHead:
    from clip_cull.model.heads.prompt import PROMPT_KINDS

    if not isinstance(prompt, dict):
        raise HeadError(f"{path}: a prompt head needs a 'prompt' entry (kind, positive, negative)")
    kind, positive, negative = prompt.get("kind"), prompt.get("positive"), prompt.get("negative")
    if kind not in PROMPT_KINDS:
        raise HeadError(f"{path}: prompt kind must be one of {', '.join(PROMPT_KINDS)}, not {kind!r}")
    for label, word in (("positive", positive), ("negative", negative)):
        if not isinstance(word, str) or not word.strip() or len(word) > 200:
            raise HeadError(f"{path}: the {label} adjective must be a word, not {word!r}")
    scoring = prompt.get("scoring", "paper")
    if scoring not in ("paper", "code"):
        raise HeadError(f"{path}: prompt scoring must be paper or code, not {scoring!r}")
    return PromptHead(kind, positive, negative, features, backbone, scoring)


def _checked_layers(layers: list, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weights (out, in) and biases (out,) of real numbers, all finite, chaining, ending in one score."""
    checked = []
    for i, (w, b) in enumerate(layers):
        w, b = np.asarray(w), np.asarray(b)
        for label, array in ((f"layer {i} weight", w), (f"layer {i} bias", b)):
            if array.dtype.kind not in "fiu":
                raise HeadError(f"{path}: {label} holds {array.dtype}, not numbers")
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0] or 0 in w.shape:
            raise HeadError(f"{path}: layer {i} has shapes {w.shape} and {b.shape}; expected (out, in) and (out,)")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise HeadError(f"{path}: layer {i} holds NaN or infinite values; the head is damaged")
        checked.append((w.astype(np.float32), b.astype(np.float32)))
    for i, ((w, _), (w_next, _)) in enumerate(zip(checked, checked[1:])):
        if w.shape[0] != w_next.shape[1]:
            raise HeadError(f"{path}: layer shapes do not chain ({w.shape} then {w_next.shape})")
    if checked[-1][0].shape[0] != 1:
        raise HeadError(f"{path}: the last layer must give one score, not {checked[-1][0].shape[0]}")
    return checked


def _checked_statistics(mean, std, input_dim: int, path: Path):
    """The standardisation: both or neither, one finite value per input, std above zero."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise HeadError(f"{path}: it has a {'mean' if std is None else 'std'} but no {'std' if std is None else 'mean'}")
    mean, std = np.asarray(mean), np.asarray(std)
    for label, array in (("mean", mean), ("std", std)):
        if array.dtype.kind not in "fiu" or array.shape != (input_dim,):
            raise HeadError(f"{path}: {label} must be {input_dim} numbers, not {array.dtype} of shape {array.shape}")
        if not np.isfinite(array).all():
            raise HeadError(f"{path}: {label} holds NaN or infinite values; the head is damaged")
    if not (std > 0).all():
        raise HeadError(f"{path}: std holds zero or negative values; the head is damaged")
    return mean.astype(np.float64), std.astype(np.float64)


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
        missing = [k for i in indices for k in (f"layers.{i}.weight", f"layers.{i}.bias") if k not in state]
        if missing:
            raise HeadError(f"{path}: tensors missing: {', '.join(missing[:4])}")
        layers = [(state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]) for i in indices]
    layers = _checked_layers(layers, path)
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
