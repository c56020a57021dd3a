"""Helpers every command uses: exit codes, one-line errors, what the Library tells said on stderr (CliEvents), quiet libraries, plurals."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import typer

import clip_cull.cli.ui as ui
from clip_cull.api.events import Events

EXIT_OK = 0
EXIT_ERROR = 1  # the run could not be done: bad folder, model or cache
EXIT_USAGE = 2  # wrong options (typer's own)
EXIT_UNREADABLE = 3  # --strict, and some photos could not be read
EXIT_INTERRUPTED = 130


def fail(text: str) -> None:
    ui.message(ui.stderr_console(), f"clipcull: error: {text}", "red")
    raise typer.Exit(EXIT_ERROR)


class CliEvents(Events):
    """What the Library tells, said on stderr as one line each."""

    def cache_rebuilt(self, store, state_path) -> None:
        ui.message(ui.stderr_console(), f"clipcull: the cache {store.path} was damaged ({store.damage}); moved aside "
                                        f"to {store.rebuilt_from} and rebuilt (embeddings are computed again; your undo "
                                        f"history and folder settings are in {state_path})", "yellow")

    def legacy_imported(self, imported, state) -> None:
        ui.message(ui.stderr_console(), f"clipcull: brought the undo history ({plural(imported.runs, 'run')}) and "
                                        f"{plural(imported.settings, 'setting')} of an older clipcull over from the cache "
                                        f"{imported.source} into {state.path} (once; the cache keeps its copy)", "dim")

    def legacy_unreadable(self, error) -> None:
        ui.message(ui.stderr_console(), f"clipcull: {error}", "yellow")

    def loading_model(self, spec) -> None:
        announce_loading()(spec)

    def model_loaded(self, spec, seconds: float) -> None:
        ui.message(ui.stderr_console(), f"clipcull: loaded {shown_model(spec.name)} ({seconds:.1f} s)", "dim")

    def scoring_with(self, settings, source) -> None:
        from clip_cull.scoring import settings as settings_lib

        ui.message(ui.stderr_console(), "clipcull: " + settings_lib.describe(settings, source), "dim")

    def warning(self, text: str) -> None:
        ui.message(ui.stderr_console(), f"clipcull: {text}", "yellow")

    def embedding_prompts(self, total: int, settings) -> None:
        from clip_cull.scoring import settings as settings_lib

        ui.message(ui.stderr_console(), f"clipcull: embedding the head's {plural(total, 'prompt')} for "
                                        f"{settings_lib.model_name(settings)}: once per model, then cached.", "dim")

    def caches_unreachable(self, missing: list[str], into) -> None:
        ui.message(ui.stderr_console(), f"clipcull: not reachable from this machine: {', '.join(missing)}; copy them "
                                        f"here and run `clipcull cache merge FILE... --db {into}`", "yellow")

    def waiting_for_lock(self, lock: str) -> None:
        ui.message(ui.stderr_console(), f"clipcull: waiting for another clipcull process that is moving, tagging or "
                                        f"undoing (lock {ui.shown_path(lock)}) ...", "yellow")


def database_failed(error: Exception) -> str:
    """A SQLite error that escaped a command: one line, whichever database it came from."""
    from clip_cull.core.errors import DatabaseFailed

    return str(DatabaseFailed(error))


def quiet_libraries() -> None:
    """Our own lines report bad files; library warnings about them would only repeat it."""
    warnings.filterwarnings("ignore", module="PIL")
    # numpy's "invalid value" / "All-NaN slice" on odd photos: the photo's own line says what matters
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    # open_clip and huggingface_hub log on their own loggers; clipcull reports their failures as one line
    logging.getLogger().setLevel(logging.CRITICAL)
    for name in ("huggingface_hub", "open_clip", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=UserWarning, module="open_clip")
    warnings.filterwarnings("ignore", module="huggingface_hub")
    # torch 2.1-2.2 warn inside torch.load about their own TypedStorage: nothing a user can act on
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)


def announce_loading(err=None):
    """Loading a model takes seconds: say so before it starts. (A fresh console each time:
    the model loads in the background while progress bars may be showing.)"""
    from clip_cull.model.encoder import openai_checkpoint_reason

    def announce(spec):
        err = ui.stderr_console()
        ui.message(err, f"clipcull: loading model {shown_model(spec.name)} ({Path(spec.pretrained).name}) ...", "dim")
        if (reason := openai_checkpoint_reason(spec)) is not None:
            ui.message(err, f"clipcull: {spec.pretrained} holds OpenAI's weights ({reason}): running them with "
                            f"QuickGELU, as they were trained (as if --model {spec.name}-quickgelu)", "yellow")

    return announce


def shown_model(name: str) -> str:
    """A model as a person calls it: a JSON config file by its stem."""
    return Path(name).stem if name.endswith(".json") else name


def percent(text: str, option: str = "--worst") -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") or float(text.rstrip("%")) > 1 else 1)
    except ValueError:
        raise typer.BadParameter(f"{option} takes a share like 30% (got {text!r})") from None
    if not 0 <= value <= 1:
        raise typer.BadParameter(f"{option} must be between 0% and 100%")
    return value


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 photo', '2 photos'."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
