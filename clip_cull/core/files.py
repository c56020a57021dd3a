"""Finding photos in folders and telling when a file is the same as last time."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat as stat_mode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from clip_cull.core.errors import InputError

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".dng", ".pef"})
REJECTS_DIRNAME = "_rejects"  # where culling moves rejects; never ranked again
# Folders of other programs' previews, never photos of their own: Synology's thumbnails, the
# freedesktop thumbnail cache, Lightroom's previews (a leading dot is skipped anyway).
SKIPPED_FOLDERS = ("@eaDir", ".thumbnails", "*.lrdata", "*.lrdata.*")
HEIF_HINT = "HEIC/HEIF needs the optional extra: pip install 'clipcull[heic]'"
# Photos are read whole into memory to be hashed and decoded: a larger file is refused before
# a byte of it is read (a 100 MP camera RAW is ~200 MB; larger scans can raise the bound).
DEFAULT_MAX_FILE_BYTES = 512 * 2**20


class FileTooLarge(OSError):
    """A file over the size bound of this run: refused before reading, not remembered."""


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder where a file was expected: never opened for reading."""


@dataclass(frozen=True)
class FileStat:
    """A file as the cache identifies it: absolute path, size and modification time."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class WalkResult:
    photos: list[FileStat] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # HEIC or RAW without their extra: a hint, not an error
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): could not be read
    # A RAW beside a JPEG (or HEIC) of the same name is one photo with it: photo -> its RAW files
    companions: dict[str, list[str]] = field(default_factory=dict)


def is_raw(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in RAW_EXTENSIONS


def heif_available() -> bool:
    """Registers pillow-heif's opener with Pillow when it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@dataclass(frozen=True)
class PhotoSource:
    """Which photos a run reads: folders (or single photos), the optional formats it reads
    (HEIC needs pillow-heif, RAW needs rawpy) and the names it skips (globs)."""

    roots: tuple[str, ...]
    heif: bool = False
    raw: bool = False
    exclude: tuple[str, ...] = ()

    def walk(self) -> "WalkResult":
        return walk_photos(self.roots, heif=self.heif, raw=self.raw, exclude=self.exclude)


def walk_photos(
    roots: Iterable[str | Path],
    *,
    heif: bool = False,
    raw: bool = False,
    exclude_dirnames: frozenset[str] = frozenset({REJECTS_DIRNAME}),
    exclude: Iterable[str] = (),
) -> WalkResult:
    """All photos under the roots (folders, or single files), sorted and without repeats.

    Hidden files and folders (a leading dot, which covers macOS's `._*` files) and the
    excluded folders are left out; folder symlinks are not followed, so a link loop is harmless.
    Files and folders whose name matches a glob of `exclude` (or of SKIPPED_FOLDERS) are skipped.
    HEIC files without pillow-heif land in `unsupported`; files and folders that cannot be
    read, or whose names are not valid UTF-8, in `errors`.
    """
    result = WalkResult()
    seen: set[str] = set()
    extensions = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS
    for root in roots:
        root_path = os.path.abspath(os.path.expanduser(str(root)))
        if os.path.isdir(root_path):
            candidates: Iterable[str] = _walk_dir(root_path, exclude_dirnames, result.errors, (*SKIPPED_FOLDERS, *exclude))
        elif os.path.lexists(root_path):
            candidates = [root_path]  # a file, or something odd that is reported below with its kind
        else:
            raise InputError(f"no such file or folder: {root}")
        # Plain strings, not Path objects: this loop runs once per file of large folders.
        for path in candidates:
            suffix = os.path.splitext(path)[1].lower()
            if suffix not in extensions or path in seen:
                continue
            seen.add(path)
            if suffix in HEIF_EXTENSIONS and not heif:
                result.unsupported.append(path)
                continue
            if not _utf8(path):
                result.errors.append((path, "file name is not valid UTF-8 (the file's or a folder's); rename it to index the file"))
                continue
            try:
                st = os.stat(path)  # follows a link: what matters is what would be read
            except OSError as e:
                result.errors.append((path, f"cannot read file: {e.strerror or e}"))
                continue
            if not stat_mode.S_ISREG(st.st_mode):
                result.errors.append((path, not_regular_reason(st.st_mode)))
                continue
            result.photos.append(FileStat(path, st.st_size, st.st_mtime_ns))
    _pair_raw_files(result, raw)
    result.photos.sort(key=lambda f: f.path)
    return result


def _pair_raw_files(result: WalkResult, raw_supported: bool) -> None:
    """A RAW with a JPEG/HEIC of the same stem in the same folder rides with that file (which is
    faster to decode); a lone RAW is a photo of its own where rawpy is installed."""
    if not any(is_raw(f.path) for f in result.photos):
        return  # nothing to pair: keep large folders fast
    by_stem: dict[tuple[str, str], list[FileStat]] = {}
    for photo in result.photos:
        folder, name = os.path.split(photo.path)
        by_stem.setdefault((folder, os.path.splitext(name)[0].lower()), []).append(photo)
    kept: list[FileStat] = []
    for group in by_stem.values():
        raws = [f for f in group if is_raw(f.path)]
        others = sorted((f for f in group if not is_raw(f.path)), key=lambda f: f.path)
        if others:
            kept.extend(others)
            if raws:
                result.companions[others[0].path] = sorted(f.path for f in raws)
        elif raw_supported:
            kept.extend(raws)
        else:
            result.unsupported.extend(f.path for f in raws)
    result.photos = kept


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _excluded(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(name.lower(), g.lower()) for g in globs)


def _walk_dir(top: str, exclude_dirnames: frozenset[str], errors: list[tuple[str, str]], globs: tuple[str, ...] = ()):
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            errors.append((str(folder), f"cannot list folder: {e.strerror or e}"))
            continue
        for entry in entries:
            if entry.name.startswith(".") or _excluded(entry.name, globs):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name not in exclude_dirnames:
                    stack.append(entry.path)
            else:
                yield entry.path


def not_regular_reason(mode: int) -> str:
    """Why a file of this kind is not read, in words."""
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file ({kind}); only regular files are read"


_KINDS = (
    (stat_mode.S_ISFIFO, "a FIFO / named pipe"),
    (stat_mode.S_ISCHR, "a character device"),
    (stat_mode.S_ISBLK, "a block device"),
    (stat_mode.S_ISSOCK, "a socket"),
    (stat_mode.S_ISDIR, "a folder"),
)


def open_regular(path: str | Path, max_bytes: int | None = None) -> tuple[int, os.stat_result]:
    """A read-only descriptor of a regular file, and its fstat.

    O_NONBLOCK: a FIFO (even one swapped in after the walk looked) opens at once instead of
    waiting for a writer forever; fstat on the open descriptor then refuses it, so nothing
    but a regular file is ever read. A file over max_bytes is refused before it is read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat_mode.S_ISREG(st.st_mode):
            raise NotRegularFile(not_regular_reason(st.st_mode))
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(
                f"file is {st.st_size / 2**20:,.0f} MiB, over the limit of {max_bytes / 2**20:,.0f} MiB "
                f"(--max-file-size); nothing was read"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file read in chunks (checkpoints, moved photos), without holding it whole."""
    h = hashlib.sha256()
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_fingerprint(data: bytes) -> str:
    """sha256 of the whole file: the same bytes under another name reuse their embedding."""
    return hashlib.sha256(data).hexdigest()


def read_file(path: str, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> tuple[bytes, FileStat]:
    """The bytes of a regular file of at most max_bytes and its identity, checked to be
    unchanged while it was read. Never more than the size fstat gave (+1 to see growth) is read."""
    fd, before = open_regular(path, max_bytes)
    with os.fdopen(fd, "rb") as f:
        data = f.read(before.st_size + 1)
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != after.st_size:
        raise OSError("file changed while it was being read")
    return data, FileStat(path, after.st_size, after.st_mtime_ns)
