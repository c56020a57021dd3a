"""Heads turn cached CLIP embeddings into aesthetic scores.

Built-in names: `fixed`, `context`, `ensemble` (the paper's prompt heads, with a choice of
adjectives). Anything else is a head file: a clipcull `.safetensors`/`.npz` (a trained linear
probe or a chosen prompt head) or a LAION aesthetic predictor `.pth`.
"""

from __future__ import annotations

from clip_cull.model.heads.files import HeadError, load_head
from clip_cull.model.heads.prompt import PROMPT_KINDS, PromptHead
from clip_cull.model.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE

BUILTIN_HEADS = {
    "ensemble": "the paper's prompt ensemble: 1000 context prompts per adjective averaged into one vector (default)",
    "context": "the 2000 context prompts 'a {adj} picture, of a #{class}': score summed over all, label of the closest",
    "fixed": "two prompts 'a {adj} picture'",
    "FOLDER/": "a model fine-tuned by `clipcull train finetune` (runs the model; its outputs are cached)",
}


def resolve_head(name_or_path: str, positive: str | None = None, negative: str | None = None):
    """A built-in prompt head by name, a head file, or a fine-tuned model's folder."""
    if name_or_path in PROMPT_KINDS:
        return PromptHead(name_or_path, positive or DEFAULT_POSITIVE, negative or DEFAULT_NEGATIVE)
    from clip_cull.model.heads.finetuned import FinetunedHead, finetuned_identity, is_finetuned_dir

    if is_finetuned_dir(name_or_path):
        if positive or negative:
            raise HeadError("--positive and --negative apply to prompt heads only")
        return FinetunedHead(f"finetune({name_or_path})", finetuned_identity(name_or_path), path=str(name_or_path))
    head = load_head(name_or_path)
    if (positive or negative) and not isinstance(head, PromptHead):
        raise HeadError("--positive and --negative apply to prompt heads only")
    return head


__all__ = ["BUILTIN_HEADS", "HeadError", "PromptHead", "load_head", "resolve_head"]
