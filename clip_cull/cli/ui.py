"""Everything the user sees: rich consoles, progress bars, tables, message lines.

Results go to stdout; progress, warnings and errors go to stderr, so stdout stays clean
for scripts.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import sys
from typing import Iterator

from rich.console import Console
from rich.markup import escape  # noqa: F401  (re-exported for the commands)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clip_cull.scoring.ranking import RankedPhoto

WIDE = 200  # table width when stdout is not a terminal, so paths are not cut


def stderr_console() -> Console:
    return Console(file=_Unbroken(sys.stderr), highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """Terminal width on a terminal (or COLUMNS where set), else wide so nothing is cut."""
    out = _Unbroken(sys.stdout)
    return Console(file=out, highlight=False, width=None if out.isatty() or os.environ.get("COLUMNS") else WIDE)


class _Unbroken:
    """A console's stream whose reader may vanish without stopping clipcull: `clipcull move ... |
    head -1` (the pipe closes after one line) or `>&-` (no stdout at all, sys.stdout is None).
    Output never decides whether a file is moved or written: the first write that finds the
    reader gone points the file descriptor at /dev/null (so Python's last flush does not complain
    either), later output is dropped, and the command goes on to its usual exit code."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                return self._stream.write(text)
            except (OSError, ValueError) as e:
                self._gone(e)
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError) as e:
                self._gone(e)

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self._stream is None:
            raise OSError(errno.EBADF, "no stream")
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def _gone(self, error: Exception) -> None:
        if isinstance(error, OSError) and error.errno not in (errno.EPIPE, errno.EBADF):
            raise error  # a full disk under a redirected stdout is an error like any other
        _to_devnull(self._stream)
        self._stream = None


def _to_devnull(stream) -> None:
    """Point stream's file descriptor at /dev/null (Python's recipe for a closed pipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a file descriptor (a test's capture): dropping the output is enough


def standard_streams_open() -> None:
    """`clipcull move ... >&-`: a command started with stdout (or stdin, stderr) closed. The
    first file clipcull opened would get that descriptor, and output meant for stdout would go
    into it (the cache, a sidecar). /dev/null takes the place first; sys.stdout, None then,
    writes there. Called first thing by the command line."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))


def flush_quietly() -> None:
    """Python's own last flush of stdout, done here: a reader gone by then is no error."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            _to_devnull(stream)


@contextlib.contextmanager
def closed_stdout_is_fine():
    """`clipcull rank --json | head -1`: a reader that stops early is not an error. Exit 0,
    quietly, with stdout pointed at /dev/null so Python's last flush does not complain."""
    try:
        yield
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise SystemExit(0)


def relative_path(path: str, roots: list[str] | None) -> str:
    """A photo's path relative to the folder the user gave (the deepest one holding it);
    a photo given as a file keeps its name; anything else its full path."""
    for root in sorted((os.path.abspath(os.path.expanduser(r)) for r in roots or []), key=len, reverse=True):
        if path == root:
            return os.path.basename(path)
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return path[len(root.rstrip(os.sep)) + 1:]
    return path


def cut_left(text: str, width: int) -> str:
    """The end of a path when it does not fit: the file name matters most."""
    if width <= 1 or len(text) <= width:
        return text if width > 1 else text[-max(width, 1):]
    return "…" + text[-(width - 1):]


def shown_path(path: str) -> str:
    """A path on one printable line: control characters (a newline in a file name) are
    escaped, and so are bytes that are not UTF-8 (which Python holds as surrogates)."""
    return "".join(_shown_char(c) for c in path)


def _shown_char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code < 32 or code == 127:
        return c.encode("unicode_escape").decode("ascii")
    return c


def message(console: Console, text: str, style: str | None = None) -> None:
    console.print(escape(text), style=style, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bars(console: Console) -> Iterator:
    """Progress bars on stderr. Yields make(description) -> callback(done, total); a bar
    appears on its first update. Silent when stderr is not a terminal (logs, CI)."""
    if not console.is_terminal:
        yield lambda description: (lambda done, total: None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bars:

        def make(description: str):
            task = None

            def update(done: int, total: int) -> None:
                nonlocal task
                if task is None:
                    task = bars.add_task(description, total=total)
                bars.update(task, completed=done, total=total)

            return update

        yield make


SHORT_FLAGS = {"blurry": "blur", "overexposed": "over", "underexposed": "under", "eyes-closed": "eyes",
               "face-soft": "face"}


def ranking_table(ranked: list[RankedPhoto], groups: dict[str, int] | None = None, roots: list[str] | None = None,
                  width: int | None = None) -> Table:
    """One row per photo, paths relative to the folders given and cut from the left if the
    terminal is narrow (--json and --csv keep full paths). Focus is in --json/--csv. Where any
    photo has a face (the faces extra), a faces column counts them (their eyes and focus: in checks)."""
    rows = []
    with_faces = any(photo.faces for photo in ranked)
    for photo in ranked:
        group = [str(groups.get(photo.path, ""))] if groups is not None else []
        faces = [str(len(photo.faces)) if photo.faces else ""] if with_faces else []
        captured = (photo.captured_at or "").replace("T", " ")[:16]
        checks = ",".join(SHORT_FLAGS.get(f, f) for f in photo.flags)
        rows.append((photo, [str(photo.rank), f"{photo.score:+.4f}", photo.label, *group, *faces, checks, captured],
                     shown_path(relative_path(photo.path, roots))))
    headers = ["#", "score", "label", *(["group"] if groups is not None else []), *(["faces"] if with_faces else []),
               "checks", "captured"]
    widths = [max([len(h)] + [len(cells[i]) for _, cells, _ in rows]) for i, h in enumerate(headers)]
    room = None
    if width is not None:
        room = max(12, width - sum(widths) - 2 * len(widths))
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2, 0, 0))
    for h in headers:
        table.add_column(h, justify="right" if h in ("#", "score", "group", "faces") else "left", no_wrap=True)
    table.add_column("path", no_wrap=True, overflow="ellipsis")
    for photo, cells, path in rows:
        label_style = "green" if photo.label == "aesthetic" else "red"
        cells[2] = f"[{label_style}]{escape(cells[2])}[/]"
        checks_i = len(cells) - 2
        if cells[checks_i]:
            cells[checks_i] = f"[yellow]{cells[checks_i]}[/]"
        table.add_row(*cells, escape(cut_left(path, room) if room else path))
    return table


def write_json_lines(ranked: list[RankedPhoto], out, groups: dict[str, int] | None = None,
                     head: str | None = None) -> None:
    for row in rows_for_output(ranked, groups, head):
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def rows_for_output(ranked: list[RankedPhoto], groups: dict[str, int] | None = None, head: str | None = None):
    """The rows --json and --csv print: the same columns in both."""
    for photo in ranked:
        row = photo.as_dict()
        if groups is not None:
            row["group"] = groups.get(photo.path)
        if head is not None:
            row["head"] = head
        yield row


def write_csv(ranked: list[RankedPhoto], out, groups: dict[str, int] | None = None, head: str | None = None) -> None:
    """The --json columns; lists of names (flags, RAW files) joined with ';', the per-face
    figures (face_details) as JSON."""
    writer = csv.writer(out)
    header = None
    for row in rows_for_output(ranked, groups, head):
        if header is None:
            header = list(row)
            writer.writerow(header)
        writer.writerow([_csv_cell(k, v) for k, v in row.items()])
    if header is None:  # no photos: still the header, for scripts
        empty = RankedPhoto(0, "", 0.0, "").as_dict()
        writer.writerow(list(empty) + (["group"] if groups is not None else []) + (["head"] if head is not None else []))


JSON_COLUMNS = frozenset({"face_details"})  # written as JSON in a CSV cell: a list of per-face objects


def _csv_cell(column: str, value):
    if value is None:
        return ""
    if column in JSON_COLUMNS:
        return json.dumps(value, separators=(",", ":"))
    return ";".join(value) if isinstance(value, list) else value
