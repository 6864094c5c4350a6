"""Shared fixtures. Every test runs with its own FETALIQA_HOME so that no user profile,
cache or review database outside the test's temporary folder is touched."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Automatic precision picks bf16 on CPUs with bf16 matrix instructions; tests that compare
# outputs against fp32 references pin fp32, and the precision tests ask for "auto" / "bf16".
os.environ.setdefault("FETALIQA_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("fetaliqa_home")
    monkeypatch.setenv("FETALIQA_HOME", str(home))
    from fetaliqa_core import paths

    # what cannot be written is said once per process: each test is a fresh process's worth
    monkeypatch.setattr(paths, "_warned", set())
    monkeypatch.setattr(paths, "_not_writable", [])
    return home


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """This machine as a CPU without bf16 matrix instructions, whatever CPU runs the tests: automatic
    precision is then fp32 (the probe's answer is kept per process: cleared before and after)."""
    from fetaliqa_core.models import device as dev

    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: ((), True))
    dev.cpu_precision_probe.cache_clear()
    yield
    dev.cpu_precision_probe.cache_clear()


@pytest.fixture(scope="session")
def tiny_bundle_dirs(tmp_path_factory):
    """Classifier (cls) and 3-class segmenter (seg) bundles on a random tiny base, saved to disk."""
    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter

    root = tmp_path_factory.mktemp("tiny_bundles")
    visual, info = random_base("tiny", 5)
    cls = FetalCLIPClassifier(visual, LoraSettings())
    visual, info = random_base("tiny", 5)
    seg = FetalCLIPSegmenter(visual, LoraSettings(), n_classes=3, init_filters=8)
    return {"cls": save_bundle(cls, root / "cls", manifest_for(cls, info)),
            "seg": save_bundle(seg, root / "seg", manifest_for(seg, info))}
