"""The Python API (clip_cull/api): docs/api.md's example runs as shown, and each method returns
what the commands print, prints nothing itself, and raises the project's own errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from clip_cull.api import ClipCullError, Events, Library
from clip_cull.core.files import heif_available
from clip_cull.core.images import rawpy_available
from helpers import make_photo

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def example(which: str = "") -> str:
    """The python block after the marker comment in docs/api.md (which: "(AVA) " for the second)."""
    text = API_DOC.read_text(encoding="utf-8")
    marker = re.escape(f"<!-- example {which}".rstrip() + ": tests/test_api.py runs this block -->")
    found = re.search(marker + r"\n```python\n(.*?)```", text, re.S)
    assert found, f"docs/api.md has no marked example {which}"
    return found.group(1)


@pytest.fixture
def shoot(tmp_path) -> Path:
    folder = tmp_path / "shoot"
    for i in range(5):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    return folder


@pytest.fixture
def tiny(tiny_model_files):
    config, checkpoint = tiny_model_files
    return {"model": str(config), "pretrained": str(checkpoint)}


def test_the_documented_example_runs(shoot, tiny, capsys):
    exec(compile(example(), str(API_DOC), "exec"), {"folder": str(shoot), **tiny})
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 3 + 3 + 1, out.out
    assert lines[0].startswith("1. ") and str(shoot) in lines[0]
    assert all(Path(line).parent == shoot for line in lines[3:6])
    assert re.fullmatch(r"5 files would be written; run None \(None: nothing journaled\)", lines[6])
    assert not list(shoot.glob("*.xmp")), "a dry run writes nothing"
    assert out.err == "", "the library prints nothing"


def test_rank_best_tag_undo_history(shoot, tiny, capsys):
    with Library(shoot, **tiny) as lib:
        ranking = lib.rank(record=True)
        assert [p.rank for p in ranking.ranked] == [1, 2, 3, 4, 5]
        assert ranking.settings.model == tiny["model"] and ranking.roots == [str(shoot)]
        assert lib.best(2) == [p.path for p in ranking.ranked[:2]]
        tagged = lib.tag()
        assert tagged.run_id is not None and tagged.written == 5
        assert len(list(shoot.glob("*.xmp"))) == 5
        runs = lib.history()
        assert [(r.id, r.kind) for r in runs] == [(tagged.run_id, "tag")]
        undone = lib.undo()
        assert undone.run.id == tagged.run_id and not undone.report.conflicts
        assert not list(shoot.glob("*.xmp"))
        with pytest.raises(ClipCullError, match="nothing to undo"):
            lib.undo()
    # the folder's settings were recorded: a Library given no model scores it the same way
    with Library(shoot) as again:
        assert again.settings.model == tiny["model"] and again.resolve().source == str(shoot)
        assert again.folders == [str(shoot)]
    with Library() as last:  # no folders: those of the last rank
        assert last.folders == [str(shoot)]
    assert capsys.readouterr().err == ""


def test_move_and_back(shoot, tiny):
    with Library(shoot, **tiny) as lib:
        planned = lib.move(keep_top=3, dry_run=True)
        assert planned.run_id is None and len(planned.plan.chosen) == 2
        assert all(Path(s.src).exists() for s in planned.plan.steps)
        moved = lib.move(keep_top=3)
        assert moved.run_id is not None and moved.done.photos == 2
        assert len(list((shoot / "_rejects").glob("*.jpg"))) == 2
        lib.undo(moved.run_id)
        assert len(list(shoot.glob("*.jpg"))) == 5
        with pytest.raises(ClipCullError, match="choose what moves"):
            lib.move()
        everything = lib.move(keep_top=0, dry_run=True)  # 0 is a choice (keep none), not "not given"
        assert len(everything.plan.chosen) == 5


def test_search_finds_what_rank_embedded(shoot, tiny):
    with Library(shoot, **tiny) as lib:
        lib.rank()
        found = lib.search("a dog", top=2)
        assert len(found.hits) == 2 and found.not_searched == 0


def test_settings_come_from_an_explicit_env_only(shoot, tiny, monkeypatch):
    monkeypatch.setenv("CLIPCULL_HEAD", "fixed")  # the process environment is the CLI's business
    with Library(shoot) as lib:
        assert lib.settings.head == "ensemble"
    with Library(shoot, env={"CLIPCULL_HEAD": "fixed"}) as lib:
        assert lib.settings.head == "fixed"


def test_optional_formats_are_detected_not_off(shoot):
    lib = Library(shoot)
    assert (lib.heif, lib.raw) == (heif_available(), rawpy_available())
    assert Library(shoot, heif=False, raw=False).heif is False


def test_errors_are_the_projects_own_and_events_are_told(tmp_path, shoot, tiny):
    with pytest.raises(ClipCullError, match="no such file or folder"):
        Library(tmp_path / "nowhere", **tiny).rank()
    with pytest.raises(ClipCullError, match="penalize"):
        Library(shoot, penalize="noise")
    told, stages = [], set()

    class Listen(Events):
        def scoring_with(self, settings, source):
            told.append(settings.head)

    with Library(shoot, events=Listen(), progress=lambda stage, done, total: stages.add(stage), **tiny) as lib:
        lib.rank()
    assert told == ["ensemble"] and "embedding photos" in stages


def test_report_writes_the_contact_sheet_and_refuses_a_photo_at_its_path(shoot, tiny, tmp_path):
    with Library(shoot, **tiny) as lib:
        with pytest.raises(ClipCullError):  # a photo at the output path is never overwritten
            lib.report(shoot / "IMG_0000.jpg")
        written = lib.report(tmp_path / "sheets" / "shoot.html", worst=0.4)
    page = written.path.read_text(encoding="utf-8")
    assert written.path == tmp_path / "sheets" / "shoot.html" and len(written.ranking.ranked) == 5
    assert all(f"IMG_{i:04d}.jpg" in page for i in range(5))


def test_events_tell_a_workflow_in_order(shoot, tiny):
    """A caller that renders as it goes (the CLI) learns the ranking, then the plan, then gets the result."""
    said = []

    class Told(Events):
        def ranked(self, ranking):
            said.append(("ranked", len(ranking.ranked)))

        def tags_planned(self, plan, dry_run):
            said.append(("tags_planned", plan.writes, dry_run))

        def moves_resumed(self, finished, notes):
            said.append(("moves_resumed", finished))

        def moves_planned(self, plan, dry_run):
            said.append(("moves_planned", len(plan.chosen), dry_run))

    with Library(shoot, events=Told(), **tiny) as lib:
        tagged = lib.tag(dry_run=True)
        moved = lib.move(keep_top=4)
    assert said == [("ranked", 5), ("tags_planned", tagged.plan.writes, True),
                    ("moves_resumed", []), ("ranked", 5), ("moves_planned", 1, False)]
    assert moved.done.photos == 1


# --- the research side ---------------------------------------------------------------------------


def test_the_documented_ava_example_runs(mini_ava, tiny, capsys):
    exec(compile(example("(AVA) "), str(API_DOC), "exec"),
         {"ava_dir": str(mini_ava), "test_ids": str(mini_ava / "test_ids.txt"), **tiny})
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "majority baseline", "fixed (paper's pairs, code scoring)", "context (paper's pairs, code scoring)",
        "ensemble (paper's pairs, code scoring)", "linear probe (pooled, CV ridge, fit on train)",
        "ensemble(outstanding/horrible, code scoring)"]
    assert lines[0].endswith("(paper: 0.703)") and lines[-1].endswith("(paper: 0.756)")
    assert out.err == "", "the library prints nothing"


def test_ava_experiment_trains_writes_and_tells(mini_ava, tiny, tmp_path):
    from clip_cull.api import AvaExperiment, ModelChoice, ProbeChoice, PromptChoice, SplitChoice

    told = []

    class Told(Events):
        def ava_loaded(self, ava, split):
            told.append(("ava", len(ava.ids), split.source))

        def features_read(self, what, features):
            told.append((what, len(features.ids)))

    split = SplitChoice(test_ids=mini_ava / "test_ids.txt")
    with AvaExperiment(mini_ava, split=split, model=ModelChoice(**tiny), events=Told()) as experiment:
        with pytest.raises(ClipCullError, match="features is pooled or projected"):
            experiment.train_linear(tmp_path / "x.safetensors", ProbeChoice(features="nope"))
        with pytest.raises(ClipCullError, match="name the heads"):
            experiment.evaluate()
        assert told == [], "a refused call does nothing first"
        probe = experiment.train_linear(tmp_path / "probe.safetensors", ProbeChoice(ridge=0))
    assert told[:3] == [("ava", 63, "files"), ("train", 36), ("test", 20)]
    assert probe.fit.alpha == 0 and probe.evaluation.figures["n"] == 20 and probe.path.is_file()
    assert probe.split_path == tmp_path / "probe.split.json"
    assert probe.evaluation.as_dict()["paper"]["row"] == "linear probe CLIP"
    with pytest.raises(ClipCullError, match="kind is fixed, context or ensemble"):
        PromptChoice(kind="best")


def test_merging_the_processes_caches_tells_which_are_not_here(tmp_path, monkeypatch):
    from clip_cull.api import merge_process_caches
    from clip_cull.store.cache import Store

    monkeypatch.setenv("RANK", "0")
    Store.open(tmp_path / "c-1.db").close()
    unreachable = []

    class Told(Events):
        def caches_unreachable(self, missing, into):
            unreachable.append((missing, into))

    merged = merge_process_caches(tmp_path / "c-{rank}.db", 3, events=Told())
    assert unreachable == [([str(tmp_path / "c-2.db")], tmp_path / "c-0.db")]
    assert merged.report.sources == 1 and str(merged.path) == str(tmp_path / "c-0.db")


def test_bad_arguments_are_clear_errors_before_anything_changes(shoot, tiny):
    from clip_cull.api import NoFolders

    with pytest.raises(ClipCullError, match="folders are paths"):
        Library(b"photos")
    with pytest.raises(ClipCullError, match="workers must be at least 1"):
        Library(shoot, workers=0)
    with pytest.raises(ClipCullError, match="blur_below must be a number"):
        Library(shoot, blur_below="x")
    with pytest.raises(NoFolders):
        Library([], **tiny).rank()
    with Library(shoot, **tiny) as lib:
        for bad in ({"worst": 30}, {"worst": 2}, {"worst": "30%"}, {"keep_top": -1}, {"keep_top": 2.5},
                    {"below": "x"}):
            with pytest.raises(ClipCullError, match=next(iter(bad))):
                lib.move(dry_run=True, **bad)  # 30 is not 30%: nothing is planned, let alone moved
        for bad in ({"stars": 5}, {"stars": ["5:0.1"]}, {"stars": [(6, 0.1)]}, {"reject_below": "x"}):
            with pytest.raises(ClipCullError, match=next(iter(bad))):
                lib.tag(dry_run=True, **bad)
        with pytest.raises(ClipCullError, match="top must be at least 1"):
            lib.best(0)
        with pytest.raises(TypeError, match="wurst"):
            lib.move(wurst=0.3)
        assert lib.tag(dry_run=True, stars=[(5, 0.0), (4, -1.0)]).plan.writes == 5
    assert not list(shoot.glob("*.xmp")) and not (shoot / "_rejects").exists()


def test_a_plan_is_applied_once(shoot, tiny):
    with Library(shoot, **tiny) as lib:
        plan = lib.plan_move(keep_top=3)
        moved = lib.apply_move(plan)
        assert moved.done.photos == 2
        with pytest.raises(ClipCullError, match="applied already"):
            lib.apply_move(plan)
        tags = lib.plan_tags()
        assert lib.apply_tags(tags).written == 3
        with pytest.raises(ClipCullError, match="applied already"):
            lib.apply_tags(tags)
        assert [r.kind for r in lib.history()] == ["tag", "move"]


def test_a_damaged_state_database_is_a_clear_error(shoot, tiny, tmp_path):
    import sqlite3

    from clip_cull.core.errors import DatabaseFailed

    state = tmp_path / "state.db"
    with Library(shoot, state=state, **tiny) as lib:
        lib.tag()
    conn = sqlite3.connect(state)
    conn.execute("drop table steps")
    conn.commit()
    conn.close()
    with Library(shoot, state=state, **tiny) as lib, pytest.raises(DatabaseFailed, match="no such table: steps"):
        lib.undo()


def test_the_api_prints_nothing_and_leaves_pillow_limits_to_max_pixels(shoot, tiny_model_files, tmp_path):
    """Run as a notebook would (a fresh interpreter, no CLI): no false 'initialized randomly'
    notice for weights loaded from a file, no warning; Pillow's own pixel limit, lower than
    clipcull's max_pixels, is off (docs/api.md)."""
    import subprocess
    import sys

    config, checkpoint = tiny_model_files
    script = (
        "import PIL.Image\n"
        "from clip_cull.api import Library\n"
        f"with Library({str(shoot)!r}, model={str(config)!r}, pretrained={str(checkpoint)!r}, device='cpu',\n"
        f"             cache={str(tmp_path / 'c.db')!r}, state={str(tmp_path / 's.db')!r}) as lib:\n"
        "    ranking = lib.rank()\n"
        "assert PIL.Image.MAX_IMAGE_PIXELS is None\n"
        "print(len(ranking.ranked), len(ranking.failures))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5 0\n" and done.stderr == ""


def test_a_report_on_a_folder_whose_name_is_not_utf8(tmp_path, tiny):
    folder = tmp_path / os.fsdecode(b"shoot-\xff")
    for i in range(2):
        make_photo(folder / f"IMG_{i}.jpg", seed=i)
    with Library(folder, **tiny) as lib:
        written = lib.report(tmp_path / "sheet.html")  # was a UnicodeEncodeError
    page = written.path.read_bytes().decode("utf-8")  # valid UTF-8 whatever the names
    assert "shoot-\\udcff" in page  # the folder named as Python shows it
    # such paths cannot be cached (the cache keeps UTF-8 paths): each photo is one unreadable line
    assert len(written.ranking.failures) == 2 and not written.ranking.ranked


def test_tag_embed_leaves_nothing_to_embed_again(shoot, tiny):
    """tag --embed rewrites each JPEG (its XMP; pixels checked identical): the cache's embedding
    follows the new content, so the next rank embeds nothing."""
    with Library(shoot, **tiny) as lib:
        assert lib.rank().result.report.embedded == 5
        before = {p.name: p.read_bytes() for p in shoot.glob("*.jpg")}
        tagged = lib.tag(embed=True)
        assert tagged.run_id is not None
        assert all(p.read_bytes() != before[p.name] for p in shoot.glob("*.jpg"))  # rewritten
        again = lib.rank().result.report
    assert (again.embedded, again.cached) == (0, 5)
