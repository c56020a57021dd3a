"""The layout shows the architecture: each package of clip_cull/ is a layer and imports only from
its own layer and the ones below it (lazy imports inside functions included), so no arrow runs
back up and there is no import cycle between layers. A new package gets a place in LAYERS."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "clip_cull"

# Lowest first. core: files, images, errors; store: what is kept on disk; model: open_clip, heads;
# scoring: a folder ranked; culling: acting on a ranking; research: the paper's experiments and
# your taste; review: the page; api: the Library, the workflows as one object; cli: the commands, the only layer that prints.
LAYERS = ["core", "store", "model", "scoring", "culling", "research", "review", "api", "cli"]
ROOT_MODULES = {"__init__": -1, "__main__": len(LAYERS)}  # the version at the bottom; `python -m` on top


def layer_of(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "clip_cull", module
    if len(parts) == 1:
        return ROOT_MODULES["__init__"]
    if parts[1] in ROOT_MODULES:
        return ROOT_MODULES[parts[1]]
    if parts[1] == "assets":
        return -1  # data files, read through importlib.resources
    assert parts[1] in LAYERS, f"clip_cull.{parts[1]} is in no layer: add it to LAYERS (or move it into one)"
    return LAYERS.index(parts[1])


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every clip_cull module the file imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "clip_cull":
                names = [a.name for a in node.names]
                # `from clip_cull.store import cache`: the module imported is clip_cull.store.cache
                found += [(node.lineno, f"{node.module}.{n}") if (PACKAGE.parent / node.module.replace(".", "/") / n).exists()
                          or (PACKAGE.parent / (node.module.replace(".", "/") + f"/{n}.py")).exists()
                          else (node.lineno, node.module) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "clip_cull"]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import at line {node.lineno}; clip_cull imports absolutely")
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_package_is_a_layer_and_no_import_runs_back_up():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for line, target in imports(path):
            if layer_of(target) > layer_of(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    assert not upward, "imports that run back up a layer:\n" + "\n".join(upward)


def test_the_layers_are_the_packages_there_are():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)
    loose = {p.stem for p in PACKAGE.glob("*.py")} - set(ROOT_MODULES)
    assert not loose, f"modules outside every layer: {sorted(loose)}"


def test_the_check_sees_an_import_that_runs_back_up(tmp_path):
    """The check itself: a lazy import of the CLI inside a function of core/ is caught."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from clip_cull.cli import ui\n    return ui\n")
    ((line, target),) = imports(module)
    assert (line, target) == (2, "clip_cull.cli.ui") and layer_of(target) > layer_of("clip_cull.core.probe")
