"""`clipcull review` (the browser review page) and `clipcull search` (photos by text)."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clip_cull import ui
from clip_cull.cli.app import app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import model_session as _model_session
from clip_cull.cli.common import open_state as _open_state
from clip_cull.cli.common import open_store as _open_store
from clip_cull.cli.common import plural
from clip_cull.cli.common import quiet_libraries as _quiet_libraries
from clip_cull.cli.options import CheckFlags, GroupFlags, HeadFlags, ScoringFlags, flag, shared_options
from clip_cull.cli.scoring import exclude_globs, resolve_settings, score, setting_flags
from clip_cull.encoder import ModelSpec
from clip_cull.errors import ClipCullError
from clip_cull.files import heif_available, walk_photos
from clip_cull.images import rawpy_available
from clip_cull.settings import Settings
from clip_cull.store import Store

LOOPBACK = "127.0.0.1"


# --- the model the folder's ranking used ------------------------------------------------------


def text_session(settings: Settings, store: Store, device: str):
    """The model whose cached image embeddings the folder's ranking used (loaded only on use)."""
    from clip_cull.distributed import local_rank
    from clip_cull.heads import resolve_head

    head = resolve_head(settings.head, settings.positive, settings.negative)
    err = ui.stderr_console()
    if hasattr(head, "session"):  # a fine-tuned model brings its own weights
        return head.session(store, device, local_rank(), on_load=lambda spec: None)
    return _model_session(ModelSpec(settings.model, settings.pretrained, settings.precision), store, device, err)


# --- review ----------------------------------------------------------------------------------


@app.command()
@shared_options
def review(
    folder: Annotated[Path, typer.Argument(help="The shoot's folder (searched recursively).")],
    scoring: ScoringFlags,
    checks: CheckFlags,
    grouping: GroupFlags,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to serve on. \\[default: a free one]", show_default=False)] = 0,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but 127.0.0.1 lets other machines reach the page (they still need the token).")] = LOOPBACK,
    no_browser: Annotated[bool, flag("--no-browser", help="Do not open the browser (no redirect file); only print the URL.")] = False,
    sidecar: Annotated[str, typer.Option("--sidecar", metavar="lightroom|darktable", help="lightroom (IMG_0001.xmp) or darktable (IMG_0001.JPG.xmp), as for `tag`.")] = "lightroom",
    pick_label: Annotated[str, typer.Option("--pick-label", metavar="COLOUR", help="The xmp:Label P writes for a pick.")] = "Green",
) -> None:
    """Cull a shoot in the browser with the keyboard: ranks new photos, then serves a review page on this machine until Ctrl-C.

    Prints the page's URL as one line on stdout: every path of the review is under a random prefix (http://127.0.0.1:PORT/r/RANDOM/), and the URL holds the access token once (then a cookie for that path only). The browser is opened on a private redirect file (0600, removed when the review stops), so the token never appears on a command line.

    Stars, rejects and picks are written to XMP sidecars at once, as the photographer's own (a later `tag` keeps them); the whole session is one journaled run: `clipcull undo` reverts it. The page shows what is on disk: it checks the photos and sidecars again on reload, when its window regains focus and every few seconds. A key pressed on a photo that was replaced, or whose sidecar another program changed, since the page showed it is refused with one line, and the page shows the photo as it is now: press again.
    """
    from clip_cull.review.decisions import DecisionWriter
    from clip_cull.review.launch import remove_redirect
    from clip_cull.review.server import Access, bind, build_app, serve
    from clip_cull.review.session import ReviewSession
    from clip_cull.review.thumbs import ThumbnailCache

    if sidecar not in ("lightroom", "darktable"):
        raise typer.BadParameter("--sidecar is lightroom or darktable")
    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    err = ui.stderr_console()
    scored = score([str(folder)], scoring, checks, grouping, groups=True)  # in the order the folder was ranked
    result = scored.result
    roots = [os.path.abspath(os.path.expanduser(r)) for r in scored.roots]
    state = _open_state(scoring.state, scoring.db)
    store = _open_store(scoring.db, scoring.state)
    try:
        session_model = text_session(scored.settings, store, scoring.device.value)
        writer = DecisionWriter(state, {"command": "review", "folders": roots}, sidecar, pick_label)
        thumbs = ThumbnailCache(Path(store.path).parent / "thumbs")
        session = ReviewSession(store, result.ranked, result.groups, roots, writer, thumbs,
                                session_model.model_id, lambda: session_model)
        try:
            sock = bind(host, port)
        except OSError as e:
            _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
        if not _is_loopback(host):
            ui.message(err, f"clipcull: warning: listening on {host}, not only on this machine: anyone who "
                            "can reach it and has the URL can change your photos' ratings.", "yellow")
        access = Access(host, sock.getsockname()[1])
        app_ = build_app(session, access, ", ".join(roots))
        sys.stdout.write(access.url() + "\n")
        sys.stdout.flush()
        ui.message(err, f"clipcull: reviewing {plural(len(result.ranked), 'photo')}; Ctrl-C stops.", "dim")
        redirect = None if no_browser else _open_browser(access.url(), err)
        warm_up = threading.Thread(target=session.warm_up, name="clipcull-search-warmup", daemon=True)
        warm_up.start()
        try:
            serve(app_, sock)
        finally:
            if redirect is not None:
                remove_redirect(redirect)
        session.close()
        warm_up.join()  # the cache closes below: nothing may still be using it
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
        state.close()
    if writer.run_id is not None:
        ui.message(err, f"clipcull: review run {writer.run_id}: {writer.actions} decisions in effect. "
                        f"Undo the whole session: clipcull undo {writer.run_id}", "dim")


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
    query: Annotated[str, typer.Argument(help="What to look for, e.g. \"cutting the cake\".")],
    folders: Annotated[list[Path], typer.Argument(metavar="FOLDER_OR_PHOTO", help="Folders (searched recursively) or photo files.", show_default=False)],
    model_flags: HeadFlags,
    top: Annotated[int, typer.Option("--top", "-t", min=1, help="How many photos to print.")] = 20,
    json_lines: Annotated[bool, flag("--json", help="One JSON object a line: rank, path, similarity.")] = False,
    print0: Annotated[bool, flag("--print0", "-0", help="Only the paths, each ended by NUL (xargs -0).")] = False,
    template: Annotated[str, typer.Option("--template", help="The prompt the query goes into; {query} marks its place.")] = "a photo of {query}",
) -> None:
    """Find photos by text: the query's CLIP text embedding against the cached photo embeddings, most similar first.

    No photo is embedded: photos new or changed since the last `clipcull rank` are left out (and counted on stderr).
    """
    from clip_cull.search import search as run_search, up_to_date

    if json_lines and print0:
        raise typer.BadParameter("choose one of --json and --print0")
    if "{query}" not in template:
        raise typer.BadParameter("--template must contain {query}")
    _quiet_libraries()
    err = ui.stderr_console()
    roots = [str(f) for f in folders]
    settings = resolve_settings(model_flags, roots, setting_flags(model_flags)).settings  # as the folder was ranked
    walk = walk_photos(roots, heif=heif_available(), raw=rawpy_available(), exclude=exclude_globs(None))
    for path, reason in walk.errors:
        ui.message(err, f"clipcull: skipped {ui.shown_path(path)}: {reason}", "yellow")
    store = _open_store(model_flags.db, model_flags.state)
    try:
        fresh, stale = up_to_date(store, walk.photos)
        hits, missing = run_search(store, text_session(settings, store, model_flags.device.value), fresh, query, top,
                                   template)
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
    not_searched = len(stale) + len(missing)
    if not_searched:
        ui.message(err, f"clipcull: {plural(not_searched, 'photo')} not searched: not embedded yet "
                        f"(`clipcull rank {' '.join(roots)}` embeds them).", "yellow")
    if json_lines:
        sys.stdout.write("".join(json.dumps(h.as_dict(), ensure_ascii=False) + "\n" for h in hits))
    elif print0:
        sys.stdout.write("".join(h.path + "\0" for h in hits))
    elif hits:
        table = Table(show_edge=False, pad_edge=False)
        for column, justify in (("#", "right"), ("similarity", "right"), ("path", "left")):
            table.add_column(column, justify=justify, overflow="fold" if column == "path" else None)
        for h in hits:
            table.add_row(str(h.rank), f"{h.similarity:+.4f}", ui.escape(ui.shown_path(h.path)))
        ui.stdout_console().print(table)
    sys.stdout.flush()
