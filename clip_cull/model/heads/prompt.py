"""The paper's zero-shot prompt heads (section 4.1).

- fixed: two prompts `a {adj} picture`; score cos(I, T+) - cos(I, T-); label of the closer one.
- context: the 2000 prompts `a {adj} picture, of a #{class}`; score = the sum of the cosines
  weighted +1 / -1 (equations 1-2); label of the single closest prompt.
- ensemble: the 1000 context prompts of each adjective averaged into one vector; score
  cos(I, T+) - cos(I, T-); label of the closer one.

Continuous scores come in two variants (scoring=):
- "paper" (the default for ranking): cosines with unit-length prompt vectors, as the paper's
  text (equations 1-2) says; the ensemble averages the raw prompt embeddings (as the authors'
  code does) and normalises the mean.
- "code": what the authors' code computed for Table 1: 100 * I . T with the image unit-length
  and the prompt embeddings as the text tower gives them (not normalised); the ensemble's
  vector is the plain mean of the raw embeddings. Its ensemble score is therefore exactly the
  context score / 1000, which is why Table 1's two rows have the same SRCC and PLCC (0.539 /
  0.554). The two variants rank images almost alike (Spearman about 0.996 between them) but
  not identically. Binary labels are the same in both (the code normalises for those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_cull.model.heads.base import l2_normalize, labels_from
from clip_cull.model.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE, FIXED_TEMPLATE, context_prompts

PROMPT_KINDS = ("fixed", "context", "ensemble")
PROMPT_SCORINGS = ("paper", "code")
CODE_SCALE = 100.0  # CLIP's logit scale as the authors' code wrote it


def adjective_prompts(kind: str, adjective: str) -> list[str]:
    if kind == "fixed":
        return [FIXED_TEMPLATE.format(adjective=adjective)]
    return context_prompts(adjective)


@dataclass(frozen=True)
class PromptHead:
    kind: str = "ensemble"
    positive: str = DEFAULT_POSITIVE
    negative: str = DEFAULT_NEGATIVE
    features: str = "projected"
    backbone: str | None = None
    scoring: str = "paper"  # the continuous score: "paper" (unit prompt vectors) or "code"

    def __post_init__(self):
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt head kind {self.kind!r}")
        if self.scoring not in PROMPT_SCORINGS:
            raise ValueError(f"unknown prompt scoring {self.scoring!r}: paper or code")

    @property
    def name(self) -> str:
        suffix = "" if self.scoring == "paper" else ", code scoring"
        return f"{self.kind}({self.positive}/{self.negative}{suffix})"

    def prompt_groups(self) -> tuple[list[str], list[str]]:
        return adjective_prompts(self.kind, self.positive), adjective_prompts(self.kind, self.negative)

    def prompts(self) -> list[str]:
        positive, negative = self.prompt_groups()
        return positive + negative

    def score(self, features: np.ndarray, prompt_vectors: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        image = l2_normalize(features)
        every_prompt = self.kind == "context"  # the others need only the averaged vectors
        stats = [adjective_statistics(image, [prompt_vectors[p] for p in group], every_prompt=every_prompt)
                 for group in self.prompt_groups()]
        scores, closer = combine(self.kind, stats[0], stats[1], self.scoring)
        return scores, labels_from(closer)


@dataclass
class AdjectiveStats:
    """Per image, what every prompt head needs from one adjective's prompts."""

    cos_sum: np.ndarray  # sum of cosines over the adjective's prompts (context score)
    cos_max: np.ndarray  # cosine of its closest prompt (context label)
    cos_mean_vector: np.ndarray  # cosine with the averaged prompt vector (ensemble)
    dot_raw_sum: np.ndarray | None = None  # I . (sum of the raw prompt vectors): the code's scores
    count: int = 1  # how many prompts the adjective has


def adjective_statistics(
    image_unit: np.ndarray, vectors: list[np.ndarray], chunk: int = 8192, every_prompt: bool = True
) -> AdjectiveStats:
    """image_unit: (N, D) unit rows; vectors: the adjective's raw prompt embeddings. Without
    every_prompt only the cosine with the averaged vector is computed (sum and max stay empty)."""
    raw = np.stack(vectors).astype(np.float32)
    unit = l2_normalize(raw)
    mean = l2_normalize(raw.mean(axis=0))
    sums, maxes = [], []
    for start in range(0, len(image_unit) if every_prompt else 0, chunk):  # bounded memory for 250k AVA images
        cos = image_unit[start : start + chunk] @ unit.T
        sums.append(cos.sum(axis=1))
        maxes.append(cos.max(axis=1))
    empty = np.zeros(0, np.float32)
    return AdjectiveStats(
        np.concatenate(sums) if sums else empty,
        np.concatenate(maxes) if maxes else empty,
        image_unit @ mean,
        image_unit.astype(np.float64) @ raw.astype(np.float64).sum(axis=0),
        len(raw),
    )


def combine(kind: str, pos: AdjectiveStats, neg: AdjectiveStats, scoring: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """(continuous score, positive-is-closer flag) of one head kind from the two adjectives."""
    if kind == "context":
        score, closer = pos.cos_sum - neg.cos_sum, pos.cos_max >= neg.cos_max
    else:  # fixed has one prompt per adjective: its mean vector is that prompt
        score = pos.cos_mean_vector - neg.cos_mean_vector
        closer = score >= 0
    if scoring == "code":
        if kind == "context":  # 100 * sum of I . T over the prompts, weighted +1 / -1
            score = CODE_SCALE * (pos.dot_raw_sum - neg.dot_raw_sum)
        else:  # 100 * I . (mean raw prompt vector); fixed: the one raw prompt vector
            score = CODE_SCALE * (pos.dot_raw_sum / pos.count - neg.dot_raw_sum / neg.count)
    return score, closer
