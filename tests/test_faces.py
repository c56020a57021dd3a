"""Faces and eyes (core/faces.py) on real photographs that ship inside registry packages.

The portraits: scikit-image's astronaut (Eileen Collins, NASA) and cameraman, and matplotlib's
Grace Hopper (matplotlib comes with the faces extra). The eye positions below were read by hand
off 4x-6x enlargements of the photos with a 10 px grid, not from clipcull. No package found
ships a real photograph of closed eyes (docs/faces.md), so closed eyes are tested on the real
landmarks of open eyes with the lids moved shut, and their accuracy on real blinks is not
claimed. The geometry (EAR, the Laplacian) is recomputed here with numpy and scipy.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clip_cull.core import faces

needs_faces = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                 reason="the faces extra is not installed (pip install '.[faces]')")
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="scikit-image (in the test extra) ships the sample portraits")

# (x, y) in px of the photo as it ships, read by hand: the centre of each pupil.
ASTRONAUT_EYES = [(203, 101), (247, 103)]  # 512 x 512
GRACE_EYES = [(224, 191), (304, 188)]  # 512 x 600
CAMERAMAN_EYE = (234, 146)  # his visible eye, three-quarter profile at the camera; 512 x 512


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    import matplotlib

    with Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg") as im:
        return np.asarray(im.convert("RGB"))


def ear(p) -> float:
    """Soukupova & Cech's eye aspect ratio, written out here: (|p2-p6| + |p3-p5|) / (2 |p1-p4|)."""
    p = np.asarray(p, float)
    d = lambda a, b: float(np.hypot(*(p[a] - p[b])))  # noqa: E731
    return (d(1, 5) + d(2, 4)) / (2 * d(0, 3))


def in_px(point, shape) -> np.ndarray:
    h, w = shape[:2]
    return np.array([point[0] * w, point[1] * h])


def near(found, labelled, tolerance) -> bool:
    """Each labelled point has a found point within tolerance px (either order)."""
    return all(min(np.hypot(*(f - np.asarray(l))) for f in found) <= tolerance for l in labelled)


# --- real portraits --------------------------------------------------------------------------


@needs_faces
@needs_skimage
@pytest.mark.parametrize("photo, labelled", [(astronaut, ASTRONAUT_EYES), (grace_hopper, GRACE_EYES)])
def test_a_real_portrait_has_one_face_with_its_eyes_where_they_are_and_open(photo, labelled):
    rgb = photo()
    result = faces.measure(rgb)
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    x0, y0, x1, y1 = in_px(face["box"][:2], rgb.shape).tolist() + in_px(face["box"][2:], rgb.shape).tolist()
    assert all(x0 < x < x1 and y0 < y < y1 for x, y in labelled)
    assert face["score"] >= faces.MIN_SCORE
    # the detector's eyes and the mesh's eye contours both lie on the pupils read by hand
    assert near([in_px(e, rgb.shape) for e in face["eyes"]], labelled, 5)
    centres = [np.mean([in_px(p, rgb.shape) for p in face["contours"][eye]], axis=0) for eye in ("right", "left")]
    assert near(centres, labelled, 5)
    # openness is the EAR of the contours, recomputed here (in px: relative x and y differ in scale)
    expected = [ear([in_px(p, rgb.shape) for p in face["contours"][eye]]) for eye in ("right", "left")]
    np.testing.assert_allclose(face["openness"], expected, atol=2e-3)
    assert min(face["openness"]) > faces.EYES_CLOSED_EAR and face["eyes_closed"] is False
    assert face["focus"] > 0


@needs_faces
@needs_skimage
def test_the_cameraman_three_quarter_profile_is_found():
    import skimage.data

    grey = skimage.data.camera()
    result = faces.measure(np.stack([grey] * 3, axis=-1))
    assert len(result["faces"]) == 1
    x0, y0, x1, y1 = result["faces"][0]["box"]
    assert x0 * 512 < CAMERAMAN_EYE[0] < x1 * 512 and y0 * 512 < CAMERAMAN_EYE[1] < y1 * 512


@needs_faces
@needs_skimage
@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "horse", "hubble_deep_field", "brick", "coins",
                                  "retina", "immunohistochemistry", "clock"])
def test_real_photos_without_people_have_no_faces(name):
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.dtype != np.uint8:
        image = (image * 255).astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
    assert faces.measure(np.ascontiguousarray(image[..., :3])) == {"faces": []}


@needs_faces
@needs_skimage
def test_a_small_face_in_a_wide_frame_is_found_by_the_tiles():
    """The astronaut scaled so that her eyes are 22 px apart, in a 1024 px frame of her own
    background: the whole-frame pass alone misses her (as measured for docs/faces.md); the tiles find her."""
    rgb = astronaut()
    scale = 22 / np.hypot(*np.subtract(*ASTRONAUT_EYES))
    small = np.asarray(Image.fromarray(rgb).resize((round(512 * scale), round(512 * scale)), Image.BILINEAR))
    frame = np.asarray(Image.fromarray(rgb[:40, :40]).resize((1024, 768), Image.BILINEAR)).copy()
    top, left = 500, 700
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    detector, _ = faces._graphs()
    assert not detector.process(frame).detections  # one look at 192 x 192 is not enough
    found = faces.measure(frame)["faces"]
    assert len(found) == 1
    eyes = [np.array([left + x * scale, top + y * scale]) for x, y in ASTRONAUT_EYES]
    assert near([in_px(e, frame.shape) for e in found[0]["eyes"]], eyes, 4)
    assert found[0]["eyes_closed"] is False


@needs_faces
@needs_skimage
def test_a_blurred_face_measures_soft_and_the_shoot_flags_it():
    rgb = astronaut()
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3)))
    sharp, soft = faces.measure(rgb)["faces"], faces.measure(blurred)["faces"]
    assert len(sharp) == len(soft) == 1
    assert soft[0]["focus"] < faces.FACE_SOFT_RELATIVE * sharp[0]["focus"]
    grace = faces.measure(grace_hopper())
    flags = faces.judge({"sharp.jpg": {"faces": sharp}, "grace.jpg": grace, "soft.jpg": {"faces": soft}})
    assert {p: f.face_soft for p, f in flags.items()} == {"sharp.jpg": False, "grace.jpg": False, "soft.jpg": True}
    assert not any(f.eyes_closed for f in flags.values())


@needs_faces
@needs_skimage
def test_a_sharp_small_face_is_not_judged_soft_against_close_portraits():
    """The astronaut, sharp, small in a wide frame (eyes 22 px apart, under FOCUS_IOD): its eyes
    are judged but its focus is not measured (it would be upsampled and look soft), so a group
    or wide shot is never face-soft beside close portraits (a hostile pass found it was)."""
    rgb = astronaut()
    scale = 22 / np.hypot(*np.subtract(*ASTRONAUT_EYES))
    small = np.asarray(Image.fromarray(rgb).resize((round(512 * scale), round(512 * scale)), Image.LANCZOS))
    frame = np.asarray(Image.fromarray(rgb[:40, :40]).resize((1024, 768), Image.BILINEAR)).copy()
    frame[500:500 + small.shape[0], 700:700 + small.shape[1]] = small
    wide = faces.measure(frame)
    assert len(wide["faces"]) == 1 and wide["faces"][0]["openness"] is not None
    assert wide["faces"][0]["focus"] is None
    close = {"a.jpg": faces.measure(rgb), "b.jpg": faces.measure(grace_hopper()), "wide.jpg": wide}
    flags = faces.judge(close)
    assert not any(f.face_soft for f in flags.values())


@needs_faces
@needs_skimage
def test_the_analyser_runs_through_the_registry_at_its_working_size():
    from clip_cull.core import analysers

    (active,) = analysers.active(("faces",))
    assert active is faces.ANALYSER and active.work_side == faces.WORK_SIDE
    image = Image.fromarray(astronaut()).resize((2048, 2048), Image.BICUBIC)  # scaled down to WORK_SIDE
    [(name, version, result)] = analysers.measure_all(image, [active])
    assert (name, version, len(result["faces"])) == ("faces", faces.VERSION, 1)
    assert near([np.array(e) * 512 for e in result["faces"][0]["eyes"]], ASTRONAUT_EYES, 5)


# --- closed eyes: the real landmarks of open eyes, with the lids moved ----------------------


@needs_faces
@needs_skimage
@pytest.mark.parametrize("photo", [astronaut, grace_hopper])
def test_lids_moved_shut_on_real_eye_landmarks_read_as_closed(photo):
    rgb = photo()
    face = faces.measure(rgb)["faces"][0]
    for eye in ("right", "left"):
        points = np.array([in_px(p, rgb.shape) for p in face["contours"][eye]])
        open_ear = ear(points)
        for shut in (0.0, 0.25, 0.5, 0.75, 1.0):  # share of the way each lid point moves to the other lid
            moved = points.copy()
            for upper, lower in ((1, 5), (2, 4)):  # p2 over p6, p3 over p5
                middle = (points[upper] + points[lower]) / 2
                moved[upper] = points[upper] + shut * (middle - points[upper])
                moved[lower] = points[lower] + shut * (middle - points[lower])
            # the lid gap shrinks by (1 - shut), so the EAR does too: worked out by hand, not by clipcull
            assert faces.eye_aspect_ratio(moved) == pytest.approx((1 - shut) * open_ear, abs=1e-9)
    other = [in_px(p, rgb.shape) for p in face["contours"]["left"]]
    shut_right = np.array([in_px(p, rgb.shape) for p in face["contours"]["right"]])
    shut_right[[1, 2]] = shut_right[[5, 4]]  # upper lid on the lower lid: a blink
    shut_left = np.array(other)
    shut_left[[1, 2]] = shut_left[[5, 4]]
    assert faces.eyes_closed([faces.eye_aspect_ratio(shut_right), faces.eye_aspect_ratio(shut_left)])
    assert not faces.eyes_closed(face["openness"])
    # one eye shut, the other open (a wink): the mean of an open eye and a shut one
    wink = [faces.eye_aspect_ratio(shut_right), face["openness"][1]]
    assert faces.eyes_closed(wink) == (np.mean(wink) < faces.EYES_CLOSED_EAR)


# --- pure geometry: no backend needed -------------------------------------------------------


def test_eye_aspect_ratio_of_hand_made_eyes():
    # an eye 30 wide whose lids stand 6 and 10 apart: (6 + 10) / (2 x 30)
    points = [(0, 0), (10, -3), (20, -5), (30, 0), (20, 5), (10, 3)]
    assert faces.eye_aspect_ratio(points) == pytest.approx(16 / 60)
    assert faces.eye_aspect_ratio([(0, 0)] * 6) == 0.0


def test_the_face_focus_is_the_laplacian_variance_scipy_computes():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    grey = rng.uniform(0, 255, (40, 60)).astype(np.float32)
    expected = ndimage.laplace(grey.astype(np.float64))[1:-1, 1:-1].var()
    assert faces.laplacian_variance(grey) == pytest.approx(expected, rel=1e-4)


def test_judge_flags_closed_eyes_on_any_judged_face_and_softness_of_the_main_face():
    def face(area, focus, closed):
        side = area ** 0.5
        return {"box": [0, 0, side, side], "focus": focus, "eyes_closed": closed}

    results = {
        "a.jpg": {"faces": [face(0.2, 100.0, False)]},
        "b.jpg": {"faces": [face(0.2, 120.0, False), face(0.01, 5.0, True)]},  # a blink at the back
        "c.jpg": {"faces": [face(0.2, 20.0, False)]},  # the main face below a quarter of the median (100)
        "d.jpg": {"faces": [{"box": [0, 0, 0.1, 0.1], "focus": None, "eyes_closed": None}]},  # too small
        "e.jpg": {"faces": []},
        "f.jpg": {"error": "RuntimeError: boom"},
    }
    flags = faces.judge(results)
    assert {p: (f.eyes_closed, f.face_soft) for p, f in flags.items()} == {
        "a.jpg": (False, False), "b.jpg": (True, False), "c.jpg": (False, True),
        "d.jpg": (False, False), "e.jpg": (False, False), "f.jpg": (False, False)}
    assert faces.judge(results, soft_below=110.0)["a.jpg"].face_soft  # an absolute threshold instead


def test_without_the_extra_the_analyser_is_left_out(monkeypatch):
    from clip_cull.core import analysers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    assert analysers.active(("faces",)) == []
    assert not faces.available()
