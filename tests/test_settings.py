"""One culling session: after `rank --head X`, every command on that folder scores with X,
in X's order (computed here with numpy from the cached embeddings), and says so."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest

from helpers import make_photo, run


def write_linear_head(path, weights: np.ndarray, bias: float):
    """A clipcull linear head file written with safetensors directly (not our save_head)."""
    from safetensors.numpy import save_file

    meta = {"format": "clipcull-head", "version": 1, "kind": "linear", "name": "mine", "features": "projected",
            "backbone": None, "l2_input": False, "threshold": 0.0, "normalisation": "none", "layers": 1}
    save_file({"layers.0.weight": weights.reshape(1, -1).astype(np.float32),
               "layers.0.bias": np.array([bias], np.float32)}, str(path), metadata={"clipcull": json.dumps(meta)})
    return path


def cached_order(db, weights, bias):
    """Paths best first by w.x + b over the projected embeddings in the cache (float16 blobs)."""
    con = sqlite3.connect(db)
    rows = con.execute("select f.path, e.projected from files f join embeddings e on e.fingerprint = f.fingerprint "
                       "where f.error is null").fetchall()
    con.close()
    scores = {path: float(np.frombuffer(blob, np.float16).astype(np.float64) @ weights + bias) for path, blob in rows}
    return sorted(scores, key=lambda p: (-scores[p], p)), scores


@pytest.fixture
def ranked_with_head(tiny_env, photo_folder, private_cache, tmp_path):
    rng = np.random.default_rng(7)
    weights = rng.normal(size=16)
    head = write_linear_head(tmp_path / "mine.safetensors", weights, 0.01)
    result = run("rank", photo_folder, "--head", head, "--json")
    assert result.exit_code == 0, result.stderr
    order, _ = cached_order(private_cache, weights, 0.01)
    assert [json.loads(l)["path"] for l in result.stdout.splitlines()] == order
    default = [json.loads(l)["path"] for l in run("rank", tmp_path / "shoot", "--head", "ensemble", "--json").stdout.splitlines()]
    assert default != order  # else this test could not tell the heads apart
    run("rank", photo_folder, "--head", head)  # leave X as the folder's last rank again
    return photo_folder, head, order


SAYS_X = re.compile(r"clipcull: scoring with head mine\.safetensors on clipcull-test-tiny \(file (.+?)\)")


def says_head(stderr: str, head) -> bool:
    m = SAYS_X.search(stderr)
    return bool(m) and m.group(1) == str(head.resolve())


def test_best_tag_move_and_report_act_on_the_ranked_heads_order(ranked_with_head, tmp_path):
    folder, head, order = ranked_with_head

    best = run("best", "--top", 3, "--include-blurry")
    assert best.stdout.splitlines() == order[:3] and says_head(best.stderr, head)

    tag = run("tag", folder, "--dry-run")
    ratings = {m.group(2): int(m.group(1)) for m in re.finditer(r"would create: rating (-?\d) +(\S+)", tag.stdout)}
    sidecar = lambda p: p.rsplit(".", 1)[0] + ".xmp"  # noqa: E731
    assert ratings[sidecar(order[0])] == 5 and ratings[sidecar(order[-1])] == 1
    assert says_head(tag.stderr, head)

    move = run("move", folder, "--worst", "25%", "--dry-run")
    moved = re.findall(r"would move (\S+) ->", move.stdout)
    assert sorted(moved) == sorted(order[-2:]) and says_head(move.stderr, head)

    out = tmp_path / "sheet.html"
    report = run("report", folder, "-o", out)
    names = re.findall(r'<img src="data:[^"]*" alt="([^"]+)"', out.read_text())
    assert names == [p.rsplit("/", 1)[1] for p in order] and says_head(report.stderr, head)


def test_flags_still_win_and_json_rows_carry_the_head(ranked_with_head):
    folder, head, order = ranked_with_head
    import hashlib

    rows = [json.loads(l) for l in run("rank", folder, "--json").stdout.splitlines()]
    assert {r["head"] for r in rows} == {f"mine.safetensors@{hashlib.sha256(head.read_bytes()).hexdigest()[:12]}"}
    assert [r["path"] for r in rows] == order
    given = run("best", folder, "--head", "ensemble", "--top", 8, "--include-blurry")
    assert "scoring with head ensemble(outstanding/horrible)" in given.stderr
    assert given.stdout.splitlines() != order


def test_a_folder_never_ranked_uses_the_defaults(tiny_env, tmp_path):
    for i in range(3):
        make_photo(tmp_path / "new" / f"p{i}.jpg", seed=40 + i)
    result = run("best", tmp_path / "new")
    assert result.exit_code == 0
    assert "scoring with head ensemble(outstanding/horrible) on clipcull-test-tiny" in result.stderr
    assert "as last ranked" not in result.stderr


def test_settings_order_flags_folder_environment_defaults(tmp_path):
    from clip_cull.scoring.settings import Settings, record, resolve
    from clip_cull.store.state import StateStore

    state = StateStore.open(tmp_path / "state.db")
    env = {"CLIPCULL_MODEL": "ViT-L-14", "CLIPCULL_HEAD": "fixed"}
    assert resolve({}, state, [str(tmp_path / "a")], env).settings == Settings(model="ViT-L-14", head="fixed")
    record(state, [str(tmp_path / "a")], Settings(head="context", positive="beautiful", penalize=("blur",)))
    got = resolve({"positive": "pleasing"}, state, [str(tmp_path / "a" / "day1")], env)
    assert got.settings == Settings(head="context", positive="pleasing", penalize=("blur",))
    assert got.source == str(tmp_path / "a")
    assert resolve({}, state, [str(tmp_path / "b")], {}).settings == Settings()
    state.close()


def test_review_and_search_use_the_folder_as_ranked(ranked_with_head, monkeypatch):
    from clip_cull.review import server, session

    folder, head, order = ranked_with_head
    seen = []
    original = session.ReviewSession

    def capture(store, ranked, *args, **kwargs):
        seen.append([p.path for p in ranked])
        return original(store, ranked, *args, **kwargs)

    monkeypatch.setattr(session, "ReviewSession", capture)
    monkeypatch.setattr(server, "serve", lambda app_, sock, **_: sock.close())
    result = run("review", folder, "--no-browser")
    assert result.exit_code == 0, result.stderr
    assert seen == [order] and says_head(result.stderr, head)
