"""The heads there are, and what a head file holds (`clipcull heads`)."""

from __future__ import annotations

import os


def head_catalogue() -> list[tuple[str, str]]:
    """(name, what it is) of each built-in head, then of the head files clipcull reads."""
    from clip_cull.model.heads import BUILTIN_HEADS

    return [*BUILTIN_HEADS.items(),
            ("FILE.safetensors", "a head written by `clipcull train` (linear probe or chosen prompt pair)"),
            ("FILE.pth", "a LAION aesthetic predictor (sa_0_4_vit_*_linear.pth, or the improved MLP)")]


def describe_head(path: str | os.PathLike) -> dict:
    """A head file's kind, backbone, features, training and figures (HeadError where it cannot be read)."""
    from clip_cull.model.heads import load_head
    from clip_cull.model.heads.prompt import PromptHead

    head = load_head(path)
    meta = getattr(head, "metadata", {}) or {}
    return {
        "file": str(path),
        "name": head.name,
        "features": head.features,
        "backbone": head.backbone,
        **({"prompt_scoring": head.scoring} if isinstance(head, PromptHead) else {}),
        "trained_on": meta.get("trained_on"),
        "eval": meta.get("eval"),
    }
