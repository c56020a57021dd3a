"""The model a workflow embeds with: chosen (ModelChoice), resolved as the commands resolve it,
and made into a session that loads the weights on first use and tells events when it does;
ModelAndCache, what the research workflows (AvaExperiment, Taste) own of it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping

from clip_cull.api.events import Events
from clip_cull.api.library import ProgressFn, open_state, open_store
from clip_cull.core.distributed import local_rank
from clip_cull.model.encoder import ModelSpec
from clip_cull.scoring import settings as settings_lib
from clip_cull.scoring.indexer import IndexOptions


@dataclass(frozen=True)
class ModelChoice:
    """Which model embeds, where, how many photos at a time. model/pretrained None: the
    folders' last `rank` (for the photographer's ratings), else env's, else the defaults."""

    model: str | None = None
    pretrained: str | None = None
    device: str = "auto"
    batch_size: int | None = None  # None: 32 on the CPU, 128 on a GPU
    workers: int | None = None  # decode workers; None: the CPU cores
    pool: str = "auto"  # the workers as threads, processes, or auto (scoring.indexer.choose_pool)

    def index_options(self, **options) -> IndexOptions:
        return IndexOptions(batch_size=self.batch_size, **({"workers": self.workers} if self.workers else {}),
                            pool=self.pool, **options)


def resolve_model(choice: ModelChoice, state_path: str | os.PathLike | None, cache: str | os.PathLike | None,
                  roots: list[str], env: Mapping[str, str], events: Events) -> ModelSpec:
    """The model given, else the roots' last rank's (from the state database), else env's, else the
    default. The precision stays the default fp32, whatever the record or env say (as it always did)."""
    state = open_state(state_path, cache, events)
    try:
        flags = {"model": choice.model, "pretrained": choice.pretrained}
        s = settings_lib.resolve(flags, state, roots, env).settings
    finally:
        state.close()
    return ModelSpec(s.model, s.pretrained)


def model_session(spec: ModelSpec, store, device: str, events: Events):
    """The model a workflow runs, loaded on first use (on this process's GPU under torchrun);
    events.loading_model before the load, events.model_loaded with how long it took."""
    from clip_cull.model.session import ModelSession

    return ModelSession(spec, store, device, on_load=events.loading_model, local_rank=local_rank(),
                        loader=timed_loader(spec, device, events))


def timed_loader(spec: ModelSpec, device: str, events: Events):
    """open_clip loading that tells events when it is done and how long it took."""
    from clip_cull.model.encoder import load_encoder

    def load():
        started = time.perf_counter()
        encoder = load_encoder(spec, device, local_rank())
        events.model_loaded(spec, time.perf_counter() - started)
        return encoder

    return load


class ModelAndCache:
    """The cache and a model session over it, the model resolved for model_roots() (whose last
    `rank` it follows where the choice leaves it open), made on first use by open(), closed by
    close() or a with block. Progress goes to progress(stage, done, total), news to events."""

    def __init__(self, model: ModelChoice, cache: str | os.PathLike | None, state: str | os.PathLike | None,
                 env: Mapping[str, str] | None, progress: ProgressFn | None, events: Events | None):
        self.model = model
        self.cache, self.state_path = cache, state
        self.env: Mapping[str, str] = {} if env is None else env
        self.progress = progress
        self.events = events or Events()
        self._store = self._session = None

    def model_roots(self) -> list[str]:
        return []

    def open(self):
        """Resolve the model, open the cache and make the session, once."""
        if self._session is None:
            spec = resolve_model(self.model, self.state_path, self.cache, self.model_roots(), self.env, self.events)
            if self._store is None:
                self._store = open_store(self.cache, self.state_path, self.events)
            self._session = model_session(spec, self._store, self.model.device, self.events)
        return self

    @property
    def store(self):
        return self.open()._store

    @property
    def session(self):
        return self.open()._session

    def close(self) -> None:
        store, self._store, self._session = self._store, None, None
        if store is not None:
            store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _progress(self, stage: str):
        report = self.progress
        return None if report is None else (lambda done, total: report(stage, done, total))
