"""What every head shares: labels, normalisation, and the interface ranking relies on."""

from __future__ import annotations

from typing import Protocol

import numpy as np

AESTHETIC = "aesthetic"
NOT_AESTHETIC = "not aesthetic"


class Head(Protocol):
    """Turns a matrix of cached features (N, D) into scores (higher is better) and labels."""

    name: str
    features: str  # which cached features it reads: "projected" or "pooled"
    backbone: str | None  # the model identity it was made for; None: any model

    def prompts(self) -> list[str]:
        """Prompts whose embeddings score() needs (empty for heads without prompts)."""

    def score(self, features: np.ndarray, prompt_vectors: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def labels_from(flags: np.ndarray) -> list[str]:
    return [AESTHETIC if f else NOT_AESTHETIC for f in flags]
