"""Shared fixtures: an offline tiny CLIP saved to a file, a private cache, photos made here."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import counts_for_mean, fails_after, make_photo

# No test may reach the network: open_clip and the hub must fail fast if anything tries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# A test run started in the background by a non-interactive shell (`pytest &`, some CI runners)
# inherits SIGINT ignored, and so would every clipcull the tests start: the Ctrl-C tests would
# see nothing happen. A handler here (not "ignored") makes each child start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# 1.6 M parameters, builds in well under a second (from ../shared/research/style-anchors.md).
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_NAME = "clipcull-test-tiny"


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory) -> tuple[Path, Path]:
    """(config JSON, checkpoint) of a randomly initialised tiny CLIP, made once per session."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny-model")
    config = folder / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache and state database; nothing touches the user's real ones."""
    db = tmp_path / "cache" / "clipcull.db"
    monkeypatch.setenv("CLIPCULL_DB", str(db))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("CLIPCULL_STATE", str(tmp_path / "state" / "state.db"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for var in ("CLIPCULL_MODEL", "CLIPCULL_PRETRAINED"):
        monkeypatch.delenv(var, raising=False)
    return db


@pytest.fixture
def private_state(private_cache) -> Path:
    """The state database (journal, folder settings) the CLI uses in this test."""
    return Path(os.environ["CLIPCULL_STATE"])


@pytest.fixture
def deadline():
    """For tests that run whole commands which could hang: 300 s, then a failure."""
    with fails_after(300):
        yield


@pytest.fixture(scope="session")
def tiny_prompt_cache(tiny_model_files, tmp_path_factory) -> Path:
    """A cache holding the tiny model's embeddings of the built-in heads' prompts (the 1996 of
    the default ensemble among them), made once per session: embedding them takes seconds, and
    every test that ranks with the tiny model would do it again in its fresh cache."""
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.model.heads.prompt import PromptHead
    from clip_cull.scoring.indexer import prompt_embeddings
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store

    config, checkpoint = tiny_model_files
    path = tmp_path_factory.mktemp("prompt-cache") / "clipcull.db"
    store = Store.open(path)
    try:
        session = ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu")
        prompts = [p for kind in ("fixed", "context") for p in PromptHead(kind).prompts()]  # ensemble: context's
        prompt_embeddings(store, session, prompts)
    finally:
        store.close()  # the last connection: the WAL is folded into the file, which alone is copied
    return path


@pytest.fixture
def tiny_env(tiny_model_files, tiny_prompt_cache, private_cache, monkeypatch):
    """Select the tiny model through the same environment variables users have. The test's
    cache starts as a copy of the session's prompt cache (a test of a first run deletes it)."""
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("CLIPCULL_MODEL", str(config))
    monkeypatch.setenv("CLIPCULL_PRETRAINED", str(checkpoint))
    if not private_cache.exists():
        private_cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_prompt_cache, private_cache)
    return config, checkpoint


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Eight ordinary JPEGs in a folder with a subfolder."""
    folder = tmp_path / "shoot"
    for i in range(6):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    for i in range(6, 8):
        make_photo(folder / "day2" / f"IMG_{i:04d}.jpg", seed=i)
    return folder


@pytest.fixture
def mini_ava(tmp_path) -> Path:
    """60 images whose AVA mean score follows their brightness; 3 listed images are missing."""
    folder = tmp_path / "ava"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(63):
        image_id = str(1000 + i)
        brightness = rng.uniform(20, 235)
        mean = 2.0 + 6.0 * (brightness - 20) / 215
        if i < 60:
            pixels = np.clip(rng.normal(brightness, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"{image_id}.jpg", quality=95)
        counts = counts_for_mean(mean)
        lines.append(" ".join(map(str, [i + 1, image_id, *counts, 0, 0, 1])))
    (folder / "AVA.txt").write_text("\n".join(lines) + "\n")
    (folder / "test_ids.txt").write_text("\n".join(str(1000 + i) for i in range(0, 63, 3)) + "\n")
    return folder


class _Payload:
    """Pickled, this runs `touch MARKER` when unpickled by anything that executes pickle code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def pickle_payload(tmp_path):
    """write(path, key) saves {key: payload} with plain pickle; the marker file appears if it ever runs."""
    import pickle

    marker = tmp_path / "payload-ran"

    def write(path: Path, key: str) -> Path:
        with open(path, "wb") as f:
            pickle.dump({key: _Payload(marker)}, f)
        return path

    return write, marker
