"""open_clip's evaluation transform, done with one Pillow resize of just the part that survives.

open_clip evaluates images with: resize the shortest side to S (bicubic), centre-crop S x S,
to tensor, normalise. Resizing the whole decoded photo only to throw away its sides wastes a
third of the work on a 3:2 frame (far more on a panorama). Pillow can resample straight from a
box of the source with the same scale, so CentreSquarePreprocess resizes only the centre
square and normalises with numpy: the same pixels as the transform (to float rounding), about
1.6x faster, and without torch, so decode workers can run before torch is even imported.

from_transform recognises that transform and returns None for anything else (another resize
mode, extra steps): the caller then uses the transform itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# open_clip's OPENAI_DATASET_MEAN / _STD, its defaults (copied: importing open_clip imports torch).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Steps of open_clip's eval transform that only make sure the input is an RGB tensor.
_PASS_THROUGH = {"MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb", "convert_to_rgb"}
_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


@dataclass(frozen=True)
class CentreSquarePreprocess:
    size: int  # S: the side of the square the model sees
    resample: int  # a Pillow filter
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_transform(cls, transform) -> CentreSquarePreprocess | None:
        steps = list(getattr(transform, "transforms", []))
        names = [type(s).__name__ if type(s).__name__ != "function" else s.__name__ for s in steps]
        kept = [(n, s) for n, s in zip(names, steps) if n not in _PASS_THROUGH]
        if [n for n, _ in kept] != ["Resize", "CenterCrop", "Normalize"] or "ToTensor" not in "".join(names):
            return None
        resize, crop, normalize = (s for _, s in kept)
        size = resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 else resize.size
        if not isinstance(size, int) or getattr(resize, "max_size", None) is not None:
            return None
        if tuple(crop.size) != (size, size):
            return None
        resample = _PIL_FILTERS.get(getattr(resize.interpolation, "value", str(resize.interpolation)))
        if resample is None or len(normalize.mean) != 3 or len(normalize.std) != 3:
            return None
        return cls(size, resample, tuple(map(float, normalize.mean)), tuple(map(float, normalize.std)))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image to a float32 array (3, S, S), as the transform would give."""
        return self.normalise(self.square(image))

    def square(self, image: Image.Image) -> np.ndarray:
        """The pixels the model sees, before normalisation: uint8 (S, S, 3). What the indexing
        workers hand back (a quarter of the float32's bytes, and no torch needed)."""
        return np.asarray(image.resize((self.size, self.size), self.resample, box=self.source_box(*image.size)))

    def normalise(self, squares: np.ndarray) -> np.ndarray:
        """uint8 (..., S, S, 3) to float32 (..., 3, S, S): / 255, - mean, / std, in float32. The
        same operations, in the same order, as ClipEncoder.encode_squares does on the device."""
        pixels = np.asarray(squares, dtype=np.float32) / np.float32(255)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(pixels, -1, -3))

    @property
    def geometry(self) -> tuple[int, int]:
        """What decides the square's pixels (side, filter): the mean and std only normalise."""
        return self.size, self.resample

    @classmethod
    def predicted(cls, size: int) -> CentreSquarePreprocess:
        """open_clip's default eval transform for a model of this input size (bicubic, shortest
        side, OpenAI's mean and std), known before the model loads: the indexer decodes with it
        meanwhile and checks it against the loaded model's own transform."""
        return cls(size, Image.BICUBIC, OPENAI_MEAN, OPENAI_STD)

    def source_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the source that becomes the crop, computed as torchvision does:
        the short side to S, the long side to int(S * long / short), the crop offset rounded."""
        s = self.size
        if width <= height:
            new_w, new_h = s, int(s * height / width)
        else:
            new_w, new_h = int(s * width / height), s
        left = int(round((new_w - s) / 2.0))
        top = int(round((new_h - s) / 2.0))
        sx, sy = width / new_w, height / new_h
        return (left * sx, top * sy, (left + s) * sx, (top + s) * sy)


# --- the authors' exact path ----------------------------------------------------------------------

FAST = "fast"  # the photographer's path: EXIF rotation, reduced-scale decode, centre square
EXACT = "exact"  # the paper's path: preprocess(Image.open(path).convert("RGB")), nothing else


def open_exact(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """An image as the authors' code opened it: Image.open(...).convert("RGB"). No EXIF
    rotation (a portrait stored sideways stays sideways), no reduced-scale decoding, no crop
    of wide images; Pillow's own decompression-bomb limit still applies. Raises
    UnreadableImage with a reason for anything Pillow cannot open or decode."""
    import io

    from clip_cull.core.images import UnreadableImage

    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        if max_pixels is not None and image.size[0] * image.size[1] > max_pixels:
            raise UnreadableImage(f"{image.size[0]}x{image.size[1]} is over the limit of {max_pixels / 1e6:.0f} "
                                  f"megapixels (--max-pixels)")
        image.load()
        return image.convert("RGB")
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"too many pixels ({e})") from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableImage(f"not an image Pillow can decode: {reason}") from None


def embedding_key(model_id: str, preprocessing: str) -> str:
    """The cache key of image embeddings: the model and the preprocessing that made them, so
    rank's fast embeddings never stand in for train/eval's exact ones (or the other way).
    Fast embeddings keep the bare model id (the key every existing cache has); exact ones get
    `|exact`. No schema change: the key is a string in the same column."""
    if preprocessing == FAST:
        return model_id
    if preprocessing == EXACT:
        return f"{model_id}|exact"
    raise ValueError(f"unknown preprocessing {preprocessing!r}")
