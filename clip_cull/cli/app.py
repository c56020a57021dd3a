"""The `clipcull` Typer application and its `train` group; the command modules add to them."""

from __future__ import annotations

from typing import Annotated

import typer

from clip_cull import __version__

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 error (folder, model or cache unusable), or not all done (a photo not moved, "
    "a file not written: said on stderr); 2 bad options; 3 some photos could not be read and --strict was "
    "given; 130 interrupted."
)

app = typer.Typer(
    name="clipcull",
    help=(
        "Rank and cull photos by aesthetic quality with CLIP.\n\n"
        "Embeddings are cached in SQLite, so only new or changed photos are embedded again. "
        "Every command scores a folder the way its last `clipcull rank` did, unless told otherwise. "
        + EXIT_CODES_HELP
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

train_app = typer.Typer(
    help="Fit heads: on your own ratings (`train ratings`), or on AVA (the paper's prompt search, linear probe "
    "and fine-tuning).",
    no_args_is_help=True,
)
app.add_typer(
    train_app, name="train",
    help="Fit a head on your own star ratings (train ratings) or on AVA (train prompts | linear | finetune).",
)


def _version(value: bool) -> None:
    if value:
        print(f"clipcull {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, metavar="", help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _flags_take_no_value() -> None:
    """Help that shows what is typed: `FOLDER...` in the usage line, no type for a flag.

    The usage line comes from click's public `Parameter.get_usage_pieces`, overridden here for
    Typer's arguments, which Typer 0.27 and later render as `{FOLDER}...` for a required one.
    Typer 0.29 also shows a type column for every option and argument (`--strict <bool>`, as if a
    flag took a value; `<list[Path]>` for a folder argument) through `display_type_rich`, which has
    no public setting; where that method exists it is wrapped, and where it does not (Typer 0.16 to
    0.28 show no type for a flag) nothing is touched, so a Typer that renames it changes the look
    of the help only, never whether a command runs."""
    from typer.core import TyperArgument, TyperOption

    def usage_pieces(self, ctx) -> list[str]:
        name = self.metavar or self.name or ""
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]

    TyperArgument.get_usage_pieces = usage_pieces

    shown = getattr(TyperOption, "display_type_rich", None)
    if callable(shown):
        def display_type_rich(self, ctx):
            return None if self.is_flag else shown(self, ctx)

        TyperOption.display_type_rich = display_type_rich
    if callable(getattr(TyperArgument, "display_type_rich", None)):
        TyperArgument.display_type_rich = lambda self, ctx: None


_flags_take_no_value()
