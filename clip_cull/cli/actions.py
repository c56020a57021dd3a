"""`clipcull tag`, `move`, `undo`, `history` and `report`: turning a ranking into a culled shoot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import clip_cull.cli.ui as ui
from clip_cull.culling import tag as tagging
from clip_cull.culling.fileops import FileOpError
from clip_cull.culling.journal import DONE, JournalBusy
from clip_cull.culling.move import MoveStopped, Selection, check_destination, tally
from clip_cull.cli.app import app
from clip_cull.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, fail, percent, plural
from clip_cull.cli.options import (
    WRITE,
    CacheFlags,
    CheckFlags,
    DarktableDefaultOpt,
    DryRunOpt,
    FoldersArg,
    GroupFlags,
    ScoringFlags,
    flag,
    shared_options,
)
from clip_cull.api import UndoStopped
from clip_cull.api.library import UndoInterrupted
from clip_cull.cli.scoring import ScoringEvents, cache_library, finish, folder_roots, library, run
from clip_cull.core.errors import ClipCullError, Interrupted


@app.command()
@shared_options
def tag(
    folders: FoldersArg,
    scoring: ScoringFlags,
    checks: CheckFlags,
    stars: Annotated[Optional[str], typer.Option(
        "--stars", metavar="STARS:SCORE,...",
        help="Score thresholds, e.g. 5:0.31,4:0.29,3:0.27,2:0.25 (below all: 1 star). \\[default: by rank: "
             "10%, 20%, 40%, 20%, 10% get 5 to 1 stars]")] = None,
    reject_below: Annotated[Optional[float], typer.Option(
        "--reject-below", metavar="SCORE", help="Rate photos below this score -1 (reject).")] = None,
    label: Annotated[Optional[str], typer.Option(
        "--label", metavar="COLOUR", rich_help_panel=WRITE,
        help="Also set this xmp:Label (colour label) on 5-star photos.")] = None,
    sidecar: Annotated[str, typer.Option(
        "--sidecar", metavar="STYLE", rich_help_panel=WRITE,
        help="lightroom (IMG_0001.xmp) or darktable (IMG_0001.JPG.xmp).")] = "lightroom",
    no_keywords: Annotated[bool, flag(
        "--no-keywords", panel=WRITE, help="Add no keyword clipcull:aesthetic / clipcull:not-aesthetic.")] = False,
    keywords: Annotated[bool, typer.Option("--keywords", hidden=True, help="The default: add keywords.")] = True,
    overwrite: Annotated[bool, flag(
        "--overwrite", panel=WRITE, help="Replace ratings the photographer set (kept by default).")] = False,
    embed: Annotated[bool, flag(
        "--embed", panel=WRITE, help="Also write the rating into the photo's own XMP (JPEG, TIFF, DNG), pixels "
                                     "checked identical; undo restores the exact bytes.")] = False,
    reject_blurry: Annotated[bool, flag("--reject-blurry", help="Rate photos flagged blurry -1 (reject).")] = False,
    darktable_default_counts: DarktableDefaultOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Write star ratings into XMP sidecars, by score. Undo with `clipcull undo`.

    Only xmp:Rating, clipcull's own keywords and (with --label) xmp:Label change; the photos themselves only with --embed. Scores the folder the way it was last ranked.
    """
    if sidecar not in ("lightroom", "darktable"):
        raise typer.BadParameter("--sidecar is lightroom or darktable")
    keywords = keywords and not no_keywords
    try:
        thresholds = tagging.parse_star_thresholds(stars) if stars else None
    except ValueError as e:
        raise typer.BadParameter(f"--stars: {e}") from None
    lib = library(folder_roots(folders), scoring, checks, events=_TagEvents)
    try:
        result = _tagging(lib, lambda: lib.tag(
            dry_run=dry_run, stars=thresholds, reject_below=reject_below, label=label, sidecar=sidecar,
            keywords=keywords, overwrite=overwrite, embed=embed, reject_blurry=reject_blurry,
            darktable_default_counts=darktable_default_counts))
    finally:
        lib.close()
    _tagged(result, scoring.strict)


class _TagEvents(ScoringEvents):
    def tags_planned(self, plan, dry_run: bool) -> None:
        """Said before anything is written: disagreements, problems, what stays, and (dry run) what would change."""
        super().tags_planned(plan, dry_run)
        out, err = ui.stdout_console(), ui.stderr_console()
        for line in plan.disagreements:
            ui.message(err, f"clipcull: {ui.shown_path(line)}", "yellow")
        for c in plan.changes:
            if c.problem:  # one line on stderr naming the sidecar and why; the run goes on
                ui.message(err, "clipcull: " + ui.shown_path(f"{c.sidecar}: {c.note}"), "yellow")
            elif not c.writes or dry_run:
                _say_tag(out, c, dry_run)


def _tagging(lib, workflow):
    """lib.tag(...), each way it can stop told in one line by where it was (lib.events.stage)."""
    stage = lambda: lib.events.stage  # noqa: E731
    try:
        return run(lib, workflow)
    except Interrupted as e:  # Ctrl-C between writes: what was written is journaled
        _say_tags_written(ui.stdout_console(), lib.events.plan.changes)
        _interrupted(f"tag run {e.run_id}: {_of(e.done, e.done + e.left, 'file') if e.done else 'nothing'} written"
                     f"{', the others not' if e.left else ''}",
                     f"`clipcull undo {e.run_id}` reverses it; `clipcull tag` again writes the rest.")
    except KeyboardInterrupt:
        _interrupted("nothing was journaled or written." if stage() == "writing"
                     else "nothing was journaled or changed.")
    except OSError as e:
        if stage() != "writing":
            raise
        fail(f"writing ratings stopped: {e}. What was written is journaled: `clipcull undo` reverses it.")
    except ClipCullError as e:
        if stage() != "writing":
            fail(str(e))
        fail(f"writing ratings stopped: {e} What was written is journaled: `clipcull undo` reverses it.")


def _tagged(result, strict: bool) -> None:
    """What a tag run wrote, and how to undo it."""
    out, err = ui.stdout_console(), ui.stderr_console()
    changes, writes = result.changes, result.plan.writes
    if result.dry_run:
        ui.message(err, f"clipcull: dry run: {plural(writes, 'file')} would be written; nothing changed.", "dim")
        return
    run_id, skipped = result.run_id, result.skipped  # skipped: files another program wrote between plan and write
    if run_id is None:
        ui.message(err, "clipcull: nothing to change; no run journaled.", "dim")
        return
    _say_tags_written(out, changes)
    for note in skipped:
        ui.message(err, "clipcull: " + ui.shown_path(note), "yellow")
    written = result.written
    if not skipped:
        ui.message(err, f"clipcull: tag run {run_id}: {plural(written, 'file')} written. Undo: clipcull undo {run_id}",
                   "dim")
        finish(result.plan.ranking, strict)
        return
    ui.message(err, f"clipcull: tag run {run_id}: {_of(written, writes, 'file')} written; {len(skipped)} could not "
                    f"be (see above)." + (f" Undo: clipcull undo {run_id}" if written else ""), "yellow")
    raise typer.Exit(EXIT_ERROR)  # not everything asked for was done


def _say_tag(out, c, dry_run: bool = False) -> None:
    what = f"{c.note}: rating {c.rating}" if c.writes else c.note
    out.print(ui.escape(f"{'would ' if dry_run and c.writes else ''}{what}  {ui.shown_path(str(c.sidecar))}"),
              highlight=False, soft_wrap=True)


def _say_tags_written(out, changes) -> None:
    """One stdout line per file written: said once it is written and journaled, never before."""
    for c in changes:
        if c.written:
            _say_tag(out, c)


@app.command()
@shared_options
def move(
    folders: FoldersArg,
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    to: Annotated[Optional[Path], typer.Option("--to", metavar="FOLDER", help="Destination folder. \\[default: FOLDER/_rejects, with the paths below FOLDER]")] = None,
    worst: Annotated[Optional[str], typer.Option("--worst", metavar="SHARE", help="Move the worst share, e.g. 30%.")] = None,
    below: Annotated[Optional[float], typer.Option("--below", metavar="SCORE", help="Move photos scoring below this.")] = None,
    keep_top: Annotated[Optional[int], typer.Option("--keep-top", min=0, metavar="N", help="Keep the best N, move the rest.")] = None,
    label: Annotated[Optional[str], typer.Option("--label", metavar="LABEL", help="Move photos with this label, e.g. not-aesthetic.")] = None,
    per_group: Annotated[bool, flag("--per-group", help="In each burst group keep the best photo, move the others.")] = False,
    blurry: Annotated[bool, flag("--blurry", help="Move photos flagged blurry.")] = False,
    badly_exposed: Annotated[bool, flag("--badly-exposed", help="Move photos flagged over- or under-exposed.")] = False,
    eyes_closed: Annotated[bool, flag("--eyes-closed", help="Move photos with closed eyes (faces extra).")] = False,
    face_soft: Annotated[bool, flag("--face-soft", help="Move photos whose face is soft (faces extra).")] = False,
    copy: Annotated[bool, flag("--copy", help="Copy instead of moving.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Move rejects aside (never deleted), with their XMP sidecars. `clipcull undo` puts them back.

    Nothing is overwritten (a name taken gets -1, -2, ...); the plan is journaled first, so a re-run after a crash finishes it. Scores the folder the way it was last ranked.
    """
    fraction = percent(worst) if worst else None
    if fraction is None and below is None and keep_top is None and label is None and not (
            per_group or blurry or badly_exposed or eyes_closed or face_soft):
        raise typer.BadParameter("choose what moves: --worst, --below, --keep-top, --label, --per-group, --blurry, "
                                 "--badly-exposed, --eyes-closed or --face-soft")
    try:
        Selection(eyes_closed=eyes_closed, face_soft=face_soft).check_extras()
        check_destination(str(to) if to else None, folder_roots(folders))
    except ClipCullError as e:
        raise typer.BadParameter(str(e)) from None  # exit code 2, before anything is journaled
    lib = library(folder_roots(folders), scoring, checks, grouping, events=_MoveEvents)
    verb = "copy" if copy else "move"
    try:
        result = _moving(lib, lambda: lib.move(
            dry_run=dry_run, to=to, worst=fraction, below=below, keep_top=keep_top, label=label, per_group=per_group,
            blurry=blurry, badly_exposed=badly_exposed, eyes_closed=eyes_closed, face_soft=face_soft, copy=copy),
            verb, resumes=not dry_run)
    finally:
        lib.close()
    _moved_files(result, verb, scoring.strict)


class _MoveEvents(ScoringEvents):
    def moves_resumed(self, finished: list[int], notes: list[str]) -> None:
        super().moves_resumed(finished, notes)
        err = ui.stderr_console()
        for note in notes:
            ui.message(err, f"clipcull: {note}", "yellow")
        for resumed in finished:
            ui.message(err, f"clipcull: finished move run {resumed}, which had been interrupted.", "yellow")

    def moves_planned(self, plan, dry_run: bool) -> None:
        """Said before anything is journaled: the plan's notes, and (dry run) every file it would move."""
        super().moves_planned(plan, dry_run)
        for note in plan.notes:
            ui.message(ui.stderr_console(), f"clipcull: {note}", "yellow")
        if dry_run:
            _say_moves(plan.steps, "copy" if plan.copy else "move", dry_run=True)


def _moved_files(result, verb: str, strict: bool) -> None:
    """What a move run moved, what stayed, and how to undo it."""
    err = ui.stderr_console()
    if result.plan is None:  # an interrupted run was finished, and that is all this run did
        ui.message(err, f"clipcull: nothing else was {'copied' if verb == 'copy' else 'moved'}; run the command again "
                        "to choose from the photos left.", "yellow")
        return
    steps, photos = result.plan.steps, result.plan.photos
    past = "copied" if verb == "copy" else "moved"
    if result.dry_run:
        planned = len({s.src for s in steps} & photos)
        ui.message(err, f"clipcull: dry run: {plural(planned, 'photo')} ({plural(len(steps), 'file')}) would "
                        f"{verb}; nothing changed.", "dim")
        return
    run_id = result.run_id
    _say_moves(steps, verb)
    for note in result.notes:
        ui.message(err, f"clipcull: {note}", "yellow")
    done = result.done
    if not (done.photos_stayed or done.files_stayed):
        if run_id is None:
            ui.message(err, f"clipcull: nothing to {verb}; nothing journaled.", "dim")
            return
        ui.message(err, f"clipcull: move run {run_id}: {plural(done.photos, 'photo')} ({plural(done.files, 'file')}) "
                        f"{past}. Undo: clipcull undo {run_id}", "dim")
        finish(result.plan.ranking, strict)
        return
    ui.message(err, "clipcull: " + _partly_moved(run_id, past, done), "yellow")
    raise typer.Exit(EXIT_ERROR)  # not everything asked for was done


def _partly_moved(run_id: int | None, past: str, done) -> str:
    """The summary of a move that left some of the chosen photos (or of their files) where they were."""
    left, word = (done.photos_stayed, "photo") if done.photos_stayed else (done.files_stayed, "file")
    stayed = f"{plural(left, word)} stayed where {'it was' if left == 1 else 'they were'} (see above)"
    if run_id is None:
        return f"nothing {past}: {stayed}; nothing journaled."
    if not done.files:
        return f"move run {run_id}: nothing {past}; {stayed}."
    return (f"move run {run_id}: {_of(done.photos, done.photos + done.photos_stayed, 'photo')} "
            f"({_of(done.files, done.files + done.files_stayed, 'file')}) {past}; {stayed}. "
            f"Undo: clipcull undo {run_id}")


def _say_moves(steps, verb: str, dry_run: bool = False) -> None:
    """One stdout line per file moved, once it is moved and journaled (every planned one when
    dry_run)."""
    out = ui.stdout_console()
    for s in steps:
        if dry_run or s.state == DONE:
            out.print(ui.escape(f"{'would ' if dry_run else ''}{verb} {ui.shown_path(s.src)} -> {ui.shown_path(s.dst)}"),
                      highlight=False, soft_wrap=True)


def _moving(lib, workflow, verb: str, resumes: bool):
    """Run lib.move(...), workflow(); each way it can stop is one line saying what was done and
    what the journal holds, by where it was (lib.events.stage): finishing an interrupted run,
    scoring, planning, or moving the plan's files. The state database opens first: a damaged one
    stops it before anything."""
    try:
        lib.state, lib.store  # noqa: B018 (opened here: their own errors are theirs, not the move's)
    except ClipCullError as e:
        fail(str(e))
    events = lib.events
    events.stage = "resuming" if resumes else "scoring"
    try:
        return run(lib, workflow)
    except (KeyboardInterrupt, MoveStopped, OSError, FileOpError, ClipCullError) as e:
        if events.stage == "scoring":
            raise  # not one run() tells: a fault nobody foresaw keeps its traceback
        if events.stage == "planning":
            if isinstance(e, KeyboardInterrupt):
                _interrupted("nothing was journaled or changed.")
            fail(str(e))
        if events.stage == "resuming":
            _move_stopped(e, "finishing an interrupted move")
        plan = events.plan
        _move_stopped(e, f"the {verb}", plan.steps, plan.photos, verb)
        raise


def _move_stopped(error: BaseException, what: str, steps: list | None = None, photos: set[str] | None = None,
                  verb: str = "move") -> None:
    """A journaled move that stopped: one line saying what was done and what the journal holds.
    steps (the plan, as the run leaves it) and photos (the chosen ones) say what moved; a run
    finished from the journal is counted in files."""
    past, undoing = ("copied", "removes the copies") if verb == "copy" else ("moved", "puts them back")
    e = error
    if isinstance(e, JournalBusy):
        fail(f"{what} did not start: {e}. Nothing was journaled or {past}.")
    elif isinstance(e, MoveStopped):
        _say_moves(steps or [], verb)
        moved = f"Nothing was {past}" if not e.done else f"{_moved(steps, photos, e.done)} had been {past}"
        fail(f"{what} stopped: {e.reason}. {moved}; run {e.run_id} is journaled as failed (not resumed)"
             + (f": `clipcull undo {e.run_id}` {undoing}." if e.done else "."))
    elif isinstance(e, Interrupted):
        _say_moves(steps or [], verb)
        if not e.done:
            did = f"nothing {past} yet"
        elif steps and photos:
            did = f"{_of(tally(steps, photos).photos, len(photos), 'photo')} ({_of(e.done, len(steps), 'file')}) {past}"
        else:
            did = f"{_of(e.done, e.done + e.left, 'file')} {past}"
        _interrupted(f"{'finishing ' if steps is None else ''}move run {e.run_id}: {did}"
                     f"{', the others not' if e.left else ''}",
                     f"`clipcull undo {e.run_id}` {undoing}; the next `clipcull move` finishes the run first.")
    elif isinstance(e, KeyboardInterrupt):
        _interrupted(f"nothing was journaled or {past}.")
    else:  # OSError, FileOpError, ClipCullError
        fail(f"{what} stopped: {e}. A started run stays journaled as interrupted: the next `clipcull move` "
             f"finishes it, or `clipcull undo` reverses it.")


def _moved(steps: list | None, photos: set[str] | None, files: int) -> str:
    """'2 photos (3 files)', or '3 files' where the plan is not at hand (a run finished from the journal)."""
    if steps and photos:
        return f"{plural(tally(steps, photos).photos, 'photo')} ({plural(files, 'file')})"
    return plural(files, "file")


def _of(done: int, total: int, word: str) -> str:
    """'3 photos' when all were done, '2 of 3 photos' when not, 'no photo' when none."""
    if done == total:
        return plural(total, word)
    return f"no {word}" if done == 0 else f"{done} of {plural(total, word)}"


def _interrupted(done: str, how: str | None = None) -> None:
    """Ctrl-C: a line saying what was done, one saying how to undo or finish it; exit 130."""
    err = ui.stderr_console()
    ui.message(err, f"clipcull: interrupted: {done}" + ("." if how else ""), "yellow")
    if how:
        ui.message(err, f"clipcull: {how}", "yellow")
    raise typer.Exit(EXIT_INTERRUPTED)



@app.command()
@shared_options
def undo(
    cache: CacheFlags,
    run: Annotated[Optional[int], typer.Argument(help="The run to undo (see `clipcull history`). \\[default: the last]", show_default=False)] = None,
) -> None:
    """Reverse a tag, move or review run: put back what it changed.

    Sidecars get their previous content back (or go, if clipcull created them), moved photos go back. Nothing is overwritten: a file changed since is left alone and reported.
    """
    lib = cache_library(cache)
    try:
        result = lib.undo(run)
    except UndoStopped as e:
        fail(f"undo stopped: {e}. Run `clipcull undo {e.run.id}` again once the cause is fixed.")
    except UndoInterrupted as e:
        _interrupted(f"the undo of {e.run.kind} run {e.run.id} stopped part way",
                     f"`clipcull undo {e.run.id}` again finishes it.")
    except ClipCullError as e:
        fail(str(e))
    finally:
        lib.close()
    target, report = result.run, result.report
    err = ui.stderr_console()
    if report.already_undone:
        ui.message(err, f"clipcull: {target.kind} run {target.id} was already undone; nothing to do.", "dim")
        return
    for path in report.cleaned:
        ui.message(err, f"clipcull: removed {path}, left by an interrupted write", "dim")
    for note in report.notes:
        ui.message(err, f"clipcull: {note}", "dim")
    for problem in report.conflicts:
        ui.message(err, f"clipcull: not undone: {problem}", "yellow")
    ui.message(err, f"clipcull: undid {target.kind} run {target.id}: {_undone(report)}"
                    + (f", {len(report.conflicts)} left alone (`clipcull undo {target.id}` tries them again)"
                       if report.conflicts else "") + ".", "dim")
    if report.conflicts:
        # a blocked run never hides older ones: say how to go past it
        older = result.older
        ui.message(err, f"clipcull: run {target.id} stays blocked until what is listed above is resolved (put the "
                        f"file back, or move what took its place aside), then `clipcull undo {target.id}` again."
                        + (f" Older runs can be undone meanwhile: `clipcull undo {older.id}`." if older else ""),
                   "yellow")
        raise typer.Exit(1)


def _undone(report) -> str:
    """What an undo put back, counted as `move` and `tag` count: photos, and their files."""
    actions = {s.action for s in report.reversed}
    counted = f"{plural(report.photos, 'photo')} ({plural(report.files, 'file')})"
    if not actions:
        return "nothing was left to reverse"
    if actions == {"move"}:
        return f"{counted} put back"
    if actions == {"copy"}:
        return f"the copies of {counted} removed"
    if actions <= {"sidecar", "embedded"}:
        return f"the XMP of {counted} restored"
    return f"{counted} restored"


@app.command()
@shared_options
def history(
    cache: CacheFlags,
    limit: Annotated[int, typer.Option("--limit", min=1, metavar="N", help="Show the N newest runs.")] = 20,
) -> None:
    """List tag, move and review runs, newest first."""
    lib = cache_library(cache)
    try:
        runs = lib.history(limit)
    except ClipCullError as e:
        fail(str(e))
    finally:
        lib.close()
    table = Table(show_edge=False)
    for column in ("run", "kind", "when", "state", "steps", "folders"):
        table.add_column(column)
    for r in runs:
        folders = ", ".join(json.loads(r.command).get("folders", [])) if r.command else ""
        table.add_row(str(r.id), r.kind, r.created_at, r.state, str(r.steps), ui.escape(folders))
    ui.stdout_console().print(table)


@app.command()
@shared_options
def report(
    folders: FoldersArg,
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="The HTML file to write (missing folders are made).")] = Path("clipcull-report.html"),
    force: Annotated[bool, flag("--force", help="Replace an existing file at --output that is not a clipcull report.")] = False,
    worst: Annotated[Optional[str], typer.Option("--worst", metavar="SHARE", help="Grey out the worst share, e.g. 30% (the photos `move --worst` would move). \\[default: none]")] = None,
) -> None:
    """Write a self-contained HTML contact sheet, best first.

    Thumbnails, score, clipcull's stars beside your own rating, flags, bursts stacked, capture time. Scores the folder the way it was last ranked.
    """
    fraction = percent(worst) if worst else None
    lib = library(folder_roots(folders), scoring, checks, grouping)
    try:
        result = run(lib, lambda: lib.report(output, worst=fraction, force=force))
    except ClipCullError as e:  # writing the page (the ranking's own errors are told by run)
        fail(str(e))
    finally:
        lib.close()
    ui.message(ui.stderr_console(), f"clipcull: wrote {output} ({plural(len(result.ranking.ranked), 'photo')})", "dim")
    finish(result.ranking, scoring.strict)
