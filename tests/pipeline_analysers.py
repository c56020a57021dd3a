"""Analysers that tests/test_pipeline.py runs in worker processes: module-level functions of a
module the workers can import, which imports neither torch nor clip_cull (a worker that finds
torch in sys.modules imported it itself)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np


def where_it_ran(rgb: np.ndarray) -> dict:
    return {"pid": os.getpid(), "torch": "torch" in sys.modules, "mean": float(rgb.mean())}


def crash_on_grey(rgb: np.ndarray) -> dict:
    """Ends its process, as a segfault in a decoder or a detector would, on a flat grey photo."""
    if rgb.std() < 1:
        os._exit(3)
    return {}


def always_crash(rgb: np.ndarray) -> dict:
    os._exit(3)


def mark_and_go_on(marks: str, rgb: np.ndarray) -> dict:
    """Leaves a file in marks for each photo measured: a worker process says so."""
    Path(marks, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    return {}
