"""Faces and eyes: where the faces are, whether their eyes are open, and whether they are sharp.

The analyser "faces" (core/analysers.py) runs MediaPipe's face detector and face mesh, whose
weights ship inside the ``mediapipe`` wheel (the ``faces`` extra; nothing is downloaded). Why
this backend and what it costs: docs/faces.md.

Per photo, on the image scaled to WORK_SIDE on its long side:

1. the full-range face detector (BlazeFace, 192 x 192 input) finds faces in the frame and in
   four overlapping tiles of it (small faces), with a score and six keypoints (the eyes among them);
2. each face large enough to judge (eyes at least MIN_IOD_PX apart) is cropped and run through
   the face mesh with its attention model (478 points, the eyelids and irises refined);
3. each eye's openness is its eye aspect ratio (EAR, Soukupova & Cech 2016): the mean of two
   lid-to-lid distances over the corner-to-corner width, from six points of the mesh's eye
   contour. A face's eyes are closed when the mean EAR of its two eyes is below EYES_CLOSED_EAR;
4. the face's focus is the variance of the Laplacian of the luminance over its eye region
   (both eyes with brows and lids), resampled so that the eyes are FOCUS_IOD px apart: faces of
   every size and photos of every resolution are measured at the same scale and compare.

Everything about the image is relative (0-1), so it does not depend on WORK_SIDE. Photo-level
judgements (which photo is `eyes-closed`, which `face-soft`) are made with the whole shoot in
view by ``judge``: a face is soft against the other faces of the shoot, as a frame is blurry
against the other frames (core/quality.py).

This module imports no torch: it runs in the indexing workers. The backend is imported on first
use, once per thread (MediaPipe's graphs are not safe to share between threads).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

from clip_cull.core.analysers import Analyser, register
from clip_cull.core.errors import InputError

NAME = "faces"
VERSION = 2  # 2: focus only on faces whose eyes are FOCUS_IOD px apart or more (1 upsampled small faces)
BACKEND = "mediapipe"  # the module the extra installs
EXTRA_HINT = "pip install 'clipcull[faces]'"  # how to get it (from a checkout: pip install '.[faces]')
WORK_SIDE = 960  # long side the detector and the mesh see; 960, not 1024: the indexer then decodes
# a 4000 x 2660 JPEG at half scale instead of whole (docs/faces.md: the cost)

MIN_SCORE = 0.5  # detector confidence for a face
MIN_IOD_PX = 16  # eyes this far apart (px, at WORK_SIDE) or more: eyes and focus are judged
MESH_SIDE = 384  # a face crop is scaled down to this side before the mesh (the mesh sees 192 px)
TILE = 0.6  # the detector's second look: four tiles, each this share of the width and height
CROP = 1.6  # the mesh's crop: this many times the detector's box, square, around it
EYES_CLOSED_EAR = 0.18  # mean eye aspect ratio below which a face's eyes are closed (docs/faces.md)
FOCUS_IOD = 32  # the eyes are resampled this many px apart before the Laplacian
FACE_SOFT_RELATIVE = 0.25  # face-soft: main face's focus below a quarter of the shoot's median

# Six points per eye from the mesh's eye contour, in the order of the EAR formula: outer corner,
# two upper lid points, inner corner, two lower lid points (p1..p6; EAR = (|p2p6| + |p3p5|) / 2|p1p4|).
# "right" is the subject's right eye (on the left of a frontal face in the photo).
EYE_POINTS = {"right": (33, 160, 158, 133, 153, 144), "left": (263, 387, 385, 362, 380, 373)}


def eye_aspect_ratio(points) -> float:
    """EAR of one eye from its six contour points (p1..p6 as EYE_POINTS orders them), in any
    units: 0 for a shut lid, about 0.25-0.35 for an open eye."""
    p = np.asarray(points, dtype=np.float64)
    width = float(np.linalg.norm(p[0] - p[3]))
    if width <= 0:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


def eyes_closed(openness: list[float] | tuple[float, ...]) -> bool:
    """A face's eyes are closed when the mean openness (EAR) of its eyes is below EYES_CLOSED_EAR."""
    return bool(float(np.mean(openness)) < EYES_CLOSED_EAR)


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a 2-D float image (the measure core/quality.py uses per tile)."""
    y = np.asarray(grey, dtype=np.float32)
    if min(y.shape) < 3:
        return 0.0
    lap = (y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1]) - 4.0 * y[1:-1, 1:-1]
    return float(lap.var())


def eye_region_focus(rgb: np.ndarray, eye_a, eye_b) -> float:
    """Focus of the region around two eye centres (px in rgb), resampled so that they are
    FOCUS_IOD px apart: a box 2 x IOD wide and 1 x IOD high, centred between the eyes."""
    from PIL import Image

    a, b = np.asarray(eye_a, np.float64), np.asarray(eye_b, np.float64)
    iod = float(np.linalg.norm(a - b))
    if iod <= 0:
        return 0.0
    centre = (a + b) / 2
    box = (centre[0] - iod, centre[1] - iod / 2, centre[0] + iod, centre[1] + iod / 2)
    size = (2 * FOCUS_IOD, FOCUS_IOD)
    grey = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    region = grey.resize(size, Image.BILINEAR, box=tuple(float(v) for v in box))
    return laplacian_variance(np.asarray(region, dtype=np.float32))


# --- the backend, one set of graphs per thread ---------------------------------------------

_local = threading.local()
_quiet_lock = threading.Lock()


def _graphs():
    graphs = getattr(_local, "graphs", None)
    if graphs is None:
        with _quiet_lock, _QuietStderr():
            os.environ.setdefault("GLOG_minloglevel", "2")
            import warnings

            # protobuf 4's deprecation warning, raised by mediapipe's own calls on every photo
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            from mediapipe.python.solutions import face_detection, face_mesh

            detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=MIN_SCORE)
            mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                      min_detection_confidence=MIN_SCORE)
            blank = np.zeros((64, 64, 3), np.uint8)  # the graphs log their start on the first frame
            detector.process(blank)
            mesh.process(blank)
        graphs = _local.graphs = (detector, mesh)
    return graphs


class _QuietStderr:
    """MediaPipe's C++ side logs its start-up (TFLite delegate, absl warnings) to file descriptor 2.
    While its graphs start, fd 2 goes to a temporary file; afterwards the lines that are not
    MediaPipe's start-up chatter are written back, so nothing else said meanwhile is lost."""

    NOISE = ("W0000 ", "I0000 ", "INFO: Created TensorFlow Lite", "WARNING: All log messages before absl")

    def __enter__(self):
        import sys
        import tempfile

        self._saved = None
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError):  # no fd 2 (an embedding host): let it talk
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        kept = [line for line in self._file.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not line.startswith(self.NOISE)]
        self._file.close()
        if kept:
            os.write(2, "".join(kept).encode())


# --- the analyser --------------------------------------------------------------------------


def measure(rgb: np.ndarray) -> dict:
    """The faces of one upright RGB uint8 image: see the module docstring. JSON-able:
    {"faces": [{"box": [x0, y0, x1, y1], "score", "eyes": [[x, y], [x, y]], "iod",
                "openness": [right, left] | None, "eyes_closed": bool | None,
                "focus": float | None, "contours": {"right": [[x, y] x 6], "left": ...} | None}]}
    Positions are relative to the image (0-1): the eyes are the mesh's eye centres where it ran,
    else the detector's; iod is the eyes' distance relative to the long side; largest face first."""
    detector, mesh = _graphs()
    rgb = np.ascontiguousarray(rgb[..., :3])
    h, w = rgb.shape[:2]
    faces = []
    for (x0, y0, x1, y1), score, eyes_px in _detect(detector, rgb):
        iod = float(np.linalg.norm(eyes_px[0] - eyes_px[1]))
        face = {"box": _rounded([x0 / w, y0 / h, x1 / w, y1 / h]), "score": round(score, 4),
                "eyes": [_rounded([x / w, y / h]) for x, y in eyes_px], "iod": round(iod / max(w, h), 5),
                "openness": None, "eyes_closed": None, "focus": None, "contours": None}
        if iod >= MIN_IOD_PX:
            contours = _eye_contours(mesh, rgb, (x0, y0, x1, y1), eyes_px)
            if contours is not None:  # the mesh places the eyes more exactly than the detector
                eyes_px = np.array([contours[eye].mean(axis=0) for eye in ("right", "left")])
                face["eyes"] = [_rounded([x / w, y / h]) for x, y in eyes_px]
                openness = [round(eye_aspect_ratio(contours[eye]), 4) for eye in ("right", "left")]
                face.update(openness=openness, eyes_closed=eyes_closed(openness),
                            contours={eye: [_rounded([x / w, y / h]) for x, y in points]
                                      for eye, points in contours.items()})
            if iod >= FOCUS_IOD:  # only where the eyes region has its own pixels: upsampled, any face looks soft
                face["focus"] = round(eye_region_focus(rgb, eyes_px[0], eyes_px[1]), 3)
        faces.append(face)
    faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    return {"faces": faces}


def _detect(detector, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
    """Faces as (box, score, the two eyes), in px of rgb. The detector sees its input at 192 x 192,
    so it misses faces smaller than about 3% of the frame; it runs again on four overlapping
    tiles (TILE of each side) to find faces down to about half that size. A face found twice
    (IoU above 0.3) is kept once, with the higher score."""
    h, w = rgb.shape[:2]
    views = [(0, 0, w, h)]
    tw, th = round(TILE * w), round(TILE * h)
    views += [(x, y, x + tw, y + th) for y in (0, h - th) for x in (0, w - tw)]
    found = []
    for left, top, right, bottom in views:
        view = rgb if (left, top, right, bottom) == (0, 0, w, h) else np.ascontiguousarray(rgb[top:bottom, left:right])
        vw, vh = right - left, bottom - top
        for detection in detector.process(view).detections or []:
            box = detection.location_data.relative_bounding_box
            x0, y0 = max(0, left + box.xmin * vw), max(0, top + box.ymin * vh)
            x1, y1 = min(w, left + (box.xmin + box.width) * vw), min(h, top + (box.ymin + box.height) * vh)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            points = detection.location_data.relative_keypoints
            eyes = np.array([(left + points[i].x * vw, top + points[i].y * vh) for i in (0, 1)])
            found.append(((x0, y0, x1, y1), float(detection.score[0]), eyes))
    kept: list = []
    for face in sorted(found, key=lambda f: -f[1]):
        if all(_iou(face[0], other[0]) <= 0.3 for other in kept):
            kept.append(face)
    return kept


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _eye_contours(mesh, rgb: np.ndarray, box_px, eyes_px: np.ndarray) -> dict | None:
    """The six EAR points of each eye (px in rgb) from the face mesh run on a crop around the
    face, or None when the mesh finds no face there, or finds another one (a neighbour in a group)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    cx, cy = (box_px[0] + box_px[2]) / 2, (box_px[1] + box_px[3]) / 2
    half = CROP * max(box_px[2] - box_px[0], box_px[3] - box_px[1]) / 2
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
    if right - left < 8 or bottom - top < 8:
        return None
    crop = rgb[top:bottom, left:right]
    scale = min(1.0, MESH_SIDE / max(crop.shape[:2]))
    if scale < 1:
        crop = np.asarray(Image.fromarray(crop).resize(
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), Image.BILINEAR))
    result = mesh.process(np.ascontiguousarray(crop)).multi_face_landmarks
    if not result:
        return None
    ch, cw = crop.shape[:2]
    points = np.array([(p.x * cw / scale + left, p.y * ch / scale + top) for p in result[0].landmark])
    contours = {eye: points[list(index)] for eye, index in EYE_POINTS.items()}
    # the mesh's eye centres must be the detector's eyes (either order: a profile may swap them)
    iod = float(np.linalg.norm(eyes_px[0] - eyes_px[1]))
    centres = sorted((c.mean(axis=0) for c in contours.values()), key=lambda c: c[0])
    detected = sorted(eyes_px, key=lambda c: c[0])
    if any(np.linalg.norm(c - d) > 0.5 * iod for c, d in zip(centres, detected)):
        return None
    return contours


def _rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values]


ANALYSER = register(Analyser(NAME, VERSION, measure, work_side=WORK_SIDE, requires=(BACKEND,)))


def available() -> bool:
    """Whether the faces extra is installed here."""
    return ANALYSER.available()


class FacesUnavailable(InputError):
    """A face feature was asked for where the faces extra is not installed."""


def require(feature: str) -> None:
    """Raise FacesUnavailable, naming the feature and how to install the extra, unless it is here."""
    if not available():
        raise FacesUnavailable(f"{feature} needs the faces extra, which is not installed here: {EXTRA_HINT} "
                               "(Python 3.10 to 3.12; see docs/faces.md)")


def require_for_penalties(penalize) -> None:
    """Penalising closed eyes or soft faces without the extra would silently do nothing: refused."""
    asked = [p for p in (penalize or ()) if p in ("eyes", "face")]
    if asked:
        require(f"--penalize {','.join(asked)}")


# --- close-ups ------------------------------------------------------------------------------

CLOSEUP_MARGIN = 0.7  # a close-up's half side, relative to the face box's larger side: 1.4 x the face


def closeup(image, box, px: int):
    """A square close-up of a face in an upright PIL image: centred on its box (relative to the
    image, 0-1), CLOSEUP_MARGIN x 2 of its larger side, resized to px x px. The report and the
    review page both show faces through this."""
    from PIL import Image

    w, h = image.size
    cx, cy = (box[0] + box[2]) / 2 * w, (box[1] + box[3]) / 2 * h
    half = CLOSEUP_MARGIN * max((box[2] - box[0]) * w, (box[3] - box[1]) * h)
    crop = image.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half))).convert("RGB")
    return crop.resize((px, px), Image.BICUBIC)


def closeup_of(data: bytes, box, px: int):
    """The close-up (see closeup) from a photo's bytes, decoded upright at the analyser's scale;
    None when they cannot be decoded."""
    from clip_cull.core.images import decode_photo

    try:
        image, _ = decode_photo(data, min_side=WORK_SIDE * 2 // 3)
    except Exception:
        return None
    return closeup(image, box, px)


# --- judging the photos of a shoot ---------------------------------------------------------


@dataclass
class FaceFlags:
    eyes_closed: bool = False  # a judged face has its eyes closed
    face_soft: bool = False  # the main (largest judged) face is soft for this shoot
    soft: list = field(default_factory=list)  # per face, in the result's order: soft for this shoot (None: not judged)


def judged(faces: list[dict]) -> list[dict]:
    """The faces large enough to judge (their eyes measured, and their focus where the eyes are
    FOCUS_IOD px apart or more), largest first."""
    faces = [f for f in faces if f.get("openness") is not None or f.get("focus") is not None]
    return sorted(faces, key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def judge(results: dict[str, dict], soft_below: float | None = None) -> dict[str, FaceFlags]:
    """Flags per photo from its faces result: eyes-closed when any judged face's eyes are
    closed; face-soft when its main face's focus is below FACE_SOFT_RELATIVE x the median focus
    of the main faces of these photos (or below soft_below, an absolute figure). Photos without
    a result, or whose analysis failed, get no flags."""
    # the main face is the largest judged one; a photo whose main face is too small for its focus
    # to be measured (a group, a wide shot) is not judged soft on a smaller face's behalf
    main = {path: judged(r.get("faces") or [])[0] for path, r in results.items() if judged(r.get("faces") or [])}
    main = {path: face for path, face in main.items() if face.get("focus") is not None}
    if soft_below is None and main:
        soft_below = FACE_SOFT_RELATIVE * float(np.median([f["focus"] for f in main.values()]))
    out = {}
    for path, result in results.items():
        every = result.get("faces") or []
        closed = any(f.get("eyes_closed") for f in judged(every))
        soft = path in main and soft_below is not None and main[path]["focus"] < soft_below
        each = [None if f.get("focus") is None or soft_below is None else bool(f["focus"] < soft_below) for f in every]
        out[path] = FaceFlags(closed, soft, each)
    return out
