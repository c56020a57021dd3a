"""The project's own exceptions. The CLI turns each into one clear message and an exit code."""


class ClipCullError(Exception):
    """Base class: something the user can act on; str(error) says what and how."""


class ModelLoadError(ClipCullError):
    """The CLIP model or its weights could not be loaded."""


class CacheError(ClipCullError):
    """The embedding cache (SQLite database) cannot be opened or used."""


class InputError(ClipCullError):
    """A folder or file given on the command line cannot be used."""


class StateError(ClipCullError):
    """The state database (undo journal, per-folder settings) cannot be opened or used."""
