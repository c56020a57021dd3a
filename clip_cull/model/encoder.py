"""Loading an open_clip model and turning images and prompts into embeddings.

torch and open_clip take seconds to import, so this module imports them only inside the
functions that need a model: importing clip_cull.model.encoder itself is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clip_cull.core.errors import ModelLoadError
from clip_cull.model.preprocess import CentreSquarePreprocess

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
PRECISIONS = ("fp32", "int8", "bf16")
TEXT_BATCH_SIZE = 256
MAX_ASPECT = 2.0  # wider images keep a 2:1 centre, well beyond the square the model sees


def crop_extreme_aspect(image, max_aspect: float):
    w, h = image.size
    if max(w, h) <= max_aspect * min(w, h):
        return image
    if w > h:
        keep = int(round(h * max_aspect))
        left = (w - keep) // 2
        return image.crop((left, 0, left + keep, h))
    keep = int(round(w * max_aspect))
    top = (h - keep) // 2
    return image.crop((0, top, w, top + keep))


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: an open_clip model name (or a JSON config file) and a
    pretrained tag (or a local checkpoint file)."""

    name: str = "ViT-B-32"
    pretrained: str = "openai"
    # How the image tower runs on the CPU: fp32 (exact), int8 (dynamically quantised linear
    # layers) or bf16 (autocast). A GPU always runs fp16 autocast.
    precision: str = "fp32"

    @property
    def config_file(self) -> Path | None:
        return Path(self.name) if self.name.endswith(".json") else None

    @property
    def architecture(self) -> str:
        """The name open_clip knows the architecture by (a config file registers its stem)."""
        return self.config_file.stem if self.config_file else self.name

    @property
    def checkpoint_file(self) -> Path | None:
        """The local weights file, when `pretrained` names one rather than a tag."""
        p = self.pretrained
        if os.sep in p or (os.altsep and os.altsep in p) or p.lower().endswith(CHECKPOINT_SUFFIXES):
            return Path(p).expanduser()
        if Path(p).is_file():
            return Path(p)
        return None


def image_size_hint(spec: ModelSpec) -> int | None:
    """The side of the model's input images, read from its JSON config without importing
    open_clip (seconds), so that photos can be decoded while the model loads. None when the
    config is not a local file (a hub model, say): then decoding waits for the model."""
    path = spec.config_file
    if path is None:
        import importlib.util

        found = importlib.util.find_spec("open_clip")  # locates the package, does not import it
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / "model_configs" / f"{spec.architecture}.json"
    try:
        size = json.loads(path.read_text())["vision_cfg"]["image_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return size if isinstance(size, int) and size > 0 else None


def model_identity(spec: ModelSpec, checkpoint_sha256: str | None = None, with_precision: bool = True) -> str:
    """A stable key for embeddings made by this model: the same weights give the same key.

    Tags are identified by name; a checkpoint file by its content hash (so renaming or moving
    the file keeps the cache); a JSON config by its content too. A reduced precision gets keys
    of its own (`+int8`), since its embeddings differ slightly.
    """
    base = _weights_identity(spec, checkpoint_sha256)
    return f"{base}+{spec.precision}" if with_precision and spec.precision != "fp32" else base


def openai_checkpoint_reason(spec: ModelSpec, checkpoint_sha256: str | None = None) -> str | None:
    """Why a checkpoint file given with a GELU architecture (`--model ViT-B-32`) holds OpenAI's
    weights, which need QuickGELU; None when nothing says so. OpenAI's weights run with GELU
    give embeddings that are close but wrong, and open_clip does not notice. Recognised: a
    path that names OpenAI (the hub's cache folder `...clip_224.openai/`, `openai-*.pt`), or
    the sha256 OpenAI published in its download address (open_clip's `openai` tag URL)."""
    checkpoint = spec.checkpoint_file
    if checkpoint is None or spec.config_file or spec.architecture.endswith("-quickgelu"):
        return None
    if "openai" in str(checkpoint).lower():
        return "its path names OpenAI"
    if checkpoint_sha256 is None and checkpoint.name == f"{spec.architecture}.pt" and checkpoint.is_file():
        from clip_cull.core.files import file_sha256

        checkpoint_sha256 = file_sha256(checkpoint)
    if checkpoint_sha256 and checkpoint_sha256 in _openai_download_hashes(spec.architecture):
        return "its sha256 is that of OpenAI's release"
    return None


# The sha256 sums in OpenAI's download addresses (.../clip/models/<sha256>/NAME.pt), as open_clip's
# `openai` tags list them. Kept here so that recognising a file costs no import of open_clip:
# a warm `rank` must not import torch.
OPENAI_RELEASE_SHA256 = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    "ViT-B-32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B-16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L-14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L-14-336": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
}


def _openai_download_hashes(architecture: str) -> set[str]:
    """The sha256 of OpenAI's release of this architecture (none for other architectures)."""
    sha = OPENAI_RELEASE_SHA256.get(architecture)
    return {sha} if sha else set()


def _weights_identity(spec: ModelSpec, checkpoint_sha256: str | None) -> str:
    arch = spec.name
    if openai_checkpoint_reason(spec, checkpoint_sha256):
        arch = f"{spec.name}-quickgelu"  # the network that really runs: the same key as spelling it so
    if spec.config_file:
        try:
            cfg = json.dumps(json.loads(spec.config_file.read_text()), sort_keys=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read the model config file {spec.config_file}: {e}") from None
        arch = f"{spec.architecture}#cfg-{hashlib.sha256(cfg.encode()).hexdigest()[:12]}"
    if spec.checkpoint_file:
        if checkpoint_sha256 is None:
            raise ValueError("a checkpoint file needs its sha256 for the model identity")
        return f"{arch}@sha256:{checkpoint_sha256}"
    return f"{arch}/{spec.pretrained}"


def resolve_device(requested: str) -> str:
    """auto picks CUDA, then Apple's MPS, then the CPU."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA GPU here.")
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelLoadError("--device mps was asked for, but this torch has no MPS (Apple GPU) support.")
    return requested


OFFLINE_HELP = (
    "The weights for {name} / {tag} could not be fetched: {reason}\n"
    "clipcull downloads pretrained weights once (through open_clip and the Hugging Face hub) and "
    "needs a network connection for that. Without one, download the checkpoint elsewhere, from {source}, "
    "and pass it as a file: --pretrained /path/to/open_clip_pytorch_model.bin (or set CLIPCULL_PRETRAINED). "
    "OpenAI's ViT-B/32 weights used as a file need --model ViT-B-32-quickgelu."
)


def weights_source(tag_cfg: dict) -> str:
    """Where a pretrained tag's weights can be downloaded by hand: its Hugging Face repo."""
    repo = (tag_cfg.get("hf_hub") or "").strip("/")
    if repo:
        return f"https://huggingface.co/{repo} (open_clip_pytorch_model.bin or open_clip_model.safetensors)"
    return tag_cfg.get("url") or "open_clip's model list (open_clip.list_pretrained())"


def _weights_cached(tag_cfg: dict) -> bool:
    """Whether the weights of a pretrained tag are already on this machine (no network needed)."""
    repo = (tag_cfg.get("hf_hub") or "").strip("/")
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, name), str):
                return True
    url = tag_cfg.get("url") or ""
    if url:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip"
        return (cache / os.path.basename(url)).is_file()
    return False


def network_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """One name resolution, given a few seconds: enough to tell "offline" from "slow"."""
    import socket
    import threading

    answer: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(answer and answer[0])


def _fail_fast_offline(spec: ModelSpec, tag_cfg: dict) -> None:
    """Offline with weights not yet downloaded: one clear line now, instead of a minute of
    huggingface_hub retries and warnings."""
    if _weights_cached(tag_cfg):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not network_reachable():
        reason = "HF_HUB_OFFLINE is set" if offline else "no network (huggingface.co cannot be resolved)"
        raise ModelLoadError(OFFLINE_HELP.format(name=spec.architecture, tag=spec.pretrained, reason=reason,
                                                 source=weights_source(tag_cfg)))


def load_encoder(spec: ModelSpec, device: str = "auto", local_rank: int | None = None) -> "ClipEncoder":
    """Build the model, load its weights and return a ready ClipEncoder. local_rank picks the
    GPU when several processes share a machine."""
    try:
        import open_clip
        import torch
    except ImportError as e:  # pragma: no cover - both are hard dependencies
        raise ModelLoadError(f"torch and open_clip_torch are needed to embed photos: {e}") from e

    device = resolve_device(device)
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{local_rank}"
    if spec.config_file:
        if not spec.config_file.is_file():
            raise ModelLoadError(f"model config file not found: {spec.config_file}")
        open_clip.add_model_config(spec.config_file)
    if spec.architecture not in open_clip.list_models():
        raise ModelLoadError(
            f"unknown model '{spec.name}'. Use an open_clip architecture name "
            f"(e.g. ViT-B-32, ViT-L-14; `python -c 'import open_clip; print(open_clip.list_models())'` "
            f"lists them) or a JSON model config file."
        )
    checkpoint = spec.checkpoint_file
    if checkpoint is not None and not checkpoint.is_file():
        raise ModelLoadError(f"--pretrained: checkpoint file not found: {checkpoint}")
    tag_cfg = {} if checkpoint else open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained)
    if checkpoint is None and not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.architecture)) or "none"
        raise ModelLoadError(
            f"'{spec.pretrained}' is neither a pretrained tag of {spec.architecture} (known: {tags}) "
            f"nor an existing checkpoint file."
        )
    if checkpoint is None:
        _fail_fast_offline(spec, tag_cfg)
    # OpenAI's weights were trained with QuickGELU; open_clip only warns on a tag mismatch and
    # says nothing for a file, so a file recognised as OpenAI's gets QuickGELU too.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or openai_checkpoint_reason(spec) is not None
    try:
        loaded = (_load_checkpoint_mapped(open_clip, spec.architecture, checkpoint, device, quick_gelu)
                  if checkpoint else None)
        if loaded is not None:
            model, preprocess = loaded
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.architecture,
                pretrained=str(checkpoint) if checkpoint else spec.pretrained,
                device=device,
                force_quick_gelu=quick_gelu,
                weights_only=True,
            )
    except Exception as e:  # open_clip raises RuntimeError, hub errors, OSError, pickle errors...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if checkpoint is None:
            raise ModelLoadError(OFFLINE_HELP.format(name=spec.architecture, tag=spec.pretrained, reason=reason,
                                                     source=weights_source(tag_cfg))) from e
        raise ModelLoadError(f"could not load checkpoint {checkpoint} into {spec.architecture}: {reason}"
                             + _model_hint(checkpoint, spec.architecture)) from e
    model.eval()
    if spec.precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision '{spec.precision}': choose one of {', '.join(PRECISIONS)}")
    if spec.precision != "fp32" and device != "cpu":
        raise ModelLoadError(f"--precision {spec.precision} is for the CPU; on {device} the model runs in fp16 already.")
    if spec.precision == "int8":
        model.visual = quantize_int8(model.visual)
    tokenizer = open_clip.get_tokenizer(spec.architecture)
    return ClipEncoder(model, preprocess, tokenizer, torch.device(device), bf16=spec.precision == "bf16")


def checkpoint_shape(state: dict) -> dict | None:
    """The ViT dimensions a CLIP state dict was made with, from its tensor shapes."""
    def shape(key):
        t = state.get(key)
        return tuple(t.shape) if t is not None else None

    conv, pos, proj = shape("visual.conv1.weight"), shape("visual.positional_embedding"), shape("visual.proj")
    if not conv or not pos or not proj:
        return None
    layers = {int(k.split(".")[3]) for k in state if k.startswith("visual.transformer.resblocks.")}
    text_layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")}
    grid = round((pos[0] - 1) ** 0.5)
    return {"width": conv[0], "patch_size": conv[2], "image_size": grid * conv[2], "layers": len(layers),
            "embed_dim": proj[1], "text_layers": len(text_layers)}


def models_matching(found: dict) -> list[str]:
    """open_clip ViT architectures whose configuration has these dimensions."""
    import open_clip

    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if vision.get("timm_model_name") or "patch_size" not in vision:
            continue
        size = vision.get("image_size", 224)
        size = size[0] if isinstance(size, (list, tuple)) else size
        if (vision.get("width"), vision.get("patch_size"), size, vision.get("layers"), cfg.get("embed_dim"),
                text.get("layers", found["text_layers"])) == (
                found["width"], found["patch_size"], found["image_size"], found["layers"], found["embed_dim"],
                found["text_layers"]):
            names.append(name)
    return names


def _model_hint(checkpoint: Path, architecture: str) -> str:
    """Which --model a checkpoint that does not fit looks made for (its tensor shapes say)."""
    import torch

    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)  # torch 2.1: mmap wants a str
    except Exception:
        return ""
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        return ""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    found = checkpoint_shape(state)
    if found is None:
        return ". It does not look like an open_clip ViT checkpoint."
    what = (f"a ViT of width {found['width']}, patch {found['patch_size']}, {found['image_size']} px, "
            f"{found['layers']} layers, {found['embed_dim']}-d embeddings")
    names = [n for n in models_matching(found) if n != architecture]
    if not names:
        return f". The checkpoint is {what}; no open_clip model name matches: pass its JSON config with --model."
    plain = sorted(names, key=lambda n: ("quickgelu" in n, len(n)))
    return (f". The checkpoint is {what}, like {', '.join(plain[:4])}: pass --model {plain[0]}"
            + (" (OpenAI's own weights need the -quickgelu variant)" if any("quickgelu" in n for n in names) else "")
            + ".")


def _load_checkpoint_mapped(open_clip, architecture: str, checkpoint: Path, device: str, quick_gelu: bool = False):
    """A plain state-dict checkpoint, memory-mapped instead of read whole into memory first
    (open_clip's way): about 1.5 s less per cold start for ViT-B-32. Returns None, leaving the
    file to open_clip's loader and its conversions and error messages, for anything else: not
    a zip checkpoint, pickled objects, other key names or shapes."""
    import torch

    if checkpoint.suffix.lower() not in (".pt", ".pth", ".bin", ".ckpt"):
        return None
    try:
        with warnings.catch_warnings():  # torch 2.1-2.2 warn about their own TypedStorage inside load
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)  # 2.1: a str
    except Exception:
        return None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    if next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    with _random_init_skipped(torch), _no_random_weights_notice():
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=None, device="cpu",
                                                                     force_quick_gelu=quick_gelu)
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
        return None
    model.load_state_dict(state, strict=True)
    return model.to(device), preprocess


@contextlib.contextmanager
def _random_init_skipped(torch):
    """torch.nn.init's fill functions as no-ops while a model is built whose every parameter
    is then overwritten by a strict load_state_dict (checked by the caller): filling ViT-B-32's
    150 M parameters with random numbers first costs about a second. Buffers that are not in
    the state dict (the text tower's causal mask) do not come from torch.nn.init."""
    init = torch.nn.init
    saved = {name: getattr(init, name) for name in dir(init) if name.endswith("_") and not name.startswith("_")}
    try:
        for name in saved:
            setattr(init, name, _leave_as_is)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


@contextlib.contextmanager
def _no_random_weights_notice():
    """open_clip logs "No pretrained weights loaded ... initialized randomly" (3.0: "... initialized
    partially", on the root logger) when a model is built without weights: here they are loaded
    right after, so the notice would be false. Only those records are dropped, only while the
    model is built."""
    import logging

    def not_the_notice(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "No pretrained weights loaded" not in message and "initialized partially" not in message

    root = logging.getLogger()
    root.addFilter(not_the_notice)
    try:
        yield
    finally:
        root.removeFilter(not_the_notice)


def _leave_as_is(tensor, *args, **kwargs):
    return tensor


def quantize_int8(module):
    """Dynamic int8 quantisation of the linear layers (weights int8, activations quantised
    per batch): several times faster on CPUs with VNNI, slightly different embeddings."""
    import warnings

    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:  # pragma: no cover - removed in some future torch
        raise ModelLoadError(f"--precision int8 needs torch's dynamic quantisation, which this torch lacks: {e}") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces the API's deprecation on every call
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def squares_on_device(squares: np.ndarray, fast: CentreSquarePreprocess | None, device):
    """uint8 squares (B, S, S, 3) from fast.square, moved to the device as bytes and normalised
    there (float32: / 255, - mean, / std, the operations and order of fast.normalise, so the
    same values): the model's input (B, 3, S, S)."""
    import torch

    if fast is None:
        raise ValueError("this model's transform is not a centre square: use encode_images")
    pin = device.type == "cuda"
    batch = torch.from_numpy(np.ascontiguousarray(squares))
    batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
    with torch.inference_mode():
        # 255 as a tensor on the device: CUDA divides by a Python number as a multiplication
        # by its reciprocal, which can differ from numpy's division in the last bit.
        full, mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in (255.0, fast.mean, fast.std))
        pixels = ((batch.to(torch.float32) / full - mean) / std).permute(0, 3, 1, 2)
    return pixels.contiguous()


class ClipEncoder:
    """An open_clip model in eval mode with its preprocessing and tokenizer.

    encode_images returns both the projected embedding (what prompts and LAION heads compare
    with) and, for ViT image towers, the pooled features before the projection (where the
    paper's linear probe and fine-tuning start).
    """

    def __init__(self, model, preprocess, tokenizer, device, bf16: bool = False):
        import torch

        self.model = model
        self.preprocess = preprocess
        self._fast = CentreSquarePreprocess.from_transform(preprocess)
        self.tokenizer = tokenizer
        self.device = device
        self.autocast_fp16 = device.type == "cuda"
        self.autocast_bf16 = bf16 and device.type == "cpu"
        visual = model.visual
        proj = getattr(visual, "proj", None)
        # Take the projection out of the image tower so one forward pass gives both
        # the pooled features and (after one matmul) the projected embedding.
        self._proj = proj if isinstance(proj, torch.nn.Parameter) else None
        if self._proj is not None:
            visual.proj = None

    def pixels(self, image, exact: bool = False) -> np.ndarray:
        """The model's preprocessing of one RGB PIL image, as a float32 array (3, H, W).

        exact=True is the paper's path: open_clip's transform itself on the image as given,
        nothing before it (the caller opened it with preprocess.open_exact). Otherwise the
        usual transform goes through CentreSquarePreprocess (same pixels to float rounding,
        less work); another transform, with a resize-shortest-side mode, gets a panorama
        cropped near to the centre square that survives rather than resizing it whole (a
        70000-pixel-wide strip would take gigabytes on the way).
        """
        if exact:
            return self.preprocess(image).numpy()
        if self._fast is not None:
            return self._fast(image)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        if cfg.get("resize_mode", "shortest") == "shortest":
            image = crop_extreme_aspect(image, MAX_ASPECT)
        return self.preprocess(image).numpy()

    @property
    def image_size(self) -> int:
        size = self.model.visual.preprocess_cfg.get("size", 224) if hasattr(self.model.visual, "preprocess_cfg") else 224
        return max(size) if isinstance(size, (tuple, list)) else int(size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else -1

    def _autocast(self, images: bool = True):
        import contextlib

        import torch

        if self.autocast_fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        if self.autocast_bf16 and images:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def square_preprocess(self) -> CentreSquarePreprocess | None:
        """The model's transform as a centre square and a normalisation (torch-free, for the
        indexing workers); None when the transform is another kind."""
        return self._fast

    def encode_squares(self, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """squares: uint8 (B, S, S, 3) from square_preprocess.square. They travel to the device
        as bytes and are normalised there (float32: / 255, - mean, / std, the operations and order
        of CentreSquarePreprocess.normalise, so the same values); then as encode_images."""
        return self._encode(squares_on_device(squares, self._fast, self.device))

    def encode_images(self, pixels) -> tuple[np.ndarray, np.ndarray | None]:
        """pixels: a float tensor (B, 3, H, W) already preprocessed. Returns float32 arrays
        (projected (B, D), pooled (B, P) or None)."""
        pin = self.device.type == "cuda"
        return self._encode((pixels.pin_memory() if pin else pixels).to(self.device, non_blocking=pin))

    def _encode(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        with torch.inference_mode(), self._autocast():
            if self._proj is None:
                return self.model.encode_image(batch).float().cpu().numpy(), None
            pooled = self.model.visual(batch)
            projected = pooled @ self._proj
        return projected.float().cpu().numpy(), pooled.float().cpu().numpy()

    def encode_texts(
        self, prompts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embed prompts (not normalised), in batches, reporting (done, total)."""
        import torch

        out = []
        if progress:  # the bar shows from the first prompt, not after the first batch of 256
            progress(0, len(prompts))
        for start in range(0, len(prompts), TEXT_BATCH_SIZE):
            tokens = self.tokenizer(list(prompts[start : start + TEXT_BATCH_SIZE])).to(self.device)
            with torch.inference_mode(), self._autocast(images=False):
                out.append(self._encode_tokens(tokens).float().cpu().numpy())
            if progress:
                progress(min(start + TEXT_BATCH_SIZE, len(prompts)), len(prompts))
        dim = self.embed_dim if self.embed_dim > 0 else 0
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def _encode_tokens(self, tokens):
        if not self._can_trim_text():
            return self.model.encode_text(tokens)
        return encode_text_trimmed(self.model, tokens)

    def _can_trim_text(self) -> bool:
        m = self.model
        return (
            type(m).__name__ == "CLIP"
            and getattr(m, "text_pool_type", None) == "argmax"
            and getattr(m, "attn_mask", None) is not None
            and hasattr(m, "token_embedding")
        )


def encode_text_trimmed(model, tokens):
    """CLIP's encode_text, run only up to the longest prompt instead of the full context.

    CLIP's text transformer is causal and reads its embedding at the end-of-text token, so
    padding after the longest prompt cannot change any embedding; cutting it saves about
    three quarters of the work for 20-token prompts in a 77-token context.
    """
    from open_clip.transformer import text_global_pool

    length = max(int((tokens != 0).sum(dim=1).max()), 1)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    # eos_token_id exists from open_clip 3.1, for the "eos" pooling of some newer text towers;
    # CLIP's "argmax" pooling takes none, so it is passed only where it is used (3.0 has neither).
    eos = {"eos_token_id": getattr(model, "text_eos_id", None)} if model.text_pool_type == "eos" else {}
    x = text_global_pool(x, tokens, model.text_pool_type, **eos)
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if hasattr(proj, "weight") else x @ proj
    return x
