"""Faces in the commands: rank (--json, --csv, the table, --penalize), best, move, bursts; and
clipcull as before where the faces extra is not installed.

The shoot is real: scikit-image's astronaut, matplotlib's Grace Hopper, the astronaut mirrored,
the astronaut with her head blurred (a soft face before a sharp background), and scikit-image's
cat (no face). No real photograph of
closed eyes ships in a package (docs/faces.md), so the mirrored astronaut's stored result has
her lids moved shut on her real eye landmarks: the closed eyes below test how clipcull culls a
photo that the analyser judged so, not how well it judges real blinks.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clip_cull.core import faces
from helpers import run, usage_error

needs_faces = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                 reason="the faces extra is not installed (pip install '.[faces]')")
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="scikit-image (in the test extra) ships the sample portraits")


def portraits(folder: Path) -> dict[str, Path]:
    import matplotlib
    import skimage.data

    astronaut = Image.fromarray(skimage.data.astronaut())
    with Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg") as im:
        grace = im.convert("RGB")
    photos = {
        "astronaut": astronaut,
        "grace": grace,
        "closed": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "soft": soft_face(astronaut),
        "cat": Image.fromarray(skimage.data.chelsea()),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, image in photos.items():
        paths[name] = folder / f"{name}.jpg"
        image.save(paths[name], quality=95)
    return paths


def soft_face(photo: Image.Image) -> Image.Image:
    """The photo with only her head blurred: a soft face before a sharp background (the frame is not blurry)."""
    head = (160, 50, 290, 190)  # around the eyes read by hand, (203, 101) and (247, 103)
    soft = photo.copy()
    soft.paste(photo.crop(head).filter(ImageFilter.GaussianBlur(3)), head[:2])
    return soft


def shut_lids(result: dict) -> dict:
    """The stored result with each face's upper lid points moved onto the lower lid ones
    (p2 onto p6, p3 onto p5), and openness and eyes_closed as the analyser computes them."""
    shut = json.loads(json.dumps(result))
    for face in shut["faces"]:
        for eye, points in face["contours"].items():
            points[1], points[2] = list(points[5]), list(points[4])
        face["openness"] = [faces.eye_aspect_ratio(face["contours"][eye]) for eye in ("right", "left")]
        face["eyes_closed"] = faces.eyes_closed(face["openness"])
    return shut


@pytest.fixture
def shoot(tiny_env, tmp_path, private_cache):
    """The real shoot, ranked once (the faces analysed), with the mirrored astronaut's eyes shut in the cache."""
    paths = portraits(tmp_path / "shoot")
    result = run("rank", tmp_path / "shoot")
    assert result.exit_code == 0, result.stderr
    shut_eyes_in_cache(private_cache, paths["closed"])
    return paths


def shut_eyes_in_cache(cache: Path, photo: Path) -> None:
    """The photo's faces result in the cache replaced by shut_lids of it."""
    from clip_cull.store.cache import Store

    store = Store.open(cache)
    try:
        fp = store.file_records([str(photo)])[str(photo)].fingerprint
        measured = store.measurements([fp], faces.NAME, faces.VERSION)[fp]
        store.save_measurements([(fp, faces.NAME, faces.VERSION, shut_lids(measured))])
    finally:
        store.close()


def rank_json(*args) -> list[dict]:
    result = run("rank", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@needs_faces
@needs_skimage
def test_rank_json_and_csv_carry_the_faces_and_their_figures(shoot):
    rows = {Path(r["path"]).stem: r for r in rank_json(shoot["astronaut"].parent)}
    assert {k: rows[k]["faces"] for k in rows} == {"astronaut": 1, "grace": 1, "closed": 1, "soft": 1, "cat": 0}
    assert {k: rows[k]["flags"] for k in rows} == {"astronaut": [], "grace": [], "closed": ["eyes-closed"],
                                                   "soft": ["face-soft"], "cat": []}
    astronaut = rows["astronaut"]["face_details"][0]
    assert astronaut["eyes_closed"] is False and astronaut["soft"] is False
    assert min(astronaut["openness"]) > faces.EYES_CLOSED_EAR
    assert rows["astronaut"]["eye_openness"] == pytest.approx(np.mean(astronaut["openness"]), abs=1e-3)
    assert rows["astronaut"]["face_focus"] == astronaut["focus"]
    # the face is where the eyes read by hand are (test_faces.py): 512 px photo
    x0, y0, x1, y1 = (v * 512 for v in astronaut["box"])
    assert x0 < 203 < x1 and y0 < 101 < y1
    closed = rows["closed"]["face_details"][0]
    assert closed["eyes_closed"] is True and closed["openness"] == [0.0, 0.0]
    assert rows["soft"]["face_details"][0]["soft"] is True
    assert rows["cat"]["face_details"] == [] and rows["cat"]["face_focus"] is None

    as_csv = list(csv.DictReader(io.StringIO(run("rank", "--csv", shoot["astronaut"].parent).stdout)))
    by_name = {Path(r["path"]).stem: r for r in as_csv}
    assert list(as_csv[0]) == list(rows["astronaut"])
    for name, row in rows.items():
        assert int(by_name[name]["faces"]) == row["faces"]
        assert json.loads(by_name[name]["face_details"]) == row["face_details"]
        assert by_name[name]["flags"] == ";".join(row["flags"])


@needs_faces
@needs_skimage
def test_the_table_shows_the_faces_and_their_flags(shoot):
    table = run("rank", shoot["astronaut"].parent, env={"COLUMNS": "120"}).stdout
    header = next(line for line in table.splitlines() if "score" in line)
    assert "faces" in header.split()
    line = {name: next(l for l in table.splitlines() if l.rstrip().endswith(f"{name}.jpg")) for name in shoot}
    start = header.index("faces")  # the column is right-aligned under its header
    count = {name: l[start:start + len("faces")].strip() for name, l in line.items()}
    assert count == {"astronaut": "1", "grace": "1", "closed": "1", "soft": "1", "cat": ""}  # none: left blank
    assert " eyes " in f" {line['closed']} " and " face " in f" {line['soft']} "


@needs_faces
@needs_skimage
def test_best_leaves_out_closed_eyes_and_says_so_like_blurry(shoot):
    folder = shoot["astronaut"].parent
    result = run("best", folder)
    assert result.exit_code == 0, result.stderr
    assert str(shoot["closed"]) not in result.stdout.split("\n")
    assert "left out 1 photo with closed eyes (--include-eyes-closed keeps them)" in result.stderr
    kept = run("best", folder, "--include-eyes-closed")
    assert str(shoot["closed"]) in kept.stdout.split("\n") and "closed eyes" not in kept.stderr


@needs_faces
@needs_skimage
def test_penalize_eyes_and_face_rank_those_photos_last(shoot):
    folder = shoot["astronaut"].parent
    plain = [Path(r["path"]).stem for r in rank_json(folder)]
    eyes = [Path(r["path"]).stem for r in rank_json(folder, "--penalize", "eyes")]
    assert eyes[-1] == "closed" and [n for n in eyes if n != "closed"] == [n for n in plain if n != "closed"]
    both = [Path(r["path"]).stem for r in rank_json(folder, "--penalize", "eyes,face")]
    assert set(both[-2:]) == {"closed", "soft"}


@needs_faces
@needs_skimage
def test_move_eyes_closed_and_face_soft_move_exactly_those(shoot):
    folder = shoot["astronaut"].parent
    result = run("move", folder, "--eyes-closed")
    assert result.exit_code == 0, result.stderr
    assert not shoot["closed"].exists() and (folder / "_rejects" / "closed.jpg").exists()
    assert all(shoot[n].exists() for n in ("astronaut", "grace", "soft", "cat"))
    assert run("undo").exit_code == 0 and shoot["closed"].exists()
    result = run("move", folder, "--face-soft", "--dry-run")
    assert result.exit_code == 0 and "soft.jpg" in result.stdout + result.stderr
    assert "closed.jpg" not in result.stdout + result.stderr


@needs_faces
@needs_skimage
def test_the_report_shows_each_face_close_up_with_its_assessment(shoot, tmp_path):
    import base64
    import re

    out = tmp_path / "sheet.html"
    result = run("report", shoot["astronaut"].parent, "-o", out, "--similarity", 1)  # no bursts
    assert result.exit_code == 0, result.stderr
    page = out.read_text()
    cards = dict(re.findall(r'<img src="[^"]+" alt="([^"]+)">(.*?)</figure>', page))
    faces_of = {name: re.findall(r'<div class="(face[^"]*)"><img src="data:image/jpeg;base64,([^"]+)" alt="face">'
                                 r'<br>([^<]*)<br>([^<]*)</div>', cards[f"{name}.jpg"]) for name in shoot}
    assert {n: len(f) for n, f in faces_of.items()} == {"astronaut": 1, "grace": 1, "closed": 1, "soft": 1, "cat": 0}
    (cls, data, eyes, focus), = faces_of["closed"]
    assert cls == "face closed" and eyes == "eyes closed 0.00" and focus.startswith("sharp ")
    (cls, data, eyes, focus), = faces_of["soft"]
    assert cls == "face soft" and eyes.startswith("eyes open") and focus.startswith("soft ")
    (cls, data, eyes, focus), = faces_of["astronaut"]
    assert cls == "face" and eyes.startswith("eyes open") and focus.startswith("sharp ")
    # the close-up is her face: its centre matches the photo's face region (512 px photo), compared in grey
    import io
    import skimage.data

    close_up = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), float)
    rows = rank_json(shoot["astronaut"].parent)
    x0, y0, x1, y1 = next(r for r in rows if r["path"] == str(shoot["astronaut"]))["face_details"][0]["box"]
    cx, cy, half = (x0 + x1) / 2 * 512, (y0 + y1) / 2 * 512, 0.7 * max(x1 - x0, y1 - y0) * 512
    region = Image.fromarray(skimage.data.astronaut()).crop((round(cx - half), round(cy - half), round(cx + half),
                                                             round(cy + half)))
    expected = np.asarray(region.convert("L").resize(close_up.shape[::-1], Image.BICUBIC), float)
    assert np.abs(close_up - expected).mean() < 12  # JPEG twice and a resample apart: the same face


def test_the_best_of_a_burst_prefers_open_eyes_and_a_sharp_face():
    from clip_cull.culling.move import Selection, select_rejects
    from clip_cull.scoring.groups import best_of_each_group
    from clip_cull.scoring.ranking import RankedPhoto

    ranked = [RankedPhoto(1, "a", 0.9, "", flags=["eyes-closed"]), RankedPhoto(2, "b", 0.8, "", flags=["face-soft"]),
              RankedPhoto(3, "c", 0.7, ""), RankedPhoto(4, "d", 0.6, ""),
              RankedPhoto(5, "e", 0.5, "", flags=["eyes-closed"]), RankedPhoto(6, "f", 0.4, "", flags=["eyes-closed"])]
    groups = {"a": 1, "b": 1, "c": 1, "e": 2, "f": 2}  # d in no group; group 2 has only closed eyes
    assert [p.path for p in best_of_each_group(ranked, groups)] == ["c", "d", "e"]
    moved = select_rejects(ranked, Selection(per_group=True), groups)
    assert [p.path for p in moved] == ["a", "b", "f"]


# --- without the extra: as before ------------------------------------------------------------


@pytest.fixture
def no_faces_extra(monkeypatch):
    """This process as it is where mediapipe is not installed: its spec is not found."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "mediapipe"
                        else real(name, *a))


@needs_faces
def test_no_faces_column_for_a_shoot_without_faces(tiny_env, photo_folder):
    rows = rank_json(photo_folder)
    assert rows and all(r["faces"] == 0 and r["face_details"] == [] for r in rows)  # analysed: none found
    table = run("rank", photo_folder, env={"COLUMNS": "120"}).stdout
    assert "faces" not in next(line for line in table.splitlines() if "score" in line).split()


def test_without_the_extra_rank_and_best_work_as_before(tiny_env, photo_folder, no_faces_extra):
    rows = rank_json(photo_folder)
    assert rows and all(r["faces"] is None and r["face_details"] is None for r in rows)
    assert not any({"eyes-closed", "face-soft"} & set(r["flags"]) for r in rows)
    table = run("rank", photo_folder, env={"COLUMNS": "120"}).stdout
    assert "faces" not in next(line for line in table.splitlines() if "score" in line).split()
    best = run("best", photo_folder, "--top", "3")
    assert best.exit_code == 0 and len(best.stdout.splitlines()) == 3 and "eyes" not in best.stderr


def test_without_the_extra_face_features_say_how_to_install_it(tiny_env, photo_folder, no_faces_extra):
    before = sorted(p.name for p in photo_folder.rglob("*"))
    result = run("move", photo_folder, "--eyes-closed")
    usage_error(result, "--eyes-closed needs the faces extra", "pip install 'clipcull[faces]'")
    assert sorted(p.name for p in photo_folder.rglob("*")) == before  # nothing moved
    usage_error(run("rank", photo_folder, "--penalize", "eyes"), "--penalize eyes needs the faces extra")
    from clip_cull.api import Library
    from clip_cull.core.faces import FacesUnavailable

    with pytest.raises(FacesUnavailable, match="faces extra"):
        Library(photo_folder, penalize="blur,face")


@needs_faces
def test_a_remembered_face_penalty_without_the_extra_says_new_photos_are_not_judged(tiny_env, photo_folder,
                                                                                      monkeypatch):
    assert run("rank", photo_folder, "--penalize", "eyes,face").exit_code == 0  # remembered for the folder
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "mediapipe"
                        else real(name, *a))
    again = run("rank", photo_folder)
    assert again.exit_code == 0
    assert ("penalizing eyes,face as last ranked, but the faces extra is not installed here: photos new or "
            "changed since are not judged for faces") in " ".join(again.stderr.split())
