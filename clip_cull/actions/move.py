"""`clipcull move`: rejects go aside (never deleted), with their sidecars, journaled for undo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clip_cull.actions.fileops import transfer
from clip_cull.actions.groups import best_of_each_group
from clip_cull.actions.journal import DONE, PARTIAL, Journal, Step
from clip_cull.actions.xmp import existing_sidecars
from clip_cull.files import REJECTS_DIRNAME, file_sha256
from clip_cull.store import Store


@dataclass
class Selection:
    worst_fraction: float | None = None  # --worst 30%
    below: float | None = None  # --below SCORE
    keep_top: int | None = None  # --keep-top N
    label: str | None = None  # --label "not aesthetic"
    per_group: bool = False  # keep the best of each burst group, move the rest of it
    blurry: bool = False  # --blurry: photos flagged blurry
    badly_exposed: bool = False  # --badly-exposed: photos flagged over- or under-exposed


def select_rejects(ranked: list, selection: Selection, groups: dict[str, int] | None = None) -> list:
    """The photos to move, from a best-first ranking. Criteria combine: a photo moves when any
    chosen criterion picks it."""
    picked: set[str] = set()
    n = len(ranked)
    if selection.worst_fraction is not None:
        count = int(round(n * selection.worst_fraction))
        picked |= {p.path for p in ranked[n - count:]} if count else set()
    if selection.below is not None:
        picked |= {p.path for p in ranked if p.score < selection.below}
    if selection.keep_top is not None:
        picked |= {p.path for p in ranked[selection.keep_top:]}
    if selection.label is not None:
        wanted = selection.label.replace("-", " ")
        picked |= {p.path for p in ranked if p.label == wanted}
    if selection.blurry:
        picked |= {p.path for p in ranked if "blurry" in p.flags}
    if selection.badly_exposed:
        picked |= {p.path for p in ranked if {"overexposed", "underexposed"} & set(p.flags)}
    if selection.per_group and groups:
        best = {p.path for p in best_of_each_group(ranked, groups)}  # best first: the first of each group stays
        picked |= {p.path for p in ranked if p.path in groups and p.path not in best}
    return [p for p in ranked if p.path in picked]


def plan_moves(photos: list, roots: list[str], to_dir: str | None, copy: bool = False) -> list[Step]:
    """Each photo, its RAW companions and all their sidecars to the destination, keeping the
    path relative to its root folder (default destination: ROOT/_rejects). Names already taken
    get -1, -2, ...; a RAW+JPEG set keeps one common name."""
    taken: set[str] = set()
    steps = []
    action = "copy" if copy else "move"
    abs_roots = sorted((os.path.abspath(os.path.expanduser(r)) for r in roots), key=len, reverse=True)
    for photo in photos:
        root = next((r for r in abs_roots if photo.path == r or photo.path.startswith(r.rstrip(os.sep) + os.sep)), None)
        base = Path(root) if root and os.path.isdir(root) else Path(photo.path).parent
        dest_root = Path(to_dir).expanduser().resolve() if to_dir else base / REJECTS_DIRNAME
        members = [photo.path, *getattr(photo, "companions", [])]
        files = list(dict.fromkeys(
            [m for m in members] + [str(s) for m in members for s in existing_sidecars(m)]
        ))
        stem = _common_stem(dest_root / Path(photo.path).relative_to(base), files, taken)
        for f in files:
            target = stem.with_name(stem.name + Path(f).name[len(Path(photo.path).stem):])
            taken.add(str(target))
            steps.append(Step(action, f, str(target)))
    return steps


def _common_stem(first: Path, files: list[str], taken: set[str]) -> Path:
    """The destination stem (folder/name without extension) free for every file of a set:
    IMG_0001, else IMG_0001-1, ... so the RAW, the JPEG and their sidecars stay together."""
    stem_len = len(Path(files[0]).stem)
    base = first.with_name(first.stem)
    n = 0
    while True:
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        targets = [candidate.with_name(candidate.name + Path(f).name[stem_len:]) for f in files]
        if not any(os.path.lexists(t) or str(t) in taken for t in targets):
            return candidate
        n += 1


def apply_moves(store: Store, journal: Journal, steps: list[Step], command: dict, run_id: int | None = None) -> int:
    """Journal the plan (unless resuming run_id), then move step by step, marking each done and
    moving the cache's file rows along, so nothing is embedded again."""
    if run_id is None:
        run_id = journal.plan("move", command, steps)
    journal.set_state(run_id, PARTIAL)
    for step in steps:
        if step.state == DONE:
            continue
        if _both_identical(step):
            if step.action == "move":  # copied across file systems, crashed before the source went
                os.unlink(step.src)
        elif not _already_there(step):
            transfer(step.src, step.dst, copy=step.action == "copy")
        if step.action == "move":
            _follow_in_cache(store, step.src, step.dst)
        journal.mark(run_id, step.seq, DONE)
    journal.set_state(run_id, DONE)
    return run_id


def _already_there(step: Step) -> bool:
    """A crash after the move and before it was marked done: the file is at dst already."""
    return step.action == "move" and not os.path.lexists(step.src) and os.path.lexists(step.dst)


def _both_identical(step: Step) -> bool:
    if not (os.path.isfile(step.src) and os.path.isfile(step.dst)):
        return False
    return os.path.getsize(step.src) == os.path.getsize(step.dst) and file_sha256(step.src) == file_sha256(step.dst)


def _follow_in_cache(store: Store, src: str, dst: str) -> None:
    with store.writing():
        store.db.execute("update or replace files set path = ? where path = ?", [dst, src])


def resume_unfinished(store: Store, journal: Journal) -> int | None:
    """Finish a move run a crash interrupted (a re-run completes it)."""
    run = journal.unfinished("move")
    if run is None:
        return None
    apply_moves(store, journal, journal.steps(run.id), {}, run_id=run.id)
    return run.id
