"""Cache files folded into one (`clipcull cache merge`, and `rank` under torchrun with one
cache file per process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clip_cull.api.events import Events
from clip_cull.api.library import open_store
from clip_cull.store.cache_merge import MergeReport, merge_caches, per_process_path, sibling_paths


@dataclass
class MergeResult:
    report: MergeReport  # .sources folded in, .added rows per table
    path: object  # the cache they were folded into (Store.path)


def merge_cache_files(sources: list[str | os.PathLike], *, cache: str | os.PathLike | None = None,
                      state: str | os.PathLike | None = None, events: Events | None = None) -> MergeResult:
    """Fold the embeddings, prompt embeddings and file rows of sources into the cache (default:
    the user cache folder's). Idempotent; each source in one transaction. InputError for a
    source that is missing or damaged."""
    store = open_store(cache, state, events)
    try:
        return MergeResult(merge_caches(store, list(sources)), store.path)
    finally:
        store.close()


def merge_process_caches(db: str | os.PathLike, world_size: int, *, events: Events | None = None) -> MergeResult:
    """Under torchrun with `{rank}` in db: the first process folds the other processes' files into
    its own; those not on this machine are left for `clipcull cache merge` (events.caches_unreachable)."""
    events = events or Events()
    mine = per_process_path(db)
    others = [p for p in sibling_paths(db, world_size) if p != mine]
    missing = [str(p) for p in others if not p.is_file()]
    if missing:
        events.caches_unreachable(missing, mine)
    return merge_cache_files([p for p in others if p.is_file()], cache=db, events=events)
