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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from clip_cull.api.events import Events
from clip_cull.core.distributed import local_rank
from clip_cull.core.errors import ClipCullError, DatabaseFailed, InputError
from clip_cull.core.faces import EXTRA_HINT as FACES_HINT
from clip_cull.core.faces import available as faces_available
from clip_cull.core.faces import require_for_penalties as require_faces_for_penalties
from clip_cull.core.files import DEFAULT_MAX_FILE_BYTES, PhotoSource, heif_available
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
# The per-photo analysers every ranking runs (core/analysers.py); one whose extra is missing is left out.
ANALYSERS = ("faces",)


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
    shard: tuple[int, int] | None = None  # (k, n): only share k of n was embedded, nothing ranked

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

    def best(self, top: int | None = None, unique: bool = False, include_blurry: bool = False,
             include_eyes_closed: bool = False) -> list[RankedPhoto]:
        """The best photos: blurry ones and those with closed eyes left out unless
        include_blurry / include_eyes_closed, one per group if unique (open eyes preferred)."""
        from clip_cull.scoring.groups import best_of_each_group

        left_out = {flag for flag, included in (("blurry", include_blurry), ("eyes-closed", include_eyes_closed))
                    if not included}
        chosen = [p for p in self.ranked if not left_out & set(p.flags)]
        if unique:
            chosen = best_of_each_group(chosen, self.groups)
        return chosen[:top] if top else chosen

    def blurry(self) -> int:
        return self.flagged("blurry")

    def flagged(self, flag: str) -> int:
        """How many photos carry this flag (blurry, eyes-closed, face-soft, ...)."""
        return sum(flag in p.flags for p in self.ranked)


@dataclass
class TagPlan:
    ranking: Ranking
    changes: list  # culling.xmp.XmpChange: what each sidecar (or photo, with embed) would become
    disagreements: list[str]  # photos whose ratings disagree between places
    applied: bool = False  # apply_tags has run it (a plan is applied once)

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
    applied: bool = False  # apply_move has run it (a plan is applied once)

    @property
    def photos(self) -> set[str]:
        return {p.path for p in self.chosen}


@dataclass
class MoveResult:
    plan: MovePlan | None  # None: interrupted runs were finished instead (resumed); nothing else was planned
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False
    resumed: list[int] = field(default_factory=list)  # interrupted move runs finished first
    resume_notes: list[str] = field(default_factory=list)

    @property
    def done(self):
        """culling.move.Tally: photos and files moved, and those that stayed."""
        from clip_cull.culling.move import tally

        return tally(self.plan.steps if self.plan else [], self.plan.photos if self.plan else set())


@dataclass
class UndoResult:
    run: object  # culling.journal.Run: id, kind, ...
    report: object  # culling.undo.UndoReport
    older: object | None = None  # with conflicts: the newest older run that can be undone meanwhile


@dataclass
class ReportResult:
    ranking: Ranking
    path: Path  # the HTML file written


@dataclass
class ReviewResult:
    ranking: Ranking
    summary: object  # review.session.Summary: what was decided (photos rated, rejected, picked; runs)
    signalled: bool  # Ctrl-C or SIGTERM stopped the server


@dataclass
class SearchResult:
    hits: list  # scoring.search.SearchHit: rank, path, similarity
    not_searched: int  # photos with no embedding of their current content (rank embeds them)
    skipped: list[tuple[str, str]]  # (path, why) of what the walk could not read
    roots: list[str] = field(default_factory=list)  # the folders searched


# --- the library -------------------------------------------------------------------------------


def _as_list(folders) -> list[str] | None:
    if folders is None:
        return None
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    if isinstance(folders, (bytes, bytearray)) or not all(isinstance(f, (str, os.PathLike)) for f in folders):
        raise InputError("folders are paths (str or os.PathLike), or a list of them")
    return [os.fspath(f) for f in folders]


def _number(name: str, value, low: float | None = None, high: float | None = None, *, whole: bool = False):
    """value itself, checked: a number (an int where whole), within [low, high]; None passes."""
    if value is None:
        return None
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value != value:
        raise InputError(f"{name} must be {'a whole number' if whole else 'a number'} (got {value!r})")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise InputError(f"{name} must be {bounds} (got {value!r})")
    return value


def _databases_fail_clearly(method):
    """A SQLite error that escapes a workflow (a table gone, a page damaged meanwhile) becomes the
    project's DatabaseFailed, one clear message, instead of sqlite3's."""
    import functools

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise DatabaseFailed(e) from e

    return guarded


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
        _number("blur_below", blur_below, 0)
        _number("similarity", similarity, -1, 1)
        _number("burst_window", burst_window, 0)
        _number("batch_size", batch_size, 1, whole=True)
        _number("workers", workers, 1, whole=True)
        _number("max_pixels", max_pixels, 1, whole=True)
        _number("max_file_bytes", max_file_bytes, 1, whole=True)
        if penalize is not None and not isinstance(penalize, str):
            penalize = ",".join(penalize)
        self.flags = dict(model=model, pretrained=pretrained, head=head, positive=positive, negative=negative,
                          precision=precision,
                          penalize=settings_lib.parse_penalize(penalize) if penalize is not None else None,
                          blur_below=blur_below, similarity=similarity, burst_window=burst_window)
        require_faces_for_penalties(self.flags["penalize"])
        self.cache, self.state_path = cache, state
        self.device = device
        self.options = IndexOptions(batch_size=batch_size, max_pixels=max_pixels, max_file_bytes=max_file_bytes,
                                    analysers=ANALYSERS, pool=pool, **({"workers": workers} if workers else {}))
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
        if self._folders == []:
            raise NoFolders("no folders given (an empty list)")
        if self._folders is None:
            roots = settings_lib.last_rank_roots(self.state)
            if not roots:
                raise NoFolders("no folders given and no earlier `clipcull rank` to take them from")
            self._folders = list(roots)
        return self._folders

    @property
    def source(self) -> PhotoSource:
        """The photos the folders hold, as this Library reads them (formats, exclusions)."""
        return PhotoSource(tuple(self.folders), self.heif, self.raw, self.exclude)

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
            head, store, s = self.head, self.store, self.settings
            if hasattr(head, "session"):  # a fine-tuned model brings its own weights
                self._session = head.session(store, self.device, local_rank(), on_load=self.events.loading_model)
            else:
                from clip_cull.api.models import model_session

                self._session = model_session(ModelSpec(s.model, s.pretrained, s.precision), store, self.device,
                                              self.events)
        return self._session

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

    @_databases_fail_clearly
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
            if (remembered := [p for p in s.penalize if p in ("eyes", "face")]) and not faces_available():
                # given here it is refused (FacesUnavailable); remembered from the last rank, say it
                self.events.warning(f"penalizing {','.join(remembered)} as last ranked, but the faces extra is not "
                                    f"installed here: photos new or changed since are not judged for faces "
                                    f"({FACES_HINT})")
            if shard:
                report, unsupported, _ = index_folders(
                    store, self.source, session, self.options, shard=shard,
                    progress=self._progress(f"embedding photos (share {shard[0]}/{shard[1]})", progress),
                    on_failure=self.events.unreadable)
                ranking = Ranking(resolved, FolderRanking([], report, unsupported), identity, roots, str(store.path),
                                  shard)
                self.events.ranked(ranking)
                return ranking
            result = rank_folders(
                store, self.source, session, head, self.options, checks=Checks(frozenset(s.penalize), s.blur_below),
                progress=self._progress("embedding photos", progress), text_progress=self._prompt_progress(s, progress),
                on_failure=self.events.unreadable)
            if groups:
                result.groups = group_ranked(store, result.ranked, session.model_id, s.similarity, s.burst_window)
            if record:
                settings_lib.record(self.state, roots, s)
            ranking = Ranking(resolved, result, identity, roots, str(store.path))
            self.events.ranked(ranking)
            return ranking
        except sqlite3.DatabaseError as e:  # a cache page damaged after it was opened
            raise store.error_for(e) from e

    @_databases_fail_clearly
    def rank_share(self, share: tuple[int, int], *, torchrun: bool = False, groups: bool = False,
                   progress: ProgressFn | None = None) -> Ranking:
        """Embed share k of n of the folders' photos (n processes split a folder; the settings are
        recorded). Under torchrun, every process then waits for the others, and process 0 folds
        their per-process caches (a cache path with `{rank}`) into its own and ranks every photo
        (recorded, as `rank` does): it returns that ranking; the others return their share's."""
        from clip_cull.core.distributed import wait_for_all

        embedded = self.rank(shard=share, record=True, progress=progress)
        if not torchrun:
            return embedded
        wait_for_all()
        if share[0] != 0:
            return embedded
        if self.cache and "{rank}" in str(self.cache):
            from clip_cull.api.cache import merge_process_caches

            merge_process_caches(self.cache, share[1], events=self.events)
        return self.rank(groups=groups, record=True, progress=progress)

    @_databases_fail_clearly
    def best(self, top: int = 20, *, unique: bool = False, include_blurry: bool = False,
             include_eyes_closed: bool = False) -> list[str]:
        """The paths of the best photos, best first (blurry ones and those with closed eyes left
        out unless include_blurry / include_eyes_closed)."""
        _number("top", top, 1, whole=True)
        return [p.path for p in self.rank(groups=unique).best(top, unique, include_blurry, include_eyes_closed)]

    @_databases_fail_clearly
    def search(self, text: str, top: int | None = 20, *, template: str | None = None) -> SearchResult:
        """Photos by text, most similar first, from the cached embeddings (nothing is embedded);
        top None: every photo."""
        _number("top", top, 1, whole=True)
        from clip_cull.scoring.search import QUERY_TEMPLATE, search, up_to_date

        roots = self.folders
        walk = self.source.walk()
        self.resolve()
        fresh, stale = up_to_date(self.store, walk.photos)
        hits, missing = search(self.store, self.session, fresh, text, top, template or QUERY_TEMPLATE)
        return SearchResult(hits, len(stale) + len(missing), list(walk.errors), roots)

    # --- tagging ---

    @_databases_fail_clearly
    def plan_tags(self, *, stars: str | list[tuple[int, float]] | None = None, reject_below: float | None = None,
                  label: str | None = None, sidecar: str = "lightroom", keywords: bool = True, overwrite: bool = False,
                  embed: bool = False, reject_blurry: bool = False, darktable_default_counts: bool = False,
                  ranking: Ranking | None = None, progress: ProgressFn | None = None) -> TagPlan:
        """What tag would write: the folders ranked (unless a ranking is given), stars by score.
        stars: "5:0.31,4:0.29" or [(5, 0.31), (4, 0.29)] (a score at or above earns the stars)."""
        from clip_cull.culling import tag as tagging

        if sidecar not in ("lightroom", "darktable"):
            raise InputError("sidecar is lightroom or darktable")
        stars = _star_thresholds(stars)
        _number("reject_below", reject_below)
        ranking = ranking or self.rank(progress=progress)
        # the journal says which ratings are clipcull's: a dry run plans with it too
        options = tagging.TagOptions(sidecar, stars, reject_below, label, keywords, overwrite, reject_blurry,
                                     darktable_default_counts, embed)
        changes, disagreements = tagging.plan_tags(ranking.ranked, options, self.journal)
        return TagPlan(ranking, changes, disagreements)

    @_databases_fail_clearly
    def apply_tags(self, plan: TagPlan) -> TagResult:
        """Journal the plan and write it. Raises Interrupted (Ctrl-C between writes: what was
        written is journaled), OSError or ClipCullError (the run stops, journaled as failed). A plan
        is applied once: plan again to write again."""
        from clip_cull.culling import tag as tagging

        _apply_once(plan)
        skipped: list[str] = []
        try:
            run_id = tagging.apply_tags(self.journal, plan.changes,
                                        {"command": "tag", "folders": _absolute(plan.ranking.roots)}, skipped)
        finally:  # --embed: photos rewritten with the same pixels keep what the cache knows of them
            self.store.carry_over((c.photo, c.source_sha, c.after_sha) for c in plan.changes
                                  if c.action == "embedded" and c.written)
        return TagResult(plan, run_id, skipped)

    @_databases_fail_clearly
    def tag(self, *, dry_run: bool = False, stars: str | list[tuple[int, float]] | None = None,
            reject_below: float | None = None, label: str | None = None, sidecar: str = "lightroom",
            keywords: bool = True, overwrite: bool = False, embed: bool = False, reject_blurry: bool = False,
            darktable_default_counts: bool = False, progress: ProgressFn | None = None) -> TagResult:
        """Write star ratings into XMP sidecars by score (the options: see plan_tags); dry_run: plan only."""
        plan = self.plan_tags(stars=stars, reject_below=reject_below, label=label, sidecar=sidecar, keywords=keywords,
                              overwrite=overwrite, embed=embed, reject_blurry=reject_blurry,
                              darktable_default_counts=darktable_default_counts, progress=progress)
        self.events.tags_planned(plan, dry_run)
        return TagResult(plan, dry_run=True) if dry_run else self.apply_tags(plan)

    # --- moving ---

    @_databases_fail_clearly
    def finish_interrupted_moves(self) -> tuple[list[int], list[str]]:
        """Finish move runs an earlier process left interrupted: (their ids, notes)."""
        from clip_cull.culling.move import resume_unfinished

        notes: list[str] = []
        finished: list[int] = []
        journal = self.journal  # the state database first: a damaged one stops it before anything
        resume_unfinished(self.store, journal, notes, finished)
        return finished, notes

    @_databases_fail_clearly
    def plan_move(self, *, to: str | os.PathLike | None = None, worst: float | None = None, below: float | None = None,
                  keep_top: int | None = None, label: str | None = None, per_group: bool = False,
                  blurry: bool = False, badly_exposed: bool = False, eyes_closed: bool = False,
                  face_soft: bool = False, copy: bool = False, ranking: Ranking | None = None,
                  progress: ProgressFn | None = None) -> MovePlan:
        """What move would do: the rejects chosen (worst: a share from 0 to 1) and each file's
        destination. eyes_closed / face_soft need the faces extra (FacesUnavailable without it)."""
        from clip_cull.culling.move import Selection, plan_moves, select_rejects

        _number("worst", worst, 0, 1)  # a share: 0.3 moves the worst 30%
        _number("below", below)
        _number("keep_top", keep_top, 0, whole=True)
        selection = Selection(worst, below, keep_top, label, per_group, blurry, badly_exposed, eyes_closed, face_soft)
        selection.check_extras()
        ranking = ranking or self.rank(groups=per_group, progress=progress)
        chosen = select_rejects(ranking.ranked, selection, ranking.groups)
        notes: list[str] = []
        steps = plan_moves(chosen, ranking.roots, str(to) if to else None, copy, notes)
        return MovePlan(ranking, chosen, steps, notes, copy)

    @_databases_fail_clearly
    def apply_move(self, plan: MovePlan) -> MoveResult:
        """Journal the plan, then move each file. Raises JournalBusy, MoveStopped, Interrupted,
        OSError or ClipCullError; what was done is journaled (undo reverses it)."""
        from clip_cull.culling.move import apply_moves

        _apply_once(plan)
        notes: list[str] = []
        journal = self.journal
        run_id = apply_moves(self.store, journal, plan.steps,
                             {"command": "move", "folders": _absolute(plan.ranking.roots)}, notes=notes)
        return MoveResult(plan, run_id, notes)

    @_databases_fail_clearly
    def move(self, *, dry_run: bool = False, to: str | os.PathLike | None = None, worst: float | None = None,
             below: float | None = None, keep_top: int | None = None, label: str | None = None,
             per_group: bool = False, blurry: bool = False, badly_exposed: bool = False, eyes_closed: bool = False,
             face_soft: bool = False, copy: bool = False, progress: ProgressFn | None = None) -> MoveResult:
        """Move rejects aside (never deleted), with their sidecars; undo() puts them back. An
        interrupted move is finished instead (result.plan None: run move again to choose from what
        is left). Choose at least one of worst (a share from 0 to 1),
        below, keep_top, label, per_group, blurry, badly_exposed, eyes_closed, face_soft."""
        from clip_cull.culling.move import Selection, check_destination

        selection = dict(worst=worst, below=below, keep_top=keep_top, label=label, per_group=per_group, blurry=blurry,
                         badly_exposed=badly_exposed, eyes_closed=eyes_closed, face_soft=face_soft, copy=copy)

        chooses = ("worst", "below", "keep_top", "label", "per_group", "blurry", "badly_exposed", "eyes_closed",
                   "face_soft")
        if all(selection.get(k) is None or selection.get(k) is False for k in chooses):  # keep_top=0 chooses
            raise InputError("choose what moves: worst, below, keep_top, label, per_group, blurry, badly_exposed, "
                             "eyes_closed or face_soft")
        Selection(eyes_closed=bool(selection.get("eyes_closed")), face_soft=bool(selection.get("face_soft"))).check_extras()
        check_destination(str(to) if to else None, self.folders)
        finished, resume_notes = ([], []) if dry_run else self.finish_interrupted_moves()
        self.events.moves_resumed(finished, resume_notes)
        if finished:  # the re-run of an interrupted move finishes it, and stops there: a new
            # selection from what is left now (the worst 30% of the rest) is not what was asked
            return MoveResult(None, resumed=finished, resume_notes=resume_notes)
        plan = self.plan_move(to=to, progress=progress, **selection)
        self.events.moves_planned(plan, dry_run)
        result = MoveResult(plan, dry_run=True) if dry_run else self.apply_move(plan)
        result.resumed, result.resume_notes = finished, resume_notes
        return result

    # --- the review page ---

    @_databases_fail_clearly
    def review(self, *, host: str = "127.0.0.1", port: int = 0, sidecar: str = "lightroom",
               pick_label: str = "Green", embed: bool = False, progress: ProgressFn | None = None) -> ReviewResult:
        """Rank the folders (bursts stacked), then serve the review page on host:port (0: a free
        port) until Ctrl-C or SIGTERM; events.review_serving(url, photos, stacks) tells where.
        Decisions go to XMP sidecars at once as one journaled run (undo() reverts it); embed: into
        the photo's own XMP as well (JPEG, TIFF, DNG), as tag(embed=True) writes it. The text
        model for the page's search loads on its first search only."""
        from clip_cull.review.decisions import DecisionWriter
        from clip_cull.review.server import Access, bind, build_app, serve
        from clip_cull.review.session import ReviewSession
        from clip_cull.review.thumbs import ThumbnailCache

        if sidecar not in ("lightroom", "darktable"):
            raise InputError("sidecar is lightroom or darktable")
        ranking = self.rank(groups=True, progress=progress)  # in the order the folder was ranked
        roots = _absolute([os.path.expanduser(r) for r in ranking.roots])
        store, text_model = self.store, self.session  # the session loads its model on first use only
        writer = DecisionWriter(self.state, {"command": "review", "folders": roots, **({"embed": True} if embed else {})},
                                sidecar, pick_label, embed=embed)
        thumbs = ThumbnailCache(Path(store.path).parent / "thumbs")
        session = ReviewSession(store, ranking.ranked, ranking.groups, roots, writer, thumbs, text_model.model_id,
                                lambda: text_model)
        try:
            sock = bind(host, port)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:
            access = Access(host, sock.getsockname()[1])
            app = build_app(session, access, ", ".join(roots))
            self.events.review_serving(access.url(), len(ranking.ranked), session.stacks())
            signalled = serve(app, sock, on_stop=session.stop)
        finally:
            session.close()  # waits for a decision being written; a search waiting for the model gives up
        return ReviewResult(ranking, session.summary(), bool(signalled))

    # --- the contact sheet ---

    @_databases_fail_clearly
    def report(self, output: str | os.PathLike, *, worst: float | None = None, force: bool = False,
               progress: ProgressFn | None = None) -> ReportResult:
        """Write a self-contained HTML contact sheet, best first, bursts stacked; worst (a share
        from 0 to 1) greys out what `move(worst=...)` would move. A file at output that is not a
        clipcull report is refused (before any work) unless force."""
        from clip_cull.culling import tag as tagging
        from clip_cull.culling.move import Selection, select_rejects
        from clip_cull.culling.report import check_output, render_report, write_report

        output = Path(output)
        check_output(output, force)  # before the work: a photo at output is refused at once
        ranking = self.rank(groups=True, progress=progress)
        ranked, roots = ranking.ranked, ranking.roots
        stars = dict(zip([p.path for p in ranked], tagging.star_ratings([p.score for p in ranked]).tolist()))
        rejects = {p.path for p in select_rejects(ranked, Selection(worst_fraction=worst))} if worst else set()
        journal = self.journal  # tells clipcull's own ratings from the photographer's
        yours = {p.path: _own_rating(p.path, journal) for p in ranked}
        title = "clipcull: " + ", ".join(os.path.basename(os.path.abspath(r)) or r for r in roots)
        page = render_report(ranked, stars, ranking.groups, rejects, title, self._progress("thumbnails", progress),
                             roots=roots, yours=yours)
        write_report(page, output, force)  # missing folders made; never onto a file that is not a report
        return ReportResult(ranking, output)

    # --- the journal ---

    @_databases_fail_clearly
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

    @_databases_fail_clearly
    def history(self, limit: int = 20) -> list:
        """Tag, move and review runs, newest first (culling.journal.Run)."""
        from clip_cull.culling.journal import Journal

        return Journal(self.state).runs(limit)


def _apply_once(plan) -> None:
    """A plan is applied once: its steps and changes then hold what that run did."""
    if getattr(plan, "applied", False):
        raise InputError("this plan was applied already; plan again (plan_tags / plan_move) to act on the folder as "
                         "it is now")
    plan.applied = True


def _star_thresholds(stars) -> list[tuple[int, float]] | None:
    """stars as "5:0.31,4:0.29" or [(5, 0.31), ...], checked: stars 1-5, thresholds numbers."""
    from clip_cull.culling.tag import parse_star_thresholds

    if stars is None:
        return None
    if isinstance(stars, str):
        try:
            return parse_star_thresholds(stars)
        except ValueError as e:
            raise InputError(f"stars: {e}") from None
    try:
        pairs = [(n, t) for n, t in stars]
        if any(isinstance(n, bool) or not isinstance(n, int) or isinstance(t, bool) or not isinstance(t, (int, float))
               for n, t in pairs):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f'stars: give "5:0.31,4:0.29" or [(5, 0.31), (4, 0.29)] (got {stars!r})') from None
    if not all(1 <= n <= 5 for n, _ in pairs):
        raise InputError(f"stars: stars must be 1-5 (got {stars!r})")
    return sorted(((n, float(t)) for n, t in pairs), key=lambda r: -r[0])


def _own_rating(photo: str, journal) -> int | None:
    """The photographer's rating (-1 reject) from sidecar or embedded XMP; None where unset
    or unreadable (the sheet still shows clipcull's suggestion)."""
    from clip_cull.research.taste import read_rating

    try:
        rating = read_rating(photo, journal=journal)
    except Exception:  # a sidecar clipcull cannot parse is the photographer's business, not the sheet's
        return None
    return rating.stars if rating is not None else None


def _absolute(roots: list[str]) -> list[str]:
    """Folders as the journal records them: `history` and `undo` run from anywhere later."""
    return [os.path.abspath(r) for r in roots]
