"""The photographer's own taste: star ratings and rejects already in their library, used to
evaluate heads and to train a personal one.

Ratings come from `xmp:Rating` wherever the photographer's rating can be (see
culling/ratings.py): -1 is a reject, 1-5 stars, 0 unrated (left out unless unrated_as). Ratings
clipcull wrote itself (by its journal: the value clipcull last wrote there) are looked past, so it
never learns from itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.core.errors import InputError
from clip_cull.culling.ratings import find_rating
from clip_cull.model.heads.linear import choose_ridge_alpha, fit_linear, fold_assignment
from clip_cull.research.metrics import Figure, accuracy, spearman

MIN_RATINGS = 50


@dataclass
class Rating:
    path: str
    stars: int  # -1 reject, 1-5 (or the unrated_as value)
    source: str  # the sidecar, "XMP embedded in NAME", or "unrated"


def read_rating(photo: str, unrated_as: int | None = None, companions: list[str] = (),
                darktable_default_counts: bool = False, notes: list[str] | None = None,
                listings: dict | None = None, journal=None) -> Rating | None:
    """The photographer's rating of one photo, from wherever it is (culling/ratings.py: the
    photo's sidecars, its RAW companion's, XMP embedded in the photo, then in the RAW). 0 or no
    rating: unrated (None, or unrated_as). A disagreement between sources and a sidecar that cannot
    be read are appended to `notes` as one line each."""
    found = find_rating(photo, list(companions), darktable_default_counts, listings, journal)
    if notes is not None:
        notes += [f"{where}: left out: {why}" for where, why in found.problems]
        if found.disagreement:
            notes.append(found.disagreement)
    if found.rating not in (None, 0):
        return Rating(photo, found.rating, found.source)
    if unrated_as is not None:
        return Rating(photo, unrated_as, "unrated")
    return None


def target(stars: np.ndarray) -> np.ndarray:
    """Stars as a regression target: a reject counts as 0, below one star."""
    return np.where(np.asarray(stars) < 0, 0, np.asarray(stars)).astype(np.float64)


@dataclass
class TasteFigures:
    n: int
    spearman: Figure
    accuracy: Figure | None  # rejects and 1-2 stars against 4-5 stars
    n_binary: int
    five_star_in_top10: Figure | None  # share of 5-star photos among the head's top 10%
    n_five: int

    def as_dict(self) -> dict:
        def fig(f):
            return None if f is None else f.as_dict()

        return {"n": self.n, "spearman": fig(self.spearman), "accuracy": fig(self.accuracy), "n_binary": self.n_binary,
                "five_star_in_top10": fig(self.five_star_in_top10), "n_five_star": self.n_five}


def taste_figures(scores: np.ndarray, stars: np.ndarray, resamples: int = 1000, seed: int = 0) -> TasteFigures:
    """How a head's scores agree with the stars. Accuracy uses the threshold that predicts as
    many 'good' photos as there are 4-5 star ones (a head's scale is its own)."""
    scores, stars = np.asarray(scores, np.float64), np.asarray(stars)
    n = len(scores)

    def boot(fn, *arrays) -> Figure:
        value = fn(*arrays)
        rng = np.random.default_rng(seed)
        size = len(arrays[0])
        values = np.array([fn(*(a[i] for a in arrays)) for i in (rng.integers(0, size, size) for _ in range(resamples))])
        low, high = np.nanpercentile(values, [2.5, 97.5]) if len(values) else (value, value)
        return Figure(float(value), float(low), float(high))

    rho = boot(lambda s, t: spearman(s, target(t)), scores, stars)
    binary = (stars >= 4) | (stars <= 2)
    acc = None
    if binary.sum() >= 2 and len(set((stars[binary] >= 4).tolist())) == 2:
        acc = boot(_separation_accuracy, scores[binary], stars[binary])
    fives = int((stars == 5).sum())
    top = boot(_five_in_top10, scores, stars) if fives else None
    return TasteFigures(n, rho, acc, int(binary.sum()), top, fives)


def _separation_accuracy(scores: np.ndarray, stars: np.ndarray) -> float:
    good = stars >= 4
    k = int(good.sum())
    if k == 0 or k == len(good):
        return float("nan")
    threshold = np.sort(scores)[::-1][k - 1]
    return accuracy(scores >= threshold, good)


def _five_in_top10(scores: np.ndarray, stars: np.ndarray) -> float:
    fives = stars == 5
    if not fives.any():
        return float("nan")
    cut = max(1, int(round(0.1 * len(scores))))
    top = np.argsort(-scores, kind="stable")[:cut]
    return float(fives[top].sum() / fives.sum())


class TooFewRatings(InputError):
    """Too few ratings, or all alike, to fit a personal head on."""


def check_enough(stars: np.ndarray) -> None:
    if len(stars) < MIN_RATINGS:
        raise TooFewRatings(f"only {len(stars)} rated photos; a personal head needs at least {MIN_RATINGS} "
                            f"(rate more, or use --unrated-as N to count unrated photos)")
    if len(set(target(stars).tolist())) < 2:
        raise TooFewRatings("every rated photo has the same rating: there is nothing to learn from")


@dataclass
class TasteFit:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    alpha: float
    cv_predictions: np.ndarray  # out-of-fold predictions, for honest figures


def fit_taste(
    features: np.ndarray, stars: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0, prior=None
) -> TasteFit:
    """Ridge on z-scored features, its strength chosen by cross-validation grouped by shoot
    (a burst never sits on both sides of a fold); out-of-fold predictions at that strength.

    With a prior (e.g. the AVA linear probe, on the same features), start from it and adapt:
    the stars are first fitted as scale x prior + offset, and ridge then learns only what the
    prior misses. The result is still one linear function of the features."""
    y = target(stars)
    x = np.asarray(features, np.float64)
    base = prior.predict(x) if prior is not None else None
    folds = max(2, min(folds, len(np.unique(groups))))
    alpha, _ = choose_ridge_alpha(x, y - _prior_fit(base, y)[2] if base is not None else y, groups=groups,
                                  folds=folds, seed=seed)
    fold_of = fold_assignment(len(y), folds, groups, seed)
    oof = np.zeros(len(y))
    for k in range(folds):
        test = fold_of == k
        if not test.any() or test.all():
            continue
        oof[test] = _fit_predict(x[~test], y[~test], x[test], alpha, None if base is None else (base[~test], base[test]))
    weights, bias = _fit_linear_function(x, y, alpha, base, prior)
    return TasteFit(weights, bias, np.zeros(x.shape[1]), np.ones(x.shape[1]), alpha, oof)


def _prior_fit(base: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """scale, offset and fitted values of y ~ scale x base + offset."""
    design = np.stack([base, np.ones_like(base)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(scale), float(offset), scale * base + offset


def _fit_predict(x_train, y_train, x_test, alpha, bases) -> np.ndarray:
    if bases is None:
        fit = fit_linear(x_train, y_train, alpha)
        return ((x_test - fit.mean) / fit.std) @ fit.weights + fit.bias
    scale, offset, fitted = _prior_fit(bases[0], y_train)
    fit = fit_linear(x_train, y_train - fitted, alpha)
    return scale * bases[1] + offset + ((x_test - fit.mean) / fit.std) @ fit.weights + fit.bias


def _fit_linear_function(x, y, alpha, base, prior) -> tuple[np.ndarray, float]:
    """The fitted predictor as weights on the raw features and a bias."""
    if base is None:
        fit = fit_linear(x, y, alpha)
        return fit.weights / fit.std, fit.bias - float((fit.weights / fit.std) @ fit.mean)
    scale, offset, fitted = _prior_fit(base, y)
    fit = fit_linear(x, y - fitted, alpha)
    prior_w, prior_b = prior.as_raw_linear()
    weights = scale * prior_w + fit.weights / fit.std
    bias = scale * prior_b + offset + fit.bias - float((fit.weights / fit.std) @ fit.mean)
    return weights, bias


def shoot_groups(paths: list[str], captured_at: list[str | None], min_groups: int = 5) -> np.ndarray:
    """Which shoot each photo belongs to, for grouped cross-validation: its folder, split into
    sessions where capture times are more than 10 minutes apart; with too few of those, into
    bursts (more than 5 seconds apart). A burst always stays in one group."""
    for gap in (600.0, 5.0):
        keys = _session_keys(paths, captured_at, gap)
        if len(set(keys)) >= min_groups:
            break
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys])


def _session_keys(paths: list[str], captured_at: list[str | None], gap_s: float) -> list[tuple]:
    import datetime as dt

    def seconds(t):
        try:
            return dt.datetime.fromisoformat(t).timestamp() if t else None
        except ValueError:
            return None

    keys: list[tuple] = [None] * len(paths)
    by_folder: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_folder.setdefault(str(Path(p).parent), []).append(i)
    for folder, members in by_folder.items():
        timed = sorted((seconds(captured_at[i]), i) for i in members if seconds(captured_at[i]) is not None)
        session, last = 0, None
        for t, i in timed:
            if last is not None and t - last > gap_s:
                session += 1
            keys[i], last = (folder, session), t
        for i in members:
            if keys[i] is None:
                keys[i] = (folder, "untimed", i)  # no capture time: a group of its own
    return keys
