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
from clip_cull.cli import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_SIMILARITY,
    DEFAULT_WINDOW_S,
    LAST_RANK,
    BatchOpt,
    DbOpt,
    Device,
    DeviceOpt,
    HeadOpt,
    ModelOpt,
    NegativeOpt,
    PositiveOpt,
    PrecisionOpt,
    PretrainedOpt,
    RunSettings,
    SimilarityOpt,
    WindowOpt,
    WorkersOpt,
    _fail,
    _model_session,
    _open_store,
    _quiet_libraries,
    _run,
    app,
)
from clip_cull.encoder import ModelSpec
from clip_cull.errors import ClipCullError
from clip_cull.files import heif_available, walk_photos
from clip_cull.images import rawpy_available
from clip_cull.indexer import IndexOptions
from clip_cull.store import Store

LOOPBACK = "127.0.0.1"


# --- the two calls into the rest of clipcull: the folder's ranking settings and model ------


def folder_settings(folders: list[Path], db, model, pretrained, precision, head, positive, negative) -> RunSettings:
    """The settings the folders were ranked with (those of the last `clipcull rank` when it
    covered them), with options given here winning."""
    store = _open_store(db)
    try:
        last = store.get_setting(LAST_RANK) or {}
    finally:
        store.close()
    wanted = [os.path.abspath(os.path.expanduser(str(f))) for f in folders]
    ranked_roots = last.get("roots", [])
    covered = all(any(w == r or w.startswith(r.rstrip(os.sep) + os.sep) for r in ranked_roots) for w in wanted)
    base = last if covered and ranked_roots else {}
    return RunSettings(
        [str(f) for f in folders],
        model or base.get("model") or DEFAULT_MODEL,
        pretrained or base.get("pretrained") or DEFAULT_PRETRAINED,
        positive or base.get("positive"),
        negative or base.get("negative"),
        precision.value if precision else base.get("precision", "fp32"),
        head or base.get("head") or "ensemble",
    )


def text_session(settings: RunSettings, store: Store, device: Device):
    """The model whose cached image embeddings the folder's ranking used (loaded only on use)."""
    from clip_cull.distributed import local_rank
    from clip_cull.heads import resolve_head

    head = resolve_head(settings.head, settings.positive, settings.negative)
    err = ui.stderr_console()
    if hasattr(head, "session"):  # a fine-tuned model brings its own weights
        return head.session(store, device.value, local_rank(), on_load=lambda spec: None)
    return _model_session(ModelSpec(settings.model, settings.pretrained, settings.precision), store, device, err)


# --- review ----------------------------------------------------------------------------------


@app.command()
def review(
    folder: Annotated[Path, typer.Argument(help="The shoot's folder (searched recursively).")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, show_default=False, help="Port to serve on. \\[default: a free one]")] = 0,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but 127.0.0.1 lets other machines reach the page (they still need the token).")] = LOOPBACK,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the browser; only print the URL.")] = False,
    sidecar: Annotated[str, typer.Option("--sidecar", help="lightroom (IMG_0001.xmp) or darktable (IMG_0001.JPG.xmp), as for `tag`.")] = "lightroom",
    pick_label: Annotated[str, typer.Option("--pick-label", help="The xmp:Label P writes for a pick.")] = "Green",
    similarity: SimilarityOpt = DEFAULT_SIMILARITY,
    burst_window: WindowOpt = DEFAULT_WINDOW_S,
    db: DbOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, device: DeviceOpt = Device.auto,
    head: HeadOpt = None, positive: PositiveOpt = None, negative: NegativeOpt = None,
    batch_size: BatchOpt = None, workers: WorkersOpt = max(1, os.cpu_count() or 1), precision: PrecisionOpt = None,
) -> None:
    """Cull a shoot in the browser with the keyboard: ranks new photos, then serves a review page on this machine until Ctrl-C.

    Prints the page's URL (with its access token) as one line on stdout. Stars, rejects and picks are written to XMP sidecars at once, as the photographer's own (a later `tag` keeps them); the whole session is one journaled run: `clipcull undo` reverts it.
    """
    from clip_cull.review.decisions import DecisionWriter
    from clip_cull.review.server import Access, bind, build_app, serve
    from clip_cull.review.session import ReviewSession
    from clip_cull.review.thumbs import ThumbnailCache

    if sidecar not in ("lightroom", "darktable"):
        raise typer.BadParameter("--sidecar is lightroom or darktable")
    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    err = ui.stderr_console()
    settings = folder_settings([folder], db, model, pretrained, precision, head, positive, negative)
    result = _run(settings, db, device, IndexOptions(batch_size=batch_size, workers=workers), remember=False,
                  groups=(similarity, burst_window))
    roots = [os.path.abspath(os.path.expanduser(r)) for r in settings.roots]
    store = _open_store(db)
    try:
        session_model = text_session(settings, store, device)
        writer = DecisionWriter(store, {"command": "review", "folders": roots}, sidecar, pick_label)
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
        ui.message(err, f"clipcull: reviewing {len(result.ranked)} photos; Ctrl-C stops.", "dim")
        if not no_browser:
            import webbrowser

            webbrowser.open(access.url())
        warm_up = threading.Thread(target=session.warm_up, name="clipcull-search-warmup", daemon=True)
        warm_up.start()
        serve(app_, sock)
        session.close()
        warm_up.join()  # the cache closes below: nothing may still be using it
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
    if writer.run_id is not None:
        ui.message(err, f"clipcull: review run {writer.run_id}: {writer.actions} decisions in effect. "
                        f"Undo the whole session: clipcull undo {writer.run_id}", "dim")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- search ----------------------------------------------------------------------------------


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, e.g. \"cutting the cake\".")],
    folders: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or photo files.")],
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many photos to print.")] = 20,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object a line: rank, path, similarity.")] = False,
    print0: Annotated[bool, typer.Option("--print0", "-0", help="Only the paths, each ended by NUL (xargs -0).")] = False,
    template: Annotated[str, typer.Option("--template", help="The prompt the query goes into; {query} marks its place.")] = "a photo of {query}",
    db: DbOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, device: DeviceOpt = Device.auto,
    head: HeadOpt = None, positive: PositiveOpt = None, negative: NegativeOpt = None, precision: PrecisionOpt = None,
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
    settings = folder_settings(folders, db, model, pretrained, precision, head, positive, negative)
    walk = walk_photos(settings.roots, heif=heif_available(), raw=rawpy_available())
    for path, reason in walk.errors:
        ui.message(err, f"clipcull: skipped {ui.shown_path(path)}: {reason}", "yellow")
    store = _open_store(db)
    try:
        fresh, stale = up_to_date(store, walk.photos)
        hits, missing = run_search(store, text_session(settings, store, device), fresh, query, top, template)
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
    not_searched = len(stale) + len(missing)
    if not_searched:
        ui.message(err, f"clipcull: {not_searched} photos not searched: not embedded yet "
                        f"(`clipcull rank {' '.join(settings.roots)}` embeds them).", "yellow")
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
