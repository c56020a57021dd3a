"""The `clipcull` command line: options in, library calls, output out. No logic of its own.

- app.py: the Typer app and the `train` group
- options.py: the options several commands share, declared once
- common.py: exit codes, one-line errors, what the Library tells said on stderr (CliEvents)
- scoring.py: the run every scoring command shares (one Library call, progress bars, summaries)
- research.py: the same for the research commands (AvaExperiment, Taste, cache merges)
- rank.py (rank, best), actions.py (tag, move, undo, history, report),
  ava.py (heads, train prompts|linear|finetune, eval), taste.py (train ratings, eval ratings),
  cache.py (cache merge)
"""

from __future__ import annotations

import atexit
import gc
import sqlite3
import sys

try:  # Ctrl-C while Python imports (a second or so at start): one line, no traceback
    import clip_cull.cli.ui as ui
    from clip_cull.cli.app import app
    from clip_cull.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, database_failed
    from clip_cull.core.errors import ClipCullError

    # Importing the command modules registers their commands on `app`.
    from clip_cull.cli import rank, actions, review, taste, ava, cache  # noqa: E402,F401,I001
except KeyboardInterrupt:
    sys.stderr.write("clipcull: interrupted while starting; nothing was done.\n")
    sys.exit(130)  # EXIT_INTERRUPTED, which may not be imported yet


def main() -> None:
    # At exit Python's last garbage collections walk every object torch and open_clip made:
    # about a second after a command that loaded a model. Freezing them first skips that walk
    # (atexit handlers, file flushing and the cache's own close still happen as usual).
    ui.standard_streams_open()  # before anything is opened: `clipcull move ... >&-`
    atexit.register(gc.freeze)
    try:
        app()
    except KeyboardInterrupt:  # while Typer builds the command line's commands, before any of ours runs
        _interrupted_before_the_command()
    except SystemExit as e:
        # Typer turns a Ctrl-C while it reads the command line (outside the command's own code,
        # which says what it did) into a silent exit 130: one line here too.
        if e.code == EXIT_INTERRUPTED and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            _interrupted_before_the_command()
        raise
    except ClipCullError as e:  # a last net: every command's own errors are one line, never a traceback
        ui.message(ui.stderr_console(), f"clipcull: error: {e}", "red")
        sys.exit(EXIT_ERROR)
    except sqlite3.DatabaseError as e:  # a cache or state read that failed halfway (a page damaged meanwhile)
        ui.message(ui.stderr_console(), f"clipcull: error: {database_failed(e)}", "red")
        sys.exit(EXIT_ERROR)
    finally:
        ui.flush_quietly()  # `clipcull move ... | head -1`: the reader gone is no error at exit either


def _interrupted_before_the_command() -> None:
    ui.message(ui.stderr_console(), "clipcull: interrupted while starting; nothing was done.", "yellow")
    sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main"]
