"""`clipcull rank` and `clipcull best` as a user runs them, and the paper's ensemble score
checked against an independent computation from the model's own embeddings."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import make_photo, run, usage_error

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def rank_json(*args):
    result = run("rank", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def independent_scores(tiny_model_files, paths, positive="outstanding", negative="horrible"):
    """The paper's ensemble score, computed with open_clip and numpy alone."""
    import open_clip
    import torch

    config, checkpoint = tiny_model_files
    model, _, preprocess = open_clip.create_model_and_transforms(config.stem, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(config.stem)
    classes = [c for c in (ASSETS / "imagenet_classes.txt").read_text().splitlines() if c]
    assert len(classes) == 1000
    with torch.no_grad():
        images = torch.stack([preprocess(ImageOps.exif_transpose(Image.open(p)).convert("RGB")) for p in paths])
        img = model.encode_image(images).numpy().astype(np.float64)
        ens = []
        for adjective in (positive, negative):
            prompts = [f"a {adjective} picture, of a #{c}" for c in classes]
            ens.append(model.encode_text(tokenizer(prompts)).numpy().astype(np.float64).mean(axis=0))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    t = np.stack(ens)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    cos = img @ t.T
    return cos[:, 0] - cos[:, 1]


def test_rank_scores_match_the_papers_formula(tiny_env, tiny_model_files, photo_folder):
    rows = rank_json(photo_folder)
    assert [r["rank"] for r in rows] == list(range(1, 9))
    expected = independent_scores(tiny_model_files, [r["path"] for r in rows])
    got = np.array([r["score"] for r in rows])
    np.testing.assert_allclose(got, expected, atol=2e-3)  # image vectors are cached as float16
    assert all(a >= b for a, b in zip(got, got[1:]))
    for r, e in zip(rows, expected):
        if abs(e) > 2e-3:
            assert r["label"] == ("aesthetic" if e > 0 else "not aesthetic")


def test_other_adjectives_change_the_prompts(tiny_env, tiny_model_files, photo_folder):
    rows = rank_json(photo_folder, "--positive", "beautiful", "--negative", "ugly")
    expected = independent_scores(tiny_model_files, [r["path"] for r in rows], "beautiful", "ugly")
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=2e-3)


def test_rank_table_csv_and_limit(tiny_env, photo_folder):
    table = run("rank", photo_folder, "--limit", "3")
    assert table.exit_code == 0
    body = [line for line in table.stdout.splitlines() if "IMG_" in line]
    assert len(body) == 3 and body[0].split()[0] == "1"
    assert "8 photos: 8 embedded, 0 cached" in table.stderr
    out = run("rank", photo_folder, "--csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 9)]
    assert "8 photos: 0 embedded, 8 cached" in out.stderr


def test_best_agrees_with_rank_and_remembers_the_folders(tiny_env, photo_folder):
    ranked = [r["path"] for r in rank_json(photo_folder)]
    result = run("best", "--top", "5")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ranked[:5]
    nul = run("best", "--top", "3", "--print0")
    assert nul.stdout.split("\0") == ranked[:3] + [""]


def test_best_embeds_new_photos_first(tiny_env, photo_folder):
    run("rank", photo_folder)
    make_photo(photo_folder / "new.jpg", seed=123)
    result = run("best", "--top", "100")
    assert str(photo_folder / "new.jpg") in result.stdout.splitlines()
    assert "9 photos: 1 embedded, 8 cached" in result.stderr


def test_best_without_folders_or_history_explains(tiny_env):
    result = run("best")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "clipcull: error: no folders given and no earlier `clipcull rank` to take them from: clipcull best FOLDER"
    )


def test_broken_files_are_one_line_each_and_the_run_goes_on(tiny_env, photo_folder):
    (photo_folder / "zero.jpg").write_bytes(b"")
    (photo_folder / "text.jpg").write_text("hello")
    data = (photo_folder / "IMG_0000.jpg").read_bytes()
    (photo_folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    result = run("rank", photo_folder, "--csv")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 9  # header + 8 photos
    lines = [l for l in result.stderr.splitlines() if l.startswith("clipcull: skipped")]
    assert sorted(lines) == sorted([
        f"clipcull: skipped {photo_folder / 'cut.jpg'}: file is truncated (incomplete download or copy?)",
        f"clipcull: skipped {photo_folder / 'text.jpg'}: not an image (or a format Pillow cannot read)",
        f"clipcull: skipped {photo_folder / 'zero.jpg'}: empty file (0 bytes)",
    ])
    assert "Traceback" not in result.stderr
    strict = run("rank", photo_folder, "--strict", "--json")
    assert strict.exit_code == 3
    failures = [json.loads(l) for l in strict.stderr.splitlines() if l.startswith("{")]
    assert sorted((Path(f["path"]).name, f["remembered"]) for f in failures) == [
        ("cut.jpg", True), ("text.jpg", True), ("zero.jpg", True)]
    assert next(f["error"] for f in failures if f["path"].endswith("zero.jpg")) == "empty file (0 bytes)"


def test_file_name_with_a_newline_stays_on_one_line(tiny_env, tmp_path):
    folder = tmp_path / "odd"
    make_photo(folder / "two\nlines.jpg", seed=5)
    (folder / "bad\nname.jpg").write_text("x")
    result = run("rank", folder, "--json")
    assert json.loads(result.stdout)["path"] == str(folder / "two\nlines.jpg")
    failures = [json.loads(l) for l in result.stderr.splitlines() if l.startswith("{")]
    assert [f["path"] for f in failures] == [str(folder / "bad\nname.jpg")]
    result = run("rank", folder)  # remembered: one summary line, not the file again
    assert [l for l in result.stderr.splitlines() if "unreadable since" in l or "skipped" in l] == [
        "clipcull: 1 file unreadable since an earlier run; --show-skipped lists them"]
    result = run("rank", folder, "--show-skipped")
    skipped = [l for l in result.stderr.splitlines() if "skipped" in l]
    assert skipped == [f"clipcull: skipped {folder}/bad\\nname.jpg: not an image (or a format Pillow cannot read)"
                       " (unchanged since an earlier run)"]


def test_missing_folder_is_one_clear_error(tiny_env, tmp_path):
    result = run("rank", tmp_path / "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"clipcull: error: no such file or folder: {tmp_path / 'nope'}"


def test_offline_default_weights_explain_what_to_do(photo_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run("rank", photo_folder)
    assert result.exit_code == 1
    assert "could not be fetched" in result.stderr and "--pretrained /path/to/" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("loading model ViT-B-32") == 1 and result.stderr.count("could not be fetched") == 1


def test_json_and_csv_together_is_a_usage_error(tiny_env, photo_folder):
    usage_error(run("rank", photo_folder, "--json", "--csv"), "Invalid value: choose one of --json and --csv")


def test_help_documents_exit_codes():
    result = run("rank", "--help")
    assert result.exit_code == 0
    assert "3 some photos could not be read" in " ".join(result.stdout.split())


def test_warm_best_never_imports_torch(tiny_env, photo_folder, private_cache):
    run("rank", photo_folder)
    code = (
        "import sys\n"
        "from clip_cull.cli import app\n"
        "try:\n"
        "    app(['best', '--top', '3'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules or 'open_clip' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "NO-TORCH"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "clip_cull", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("clipcull ")


def test_warm_rank_never_loads_the_model(tiny_env, photo_folder):
    run("rank", photo_folder)
    code = (
        "import sys\n"
        "from clip_cull.cli import app\n"
        "try:\n"
        "    app(['rank', sys.argv[1], '--json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules or 'open_clip' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(photo_folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "NO-TORCH"
    assert len(out.stdout.splitlines()) == 9


def test_heic_photos_are_ranked_with_the_extra(tiny_env, tmp_path):
    import pillow_heif  # installed by the test extra

    pillow_heif.register_heif_opener()
    folder = tmp_path / "phone"
    make_photo(folder / "IMG_0001.HEIC", seed=3, fmt="HEIF")
    make_photo(folder / "IMG_0002.jpg", seed=4)
    rows = rank_json(folder)
    assert sorted(Path(r["path"]).name for r in rows) == ["IMG_0001.HEIC", "IMG_0002.jpg"]


def test_heic_without_the_extra_is_one_hint_not_an_error(tiny_env, tmp_path, monkeypatch):
    monkeypatch.setattr("clip_cull.cli.scoring.heif_available", lambda: False)
    folder = tmp_path / "phone"
    for i in range(3):
        (folder / f"IMG_{i}.heic").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{i}.heic").write_bytes(b"x")
    make_photo(folder / "IMG_9.jpg", seed=4)
    result = run("rank", folder, "--strict", "--json")
    assert result.exit_code == 0
    hints = [l for l in result.stderr.splitlines() if "HEIC" in l]
    assert hints == [f"clipcull: skipped 3 HEIC/HEIF files (e.g. {folder / 'IMG_0.heic'}): "
                     "HEIC/HEIF needs the optional extra: pip install 'clipcull[heic]'"]


@pytest.mark.slow
def test_two_rank_processes_share_one_cache(tiny_env, photo_folder, private_cache):
    cmd = [sys.executable, "-m", "clip_cull", "rank", str(photo_folder), "--json", "--batch-size", "2"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
        assert len(out.splitlines()) == 8
    import sqlite3

    conn = sqlite3.connect(private_cache)
    assert conn.execute("select count(*) from files").fetchone()[0] == 8
    assert conn.execute("select count(*) from embeddings").fetchone()[0] == 8


def test_non_utf8_file_name_is_reported_with_escaped_bytes(tiny_env, tmp_path):
    folder = tmp_path / "names"
    make_photo(folder / "ok.jpg", seed=1)
    bad = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")  # Latin-1 bytes, as old cameras and zips write
    with open(bad, "wb") as f:
        f.write((folder / "ok.jpg").read_bytes())
    result = run("rank", folder, "--json")
    assert result.exit_code == 0
    assert [json.loads(l)["path"] for l in result.stdout.splitlines()] == [str(folder / "ok.jpg")]
    failures = [json.loads(l) for l in result.stderr.splitlines() if l.startswith("{")]
    assert len(failures) == 1 and "file name is not valid UTF-8" in failures[0]["error"]
    assert f"clipcull: skipped {folder}/caf\\xe9.jpg: file name is not valid UTF-8" in run("rank", folder).stderr


def test_panorama_is_ranked_without_a_huge_intermediate(tiny_env, tiny_model_files, tmp_path):
    from clip_cull.model.encoder import ModelSpec, crop_extreme_aspect, load_encoder

    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 7000, 3), dtype=np.uint8))
    cropped = crop_extreme_aspect(wide, 2.0)
    assert cropped.size == (20, 10)
    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    # The model sees the same centre square either way.
    np.testing.assert_allclose(encoder.pixels(wide), encoder.preprocess(wide).numpy(), atol=1e-5)
    wide.save(tmp_path / "pano.png")
    assert [r["path"] for r in rank_json(tmp_path / "pano.png")] == [str(tmp_path / "pano.png")]


def test_unusable_cache_location_is_one_clear_error(tiny_env, photo_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run("rank", photo_folder, "--db", blocker / "cache.db")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"clipcull: error: cannot create the cache folder {blocker}")
    assert "--db or CLIPCULL_DB" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_config_file_is_one_clear_error(photo_folder, tmp_path):
    result = run("rank", photo_folder, "--model", tmp_path / "nope.json", "--pretrained", tmp_path / "w.pt")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"clipcull: error: cannot read the model config file {tmp_path / 'nope.json'}")


def _summary_counts(stderr: str) -> tuple[int, int]:
    """(photos, embedded) from the summary line."""
    import re

    m = re.search(r"(\d+) photos?: (\d+) embedded", stderr)  # "1 photo: ..." in the singular
    return int(m.group(1)), int(m.group(2))


@pytest.mark.slow
def test_two_shards_split_the_folder_without_overlap(tiny_env, photo_folder, private_cache):
    cmds = [[sys.executable, "-m", "clip_cull", "rank", str(photo_folder), "--shard", f"{k}/2"] for k in (0, 1)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=180) for p in procs]
    counts = []
    for k, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, err
        assert out == ""  # a share prints no ranking
        assert f"share {k}/2: " in err
        counts.append(_summary_counts(err))
    assert sum(n for n, _ in counts) == 8 and [n for n, _ in counts] == [e for _, e in counts]
    assert all(n > 0 for n, _ in counts)
    import sqlite3

    assert sqlite3.connect(private_cache).execute("select count(*) from embeddings").fetchone()[0] == 8
    after = run("rank", photo_folder, "--json")
    assert _summary_counts(after.stderr) == (8, 0)


@pytest.mark.slow
def test_torchrun_splits_the_work_and_process_0_prints_once(tiny_env, photo_folder, private_cache):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "clip_cull", "rank", str(photo_folder), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["rank"] for r in rows] == list(range(1, 9))
    import sqlite3

    conn = sqlite3.connect(private_cache)
    assert conn.execute("select count(*) from embeddings").fetchone()[0] == 8
    assert "share 0/2" in out.stderr and "share 1/2" in out.stderr


@pytest.mark.parametrize("value", ["2/2", "x", "1/0", "-1/2"])
def test_bad_shard_is_a_usage_error(tiny_env, photo_folder, value):
    message = usage_error(run("rank", photo_folder, "--shard", value), "Invalid value: --shard", f"(got '{value}')")
    assert ("needs 0 <= K < N" if "/" in value else "takes K/N") in message


def test_checkpoint_that_fails_to_load_in_the_background_is_one_clear_error(tiny_model_files, photo_folder, tmp_path):
    """The model loads in a thread while photos decode: its failure must still end the run
    with one line, not a traceback or a hang."""
    config, _ = tiny_model_files
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint at all" * 100)
    result = run("rank", photo_folder, "--model", config, "--pretrained", broken)
    assert result.exit_code == 1
    assert f"could not load checkpoint {broken}" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("could not load checkpoint") == 1
