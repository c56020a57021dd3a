"""The first hour of a new user: what the screen says, what the files look like, what the
help promises. Each test is one point of issue 13."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clip_cull.cli import app
from helpers import make_photo, run, usage_error

ROOT = Path(__file__).resolve().parent.parent


def rank_json(*args):
    result = run("rank", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- offline first run -------------------------------------------------------------------


def test_offline_first_run_fails_fast_with_one_message_naming_the_weights(photo_folder, monkeypatch):
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    resolved = []

    def no_network(host, *args, **kwargs):
        resolved.append(host)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    started = time.monotonic()
    result = run("rank", photo_folder)
    assert time.monotonic() - started < 30  # was 66 s of retries
    assert result.exit_code == 1
    assert resolved == ["huggingface.co"]  # one failed resolution, no retries
    errors = [l for l in result.stderr.splitlines() if "error" in l.lower() or "warn" in l.lower()]
    assert len(errors) == 1 and "no network" in errors[0]
    assert "https://huggingface.co/timm/vit_base_patch32_clip_224.openai" in result.stderr
    assert "--pretrained /path/to/" in result.stderr and "Traceback" not in result.stderr


# --- what the first run says -------------------------------------------------------------


def test_first_run_says_loading_loaded_and_that_prompts_are_cached_once(tiny_env, photo_folder, private_cache):
    private_cache.unlink()  # a first run: not even the prompts tiny_env's cache holds
    first = run("rank", photo_folder).stderr
    assert re.search(r"clipcull: loading model \S+ \(\S+\) \.\.\.\n", first)
    assert re.search(r"clipcull: loaded \S+ \(\d+\.\d s\)", first)
    said = re.findall(r"embedding the head's (\d+) prompts for clipcull-test-tiny: once per model, then cached\.", first)
    assert said == ["1996"]  # 2 x 1000 classes, less the classes named twice (crane, maillot)
    again = run("rank", photo_folder, "--head", "ensemble").stderr
    assert "prompts" not in again


def test_progress_within_a_batch_and_prompt_bar_from_the_first_prompt(tiny_model_files, photo_folder, tmp_path,
                                                                     monkeypatch):
    import time

    import clip_cull.scoring.prepare as worker
    from clip_cull.model.encoder import ModelSpec
    from clip_cull.scoring.indexer import PROGRESS_INTERVAL_S, IndexOptions, prompt_embeddings
    from clip_cull.model.session import ModelSession
    from clip_cull.core.files import PhotoSource
    from clip_cull.scoring.ranking import index_folders
    from clip_cull.store.cache import Store

    real_decode = worker.decode_photo

    def slow_decode(*args, **kwargs):  # a large photo: each takes longer than progress's interval
        time.sleep(1.5 * PROGRESS_INTERVAL_S)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(worker, "decode_photo", slow_decode)
    config, checkpoint = tiny_model_files
    store = Store.open(tmp_path / "p.db")
    session = ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu")
    seen = []
    index_folders(store, PhotoSource((str(photo_folder),)), session, IndexOptions(batch_size=32, workers=1),
                  progress=lambda done, total: seen.append((done, total)))
    assert {d for d, _ in seen} == set(range(0, 9))  # every photo here, not every batch of 32
    assert seen[-1] == (8, 8)
    text = []
    prompt_embeddings(store, session, [f"a photo of thing {i}" for i in range(300)],
                      lambda done, total: text.append((done, total)))
    assert text[0] == (0, 300) and text[-1] == (300, 300)
    store.close()


def test_progress_is_reported_at_most_once_an_interval_and_always_at_the_start_and_end():
    from clip_cull.scoring.indexer import PROGRESS_INTERVAL_S, _Progress

    now = [100.0]
    seen = []
    progress = _Progress(lambda done, total: seen.append(done), clock=lambda: now[0])
    for done in range(0, 50):  # many photos within one interval: a bar redrawn per photo costs time
        progress(done, 50)
    now[0] += 1.5 * PROGRESS_INTERVAL_S
    progress(50, 50)
    progress(50, 50, last=True)
    assert seen == [0, 50, 50]


# --- the rank table ----------------------------------------------------------------------


def test_rank_table_fits_80_columns_one_row_per_photo_relative_paths(tiny_env, photo_folder):
    deep = photo_folder / "2024-06-01 wedding of a friend, imported from the card" / "IMG_0100.jpg"
    make_photo(deep, seed=100)
    result = run("rank", photo_folder, env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert all(len(l) <= 80 for l in lines), max(lines, key=len)
    rows = [l for l in lines if re.match(r"\s*\d+\s", l)]
    assert len(rows) == 9
    assert str(photo_folder) not in result.stdout
    assert any(l.rstrip().endswith("day2/IMG_0006.jpg") for l in rows)
    assert any(l.rstrip().endswith("IMG_0100.jpg") and "\u2026" in l for l in rows)  # cut from the left
    full = rank_json(photo_folder)
    assert str(deep) in {r["path"] for r in full}  # --json keeps full paths


def test_csv_has_the_same_columns_as_json(tiny_env, photo_folder):
    as_json = rank_json(photo_folder, "--groups")
    rows = list(csv.DictReader(io.StringIO(run("rank", photo_folder, "--csv", "--groups").stdout)))
    assert list(rows[0]) == list(as_json[0])
    for j, c in zip(as_json, rows):
        assert c["path"] == j["path"] and float(c["highlights"]) == j["highlights"]
        assert float(c["shadows"]) == j["shadows"] and float(c["brightness"]) == j["brightness"]
        assert c["raw"] == ";".join(j["raw"]) and c["head"] == j["head"]


def _cli(tiny_env) -> dict:
    config, checkpoint = tiny_env
    return {**os.environ, "PYTHONPATH": str(ROOT), "CLIPCULL_MODEL": str(config), "CLIPCULL_PRETRAINED": str(checkpoint)}


@pytest.mark.slow
def test_rank_json_into_a_closed_pipe_exits_0_quietly(tiny_env, photo_folder):
    env = _cli(tiny_env)
    cmd = f"{sys.executable} -m clip_cull rank {photo_folder} --json | true; echo status=${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert "status=0" in done.stdout
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr and "Exception" not in done.stderr
    head = subprocess.run(["bash", "-c", f"{sys.executable} -m clip_cull rank {photo_folder} --json | head -1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert len(head.stdout.splitlines()) == 1 and json.loads(head.stdout)["rank"] == 1


# --- best and unreadable files -----------------------------------------------------------


def test_best_says_how_many_blurry_photos_it_left_out(tiny_env, tmp_path):
    folder = tmp_path / "shoot"
    for i in range(5):
        make_photo(folder / f"sharp{i}.jpg", seed=i, size=(320, 240))
    sharp = Image.open(folder / "sharp0.jpg")
    sharp.filter(ImageFilter.GaussianBlur(12)).save(folder / "soft.jpg", quality=95)
    result = run("best", folder, "--top", 100)
    assert str(folder / "soft.jpg") not in result.stdout and len(result.stdout.splitlines()) == 5
    assert result.stderr.count("clipcull: left out 1 blurry photo (--include-blurry keeps them)") == 1
    with_it = run("best", folder, "--top", 100, "--include-blurry")
    assert str(folder / "soft.jpg") in with_it.stdout and "left out" not in with_it.stderr


# --- report ------------------------------------------------------------------------------


def _sidecar(photo: Path, **tags):
    args = [f"-XMP-xmp:{k}={v}" for k, v in tags.items()]
    subprocess.run(["exiftool", "-q", "-o", str(photo.with_suffix(".xmp")), *args], check=True, timeout=60)


def test_report_shows_your_rating_flags_relative_paths_sharp_clean_thumbnails(tiny_env, tmp_path):
    folder = tmp_path / "shoot"
    big = make_photo(folder / "big.jpg", seed=1, size=(1600, 1200), comment=b"secret note")
    make_photo(folder / "IMG_1.jpg", seed=2)
    make_photo(folder / "sub" / "IMG_2.jpg", seed=3)
    _sidecar(folder / "IMG_1.jpg", Rating=4)
    _sidecar(big, Rating=-1)
    out = tmp_path / "new" / "folder" / "sheet.html"  # a folder that does not exist yet
    result = run("report", folder, "-o", out, "--similarity", 1)
    assert result.exit_code == 0, result.stderr
    page = out.read_text()
    assert str(tmp_path) not in page and "sub/IMG_2.jpg" in page
    captions = dict(re.findall(r'alt="([^"]+)">.*?<figcaption>(.*?)</figcaption>', page))
    assert "yours: ★★★★☆" in captions["IMG_1.jpg"] and "yours: reject" in captions["big.jpg"]
    assert "yours" not in captions["IMG_2.jpg"]
    assert 'class="reject"' not in page  # no --worst: nothing greyed
    data = re.search(r'src="data:image/jpeg;base64,([^"]+)" alt="big.jpg"', page).group(1)
    thumb = Image.open(io.BytesIO(base64.b64decode(data)))
    assert max(thumb.size) == 640  # twice the 320 px it is shown at
    assert "comment" not in thumb.info and not thumb.getexif() and b"secret note" not in base64.b64decode(data)
    assert "break-inside: avoid" in page and "@media print" in page


def test_report_greys_the_share_move_would_move(tiny_env, photo_folder, tmp_path):
    out = tmp_path / "sheet.html"
    run("report", photo_folder, "-o", out, "--worst", "25%", "--similarity", 1)
    moved = re.findall(r"would move (\S+) ->", run("move", photo_folder, "--worst", "25%", "-n").stdout)
    greyed = re.findall(r'<figure class="reject"><img src="[^"]+" alt="([^"]+)"', out.read_text())
    assert sorted(greyed) == sorted(Path(p).name for p in moved) and len(greyed) == 2


def test_report_stacks_a_burst_in_one_card_flags_shown():
    from clip_cull.culling.report import render_report
    from clip_cull.scoring.ranking import RankedPhoto

    ranked = [RankedPhoto(i + 1, f"/x/p{i}.jpg", 0.1 - i / 100, "aesthetic", flags=["blurry"] if i == 2 else [])
              for i in range(4)]
    page = render_report(ranked, {}, {"/x/p1.jpg": 1, "/x/p3.jpg": 1}, set(), "t", roots=["/x"])
    assert page.count("<figure") == 3 and page.count('class="burst"') == 1
    card = re.search(r'<figure class="burst">(.*?)</figure>', page).group(1)
    assert "burst 1 (2 photos)" in card and "p1.jpg" in card and "p3.jpg" in card
    assert '<span class="flags">blurry</span>' in page


# --- folders to skip ---------------------------------------------------------------------


def test_preview_folders_and_exclude_globs_are_skipped(tiny_env, tmp_path, monkeypatch):
    folder = tmp_path / "shoot"
    make_photo(folder / "keep.jpg", seed=1)
    for skipped in ("@eaDir/keep.jpg/SYNOPHOTO_THUMB_XL.jpg", ".thumbnails/a.jpg", "Catalog Previews.lrdata/0/a.jpg",
                    "drafts/d.jpg", "tmp-export/e.jpg"):
        make_photo(folder / skipped, seed=2)
    monkeypatch.setenv("CLIPCULL_EXCLUDE", "tmp-*")
    rows = rank_json(folder, "--exclude", "drafts")
    assert [r["path"] for r in rows] == [str(folder / "keep.jpg")]
    monkeypatch.delenv("CLIPCULL_EXCLUDE")
    assert len(rank_json(folder)) == 3  # keep, drafts, tmp-export


# --- HEIC facts --------------------------------------------------------------------------


def test_heic_capture_time_and_camera_through_pillow(tiny_env, tmp_path):
    pytest.importorskip("pillow_heif").register_heif_opener()
    path = tmp_path / "shoot" / "IMG_0001.HEIC"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 15 Pro"
    exif[0x8769] = {0x9003: "2024:06:01 14:03:22"}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8)).save(path, exif=exif.tobytes())
    told = json.loads(subprocess.run(["exiftool", "-j", "-DateTimeOriginal", "-Make", "-Model", str(path)],
                                     capture_output=True, text=True, timeout=60).stdout)[0]
    row = rank_json(path.parent)[0]
    assert row["captured_at"] == told["DateTimeOriginal"].replace(":", "-", 2).replace(" ", "T")
    assert row["camera"] == f"{told['Make']} {told['Model']}"


# --- a checkpoint for another model ------------------------------------------------------


def test_checkpoint_for_another_model_says_which_model_it_is(tiny_model_files, photo_folder):
    config, checkpoint = tiny_model_files
    result = run("rank", photo_folder, "--model", "ViT-B-16", "--pretrained", checkpoint)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "a ViT of width 32, patch 16, 32 px, 1 layers, 16-d embeddings" in result.stderr
    assert "pass --model clipcull-test-tiny" in result.stderr


# --- help --------------------------------------------------------------------------------


def _help(*command):
    result = run(*command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    return result.stdout


def test_help_shows_no_value_for_flags_and_plain_argument_names():
    for command in (["rank"], ["best"], ["tag"], ["move"], ["report"], ["eval"], ["train", "ratings"]):
        text = _help(*command)
        assert "<bool>" not in text and "list[" not in text and "{" not in text, command


def test_n_means_dry_run_and_t_means_how_many():
    assert re.search(r"--dry-run\s+-n", _help("tag")) and re.search(r"--dry-run\s+-n", _help("move"))
    assert re.search(r"--top\s+-t", _help("best")) and "-t" in _help("rank")
    usage_error(run("rank", ".", "-n", "3"), "No such option: -n")
    usage_error(run("best", "-n", "3"), "No such option: -n")


def test_every_option_has_help_and_train_ratings_is_on_the_top_level_help():
    import typer.main

    command = typer.main.get_command(app)

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])
        for p in cmd.params:
            if p.param_type_name == "option":
                yield path, p

    missing = [(path, p.name) for path, p in walk(command, []) if not p.help and p.name != "version"]
    assert missing == []
    assert "train ratings" in _help()
    eval_workers = next(p for p in command.commands["eval"].params if p.name == "workers")
    assert eval_workers.default == (os.cpu_count() or 1)


def test_one_photo_is_singular_and_unknown_adjectives_are_warned(tiny_env, tmp_path):
    make_photo(tmp_path / "one" / "a.jpg", seed=1)
    result = run("rank", tmp_path / "one", "--positive", "beautifull")
    assert "clipcull: 1 photo: 1 embedded" in result.stderr
    assert "'beautifull' is not one of the paper's 27 positive adjectives" in result.stderr
    assert "not one of" not in run("rank", tmp_path / "one", "--positive", "beautiful").stderr


# --- README ------------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_install_and_the_portable_copy_example_works(tiny_env, photo_folder, tmp_path):
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install"):readme.index("## Quick start")]
    assert "REPOSITORY-URL" not in readme and "From a clone of this repository" in install
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert install.index(cpu) < install.index("pip install .\n```")  # both from one index, then clipcull
    ranking = (ROOT / "docs" / "ranking.md").read_text()  # the example moved there from the README
    line = next(l for l in ranking.splitlines() if "xargs -0 -I" in l)
    command = line.split("#")[0].strip().replace("clipcull", f"{sys.executable} -m clip_cull", 1)
    picks = tmp_path / "Picks"
    picks.mkdir()
    command = command.replace("~/Picks/", f"{picks}/").replace("--top 20", f"{photo_folder} --top 3")
    subprocess.run(["bash", "-c", command], check=True, env=_cli(tiny_env), timeout=300, capture_output=True)
    assert len(list(picks.iterdir())) == 3


# --- the CLI's structure -----------------------------------------------------------------


def test_cli_modules_import_no_circle_and_shared_options_are_declared_once():
    import ast

    folder = ROOT / "clip_cull" / "cli"
    graph = {}
    for path in folder.glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clip_cull.cli"):
                assert node.module != "clip_cull.cli", f"{path.name} imports the package itself"
                deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps
    done, visiting = set(), []

    def visit(name):
        assert name not in visiting, f"import circle: {visiting + [name]}"
        if name in done:
            return
        visiting.append(name)
        for dep in graph[name]:
            visit(dep)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)
    source = "\n".join(p.read_text() for p in folder.glob("*.py"))
    # (eval's repeatable --head, several heads compared, is another option of the same name)
    for option in ('"--model"', '"--pretrained"', '"--precision"', '"--db"', '"--workers"', '"--penalize"',
                   '"--similarity"', '"--positive"'):
        assert source.count(option) == 1, option
