"""Library: a folder of photos ranked, tagged, culled and put back, from Python.

The workflows every command runs: settings resolved (given here > the folder's last `rank` >
`env` > defaults), cache and state database opened once, on first use, the head and the model
session made once, photos embedded and ranked, ratings written and moves made through the
journal. Nothing here prints: what happens along the way goes to an Events object and a
progress callback; what comes out is returned; errors are the project's own exceptions.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from clip_cull.api.events import Events
from clip_cull.core.distributed import local_rank
from clip_cull.core.errors import ClipCullError, InputError
from clip_cull.core.files import DEFAULT_MAX_FILE_BYTES, heif_available
from clip_cull.core.images import DEFAULT_MAX_PIXELS, rawpy_available
from clip_cull.core.paths import default_db_path, default_state_path
from clip_cull.model.encoder import ModelSpec
from clip_cull.scoring import settings as settings_lib
from clip_cull.scoring.indexer import IndexOptions
from clip_cull.scoring.ranking import Checks, FolderRanking, RankedPhoto, group_ranked, index_folders, rank_folders
from clip_cull.scoring.settings import Resolved, Settings
from clip_cull.store.cache import Store
from clip_cull.store.state import StateStore

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


class NoFolders(InputError):
    """No folders were given and no earlier `rank` recorded any."""


class UndoStopped(ClipCullError):
    """An undo stopped part way (a full disk, a file in use): `undo(run)` again finishes it."""

    def __init__(self, run, cause: BaseException):
        super().__init__(str(cause))
        self.run, self.cause = run, cause


class UndoInterrupted(KeyboardInterrupt):
    """Ctrl-C during an undo: part of the run is put back; `undo(run)` again finishes it."""

    def __init__(self, run):
        super().__init__(f"the undo of {run.kind} run {run.id} stopped part way")
        self.run = run


# --- the databases -----------------------------------------------------------------------------


def cache_path(db: str | os.PathLike | None) -> Path:
    """The cache file: db (`{rank}` in it: one file per torchrun process), else the user cache folder's."""
    from clip_cull.store.cache_merge import per_process_path

    return per_process_path(db) if db else default_db_path()


def open_store(db: str | os.PathLike | None, state: str | os.PathLike | None = None,
               events: Events | None = None) -> Store:
    """The cache. A damaged one is moved aside and built anew (events.cache_rebuilt says so)."""
    store = Store.open(cache_path(db))
    if store.rebuilt_from is not None:
        (events or Events()).cache_rebuilt(store, state or default_state_path())
    return store


def open_state(state: str | os.PathLike | None, db: str | os.PathLike | None,
               events: Events | None = None) -> StateStore:
    """The state database (journal, folder settings). The first time, an older clipcull's journal
    and settings are brought over from the cache db (events.legacy_imported)."""
    from clip_cull.store.state_import import LegacyUnreadable, import_legacy

    events = events or Events()
    opened = StateStore.open(Path(state) if state else default_state_path())
    try:
        imported = import_legacy(opened, cache_path(db))
    except LegacyUnreadable as e:
        events.legacy_unreadable(e)
        return opened
    except BaseException:
        opened.close()
        raise
    if imported is not None:
        events.legacy_imported(imported, opened)
    return opened


# --- what comes back ---------------------------------------------------------------------------


@dataclass
class Ranking:
    """A ranking and what it was made with."""

    resolved: Resolved
    result: FolderRanking
    head_id: str
    roots: list[str]
    cache_path: str = ""

    @property
    def settings(self) -> Settings:
        return self.resolved.settings

    @property
    def ranked(self) -> list[RankedPhoto]:
        """Best first: rank, path, score, label, flags, quality, capture time, RAW companions."""
        return self.result.ranked

    @property
    def groups(self) -> dict[str, int]:
        """The burst group of each photo in a group (rank(groups=True))."""
        return self.result.groups

    @property
    def failures(self) -> list:
        return self.result.report.failures

    def best(self, top: int | None = None, unique: bool = False, include_blurry: bool = False) -> list[RankedPhoto]:
        """The best photos: blurry ones left out unless include_blurry, one per group if unique."""
        from clip_cull.scoring.groups import best_of_each_group

        chosen = self.ranked if include_blurry else [p for p in self.ranked if "blurry" not in p.flags]
        if unique:
            chosen = best_of_each_group(chosen, self.groups)
        return chosen[:top] if top else chosen

    def blurry(self) -> int:
        return sum("blurry" in p.flags for p in self.ranked)


@dataclass
class TagPlan:
    ranking: Ranking
    changes: list  # culling.xmp.XmpChange: what each sidecar (or photo, with embed) would become
    disagreements: list[str]  # photos whose ratings disagree between places

    @property
    def writes(self) -> int:
        return sum(c.writes for c in self.changes)


@dataclass
class TagResult:
    plan: TagPlan
    run_id: int | None = None  # None: a dry run, or nothing to write
    skipped: list[str] = field(default_factory=list)  # files changed by another program meanwhile: left alone
    dry_run: bool = False

    @property
    def changes(self) -> list:
        return self.plan.changes

    @property
    def written(self) -> int:
        return sum(c.written for c in self.plan.changes)


@dataclass
class MovePlan:
    ranking: Ranking
    chosen: list[RankedPhoto]
    steps: list  # culling.journal.Step: src -> dst of every file (photos and their sidecars)
    notes: list[str]
    copy: bool = False

    @property
    def photos(self) -> set[str]:
        return {p.path for p in self.chosen}


@dataclass
class MoveResult:
    plan: MovePlan
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False
    resumed: list[int] = field(default_factory=list)  # interrupted move runs finished first
    resume_notes: list[str] = field(default_factory=list)

    @property
    def done(self):
        """culling.move.Tally: photos and files moved, and those that stayed."""
        from clip_cull.culling.move import tally

        return tally(self.plan.steps, self.plan.photos)


@dataclass
class UndoResult:
    run: object  # culling.journal.Run: id, kind, ...
    report: object  # culling.undo.UndoReport
    older: object | None = None  # with conflicts: the newest older run that can be undone meanwhile


@dataclass
class SearchResult:
    hits: list  # scoring.search.SearchHit: rank, path, similarity
    not_searched: int  # photos with no embedding of their current content (rank embeds them)
    skipped: list[tuple[str, str]]  # (path, why) of what the walk could not read


# --- the library -------------------------------------------------------------------------------


def _as_list(folders) -> list[str] | None:
    if folders is None:
        return None
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    return [str(f) for f in folders]


class Library:
    """Photos in folders, scored one way. See the module docstring and docs/api.md."""

    def __init__(
        self,
        folders: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        *,
        cache: str | os.PathLike | None = None,
        state: str | os.PathLike | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        precision: str | None = None,
        head: str | None = None,
        positive: str | None = None,
        negative: str | None = None,
        penalize: str | Iterable[str] | None = None,
        blur_below: float | None = None,
        similarity: float | None = None,
        burst_window: float | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        workers: int | None = None,
        pool: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        exclude: Iterable[str] = (),
        heif: bool | None = None,
        raw: bool | None = None,
        env: Mapping[str, str] | None = None,
        progress: ProgressFn | None = None,
        events: Events | None = None,
    ):
        """folders: None takes the folders of the last `rank`. The settings left None are the
        folder's last `rank`'s, else env's (CLIPCULL_MODEL, ...: pass os.environ to honour them),
        else the defaults. heif/raw None: on where pillow-heif / rawpy are installed."""
        self._folders = _as_list(folders)
        if penalize is not None and not isinstance(penalize, str):
            penalize = ",".join(penalize)
        self.flags = dict(model=model, pretrained=pretrained, head=head, positive=positive, negative=negative,
                          precision=precision,
                          penalize=settings_lib.parse_penalize(penalize) if penalize is not None else None,
                          blur_below=blur_below, similarity=similarity, burst_window=burst_window)
        self.cache, self.state_path = cache, state
        self.device = device
        self.options = IndexOptions(batch_size=batch_size, max_pixels=max_pixels, max_file_bytes=max_file_bytes,
                                    pool=pool, **({"workers": workers} if workers else {}))
        self.exclude = tuple(exclude)
        self.heif = heif_available() if heif is None else heif
        self.raw = rawpy_available() if raw is None else raw
        self.env: Mapping[str, str] = {} if env is None else env
        self.progress = progress
        self.events = events or Events()
        self._store: Store | None = None
        self._state: StateStore | None = None
        self._resolved: Resolved | None = None
        self._head = None
        self._session = None

    # --- what it owns, made on first use ---

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.cache, self.state_path, self.events)
        return self._store

    @property
    def state(self) -> StateStore:
        if self._state is None:
            self._state = open_state(self.state_path, self.cache, self.events)
        return self._state

    @property
    def journal(self):
        from clip_cull.culling.journal import Journal

        return Journal(self.state, on_wait=self.events.waiting_for_lock)

    @property
    def folders(self) -> list[str]:
        if self._folders is None:
            roots = settings_lib.last_rank_roots(self.state)
            if not roots:
                raise NoFolders("no folders given and no earlier `clipcull rank` to take them from")
            self._folders = list(roots)
        return self._folders

    def resolve(self) -> Resolved:
        """The settings the folders are scored with, and the folder whose record gave them."""
        if self._resolved is None:
            self._resolved = settings_lib.resolve(self.flags, self.state, self.folders, self.env)
        return self._resolved

    @property
    def settings(self) -> Settings:
        return self.resolve().settings

    @property
    def head(self):
        if self._head is None:
            from clip_cull.model.heads import resolve_head

            s = self.settings
            self._head = resolve_head(s.head, s.positive, s.negative)
        return self._head

    @property
    def session(self):
        """The model session: loaded only when something needs the model."""
        if self._session is None:
            from clip_cull.model.session import ModelSession

            head, store, s = self.head, self.store, self.settings
            if hasattr(head, "session"):  # a fine-tuned model brings its own weights
                self._session = head.session(store, self.device, local_rank(), on_load=self.events.loading_model)
            else:
                spec = ModelSpec(s.model, s.pretrained, s.precision)
                self._session = ModelSession(spec, store, self.device, on_load=self.events.loading_model,
                                             local_rank=local_rank(), loader=self._timed_loader(spec))
        return self._session

    def _timed_loader(self, spec: ModelSpec):
        from clip_cull.model.encoder import load_encoder

        def load():
            started = time.perf_counter()
            encoder = load_encoder(spec, self.device, local_rank())
            self.events.model_loaded(spec, time.perf_counter() - started)
            return encoder

        return load

    def close(self) -> None:
        store, state, self._store, self._state, self._session = self._store, self._state, None, None, None
        try:
            if store is not None:
                store.close()
        finally:
            if state is not None:
                state.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- scoring ---

    def check_folders(self) -> None:
        for root in self.folders:
            if not os.path.exists(os.path.expanduser(root)):
                raise InputError(f"no such file or folder: {root}")

    def _progress(self, stage: str, progress: ProgressFn | None):
        report = progress or self.progress
        return None if report is None else (lambda done, total: report(stage, done, total))

    def _prompt_progress(self, s: Settings, progress: ProgressFn | None):
        update = self._progress("embedding prompts", progress)
        said = False

        def on_prompts(done: int, total: int) -> None:
            nonlocal said
            if not said:
                said = True
                self.events.embedding_prompts(total, s)
            if update is not None:
                update(done, total)

        return on_prompts

    def rank(self, *, groups: bool = False, record: bool = False, shard: tuple[int, int] | None = None,
             progress: ProgressFn | None = None) -> Ranking:
        """Embed what is new or changed under the folders, then rank every photo, best first.
        groups: find bursts and near-duplicates; record: remember the settings for the folders
        (as `clipcull rank` does); shard=(k, n): embed only share k of n and rank nothing."""
        self.check_folders()  # before anything is said about scoring: a typo is the whole answer
        roots = self.folders
        resolved = self.resolve()
        s = resolved.settings
        store = self.store
        try:
            head, identity, session = self.head, settings_lib.head_id(s), self.session
            self.events.scoring_with(s, resolved.source)
            for warning in settings_lib.unknown_adjectives(s):
                self.events.warning(warning)
            if shard:
                report, unsupported, _ = index_folders(
                    store, roots, session, self.options, heif=self.heif, raw=self.raw, shard=shard,
                    exclude=self.exclude, progress=self._progress(f"embedding photos (share {shard[0]}/{shard[1]})",
                                                                  progress),
                    on_failure=self.events.unreadable)
                return Ranking(resolved, FolderRanking([], report, unsupported), identity, roots, str(store.path))
            result = rank_folders(
                store, roots, session, head, self.options, heif=self.heif, raw=self.raw,
                checks=Checks(frozenset(s.penalize), s.blur_below), exclude=self.exclude,
                progress=self._progress("embedding photos", progress), text_progress=self._prompt_progress(s, progress),
                on_failure=self.events.unreadable)
            if groups:
                result.groups = group_ranked(store, result.ranked, session.model_id, s.similarity, s.burst_window)
            if record:
                settings_lib.record(self.state, roots, s)
            return Ranking(resolved, result, identity, roots, str(store.path))
        except sqlite3.DatabaseError as e:  # a cache page damaged after it was opened
            raise store.error_for(e) from e

    def best(self, top: int = 20, *, unique: bool = False, include_blurry: bool = False) -> list[str]:
        """The paths of the best photos, best first (blurry ones left out unless include_blurry)."""
        return [p.path for p in self.rank(groups=unique).best(top, unique, include_blurry)]

    def search(self, text: str, top: int | None = 20, *, template: str | None = None) -> SearchResult:
        """Photos by text, most similar first, from the cached embeddings (nothing is embedded)."""
        from clip_cull.core.files import walk_photos
        from clip_cull.scoring.search import QUERY_TEMPLATE, search, up_to_date

        roots = self.folders
        walk = walk_photos(roots, heif=self.heif, raw=self.raw, exclude=self.exclude)
        self.resolve()
        fresh, stale = up_to_date(self.store, walk.photos)
        hits, missing = search(self.store, self.session, fresh, text, top, template or QUERY_TEMPLATE)
        return SearchResult(hits, len(stale) + len(missing), list(walk.errors))

    # --- tagging ---

    def plan_tags(self, *, stars: str | list[tuple[int, float]] | None = None, reject_below: float | None = None,
                  label: str | None = None, sidecar: str = "lightroom", keywords: bool = True, overwrite: bool = False,
                  embed: bool = False, reject_blurry: bool = False, darktable_default_counts: bool = False,
                  ranking: Ranking | None = None) -> TagPlan:
        """What tag would write: the folders ranked (unless a ranking is given), stars by score."""
        from clip_cull.culling import tag as tagging

        if sidecar not in ("lightroom", "darktable"):
            raise InputError("sidecar is lightroom or darktable")
        if isinstance(stars, str):
            try:
                stars = tagging.parse_star_thresholds(stars)
            except ValueError as e:
                raise InputError(f"stars: {e}") from None
        ranking = ranking or self.rank()
        # the journal says which ratings are clipcull's: a dry run plans with it too
        changes, disagreements = tagging.plan_tags(ranking.ranked, sidecar, stars, reject_below, label, keywords,
                                                   overwrite, reject_blurry, darktable_default_counts, embed,
                                                   self.journal)
        return TagPlan(ranking, changes, disagreements)

    def apply_tags(self, plan: TagPlan) -> TagResult:
        """Journal the plan and write it. Raises Interrupted (Ctrl-C between writes: what was
        written is journaled), OSError or ClipCullError (the run stops, journaled as failed)."""
        from clip_cull.culling import tag as tagging

        skipped: list[str] = []
        run_id = tagging.apply_tags(self.journal, plan.changes,
                                    {"command": "tag", "folders": _absolute(plan.ranking.roots)}, skipped)
        return TagResult(plan, run_id, skipped)

    def tag(self, *, dry_run: bool = False, **options) -> TagResult:
        """Write star ratings into XMP sidecars by score (options: see plan_tags); dry_run: plan only."""
        plan = self.plan_tags(**options)
        return TagResult(plan, dry_run=True) if dry_run else self.apply_tags(plan)

    # --- moving ---

    def finish_interrupted_moves(self) -> tuple[list[int], list[str]]:
        """Finish move runs an earlier process left interrupted: (their ids, notes)."""
        from clip_cull.culling.move import resume_unfinished

        notes: list[str] = []
        finished: list[int] = []
        journal = self.journal  # the state database first: a damaged one stops it before anything
        resume_unfinished(self.store, journal, notes, finished)
        return finished, notes

    def plan_move(self, *, to: str | os.PathLike | None = None, worst: float | None = None, below: float | None = None,
                  keep_top: int | None = None, label: str | None = None, per_group: bool = False,
                  blurry: bool = False, badly_exposed: bool = False, copy: bool = False,
                  ranking: Ranking | None = None) -> MovePlan:
        """What move would do: the rejects chosen (worst: a share from 0 to 1) and each file's destination."""
        from clip_cull.culling.move import Selection, plan_moves, select_rejects

        selection = Selection(worst, below, keep_top, label, per_group, blurry, badly_exposed)
        ranking = ranking or self.rank(groups=per_group)
        chosen = select_rejects(ranking.ranked, selection, ranking.groups)
        notes: list[str] = []
        steps = plan_moves(chosen, ranking.roots, str(to) if to else None, copy, notes)
        return MovePlan(ranking, chosen, steps, notes, copy)

    def apply_move(self, plan: MovePlan) -> MoveResult:
        """Journal the plan, then move each file. Raises JournalBusy, MoveStopped, Interrupted,
        OSError or ClipCullError; what was done is journaled (undo reverses it)."""
        from clip_cull.culling.move import apply_moves

        notes: list[str] = []
        journal = self.journal
        run_id = apply_moves(self.store, journal, plan.steps,
                             {"command": "move", "folders": _absolute(plan.ranking.roots)}, notes=notes)
        return MoveResult(plan, run_id, notes)

    def move(self, *, dry_run: bool = False, to: str | os.PathLike | None = None, **selection) -> MoveResult:
        """Move rejects aside (never deleted), with their sidecars; undo() puts them back. An
        interrupted move is finished first. selection: worst, below, keep_top, label, per_group,
        blurry, badly_exposed (at least one), copy."""
        from clip_cull.culling.move import check_destination

        chooses = ("worst", "below", "keep_top", "label", "per_group", "blurry", "badly_exposed")
        if not any(selection.get(k) not in (None, False) for k in chooses):
            raise InputError("choose what moves: worst, below, keep_top, label, per_group, blurry or badly_exposed")
        check_destination(str(to) if to else None, self.folders)
        finished, resume_notes = ([], []) if dry_run else self.finish_interrupted_moves()
        plan = self.plan_move(to=to, **selection)
        result = MoveResult(plan, dry_run=True) if dry_run else self.apply_move(plan)
        result.resumed, result.resume_notes = finished, resume_notes
        return result

    # --- the journal ---

    def undo(self, run: int | None = None) -> UndoResult:
        """Reverse a tag, move or review run (default: the last one not undone)."""
        from clip_cull.culling.fileops import FileOpError
        from clip_cull.culling.journal import Journal
        from clip_cull.culling.undo import undo_run

        journal = self.journal
        store = self.store  # a moved photo's cache row follows it back
        target = journal.run(run) if run is not None else journal.last_undoable()
        if target is None:
            raise InputError(f"no run {run} in the journal" if run is not None else "nothing to undo")
        try:
            report = undo_run(store, journal, target.id)
        except (OSError, FileOpError, ClipCullError) as e:
            raise UndoStopped(target, e) from e
        except KeyboardInterrupt:
            raise UndoInterrupted(target) from None
        older = Journal(self.state).last_undoable(before=target.id) if report.conflicts else None
        return UndoResult(target, report, older)

    def history(self, limit: int = 20) -> list:
        """Tag, move and review runs, newest first (culling.journal.Run)."""
        from clip_cull.culling.journal import Journal

        return Journal(self.state).runs(limit)


def _absolute(roots: list[str]) -> list[str]:
    """Folders as the journal records them: `history` and `undo` run from anywhere later."""
    return [os.path.abspath(r) for r in roots]
