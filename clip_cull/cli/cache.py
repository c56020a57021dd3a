"""`clipcull cache merge`: fold per-machine (or per-process) cache files into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import clip_cull.cli.ui as ui
from clip_cull import api
from clip_cull.cli.app import app
from clip_cull.cli.common import fail
from clip_cull.cli.options import CacheFlags, shared_options
from clip_cull.cli.research import ResearchEvents
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
    try:
        merged = api.merge_cache_files(sources, cache=cache.db, state=cache.state, events=ResearchEvents())
    except ClipCullError as e:
        fail(str(e))
    report = merged.report
    added = ", ".join(f"{n} {table}" for table, n in report.added.items() if n) or "nothing new"
    ui.message(ui.stderr_console(), f"clipcull: merged {report.sources} cache file(s) into {merged.path}: {added}", "dim")

