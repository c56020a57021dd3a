"""The project's own exceptions. The CLI turns each into one clear message and an exit code."""


class ClipCullError(Exception):
    """Base class: something the user can act on; str(error) says what and how."""


class ModelLoadError(ClipCullError):
    """The CLIP model or its weights could not be loaded."""


class CacheError(ClipCullError):
    """The embedding cache (SQLite database) cannot be opened or used."""


class InputError(ClipCullError):
    """A folder or file given on the command line cannot be used."""


class WorkerError(ClipCullError):
    """The indexing pipeline's worker processes cannot run here (they keep stopping)."""


class StateError(ClipCullError):
    """The state database (undo journal, per-folder settings) cannot be opened or used."""


class DatabaseFailed(ClipCullError):
    """A SQLite read or write that failed halfway (a page damaged meanwhile, a table missing)."""

    def __init__(self, error: Exception):
        super().__init__(f"a clipcull database failed mid-command ({error}). Run the command again: a damaged cache "
                         f"is then moved aside and rebuilt, and a damaged state database is named, with how to "
                         f"recover it.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a tag or move run between two steps. Every step done is journaled and the
    run stays interrupted (running): `clipcull undo RUN` reverses it, `clipcull move` finishes a
    move. A KeyboardInterrupt still, for code that only knows those."""

    def __init__(self, run_id: int, done: int, left: int):
        super().__init__(f"run {run_id} interrupted: {done} files done, {left} not")
        self.run_id, self.done, self.left = run_id, done, left  # files
