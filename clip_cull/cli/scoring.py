"""The run every scoring command shares: settings resolved once, photos embedded, ranked."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from clip_cull.scoring import settings as settings_lib
import clip_cull.cli.ui as ui
from clip_cull.api import Library, Ranking
from clip_cull.cli.common import CliEvents, EXIT_INTERRUPTED, EXIT_UNREADABLE, fail, plural, quiet_libraries
from clip_cull.cli.options import CacheFlags, CheckFlags, GroupFlags, ScoringFlags
from clip_cull.core.errors import ClipCullError
from clip_cull.core.faces import require_for_penalties as require_faces_for_penalties
from clip_cull.core.files import HEIF_HINT, heif_available, is_raw
from clip_cull.core.images import RAW_HINT, rawpy_available
from clip_cull.scoring.indexer import Failure
from clip_cull.scoring.ranking import FolderRanking


Scored = Ranking  # a ranking and what it was made with


def setting_flags(scoring: ScoringFlags | None = None, checks: CheckFlags | None = None,
                  grouping: GroupFlags | None = None) -> dict:
    """The settings the user gave on the command line (None where not given)."""
    flags: dict = {}
    if scoring is not None:
        flags.update(model=scoring.model, pretrained=scoring.pretrained, head=scoring.head,
                     positive=scoring.positive, negative=scoring.negative,
                     precision=scoring.precision.value if scoring.precision else None)
    if checks is not None:
        try:
            flags.update(penalize=settings_lib.parse_penalize(checks.penalize) if checks.penalize is not None else None,
                         blur_below=checks.blur_below)
            require_faces_for_penalties(flags["penalize"])
        except ClipCullError as e:
            raise typer.BadParameter(str(e)) from None
    if grouping is not None:
        flags.update(similarity=grouping.similarity, burst_window=grouping.burst_window)
    return flags


def library(roots: list[str] | None, scoring: ScoringFlags, checks: CheckFlags | None = None,
            grouping: GroupFlags | None = None, *, json_errors: bool = False,
            events: type["ScoringEvents"] | None = None) -> Library:
    """The Library the command runs: its options as they were given, the environment the CLI's
    (the only layer that reads it), HEIC and RAW as this installation reads them. events: the
    command's own ScoringEvents, where it says more than the ranking."""
    return Library(
        roots, cache=scoring.db, state=scoring.state, device=scoring.device.value, batch_size=scoring.batch_size,
        workers=scoring.workers, pool=scoring.pool.value, max_pixels=scoring.max_pixels, max_file_bytes=scoring.max_file_size * 2**20,
        exclude=exclude_globs(scoring.exclude), heif=heif_available(), raw=rawpy_available(), env=os.environ,
        events=(events or ScoringEvents)(ui.stderr_console(), json_errors, scoring.show_skipped),
        **{k: v for k, v in setting_flags(scoring, checks, grouping).items() if v is not None})


def cache_library(cache: CacheFlags) -> Library:
    """A Library for the commands that only read or change the journal (undo, history)."""
    return Library(cache=cache.db, state=cache.state, events=CliEvents())


def score(
    roots: list[str] | Library,
    scoring: ScoringFlags,
    checks: CheckFlags | None = None,
    grouping: GroupFlags | None = None,
    *,
    groups: bool = False,
    record: bool = False,
    json_errors: bool = False,
    shard: tuple[int, int] | None = None,
) -> Scored:
    """Index (and, without a shard, rank) the roots with the settings resolved for them, through
    the Library; says on stderr what it scores with. Errors become one line."""
    own = not isinstance(roots, Library)  # a Library given stays open for what the command does next
    lib = library(roots, scoring, checks, grouping, json_errors=json_errors) if own else roots
    done = False
    try:
        scored = run(lib, lambda: lib.rank(groups=groups, record=record, shard=shard))
        done = True
        return scored
    finally:
        if own or not done:
            lib.close()


def run(lib: Library, workflow, *, scoring_only: bool = False):
    """Run one Library workflow, workflow(), with progress bars on stderr. Until its ranking is
    made (lib.events.stage "scoring"), or throughout when it only scores (scoring_only), an error
    is one line and Ctrl-C says every finished batch is saved; after it, errors are the command's
    to tell (its events know the stage)."""
    quiet_libraries()
    err = ui.stderr_console()
    try:
        with ui.progress_bars(err) as bar:
            lib.progress = stage_bars(bar)
            return workflow()
    except ClipCullError as e:
        if lib.events.stage != "scoring" and not scoring_only:
            raise
        fail(str(e))
    except KeyboardInterrupt:
        if lib.events.stage != "scoring" and not scoring_only:
            raise
        ui.message(err, "clipcull: interrupted. Every finished batch is saved; run the command again to go on.", "yellow")
        raise typer.Exit(EXIT_INTERRUPTED)


def stage_bars(bar):
    """The Library's progress as the CLI's progress bars, one per stage."""
    made: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in made:
            made[stage] = bar(stage)
        made[stage](done, total)

    return progress


class ScoringEvents(CliEvents):
    """The CLI's events for a command that ranks: one line per file that could not be read this
    run (files remembered as unreadable from an earlier run are counted and summed up in one line,
    listed with --show-skipped), and the ranking's summary line. stage says where the workflow
    is: "scoring" until the ranking is made, then "planning"; a command that goes on to write
    sets "resuming" or "writing" as its events learn them (the plan, once made, is kept)."""

    def __init__(self, err, json_errors: bool, show_remembered: bool):
        self.err, self.json_errors, self.show_remembered = err, json_errors, show_remembered
        self.remembered: list[Failure] = []
        self.stage = "scoring"
        self.plan = None

    def ranked(self, ranking) -> None:
        shard = ranking.shard
        summary(self.err, ranking.result, ranking.cache_path, self, f"share {shard[0]}/{shard[1]}: " if shard else "")
        self.stage = "planning"

    def tags_planned(self, plan, dry_run: bool) -> None:
        self.plan, self.stage = plan, "writing"

    def moves_resumed(self, finished: list[int], notes: list[str]) -> None:
        self.stage = "scoring"

    def moves_planned(self, plan, dry_run: bool) -> None:
        self.plan, self.stage = plan, "writing"

    def unreadable(self, failure: Failure) -> None:
        if self.json_errors:  # one JSON object a line on stderr, for scripts
            sys.stderr.write(json.dumps({"path": failure.path, "error": failure.reason,
                                         "remembered": failure.remembered}) + "\n")
            return
        if failure.remembered and not self.show_remembered:
            self.remembered.append(failure)
            return
        note = " (unchanged since an earlier run)" if failure.remembered else ""
        ui.message(self.err, f"clipcull: skipped {ui.shown_path(failure.path)}: {failure.reason}{note}", "yellow")

    def summarize(self) -> None:
        if self.remembered:
            n = len(self.remembered)
            ui.message(self.err, f"clipcull: {plural(n, 'file')} unreadable since an earlier run; "
                                 "--show-skipped lists them", "yellow")


def summary(err, result: FolderRanking, db_path: str, failures: ScoringEvents | None = None, prefix: str = "") -> None:
    r = result.report
    total = len(r.ready) + len(r.failures)
    parts = [f"{r.embedded} embedded", f"{r.cached} cached"]
    if r.reused:
        parts.append(f"{r.reused} recognised after a rename or copy")
    if r.failures:
        parts.append(f"{len(r.failures)} unreadable")
    if failures is not None:
        failures.summarize()
    ui.message(err, f"clipcull: {prefix}{plural(total, 'photo')}: {', '.join(parts)}. Cache: {db_path}", "dim")
    for kind, hint, files in (
        ("HEIC/HEIF", HEIF_HINT, [f for f in result.unsupported if not is_raw(f)]),
        ("RAW", RAW_HINT, [f for f in result.unsupported if is_raw(f)]),
    ):
        if files:
            ui.message(err, f"clipcull: skipped {plural(len(files), kind + ' file')} (e.g. {ui.shown_path(files[0])}): {hint}", "yellow")
    if total == 0:
        ui.message(err, "clipcull: no photos found (looked for jpg, png, webp, tiff, bmp, gif, heic and RAW).", "yellow")


def finish(scored: Scored, strict: bool) -> None:
    if strict and scored.result.report.failures:
        raise typer.Exit(EXIT_UNREADABLE)


def exclude_globs(given: list[str] | None, environ=None) -> tuple[str, ...]:
    """--exclude GLOB (repeatable) and CLIPCULL_EXCLUDE (globs separated like PATH)."""
    environ = os.environ if environ is None else environ
    from_env = [g for g in environ.get("CLIPCULL_EXCLUDE", "").split(os.pathsep) if g]
    return tuple(dict.fromkeys([*from_env, *(given or [])]))


def folder_roots(folders: list[Path]) -> list[str]:
    return [str(f) for f in folders]
