"""The help a newcomer reads: every command's fits a screen before its advanced options, `-V`,
and the figures it quotes are the measured ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from clip_cull import __version__
from clip_cull.cli import app
from clip_cull.cli.options import ADVANCED
from helpers import run

ROOT = Path(__file__).resolve().parents[1]
SCREEN = 60  # lines of a terminal, with room to spare
WIDTH = "100"


def commands(command=None, path=()):
    """Every command a user can run, as its words on the command line."""
    command = command or typer.main.get_command(app)
    subcommands = getattr(command, "commands", {})
    if not subcommands:
        yield path
    for name, sub in subcommands.items():
        yield from commands(sub, (*path, name))


def help_text(*words: str) -> str:
    result = run(*words, "--help", env={"COLUMNS": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}, catch_exceptions=True)
    assert result.exit_code == 0, result.output
    return result.stdout


def flat(text: str) -> str:
    """The help as running text: panel borders gone, wrapped lines joined."""
    return " ".join(text.replace("│", " ").split())


ALL = sorted(commands())


def test_every_command_is_walked():
    assert {("rank",), ("tag",), ("review",), ("search",), ("train", "ratings"), ("cache", "merge")} <= set(ALL)


@pytest.mark.parametrize("words", ALL, ids=" ".join)
def test_help_fits_a_screen_before_the_advanced_panel(words):
    lines = help_text(*words).splitlines()
    shown = next((i for i, line in enumerate(lines) if ADVANCED in line), len(lines))
    assert shown <= SCREEN, f"clipcull {' '.join(words)} --help: {shown} lines before {ADVANCED!r}"
    assert all(len(line) <= int(WIDTH) for line in lines)


def test_scoring_commands_group_their_options_in_panels():
    text = help_text("rank")
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels == ["Arguments", "Options", "Output", "What to score", "Which photos", ADVANCED]
    advanced = text[text.index(ADVANCED):]
    for option in ("--shard", "--db", "--precision", "--batch-size", "--workers", "--device"):
        assert option in advanced, option  # the rarely needed options come last
    assert re.findall(r"╭─ (.+?) ─", help_text("tag"))[:4] == ["Arguments", "Options", "What to write", "What to score"]


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_dash_capital_v_prints_the_version(option):
    result = run(option, catch_exceptions=True)
    assert result.exit_code == 0
    assert result.stdout == f"clipcull {__version__}\n"
    assert "-V" in help_text()


def test_precision_help_quotes_the_measured_speed_of_int8():
    """BENCHMARKS.md measures int8 at 1.44-1.50x fp32 through the whole pipeline (the model
    alone 1.78-1.87x): the help says about 1.5x, not "several times"."""
    rows = re.findall(r"`--precision int8`: model alone / pipeline \|[^|]*\| ([\d.]+)x / ([\d.]+)x fp32",
                      (ROOT / "BENCHMARKS.md").read_text())
    pipeline = [float(p) for _, p in rows]
    assert len(pipeline) >= 2
    text = flat(help_text("rank"))
    said = float(re.search(r"int8 \(about ([\d.]+)x faster measured", text).group(1))
    assert min(pipeline) - 0.1 <= said <= max(pipeline) + 0.1
    assert "several times" not in text
    bf16 = re.findall(r"`--precision bf16`: model alone / pipeline \|[^|]*\| [\d.]+x / ([\d.]+)x fp32",
                      (ROOT / "BENCHMARKS.md").read_text())
    assert bf16 and all(float(r) < 1 for r in bf16) and "bf16 (slower on the CPUs measured)" in text


def test_help_defaults_are_the_code_defaults():
    """The numbers the help states as defaults are the ones the code uses."""
    from clip_cull.scoring.groups import DEFAULT_SIMILARITY, DEFAULT_WINDOW_S
    from clip_cull.culling.tag import DEFAULT_QUANTILE_SHARES
    from clip_cull.scoring.indexer import CPU_BATCH_SIZE, GPU_BATCH_SIZE

    text = flat(help_text("rank"))
    assert f"else {DEFAULT_SIMILARITY}]" in text and f"else {DEFAULT_WINDOW_S:g}]" in text
    assert f"[default: {CPU_BATCH_SIZE} on the CPU, {GPU_BATCH_SIZE} on a GPU]" in text
    shares = ", ".join(f"{round(share * 100)}%" for _, share in DEFAULT_QUANTILE_SHARES)
    assert [stars for stars, _ in DEFAULT_QUANTILE_SHARES] == [5, 4, 3, 2, 1]
    assert f"by rank: {shares} get 5 to 1 stars" in flat(help_text("tag"))
