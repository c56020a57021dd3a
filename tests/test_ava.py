"""AVA reproduction: dataset arithmetic, metrics, the linear probe, the prompt search, head
files, LAION heads, and `clipcull train` / `clipcull eval` on a synthetic mini-AVA."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from clip_cull.research.ava import binary_labels, load_ava, make_split, mean_scores, read_ids
from clip_cull.model.heads import load_head, resolve_head
from clip_cull.model.heads.files import HeadError, check_backbone, save_head
from clip_cull.model.heads.linear import choose_ridge_alpha, fit_linear, probe_head
from clip_cull.model.heads.prompt import PromptHead, adjective_prompts
from clip_cull.research.metrics import evaluate, pearson, rankdata, spearman
from clip_cull.model.prompts import negative_adjectives, positive_adjectives
from clip_cull.research.train import best_pair, search_prompts
from helpers import run, usage_error


# --- arithmetic and metrics ---------------------------------------------------------------------


def test_mean_score_and_label_arithmetic(tmp_path):
    counts = np.array([[0, 0, 0, 0, 10, 0, 0, 0, 0, 0],  # mean exactly 5: negative
                       [1, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # (1 + 10) / 2 = 5.5
                       [0, 2, 0, 0, 0, 0, 0, 1, 0, 0]])  # (4 + 8) / 3 = 4
    np.testing.assert_allclose(mean_scores(counts), [5.0, 5.5, 4.0])
    assert binary_labels(mean_scores(counts)).tolist() == [False, True, False]


def test_ava_folder_is_read_with_missing_images_counted(mini_ava):
    ava = load_ava(mini_ava)
    assert len(ava.ids) == 63 and ava.counts.shape == (63, 10)
    assert sum(p is None for p in ava.paths) == 3
    assert read_ids(mini_ava / "test_ids.txt")[:3] == ["1000", "1003", "1006"]
    split = make_split(ava, read_ids(mini_ava / "test_ids.txt"))
    assert len(split.test) == 21 and split.source == "files"
    assert not set(split.test) & set(split.train) and not set(split.validation) & set(split.train)
    assert len(split.train) + len(split.validation) + len(split.test) == 63


def test_random_split_is_seeded_and_the_papers_size():
    from clip_cull.research.ava import AvaSet

    ids = [str(i) for i in range(255_530)]
    ava = AvaSet(Path("."), ids, np.ones((len(ids), 10), int), [None] * len(ids))
    a, b = make_split(ava, seed=3), make_split(ava, seed=3)
    assert len(a.test) == 25_551 and a.test == b.test
    assert make_split(ava, seed=4).test != a.test


def test_metrics_equal_scipys():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 20, 300).astype(float)  # many ties
    b = a + rng.normal(0, 5, 300)
    np.testing.assert_allclose(rankdata(a), scipy.stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b).statistic, abs=1e-12)
    means = rng.uniform(2, 8, 300)
    result = evaluate(means > 5.2, means + rng.normal(0, 1, 300), means, resamples=200)
    assert result.accuracy.value == pytest.approx(np.mean((means > 5.2) == (means > 5)))
    assert result.accuracy.low <= result.accuracy.value <= result.accuracy.high
    assert result.spearman.low < result.spearman.value < result.spearman.high and result.n == 300


# --- linear probe ---------------------------------------------------------------------------------


def test_linear_probe_recovers_a_planted_linear_signal():
    rng = np.random.default_rng(2)
    x = rng.normal(3, 2, (500, 8))
    w, b = rng.normal(0, 1, 8), 4.0
    y = x @ w + b
    fit = fit_linear(x, y)
    pred = ((x - fit.mean) / fit.std) @ fit.weights + fit.bias
    np.testing.assert_allclose(pred, y, atol=1e-8)
    np.testing.assert_allclose(fit.weights / fit.std, w, atol=1e-8)  # back on the raw scale
    head = probe_head(fit, "projected", "m")
    scores, labels = head.score(x)
    np.testing.assert_allclose(scores, y, atol=1e-8)
    assert labels == ["aesthetic" if v > 5 else "not aesthetic" for v in y]


def test_ridge_strength_is_chosen_by_cross_validation_and_groups_stay_together():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (60, 40))  # few labels, many features: least squares overfits
    y = x[:, 0] + rng.normal(0, 1, 60)
    alpha, errors = choose_ridge_alpha(x, y)
    assert errors[alpha] == min(errors.values()) and alpha > min(errors)
    from clip_cull.model.heads.linear import fold_assignment

    groups = np.repeat(np.arange(12), 5)  # 12 bursts of 5
    folds = fold_assignment(60, 5, groups, 0)
    for g in range(12):
        assert len(set(folds[groups == g])) == 1


# --- prompt search ----------------------------------------------------------------------------------


def test_prompt_search_picks_the_planted_pair():
    rng = np.random.default_rng(4)
    dim, n = 16, 400
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(n, dim))
    means = 5 + 1.5 * (x @ direction) / np.std(x @ direction)
    vectors = {}
    for adjective in [*positive_adjectives(), *negative_adjectives()]:
        planted = {"smashing": direction, "vile": -direction}.get(adjective)
        for kind in ("fixed", "context"):
            for prompt in adjective_prompts(kind, adjective):
                noise = rng.normal(size=dim)
                vectors[prompt] = (planted * 3 + 0.3 * noise) if planted is not None else noise
    results = search_prompts(x, means, vectors, list(positive_adjectives()), list(negative_adjectives()))
    for kind in ("fixed", "context", "ensemble"):
        for criterion in ("spearman", "accuracy"):
            chosen = best_pair(results, kind, criterion)
            assert (chosen.positive, chosen.negative) == ("smashing", "vile"), (kind, criterion)
    assert len(results) == 3 * 27 * 12


def test_context_head_sums_all_prompts_and_labels_by_the_closest():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 8))
    head = PromptHead("context", "great", "ugly")
    vectors = {p: rng.normal(size=8) for p in head.prompts()}
    scores, labels = head.score(x, vectors)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos = np.stack([vectors[p] for p in head.prompts()[:1000]])
    neg = np.stack([vectors[p] for p in head.prompts()[1000:]])
    cos_p = unit @ (pos / np.linalg.norm(pos, axis=1, keepdims=True)).T
    cos_n = unit @ (neg / np.linalg.norm(neg, axis=1, keepdims=True)).T
    np.testing.assert_allclose(scores, cos_p.sum(1) - cos_n.sum(1), rtol=1e-4)
    assert labels == ["aesthetic" if a >= b else "not aesthetic" for a, b in zip(cos_p.max(1), cos_n.max(1))]


# --- head files and LAION heads -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_head_files_round_trip_with_metadata(tmp_path, suffix):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 6))
    fit = fit_linear(x, x[:, 0] * 2 + 5)
    head = probe_head(fit, "pooled", "ViT-B-32/openai")
    path = save_head(head, tmp_path / f"probe{suffix}", {"dataset": "ava", "images": 50}, {"n": 10})
    loaded = load_head(path)
    assert (loaded.features, loaded.backbone) == ("pooled", "ViT-B-32/openai")
    assert loaded.metadata["trained_on"] == {"dataset": "ava", "images": 50} and loaded.metadata["eval"] == {"n": 10}
    np.testing.assert_allclose(loaded.score(x)[0], head.score(x)[0], rtol=1e-5)
    prompt = load_head(save_head(PromptHead("fixed", "smashing", "vile"), tmp_path / f"p{suffix}"))
    assert prompt == PromptHead("fixed", "smashing", "vile")


def test_head_for_another_backbone_is_refused():
    head = probe_head(fit_linear(np.eye(4), np.arange(4.0)), "projected", "ViT-L-14/openai")
    with pytest.raises(HeadError, match="made for the model ViT-L-14/openai"):
        check_backbone(head, "ViT-B-32/openai", "ViT-B-32", 4)
    check_backbone(head, "ViT-L-14/openai", "ViT-L-14", 4)
    with pytest.raises(HeadError, match="takes 4-d"):
        check_backbone(head, "ViT-L-14/openai", "ViT-L-14", 8)


def test_laion_linear_head_normalises_its_input(tmp_path):
    w = torch.randn(1, 16)
    b = torch.tensor([5.0])
    path = tmp_path / "sa_0_4_vit_b_32_linear.pth"
    torch.save({"weight": w, "bias": b}, path)
    head = resolve_head(str(path))
    x = np.random.default_rng(7).normal(size=(4, 16)) * 10
    expected = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ w.numpy().T[:, 0] + 5.0
    np.testing.assert_allclose(head.score(x)[0], expected, rtol=1e-5)
    assert head.backbone == "arch:ViT-B-32"
    with pytest.raises(HeadError, match="made for ViT-B-32 embeddings"):
        check_backbone(head, "ViT-L-14/openai", "ViT-L-14", 16)


def test_improved_laion_mlp_chains_its_linear_layers(tmp_path):
    sizes = [12, 10, 6, 4, 3, 1]
    layers = {0: (10, 12), 2: (6, 10), 4: (4, 6), 6: (3, 4), 7: (1, 3)}
    state = {}
    for i, (out, inp) in layers.items():
        state[f"layers.{i}.weight"] = torch.randn(out, inp)
        state[f"layers.{i}.bias"] = torch.randn(out)
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(state, path)
    head = load_head(path)
    x = np.random.default_rng(8).normal(size=(3, sizes[0]))
    h = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in sorted(layers):
        h = h @ state[f"layers.{i}.weight"].numpy().T + state[f"layers.{i}.bias"].numpy()
    np.testing.assert_allclose(head.score(x)[0], h[:, 0], rtol=1e-4)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pth_head_with_a_pickle_payload_is_refused_without_running(tmp_path, pickle_payload):
    write, marker = pickle_payload
    path = write(tmp_path / "evil.pth", "weight")
    with pytest.raises(HeadError, match="refused|cannot read"):
        load_head(path)
    assert not marker.exists()


# --- the commands on a mini-AVA -------------------------------------------------------------------------


def test_train_linear_then_eval_and_rank_with_the_head(tiny_env, mini_ava, tmp_path, photo_folder):
    out = tmp_path / "heads" / "probe.safetensors"
    result = run("train", "linear", mini_ava, "-o", out, "--test-ids", mini_ava / "test_ids.txt", "--ridge", "auto")
    assert result.exit_code == 0, result.stderr
    split = json.loads((out.parent / "probe.split.json").read_text())
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (38, 4, 21)
    missing_in_train = len({"1061", "1062"} & set(split["train"]))  # images 60-62 are missing; 1060 is a test id
    used = 38 - missing_in_train
    assert f"train: {used} images used, {missing_in_train} missing" in result.stderr
    assert "test: 20 images used, 1 missing" in result.stderr
    head = load_head(out)
    assert head.features == "pooled" and head.metadata["trained_on"]["images"] == used
    assert head.metadata["eval"]["n"] == 20

    evaluation = run("eval", mini_ava, "--head", out, "--split", out.parent / "probe.split.json", "--json", "--resamples", "50")
    assert evaluation.exit_code == 0, evaluation.stderr
    rows = [json.loads(line) for line in evaluation.stdout.splitlines()]
    assert [r["method"] for r in rows] == ["majority baseline", "linear(pooled)"]
    assert rows[1]["n"] == 20 and rows[1]["paper"]["row"] == "linear probe CLIP"
    assert rows[1]["accuracy"]["value"] == pytest.approx(head.metadata["eval"]["accuracy"]["value"])
    assert rows[0]["paper"]["accuracy"] == 0.703

    ranked = run("rank", photo_folder, "--head", out, "--json")
    assert ranked.exit_code == 0, ranked.stderr
    assert len(ranked.stdout.splitlines()) == 8


def test_head_for_another_model_is_refused_by_rank(tiny_env, photo_folder, tmp_path):
    head = probe_head(fit_linear(np.random.default_rng(0).normal(size=(20, 32)), np.arange(20.0)), "pooled", "ViT-L-14/openai")
    path = save_head(head, tmp_path / "other.safetensors")
    result = run("rank", photo_folder, "--head", path)
    assert result.exit_code == 1
    assert "was made for the model ViT-L-14/openai" in result.stderr and "Traceback" not in result.stderr


def test_eval_all_prints_the_papers_table_layout(tiny_env, mini_ava):
    result = run("eval", mini_ava, "--all", "--test-ids", mini_ava / "test_ids.txt", "--resamples", "20", "--json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["method"] for r in rows] == [
        "majority baseline", "fixed (paper's pairs, code scoring)", "context (paper's pairs, code scoring)",
        "ensemble (paper's pairs, code scoring)", "linear probe (pooled, CV ridge, fit on train)",
    ]
    assert [r["paper"]["row"] for r in rows] == [
        "majority baseline", "fixed prompt CLIP", "context-aware prompt CLIP", "ensemble prompt CLIP", "linear probe CLIP",
    ]
    assert all(r["n"] == 20 for r in rows)


def test_eval_all_refuses_unknown_probe_features_before_any_work(tiny_env, mini_ava):
    usage_error(run("eval", mini_ava, "--all", "--features", "nope"), "--features is pooled or projected")
    ignored = run("eval", mini_ava, "--head", "fixed", "--features", "nope", "--resamples", "5")  # no probe: unread
    assert ignored.exit_code == 0, ignored.stderr


def test_train_prompts_searches_every_pair_and_writes_the_chosen_head(tiny_env, mini_ava, tmp_path):
    out = tmp_path / "prompt.safetensors"
    result = run("train", "prompts", mini_ava, "-o", out, "--kind", "fixed", "--criterion", "accuracy", "--top", "2")
    assert result.exit_code == 0, result.stderr
    head = load_head(out)
    assert isinstance(head, PromptHead) and head.kind == "fixed"
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        meta = json.loads(f.metadata()["clipcull"])
    assert meta["trained_on"]["criterion"] == "accuracy"
    body = [line for line in result.stdout.splitlines() if line.strip().startswith(("fixed", "context", "ensemble"))]
    assert len(body) == 6  # two pairs for each of the three kinds
    top_fixed = [cell.strip() for cell in body[0].split("│")]
    assert (top_fixed[1], top_fixed[2]) == (head.positive, head.negative)
    assert float(top_fixed[3]) == pytest.approx(meta["trained_on"]["train_accuracy"], abs=1e-4)
