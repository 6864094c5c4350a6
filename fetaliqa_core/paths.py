"""Where FetalIQA keeps its files.

User directories come from platformdirs. ``FETALIQA_HOME`` (used by the tests and CI) moves all
of them under one folder so that a run never touches the real user profile.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "FetalIQA"

_REPO_ROOT = Path(__file__).resolve().parents[1]


def resources_dir() -> Path:
    """The bundled resources (configs, FOV mask, demo models)."""
    return _REPO_ROOT / "resources"


def _home_override() -> Path | None:
    value = os.environ.get("FETALIQA_HOME")
    return Path(value) if value else None


def cache_dir() -> Path:
    """Results cache and the synthesised demo sweep. Safe to delete."""
    home = _home_override()
    path = home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """User data that must be kept (the review database)."""
    home = _home_override()
    path = home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    """Settings (recent files, window layout, chosen models)."""
    home = _home_override()
    path = home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path
