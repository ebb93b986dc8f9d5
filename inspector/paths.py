"""Where Inspector keeps its files.

A source checkout keeps models in `<checkout>/models/` and the result log beside that folder.
An installed (packaged) copy keeps them in the user's data folder, never in the application
folder. INSPECTOR_HOME overrides the data folder for both."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "Inspector"
DB_NAME = "inspections.db"
SHIPPED_GRAPHS = Path(__file__).resolve().parent / "core" / "graphs"  # package data


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def bundle_dir() -> Path:
    """Read-only application files: the PyInstaller bundle, or the source checkout."""
    if is_frozen():
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    return Path(__file__).resolve().parent.parent


def user_data_dir() -> Path:
    env = os.environ.get("INSPECTOR_HOME")
    if env:
        return Path(env)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "inspector"


def default_models_dir() -> Path:
    checkout = bundle_dir()
    if not is_frozen() and "INSPECTOR_HOME" not in os.environ and (checkout / "pyproject.toml").is_file():
        return checkout / "models"
    folder = user_data_dir() / "models"
    try:  # the first start of an installed copy creates its data folder
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # reported, with the path, by whatever then fails to write there
    return folder


def default_db_path(models_dir: Path | None = None) -> Path:
    """The result log lives beside the models folder."""
    return (models_dir or default_models_dir()).resolve().parent / DB_NAME


def backbone_dirs() -> list[Path]:
    """Folders searched for exported backbone graphs: the ones shipped inside the package
    first, then the per-user cache where graphs exported on this machine are kept."""
    cache = Path(os.environ.get("INSPECTOR_CACHE_DIR") or (Path.home() / ".cache" / "inspector"))
    return [SHIPPED_GRAPHS, cache / "backbones"]
