"""What the research commands (train, eval, heads, cache merge) share: what their workflows tell,
said on stderr; a workflow run with progress bars; the model options as the API takes them."""

from __future__ import annotations

import clip_cull.cli.ui as ui
from clip_cull.api import ModelChoice
from clip_cull.cli.common import CliEvents, fail, plural, quiet_libraries
from clip_cull.cli.options import ModelFlags
from clip_cull.cli.scoring import stage_bars
from clip_cull.core.errors import ClipCullError


class ResearchEvents(CliEvents):
    """One line on stderr for each thing an AvaExperiment, a Taste or a cache merge tells."""

    def ava_loaded(self, ava, split) -> None:
        missing = sum(p is None for p in ava.paths)
        _say(f"clipcull: AVA: {len(ava.ids)} rated images ({missing} missing from the folder); split "
             f"({split.source}): {len(split.train)} train, {len(split.validation)} validation, "
             f"{len(split.test)} test", "dim")

    def unreadable(self, failure) -> None:
        _say(f"clipcull: skipped {ui.shown_path(failure.path)}: {failure.reason}", "yellow")

    def features_read(self, what: str, features) -> None:
        _say(f"clipcull: {what}: {len(features.ids)} images used, {features.missing} missing, "
             f"{features.unreadable} unreadable", "dim")

    def finetuning(self, batch: int, processes: int, per_process: int, loader_workers: int, device) -> None:
        _say(f"clipcull: total batch {batch} ({processes} process(es) x {per_process}), "
             f"{loader_workers} loader worker(s) per process, on {device}", "dim")

    def epoch_finished(self, report) -> None:
        _say(f"clipcull: epoch {report.epoch}: train EMD {report.train_emd:.4f}, validation EMD "
             f"{report.val_emd:.4f} (best: epoch {report.best_epoch})" + (" - stopping early" if report.stopped else ""),
             "dim")

    def ratings_read(self, rated) -> None:
        counts = rated.counts()
        _say(f"clipcull: {plural(rated.photos, 'photo')}, {len(rated.paths)} rated by you (rejects {counts[-1]}, "
             + ", ".join(f"{s}* {counts[s]}" for s in range(1, 6)) + ")", "dim")

    def warning(self, text: str) -> None:  # a sidecar that cannot be read, sources that disagree
        _say("clipcull: " + ui.shown_path(text), "yellow")


def _say(text: str, style: str) -> None:
    ui.message(ui.stderr_console(), text, style)


def model_choice(models: ModelFlags) -> ModelChoice:
    return ModelChoice(models.model, models.pretrained, models.device.value, models.batch_size, models.workers,
                       models.pool.value)


def run_research(owner, workflow):
    """workflow(), a method of owner (an AvaExperiment or a Taste), with progress bars on stderr;
    its error is one line, exit 1."""
    quiet_libraries()
    with ui.progress_bars(ui.stderr_console()) as bar:
        owner.progress = stage_bars(bar)
        try:
            return workflow()
        except ClipCullError as e:
            fail(str(e))
