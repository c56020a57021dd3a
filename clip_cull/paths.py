"""Where clipcull keeps its cache and its state database by default, per platform."""

import os
import sys
from pathlib import Path

APP_NAME = "clipcull"
DB_FILENAME = "clipcull.db"
STATE_FILENAME = "state.db"


def default_cache_dir(platform: str = sys.platform, env: dict | None = None, home: Path | None = None) -> Path:
    """The user's cache directory for clipcull: XDG on Linux, ~/Library/Caches on macOS,
    %LOCALAPPDATA% on Windows."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    base = env.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(base) / APP_NAME


def default_db_path(**kwargs) -> Path:
    return default_cache_dir(**kwargs) / DB_FILENAME


def default_state_dir(platform: str = sys.platform, env: dict | None = None, home: Path | None = None) -> Path:
    """Where the undo journal and folder settings live: data that must survive a cleared cache.
    XDG_STATE_HOME on Linux, ~/Library/Application Support on macOS, %LOCALAPPDATA% on Windows."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME / "State"
    base = env.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / APP_NAME


def default_state_path(**kwargs) -> Path:
    return default_state_dir(**kwargs) / STATE_FILENAME
