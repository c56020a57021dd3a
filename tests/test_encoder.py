"""Model loading through --pretrained PATH, embeddings, model identity, clear load errors."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from clip_cull.model.encoder import ModelSpec, encode_text_trimmed, load_encoder, model_identity
from clip_cull.core.errors import ModelLoadError


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
    # The fast loader skips random initialisation; the text tower's causal mask (a buffer not
    # in the checkpoint) must still be right, and torch's init functions must be back.
    tokens = encoder.tokenizer(["a photo of a dog", "x"])
    with torch.no_grad():
        np.testing.assert_allclose(encoder.model.encode_text(tokens).numpy(), reference.encode_text(tokens).numpy(), atol=1e-5)
    assert torch.nn.init.normal_(torch.zeros(1000)).std() > 0.5


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


@pytest.mark.parametrize("size", [(96, 64), (64, 96), (50, 50), (224, 224), (225, 224), (31, 17), (7000, 10), (1000, 667)])
@pytest.mark.parametrize("resample", ["bicubic", "bilinear"])
def test_centre_square_preprocess_gives_open_clips_pixels(size, resample):
    """The fast path must hand the model what open_clip's own transform would: resize the
    short side, centre crop, normalise, for every aspect, odd size and up- or down-scale."""
    import open_clip

    from clip_cull.model.preprocess import CentreSquarePreprocess

    transform = open_clip.image_transform(224, is_train=False, interpolation=resample)
    fast = CentreSquarePreprocess.from_transform(transform)
    assert fast is not None and fast.size == 224
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    got = fast(image)
    assert got.dtype == np.float32 and got.shape == (3, 224, 224)
    # Pillow's filter taps from the box may differ in the last float bit: at most one grey
    # level (1/255/std ~ 0.015) on a rare pixel, never more.
    diff = np.abs(got - transform(image).numpy())
    assert diff.max() < 0.016 and np.mean(diff > 1e-5) < 0.001


def test_squares_normalised_by_the_model_give_the_same_embeddings_as_float_pixels(tiny_model_files):
    """Workers hand back uint8 squares; the model normalises them where it runs. The float32
    pixels are those of the model's transform, bit for bit, and so are the embeddings."""
    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    fast = encoder.square_preprocess
    rng = np.random.default_rng(4)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((96, 64), (40, 90), (32, 32))]
    squares = np.stack([fast.square(im) for im in images])
    assert squares.dtype == np.uint8 and squares.shape == (3, 32, 32, 3)
    pixels = np.stack([encoder.pixels(im) for im in images])
    mean, std = np.float32(fast.mean), np.float32(fast.std)  # the normalisation written out here, in float32
    expected = ((squares.astype(np.float32) / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(pixels, expected)
    from_squares = encoder.encode_squares(squares)
    from_pixels = encoder.encode_images(torch.from_numpy(pixels))
    np.testing.assert_array_equal(from_squares[0], from_pixels[0])
    np.testing.assert_array_equal(from_squares[1], from_pixels[1])


def test_the_predicted_square_is_open_clips_default_transform(tiny_model_files):
    """Workers start before the model loads, with the transform open_clip gives a model by default."""
    import open_clip

    from clip_cull.model.preprocess import CentreSquarePreprocess

    assert CentreSquarePreprocess.predicted(224) == CentreSquarePreprocess.from_transform(
        open_clip.image_transform(224, is_train=False))


def test_other_transforms_are_left_to_open_clip(tiny_model_files):
    import open_clip

    from clip_cull.model.preprocess import CentreSquarePreprocess

    for mode in ("squash", "longest"):
        assert CentreSquarePreprocess.from_transform(open_clip.image_transform(224, False, resize_mode=mode)) is None
    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    encoder.preprocess = open_clip.image_transform(32, False, resize_mode="squash")
    encoder._fast = CentreSquarePreprocess.from_transform(encoder.preprocess)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    np.testing.assert_array_equal(encoder.pixels(image), encoder.preprocess(image).numpy())


def test_image_size_hint_comes_from_the_config_without_importing_open_clip(tiny_model_files):
    """Decoding starts while the model loads, at the size the model will want."""
    import subprocess
    import sys

    import open_clip

    from clip_cull.model.encoder import image_size_hint

    code = ("import sys; from clip_cull.model.encoder import ModelSpec, image_size_hint; "
            "print(image_size_hint(ModelSpec('ViT-L-14-336')), 'open_clip' in sys.modules, 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["336", "False", "False"]
    config, _ = tiny_model_files
    for name in open_clip.list_models():
        if name == config.stem:
            continue  # registered by these tests, not one of open_clip's own
        size = open_clip.get_model_config(name)["vision_cfg"].get("image_size")
        if size is not None:
            assert image_size_hint(ModelSpec(name)) == (max(size) if isinstance(size, (list, tuple)) else size), name
    assert image_size_hint(ModelSpec(str(config))) == 32
    assert image_size_hint(ModelSpec("hf-hub:someone/some-model")) is None


def test_identifying_a_checkpoint_file_imports_neither_torch_nor_open_clip(tmp_path):
    """A warm `rank --model ViT-B-32 --pretrained FILE` answers from the cache: working out the
    model's cache key (which checks whether the file is OpenAI's release) must not import torch."""
    import subprocess
    import sys

    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not really weights")
    code = ("import sys; from clip_cull.model.encoder import ModelSpec, model_identity; "
            f"key = model_identity(ModelSpec('ViT-B-32', {str(checkpoint)!r}), 'ab' * 32); "
            "print(key.startswith('ViT-B-32'), 'open_clip' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.split() == ["True", "False", "False"]
