"""The paper's metrics: accuracy on mean > 5, Spearman and Pearson, with bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def accuracy(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted, bool) == np.asarray(actual, bool)))


@dataclass
class Figure:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high]}


@dataclass
class Evaluation:
    n: int
    accuracy: Figure
    spearman: Figure | None
    pearson: Figure | None

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy.as_dict(),
            "spearman": self.spearman.as_dict() if self.spearman else None,
            "pearson": self.pearson.as_dict() if self.pearson else None,
        }


def evaluate(
    predicted_positive: np.ndarray,
    scores: np.ndarray | None,
    true_means: np.ndarray,
    threshold: float = 5.0,
    resamples: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Accuracy of predicted labels against mean > threshold, and correlations of continuous
    scores with the true means, each with a 95% percentile-bootstrap interval."""
    predicted_positive = np.asarray(predicted_positive, bool)
    true_means = np.asarray(true_means, np.float64)
    actual = true_means > threshold
    n = len(true_means)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, n, n) for _ in range(resamples)] if n else []

    def figure(fn, *arrays) -> Figure:
        value = fn(*arrays)
        boot = np.array([fn(*(a[idx] for a in arrays)) for idx in samples]) if samples else np.array([value])
        low, high = np.nanpercentile(boot, [2.5, 97.5])
        return Figure(float(value), float(low), float(high))

    acc = figure(accuracy, predicted_positive, actual)
    if scores is None:
        return Evaluation(n, acc, None, None)
    scores = np.asarray(scores, np.float64)
    return Evaluation(n, acc, figure(spearman, scores, true_means), figure(pearson, scores, true_means))
