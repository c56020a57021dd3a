"""Bringing the cache up to date for a set of photos: read, fingerprint, decode, measure, embed, save.

Workers (scoring/prepare.py) read, hash, decode and measure the photos and hand back the uint8
square the model sees, its EXIF facts and the analysers' measurements, while the main thread
runs the model on the batch before. The workers are threads, or processes that import no
torch (pool="processes"): numpy's and the analysers' many short calls each take the GIL, so on
many cores threads queue on it. The model normalises the squares where it runs (the device),
loads in the background from the first photo that needs it while the workers go on decoding,
and a thread of its own writes each batch to SQLite while the model runs the next. Each batch
is committed whole: an interruption loses at most the batches in flight.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from clip_cull.core.analysers import Analyser
from clip_cull.core.analysers import active as active_analysers
from clip_cull.core.errors import WorkerError
from clip_cull.core.files import DEFAULT_MAX_FILE_BYTES, FileStat
from clip_cull.core.images import DEFAULT_MAX_PIXELS, quiet_libtiff
from clip_cull.core.quality import ANALYSER as QUALITY
from clip_cull.model.encoder import ClipEncoder
from clip_cull.model.preprocess import EXACT, FAST, CentreSquarePreprocess, embedding_key
from clip_cull.model.session import ModelSession
from clip_cull.scoring.prepare import Plan, Prepared, prepare, prepare_in_process, start_process
from clip_cull.store.cache import EmbeddingRecord, FileRecord, Store

ProgressFn = Callable[[int, int], None]


@dataclass
class Failure:
    path: str
    reason: str
    remembered: bool = False  # known from an earlier run; retried once the file changes


@dataclass
class IndexReport:
    embedded: int = 0  # photos run through the model in this run
    reused: int = 0  # new or renamed files whose content already had an embedding
    cached: int = 0  # unchanged photos already in the cache
    failures: list[Failure] = field(default_factory=list)
    ready: list[FileStat] = field(default_factory=list)  # photos with an embedding, in input order
    pool: str | None = None  # "threads" or "processes": what read the photos (None: nothing to read)


HELD_IMAGES_BUDGET = 512 * 2**20  # bytes of decoded images and squares that may wait for the model to load
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128  # a GPU needs larger batches to stay busy
POOLS = ("auto", "threads", "processes")
# pool="auto" takes processes from this many workers and photos to read. On 2 cores processes were
# slower than threads (0.5-0.9x: nothing to queue on, bytes to send; BENCHMARKS.md,
# bench/bench_pipeline.py); on 16, threads queued on the GIL (0.23x decode-only). Between, it is
# not measured: from 3 workers the queue on the lock starts. And a process pool's start (0.3-0.6 s
# more than threads', measured on 2 cores) is not paid back by a few photos.
PROCESS_MIN_PHOTOS = 256
PROCESS_MIN_WORKERS = 3
PROGRESS_INTERVAL_S = 0.1  # progress is reported at most this often (and at the start and end)
CRASHES_TO_GIVE_UP = 5  # photos in a row that each stop a worker process: the workers, not the photos, are at fault
CRASHED = "the worker reading this photo stopped abruptly (a crash in a decoder or an analyser); nothing was saved for it"


@dataclass
class IndexOptions:
    batch_size: int | None = None  # None: 32 on the CPU, 128 on a GPU
    workers: int = max(1, os.cpu_count() or 1)  # decode workers; on a GPU decoding is the bound
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # larger files are refused before they are read
    fast_decode: bool = True
    quality: bool = True  # measure focus and exposure (the analyser "quality") on the decoded image
    analysers: tuple[str, ...] = ()  # names of more registered analysers to run (core/analysers.py); missing extras are left out
    pool: str = "auto"  # workers as "threads", "processes", or "auto": see choose_pool

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}: choose one of {', '.join(POOLS)}")

    @property
    def preprocessing(self) -> str:
        """fast (the photographer's path) or exact (the paper's): part of the embeddings' key."""
        return FAST if self.fast_decode else EXACT

    def batch_size_for(self, encoder: ClipEncoder) -> int:
        if self.batch_size:
            return self.batch_size
        return GPU_BATCH_SIZE if encoder.device.type == "cuda" else CPU_BATCH_SIZE

    def analysers_to_run(self) -> list[Analyser]:
        """The quality checks (when on) and the named analysers that can run here, each once."""
        chosen: dict[str, Analyser] = {}
        for analyser in ([QUALITY] if self.quality else []) + active_analysers(self.analysers):
            chosen.setdefault(analyser.name, analyser)
        return list(chosen.values())


def choose_pool(options: IndexOptions, photos: int, analysers: list[Analyser], square: bool) -> str:
    """threads or processes for this run. Processes need the model's input to be a centre square
    the workers can make without torch (the fast path with open_clip's usual transform) and
    analysers that can be sent to another process. "auto" takes them only where they pay: enough
    workers and photos to make up for starting them (PROCESS_MIN_*)."""
    if options.pool == "threads" or not square or not _picklable(analysers):
        return "threads"
    if options.pool == "processes":
        return "processes"
    return "processes" if options.workers >= PROCESS_MIN_WORKERS and photos >= PROCESS_MIN_PHOTOS else "threads"


def _picklable(analysers: list[Analyser]) -> bool:
    """Whether a worker process can be sent these analysers: module-level functions of a module
    it can import (not the calling script's: workers do not run it, see _script_hidden)."""
    if any(getattr(a.measure, "__module__", None) == "__main__" for a in analysers):
        return False
    try:
        pickle.dumps(analysers)
    except Exception:  # a lambda or a function defined inside another: threads only
        return False
    return True


def index_photos(
    store: Store,
    photos: list[FileStat],
    session: ModelSession,
    options: IndexOptions | None = None,
    progress: ProgressFn | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> IndexReport:
    """Make sure every readable photo has an embedding for session's model in the cache."""
    options = options or IndexOptions()
    report = IndexReport()
    failed = set()

    def fail(failure: Failure) -> None:
        report.failures.append(failure)
        failed.add(failure.path)
        if on_failure:
            on_failure(failure)

    known = store.fingerprints_with_embedding(embedding_key(session.model_id, options.preprocessing))
    analysers = options.analysers_to_run()
    analysed = {a.name: store.fingerprints_measured(a.name, a.version) for a in analysers}
    records = store.file_records([p.path for p in photos])
    todo: list[FileStat] = []
    for photo in photos:
        rec = records.get(photo.path)
        if rec is None or (rec.size, rec.mtime_ns) != (photo.size, photo.mtime_ns):
            todo.append(photo)
        elif rec.error is not None:
            fail(Failure(photo.path, rec.error, remembered=True))
        elif rec.fingerprint in known and all(rec.fingerprint in done for done in analysed.values()):
            report.cached += 1
        else:
            todo.append(photo)  # readable, but not yet embedded by this model (or not yet measured)
    if todo:
        _Pipeline(store, session, options, known, analysers, analysed, report, fail, progress).run(todo)
    report.ready = [p for p in photos if p.path not in failed]
    return report


class _Pipeline:
    """One run over the photos to read: workers ahead, the model and the writer behind."""

    def __init__(self, store, session, options, known, analysers, analysed, report, fail, progress):
        self.session, self.options = session, options
        self.known, self.analysers, self.analysed = known, analysers, analysed
        self.report, self.fail = report, fail
        self.key = embedding_key(session.model_id, options.preprocessing)
        hint = session.image_size_hint
        # The square the workers make before the model has loaded: open_clip's usual transform at
        # the size in the model's config, checked against the loaded model's (_wrong_square).
        self.square = CentreSquarePreprocess.predicted(hint) if options.fast_decode and hint else None
        self.late = _Late(session, exact=not options.fast_decode)  # threads without a square: the model's transform
        self.writer = _Writer(store, self.key)
        self.progress = _Progress(progress)
        self.batch: list[Prepared] = []  # to embed; written with their files and measurements
        self.others: list[Prepared] = []  # read (and measured), nothing to embed: written with the next batch
        self.held_bytes = 0  # of the squares and images in self.batch
        self.redo: deque[FileStat] = deque()  # to read again: made with another square than the model's
        self.done = 0
        self.crashes_in_a_row = 0  # photos that stopped a worker process alone, with no photo read since

    def run(self, todo: list[FileStat]) -> None:
        self.total = len(todo)
        kind = choose_pool(self.options, len(todo), self.analysers, self.square is not None)
        self.report.pool = kind
        self.progress(0, self.total)
        quiet_libtiff()  # before the workers start: handlers are process-wide
        self.workers = _Workers(kind, self.options.workers, self._plan)
        interrupted = finished = False
        try:
            pending = deque(todo)
            while pending or self.redo:
                self._loop(pending)
                self._flush(everything=True)  # may find squares to make again: another round
            finished = True
        except KeyboardInterrupt:
            interrupted = True  # Ctrl-C: do not wait for files still being decoded
            raise
        finally:
            # An error (the model failed to load) waits for the few files being decoded: no worker
            # is left after the call returns (in a process that goes on, as the tests' does).
            self.workers.close(interrupted)
            # What was queued is written (whole batches); the writer's own error is raised unless
            # another one is on its way.
            self.writer.close(raise_error=finished)
        self.progress(self.total, self.total, last=True)

    def _plan(self, snapshot: bool) -> Plan:
        """What the workers know. A process gets a copy, a thread the sets themselves (updated as
        batches are embedded, so that a copy of a photo later in the run is not decoded again)."""
        copy = frozenset if snapshot else (lambda s: s)
        # Without the size in a local config (a model from the hub), threads ask the model.
        side = self.square.size if self.square else self.session.decode_side
        return Plan(self.options.max_file_bytes, self.options.max_pixels, self.options.fast_decode, side,
                    copy(self.known), tuple(self.analysers), {name: copy(done) for name, done in self.analysed.items()},
                    heif=_heif_registered())

    def _loop(self, pending: deque[FileStat]) -> None:
        # Bounded read-ahead keeps memory flat however large the folder; results are taken in order.
        window = max(2 * (self.options.batch_size or CPU_BATCH_SIZE), 4 * self.options.workers)
        inflight: deque[tuple[FileStat, Future, bool]] = deque()
        suspects: deque[FileStat] = deque()  # in flight when a worker process died: read again one at a time
        while pending or inflight or suspects or self.redo:
            pending.extendleft(reversed(self.redo))
            self.redo.clear()
            if suspects:
                if not inflight:
                    photo = suspects.popleft()
                    inflight.append((photo, self._submit(photo), True))
            else:
                while pending and len(inflight) < window:
                    photo = pending.popleft()
                    inflight.append((photo, self._submit(photo), False))
            photo, future, suspect = inflight.popleft()
            try:
                item = future.result()
            except BrokenProcessPool:
                self.workers.broken()
                if suspect:  # alone in its worker: this photo stopped it
                    self._crashed(photo)
                else:
                    suspects.append(photo)
                continue
            self.crashes_in_a_row = 0
            self._take(item)

    def _crashed(self, photo: FileStat) -> None:
        self.crashes_in_a_row += 1
        if self.crashes_in_a_row >= CRASHES_TO_GIVE_UP:
            raise WorkerError(
                f"the worker processes reading photos stopped abruptly on {self.crashes_in_a_row} photos in a row "
                f"(the last {photo.path}): they cannot run here. Run with --pool threads (IndexOptions.pool).")
        self._take_failure(Prepared(photo, error=CRASHED, remember_error=False))

    def _submit(self, photo: FileStat) -> Future:
        return self.workers.submit(photo, self.square, self.late if self.square is None else None)

    def _take(self, item: Prepared) -> None:
        if item.error is not None:
            self._take_failure(item)
            return
        item.measurements = [m for m in item.measurements if item.fingerprint not in self.analysed[m[0]]]
        for name, _, _ in item.measurements:  # a copy of a content measured earlier in this run: once is enough
            self.analysed[name].add(item.fingerprint)
        if self.session.loaded and self._wrong_square(item):
            self._read_again(item)
            return
        if item.needs_embedding and item.fingerprint not in self.known:
            self.known.add(item.fingerprint)  # a copy later in this run is a reuse, not a second embedding
            self.session.start_loading()  # the first photo that needs the model starts its load
            self.batch.append(item)
            self.held_bytes += _item_bytes(item)
        else:
            self.report.reused += 1
            self.others.append(item)
        self._count()
        self._flush(everything=False)

    def _take_failure(self, item: Prepared) -> None:
        self.fail(Failure(item.stat.path, item.error))
        if item.remember_error:
            self.others.append(item)
        self._count()

    def _count(self) -> None:
        self.done += 1
        self.progress(self.done, self.total)

    def _flush(self, everything: bool) -> None:
        """Embed and hand to the writer what is ready: full batches, or everything at the end.
        While the model loads, batches wait (within HELD_IMAGES_BUDGET) and the workers go on."""
        size = self._batch_size()
        if self.batch and (everything or len(self.batch) >= size) and not self._wait_for_model(everything):
            self._embed_batches(everything)
        if self.others and (everything or len(self.others) >= 4 * size):
            self._write(self.others, [])
            self.others = []

    def _batch_size(self) -> int:
        if self.session.loaded:
            return self.options.batch_size_for(self.session.encoder)
        return self.options.batch_size or CPU_BATCH_SIZE

    def _wait_for_model(self, everything: bool) -> bool:
        """Whether a full batch waits: the model is still loading and the held squares fit."""
        return not everything and not self.session.wait_loaded(0) and self.held_bytes < HELD_IMAGES_BUDGET

    def _embed_batches(self, everything: bool) -> None:
        encoder = self.session.encoder  # waits here if the model is still loading (or raises its error)
        size = self.options.batch_size_for(encoder)
        for item in [i for i in self.batch if self._wrong_square(i)]:
            self.batch.remove(item)
            self.known.discard(item.fingerprint)
            self.held_bytes -= _item_bytes(item)
            self.done -= 1
            self._read_again(item)
        while len(self.batch) >= size or (everything and self.batch):
            chunk, self.batch = self.batch[:size], self.batch[size:]
            self.held_bytes -= sum(_item_bytes(i) for i in chunk)
            self._write(chunk + self.others, _embed(encoder, chunk, self.late))
            self.others = []

    def _write(self, items: list[Prepared], embeddings: list[EmbeddingRecord]) -> None:
        files = [_file_record(i) for i in items]
        measurements = [(i.fingerprint, *m) for i in items for m in i.measurements]
        self.writer.put(files, embeddings, measurements)
        self.report.embedded += len(embeddings)

    def _wrong_square(self, item: Prepared) -> bool:
        """Whether item's square was made otherwise than the loaded model's transform makes it."""
        if item.square is None:
            return False
        actual = self.session.encoder.square_preprocess
        if actual is not None and item.geometry == actual.geometry:
            self.square = actual  # the same pixels (the normalisation may differ: it is the model's)
            return False
        if actual is not None:
            self.square = actual
        elif self.square is not None:  # no centre square: the model's own transform, in threads
            self.square = None
            if self.workers.kind == "processes":
                self.workers.restart("threads")
                self.report.pool = "threads"
        return True

    def _read_again(self, item: Prepared) -> None:
        """Keep what was read (facts, measurements) and read the photo again for the model."""
        item.square, item.needs_embedding = None, False
        self.others.append(item)
        self.redo.append(item.stat)


class _Workers:
    """The pool: threads, or worker processes that import no torch (started by a fork server
    where there is one, else spawned: forking a process that has loaded torch is unsafe)."""

    def __init__(self, kind: str, count: int, plan: Callable[[bool], Plan]):
        self.count, self.plan = count, plan
        self.kind = kind
        self._broken = False
        self.pool = self._start()

    def _start(self):
        if self.kind == "threads":
            self.thread_plan = self.plan(False)
            return ThreadPoolExecutor(max_workers=self.count, thread_name_prefix="clipcull-decode")
        return ProcessPoolExecutor(max_workers=self.count, mp_context=_process_context(),
                                   initializer=start_process, initargs=(self.plan(True),))

    def submit(self, photo: FileStat, square, late) -> Future:
        if self.kind == "threads":
            return self.pool.submit(prepare, photo, self.thread_plan, square, late)
        if self._broken:  # a worker process died: a new pool for what is left
            self.restart(self.kind)
        with _script_hidden():  # submit starts the worker processes, up to count
            try:
                return self.pool.submit(prepare_in_process, photo, square)
            except BrokenProcessPool:  # it died before one of its photos told
                self.restart(self.kind)
                return self.pool.submit(prepare_in_process, photo, square)

    def broken(self) -> None:
        self._broken = True

    def restart(self, kind: str) -> None:
        self._stop(self.pool, interrupted=True)
        self.kind, self._broken = kind, False
        self.pool = self._start()

    def close(self, interrupted: bool) -> None:
        self._stop(self.pool, interrupted)

    @staticmethod
    def _stop(pool, interrupted: bool) -> None:
        if isinstance(pool, ProcessPoolExecutor) and interrupted:
            # Ctrl-C or a broken pool: end the workers now, not after the photo each is on.
            if hasattr(pool, "terminate_workers"):  # Python 3.14
                pool.terminate_workers()
                return
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=not interrupted, cancel_futures=True)


@contextlib.contextmanager
def _script_hidden():
    """multiprocessing starts each worker by running the calling script again (as __mp_main__),
    so that functions defined there unpickle: a script without `if __name__ == "__main__":`
    would index again in every worker, and the CLI's would import typer and rich for nothing.
    The workers need nothing from it (_picklable keeps its analysers in threads), so while
    workers start, the script is hidden from multiprocessing: no __file__, no __spec__."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _process_context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # The fork server imports the worker's module once; each worker is a fork of it (cheap).
        context.set_forkserver_preload(["clip_cull.scoring.prepare"])
        return context
    return multiprocessing.get_context("spawn")


def _heif_registered() -> bool:
    from PIL import Image

    return ".heic" in Image.registered_extensions()


class _Late:
    """In a worker thread, when there is no square to make (the exact path, or a model whose
    transform is not a centre square): the model's own transform, once it has loaded; before,
    the decoded image waits (within HELD_IMAGES_BUDGET) and the worker goes on."""

    def __init__(self, session: ModelSession, exact: bool):
        self.session, self.exact = session, exact
        self.held_bytes = 0
        self.lock = threading.Lock()

    def __call__(self, image) -> np.ndarray | None:
        self.session.start_loading()
        if not self.session.loaded and self._hold(image):
            return None
        return self.session.encoder.pixels(image, exact=self.exact)

    def _hold(self, image) -> bool:
        size = image.width * image.height * 3
        with self.lock:
            if self.held_bytes + size > HELD_IMAGES_BUDGET:
                return False
            self.held_bytes += size
            return True

    def finish(self, item: Prepared, encoder: ClipEncoder) -> np.ndarray:
        """The float pixels of an item: made now for an image that waited for the model."""
        if item.pixels is None and item.image is not None:
            item.pixels = encoder.pixels(item.image, exact=self.exact)
            with self.lock:
                self.held_bytes -= item.image.width * item.image.height * 3
            item.image = None
        return item.pixels


class _Writer:
    """Writes batches to the cache in a thread of its own, beside the model. At most `depth`
    batches wait; an error (or Ctrl-C in a test) ends the writing and is raised in the caller."""

    def __init__(self, store: Store, key: str, depth: int = 2):
        self.store, self.key = store, key
        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="clipcull-write", daemon=True)
        self.thread.start()

    def put(self, files, embeddings, measurements) -> None:
        self._raise()
        self.jobs.put((files, embeddings, measurements))

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    self.store.save(job[0], job[1], self.key, job[2])
                except BaseException as e:  # noqa: BLE001 - handed to the indexing thread
                    self.error = e

    def close(self, raise_error: bool = True) -> None:
        self.jobs.put(None)
        self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class _Progress:
    """At most every PROGRESS_INTERVAL_S: a rich bar's update costs the main thread time."""

    def __init__(self, report: ProgressFn | None, clock: Callable[[], float] = time.monotonic):
        self.report, self.clock = report, clock
        self.last = 0.0

    def __call__(self, done: int, total: int, last: bool = False) -> None:
        if self.report is None:
            return
        now = self.clock()
        if done == 0 or last or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.report(done, total)


def _item_bytes(item: Prepared) -> int:
    if item.square is not None:
        return item.square.nbytes
    if item.image is not None:
        return item.image.width * item.image.height * 3
    return 0


def _file_record(item: Prepared) -> FileRecord:
    facts = item.facts
    if item.error is not None:
        return FileRecord(item.stat.path, item.stat.size, item.stat.mtime_ns, item.fingerprint, error=item.error)
    return FileRecord(
        item.stat.path,
        item.stat.size,
        item.stat.mtime_ns,
        item.fingerprint,
        width=getattr(facts, "width", None),
        height=getattr(facts, "height", None),
        orientation=getattr(facts, "orientation", None),
        captured_at=getattr(facts, "captured_at", None),
        camera=getattr(facts, "camera", None),
    )


def _embed(encoder: ClipEncoder, batch: list[Prepared], late: _Late) -> list[EmbeddingRecord]:
    """One batch through the model: squares as bytes to the device, or float pixels."""
    import torch

    if all(item.square is not None for item in batch):
        projected, pooled = encoder.encode_squares(np.stack([item.square for item in batch]))
    else:
        fast = encoder.square_preprocess
        pixels = [fast.normalise(item.square) if item.square is not None else late.finish(item, encoder)
                  for item in batch]
        projected, pooled = encoder.encode_images(torch.from_numpy(np.stack(pixels)))
    return [
        EmbeddingRecord(b.fingerprint, projected[i], None if pooled is None else pooled[i])
        for i, b in enumerate(batch)
    ]


def prompt_embeddings(
    store: Store, session: ModelSession, prompts: list[str], progress: ProgressFn | None = None
) -> dict[str, np.ndarray]:
    """Embeddings of prompts, from the cache where present; the rest encoded and cached."""
    cached = store.text_embeddings(session.text_model_id, prompts)
    missing = [p for p in dict.fromkeys(prompts) if p not in cached]
    if missing:
        vectors = session.encoder.encode_texts(missing, progress=progress)
        store.save_text_embeddings(session.text_model_id, missing, vectors)
        cached.update(zip(missing, vectors))
    return cached
