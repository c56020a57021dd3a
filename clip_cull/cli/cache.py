"""`clipcull cache merge`: fold per-machine (or per-process) cache files into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import clip_cull.cli.ui as ui
from clip_cull.store.cache_merge import merge_caches, per_process_path, sibling_paths
from clip_cull.cli.app import app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import open_store as _open_store
from clip_cull.cli.options import CacheFlags, shared_options
from clip_cull.core.errors import ClipCullError

cache_app = typer.Typer(help="Work with cache files.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("merge")
@shared_options
def merge(
    sources: Annotated[list[Path], typer.Argument(metavar="SRC", help="Cache files to fold in (written by other machines or processes).", show_default=False)],
    cache: CacheFlags = None,
) -> None:
    """Fold the embeddings, prompt embeddings and file rows of SRC... into the cache (--db). Idempotent; each source in one transaction. Several machines must never write one SQLite file: give each its own --db (`{rank}` in the path becomes torchrun's RANK), then merge."""
    err = ui.stderr_console()
    store = _open_store(cache.db, cache.state)
    try:
        report = merge_caches(store, sources)
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
    added = ", ".join(f"{n} {table}" for table, n in report.added.items() if n) or "nothing new"
    ui.message(err, f"clipcull: merged {report.sources} cache file(s) into {store.path}: {added}", "dim")


def merge_process_caches(db: Path, world_size: int) -> None:
    """Under torchrun with `{rank}` in --db: process 0 folds the other processes' files into its own."""
    err = ui.stderr_console()
    mine = per_process_path(db)
    others = [p for p in sibling_paths(db, world_size) if p != mine]
    missing = [str(p) for p in others if not p.is_file()]
    if missing:
        ui.message(err, f"clipcull: not reachable from this machine: {', '.join(missing)}; copy them here and run "
                        f"`clipcull cache merge FILE... --db {mine}`", "yellow")
    store = _open_store(db)
    try:
        merge_caches(store, [p for p in others if p.is_file()])
    except ClipCullError as e:
        _fail(str(e))
    finally:
        store.close()
