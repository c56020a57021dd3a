"""File operations that never lose a photo: atomic writes, moves that never overwrite, and
cross-filesystem moves that copy, fsync and verify before the source goes."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from clip_cull.files import file_sha256

PARTIAL_SUFFIX = ".clipcull-partial"


class FileOpError(Exception):
    pass


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside path, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def free_name(dst: Path, taken: set[str]) -> Path:
    """dst, or dst with -1, -2, ... before the extension when that name exists or is planned."""
    candidate, n = dst, 0
    while os.path.lexists(candidate) or str(candidate) in taken:
        n += 1
        candidate = dst.with_name(f"{dst.stem}-{n}{dst.suffix}")
    return candidate


def transfer(src: str | Path, dst: str | Path, copy: bool = False) -> None:
    """Move (or copy) src to dst, never overwriting. A rename where possible; across file
    systems: copy to a temporary name, fsync, verify size and sha256, rename into place, and
    only then remove the source."""
    src, dst = Path(src), Path(dst)
    if os.path.lexists(dst):
        raise FileOpError(f"{dst} exists; clipcull never overwrites")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.rename(src, dst)
            _fsync_dir(dst.parent)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    _copy_verified(src, dst)
    if not copy:
        os.unlink(src)
        _fsync_dir(src.parent)


def _copy_verified(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + PARTIAL_SUFFIX)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    if os.path.getsize(tmp) != os.path.getsize(src) or file_sha256(tmp) != file_sha256(src):
        os.unlink(tmp)
        raise FileOpError(f"copy of {src} did not verify; the source is untouched")
    if os.path.lexists(dst):
        os.unlink(tmp)
        raise FileOpError(f"{dst} appeared meanwhile; clipcull never overwrites")
    os.rename(tmp, dst)
    _fsync_dir(dst.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
