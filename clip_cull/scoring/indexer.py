"""Bringing the cache up to date for a set of photos: read, fingerprint, decode, embed, save.

Worker threads read, hash and decode files (Pillow and hashlib release the GIL) while the
main thread runs the model on the previous batch, so the model does not wait on one file at
a time. The model itself loads in the background from the first photo that needs it, while
the workers go on decoding. Each batch is committed on its own: an interruption loses at
most the batch in flight.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from clip_cull.model.encoder import ClipEncoder
from clip_cull.core.errors import ClipCullError
from clip_cull.core.files import (
    DEFAULT_MAX_FILE_BYTES,
    FileStat,
    FileTooLarge,
    NotRegularFile,
    content_fingerprint,
    is_raw,
    read_file,
)
from clip_cull.core.images import (
    DEFAULT_MAX_PIXELS,
    RunLimitExceeded,
    UnreadableImage,
    decode_photo,
    decode_raw,
    quiet_libtiff,
    read_facts,
)
from clip_cull.model.preprocess import EXACT, FAST, embedding_key, open_exact
from clip_cull.core.quality import measure
from clip_cull.core.analysers import active as active_analysers
from clip_cull.core.analysers import measure_all
from clip_cull.store.cache import EmbeddingRecord, FileRecord, Store
from clip_cull.model.session import ModelSession

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


@dataclass
class _Prepared:
    """What a worker made of one file."""

    stat: FileStat
    fingerprint: str | None = None
    facts: object | None = None
    pixels: np.ndarray | None = None  # preprocessed (3, H, W) float32, when the content needs embedding
    image: object | None = None  # decoded before the model had loaded: preprocessed when it has
    quality: object | None = None  # focus and exposure, when they were measured
    measurements: list = field(default_factory=list)  # (analyser, version, result) from core/analysers.py
    error: str | None = None
    remember_error: bool = True  # False when the file may be fine next time (it was changing)

    @property
    def to_embed(self) -> bool:
        return self.pixels is not None or self.image is not None


HELD_IMAGES_BUDGET = 512 * 2**20  # bytes of decoded images that may wait for the model to load
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128  # a GPU needs larger batches to stay busy


@dataclass
class IndexOptions:
    batch_size: int | None = None  # None: 32 on the CPU, 128 on a GPU
    workers: int = max(1, os.cpu_count() or 1)  # decode threads; on a GPU decoding is the bound
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # larger files are refused before they are read
    fast_decode: bool = True
    quality: bool = True  # measure focus and exposure on the decoded image
    analysers: tuple[str, ...] = ()  # names of registered analysers to run (core/analysers.py); missing extras are left out

    @property
    def preprocessing(self) -> str:
        """fast (the photographer's path) or exact (the paper's): part of the embeddings' key."""
        return FAST if self.fast_decode else EXACT

    def batch_size_for(self, encoder: ClipEncoder) -> int:
        if self.batch_size:
            return self.batch_size
        return GPU_BATCH_SIZE if encoder.device.type == "cuda" else CPU_BATCH_SIZE


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
    measured = store.fingerprints_with_quality() if options.quality else None
    analysers = active_analysers(options.analysers)
    analysed = {a.name: store.fingerprints_measured(a.name, a.version) for a in analysers}
    records = store.file_records([p.path for p in photos])
    todo: list[FileStat] = []
    for photo in photos:
        rec = records.get(photo.path)
        if rec is None or (rec.size, rec.mtime_ns) != (photo.size, photo.mtime_ns):
            todo.append(photo)
        elif rec.error is not None:
            fail(Failure(photo.path, rec.error, remembered=True))
        elif (rec.fingerprint in known and (measured is None or rec.fingerprint in measured)
              and all(rec.fingerprint in done for done in analysed.values())):
            report.cached += 1
        else:
            todo.append(photo)  # readable, but not yet embedded by this model (or not yet measured)
    if todo:
        _run_pipeline(store, todo, session, known, measured, analysers, analysed, options, report, fail, progress)
    report.ready = [p for p in photos if p.path not in failed]
    return report


def _run_pipeline(store, todo, session, known, measured, analysers, analysed, options, report, fail, progress) -> None:
    done = 0
    pending_files: list[FileRecord] = []
    pending_quality: dict[str, tuple] = {}
    pending_measurements: list[tuple[str, str, int, dict]] = []
    batch: list[_Prepared] = []

    prepare = _Preparer(session, known, measured, analysers, analysed, options)

    def flush() -> None:
        nonlocal done
        embeddings = []
        if batch:
            encoder = session.encoder  # waits here if the model is still loading
            for item in batch:
                prepare.finish(item, encoder)
            embeddings = _embed(encoder, batch)
        store.save(pending_files, embeddings, embedding_key(session.model_id, options.preprocessing), pending_quality,
                   pending_measurements)
        if measured is not None:
            measured.update(pending_quality)
        for fingerprint, name, _, _ in pending_measurements:
            analysed[name].add(fingerprint)
        pending_quality.clear()
        pending_measurements.clear()
        known.update(e.fingerprint for e in embeddings)
        report.embedded += len(embeddings)
        done += len(pending_files)
        pending_files.clear()
        batch.clear()
        if progress:
            progress(done, len(todo))

    if progress:
        progress(0, len(todo))
    # Bounded read-ahead keeps memory flat however large the folder.
    window = max(2 * (options.batch_size or CPU_BATCH_SIZE), 4 * options.workers)
    quiet_libtiff()  # before the workers start: handlers are process-wide
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="clipcull-decode")
    interrupted = False
    try:
        queue: deque = deque()
        files = iter(todo)
        for photo in files:
            queue.append(pool.submit(prepare, photo))
            if len(queue) >= window:
                break
        while queue:
            item: _Prepared = queue.popleft().result()
            nxt = next(files, None)
            if nxt is not None:
                queue.append(pool.submit(prepare, nxt))
            if item.error is not None:
                fail(Failure(item.stat.path, item.error))
                if item.remember_error:
                    pending_files.append(FileRecord(item.stat.path, item.stat.size, item.stat.mtime_ns,
                                                    item.fingerprint, error=item.error))
                continue
            pending_files.append(_file_record(item))
            if item.quality is not None:
                q = item.quality
                pending_quality[item.fingerprint] = (q.focus, q.highlights, q.shadows, q.brightness)
            pending_measurements.extend((item.fingerprint, *m) for m in item.measurements)
            if not item.to_embed:
                report.reused += 1
            else:
                batch.append(item)
            if progress:  # per photo, not per batch: a batch of 32 takes seconds on a CPU
                progress(done + len(pending_files), len(todo))
            full = batch and len(batch) >= options.batch_size_for(session.encoder)
            if full or len(pending_files) >= 4 * (options.batch_size or CPU_BATCH_SIZE):
                flush()
        if pending_files or batch:
            flush()
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C: do not wait for files still being decoded, only cancel the rest
        raise
    finally:
        # An error (the model failed to load) waits for the few files being decoded: no thread is
        # left decoding after the call returns (in a process that goes on, as the tests' does).
        pool.shutdown(wait=not interrupted, cancel_futures=True)


class _Preparer:
    """Runs in a worker thread: read, fingerprint, and decode only what needs embedding."""

    def __init__(self, session: ModelSession, known: set[str], measured: set[str] | None, analysers: list,
                 analysed: dict[str, set[str]], options: IndexOptions):
        self.session = session
        self.known = known
        self.measured = measured  # None: technical checks are off
        self.analysers = analysers
        self.analysed = analysed  # analyser name -> contents it has measured at its current version
        self.options = options
        self.claimed: set[str] = set()  # contents a worker is already decoding in this run
        self.held_bytes = 0  # decoded images waiting for the model to load
        self.lock = threading.Lock()

    def _claim(self, fingerprint: str) -> bool:
        """True for the first file of a content in this run: copies of it wait for its embedding."""
        with self.lock:
            if fingerprint in self.claimed:
                return False
            self.claimed.add(fingerprint)
            return True

    def _hold(self, image) -> bool:
        """Keep a decoded image until the model has loaded, within HELD_IMAGES_BUDGET."""
        size = _rgb_bytes(image)
        with self.lock:
            if self.held_bytes + size > HELD_IMAGES_BUDGET:
                return False
            self.held_bytes += size
            return True

    def pixels(self, image, encoder: ClipEncoder):
        # The exact path (AVA evaluation) keeps open_clip's own transform as well as the full decode.
        return encoder.pixels(image, exact=not self.options.fast_decode)

    def finish(self, item: _Prepared, encoder: ClipEncoder) -> None:
        """Preprocess an image decoded while the model was loading."""
        if item.pixels is None and item.image is not None:
            item.pixels = self.pixels(item.image, encoder)
            with self.lock:
                self.held_bytes -= _rgb_bytes(item.image)
            item.image = None

    def __call__(self, photo: FileStat) -> _Prepared:
        try:
            data, stat = read_file(photo.path, self.options.max_file_bytes)
        except FileNotFoundError:
            return _Prepared(photo, error="file disappeared while indexing", remember_error=False)
        except (FileTooLarge, NotRegularFile) as e:
            return _Prepared(photo, error=str(e), remember_error=False)  # cheap to tell again from stat
        except OSError as e:
            # Not remembered: permissions or a file in flux get fixed without touching the
            # file's size or mtime, so it must be tried again next run.
            return _Prepared(photo, error=f"cannot read file: {e.strerror or e}", remember_error=False)
        fingerprint = content_fingerprint(data)
        item = _Prepared(stat, fingerprint)
        new = fingerprint not in self.known
        first = new and self._claim(fingerprint)  # this file's content is embedded by this worker
        copy = new and not first  # ... or by the worker that met the same content first
        embedded = not first
        needs_quality = self.measured is not None and fingerprint not in self.measured and not copy
        to_analyse = [] if copy else [a for a in self.analysers if fingerprint not in self.analysed[a.name]]
        try:
            if embedded and not needs_quality and not to_analyse:
                item.facts = read_facts(data, _stored_size(data))
                return item
            min_side = self.session.decode_side() if not embedded else 224
            if to_analyse:  # a short side that gives a 3:2 photo at least the analysers' long side
                min_side = max(min_side, max(a.work_side for a in to_analyse) * 2 // 3)
            if not self.options.fast_decode:  # the paper's exact path: Image.open(...).convert("RGB")
                image = open_exact(data, self.options.max_pixels)
                size = image.size
            elif is_raw(photo.path):
                image, size = decode_raw(data)
            else:
                image, size = decode_photo(data, min_side=min_side, max_pixels=self.options.max_pixels,
                                           fast=self.options.fast_decode)
            item.facts = read_facts(data, size)
            if needs_quality:
                item.quality = measure(image)
            if to_analyse:
                item.measurements = measure_all(image, to_analyse)
            if not embedded:
                # Loading starts with the first photo that needs the model, and decoding goes
                # on meanwhile: decoded images wait (within a memory budget) for the model.
                self.session.start_loading()
                if self.session.loaded or not self._hold(image):
                    item.pixels = self.pixels(image, self.session.encoder)
                else:
                    item.image = image
        except RunLimitExceeded as e:
            item.error = str(e)
            item.remember_error = False  # another run, with other limits or more memory, may read it
        except UnreadableImage as e:
            item.error = str(e)
        except MemoryError:
            item.error = "not enough memory to decode this image"
            item.remember_error = False
        except ClipCullError:
            raise  # the model cannot load: that ends the run, it is not this photo's fault
        except Exception as e:  # a decoder or converter failing in a way nobody foresaw: one line, go on
            item.error = f"cannot decode: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
        return item


def _rgb_bytes(image) -> int:
    return image.width * image.height * 3


def _stored_size(data: bytes) -> tuple[int, int] | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


def _file_record(item: _Prepared) -> FileRecord:
    facts = item.facts
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


def _embed(encoder: ClipEncoder, batch: list[_Prepared]) -> list[EmbeddingRecord]:
    import torch

    projected, pooled = encoder.encode_images(torch.from_numpy(np.stack([b.pixels for b in batch])))
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
