"""A classifier and a segmenter on one base: one copy of the base, one encoder pass, same outputs."""

from __future__ import annotations

import pytest
import torch

from fetaliqa_core.models.base import random_base
from fetaliqa_core.models.bundle import load_bundle, manifest_for, save_bundle
from fetaliqa_core.models.classifier import FetalCLIPClassifier
from fetaliqa_core.models.lora import LoraSettings
from fetaliqa_core.models.segmenter import FetalCLIPSegmenter
from fetaliqa_core.models.shared import load_shared


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """Bundles whose adapters are not inert (peft starts LoRA B at zero: randomise every adapter)."""
    root = tmp_path_factory.mktemp("pair")
    torch.manual_seed(1)
    out = {}
    for task in ("cls", "seg"):
        visual, info = random_base("tiny", 7)
        model = FetalCLIPClassifier(visual, LoraSettings()) if task == "cls" else \
            FetalCLIPSegmenter(visual, LoraSettings(), n_classes=3, init_filters=8)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.2)
        out[task] = save_bundle(model, root / task, manifest_for(model, info, threshold=0.4))
    return out


def test_shared_pair_equals_the_two_merged_models_with_one_encoder_pass(trained_pair):
    x = torch.randn(3, 3, 224, 224)
    cls = load_bundle(trained_pair["cls"], device="cpu")
    seg = load_bundle(trained_pair["seg"], device="cpu")
    ref_p = cls.predict(x).p_cls
    ref_prob = seg.predict(x).seg_prob
    pair = load_shared(trained_pair["cls"], trained_pair["seg"], device="cpu")
    assert pair.task == "joint" and pair.threshold == 0.4
    pred = pair.predict(x)
    assert pair.model.encoder_passes == 1  # both heads from one pass of the tower
    assert torch.allclose(pred.p_cls, ref_p, atol=1e-4)
    assert torch.allclose(pred.seg_prob, ref_prob, atol=1e-3)
    # the adapters matter: without them the outputs differ
    from fetaliqa_core.models.shared import GroupedLoraLinear
    for m in pair.model.modules():
        if isinstance(m, GroupedLoraLinear):
            m.pairs = [None, None]
    assert not torch.allclose(pair.predict(x).p_cls, ref_p, atol=1e-3)
    # one copy of the base: the pair holds as many tower parameters as one model
    n_pair = sum(p.numel() for p in pair.model.encoder.parameters())
    n_one = sum(p.numel() for p in cls.model.encoder.parameters())
    assert n_pair == n_one


def test_engine_runs_one_encoder_pass_per_batch(trained_pair):
    from fakes import tiny_sweep
    from fetaliqa_core.engine import ScoringEngine

    pair = load_shared(trained_pair["cls"], trained_pair["seg"], device="cpu")
    sweep = tiny_sweep(n_sweeps=1, per_sweep=10)
    engine = ScoringEngine(sweep, cls=pair, seg=pair, cache=False, batch_size=4)
    results = engine.run()
    assert results.complete and results.has_cls and results.has_seg
    assert pair.model.encoder_passes == 4  # batches of 1 (first result), 4, 4, 1


def test_load_models_shares_the_base_of_bundles_on_one_base(trained_pair, tiny_bundle_dirs):
    from fetaliqa_core.models.choice import ModelChoice, load_models

    models = load_models(ModelChoice(model=None, cls=trained_pair["cls"], seg=trained_pair["seg"], device="cpu"))
    assert models.cls is models.seg and models.cls.task == "joint"
    # bundles on different bases are loaded apart
    other = load_models(ModelChoice(model=None, cls=trained_pair["cls"], seg=tiny_bundle_dirs["seg"], device="cpu"))
    assert other.cls is not other.seg and other.cls.task == "cls"


def test_a_large_gpu_runs_the_pair_as_two_merged_models(trained_pair, monkeypatch):
    """One base with two unmerged adapters saves memory but, on an H200, ran 27 % slower than the two
    merged models: where memory is plenty (a GPU of 8 GiB or more) the pair is loaded apart."""
    from types import SimpleNamespace

    from fetaliqa_core.models import choice as choice_mod
    from fetaliqa_core.models.device import DeviceChoice, select_device

    assert choice_mod.share_base(select_device("cpu"))
    gpu = DeviceChoice(device=torch.device("cuda", 0), dtype=torch.bfloat16, batch_size=128)
    for gib, shared in ((141, False), (8, False), (6, True)):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda dev, gib=gib: SimpleNamespace(total_memory=gib * 2**30))
        assert choice_mod.share_base(gpu) is shared, gib
    # where the base is not shared, the two bundles are loaded apart (here on the CPU, by the same rule)
    monkeypatch.setattr(choice_mod, "share_base", lambda device: False)
    models = choice_mod.load_models(choice_mod.ModelChoice(model=None, cls=trained_pair["cls"],
                                                           seg=trained_pair["seg"], device="cpu"))
    assert models.cls is not models.seg and (models.cls.task, models.seg.task) == ("cls", "seg")
    demo = choice_mod.load_models(choice_mod.ModelChoice(model="demo", device="cpu"))
    assert demo.cls is not demo.seg and (demo.cls.task, demo.seg.task) == ("cls", "seg")


def _rewrite(bundle, name: str, change) -> None:
    """Change one tensor file of a bundle and record its new SHA-256 in the manifest, as a bundle
    edited on purpose would be (the checksum alone cannot catch it)."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    path = bundle / name
    tensors = load_file(str(path))
    save_file(change(tensors), str(path))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name,change,expected", [
    ("adapter.safetensors", lambda t: {}, "missing"),
    ("adapter.safetensors", lambda t: {k: v[:4] if "lora_A" in k else v for k, v in t.items()}, "has shape"),
    ("adapter.safetensors", lambda t: {k: v.to(torch.int64) for k, v in t.items()}, "int64"),
    ("head.safetensors", lambda t: {**t, "head.extra": torch.zeros(2)}, "unexpected"),
    ("head.safetensors", lambda t: {k: v.to(torch.int32) for k, v in t.items()}, "int32"),
], ids=["no adapters", "adapter rank 4 for 8", "integer adapters", "extra head tensor", "integer head"])
def test_the_shared_loader_checks_every_tensor_as_the_single_loader_does(trained_pair, tmp_path, name, change, expected):
    """Scoring with a classifier and a segmenter loads both onto one base; that path must refuse
    what loading one bundle refuses: adapters missing (scored with no adapters at all), of
    another rank or shape, integer tensors cast silently, unknown head tensors."""
    import shutil

    from fetaliqa_core.errors import FetalIQAError

    cls_dir = tmp_path / "cls"
    shutil.copytree(trained_pair["cls"], cls_dir)
    _rewrite(cls_dir, name, change)
    for load in (lambda: load_shared(cls_dir, trained_pair["seg"], device="cpu"),
                 lambda: load_bundle(cls_dir, device="cpu")):
        with pytest.raises(FetalIQAError, match=expected):
            load()


def test_weights_that_give_no_numbers_stop_scoring_in_one_line(trained_pair, tmp_path):
    """Finite but absurd adapter values (1e30) make every output NaN: scoring stops with a line
    naming the bundles instead of writing empty scores as a complete result."""
    import shutil

    from fetaliqa_core.errors import FetalIQAError

    cls_dir = tmp_path / "cls"
    shutil.copytree(trained_pair["cls"], cls_dir)
    _rewrite(cls_dir, "adapter.safetensors", lambda t: {k: v * 1e30 if "lora_B" in k else v for k, v in t.items()})
    pair = load_shared(cls_dir, trained_pair["seg"], device="cpu")
    with pytest.raises(FetalIQAError, match="not numbers") as exc:
        pair.predict_labels(torch.randn(2, 3, 224, 224))
    assert str(cls_dir) in str(exc.value)


def test_checking_a_pair_s_adapters_builds_no_random_tower(trained_pair, monkeypatch):
    """The adapters a bundle must hold were listed from a tower built through the random base:
    open_clip's initialisation ran on the CPU before the move to the meta device (13 s and
    1.4 GB more for a ViT-L/14, once per bundle; with both models past the 3 GB a CPU allows)."""
    import fetaliqa_core.models.base as base

    built = []
    real = base.random_base

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "random_base", counting)
    from fetaliqa_core.models.shared import _expected_adapters
    from fetaliqa_core.models.bundle import checked_bundle

    manifest, config, _ = checked_bundle(trained_pair["cls"])
    expected = _expected_adapters(config, manifest)
    assert expected and all(t.device.type == "meta" for t in expected.values())
    assert built == []


def test_the_models_text_says_whether_the_pair_shares_one_encoder_pass(trained_pair, tiny_bundle_dirs,
                                                                        monkeypatch):
    """The window's model tooltip (``describe``) and the provenance named the same models alike
    whether they ran in one encoder pass or in two (a pair on two bases, or loaded apart on a
    large GPU): the memory and time that differ were nowhere to be seen."""
    from fetaliqa_core.models import choice as choice_mod
    from fetaliqa_core.models.choice import ModelChoice, load_models, provenance

    shared = load_models(ModelChoice(model=None, cls=trained_pair["cls"], seg=trained_pair["seg"], device="cpu"))
    assert shared.describe().endswith("; classifier and segmenter on one base: one encoder pass per batch")
    prov = provenance(shared)
    assert prov["encoder_passes"] == 1 and [b["base_sha256"] for b in prov["bundles"]] == ["random:7"] * 2
    apart = load_models(ModelChoice(model=None, cls=trained_pair["cls"], seg=tiny_bundle_dirs["seg"], device="cpu"))
    assert "; classifier and segmenter on different bases (random:7, random:5): two encoder passes" \
        in apart.describe()
    prov = provenance(apart)
    assert prov["encoder_passes"] == 2 and prov["base_sha256"] == "random:7"
    assert [(b["role"], b["base_sha256"]) for b in prov["bundles"]] == [("classifier", "random:7"),
                                                                         ("segmenter", "random:5")]
    monkeypatch.setattr(choice_mod, "share_base", lambda device: False)  # as on a large GPU
    two = load_models(ModelChoice(model=None, cls=trained_pair["cls"], seg=trained_pair["seg"], device="cpu"))
    assert provenance(two)["encoder_passes"] == 2
    assert two.describe().endswith("; classifier and segmenter on one base, loaded as two models: "
                                   "two encoder passes per batch")
    alone = load_models(ModelChoice(model=None, cls=trained_pair["cls"], device="cpu"))
    assert provenance(alone)["encoder_passes"] == 1 and "encoder" not in alone.describe()
