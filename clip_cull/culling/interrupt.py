"""Ctrl-C between two steps of a run, never inside one.

A step of a tag or move run is a file operation and its journal mark. Each file operation is
atomic on its own, but Ctrl-C after it and before the mark would leave a change the journal does
not know about yet (a re-run or undo recognise it, but the run could not say what it did). So a
first Ctrl-C waits for the step in progress to end; a second one interrupts at once (still
safe: the file operations are atomic)."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def whole_step():
    """Hold a Ctrl-C pressed during the block until the block has ended, then raise
    KeyboardInterrupt. Only where Python's own SIGINT handler is in place (the main thread of
    a command-line run); anywhere else the block runs as it is."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pressed = []

    def hold(signum, frame):
        if pressed:  # pressed again: the user means it
            raise KeyboardInterrupt
        pressed.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt
