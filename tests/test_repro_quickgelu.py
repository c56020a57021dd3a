"""A model fine-tuned from OpenAI's weights (QuickGELU) reloads with QuickGELU; OpenAI weights
from a file run with QuickGELU too. Goes through open_clip's real `openai` tag path: an offline
hub cache whose `openai` tag for ViT-B-32 resolves to a random ViT-B-32 checkpoint made here
(ViT-B-32 itself: the tag belongs to that architecture; fp16 on disk, 300 MB)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

REVISION = "0123456789abcdef0123456789abcdef01234567"
HUB_REPO = "models--timm--vit_base_patch32_clip_224.openai"


@pytest.fixture(scope="module")
def openai_hub(tmp_path_factory):
    """(hub cache folder, snapshot checkpoint path, reference state dict in fp32)."""
    import open_clip
    from safetensors.torch import save_file

    hub = tmp_path_factory.mktemp("hf") / "hub"
    snapshot = hub / HUB_REPO / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (hub / HUB_REPO / "refs").mkdir()
    (hub / HUB_REPO / "refs" / "main").write_text(REVISION)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    checkpoint = snapshot / "open_clip_model.safetensors"
    save_file(state, str(checkpoint))
    return hub, checkpoint, {k: v.float() for k, v in state.items()}


@pytest.fixture
def offline_hub(openai_hub, monkeypatch):
    import huggingface_hub.constants as hf_constants

    hub, checkpoint, state = openai_hub
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub, checkpoint, state


def reference_visual(state: dict, quick_gelu: bool):
    """The image tower built by open_clip directly (not by clipcull) with the given activation."""
    import open_clip

    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=quick_gelu)
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.slow
def test_finetuned_from_openai_tag_reloads_with_quickgelu(offline_hub, tmp_path):
    from clip_cull.model.encoder import ModelSpec, load_encoder
    from clip_cull.research.finetune import AvaImages, FinetuneSettings, train_finetune
    from clip_cull.model.heads.finetuned import load_finetuned, trained_architecture, uses_quick_gelu
    from safetensors.torch import load_file

    _, _, state = offline_hub
    encoder = load_encoder(ModelSpec("ViT-B-32", "openai"), "cpu")  # open_clip's own tag path
    assert uses_quick_gelu(encoder.model)  # the tag says QuickGELU and clipcull honours it
    rng = np.random.default_rng(1)
    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    targets = np.full((2, 10), 0.1)
    data = AvaImages(paths, targets, encoder.preprocess)
    meta = {"architecture": "ViT-B-32", "model_config": trained_architecture("ViT-B-32", encoder.model),
            "backbone": "ViT-B-32/openai"}
    out = tmp_path / "ft"
    train_finetune(encoder, data, data, out, FinetuneSettings(max_epochs=1, batch_size=2), meta)
    assert json.loads((out / "head.json").read_text())["model_config"]["quick_gelu"] is True

    pixels = torch.from_numpy(rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32))
    saved = load_file(str(out / "model.safetensors"))
    trained_state = dict(state)
    trained_state.update({k: v for k, v in saved.items() if k.startswith("visual.")})
    head_w, head_b = saved["head.weight"].double().numpy(), saved["head.bias"].double().numpy()

    ref = reference_visual(trained_state, True)
    ref.visual.proj = None

    def expected() -> np.ndarray:
        with torch.no_grad():
            pooled = ref.visual(pixels).double().numpy()
        logits = pooled @ head_w.T + head_b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    loaded = load_finetuned(out)
    assert uses_quick_gelu(loaded.model)
    got = loaded.encode_images(pixels)[0]
    quick = expected()
    for block in ref.visual.transformer.resblocks:  # the same network with GELU instead
        block.mlp.gelu = torch.nn.GELU()
    gelu = expected()
    assert np.abs(quick - gelu).max() > 1e-4  # the activation matters: the check below can fail
    np.testing.assert_allclose(got, quick, atol=2e-6)


def test_old_head_json_without_the_activation_is_inferred_from_what_it_was_trained_from():
    from clip_cull.model.heads.finetuned import recorded_quick_gelu

    config = {"embed_dim": 512}  # what head.json held before: open_clip's config, no quick_gelu key
    assert recorded_quick_gelu({"architecture": "ViT-B-32", "model_config": config, "backbone": "ViT-B-32/openai"})
    assert recorded_quick_gelu({"architecture": "ViT-B-32", "model_config": config,
                                "backbone": "ViT-B-32/laion400m_e32"})  # open_clip loads that tag with QuickGELU
    assert not recorded_quick_gelu({"architecture": "ViT-B-32", "model_config": config,
                                    "backbone": "ViT-B-32/laion2b_s34b_b79k"})
    assert not recorded_quick_gelu({"architecture": "ViT-B-32", "model_config": config,
                                    "backbone": "ViT-B-32@sha256:00ff"})  # a file: loaded with GELU then
    assert recorded_quick_gelu({"architecture": "ViT-B-32-quickgelu", "model_config": config,
                                "backbone": "ViT-B-32-quickgelu@sha256:00ff"})
    assert not recorded_quick_gelu({"architecture": "ViT-B-32", "backbone": "ViT-B-32/openai",
                                    "model_config": {**config, "quick_gelu": False}})  # recorded wins


@pytest.mark.slow
def test_openai_weights_from_a_file_run_with_quickgelu_under_plain_vit_b_32(offline_hub):
    from clip_cull.model.encoder import ModelSpec, load_encoder, model_identity, openai_checkpoint_reason
    from clip_cull.model.heads.finetuned import uses_quick_gelu

    _, checkpoint, state = offline_hub
    spec = ModelSpec("ViT-B-32", str(checkpoint))
    assert openai_checkpoint_reason(spec) == "its path names OpenAI"
    encoder = load_encoder(spec, "cpu")
    assert uses_quick_gelu(encoder.model)
    pixels = torch.from_numpy(np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        want = reference_visual(state, True).encode_image(pixels).numpy()
    np.testing.assert_allclose(encoder.encode_images(pixels)[0], want, atol=2e-5)
    # Embeddings are keyed by the network that runs: the same as naming -quickgelu explicitly.
    assert model_identity(spec, "abc") == model_identity(ModelSpec("ViT-B-32-quickgelu", str(checkpoint)), "abc")
    assert model_identity(ModelSpec("ViT-B-32", "/models/laion-b32.safetensors"), "abc") == "ViT-B-32@sha256:abc"
