"""The model the user chose, loaded only when something needs it, and the keys its
embeddings are cached under (the weights' sha256 kept in the cache, so a checkpoint file is
hashed once)."""

from __future__ import annotations

import threading
from typing import Callable

from clip_cull.core.files import file_sha256
from clip_cull.model.encoder import ClipEncoder, ModelSpec, image_size_hint, load_encoder, model_identity
from clip_cull.store.cache import Store


class ModelSession:
    """The model the user chose, loaded only when something really needs it."""

    def __init__(
        self,
        spec: ModelSpec,
        store: Store,
        device: str = "auto",
        on_load: Callable[[ModelSpec], None] | None = None,
        local_rank: int | None = None,
        loader: Callable[[], object] | None = None,
        model_id: str | None = None,
    ):
        """loader and model_id replace open_clip loading and the identity derived from spec
        (a fine-tuned model scores through the same cache this way)."""
        self.spec = spec
        self.device = device
        self.local_rank = local_rank  # which GPU, when torchrun starts one process per GPU
        self.loader = loader
        if model_id is not None:
            self.model_id = self.text_model_id = model_id
        else:
            self.model_id, self.text_model_id = _model_ids(spec, store)
        self.on_load = on_load  # told before the (seconds-long) load starts
        self.image_size_hint = image_size_hint(spec)
        self._encoder: ClipEncoder | None = None
        self._load_error: Exception | None = None
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def start_loading(self) -> None:
        """Load the model in a background thread, so that photos are decoded meanwhile
        (imports and weights take seconds); whoever needs the encoder waits for it."""
        with self._start_lock:  # not self._lock: the loading thread holds that while it loads
            if self._loading is not None or self.loaded:
                return
            self._loading = threading.Thread(target=self._load_in_background, name="clipcull-model-load", daemon=True)
            self._loading.start()

    def wait_loaded(self, timeout: float) -> bool:
        """Wait up to timeout seconds for a load start_loading began: True once it has ended
        (loaded, or failed: `encoder` then raises its error), False while it goes on."""
        loading = self._loading
        if loading is not None:
            loading.join(timeout)
            return not loading.is_alive()
        return self.loaded or self._load_error is not None

    def _load_in_background(self) -> None:
        try:
            self.encoder
        except Exception:
            pass  # kept in _load_error: the next one to ask for the encoder gets it

    def decode_side(self) -> int:
        """The side photos are decoded for: from the model's config when it says, so that
        decoding need not wait for the model (and gives the same pixels whether it is loaded)."""
        return self.image_size_hint or self.encoder.image_size

    @property
    def encoder(self) -> ClipEncoder:
        with self._lock:
            if self._load_error is not None:
                raise self._load_error  # tried once already: every worker gets the same answer
            if self._encoder is None:
                if self.on_load:
                    self.on_load(self.spec)
                try:
                    if self.loader is not None:
                        self._encoder = self.loader()
                    else:
                        self._encoder = load_encoder(self.spec, self.device, self.local_rank)
                except Exception as e:
                    self._load_error = e
                    raise
            return self._encoder


def _model_ids(spec: ModelSpec, store: Store) -> tuple[str, str]:
    """Keys for image embeddings (with the precision) and for prompt embeddings (the text
    tower always runs in full precision, so every precision shares them)."""
    checkpoint = spec.checkpoint_file
    sha = None
    if checkpoint is not None and not checkpoint.is_file():
        sha = "missing"  # loading will say so, if anything needs the model
    elif checkpoint is not None:
        st = checkpoint.stat()
        key = str(checkpoint.resolve())
        sha = store.checkpoint_sha256(key, st.st_size, st.st_mtime_ns)
        if sha is None:
            sha = file_sha256(checkpoint)
            store.save_checkpoint_sha256(key, st.st_size, st.st_mtime_ns, sha)
    return model_identity(spec, sha), model_identity(spec, sha, with_precision=False)
