"""Model loading through --pretrained PATH, embeddings, model identity, clear load errors."""

import hashlib

import numpy as np
import pytest
import torch

from clip_cull.encoder import ModelSpec, encode_text_trimmed, load_encoder, model_identity
from clip_cull.errors import ModelLoadError


def test_checkpoint_file_loads_exactly(tiny_model_files):
    import open_clip

    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    saved = torch.load(checkpoint, weights_only=True)
    for name, value in encoder.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    assert encoder.image_size == 32 and encoder.embed_dim == 16
    assert open_clip.get_model_config(config.stem) is not None


def test_image_embeddings_match_open_clip_and_pooled_is_pre_projection(tiny_model_files):
    import open_clip

    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    reference = open_clip.create_model(config.stem, pretrained=str(checkpoint)).eval()
    pixels = torch.randn(3, 3, 32, 32)
    projected, pooled = encoder.encode_images(pixels)
    with torch.no_grad():
        expected = reference.encode_image(pixels).numpy()
        proj = reference.visual.proj.detach().numpy()
    assert projected.shape == (3, 16) and pooled.shape == (3, 32)
    np.testing.assert_allclose(projected, expected, atol=1e-5)
    np.testing.assert_allclose(pooled @ proj, expected, atol=1e-5)


def test_trimmed_text_encoding_equals_full_context(tiny_model_files):
    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    prompts = ["a outstanding picture, of a #great white shark", "a horrible picture, of a #jack-o'-lantern", "x"]
    tokens = encoder.tokenizer(prompts)
    with torch.no_grad():
        full = encoder.model.encode_text(tokens).numpy()
        trimmed = encode_text_trimmed(encoder.model, tokens).numpy()
    assert np.max(np.abs(full - trimmed)) < 1e-5
    np.testing.assert_allclose(encoder.encode_texts(prompts), full, atol=1e-5)


def test_model_identity_depends_on_weights_not_file_name(tiny_model_files, tmp_path):
    config, checkpoint = tiny_model_files
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(checkpoint.read_bytes())
    assert model_identity(ModelSpec(str(config), str(checkpoint)), sha) == model_identity(ModelSpec(str(config), str(copy)), sha)
    assert model_identity(ModelSpec("ViT-B-32", "openai")) == "ViT-B-32/openai"
    assert model_identity(ModelSpec("ViT-B-32", "laion2b_s34b_b79k")) != model_identity(ModelSpec("ViT-B-32", "openai"))


def test_weights_that_cannot_be_fetched_give_a_paragraph_not_a_traceback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_encoder(ModelSpec("ViT-B-32", "openai"), "cpu")
    text = str(info.value)
    assert "could not be fetched" in text and "--pretrained /path/to/" in text and "CLIPCULL_PRETRAINED" in text


@pytest.mark.parametrize(
    "spec, message",
    [
        (ModelSpec("no-such-model", "openai"), "unknown model 'no-such-model'"),
        (ModelSpec("ViT-B-32", "/nowhere/weights.pt"), "checkpoint file not found"),
        (ModelSpec("ViT-B-32", "not-a-tag"), "neither a pretrained tag"),
    ],
)
def test_bad_model_choices_are_explained(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_encoder(spec, "cpu")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_in_checkpoint_is_refused_and_never_runs(tiny_model_files, tmp_path, pickle_payload):
    config, _ = tiny_model_files
    write, marker = pickle_payload
    evil = write(tmp_path / "evil.pt", "state_dict")
    with pytest.raises(ModelLoadError, match="could not load checkpoint"):
        load_encoder(ModelSpec(str(config), str(evil)), "cpu")
    assert not marker.exists()


def test_cuda_asked_for_without_a_gpu_is_a_clear_error(tiny_model_files, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config, checkpoint = tiny_model_files
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_encoder(ModelSpec(str(config), str(checkpoint)), "cuda")


def test_wrapped_checkpoints_load_and_mismatched_ones_are_refused(tiny_model_files, tmp_path):
    config, checkpoint = tiny_model_files
    saved = torch.load(checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, wrapped)  # as DDP training saves
    encoder = load_encoder(ModelSpec(str(config), str(wrapped)), "cpu")
    for name, value in encoder.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    broken = tmp_path / "broken.pt"
    torch.save({k: (v[:1] if v.ndim else v) for k, v in saved.items()}, broken)
    with pytest.raises(ModelLoadError, match="could not load checkpoint"):
        load_encoder(ModelSpec(str(config), str(broken)), "cpu")
