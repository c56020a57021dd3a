"""`clipcull review` (the browser review page) and `clipcull search` (photos by text)."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import clip_cull.cli.ui as ui
from clip_cull.cli.app import app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import EXIT_INTERRUPTED, CliEvents, plural
from clip_cull.api import Library, NoFolders
from clip_cull.cli.common import quiet_libraries as _quiet_libraries
from clip_cull.cli.options import CheckFlags, GroupFlags, HeadFlags, ScoringFlags, flag, shared_options
from clip_cull.cli.scoring import ScoringEvents, exclude_globs, library, run, setting_flags
from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import heif_available
from clip_cull.core.images import rawpy_available

LOOPBACK = "127.0.0.1"


# --- review ----------------------------------------------------------------------------------


@app.command()
@shared_options
def review(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="The shoot's folder (searched recursively).",
                                           show_default=False)],
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, metavar="PORT", help="Port to serve on. \\[default: a free one]",
        show_default=False)] = 0,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS", help="Address to listen on; anything but 127.0.0.1 lets other machines reach "
                                          "the page (they still need the token).")] = LOOPBACK,
    no_browser: Annotated[bool, flag("--no-browser", help="Only print the URL; do not open the browser.")] = False,
    sidecar: Annotated[str, typer.Option(
        "--sidecar", metavar="STYLE", help="lightroom (IMG_0001.xmp) or darktable (IMG_0001.JPG.xmp).")] = "lightroom",
    pick_label: Annotated[str, typer.Option(
        "--pick-label", metavar="COLOUR", help="The xmp:Label P writes for a pick.")] = "Green",
    embed: Annotated[bool, flag("--embed", help="Also write each decision into the photo's own XMP (JPEG, TIFF, DNG), "
                                               "as `tag --embed` does: for Lightroom Classic.")] = False,
) -> None:
    """Cull a shoot in the browser with the keyboard, served on this machine until Ctrl-C.

    Ranks new photos, prints the page's URL (it holds an access token) and opens the browser on it. Stars, rejects and picks go to XMP sidecars at once, as your own ratings; the session is one run: `clipcull undo` reverts it. A key on a photo that changed on disk since the page showed it is refused: press again.
    """
    if sidecar not in ("lightroom", "darktable"):
        raise typer.BadParameter("--sidecar is lightroom or darktable")
    try:
        if not folder.is_dir():
            _fail(f"{folder} is not a folder")
        stopped = _review(folder, scoring, checks, grouping, port, host, no_browser, sidecar, pick_label, embed,
                          ui.stderr_console())
    except KeyboardInterrupt:  # Ctrl-C before the page was served (uvicorn handles it while serving)
        ui.message(ui.stderr_console(), "clipcull: review stopped before the page was served; nothing was decided.",
                   "yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if stopped:
        raise typer.Exit(EXIT_INTERRUPTED)


def _review(folder: Path, scoring: ScoringFlags, checks: CheckFlags, grouping: GroupFlags, port: int, host: str,
            no_browser: bool, sidecar: str, pick_label: str, embed: bool, err) -> bool:
    """Rank, serve until Ctrl-C, say what was decided; True when a signal stopped it."""
    from clip_cull.review.launch import remove_redirect

    lib = library([str(folder)], scoring, checks, grouping, events=_ReviewEvents)
    lib.events.open_browser = not no_browser
    if not _is_loopback(host):
        lib.events.warn_reachable = host
    try:
        result = run(lib, lambda: lib.review(host=host, port=port, sidecar=sidecar, pick_label=pick_label,
                                                 embed=embed))
    except ClipCullError as e:
        _fail(str(e))
    finally:
        lib.close()
        if lib.events.redirect is not None:
            remove_redirect(lib.events.redirect)
    ui.message(err, _stopped_line(result.summary), "dim")
    return result.signalled


class _ReviewEvents(ScoringEvents):
    """Says where the page is served: its URL on stdout, the browser opened on it (unless
    --no-browser), a warning when other machines can reach it."""

    open_browser = True
    warn_reachable: str | None = None  # the address listened on, when it is not this machine's
    redirect = None  # the file the browser was opened on, removed when review stops

    def review_serving(self, url: str, photos: int, stacks: int) -> None:
        if self.warn_reachable:
            ui.message(self.err, f"clipcull: warning: listening on {self.warn_reachable}, not only on this machine: "
                                 "anyone who can reach it and has the URL can change your photos' ratings.", "yellow")
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        ui.message(self.err, f"clipcull: reviewing {_photos_and_stacks(photos, stacks)}; Ctrl-C stops.", "dim")
        if self.open_browser:
            self.redirect = _open_browser(url, self.err)


def _photos_and_stacks(photos: int, stacks: int) -> str:
    """'30 photos', or '30 photos in 23 stacks' where bursts and near-duplicates are stacked."""
    return plural(photos, "photo") + (f" in {plural(stacks, 'stack')}" if stacks != photos else "")


def _stopped_line(s) -> str:
    """What the session decided, and how to undo it: one line."""
    if not s.photos and not s.moved:
        return "clipcull: review stopped; nothing was decided."
    kinds = [(s.rated, "rated"), (s.rejected, "rejected"), (s.picked, "picked"), (s.cleared, "cleared")]
    parts, undo = [], [f"clipcull undo {run}" for run in reversed(s.move_runs)]
    if s.photos:
        what = ", ".join(f"{n} {word}" for n, word in kinds if n)
        parts.append(f"review run {s.run_id}: {plural(s.photos, 'photo')} decided" + (f" ({what})" if what else ""))
        undo.append(f"clipcull undo {s.run_id}")
    if s.moved:
        parts.append(f"{plural(s.moved, 'reject')} moved to _rejects")
    return f"clipcull: review stopped; {'; '.join(parts)}. Undo: {' then '.join(undo)}"


def _open_browser(url: str, err):
    """The redirect file the browser was opened on (None: not opened; the URL is printed)."""
    from clip_cull.review.launch import open_browser

    try:
        return open_browser(url)
    except OSError as e:
        ui.message(err, f"clipcull: cannot open the browser ({e.strerror or e}); open the URL above.", "yellow")
        return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- search ----------------------------------------------------------------------------------


@app.command()
@shared_options
def search(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="What to look for, e.g. \"cutting the cake\".",
                                         show_default=False)],
    model_flags: HeadFlags,
    folders: Annotated[Optional[list[Path]], typer.Argument(
        metavar="FOLDER_OR_PHOTO",
        help="Folders or photos. \\[default: the folders of the last `clipcull rank`]", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-t", min=1, metavar="N", help="How many photos to print.")] = 20,
    json_lines: Annotated[bool, flag("--json", help="One JSON object a line: rank, path, similarity.")] = False,
    print0: Annotated[bool, flag("--print0", "-0", help="Only the paths, each ended by NUL (xargs -0).")] = False,
    template: Annotated[str, typer.Option(
        "--template", metavar="TEXT", help="The prompt the query goes into; {query} marks its place.")] = "a photo of {query}",
) -> None:
    """Find photos by text, most similar first.

    The query's CLIP text embedding against the cached photo embeddings. Without folders: the folders of the last `clipcull rank`. No photo is embedded: photos new or changed since the last `clipcull rank` are left out (and counted on stderr).
    """
    if json_lines and print0:
        raise typer.BadParameter("choose one of --json and --print0")
    if "{query}" not in template:
        raise typer.BadParameter("--template must contain {query}")
    _quiet_libraries()
    err = ui.stderr_console()
    lib = Library([str(f) for f in folders] if folders else None, cache=model_flags.db, state=model_flags.state,
                  device=model_flags.device.value, exclude=exclude_globs(None), heif=heif_available(),
                  raw=rawpy_available(), env=os.environ, events=CliEvents(),
                  **{k: v for k, v in setting_flags(model_flags).items() if v is not None})
    try:
        found = lib.search(query, top, template=template)
    except NoFolders:
        _fail("no folders given and no earlier `clipcull rank` to take them from: clipcull search QUERY FOLDER")
    except ClipCullError as e:
        _fail(str(e))
    finally:
        lib.close()
    for path, reason in found.skipped:
        ui.message(err, f"clipcull: skipped {ui.shown_path(path)}: {reason}", "yellow")
    if found.not_searched:
        ui.message(err, f"clipcull: {plural(found.not_searched, 'photo')} not searched: not embedded yet "
                        f"(`clipcull rank {' '.join(found.roots)}` embeds them).", "yellow")
    hits, roots = found.hits, found.roots
    if json_lines:
        sys.stdout.write("".join(json.dumps(h.as_dict(), ensure_ascii=False) + "\n" for h in hits))
    elif print0:
        sys.stdout.write("".join(h.path + "\0" for h in hits))
    elif hits:
        table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2, 0, 0))  # as `rank` prints its table
        for column, justify in (("#", "right"), ("similarity", "right"), ("path", "left")):
            table.add_column(column, justify=justify, overflow="fold" if column == "path" else None)
        for h in hits:  # relative to the folders given, as `rank` shows them (--json and --print0: full paths)
            table.add_row(str(h.rank), f"{h.similarity:+.4f}", ui.escape(ui.shown_path(ui.relative_path(h.path, roots))))
        ui.stdout_console().print(table)
    sys.stdout.flush()
