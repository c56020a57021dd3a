"""Linear heads on cached features: the paper's linear probe (section 4.2) and the LAION
aesthetic predictors (a linear layer, or the improved predictor's stack of linear layers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip_cull.model.heads.base import l2_normalize, labels_from

THRESHOLD = 5.0  # AVA's binary label: a mean score above 5 is "aesthetic"


@dataclass
class LinearHead:
    """prediction = layers(standardise(x)), each layer x @ W.T + b, no activations.

    The paper's probe is one layer on z-scored features; LAION's heads take L2-normalised
    embeddings (l2_input) and no z-score (mean 0, std 1)."""

    layers: list[tuple[np.ndarray, np.ndarray]]  # (W (out, in), b (out,))
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    l2_input: bool = False
    features: str = "projected"
    backbone: str | None = None
    name: str = "linear"
    threshold: float = THRESHOLD
    metadata: dict = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def prompts(self) -> list[str]:
        return []

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"{self.name} takes {self.input_dim}-d features, got {x.shape[1]}-d")
        if self.l2_input:
            x = l2_normalize(x).astype(np.float64)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        for w, b in self.layers:
            x = x @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        return x[:, 0]

    def as_raw_linear(self) -> tuple[np.ndarray, float]:
        """(weights, bias) on the raw features, for a single-layer head without L2 input."""
        if len(self.layers) != 1 or self.l2_input:
            raise ValueError(f"{self.name} is not one linear function of its features")
        w = np.asarray(self.layers[0][0], np.float64)[0]
        b = float(np.asarray(self.layers[0][1], np.float64)[0])
        if self.mean is None:
            return w, b
        return w / self.std, b - float((w / self.std) @ self.mean)

    def score(self, features: np.ndarray, prompt_vectors=None) -> tuple[np.ndarray, list[str]]:
        predictions = self.predict(features)
        return predictions, labels_from(predictions > self.threshold)


@dataclass
class LinearFit:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    alpha: float  # ridge strength on the standardised features; 0 = ordinary least squares


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def fit_linear(x: np.ndarray, y: np.ndarray, alpha: float = 0.0) -> LinearFit:
    """Least squares (alpha=0, the paper's method) or ridge on z-scored features, with an
    unpenalised bias."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mean, std = standardizer(x)
    z = (x - mean) / std
    if alpha == 0:
        design = np.hstack([z, np.ones((len(z), 1))])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return LinearFit(coef[:-1], float(coef[-1]), mean, std, 0.0)
    y_mean = y.mean()  # z has zero-mean columns, so the bias is the mean of y
    gram = z.T @ z + alpha * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, z.T @ (y - y_mean))
    return LinearFit(weights, float(y_mean), mean, std, alpha)


def choose_ridge_alpha(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, folds: int = 5, seed: int = 0,
    alphas: np.ndarray | None = None,
) -> tuple[float, dict[float, float]]:
    """The ridge strength with the lowest cross-validated squared error. With groups, every
    group stays within one fold (a burst never sits on both sides).

    Each fold is standardised on its training part exactly as fit_linear does; its Gram matrix
    is computed once and solved for every strength (at AVA's 230k x 768 that is 5 products
    instead of 75). The grid scales with N: on 230k images its weakest strength, 2.3 against a
    Gram diagonal of 230k, is least squares for all practical purposes."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    alphas = np.logspace(-2, 5, 15) * len(x) / 1000 if alphas is None else alphas
    fold_of = fold_assignment(len(x), folds, groups, seed)
    sq = {float(a): 0.0 for a in alphas}
    for k in range(folds):
        test = fold_of == k
        if test.all() or not test.any():
            continue
        mean, std = standardizer(x[~test])
        z = (x[~test] - mean) / std
        y_mean = y[~test].mean()
        gram = z.T @ z
        rhs = z.T @ (y[~test] - y_mean)
        z_test = (x[test] - mean) / std
        for alpha in alphas:
            weights = np.linalg.solve(gram + float(alpha) * np.eye(len(gram)), rhs)
            sq[float(alpha)] += float(np.sum((z_test @ weights + y_mean - y[test]) ** 2))
    errors = {a: e / len(x) for a, e in sq.items()}
    best = min(errors, key=errors.get)
    return best, errors


def fold_assignment(n: int, folds: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """Seeded cross-validation folds; with groups, each group falls in one fold whole."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(n) % folds
    unique = np.unique(groups)
    group_fold = dict(zip(unique, rng.permutation(len(unique)) % folds))
    return np.array([group_fold[g] for g in groups])


def probe_head(fit: LinearFit, features: str, backbone: str | None, metadata: dict | None = None) -> LinearHead:
    return LinearHead(
        layers=[(fit.weights[None, :], np.array([fit.bias]))],
        mean=fit.mean,
        std=fit.std,
        features=features,
        backbone=backbone,
        name=f"linear({features})",
        metadata=metadata or {},
    )
