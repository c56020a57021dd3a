"""What a user installs: every package, the data files, the entry points."""

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_in_the_wheel():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "clip_cull").rglob("__init__.py")
    }
    assert found | {"clip_cull.assets"} == listed


def test_data_files_are_packaged_and_complete():
    cfg = pyproject()["tool"]["setuptools"]
    assert cfg["package-dir"]["clip_cull.assets"] == "assets"
    assert cfg["package-data"]["clip_cull.assets"] == ["*.txt"]
    from clip_cull.prompts import imagenet_classes, negative_adjectives, positive_adjectives

    classes = imagenet_classes()
    assert len(classes) == 1000 and classes[0] == "tench" and classes[999] == "toilet tissue"
    assert classes[134] == classes[517] == "crane" and classes[638] == classes[639] == "maillot"
    assert "carpenter's kit" in classes and "jack-o'-lantern" in classes
    assert all("," not in c for c in classes)
    assert len(positive_adjectives()) == 27 and len(negative_adjectives()) == 12
    assert {"outstanding", "smashing", "beautiful", "pretty"} <= set(positive_adjectives())
    assert {"horrible", "atrocious", "ugly"} <= set(negative_adjectives())


def test_console_script_and_dependencies():
    project = pyproject()["project"]
    assert project["name"] == "clipcull"
    assert project["scripts"] == {"clipcull": "clip_cull.cli:main"}
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert {"typer", "rich", "torch", "open_clip_torch", "pillow", "exifread", "sqlite-utils", "numpy"} <= names
    assert "torch>=2.1" in project["dependencies"]


def test_sqlite_utils_floor_has_the_migrations_module():
    """sqlite_utils.migrations, which the cache's schema steps use, exists from sqlite-utils 4.0."""
    spec = next(d for d in pyproject()["project"]["dependencies"] if d.startswith("sqlite-utils"))
    floor = spec.split(">=")[1].split(",")[0].strip()
    assert tuple(int(x) for x in floor.split(".")[:2]) >= (4, 0)


def test_cache_schema_check_uses_no_private_sqlite_utils_attribute():
    import ast
    import inspect

    from clip_cull import store

    tree = ast.parse(inspect.getsource(store))
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and isinstance(n.value, ast.Name) and n.value.id == "migrations" and n.attr.startswith("_")]
    assert private == []
    assert store._known_steps() == {name for name in vars(store) if re.match(r"m\d{3}_", name)}  # every schema step
