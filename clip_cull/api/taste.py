"""Taste: the photographer's own star ratings and rejects, against heads, and a personal head
fitted on them (`clipcull eval ratings`, `clipcull train ratings`).

    from clip_cull.api import Taste

    with Taste(["~/Pictures/2024"]) as taste:
        for row in taste.evaluate():
            print(row.head, row.figures["spearman"]["value"])

The photos are embedded through the cache (as `rank` embeds them), the ratings read from XMP
sidecars and embedded XMP; ratings clipcull wrote itself (by its journal) are never learnt
from. The algorithms are in clip_cull.research.taste; nothing here prints.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from clip_cull.api.events import Events
from clip_cull.api.library import ProgressFn, open_state
from clip_cull.api.models import ModelAndCache, ModelChoice
from clip_cull.core.errors import InputError
from clip_cull.core.files import PhotoSource, heif_available
from clip_cull.core.images import rawpy_available
from clip_cull.research import taste

STARS = (-1, 1, 2, 3, 4, 5)  # -1: a reject


@dataclass(frozen=True)
class RatingsChoice:
    """Which of the photographer's ratings count."""

    unrated_as: int | None = None  # count unrated photos as this rating (-1: reject); None: leave them out
    darktable_default_counts: bool = False  # count a darktable sidecar's xmp:Rating 1 (darktable's import default)


class NotALinearPrior(InputError):
    """start_from is not a linear head on the features asked for."""

    def __init__(self, features: str):
        super().__init__(f"start_from needs a linear head on {features} features, like `clipcull train linear` writes")
        self.features = features


# --- what comes back ---------------------------------------------------------------------------


@dataclass
class RatedPhotos:
    """The photos you rated, with their features of one kind."""

    photos: int  # photos found in the folders
    paths: list[str]
    stars: np.ndarray  # -1 (a reject) or 1 to 5, in the order of paths
    captured: list[str | None]  # capture times (shoots are told apart by them)
    features: np.ndarray  # (N, D) float32
    kind: str  # projected or pooled

    def counts(self) -> dict[int, int]:
        """How many photos have each rating (-1, 1, ..., 5)."""
        return {s: int((self.stars == s).sum()) for s in STARS}


@dataclass
class TasteRow:
    """How one head agrees with your ratings."""

    head: str
    figures: dict  # n, spearman, accuracy (rejects/1-2 vs 4-5), n_binary, five_star_in_top10, n_five_star

    def as_dict(self) -> dict:
        """The row as `clipcull eval ratings --json` writes it."""
        return {"head": self.head, **self.figures}


@dataclass
class PersonalHead:
    """A head fitted on your ratings and written, with its cross-validated figures."""

    head: object  # model.heads.linear.LinearHead, labelling 'aesthetic' above three stars
    path: Path
    personal: dict  # its cross-validated figures (as TasteRow.figures)
    zero_shot: dict  # the zero-shot ensemble's on the same photos

    def rows(self) -> list[TasteRow]:
        return [TasteRow("ensemble (zero-shot)", self.zero_shot), TasteRow("yours, cross-validated", self.personal)]


# --- the workflows -----------------------------------------------------------------------------


class Taste(ModelAndCache):
    """Folders of photos you rated, embedded with one model. See the module docstring."""

    def __init__(
        self,
        folders: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        ratings: RatingsChoice = RatingsChoice(),
        model: ModelChoice = ModelChoice(),
        cache: str | os.PathLike | None = None,
        state: str | os.PathLike | None = None,
        heif: bool | None = None,
        raw: bool | None = None,
        env: Mapping[str, str] | None = None,
        progress: ProgressFn | None = None,
        events: Events | None = None,
    ):
        """model None: as the folders were last ranked, else env's, else the default. heif/raw
        None: on where pillow-heif / rawpy are installed."""
        super().__init__(model, cache, state, env, progress, events)
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        self.folders = [str(Path(f).expanduser().resolve()) for f in folders]
        self.ratings = ratings
        self.options = model.index_options()
        self.heif = heif_available() if heif is None else heif
        self.raw = rawpy_available() if raw is None else raw

    def model_roots(self) -> list[str]:
        return self.folders  # the model they were last ranked with

    def evaluate(self, heads: Iterable[str] = (), resamples: int = 1000) -> list[TasteRow]:
        """Every prompt head and each of heads against your ratings: Spearman, accuracy at telling
        rejects / 1-2 stars from 4-5 stars, and the share of your 5-star photos in the head's top
        10%, with 95% bootstrap intervals."""
        from clip_cull.model.heads import resolve_head
        from clip_cull.model.heads.prompt import PROMPT_KINDS

        rated = self.rated()
        if len(rated.paths) < 2:
            raise InputError("fewer than two rated photos: nothing to compare with")
        rows = []
        for name in [*PROMPT_KINDS, *heads]:
            head = resolve_head(name)
            scored = rated if head.features == "projected" else self.rated(head.features)
            rows.append(TasteRow(head.name, taste.taste_figures(self.scores(scored, head), rated.stars,
                                                                resamples).as_dict()))
        return rows

    def train(self, output: str | os.PathLike, *, features: str = "projected",
              start_from: str | os.PathLike | None = None, resamples: int = 1000) -> PersonalHead:
        """Fit a personal head on your ratings (ridge on cached features, its strength chosen by
        cross-validation grouped by shoot, so bursts never straddle folds) and write it; figures
        cross-validated, beside the zero-shot ensemble's. start_from: a linear head on the same
        features (an AVA probe) to adapt. Raises research.taste.TooFewRatings (an InputError)."""
        from clip_cull.model.heads import resolve_head
        from clip_cull.model.heads.files import save_head
        from clip_cull.model.heads.linear import LinearFit, probe_head

        if features not in ("projected", "pooled"):
            raise InputError(f"features is projected or pooled, not {features!r}")
        rated = self.rated(features)
        taste.check_enough(rated.stars)
        prior = self._prior(start_from, rated) if start_from is not None else None
        groups = taste.shoot_groups(rated.paths, rated.captured)
        fit = taste.fit_taste(rated.features, rated.stars, groups, prior=prior)
        personal = taste.taste_figures(fit.cv_predictions, rated.stars, resamples).as_dict()
        projected = rated if features == "projected" else self.rated()
        zero_shot = taste.taste_figures(self.scores(projected, resolve_head("ensemble")), rated.stars,
                                        resamples).as_dict()
        head = probe_head(LinearFit(fit.weights, fit.bias, fit.mean, fit.std, fit.alpha), features,
                          self.session.text_model_id)
        head.threshold = 3.0  # label 'aesthetic' above three stars
        trained_on = {"folders": self.folders, "photos": len(rated.paths), "date": dt.date.today().isoformat(),
                      "ratings": {str(s): n for s, n in rated.counts().items()},
                      "unrated_as": self.ratings.unrated_as, "groups": int(len(set(groups.tolist()))),
                      "ridge_alpha": fit.alpha, "started_from": str(start_from) if start_from else None}
        path = save_head(head, output, trained_on, {"cross_validated": personal, "zero_shot_ensemble": zero_shot})
        return PersonalHead(head, path, personal, zero_shot)

    # --- the parts ---

    def rated(self, features: str = "projected") -> RatedPhotos:
        """Embed the folders' photos (what is new or changed), read your ratings and keep the
        rated photos that have features of the kind (events.ratings_read)."""
        from clip_cull.scoring.ranking import index_folders

        source = PhotoSource(tuple(self.folders), self.heif, self.raw)
        report, _, companions = index_folders(self.store, source, self.session, self.options,
                                              progress=self._progress("embedding photos"))
        ratings = self._ratings(report.ready, companions)
        rated = [p for p in report.ready if ratings[p.path] is not None]
        records = self.store.file_records([p.path for p in rated])
        vectors = self.store.embeddings([r.fingerprint for r in records.values()], self.session.model_id, features)
        paths = [p.path for p in rated if records[p.path].fingerprint in vectors]
        found = RatedPhotos(
            len(report.ready), paths, np.array([ratings[p].stars for p in paths], int),
            [records[p].captured_at for p in paths],
            (np.stack([vectors[records[p].fingerprint] for p in paths]).astype(np.float32)
             if paths else np.zeros((0, 0), np.float32)),
            features)
        self.events.ratings_read(found)
        return found

    def scores(self, rated: RatedPhotos, head) -> np.ndarray:
        """head's scores of the rated photos (refused where it was made for another model)."""
        from clip_cull.model.heads.files import check_backbone
        from clip_cull.scoring.indexer import prompt_embeddings

        check_backbone(head, self.session.text_model_id, self.session.spec.architecture, rated.features.shape[1])
        prompts = head.prompts()
        vectors = prompt_embeddings(self.store, self.session, prompts) if prompts else {}
        return head.score(rated.features, vectors)[0]

    def _ratings(self, photos, companions: dict) -> dict:
        """Each photo's rating (None: unrated and not counted); a sidecar that cannot be read, or
        places that disagree, are one events.warning each."""
        from clip_cull.culling.journal import Journal

        notes: list[str] = []
        listings: dict = {}
        choice = self.ratings
        state = open_state(self.state_path, self.cache, self.events)
        try:
            journal = Journal(state)  # which ratings clipcull wrote itself: never learnt from
            ratings = {p.path: taste.read_rating(p.path, choice.unrated_as, companions.get(p.path, []),
                                                 choice.darktable_default_counts, notes, listings, journal)
                       for p in photos}
        finally:
            state.close()
        for line in dict.fromkeys(notes):
            self.events.warning(line)
        return ratings

    def _prior(self, start_from, rated: RatedPhotos):
        """The linear head to start from, on the same features and model."""
        from clip_cull.model.heads import resolve_head
        from clip_cull.model.heads.files import check_backbone

        prior = resolve_head(str(start_from))
        if not hasattr(prior, "as_raw_linear") or prior.features != rated.kind:
            raise NotALinearPrior(rated.kind)
        check_backbone(prior, self.session.text_model_id, self.session.spec.architecture, rated.features.shape[1])
        return prior
