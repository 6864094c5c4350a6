"""Model bundles: save, load (merged), refuse mismatches and damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fetaliqa_core import paths
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.base import build_vision_tower, random_base, random_clip_state_dict, save_base_weights
from fetaliqa_core.models.bundle import (ADAPTER_FILE, HEAD_FILE, MANIFEST_FILE, bundle_hash, demo_models,
                                         load_bundle, manifest_for, read_manifest, save_bundle)
from fetaliqa_core.models.classifier import FetalCLIPClassifier
from fetaliqa_core.models.joint import FetalCLIPJoint
from fetaliqa_core.models.lora import LoraSettings
from fetaliqa_core.models.segmenter import FetalCLIPSegmenter, segmentation_probabilities
from fetaliqa_core.preprocess import PREPROCESS_VERSION

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def _trained_like(model):
    """Give adapters and heads non-trivial values, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in model.encoder.adapted_modules():
            w = module.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.05)
        for module in model.head_modules().values():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model.eval()


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    return save_base_weights(random_clip_state_dict("tiny", 3), tmp_path_factory.mktemp("base") / "w.pt")


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory, base_file):
    visual, info = build_vision_tower("tiny", base_file)
    model = _trained_like(FetalCLIPClassifier(visual, LoraSettings()))
    with torch.no_grad():
        expected = torch.sigmoid(model(_x()))[:, 0]
    out = save_bundle(model, tmp_path_factory.mktemp("bundles") / "cls",
                      manifest_for(model, info, threshold=0.42, metrics={"f1": 0.75}))
    return out, expected


def _edit_manifest(bundle, **changes):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_cls_bundle_round_trip_merged(cls_bundle, base_file):
    bundle, expected = cls_bundle
    assert sorted(p.name for p in bundle.iterdir()) == [ADAPTER_FILE, HEAD_FILE, MANIFEST_FILE]
    m = json.loads((bundle / MANIFEST_FILE).read_text())
    for key in ("format_version", "task", "head", "base_config", "base_sha256", "lora", "threshold",
                "preprocess", "metrics", "project_version", "created"):
        assert key in m
    assert m["task"] == "cls" and m["base_config"] == "tiny" and m["threshold"] == 0.42
    assert m["lora"] == {"r": 8, "alpha": 16, "dropout": 0.1, "bias": "none",
                         "targets": ["attn", "mlp.c_fc", "mlp.c_proj"]}
    assert m["preprocess"]["version"] == PREPROCESS_VERSION and m["metrics"] == {"f1": 0.75}
    loaded = load_bundle(bundle, base_weights=base_file, device="cpu")
    assert loaded.task == "cls" and loaded.threshold == 0.42 and loaded.dtype == torch.float32
    assert not any("lora_" in n for n, _ in loaded.model.named_parameters())  # merged
    pred = loaded.predict(_x())
    assert pred.seg_prob is None and pred.p_cls.shape == (2,) and pred.p_cls.dtype == torch.float32
    assert torch.allclose(pred.p_cls, expected, atol=1e-4)
    unmerged = load_bundle(bundle, base_weights=base_file, device="cpu", merge=False)
    assert torch.allclose(unmerged.predict(_x()).p_cls, pred.p_cls, atol=1e-4)
    assert loaded.bundle_hash == unmerged.bundle_hash == bundle_hash(bundle) and len(loaded.bundle_hash) == 64


@pytest.mark.parametrize("kind", ["seg", "joint"])
def test_seg_and_joint_round_trip_on_random_base(tmp_path, kind):
    visual, info = random_base("tiny", 11)
    model = FetalCLIPSegmenter(visual, LoraSettings(), n_classes=3) if kind == "seg" else \
        FetalCLIPJoint(visual, LoraSettings(), n_classes=1)
    _trained_like(model)
    x = _x()
    with torch.no_grad():
        out = model(x)
    bundle = save_bundle(model, tmp_path / kind, manifest_for(model, info))
    assert read_manifest(bundle).base_sha256 == "random:11"
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for f in bundle.iterdir():  # readable as any file its user writes (safetensors wrote 0600)
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name
    loaded = load_bundle(bundle, device="cpu")  # a random base needs no weights file
    pred = loaded.predict(x)
    if kind == "seg":
        assert pred.p_cls is None and pred.seg_prob.shape == (2, 3, 224, 224)
        assert torch.allclose(pred.seg_prob, segmentation_probabilities(out), atol=1e-4)
        assert torch.allclose(pred.seg_prob.sum(1), torch.ones(2, 224, 224), atol=1e-5)
    else:
        assert torch.allclose(pred.p_cls, torch.sigmoid(out[0])[:, 0], atol=1e-4)
        assert torch.allclose(pred.seg_prob, torch.sigmoid(out[1]), atol=1e-4)


def test_refuses_other_base_weights(cls_bundle, tmp_path):
    bundle, _ = cls_bundle
    other = save_base_weights(random_clip_state_dict("tiny", 4), tmp_path / "other.pt")
    with pytest.raises(FetalIQAError, match="SHA-256"):
        load_bundle(bundle, base_weights=other, device="cpu")
    with pytest.raises(FetalIQAError, match="pass --base FetalCLIP_weights.pt") as missing:
        load_bundle(bundle, base_weights=None, device="cpu")
    assert "--base-weights" not in str(missing.value)  # the option is --base
    # a bundle trained on the bundled demo base finds it (checked by hash as any base is)
    from fetaliqa_core.paths import resources_dir

    demo = load_bundle(resources_dir() / "demo" / "cls", base_weights=None, device="cpu")
    assert demo.manifest.base_sha256 == json.loads((resources_dir() / "demo" / "base_tiny.json").read_text())["sha256"]
    with pytest.raises(FetalIQAError, match="base config 'tiny'"):
        load_bundle(bundle, base_weights=other, device="cpu", base_config="fetalclip")


def test_refuses_damaged_or_malformed_bundles(cls_bundle, base_file, tmp_path):
    bundle, _ = cls_bundle
    with pytest.raises(FetalIQAError, match="no manifest.json"):
        load_bundle(tmp_path, base_weights=base_file, device="cpu")
    cases = {
        "json": lambda b: (b / MANIFEST_FILE).write_text("{broken"),
        "task": lambda b: _edit_manifest(b, task="detect"),
        "missing": lambda b: _drop_key(b, "base_sha256"),
        "future": lambda b: _edit_manifest(b, format_version=99),
        "version true": lambda b: _edit_manifest(b, format_version=True),  # (a bool is an int in Python)
        "version -5": lambda b: _edit_manifest(b, format_version=-5),
        "lora": lambda b: _edit_manifest(b, lora={"r": 4, "alpha": 8, "dropout": 0.1, "bias": "none",
                                                  "targets": ["attn", "mlp.c_fc", "mlp.c_proj"]}),
        "preprocess": lambda b: _edit_manifest(b, preprocess={"version": "0"}),
        "no head file": lambda b: (b / HEAD_FILE).unlink(),
        "changed head": lambda b: (b / HEAD_FILE).write_bytes((b / HEAD_FILE).read_bytes()[:-4] + b"\0\0\0\0"),
        "threshold": lambda b: _edit_manifest(b, threshold=3.0),
    }
    expected_words = {"json": "JSON", "task": "task", "missing": "lacks", "future": "update FetalIQA",
                      "version true": "format_version", "version -5": "format_version",
                      "lora": "shape", "preprocess": "preprocessing", "no head file": "missing",
                      "changed head": "changed or damaged", "threshold": "threshold"}
    for name, damage in cases.items():
        copy = shutil.copytree(bundle, tmp_path / name.replace(" ", "_"))
        damage(copy)
        with pytest.raises(FetalIQAError, match=expected_words[name]):
            load_bundle(copy, base_weights=base_file, device="cpu")


def _drop_key(bundle, key):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    data.pop(key)
    path.write_text(json.dumps(data))


def read_manifest_files(bundle):
    return json.loads((bundle / MANIFEST_FILE).read_text())["files"]


def test_wrong_tensor_shapes_detected_even_with_consistent_manifest(tmp_path):
    from safetensors.torch import load_file, save_file

    from fetaliqa_core.models.bundle import _sha256_file

    visual, info = random_base("tiny", 0)
    model = FetalCLIPClassifier(visual, LoraSettings())
    bundle = save_bundle(model, tmp_path / "b", manifest_for(model, info))
    state = load_file(str(bundle / HEAD_FILE))
    state["head.weight"] = torch.zeros(1, 64)
    save_file(state, str(bundle / HEAD_FILE))
    files = read_manifest_files(bundle)
    files[HEAD_FILE] = _sha256_file(bundle / HEAD_FILE)
    _edit_manifest(bundle, files=files)
    with pytest.raises(FetalIQAError, match=r"head.weight has shape \[1, 64\], the model expects \[1, 128\]"):
        load_bundle(bundle, device="cpu")


def test_random_base_fingerprint_checked(tmp_path):
    visual, info = random_base("tiny", 2)
    model = FetalCLIPClassifier(visual, None)
    bundle = save_bundle(model, tmp_path / "b", manifest_for(model, info))
    assert not (bundle / ADAPTER_FILE).exists()  # no LoRA, no adapter file
    assert load_bundle(bundle, device="cpu").predict(_x(1)).p_cls.shape == (1,)
    _edit_manifest(bundle, base_fingerprint="0" * 64)
    with pytest.raises(FetalIQAError, match="does not reproduce"):
        load_bundle(bundle, device="cpu")


def test_save_refuses_merged_model_and_wrong_manifest(tmp_path):
    visual, info = random_base("tiny", 0)
    model = FetalCLIPClassifier(visual, LoraSettings())
    manifest = manifest_for(model, info)
    seg = FetalCLIPSegmenter(random_base("tiny", 0)[0], LoraSettings())
    with pytest.raises(FetalIQAError, match="does not describe"):
        save_bundle(seg, tmp_path / "x", manifest)
    model.encoder.merge_lora()
    with pytest.raises(FetalIQAError, match="merged"):
        save_bundle(model, tmp_path / "y", manifest)


def test_demo_models_load_on_their_shipped_base():
    cls, seg = demo_models(device="cpu")
    assert cls.task == "cls" and seg.task == "seg" and seg.manifest.n_classes == 3
    assert not cls.base.is_random and cls.base.sha256 == seg.base.sha256
    assert cls.predict(_x(1)).p_cls.shape == (1,)


def test_missing_demo_models_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "resources_dir", lambda: tmp_path)
    with pytest.raises(FetalIQAError, match="demo model"):
        demo_models(device="cpu")


def test_a_random_base_named_without_its_fingerprint_is_refused(tmp_path):
    """A demo bundle whose manifest was edited to name random:0 (no fingerprint) loaded onto a random
    tower and scored other frames without a word (its demo notice gone too)."""
    visual, info = random_base("tiny", 2)
    model = FetalCLIPClassifier(visual, None)
    bundle = save_bundle(model, tmp_path / "b", manifest_for(model, info))
    _edit_manifest(bundle, base_fingerprint=None)
    with pytest.raises(FetalIQAError, match="without the fingerprint"):
        load_bundle(bundle, device="cpu")


_SAVE_TINY = """
import sys, torch
from fetaliqa_core.models.base import random_base
from fetaliqa_core.models.bundle import manifest_for, save_bundle
from fetaliqa_core.models.classifier import FetalCLIPClassifier
from fetaliqa_core.models.lora import LoraSettings
torch.manual_seed(0)
visual, info = random_base("tiny", 11)
model = FetalCLIPClassifier(visual, LoraSettings())
manifest = manifest_for(model, info)
manifest.created = "fixed"
for out in sys.argv[1:]:
    save_bundle(model, out, manifest)
"""


def test_the_same_tensors_give_the_same_bundle_files_in_every_process(tmp_path):
    """safetensors writes its metadata in an order that changes from one save to the next: a bundle
    retrained to identical tensors recorded other file SHA-256s. The files are now byte for byte
    the same, in one process and in another, and still load."""
    import os
    import subprocess
    import sys

    here = [tmp_path / f"here{k}" for k in range(6)]
    script = tmp_path / "save_tiny.py"
    script.write_text(_SAVE_TINY, encoding="utf-8")
    import fetaliqa_core

    root = str(Path(fetaliqa_core.__file__).resolve().parents[1])  # this checkout's code in the child too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    for outs in (here, [tmp_path / "other"]):
        subprocess.run([sys.executable, str(script), *map(str, outs)], check=True, cwd=root, env=env, timeout=300)
    bundles = here + [tmp_path / "other"]
    for name in (HEAD_FILE, ADAPTER_FILE):
        assert len({(b / name).read_bytes() for b in bundles}) == 1, name
    assert len({tuple(sorted(read_manifest(b).files.items())) for b in bundles}) == 1
    assert load_bundle(bundles[-1], device="cpu").predict(_x(1)).p_cls.shape == (1,)
