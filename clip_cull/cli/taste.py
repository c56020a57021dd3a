"""`clipcull eval ratings` and `clipcull train ratings`: the photographer's own stars and rejects."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from clip_cull.research import taste
import clip_cull.cli.ui as ui
from clip_cull.culling.journal import Journal
from clip_cull.cli.app import train_app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import model_session as _model_session
from clip_cull.cli.common import open_state as _open_state
from clip_cull.cli.common import open_store as _open_store
from clip_cull.cli.common import plural
from clip_cull.cli.common import quiet_libraries as _quiet_libraries
from clip_cull.cli.options import DarktableDefaultOpt, ModelFlags, shared_options
from clip_cull.cli.scoring import model_spec
from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import heif_available
from clip_cull.model.heads import resolve_head
from clip_cull.model.heads.files import check_backbone, save_head
from clip_cull.model.heads.linear import LinearFit, probe_head
from clip_cull.model.heads.prompt import PROMPT_KINDS
from clip_cull.core.images import rawpy_available
from clip_cull.scoring.indexer import IndexOptions, prompt_embeddings
from clip_cull.scoring.ranking import index_folders

UnratedOpt = Annotated[Optional[int], typer.Option(
    "--unrated-as", min=-1, max=5, metavar="STARS",
    help="Count unrated photos as this rating (-1: reject). \\[default: leave them out]", show_default=False)]


class _Library:
    """Embedded photos of the given folders with the photographer's ratings."""

    def __init__(self, folders, models: ModelFlags, unrated_as, features="projected", darktable_default_counts=False):
        _quiet_libraries()
        self.err = ui.stderr_console()
        self.folders = [str(Path(f).expanduser().resolve()) for f in folders]
        spec = model_spec(models, self.folders)
        self.store = _open_store(models.db, models.state)
        self.session = _model_session(spec, self.store, models.device.value, self.err)
        batch_size, workers = models.batch_size, models.workers
        with ui.progress_bars(self.err) as bar:
            report, _, companions = index_folders(self.store, self.folders, self.session, IndexOptions(batch_size=batch_size, workers=workers, pool=models.pool.value),
                                         heif=heif_available(), raw=rawpy_available(), progress=bar("embedding photos"))
        notes, listings = [], {}
        state = _open_state(models.state, models.db)
        try:
            journal = Journal(state)  # which ratings clipcull wrote itself: never learnt from
            ratings = {p.path: taste.read_rating(p.path, unrated_as, companions.get(p.path, []),
                                                 darktable_default_counts, notes, listings, journal)
                       for p in report.ready}
        finally:
            state.close()
        for line in dict.fromkeys(notes):  # a sidecar that cannot be read, sources that disagree: one line each
            ui.message(self.err, "clipcull: " + ui.shown_path(line), "yellow")
        rated = [p for p in report.ready if ratings[p.path] is not None]
        records = self.store.file_records([p.path for p in rated])
        self.features_kind = features
        vectors = self.store.embeddings([r.fingerprint for r in records.values()], self.session.model_id, features)
        rated = [p for p in rated if records[p.path].fingerprint in vectors]
        self.paths = [p.path for p in rated]
        self.stars = np.array([ratings[p].stars for p in self.paths], int)
        self.captured = [records[p].captured_at for p in self.paths]
        self.features = (np.stack([vectors[records[p].fingerprint] for p in self.paths]).astype(np.float32)
                         if self.paths else np.zeros((0, 0), np.float32))
        counts = {s: int((self.stars == s).sum()) for s in (-1, 1, 2, 3, 4, 5)}
        ui.message(self.err, f"clipcull: {plural(len(report.ready), 'photo')}, {len(self.paths)} rated by you "
                             f"(rejects {counts[-1]}, " + ", ".join(f"{s}* {counts[s]}" for s in range(1, 6)) + ")", "dim")

    def scores(self, head) -> np.ndarray:
        check_backbone(head, self.session.text_model_id, self.session.spec.architecture, self.features.shape[1])
        prompts = head.prompts()
        vectors = prompt_embeddings(self.store, self.session, prompts) if prompts else {}
        return head.score(self.features, vectors)[0]


def eval_ratings(folders: list[str], heads: list[str], models: ModelFlags, unrated_as, json_out: bool,
                 resamples: int, darktable_default_counts: bool = False) -> None:
    lib = _library(folders, models, unrated_as, darktable_default_counts=darktable_default_counts)
    try:
        if len(lib.paths) < 2:
            raise ClipCullError("fewer than two rated photos: nothing to compare with")
        rows = []
        for name in [*PROMPT_KINDS, *heads]:
            head = resolve_head(name)
            if head.features != "projected":
                head_lib = _library(folders, models, unrated_as, head.features, darktable_default_counts)
                scores = head_lib.scores(head)
            else:
                scores = lib.scores(head)
            rows.append({"head": head.name, **taste.taste_figures(scores, lib.stars, resamples).as_dict()})
    except ClipCullError as e:
        _fail(str(e))
    finally:
        lib.store.close()
    _print(rows, json_out)


def _library(*args, **kwargs) -> _Library:
    try:
        return _Library(*args, **kwargs)
    except ClipCullError as e:
        _fail(str(e))


def _print(rows: list[dict], json_out: bool) -> None:
    if json_out:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return

    def cell(fig):
        return "-" if not fig else f"{fig['value']:.3f} [{fig['ci95'][0]:.3f}, {fig['ci95'][1]:.3f}]"

    table = Table(title="agreement with your ratings (95% bootstrap intervals)", show_edge=False)
    for column in ("head", "N", "Spearman", "rejects/1-2 vs 4-5 (N)", "5-star in top 10% (N)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["head"], str(r["n"]), cell(r["spearman"]), f"{cell(r['accuracy'])} ({r['n_binary']})",
                      f"{cell(r['five_star_in_top10'])} ({r['n_five_star']})")
    ui.stdout_console().print(table)


@train_app.command("ratings")
@shared_options
def train_ratings(
    folders: Annotated[list[Path], typer.Argument(
        metavar="FOLDER", show_default=False,
        help="Folders whose photos you have rated (XMP sidecars or embedded XMP).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="The head file to write (.safetensors).")],
    features: Annotated[str, typer.Option(
        "--features", metavar="KIND",
        help="projected or pooled features (512 and 768 numbers for ViT-B-32).")] = "projected",
    unrated_as: UnratedOpt = None,
    darktable_default_counts: DarktableDefaultOpt = False,
    start_from: Annotated[Optional[Path], typer.Option(
        "--start-from", metavar="FILE",
        help="A linear head to start from and adapt (e.g. your AVA probe, on the same --features).")] = None,
    resamples: Annotated[int, typer.Option(
        "--resamples", min=1, metavar="N", help="Bootstrap resamples for the 95% intervals.")] = 1000,
    models: ModelFlags = None,
) -> None:
    """Fit a personal head on your own ratings; prints its cross-validated figures beside the zero-shot ensemble's.

    Ridge on cached features, its strength chosen by cross-validation grouped by shoot (bursts never straddle folds).
    """
    if features not in ("projected", "pooled"):
        raise typer.BadParameter("--features is projected or pooled")
    lib = _library([str(f) for f in folders], models, unrated_as, features, darktable_default_counts)
    try:
        taste.check_enough(lib.stars)
        prior = None
        if start_from is not None:
            prior = resolve_head(str(start_from))
            if not hasattr(prior, "as_raw_linear") or prior.features != features:
                raise ClipCullError(f"--start-from needs a linear head on {features} features, like `clipcull train linear` writes")
            check_backbone(prior, lib.session.text_model_id, lib.session.spec.architecture, lib.features.shape[1])
        groups = taste.shoot_groups(lib.paths, lib.captured)
        fit = taste.fit_taste(lib.features, lib.stars, groups, prior=prior)
        personal = taste.taste_figures(fit.cv_predictions, lib.stars, resamples).as_dict()
        zero_lib = lib if features == "projected" else _library([str(f) for f in folders], models, unrated_as,
                                                                 darktable_default_counts=darktable_default_counts)
        zero_shot = taste.taste_figures(zero_lib.scores(resolve_head("ensemble")), lib.stars, resamples).as_dict()
        head = probe_head(LinearFit(fit.weights, fit.bias, fit.mean, fit.std, fit.alpha), features, lib.session.text_model_id)
        head.threshold = 3.0  # label 'aesthetic' above three stars
        trained_on = {"folders": lib.folders, "photos": len(lib.paths), "date": dt.date.today().isoformat(),
                      "ratings": {str(s): int((lib.stars == s).sum()) for s in (-1, 1, 2, 3, 4, 5)},
                      "unrated_as": unrated_as, "groups": int(len(set(groups.tolist()))), "ridge_alpha": fit.alpha,
                      "started_from": str(start_from) if start_from else None}
        save_head(head, output, trained_on, {"cross_validated": personal, "zero_shot_ensemble": zero_shot})
    except taste.TooFewRatings as e:
        _fail(str(e))
    except ClipCullError as e:
        _fail(str(e))
    finally:
        lib.store.close()
    _print([{"head": "ensemble (zero-shot)", **zero_shot}, {"head": "yours, cross-validated", **personal}], False)
    ui.message(lib.err, f"clipcull: wrote {output}. Use it: clipcull rank FOLDER --head {output}", "dim")
