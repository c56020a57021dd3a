"""The paper's prompt material: adjectives, ImageNet class names, templates."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

DEFAULT_POSITIVE = "outstanding"
DEFAULT_NEGATIVE = "horrible"
FIXED_TEMPLATE = "a {adjective} picture"
CONTEXT_TEMPLATE = "a {adjective} picture, of a #{content}"


SOURCE_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _asset_lines(name: str) -> tuple[str, ...]:
    try:
        text = resources.files("clip_cull.assets").joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:  # run from a source checkout that is not installed
        text = (SOURCE_ASSETS / name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, each up to its first comma (see assets/README.md)."""
    return _asset_lines("imagenet_classes.txt")


@lru_cache(maxsize=None)
def positive_adjectives() -> tuple[str, ...]:
    return _asset_lines("adjectives_positive.txt")


@lru_cache(maxsize=None)
def negative_adjectives() -> tuple[str, ...]:
    return _asset_lines("adjectives_negative.txt")


def context_prompts(adjective: str, classes: tuple[str, ...] | None = None) -> list[str]:
    """`a {adjective} picture, of a #{class}` for every class (paper section 4.1.2)."""
    return [CONTEXT_TEMPLATE.format(adjective=adjective, content=c) for c in (classes or imagenet_classes())]
