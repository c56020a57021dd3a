"""The README cannot drift: its quick start is run as shown, and every link in it and in docs/ holds.

The quick start is a series of fenced blocks in which `$ clipcull ...` lines are commands and the
lines after each, its output. Each command runs here, in order, on eight photos made here with the
tiny model, and must exit 0 and print the lines shown: the same lines in the same order, modulo
what differs between that run and this one (digits, scores, labels, flags, the folder, the cache's
path, the model's name, random tokens; see `normalise`). A `...` line stands for any number of
lines. So a column renamed, a message reworded or a promise like "a focus column" that the table
does not keep fails here.

When a command's output changes on purpose: run the quick start (any folder of a few photos, e.g.
made with conftest's make_photo), paste what it prints into the README, and let this test say
whether it still matches.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 160

# How the README shows the places a run prints: the folder, the cache.
SHOWN_FOLDER = "~/Photos/shoot"
SHOWN_FOLDER_ABSOLUTE = "/home/me/Photos/shoot"
SHOWN_CACHE = "/home/me/.cache/clipcull/clipcull.db"
SHOWN_MODEL, SHOWN_WEIGHTS = "ViT-B-32", "openai"  # the defaults a reader runs with

# Files another branch adds (issue 19: docs/install.md comes with the install work). A link to one
# of them may point nowhere until that branch is merged; once the file is there it is checked
# like any other. Remove names from here once they exist on main.
PENDING_FILES: set[str] = set()  # pages linked before they are written


# --- the quick start as the README shows it -----------------------------------------------------


def quick_start(text: str) -> list[tuple[str, list[str]]]:
    """(command line without the `$ `, its output lines) for each command of the quick start."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## Quick start' section"
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                assert commands, f"output before any `$ ` command line in the quick start: {line!r}"
                commands[-1][1].append(line)
    return commands


def test_the_quick_start_shows_every_command_the_issue_asks_for():
    names = [shlex.split(command)[1] for command, _ in quick_start(README.read_text(encoding="utf-8"))]
    for wanted in ("rank", "best", "tag", "move", "undo", "review"):
        assert wanted in names, f"the quick start lost `clipcull {wanted}`"
    commands = [command for command, _ in quick_start(README.read_text(encoding="utf-8"))]
    assert any("--dry-run" in c for c in commands) and any(c.startswith("clipcull move") and "--worst" in c
                                                           for c in commands)


# --- normalising what may differ between two runs -------------------------------------------------

TABLE_ROW = re.compile(r"^\s*\d+\s+[+-]\d+\.\d+\s")  # a ranking row: rank, score, ...
LABEL = re.compile(r"\b(?:not-)?aesthetic\b")
FLAGS = re.compile(r"(?<![\w-])(?:blur|over|under)(?:,(?:blur|over|under))*(?![\w-])")
RANDOM = re.compile(r"[A-Za-z0-9_-]{20,}")  # the review URL's path prefix and token


def normalise(line: str) -> str:
    """One output line with what differs from run to run made equal: random tokens, the label and
    flags of a ranking row (the photos here are not the README's), every number, and spacing
    (column widths follow the numbers)."""
    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)
    line = RANDOM.sub("RANDOM", line)
    if TABLE_ROW.match(line):
        line = FLAGS.sub(" ", LABEL.sub("LABEL", re.sub(r"(?<=\s)[+-](?=\d)", "", line, count=1)))
    line = re.sub(r"\d+", "0", line)
    return " ".join(line.split())


def matches(shown: list[str], printed: list[str]) -> bool:
    """printed matches shown line by line, a shown `...` standing for any number of lines."""
    memo: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(shown):
                memo[i, j] = j == len(printed)
            elif shown[i] == "...":
                memo[i, j] = at(i + 1, j) or (j < len(printed) and at(i, j + 1))
            else:
                memo[i, j] = j < len(printed) and shown[i] == printed[j] and at(i + 1, j + 1)
        return memo[i, j]

    return at(0, 0)


def test_normalise_and_matches():
    row = " 3  +0.1955  aesthetic  blur    2026-05-01 09:23  IMG_0005.jpg"
    assert normalise(row) == normalise("12  -0.0101  not-aesthetic  blur,over  2025-12-31 23:59  IMG_0012.jpg")
    assert normalise(row) != normalise(" 3  +0.1955  aesthetic  focus 812  2026-05-01 09:23  IMG_0005.jpg")
    assert normalise("loaded ViT-B-32 (7.1 s)") == normalise("loaded ViT-B-32 (0.4 s)")
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) and matches(["a", "...", "b"], ["a", "b"])
    assert not matches(["a", "b"], ["a", "b", "c"]) and not matches(["a", "...", "d"], ["a", "b"])


# --- running it -------------------------------------------------------------------------------------


def shoot(folder: Path) -> Path:
    """Eight camera-like JPEGs taken minutes apart (capture times, camera), one of them out of focus:
    mid-tone gradients with grain (nothing clipped, so the grain keeps them in focus), and one
    without grain, far below a quarter of the others' focus: flagged blurry, as in the README."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(19)
    y, x = np.mgrid[0:128, 0:192]
    for i in range(8):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R6"
        exif[0x8769] = {0x9003: f"2026:05:01 09:{10 + 3 * i:02d}:00"}  # assigning into get_ifd() is lost before Pillow 11.1
        base, slope = rng.uniform(80, 170, 3), rng.uniform(-0.2, 0.2, (3, 2))
        pixels = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
        if i != 4:
            pixels = pixels + rng.normal(0, 20, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        image.save(folder / f"IMG_{i + 1:04d}.jpg", "JPEG", exif=exif, quality=92)
    return folder


def test_the_quick_start_prints_what_the_readme_shows(tiny_env, tmp_path, monkeypatch, deadline):
    config, checkpoint = tiny_env
    folder = shoot(tmp_path / "Photos" / "shoot")
    # A cache of its own, new: the quick start begins with a first run (the prompts embedded once).
    cache = tmp_path / "readme-cache" / "clipcull.db"
    monkeypatch.setenv("CLIPCULL_DB", str(cache))
    monkeypatch.setenv("COLUMNS", "100")
    # review: everything up to serving runs; serving itself returns at once, the browser is a no-op.
    monkeypatch.setattr("clip_cull.review.server.serve", lambda app_, sock, on_stop=None: sock.close())
    monkeypatch.setattr("webbrowser.open", lambda url: True)

    places = [(str(folder), SHOWN_FOLDER_ABSOLUTE), (str(cache), SHOWN_CACHE),
              (f"{config.stem} ({checkpoint.name})", f"{SHOWN_MODEL} ({SHOWN_WEIGHTS})"), (config.stem, SHOWN_MODEL)]
    steps = quick_start(README.read_text(encoding="utf-8"))
    assert len(steps) >= 7
    for command, shown in steps:
        argv = shlex.split(command)
        assert argv[0] == "clipcull", command
        args = [str(folder) + a[len(SHOWN_FOLDER):] if a.startswith(SHOWN_FOLDER) else a for a in argv[1:]]
        result = run(*args)
        output = result.output
        for real, as_shown in places:
            output = output.replace(real, as_shown)
        assert result.exit_code == 0, f"$ {command}\n{output}"
        printed = [normalise(line) for line in output.splitlines() if line.strip()]
        expected = [line if line == "..." else normalise(line) for line in shown if line.strip()]
        assert matches(expected, printed), (
            f"README.md's quick start: `$ {command}` no longer prints what the README shows.\n"
            f"--- shown in the README:\n" + "\n".join(shown) + "\n--- printed now:\n" + output)


# --- links and length -------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def without_code(text: str) -> str:
    """Markdown text less fenced blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(path.read_text(encoding="utf-8")), re.MULTILINE):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", without_code(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_what_exists(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:: not checked here
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        relative = destination.relative_to(ROOT).as_posix() if destination.is_relative_to(ROOT) else str(destination)
        if not destination.exists():
            if relative not in PENDING_FILES:
                broken.append(f"{target}: no such file")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading '#{anchor}' in {relative}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; the depth belongs in docs/"


def test_the_docs_have_a_table_of_contents_naming_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not list {page.name}"
