"""Reproduction exactness (issue 14): DDP batch, probes on small data, the authors' prompt
scoring, the exact AVA path and its own cache key, absolute AVA paths, the fitting set,
full-precision rank output, LAION heads under -quickgelu, and merging per-process caches."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from PIL import Image

from clip_cull.core.errors import ClipCullError
from helpers import run


# --- 2. DDP keeps the paper's total batch ------------------------------------------------------


def test_total_batch_is_divided_among_processes_and_a_remainder_is_refused():
    from clip_cull.research.finetune import per_process_batch

    assert [per_process_batch(128, w) for w in (1, 2, 4, 8)] == [128, 64, 32, 16]
    with pytest.raises(ClipCullError, match="does not divide among 3 processes"):
        per_process_batch(128, 3)


# --- 3. the default probe does not collapse on small data --------------------------------------


def planted(n=1000, d=768, seed=0):
    """AVA-like: mean scores around 5.4 driven by a direction in 768-d features, plus noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    features = latent @ rng.normal(size=(8, d)) + 4 * rng.normal(size=(n, d))
    means = 5.4 + 0.6 * latent[:, 0] + 0.4 * latent[:, 1] + 0.1 * rng.normal(size=n)
    return features * rng.uniform(0.5, 3.0, d) + rng.normal(0, 2, d), means


def test_default_probe_is_cross_validated_ridge_and_sound_with_fewer_images_than_features():
    from clip_cull.research.train import fit_probe

    x, y = planted()
    train, test = slice(0, 700), slice(700, None)  # 700 training images, 768 features
    fit = fit_probe(x[train], y[train])
    assert fit.alpha > 0

    # Independently: 5-fold CV over the same grid, ridge through each fold's SVD (scipy), then
    # the final ridge as an augmented least-squares problem.
    alphas = np.logspace(-2, 5, 15) * 700 / 1000
    folds = np.random.default_rng(0).permutation(700) % 5
    xt, yt = x[train], y[train]
    errors = np.zeros(len(alphas))
    for k in range(5):
        tr, te = folds != k, folds == k
        mu, sd = xt[tr].mean(0), xt[tr].std(0)
        u, sv, vt = scipy.linalg.svd((xt[tr] - mu) / sd, full_matrices=False)
        uty = u.T @ (yt[tr] - yt[tr].mean())
        for i, a in enumerate(alphas):
            w = vt.T @ (sv / (sv**2 + a) * uty)
            errors[i] += np.sum(((xt[te] - mu) / sd @ w + yt[tr].mean() - yt[te]) ** 2)
    assert fit.alpha == pytest.approx(alphas[int(np.argmin(errors))])
    mu, sd = xt.mean(0), xt.std(0)
    aug = np.vstack([(xt - mu) / sd, np.sqrt(fit.alpha) * np.eye(768)])
    w = scipy.linalg.lstsq(aug, np.concatenate([yt - yt.mean(), np.zeros(768)]))[0]
    expected = (x[test] - mu) / sd @ w + yt.mean()
    ours = (x[test] - fit.mean) / fit.std @ fit.weights + fit.bias
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-7)
    srcc_default = scipy.stats.spearmanr(ours, y[test])[0]
    assert srcc_default > 0.9

    # The paper's exact least squares (--ridge 0 / --ols): the minimum-norm solution, which collapses here.
    ols = fit_probe(xt, yt, 0)
    design = np.hstack([(xt - mu) / sd, np.ones((700, 1))])
    coef = np.linalg.pinv(design) @ yt
    ols_pred = (x[test] - ols.mean) / ols.std @ ols.weights + ols.bias
    np.testing.assert_allclose(ols_pred, np.hstack([(x[test] - mu) / sd, np.ones((300, 1))]) @ coef, atol=1e-6)
    assert scipy.stats.spearmanr(ols_pred, y[test])[0] < srcc_default - 0.1


WIDE_CONFIG = {  # one 768-wide layer: pooled features as wide as ViT-B/32's, built in a second
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 768, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def wide_ava(tmp_path, monkeypatch):
    """1,000 AVA-format images whose mean score follows their brightness, and a random model
    with 768-d pooled features selected through the environment."""
    import open_clip
    import torch

    from helpers import counts_for_mean

    config = tmp_path / "clipcull-test-wide768.json"
    config.write_text(json.dumps(WIDE_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = tmp_path / "wide.pt"
    torch.save(open_clip.create_model(config.stem, pretrained=None).state_dict(), checkpoint)
    monkeypatch.setenv("CLIPCULL_MODEL", str(config))
    monkeypatch.setenv("CLIPCULL_PRETRAINED", str(checkpoint))
    ava = tmp_path / "ava"
    (ava / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1000):
        brightness, tint = rng.uniform(20, 235), rng.uniform(0.7, 1.3, 3)
        pixels = np.clip(rng.normal(brightness, 25, (40, 40, 3)) * tint, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(ava / "images" / f"{i + 1}.jpg", quality=95)
        lines.append(" ".join(map(str, [i + 1, i + 1, *counts_for_mean(2 + 6 * (brightness - 20) / 215), 0, 0, 1])))
    (ava / "AVA.txt").write_text("\n".join(lines) + "\n")
    return ava, config, checkpoint


@pytest.mark.slow
def test_default_train_linear_does_not_collapse_on_a_1000_image_ava_set(wide_ava, tmp_path):
    """Fewer training images (630) than pooled features (768): least squares collapses, the
    default (CV ridge) does not; its figure equals a scipy fit on the same cached features."""
    from clip_cull.research.ava import load_ava
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.model.heads import load_head
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store

    ava_dir, config, checkpoint = wide_ava
    common = ["train", "linear", ava_dir, "--test-fraction", "0.3"]
    default = run(*common, "-o", tmp_path / "cv.safetensors")
    ols = run(*common, "-o", tmp_path / "ols.safetensors", "--ols")
    assert default.exit_code == 0 and ols.exit_code == 0, default.stderr + ols.stderr
    cv_head, ols_head = load_head(tmp_path / "cv.safetensors"), load_head(tmp_path / "ols.safetensors")
    alpha = cv_head.metadata["trained_on"]["ridge_alpha"]
    assert alpha > 0 and ols_head.metadata["trained_on"]["ridge_alpha"] == 0
    cv_srcc = cv_head.metadata["eval"]["spearman"]["value"]
    ols_srcc = ols_head.metadata["eval"]["spearman"]["value"]
    assert cv_srcc > 0.85 and ols_srcc < cv_srcc - 0.15

    # Independently: the cached exact pooled features, ridge at the recorded strength via scipy's SVD.
    split = json.loads((tmp_path / "cv.split.json").read_text())
    ava = load_ava(ava_dir)
    where = ava.index()
    store = Store.open(os.environ["CLIPCULL_DB"])
    model_id = ModelSession(ModelSpec(str(config), str(checkpoint)), store).model_id + "|exact"

    def features(ids):
        records = store.file_records([str(ava.paths[where[i]]) for i in ids])
        vectors = store.embeddings([r.fingerprint for r in records.values()], model_id, "pooled")
        x = np.stack([vectors[records[str(ava.paths[where[i]])].fingerprint] for i in ids]).astype(np.float64)
        return x, ava.means[[where[i] for i in ids]]

    (xt, yt), (xs, ys) = features(split["train"]), features(split["test"])
    store.close()
    assert xt.shape == (630, 768)
    mu, sd = xt.mean(0), xt.std(0)
    sd[sd <= 1e-12] = 1.0
    u, sv, vt = scipy.linalg.svd((xt - mu) / sd, full_matrices=False)
    w = vt.T @ (sv / (sv**2 + alpha) * (u.T @ (yt - yt.mean())))
    expected = scipy.stats.spearmanr((xs - mu) / sd @ w + yt.mean(), ys)[0]
    assert cv_srcc == pytest.approx(expected, abs=1e-6)


def test_train_linear_records_cv_ridge_by_default_and_ols_on_request(tiny_env, mini_ava, tmp_path):
    from clip_cull.model.heads import load_head

    common = ["train", "linear", mini_ava, "--test-ids", mini_ava / "test_ids.txt", "--features", "projected"]
    default = run(*common, "-o", tmp_path / "cv.safetensors")
    ols = run(*common, "-o", tmp_path / "ols.safetensors", "--ols")
    assert default.exit_code == 0 and ols.exit_code == 0, default.stderr + ols.stderr
    assert load_head(tmp_path / "cv.safetensors").metadata["trained_on"]["ridge_alpha"] > 0
    assert load_head(tmp_path / "ols.safetensors").metadata["trained_on"]["ridge_alpha"] == 0


# --- 4. the authors' code scoring of prompts ------------------------------------------------------


def test_code_prompt_scoring_is_100_times_raw_dot_products_and_ensemble_is_context_over_1000():
    from clip_cull.model.heads.prompt import PromptHead, adjective_prompts

    rng = np.random.default_rng(3)
    images = rng.normal(size=(40, 16)).astype(np.float32)
    vectors = {}
    for adj in ("outstanding", "horrible"):
        for p in adjective_prompts("context", adj) + adjective_prompts("fixed", adj):
            vectors[p] = (rng.normal(size=16) * rng.uniform(0.5, 4)).astype(np.float32)
    unit = images.astype(np.float64) / np.linalg.norm(images.astype(np.float64), axis=1, keepdims=True)

    def raw(kind, adj):
        return np.array([vectors[p] for p in adjective_prompts(kind, adj)], np.float64)

    code_context = 100 * (unit @ raw("context", "outstanding").sum(0) - unit @ raw("context", "horrible").sum(0))
    code_ensemble = 100 * (unit @ raw("context", "outstanding").mean(0) - unit @ raw("context", "horrible").mean(0))
    code_fixed = 100 * (unit @ raw("fixed", "outstanding")[0] - unit @ raw("fixed", "horrible")[0])
    np.testing.assert_allclose(code_ensemble, code_context / 1000, rtol=1e-9)
    for kind, want in (("context", code_context), ("ensemble", code_ensemble), ("fixed", code_fixed)):
        got, _ = PromptHead(kind, "outstanding", "horrible", scoring="code").score(images, vectors)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)

    def unit_rows(m):
        return m / np.linalg.norm(m, axis=-1, keepdims=True)

    paper_ensemble = unit @ unit_rows(raw("context", "outstanding").mean(0)) - unit @ unit_rows(raw("context", "horrible").mean(0))
    got, labels = PromptHead("ensemble", "outstanding", "horrible").score(images, vectors)
    np.testing.assert_allclose(got, paper_ensemble, atol=1e-5)
    _, code_labels = PromptHead("ensemble", "outstanding", "horrible", scoring="code").score(images, vectors)
    assert code_labels == labels  # labels do not depend on the scoring


def test_prompt_head_file_keeps_its_scoring(tmp_path):
    from clip_cull.model.heads import load_head
    from clip_cull.model.heads.files import save_head
    from clip_cull.model.heads.prompt import PromptHead

    path = save_head(PromptHead("context", "smashing", "horrible", scoring="code"), tmp_path / "h.safetensors")
    assert load_head(path).scoring == "code"


# --- 5, 6. the exact AVA path and its cache key -----------------------------------------------------


@pytest.fixture
def odd_ava(tmp_path):
    """An AVA folder with a 4:1 panorama, a JPEG stored sideways with EXIF orientation 6 (set by
    exiftool), and an ordinary one."""
    from helpers import counts_for_mean, make_photo

    folder = tmp_path / "ava"
    make_photo(folder / "images" / "1.jpg", seed=1, size=(400, 100))
    rotated = make_photo(folder / "images" / "2.jpg", seed=2, size=(90, 60))
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Orientation=6", "-n", str(rotated)], check=True, timeout=60)
    make_photo(folder / "images" / "3.jpg", seed=3, size=(80, 80))
    lines = [" ".join(map(str, [i, i, *counts_for_mean(4 + i), 0, 0, 1])) for i in (1, 2, 3)]
    (folder / "AVA.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_exact_path_feeds_the_model_exactly_open_clips_preprocess_of_image_open(tiny_model_files, odd_ava, tmp_path):
    import open_clip

    from clip_cull.research.ava import load_ava
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.scoring.indexer import IndexOptions, index_photos
    from clip_cull.model.session import ModelSession
    from clip_cull.core.files import FileStat
    from clip_cull.store.cache import Store
    from clip_cull.research.train import ava_features

    config, checkpoint = tiny_model_files
    exif = subprocess.run(["exiftool", "-s3", "-n", "-Orientation", str(odd_ava / "images" / "2.jpg")],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    assert exif == "6"
    store = Store.open(tmp_path / "c.db")
    session = ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu")
    seen = []
    original = session.encoder.encode_images
    session.encoder.encode_images = lambda pixels: (seen.append(pixels.numpy().copy()), original(pixels))[1]
    squares = session.encoder.encode_squares  # the fast path: uint8 squares, normalised where the model runs
    session.encoder.encode_squares = lambda batch: (
        seen.append(session.encoder.square_preprocess.normalise(batch)), squares(batch))[1]

    ava = load_ava(odd_ava)
    got = ava_features(store, session, ava, ava.ids, "projected")
    assert got.ids == ["1", "2", "3"]
    fed = np.concatenate(seen)
    _, _, preprocess = open_clip.create_model_and_transforms(config.stem, pretrained=str(checkpoint))
    for path in ava.paths:  # the authors' code: preprocess(Image.open(path).convert("RGB")), nothing else
        want = preprocess(Image.open(path).convert("RGB")).numpy()
        assert any(np.array_equal(row, want) for row in fed), path.name

    # Photographer's path (rank): rotation applied, fast preprocessing, embeddings under the bare key.
    seen.clear()
    photos = [FileStat(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in ava.paths]
    report = index_photos(store, photos, session, IndexOptions(workers=1, quality=False))
    assert report.embedded == 3  # exact embeddings are never reused by rank
    upright = np.asarray(Image.open(ava.paths[1]).transpose(Image.Transpose.ROTATE_270))
    assert upright.shape[:2] == (90, 60)  # portrait once EXIF orientation 6 is applied
    fed_fast = np.concatenate(seen)
    sideways = preprocess(Image.open(ava.paths[1]).convert("RGB")).numpy()
    assert not any(np.allclose(row, sideways, atol=1e-3) for row in fed_fast)
    keys = {r[0]: r[1] for r in sqlite3.connect(tmp_path / "c.db").execute(
        "select model_id, count(*) from embeddings group by model_id")}
    assert keys == {session.model_id: 3, session.model_id + "|exact": 3}

    # Warm: neither path embeds again, and the exact features come from the exact rows.
    seen.clear()
    again = ava_features(store, session, ava, ava.ids, "projected")
    assert seen == [] and np.array_equal(again.features, got.features)
    store.close()


def test_ava_rows_from_a_relative_folder_are_stored_as_absolute_paths(tiny_model_files, odd_ava, monkeypatch, tmp_path):
    from clip_cull.research.ava import load_ava
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store
    from clip_cull.research.train import ava_features

    config, checkpoint = tiny_model_files
    monkeypatch.chdir(odd_ava.parent)
    ava = load_ava("ava")
    assert [str(p) for p in ava.paths] == [os.path.join(str(odd_ava), "images", f"{i}.jpg") for i in (1, 2, 3)]
    store = Store.open(tmp_path / "c.db")
    ava_features(store, ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu"), ava, ava.ids)
    store.close()
    stored = sorted(r[0] for r in sqlite3.connect(tmp_path / "c.db").execute("select path from files"))
    assert stored == sorted(str(odd_ava / "images" / f"{i}.jpg") for i in (1, 2, 3))


# --- 7. LAION heads name an embedding space ---------------------------------------------------------


def test_laion_vit_b_32_head_is_accepted_under_the_quickgelu_spelling(tmp_path):
    import torch

    from clip_cull.model.heads import load_head
    from clip_cull.model.heads.files import HeadError, check_backbone

    path = tmp_path / "sa_0_4_vit_b_32_linear.pth"
    torch.save({"weight": torch.ones(1, 512), "bias": torch.zeros(1)}, path)
    head = load_head(path)
    check_backbone(head, "ViT-B-32-quickgelu@sha256:ab", "ViT-B-32-quickgelu", 512)
    check_backbone(head, "ViT-B-32/openai", "ViT-B-32", 512)
    with pytest.raises(HeadError, match="made for ViT-B-32 embeddings"):
        check_backbone(head, "ViT-B-16/openai", "ViT-B-16", 512)


def test_openai_checkpoint_is_recognised_by_its_path_or_published_hash(tmp_path):
    from clip_cull.model.encoder import ModelSpec, openai_checkpoint_reason

    assert openai_checkpoint_reason(ModelSpec("ViT-B-32", "/m/openai-vit-b-32.safetensors")) == "its path names OpenAI"
    # The sha256 in OpenAI's download address (open_clip's `openai` URL for ViT-B-32).
    published = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    assert openai_checkpoint_reason(ModelSpec("ViT-B-32", "/m/ViT-B-32.pt"), published) is not None
    assert openai_checkpoint_reason(ModelSpec("ViT-B-32", "/m/laion2b.safetensors"), "00" * 32) is None
    assert openai_checkpoint_reason(ModelSpec("ViT-B-32-quickgelu", "/m/openai.pt")) is None  # already QuickGELU


# --- 9. loader workers ----------------------------------------------------------------------------


def test_loader_workers_default_to_the_cores_shared_among_local_processes():
    from clip_cull.research.finetune import default_loader_workers

    cores = len(os.sched_getaffinity(0))
    assert default_loader_workers({}) == cores
    assert default_loader_workers({"LOCAL_WORLD_SIZE": "2"}) == max(1, cores // 2)
    assert default_loader_workers({}, device_type="cpu") == 0  # workers would take cores from the model


# --- 10. fitting on the whole training CSV ---------------------------------------------------------


def test_fit_on_train_plus_validation_uses_the_whole_training_csv(tiny_env, mini_ava, tmp_path):
    from clip_cull.model.heads import load_head

    out = tmp_path / "all.safetensors"
    result = run("train", "linear", mini_ava, "-o", out, "--test-ids", mini_ava / "test_ids.txt",
                 "--features", "projected", "--fit-on", "train+validation")
    assert result.exit_code == 0, result.stderr
    split = json.loads((tmp_path / "all.split.json").read_text())
    listed = set(split["train"]) | set(split["validation"])
    on_disk = {p.stem for p in (mini_ava / "images").iterdir()}
    meta = load_head(out).metadata["trained_on"]
    assert meta["fit_on"] == "train+validation" and meta["images"] == len(listed & on_disk)
    assert len(listed & on_disk) > len(set(split["train"]) & on_disk)


# --- 11. full precision in rank's output --------------------------------------------------------------


def test_rank_json_and_csv_keep_full_float_precision(tiny_env, mini_ava, photo_folder, tmp_path):
    from safetensors import safe_open

    from clip_cull.model.encoder import ModelSpec
    from clip_cull.model.session import ModelSession
    from clip_cull.store.cache import Store

    head = tmp_path / "probe.safetensors"
    assert run("train", "linear", mini_ava, "-o", head, "--features", "projected").exit_code == 0
    ranked = run("rank", photo_folder, "--head", head, "--json")
    as_csv = run("rank", photo_folder, "--head", head, "--csv")
    assert ranked.exit_code == 0 and as_csv.exit_code == 0, ranked.stderr + as_csv.stderr
    rows = {r["path"]: r["score"] for r in map(json.loads, ranked.stdout.splitlines())}
    csv_rows = {r["path"]: float(r["score"]) for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert csv_rows == rows  # the same floats, bit for bit

    # The head's score computed here from the cached embeddings and the head file's own tensors.
    with safe_open(str(head), framework="np") as f:
        w, b = f.get_tensor("layers.0.weight")[0].astype(np.float64), float(f.get_tensor("layers.0.bias")[0])
        mean, std = f.get_tensor("mean"), f.get_tensor("std")
    config, checkpoint = tiny_env
    store = Store.open(os.environ["CLIPCULL_DB"])
    model_id = ModelSession(ModelSpec(str(config), str(checkpoint)), store).model_id
    records = store.file_records(list(rows))
    vectors = store.embeddings([r.fingerprint for r in records.values()], model_id, "projected")
    store.close()
    for path, score in rows.items():
        x = vectors[records[path].fingerprint].astype(np.float64)
        expected = float(((x - mean) / std) @ w + b)
        assert abs(score - expected) <= 1e-12 * max(1.0, abs(expected))
    assert any(len(repr(s).split(".")[-1]) > 6 for s in rows.values())  # more than 6 decimals survive


# --- 12. per-process cache files and `cache merge` -------------------------------------------------------


def embedding_rows(db: Path) -> set[tuple]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute("select fingerprint, model_id, projected, pooled from embeddings"))


@pytest.mark.slow
def test_two_processes_write_two_cache_files_and_merge_folds_them(tiny_env, photo_folder, tmp_path):
    a, b, merged = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "merged.db"
    base = [sys.executable, "-m", "clip_cull", "rank", str(photo_folder), "--device", "cpu"]
    procs = [subprocess.Popen([*base, "--shard", f"{k}/2", "--db", str(db)], stderr=subprocess.PIPE, text=True)
             for k, db in ((0, a), (1, b))]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
        p.stderr.close()
    rows_a, rows_b = embedding_rows(a), embedding_rows(b)
    assert len(rows_a) + len(rows_b) == 8 and not rows_a & rows_b

    first = run("cache", "merge", a, b, "--db", merged)
    assert first.exit_code == 0, first.stderr
    assert embedding_rows(merged) == rows_a | rows_b
    again = run("cache", "merge", a, b, "--db", merged)  # idempotent
    assert again.exit_code == 0 and "nothing new" in again.stderr
    assert embedding_rows(merged) == rows_a | rows_b
    with sqlite3.connect(merged) as conn:
        assert conn.execute("select count(*) from files").fetchone()[0] == 8
    ranked = run("rank", photo_folder, "--db", merged, "--json")
    assert ranked.exit_code == 0 and "0 embedded, 8 cached" in ranked.stderr
    assert len(ranked.stdout.splitlines()) == 8


def test_merge_refuses_a_missing_source_with_one_line(tmp_path):
    result = run("cache", "merge", tmp_path / "nope.db", "--db", tmp_path / "d.db")
    assert result.exit_code != 0 and "no cache file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_torchrun_with_per_process_cache_files_ranks_everything_on_process_0(tiny_env, photo_folder, tmp_path):
    pattern = str(tmp_path / "cache-{rank}.db")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "clip_cull", "rank", str(photo_folder), "--device", "cpu", "--db", pattern, "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len([l for l in result.stdout.splitlines() if l.startswith("{")]) == 8
    own, other = embedding_rows(tmp_path / "cache-0.db"), embedding_rows(tmp_path / "cache-1.db")
    assert 0 < len(other) < 8 and other <= own and len(own) == 8


def test_openai_release_hashes_match_open_clips_download_addresses():
    """The table that spares warm runs an import of open_clip holds what open_clip's `openai` tags say."""
    import open_clip

    from clip_cull.model.encoder import OPENAI_RELEASE_SHA256

    for arch, sha in OPENAI_RELEASE_SHA256.items():
        url = open_clip.get_pretrained_cfg(arch, "openai").get("url", "")
        assert f"/{sha}/" in url, (arch, url)
    openai_archs = {a for a, t in open_clip.list_pretrained() if t == "openai" and not a.endswith("-quickgelu")}
    assert openai_archs == set(OPENAI_RELEASE_SHA256)
