"""Shared fixtures. Every test runs with its own FETALIQA_HOME so that no user profile,
cache or review database outside the test's temporary folder is touched."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("fetaliqa_home")
    monkeypatch.setenv("FETALIQA_HOME", str(home))
    return home
