"""Everything the user sees: rich consoles, progress bars, tables, message lines.

Results go to stdout; progress, warnings and errors go to stderr, so stdout stays clean
for scripts.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from typing import Iterator

from rich.console import Console
from rich.markup import escape  # noqa: F401  (re-exported for the commands)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clip_cull.ranking import RankedPhoto

WIDE = 200  # table width when stdout is not a terminal, so paths are not cut


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    is_tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, width=None if is_tty else WIDE)


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


def ranking_table(ranked: list[RankedPhoto], groups: dict[str, int] | None = None) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("label")
    if groups is not None:
        table.add_column("group", justify="right")
    table.add_column("focus", justify="right")
    table.add_column("checks")
    table.add_column("captured")
    table.add_column("path", overflow="fold")
    for photo in ranked:
        label_style = "green" if photo.label == "aesthetic" else "red"
        group = [str(groups.get(photo.path, ""))] if groups is not None else []
        table.add_row(
            str(photo.rank),
            f"{photo.score:+.4f}",
            f"[{label_style}]{photo.label}[/]",
            *group,
            "" if photo.quality is None else f"{photo.quality.focus:.0f}",
            f"[yellow]{', '.join(photo.flags)}[/]" if photo.flags else "",
            (photo.captured_at or "").replace("T", " "),
            escape(shown_path(photo.path)),
        )
    return table


def write_json_lines(ranked: list[RankedPhoto], out, groups: dict[str, int] | None = None) -> None:
    for photo in ranked:
        row = photo.as_dict()
        if groups is not None:
            row["group"] = groups.get(photo.path)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_csv(ranked: list[RankedPhoto], out, groups: dict[str, int] | None = None) -> None:
    writer = csv.writer(out)
    extra = ["group"] if groups is not None else []
    writer.writerow(["rank", "score", "label", *extra, "focus", "flags", "captured_at", "camera", "path"])
    for p in ranked:
        group = [groups.get(p.path, "")] if groups is not None else []
        focus = "" if p.quality is None else f"{p.quality.focus:.2f}"
        writer.writerow([p.rank, repr(float(p.score)), p.label, *group, focus, " ".join(p.flags),
                         p.captured_at or "", p.camera or "", p.path])
