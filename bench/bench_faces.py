"""Face analysis (core/faces.py): its cost per photo on this machine, and its detection on the
real faces that ship in scikit-image.

    python bench/bench_faces.py [--repeat 20]

Costs, per photo, as the indexer pays them: each photo is a 4000 px JPEG (quality 92) decoded
the way the indexer decodes it (decode_photo: a reduced DCT scale that keeps the short side at
least twice the size wanted), once for the model alone (224) and once for the faces as well
(2/3 of WORK_SIDE); then the analyser as the indexer calls it (measure_all: scaled to WORK_SIDE,
detection on the frame and four tiles, the mesh on each face large enough). Median and 90th
percentile over the repeats, one thread, after a warm-up; plus the one-off start of the graphs.

Detection: scikit-image's lfw_subset holds 100 faces from Labeled Faces in the Wild and 100
patches without one, 25 x 25 px grey; each is scaled to 100 px and set in a 200 px grey frame.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clip_cull.core import faces  # noqa: E402
from clip_cull.core.analysers import measure_all  # noqa: E402


def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def photos() -> dict[str, Image.Image]:
    import matplotlib
    import skimage.data

    astronaut = Image.fromarray(skimage.data.astronaut())
    with Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg") as im:
        grace = im.convert("RGB")
    # four real faces in one 4000 x 3000 frame, each about 12% of its width (a small group)
    group = Image.fromarray(skimage.data.astronaut()[:40, :40]).resize((4000, 3000), Image.BILINEAR)
    for i, face in enumerate([astronaut, grace, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grace]):
        group.paste(face.resize((960, round(960 * face.height / face.width))), (40 + i * 990, 900))
    return {
        "portrait, 1 face": astronaut.resize((4000, 4000), Image.BICUBIC),
        "group, 4 faces": group,
        "no face (cat)": Image.fromarray(skimage.data.chelsea()).resize((4000, 2660), Image.BICUBIC),
    }


def percentiles(times: list[float]) -> str:
    times = sorted(times)
    return f"{statistics.median(times) * 1000:.1f} ms median, {times[int(0.9 * (len(times) - 1))] * 1000:.1f} ms p90"


def timed(image: Image.Image, repeat: int) -> str:
    from clip_cull.core.images import decode_photo

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    decode_model, decode_faces, analyse = [], [], []
    for i in range(repeat + 1):  # the first is a warm-up
        start = time.perf_counter()
        decode_photo(data, min_side=224)
        decoded = time.perf_counter()
        big, _ = decode_photo(data, min_side=faces.WORK_SIDE * 2 // 3)
        decoded_big = time.perf_counter()
        [(_, _, result)] = measure_all(big, [faces.ANALYSER])
        done = time.perf_counter()
        if i:
            decode_model.append(decoded - start)
            decode_faces.append(decoded_big - decoded)
            analyse.append(done - decoded_big)
    return (f"decode for the model {percentiles(decode_model)}; decode for the faces {percentiles(decode_faces)}; "
            f"faces analyser {percentiles(analyse)}; {len(result['faces'])} faces found")


def start_cost() -> float:
    """The graphs' start in a fresh thread (each indexing thread pays it once)."""
    took = []

    def start():
        began = time.perf_counter()
        faces._graphs()
        took.append(time.perf_counter() - began)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    return took[0] * 1000


def lfw() -> tuple[int, int]:
    import skimage.data

    crops = skimage.data.lfw_subset()  # 200 x 25 x 25, floats 0-1: 100 faces, then 100 without
    found = []
    for crop in crops:
        frame = np.full((200, 200), 128, np.uint8)
        frame[50:150, 50:150] = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((100, 100),
                                                                                                 Image.BICUBIC))
        found.append(len(faces.measure(np.stack([frame] * 3, axis=-1))["faces"]) > 0)
    return sum(found[:100]), sum(found[100:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    import mediapipe

    print(f"machine: {cpu()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"mediapipe {mediapipe.__version__}, numpy {np.__version__}; WORK_SIDE {faces.WORK_SIDE}")
    print(f"graphs' start in a new thread: {start_cost():.0f} ms (once per thread)")
    for name, image in photos().items():
        print(f"{name}: {timed(image, args.repeat)}")
    faces_found, false_found = lfw()
    print(f"lfw_subset: faces found in {faces_found}/100 face crops, in {false_found}/100 crops without a face")


if __name__ == "__main__":
    main()
