"""What a user installs: every package, the data files, the entry points."""

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

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
    from clip_cull.model.prompts import imagenet_classes, negative_adjectives, positive_adjectives

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

    from clip_cull.store import cache as store

    tree = ast.parse(inspect.getsource(store))
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and isinstance(n.value, ast.Name) and n.value.id == "migrations" and n.attr.startswith("_")]
    assert private == []
    assert store._known_steps() == {name for name in vars(store) if re.match(r"m\d{3}_", name)}  # every schema step


# --- what a built wheel and source distribution carry ----------------------------------------

# Addresses and names a template leaves behind; none may reach the package metadata.
PLACEHOLDERS = re.compile(
    r"REPOSITORY-URL|example\.(com|org)|your-?(name|user|org)|<[a-z -]+>|USERNAME|OWNER/|TODO|placeholder",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist) built from a copy of the tree by setuptools' own backend: no pip, no build
    isolation, so nothing is downloaded (the test extra asks for the setuptools the build needs)."""
    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build needs (77, pyproject.toml)")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("clip_cull", "assets"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    for hook in ("build_wheel", "build_sdist"):  # one process each, as a build frontend does
        subprocess.run([sys.executable, "-c", f"import sys, setuptools.build_meta as b; b.{hook}(sys.argv[1])", str(out)],
                       cwd=src, check=True, capture_output=True, timeout=120)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return wheel, sdist


def test_licence_text_is_mit_and_names_the_authors():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the clipcull authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    project = pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def test_wheel_and_sdist_carry_the_licence_text(built):
    wheel, sdist = built
    licence = (ROOT / "LICENSE").read_bytes()
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith("/LICENSE")]
        assert names == [f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/licenses/LICENSE"]
        assert z.read(names[0]) == licence
    with tarfile.open(sdist) as t:
        member = t.getmember(f"{sdist.name[:-len('.tar.gz')]}/LICENSE")
        assert t.extractfile(member).read() == licence


def test_wheel_metadata_is_complete_and_has_no_placeholder(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(name).decode()
    headers = HeaderParser().parsestr(text, headersonly=True)
    assert headers["Name"] == "clipcull" and headers["Version"] == pyproject()["project"]["version"]
    assert headers["License-Expression"] == "MIT" and headers.get_all("License-File") == ["LICENSE"]
    classifiers = headers.get_all("Classifier")
    assert "Programming Language :: Python :: 3 :: Only" in classifiers and len(classifiers) >= 5
    # Every dependency keeps its floor in the built metadata.
    requires = {r.split(";")[0].strip() for r in headers.get_all("Requires-Dist")}
    assert set(pyproject()["project"]["dependencies"]) <= {r.replace(" ", "") for r in requires} | requires
    # No template leftovers, in the headers or the long description (README.md), and no project
    # address until the project has a real one (see pyproject.toml).
    for key, value in headers.items():
        assert not PLACEHOLDERS.search(value), f"{key}: {value}"
    description = text.split("\n\n", 1)[1]
    assert "Quick start" in description and not PLACEHOLDERS.search(description), PLACEHOLDERS.search(description)
    for url in headers.get_all("Project-URL") or []:
        assert url.split(",", 1)[1].strip().startswith("https://"), url


def test_changelog_starts_at_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    version = pyproject()["project"]["version"]
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[:2] == ["Unreleased", version] and headings[-1] == version


def test_help_tweak_leaves_a_typer_without_display_type_rich_alone(monkeypatch):
    """Typer 0.16 to 0.28 have no display_type_rich (0.29 added it): the help tweak must not
    reach for it there, or every command fails before it starts (the floor is 0.29 now, for the
    help's length; the tweak still must not be what breaks an older one)."""
    import importlib

    from typer import core

    app_module = importlib.import_module("clip_cull.cli.app")  # the module; clip_cull.cli.app is the Typer too

    class Option:
        is_flag = True

    class Argument:
        metavar, name, required, nargs = None, "folder", True, -1

    monkeypatch.setattr(core, "TyperOption", Option)
    monkeypatch.setattr(core, "TyperArgument", Argument)
    app_module._flags_take_no_value()
    assert not hasattr(Option, "display_type_rich") and not hasattr(Argument, "display_type_rich")
    assert Argument().get_usage_pieces(None) == ["folder..."]


def test_no_merge_conflict_markers_in_tracked_files():
    """A merge left half-done must not land: no line of a tracked text file is a conflict marker."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = root / name
        if path.suffix in {".jpg", ".png", ".pt", ".db"} or not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{i}" for i, line in enumerate(lines, 1)
                  if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]
    assert not found, found
