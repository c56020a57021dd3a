"""The AVA dataset as distributed: AVA.txt, the images, and the train / validation / test split.

AVA.txt rows: index, image id, counts of ratings 1..10, two semantic tag ids, challenge id.
Mean score = sum_i i * p_i; the binary label is mean > 5 (a mean of exactly 5 is negative).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.core.errors import InputError

PAPER_TOTAL = 255_530
PAPER_TEST = 25_551  # the paper's test split: about 10% of AVA


@dataclass
class AvaSet:
    folder: Path
    ids: list[str]
    counts: np.ndarray  # (N, 10) rating counts
    paths: list[Path | None]  # None where the image is missing

    @property
    def means(self) -> np.ndarray:
        return mean_scores(self.counts)

    def index(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}


def mean_scores(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts * np.arange(1, 11)).sum(axis=1) / totals


def binary_labels(means: np.ndarray) -> np.ndarray:
    return np.asarray(means) > 5.0


def load_ava(folder: str | Path) -> AvaSet:
    """AVA.txt and the images' paths, absolute (os.path.abspath, as `rank` spells the paths it
    caches): the cache keys files by path, so `eval ava` and `eval ./ava` must name the same
    rows, or 255k images are re-read and re-hashed."""
    import os

    folder = Path(os.path.abspath(Path(folder).expanduser()))
    index = next((p for p in (folder / "AVA.txt", folder / "AVA_dataset" / "AVA.txt") if p.is_file()), None)
    if index is None:
        raise InputError(f"no AVA.txt in {folder} (expected {folder / 'AVA.txt'})")
    ids, counts = [], []
    for n, line in enumerate(index.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            row = [int(p) for p in parts[2:12]]
        except ValueError:
            raise InputError(f"{index}:{n}: expected integers (index, image id, ten rating counts, ...)") from None
        if len(row) != 10:
            raise InputError(f"{index}:{n}: expected ten rating counts after the image id")
        if sum(row) == 0:
            continue  # no votes, no mean score
        ids.append(parts[1])
        counts.append(row)
    images = folder / "images" if (folder / "images").is_dir() else folder
    paths = [(images / f"{i}.jpg") if (images / f"{i}.jpg").is_file() else None for i in ids]
    return AvaSet(folder, ids, np.array(counts, np.int64).reshape(-1, 10), paths)


@dataclass
class Split:
    train: list[str]
    validation: list[str]
    test: list[str]
    source: str  # where it came from: files, or the seed that drew it

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(vars(self)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        return cls(**json.loads(Path(path).read_text()))


def read_ids(path: str | Path) -> list[str]:
    """Image ids from a text list (one a line) or a CSV (first column; a header is skipped)."""
    path = Path(path)
    ids = []
    with open(path, newline="") as f:
        for row in csv.reader(f) if path.suffix.lower() == ".csv" else ([line] for line in f):
            cell = row[0].strip() if row else ""
            if cell and cell.split()[0].isdigit():
                ids.append(cell.split()[0])
    if not ids:
        raise InputError(f"no image ids found in {path}")
    return ids


def make_split(
    ava: AvaSet,
    test_ids: list[str] | None = None,
    validation_ids: list[str] | None = None,
    test_fraction: float | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """The paper's split: given test (and validation) id lists, else a seeded random draw of
    25,551 test images from the full AVA (10% of a smaller set, or test_fraction), then 10%
    of the rest for validation."""
    rng = np.random.default_rng(seed)
    ids = sorted(ava.ids, key=lambda i: (len(i), i))
    known = set(ids)
    if test_ids is not None:
        test = [i for i in test_ids if i in known]
        source = "files"
    else:
        count = round(len(ids) * (test_fraction if test_fraction is not None else PAPER_TEST / PAPER_TOTAL))
        test = sorted(rng.permutation(ids)[:count].tolist(), key=lambda i: (len(i), i))
        source = f"seed {seed}"
    test_set = set(test)
    rest = [i for i in ids if i not in test_set]
    if validation_ids is not None:
        rest_set = set(rest)
        validation = [i for i in validation_ids if i in rest_set]
    else:
        count = round(len(rest) * validation_fraction)
        validation = sorted(rng.permutation(rest)[:count].tolist(), key=lambda i: (len(i), i))
    validation_set = set(validation)
    train = [i for i in rest if i not in validation_set]
    return Split(train, validation, test, source)
