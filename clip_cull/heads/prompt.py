"""The paper's prompt-ensemble head (section 4.1.3).

For each adjective the embeddings of its 1000 context prompts are averaged into one vector;
a photo's score is cos(I, T_pos) - cos(I, T_neg) (equations 1-2 with the two ensemble
vectors), and its label is the adjective whose vector is closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_cull.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE, context_prompts

AESTHETIC = "aesthetic"
NOT_AESTHETIC = "not aesthetic"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclass(frozen=True)
class EnsembleHead:
    positive: str = DEFAULT_POSITIVE
    negative: str = DEFAULT_NEGATIVE

    @property
    def name(self) -> str:
        return f"ensemble({self.positive}/{self.negative})"

    def prompt_groups(self) -> tuple[list[str], list[str]]:
        return context_prompts(self.positive), context_prompts(self.negative)

    def prompts(self) -> list[str]:
        positive, negative = self.prompt_groups()
        return positive + negative

    def text_vectors(self, embeddings: dict[str, np.ndarray]) -> np.ndarray:
        """The two ensemble vectors (2, D), unit length. Like the authors' code, the raw prompt
        embeddings are averaged and the mean is then normalised."""
        groups = self.prompt_groups()
        means = [np.mean([embeddings[p] for p in group], axis=0) for group in groups]
        return l2_normalize(np.stack(means))

    def score(self, image_embeddings: np.ndarray, text_vectors: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Scores (N,) and labels for projected image embeddings (N, D)."""
        cos = l2_normalize(image_embeddings) @ text_vectors.T  # (N, 2)
        scores = cos[:, 0] - cos[:, 1]
        labels = [AESTHETIC if s >= 0 else NOT_AESTHETIC for s in scores]
        return scores, labels
