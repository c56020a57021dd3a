"""`clipcull cache merge`: fold per-machine (or per-process) cache files into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import clip_cull.cli.ui as ui
from clip_cull.api import Library
from clip_cull.cli.app import app
from clip_cull.cli.common import fail as _fail
from clip_cull.cli.common import CliEvents
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
    lib = Library(cache=cache.db, state=cache.state, events=CliEvents())
    try:
        report = lib.merge_caches(sources)
        into = lib.store.path
    except ClipCullError as e:
        _fail(str(e))
    finally:
        lib.close()
    added = ", ".join(f"{n} {table}" for table, n in report.added.items() if n) or "nothing new"
    ui.message(ui.stderr_console(), f"clipcull: merged {report.sources} cache file(s) into {into}: {added}", "dim")
