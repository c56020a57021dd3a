"""File operations that never lose a photo: atomic writes, moves that never overwrite, and
cross-filesystem moves that copy, fsync and verify before the source goes."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import time
from pathlib import Path

from clip_cull.core.files import file_sha256

PARTIAL_SUFFIX = ".clipcull-partial"
OTHER_RUNS_PARTIAL_AGE_S = 120  # a partial file of another run this fresh may still be written to


class FileOpError(Exception):
    pass


class FileSystem:
    """The seam between clipcull's file operations and the operating system: every call in this
    module (and so in culling.move, which moves only through transfer and remove_if_duplicate)
    that makes, renames, removes or syncs a name goes through `fs`, an instance of this class.
    The methods are os's own calls, unchanged; nothing else uses the seam. Tests inject faults
    (a full disk, another file system, a read-only folder, Ctrl-C mid-copy) by replacing one
    operation on `fs` for a while (tests/helpers.py: `faults`), never by patching `os`."""

    def create(self, path):
        """A new file at path, open for writing bytes (an existing name is an error)."""
        return open(path, "xb")

    def link(self, src, dst) -> None:
        os.link(src, dst, follow_symlinks=False)

    def rename(self, src, dst) -> None:
        os.rename(src, dst)

    def replace(self, src, dst) -> None:
        os.replace(src, dst)

    def unlink(self, path) -> None:
        os.unlink(path)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def copy(self, fin, fout) -> None:
        """Copy an open file's bytes to another (1 MiB at a time)."""
        shutil.copyfileobj(fin, fout, 1 << 20)


fs = FileSystem()


def write_atomic(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temporary file beside path, fsync, then rename over it. The file keeps the
    permission bits it had (a read-only sidecar stays read-only: the rename replaces it all the
    same), or takes `mode` when given. A temporary file is never left behind by an error."""
    path = Path(path)
    tmp = partial_path(path)
    if mode is None:
        try:
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            mode = None
    try:
        with fs.create(tmp) as f:
            f.write(data)
            f.flush()
            fs.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        keep_attributes(path, tmp)
        fs.replace(tmp, path)
    except BaseException:
        _drop_partial(tmp)
        raise
    _fsync_dir(path.parent)


def keep_attributes(old: Path, new: Path) -> None:
    """What the file at `old` carries besides its bytes goes to `new` before `new` replaces it:
    extended attributes (KDE/Baloo ratings and tags, macOS Finder tags, SELinux labels) and, where
    permitted, owner and group. A rename would otherwise drop them silently."""
    try:
        st = os.lstat(old)
    except OSError:
        return  # a new file: nothing to keep
    if not stat.S_ISREG(st.st_mode):
        return
    for name in _xattr_names(old):
        try:
            os.setxattr(new, name, os.getxattr(old, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # a namespace this user may not write (security.*, trusted.*): nothing lost on disk
    if hasattr(os, "chown"):
        try:
            os.chown(new, st.st_uid, st.st_gid, follow_symlinks=False)
        except OSError:
            pass  # only root may give a file away; the user's own file stays the user's


def _xattr_names(path: Path) -> list[str]:
    if not hasattr(os, "listxattr"):
        return []
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _drop_partial(tmp: Path) -> None:
    """Remove clipcull's own temporary file after an error (never anything else)."""
    try:
        if stat.S_ISREG(os.lstat(tmp).st_mode):
            fs.unlink(tmp)
    except OSError:
        pass


def partial_path(dst: str | Path) -> Path:
    """The temporary name a write or copy to dst goes through: `.` + a hash of dst's name +
    PARTIAL_SUFFIX, beside it: 34 bytes whatever dst's name (dst's name + the suffix would pass the
    255 bytes a file name may have for names over 238 bytes), and derived from dst alone, so that
    a later run or undo finds what a killed one left (sweep_partials)."""
    dst = Path(dst)
    digest = hashlib.sha256(os.fsencode(dst.name)).hexdigest()[:16]
    return dst.with_name(f".{digest}{PARTIAL_SUFFIX}")


def _partials_of(dst: str | Path) -> list[Path]:
    """Every temporary name a write to dst may have left: today's, and the one clipcull used
    before (dst's name + PARTIAL_SUFFIX)."""
    return [partial_path(dst), Path(str(dst) + PARTIAL_SUFFIX)]


def sweep_partials(destinations, older_than_s: float = 0) -> list[str]:
    """Remove the temporary files (partial_path, or the older name + `.clipcull-partial`) a
    killed write or copy left next to these destinations. Only those exact names, and only a
    regular file: the source of a copy and the previous version of a sidecar are never touched,
    since clipcull replaces or removes them only after the temporary file is complete.
    older_than_s spares a file still being written by another clipcull process."""
    removed = []
    now = time.time()
    for dst in dict.fromkeys(destinations):
        for tmp in _partials_of(dst):
            try:
                st = os.lstat(tmp)  # an older name too long for the file system: ENAMETOOLONG, nothing there
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than_s:
                    fs.unlink(tmp)
                    removed.append(str(tmp))
            except OSError:
                continue
    return removed


def name_too_long(path: str | Path) -> bool:
    """Does the file system refuse path's name as too long? (Its own verdict, ENAMETOOLONG on
    lookup: limits differ between file systems.)"""
    try:
        os.lstat(path)
    except OSError as e:
        return e.errno == errno.ENAMETOOLONG
    return False


def remove_if_duplicate(path: str | Path, keep: str | Path) -> bool:
    """Unlink path only when another name, keep, holds the same photo: both regular files (by
    lstat: a symlink never counts), not the same directory entry, and either hard links of one
    inode or equal in size and sha256. Returns whether path was removed."""
    try:
        p, k = os.lstat(path), os.lstat(keep)
    except OSError:
        return False
    if not (stat.S_ISREG(p.st_mode) and stat.S_ISREG(k.st_mode)) or _same_entry(path, keep):
        return False
    if (p.st_dev, p.st_ino) == (k.st_dev, k.st_ino):
        if p.st_nlink < 2:
            return False
    elif p.st_size != k.st_size or file_sha256(path) != file_sha256(keep):
        return False
    fs.unlink(path)
    _fsync_dir(Path(path).parent)
    return True


def _same_entry(a: str | Path, b: str | Path) -> bool:
    """The same name in the same folder, even reached through symlinked folders."""
    a, b = Path(a), Path(b)
    return a.name == b.name and os.path.realpath(a.parent) == os.path.realpath(b.parent)


def free_name(dst: Path, taken: set[str]) -> Path:
    """dst, or dst with -1, -2, ... before the extension when that name exists or is planned."""
    candidate, n = dst, 0
    while os.path.lexists(candidate) or str(candidate) in taken:
        n += 1
        candidate = dst.with_name(f"{dst.stem}-{n}{dst.suffix}")
    return candidate


def transfer(src: str | Path, dst: str | Path, copy: bool = False) -> None:
    """Move (or copy) src to dst, never overwriting. Within a file system: a hard link at dst,
    then the old name goes (no moment without the photo, and an existing dst is never replaced);
    where hard links are not supported, a rename after checking dst is free. Across file systems:
    copy to a temporary name, fsync, verify size and sha256, rename into place, and only then
    remove the source."""
    src, dst = Path(src), Path(dst)
    if os.path.lexists(dst):
        raise FileOpError(f"{dst} exists; clipcull never overwrites")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            fs.link(src, dst)
        except FileExistsError:
            raise FileOpError(f"{dst} appeared meanwhile; clipcull never overwrites") from None
        except OSError as e:
            if e.errno == errno.EXDEV:
                pass  # another file system: copy and verify below
            elif e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                if os.path.lexists(dst):
                    raise FileOpError(f"{dst} appeared meanwhile; clipcull never overwrites") from None
                fs.rename(src, dst)
                _fsync_dir(dst.parent)
                return
            else:
                raise
        else:
            _fsync_dir(dst.parent)
            try:
                removed = remove_if_duplicate(src, dst)
            except OSError:
                _take_back(dst)  # the old name cannot go (a read-only folder): not left in two places
                raise
            if not removed:
                raise FileOpError(f"{src} changed while it was moved; both names are kept")
            return
    before = os.lstat(src)
    _copy_verified(src, dst)
    if not copy:
        after = os.lstat(src)  # the copy was verified against these bytes: the source may go
        if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != (
                before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns) or not stat.S_ISREG(after.st_mode):
            raise FileOpError(f"{src} changed while it was copied to {dst}; both are kept")
        try:
            fs.unlink(src)
        except OSError:
            _take_back(dst)  # the source cannot go: the verified copy goes again, one place only
            raise
        _fsync_dir(src.parent)


def _take_back(dst: Path) -> None:
    """Remove the name clipcull has just made at dst (a hard link to the source, or a verified
    copy of it) when the source could not be removed: the photo stays where it was, once."""
    try:
        fs.unlink(dst)
        _fsync_dir(dst.parent)
    except OSError:
        pass


def _copy_verified(src: Path, dst: Path) -> None:
    tmp = partial_path(dst)
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            fs.copy(fin, fout)
            fout.flush()
            fs.fsync(fout.fileno())
        shutil.copystat(src, tmp)
    except BaseException:
        _drop_partial(tmp)  # a full disk or Ctrl-C: the source is untouched, no half copy stays
        raise
    if os.path.getsize(tmp) != os.path.getsize(src) or file_sha256(tmp) != file_sha256(src):
        fs.unlink(tmp)
        raise FileOpError(f"copy of {src} did not verify; the source is untouched")
    if os.path.lexists(dst):
        fs.unlink(tmp)
        raise FileOpError(f"{dst} appeared meanwhile; clipcull never overwrites")
    fs.rename(tmp, dst)
    _fsync_dir(dst.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        fs.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
