"""Reproducing the paper on AVA: features from the cache, the prompt search, the linear probe,
and evaluation against Table 1."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from clip_cull.research.ava import AvaSet
from clip_cull.core.errors import InputError
from clip_cull.core.files import FileStat
from clip_cull.model.heads.base import AESTHETIC
from clip_cull.model.heads.linear import LinearFit, choose_ridge_alpha, fit_linear
from clip_cull.model.heads.prompt import PROMPT_KINDS, adjective_prompts, adjective_statistics, combine
from clip_cull.scoring.indexer import Failure, IndexOptions, ProgressFn, index_photos
from clip_cull.model.session import ModelSession
from clip_cull.model.preprocess import embedding_key
from clip_cull.research.metrics import Evaluation, accuracy, evaluate, spearman
from clip_cull.store.cache import Store

# Table 1 of the paper: (accuracy, SRCC, PLCC).
PAPER_TABLE = {
    "majority": ("majority baseline", 0.703, None, None),
    "fixed": ("fixed prompt CLIP", 0.725, 0.435, 0.453),
    "context": ("context-aware prompt CLIP", 0.737, 0.539, 0.554),
    "ensemble": ("ensemble prompt CLIP", 0.756, 0.539, 0.554),
    "linear": ("linear probe CLIP", 0.800, 0.683, 0.694),
    "finetune": ("fine-tuned CLIP", 0.816, 0.731, 0.741),
}
# The pairs the paper found best on AVA's training set: (binary task, continuous task).
PAPER_PAIRS = {
    "fixed": (("outstanding", "atrocious"), ("outstanding", "horrible")),
    "context": (("smashing", "horrible"), ("outstanding", "horrible")),
    "ensemble": (("smashing", "horrible"), ("outstanding", "horrible")),
}


@dataclass
class AvaFeatures:
    ids: list[str]
    features: np.ndarray  # (N, D), in the order of ids
    means: np.ndarray  # (N,) AVA mean scores
    missing: int  # images not in the folder
    unreadable: int


def ava_features(
    store: Store,
    session: ModelSession,
    ava: AvaSet,
    ids: list[str],
    kind: str = "projected",
    options: IndexOptions | None = None,
    progress: ProgressFn | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> AvaFeatures:
    """Embed (through the cache, resumable) the images of ids and return their features.
    AVA uses exact preprocessing unless options say otherwise, so figures match the paper's."""
    options = options or IndexOptions(fast_decode=False, quality=False)
    where = ava.index()
    photos, missing = [], 0
    for image_id in ids:
        path = ava.paths[where[image_id]]
        if path is None:
            missing += 1
            continue
        st = os.stat(path)
        photos.append((image_id, FileStat(str(path), st.st_size, st.st_mtime_ns)))
    report = index_photos(store, [p for _, p in photos], session, options, progress=progress, on_failure=on_failure)
    failed = {f.path for f in report.failures}
    records = store.file_records([p.path for _, p in photos if p.path not in failed])
    vectors = store.embeddings([r.fingerprint for r in records.values()], embedding_key(session.model_id, options.preprocessing), kind)
    used, rows = [], []
    for image_id, photo in photos:
        rec = records.get(photo.path)
        if rec is not None and rec.fingerprint in vectors:
            used.append(image_id)
            rows.append(vectors[rec.fingerprint])
    means = ava.means[[where[i] for i in used]] if used else np.zeros(0)
    dim = rows[0].shape[0] if rows else 0
    features = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return AvaFeatures(used, features, means, missing, len(failed))


# --- prompt search ---------------------------------------------------------------------------


@dataclass
class PairResult:
    kind: str
    positive: str
    negative: str
    accuracy: float
    spearman: float


def search_prompts_needed(positives, negatives, kinds=PROMPT_KINDS) -> list[str]:
    kinds_needing = {"fixed"} & set(kinds) | ({"context"} if {"context", "ensemble"} & set(kinds) else set())
    prompts: list[str] = []
    for adjective in [*positives, *negatives]:
        for kind in sorted(kinds_needing):
            prompts += adjective_prompts(kind, adjective)
    return list(dict.fromkeys(prompts))


def search_prompts(
    features: np.ndarray,
    means: np.ndarray,
    prompt_vectors: dict[str, np.ndarray],
    positives: list[str],
    negatives: list[str],
    kinds=PROMPT_KINDS,
    scoring: str = "paper",
) -> list[PairResult]:
    """The paper's search: every positive x negative pair, for each head kind, scored on the
    given (training) images by accuracy of the binary label and Spearman of the score
    (continuous score as `scoring` says: the paper's text or the authors' code)."""
    from clip_cull.model.heads.base import l2_normalize

    unit = l2_normalize(features)
    actual = means > 5.0
    stats: dict[tuple[str, str], object] = {}
    sources = {"fixed" if kind == "fixed" else "context" for kind in kinds}
    for kind in sorted(sources):
        for adjective in dict.fromkeys([*positives, *negatives]):
            if (kind, adjective) not in stats:
                vectors = [prompt_vectors[p] for p in adjective_prompts(kind, adjective)]
                stats[(kind, adjective)] = adjective_statistics(unit, vectors)
    results = []
    for kind in kinds:
        source = "fixed" if kind == "fixed" else "context"
        for pos in positives:
            for neg in negatives:
                score, closer = combine(kind, stats[(source, pos)], stats[(source, neg)], scoring)
                results.append(PairResult(kind, pos, neg, accuracy(closer, actual), spearman(score, means)))
    return results


def best_pair(results: list[PairResult], kind: str, criterion: str) -> PairResult:
    """Highest accuracy or Spearman; ties go to the earlier pair in the adjective lists."""
    candidates = [r for r in results if r.kind == kind]
    return max(candidates, key=lambda r: getattr(r, criterion))


# --- linear probe ----------------------------------------------------------------------------


def fit_probe(features: np.ndarray, means: np.ndarray, ridge: str | float | None = "auto", seed: int = 0) -> LinearFit:
    """The linear probe on z-scored features. ridge "auto" (the default, also None): the
    strength chosen by 5-fold cross-validation, sound at any size (plain least squares on 768
    features and fewer images than that is underdetermined and collapses); on AVA's 230k
    images the chosen strength is least-squares-like. ridge 0: the paper's ordinary least
    squares exactly. A number: that strength."""
    if ridge is None or ridge == "auto":
        alpha, _ = choose_ridge_alpha(features, means, seed=seed)
        return fit_linear(features, means, alpha)
    return fit_linear(features, means, float(ridge))


# Which images the probe and the prompt search are fitted on.
FIT_TRAIN = "train"  # the training split without its validation part (clipcull's default)
FIT_TRAIN_AND_VALIDATION = "train+validation"  # the whole training CSV, as the authors' code fitted
FIT_CHOICES = (FIT_TRAIN, FIT_TRAIN_AND_VALIDATION)


def fitting_ids(split, fit_on: str) -> list[str]:
    """The ids a probe or prompt search is fitted on. Neither needs a validation set (the
    probe's strength is cross-validated within them), so the authors used the whole training
    CSV (230k); clipcull's default leaves the validation part out (207k) so that fine-tuning's
    early stopping and the probe see the same training images."""
    if fit_on == FIT_TRAIN:
        return list(split.train)
    if fit_on == FIT_TRAIN_AND_VALIDATION:
        return list(dict.fromkeys([*split.train, *split.validation]))
    raise ValueError(f"fit_on is one of {', '.join(FIT_CHOICES)}, not {fit_on!r}")


@dataclass(frozen=True)
class ProbeChoice:
    """How a linear probe is fitted (`train linear`, `eval --all`) and how `eval` scores prompt
    heads continuously. Refuses values it does not know (InputError); features only where a
    probe is fitted (check_features), since `eval` without one never reads them."""

    features: str = "pooled"  # pooled (the paper's text) or projected (the authors' code)
    ridge: str | float = "auto"  # auto: chosen by 5-fold cross-validation; 0: plain least squares
    fit_on: str = FIT_TRAIN
    scoring: str = "code"  # code (as the authors' code computed Table 1) or paper (cosines)

    def __post_init__(self):
        if self.ridge != "auto" and not (isinstance(self.ridge, (int, float)) and self.ridge >= 0):
            raise InputError(f"ridge is auto or a number >= 0 (0: least squares), not {self.ridge!r}")
        _check_choice("fit_on", self.fit_on, FIT_CHOICES)
        _check_choice("scoring", self.scoring, SCORINGS)

    def check_features(self) -> None:
        _check_choice("features", self.features, FEATURE_KINDS)


@dataclass(frozen=True)
class PromptChoice:
    """How the prompt search (`train prompts`) picks its pair and which head it writes."""

    kind: str = "ensemble"  # fixed, context or ensemble
    criterion: str = "spearman"  # spearman (the continuous task) or accuracy (the binary one)
    scoring: str = "paper"  # paper (cosines, as the paper's text says) or code (as the authors' code)
    fit_on: str = FIT_TRAIN

    def __post_init__(self):
        _check_choice("kind", self.kind, PROMPT_KINDS)
        _check_choice("criterion", self.criterion, CRITERIA)
        _check_choice("scoring", self.scoring, SCORINGS)
        _check_choice("fit_on", self.fit_on, FIT_CHOICES)


FEATURE_KINDS = ("pooled", "projected")
SCORINGS = ("code", "paper")
CRITERIA = ("spearman", "accuracy")


def _check_choice(name: str, value, known: tuple) -> None:
    if value not in known:
        raise InputError(f"{name} is {', '.join(known[:-1])} or {known[-1]}, not {value!r}")


# --- evaluation ------------------------------------------------------------------------------


def evaluate_head(head, features: np.ndarray, means: np.ndarray, prompt_vectors: dict, resamples: int = 1000) -> Evaluation:
    scores, labels = head.score(features, prompt_vectors)
    return evaluate(np.array([l == AESTHETIC for l in labels]), scores, means, resamples=resamples)


def evaluate_paper_prompts(
    kind: str, features: np.ndarray, means: np.ndarray, prompt_vectors: dict, resamples: int = 1000,
    scoring: str = "code",
) -> Evaluation:
    """As Table 1 reports prompt heads: accuracy with the pair best for the binary task,
    correlations with the pair best for the continuous task. scoring "code" (the default
    here) computes the continuous score as the authors' code that produced Table 1 did;
    "paper" as the paper's text says (see heads.prompt). Labels are the same either way."""
    from clip_cull.model.heads.prompt import PromptHead

    (bp, bn), (cp, cn) = PAPER_PAIRS[kind]
    _, labels = PromptHead(kind, bp, bn).score(features, prompt_vectors)
    scores, _ = PromptHead(kind, cp, cn, scoring=scoring).score(features, prompt_vectors)
    return evaluate(np.array([l == AESTHETIC for l in labels]), scores, means, resamples=resamples)


def paper_prompts() -> list[str]:
    """Every prompt of the paper's pairs (PAPER_PAIRS), each once."""
    from clip_cull.model.heads.prompt import PromptHead

    prompts: list[str] = []
    for kind, pairs in PAPER_PAIRS.items():
        for pos, neg in pairs:
            prompts += PromptHead(kind, pos, neg).prompts()
    return list(dict.fromkeys(prompts))


def majority_baseline(train_means: np.ndarray, test_means: np.ndarray, resamples: int = 1000) -> Evaluation:
    majority = bool(np.mean(train_means > 5.0) >= 0.5)
    return evaluate(np.full(len(test_means), majority), None, test_means, resamples=resamples)
