"""`clipcull rank` and `clipcull best`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

import clip_cull.cli.ui as ui
from clip_cull.cli.app import EXIT_CODES_HELP, app
from clip_cull.api import NoFolders
from clip_cull.cli.common import fail, plural
from clip_cull.cli.options import (ADVANCED, OUTPUT, CheckFlags, FoldersArg, GroupFlags, ScoringFlags, flag,
                                   shared_options)
from clip_cull.cli.scoring import finish, folder_roots, library, run, score
from clip_cull.core.distributed import torchrun_shard
from clip_cull.core.errors import ClipCullError


@app.command(epilog=EXIT_CODES_HELP)
@shared_options
def rank(
    folders: FoldersArg,
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", "--top", "-t", min=1, metavar="N", rich_help_panel=OUTPUT, help="Show only the best N.")] = None,
    json_lines: Annotated[bool, flag(
        "--json", panel=OUTPUT, help="One JSON object a line (rank, path, score, label, head, focus, ...); "
                                     "unreadable files as JSON on stderr.")] = False,
    csv_out: Annotated[bool, flag("--csv", panel=OUTPUT, help="CSV with a header row: the columns of --json.")] = False,
    groups: Annotated[bool, flag("--groups", help="Find bursts and near-duplicates (shown as a group number).")] = False,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", metavar="K/N", rich_help_panel=ADVANCED,
        help="Embed only share K (from 0) of N and print no ranking: N processes split a folder, sharing "
             "one cache on one machine, or one --db each, merged with `clipcull cache merge`. "
             "torchrun sets the shares itself.")] = None,
) -> None:
    """Embed new or changed photos, then print all photos ranked by aesthetic score, best first.

    The settings used are remembered for the folder: `best`, `tag`, `move`, `report` and `review` then score it the same way.
    """
    if json_lines and csv_out:
        raise typer.BadParameter("choose one of --json and --csv")
    roots = folder_roots(folders)
    share = _parse_shard(shard) if shard else torchrun_shard()
    lib = library(roots, scoring, checks, grouping, json_errors=json_lines)
    try:
        if share:  # under torchrun, process 0 ranks once every share is embedded
            scored = run(lib, lambda: lib.rank_share(share, torchrun=not shard, groups=groups), scoring_only=True)
        else:
            scored = run(lib, lambda: lib.rank(groups=groups, record=True), scoring_only=True)
    finally:
        lib.close()
    if scored.shard:  # only a share was embedded: nothing to print
        finish(scored, scoring.strict)
        return
    ranked = scored.result.ranked[:limit] if limit else scored.result.ranked
    group_of = scored.result.groups if groups else None
    with ui.closed_stdout_is_fine():
        if json_lines:
            ui.write_json_lines(ranked, sys.stdout, group_of, scored.head_id)
        elif csv_out:
            ui.write_csv(ranked, sys.stdout, group_of, scored.head_id)
        elif ranked:
            out = ui.stdout_console()
            out.print(ui.ranking_table(ranked, group_of, roots, out.width))
    finish(scored, scoring.strict)


@app.command(epilog=EXIT_CODES_HELP)
@shared_options
def best(
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    folders: Annotated[Optional[list[Path]], typer.Argument(
        metavar="FOLDER_OR_PHOTO",
        help="Folders or photos. \\[default: the folders of the last `clipcull rank`]", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-t", min=1, metavar="N", rich_help_panel=OUTPUT,
                                     help="How many photos to print.")] = 20,
    print0: Annotated[bool, flag("--print0", "-0", panel=OUTPUT,
                                 help="End each path with NUL instead of a newline (xargs -0).")] = False,
    unique: Annotated[bool, flag("--unique", help="Only the best photo of each burst or near-duplicate group.")] = False,
    include_blurry: Annotated[bool, flag("--include-blurry", help="Also print photos flagged blurry (left out by default, and counted on stderr).")] = False,
    include_eyes_closed: Annotated[bool, flag("--include-eyes-closed", help="Also print photos with closed eyes (faces extra; left out by default, and counted on stderr).")] = False,
) -> None:
    """Print the paths of the best photos, best first, one a line, for scripts.

    Without folders: the folders of the last `clipcull rank`. Each folder is scored the way it was last ranked (options given here win); new or changed photos are embedded first.
    """
    lib = library(folder_roots(folders) if folders else None, scoring, checks, grouping)
    if not folders:
        try:
            lib.folders  # the folders of the last `clipcull rank`
        except NoFolders:
            lib.close()
            fail("no folders given and no earlier `clipcull rank` to take them from: clipcull best FOLDER")
        except ClipCullError as e:
            lib.close()
            fail(str(e))
    scored = score(lib, scoring, groups=unique)
    lib.close()
    for included, flag_name, what, many, option in (
            (include_blurry, "blurry", "blurry photo", None, "--include-blurry"),
            (include_eyes_closed, "eyes-closed", "photo with closed eyes", "photos with closed eyes",
             "--include-eyes-closed")):
        if not included and (left_out := scored.flagged(flag_name)):
            ui.message(ui.stderr_console(), f"clipcull: left out {plural(left_out, what, many)} ({option} keeps them)",
                       "dim")
    chosen = scored.best(top, unique, include_blurry, include_eyes_closed)
    end = "\0" if print0 else "\n"
    with ui.closed_stdout_is_fine():
        sys.stdout.write("".join(p.path + end for p in chosen))
        sys.stdout.flush()
    finish(scored, scoring.strict)


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard takes K/N, e.g. 0/2 (got {text!r})") from None
    if not (n >= 1 and 0 <= k < n):
        raise typer.BadParameter(f"--shard K/N needs 0 <= K < N (got {text!r})")
    return k, n
