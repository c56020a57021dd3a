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
    """Typer shows a flag's type as if it took a value (`--strict <bool>`), the help option's
    too; a flag takes none, so its type column stays empty."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich

    # Arguments: `FOLDER...` in the usage line, not `{FOLDER}...`, and no `<list[Path]>` type.
    from typer.core import TyperArgument

    def usage_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def rich_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    TyperArgument._usage_display_name = usage_name
    TyperArgument._rich_display_name = rich_name
    TyperArgument.display_type_rich = lambda self, ctx: None


_flags_take_no_value()
