"""Where the cache and the state database live by default on each platform."""

from pathlib import Path

from clip_cull.core.paths import default_db_path, default_state_path


def test_default_cache_locations():
    home = Path("/home/ana")
    assert default_db_path(platform="linux", env={}, home=home) == home / ".cache/clipcull/clipcull.db"
    assert default_db_path(platform="linux", env={"XDG_CACHE_HOME": "/fast/cache"}, home=home) == Path(
        "/fast/cache/clipcull/clipcull.db")
    assert default_db_path(platform="darwin", env={}, home=home) == home / "Library/Caches/clipcull/clipcull.db"
    assert default_db_path(platform="win32", env={"LOCALAPPDATA": "C:/Users/ana/AppData/Local"}, home=home) == Path(
        "C:/Users/ana/AppData/Local/clipcull/Cache/clipcull.db")


def test_default_state_locations():
    home = Path("/home/ana")
    assert default_state_path(platform="linux", env={}, home=home) == home / ".local/state/clipcull/state.db"
    assert default_state_path(platform="linux", env={"XDG_STATE_HOME": "/keep/state"}, home=home) == Path(
        "/keep/state/clipcull/state.db")
    assert default_state_path(platform="darwin", env={}, home=home) == (
        home / "Library/Application Support/clipcull/state.db")
    assert default_state_path(platform="win32", env={"LOCALAPPDATA": "C:/Users/ana/AppData/Local"}, home=home) == Path(
        "C:/Users/ana/AppData/Local/clipcull/State/state.db")
    assert default_state_path(platform="win32", env={}, home=home) == home / "AppData/Local/clipcull/State/state.db"


def test_the_cli_uses_clipcull_db_over_the_default(monkeypatch, tmp_path):
    from helpers import run

    monkeypatch.setenv("CLIPCULL_DB", str(tmp_path / "here.db"))
    result = run("undo", catch_exceptions=True)  # history needs no cache; undo opens it (moved photos' rows)
    assert result.exit_code == 1 and "nothing to undo" in result.stderr
    assert (tmp_path / "here.db").is_file()


def test_the_state_database_is_in_the_user_state_folder_unless_told(monkeypatch, tmp_path):
    from helpers import run

    monkeypatch.delenv("CLIPCULL_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert run("history", catch_exceptions=True).exit_code == 0
    assert (tmp_path / "xdg-state" / "clipcull" / "state.db").is_file()
