"""Where the cache lives by default on each platform."""

from pathlib import Path

from clip_cull.paths import default_db_path


def test_default_cache_locations():
    home = Path("/home/ana")
    assert default_db_path(platform="linux", env={}, home=home) == home / ".cache/clipcull/clipcull.db"
    assert default_db_path(platform="linux", env={"XDG_CACHE_HOME": "/fast/cache"}, home=home) == Path(
        "/fast/cache/clipcull/clipcull.db")
    assert default_db_path(platform="darwin", env={}, home=home) == home / "Library/Caches/clipcull/clipcull.db"
    assert default_db_path(platform="win32", env={"LOCALAPPDATA": "C:/Users/ana/AppData/Local"}, home=home) == Path(
        "C:/Users/ana/AppData/Local/clipcull/Cache/clipcull.db")


def test_the_cli_uses_clipcull_db_over_the_default(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from clip_cull.cli import app

    monkeypatch.setenv("CLIPCULL_DB", str(tmp_path / "here.db"))
    result = CliRunner().invoke(app, ["history"])
    assert result.exit_code == 0 and (tmp_path / "here.db").is_file()
