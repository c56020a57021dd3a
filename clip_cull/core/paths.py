"""Where clipcull keeps its cache and its state database by default, per platform."""

import os
import sys
from pathlib import Path

APP_NAME = "clipcull"
DB_FILENAME = "clipcull.db"
STATE_FILENAME = "state.db"


# Per kind of data: (macOS folder under ~/Library, Windows subfolder, XDG variable, its default under ~)
_PLACES = {
    "cache": (("Caches",), "Cache", "XDG_CACHE_HOME", (".cache",)),
    "state": (("Application Support",), "State", "XDG_STATE_HOME", (".local", "state")),
}


def _user_dir(kind: str, platform: str, env: dict | None, home: Path | None) -> Path:
    mac, windows, xdg, xdg_default = _PLACES[kind]
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home.joinpath("Library", *mac, APP_NAME)
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME / windows
    return Path(env.get(xdg) or home.joinpath(*xdg_default)) / APP_NAME


def default_cache_dir(platform: str = sys.platform, env: dict | None = None, home: Path | None = None) -> Path:
    """The user's cache directory for clipcull: XDG on Linux, ~/Library/Caches on macOS,
    %LOCALAPPDATA% on Windows."""
    return _user_dir("cache", platform, env, home)


def default_db_path(**kwargs) -> Path:
    return default_cache_dir(**kwargs) / DB_FILENAME


def default_state_dir(platform: str = sys.platform, env: dict | None = None, home: Path | None = None) -> Path:
    """Where the undo journal and folder settings live: data that must survive a cleared cache.
    XDG_STATE_HOME on Linux, ~/Library/Application Support on macOS, %LOCALAPPDATA% on Windows."""
    return _user_dir("state", platform, env, home)


def default_state_path(**kwargs) -> Path:
    return default_state_dir(**kwargs) / STATE_FILENAME
