"""FetalCLIP base loading, LoRA placement, classifier, segmenter, joint model, device choice."""

from __future__ import annotations

import pickle
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models import base as base_mod
from fetaliqa_core.models.base import (build_vision_tower, load_base_config, random_base, random_clip_state_dict,
                                       save_base_weights, tensors_sha256)
from fetaliqa_core.models.classifier import FetalCLIPClassifier
from fetaliqa_core.models.device import select_device
from fetaliqa_core.models.joint import FetalCLIPJoint
from fetaliqa_core.models.lora import LoraSettings
from fetaliqa_core.models.segmenter import (MASK_AREA_FRACTION, FetalCLIPSegmenter, TokenGrid, mask_quality_call,
                                            segmentation_blocks, segmentation_probabilities)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="module")
def tiny_state():
    return random_clip_state_dict("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_state):
    return save_base_weights(tiny_state, tmp_path_factory.mktemp("base") / "FetalCLIP_weights.pt")


def _x(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _visual(seed: int = 0):
    return random_base("tiny", seed)[0]


# ----------------------------------------------------------------------------------- device
def test_select_device_cpu_and_errors():
    cpu = select_device("cpu")
    assert cpu.device.type == "cpu" and cpu.dtype == torch.float32 and cpu.batch_size == 4
    # bf16 on a CPU keeps batch 8; fp32 halves it (its activations and packed weights are twice
    # the size: the real pair peaked above 3 GB at batch 8, and batch 4 is no slower)
    assert select_device("cpu", "bf16").batch_size == 8 and select_device("cpu", "fp32").batch_size == 4
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.device.type == "cuda" and auto.dtype == torch.bfloat16 and auto.batch_size == 128
    else:
        assert auto.device.type in ("cpu", "mps") and auto.dtype == torch.float32
        with pytest.raises(FetalIQAError, match="cuda"):
            select_device("cuda")
        with pytest.raises(FetalIQAError, match="device 'cuda:1' was asked for"):  # (the index was dropped)
            select_device("cuda:1")
    with pytest.raises(FetalIQAError, match="not known"):
        select_device("tpu")


# ----------------------------------------------------------------------------------- configs and base
def test_configs_load_and_bad_config(tmp_path):
    real, tiny = load_base_config("fetalclip"), load_base_config("tiny")
    assert real["embed_dim"] == 768 and real["vision_cfg"]["layers"] == 24 and real["vision_cfg"]["width"] == 1024
    assert tiny["vision_cfg"]["layers"] == 8 and tiny["vision_cfg"]["width"] == 128
    with pytest.raises(FetalIQAError, match="not found"):
        load_base_config("vit-huge")
    bad = tmp_path / "cfg.json"
    bad.write_text("{not json")
    with pytest.raises(FetalIQAError, match="JSON"):
        load_base_config(bad)
    bad.write_text('{"embed_dim": 8, "vision_cfg": {"layers": [3, 4, 6, 3], "width": 64, "patch_size": 14, '
                   '"image_size": 224}}')
    with pytest.raises(FetalIQAError, match="layers"):
        load_base_config(bad)


def test_random_base_is_seeded_and_matches_full_clip(tiny_state):
    a, info = random_base("tiny", 0)
    b, _ = random_base("tiny", 0)
    c, _ = random_base("tiny", 1)
    assert info.sha256 == "random:0" and info.config_name == "tiny" and info.embed_dim == 128
    assert tensors_sha256(a.state_dict()) == tensors_sha256(b.state_dict()) != tensors_sha256(c.state_dict())
    visual_part = {k[len("visual."):]: v for k, v in tiny_state.items() if k.startswith("visual.")}
    assert tensors_sha256(visual_part) == tensors_sha256(a.state_dict())
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    # proper initialisation, not zeros or the meta device
    assert a.transformer.resblocks[0].mlp.c_fc.weight.std() > 0.01


def test_load_weights_file_uses_meta_device_and_drops_text(tiny_file, tiny_state, monkeypatch):
    # loading must not spend time initialising weights that the file then overwrites: the
    # module's own init may only ever touch meta tensors (which costs nothing)
    touched = []

    def watch(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            tensor = args[0] if args and isinstance(args[0], torch.Tensor) else out
            touched.append(tensor.is_meta)
            return out
        return wrapper

    for name in ("kaiming_uniform_", "xavier_uniform_", "uniform_", "normal_", "constant_", "zeros_", "ones_"):
        monkeypatch.setattr(torch.nn.init, name, watch(getattr(torch.nn.init, name)))
    monkeypatch.setattr(torch, "randn", watch(torch.randn))
    visual, info = build_vision_tower("tiny", tiny_file)
    monkeypatch.undo()
    assert touched and all(touched)
    assert len(info.sha256) == 64 and info.weights_path == str(tiny_file)
    assert all(not k.startswith(("token_embedding", "text", "transformer.resblocks.0.attn.in_proj_weight_t"))
               for k in visual.state_dict())
    assert "conv1.weight" in visual.state_dict() and "token_embedding.weight" not in visual.state_dict()
    ref, _ = random_base("tiny", 0)
    with torch.no_grad():
        assert torch.equal(visual(_x(1)), ref(_x(1)))


def test_load_accepts_wrapped_prefixed_and_safetensors(tmp_path, tiny_state):
    wrapped = save_base_weights({f"module.{k}": v for k, v in tiny_state.items()}, tmp_path / "a.pt")
    torch.save({"state_dict": torch.load(wrapped, weights_only=True), "epoch": 3}, tmp_path / "b.pt")
    st = save_base_weights(tiny_state, tmp_path / "c.safetensors")
    want = tensors_sha256(random_base("tiny", 0)[0].state_dict())
    for path in (wrapped, tmp_path / "b.pt", st):
        assert tensors_sha256(build_vision_tower("tiny", path)[0].state_dict()) == want


class _Payload:  # a pickled object of this class needs code from this module to load
    pass


def test_bad_files_give_clear_errors(tmp_path, tiny_file):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n" * 10)
    with pytest.raises(FetalIQAError, match="not a PyTorch checkpoint|cannot be read"):
        build_vision_tower("tiny", text)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    with pytest.raises(FetalIQAError, match="truncated|damaged|cannot be read"):
        build_vision_tower("tiny", truncated)
    code = tmp_path / "code.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1), "extra": _Payload()}, code)
    with pytest.raises(FetalIQAError, match="Python objects"):
        build_vision_tower("tiny", code)
    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(FetalIQAError):
        build_vision_tower("tiny", raw_pickle)
    with pytest.raises(FetalIQAError, match="does not exist"):
        build_vision_tower("tiny", tmp_path / "missing.pt")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"\0" * 10)
    with pytest.raises(FetalIQAError, match="safetensors"):
        build_vision_tower("tiny", empty)


def _rewrite_zip(src, dst, change):
    """Copy a torch.save zip record by record, letting ``change(name, data)`` return new bytes
    and a compression type (or None to drop the record)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info))
            if out is not None:
                data, compression = out
                zout.writestr(zipfile.ZipInfo(info.filename), data, compress_type=compression)
    return dst


def test_hostile_zip_checkpoints_are_refused_before_torch_reads_them(tmp_path, tiny_file, monkeypatch):
    """torch.load trusts a checkpoint's sizes: an index that inflates to gigabytes, a storage
    longer than its record (mapped over the records after it) and the legacy format (storages
    allocated from the pickle's claim) are refused from the file's own structure first."""
    import zipfile

    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    # the unchanged file loads: the check accepts what torch.save writes
    assert "visual.proj" in base_mod.load_clip_state_dict(tiny_file) and len(loads) == 1
    stored = zipfile.ZIP_STORED

    # an index (data.pkl) deflated: a few MB that would inflate to gigabytes
    bomb = _rewrite_zip(tiny_file, tmp_path / "bomb.pt", lambda n, d: (
        (d + b"\0" * (32 << 20), zipfile.ZIP_DEFLATED) if n.endswith("data.pkl") else (d, stored)))
    # one storage's record cut to 40 bytes: torch would map the tensor over the records after it
    with zipfile.ZipFile(tiny_file) as zf:
        biggest = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename
    short = _rewrite_zip(tiny_file, tmp_path / "short.pt",
                         lambda n, d: (d[:40] if n == biggest else d, stored))
    # a storage the index names but the archive does not hold
    missing = _rewrite_zip(tiny_file, tmp_path / "missing.pt", lambda n, d: None if n == biggest else (d, stored))
    # the legacy (pre-1.6) format, whose storages are allocated from the pickle's claim
    legacy = tmp_path / "legacy.pt"
    torch.save({"visual.proj": torch.zeros(4, 4)}, legacy, _use_new_zipfile_serialization=False)
    # a zip cut short: the directory at its end is gone
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_file.read_bytes()[:-200])
    loads.clear()
    for path, words in ((bomb, "compressed"), (short, "claims .* but its record holds 40 bytes"),
                        (missing, "does not hold"), (legacy, "zip format"), (cut, "cut short")):
        with pytest.raises(FetalIQAError, match=words) as err:
            base_mod.load_clip_state_dict(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert loads == [], "torch.load ran on a file the check should have refused"
    # an index crafted to make the unpickler allocate: nine bytes claiming a memo of 2**27 entries,
    # a million objects, an element count of 10**400; each is one line, nothing is built
    import pickle as _pickle
    import struct as _struct

    def index(pkl):
        return _rewrite_zip(tiny_file, tmp_path / f"idx{len(pkl)}.pt",
                            lambda n, d: (pkl if n.endswith("data.pkl") else d, stored))

    def text(v):
        return b"X" + _struct.pack("<I", len(v)) + v.encode()

    long4 = _pickle.encode_long(10**400)
    for pkl, words in ((b"\x80\x02Nr" + _struct.pack("<I", 2**27) + b".", "memo index out of range"),
                       (b"\x80\x02(" + b"\x8f" * 1_000_001 + b"l.", "more than 1000000 operations"),
                       (b"\x80\x02(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
                        + b"\x8b" + _struct.pack("<i", len(long4)) + long4 + b"tQ.", "malformed storage reference")):
        with pytest.raises(FetalIQAError, match=words):
            base_mod.load_clip_state_dict(index(pkl))
    assert loads == []
    # what torch.save writes for every dtype passes (uint16 and float8 storages are untyped ones)
    odd = tmp_path / "odd.pt"
    torch.save({"a": torch.zeros(3, dtype=torch.uint16), "b": torch.zeros(2, dtype=torch.float8_e4m3fn)}, odd)
    from fetaliqa_core import validate

    validate.check_torch_checkpoint(odd, "the file", "")
    # a training checkpoint is held to the same check before it is read
    from training.checkpoints import load_checkpoint

    with pytest.raises(FetalIQAError, match="claims .* but its record holds 40 bytes.*delete it"):
        load_checkpoint(short)


def test_wrong_keys_and_shapes_are_named(tmp_path, tiny_state):
    other = save_base_weights({"features.0.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(2)},
                              tmp_path / "resnet.pt")
    with pytest.raises(FetalIQAError) as err:
        build_vision_tower("tiny", other)
    msg = str(err.value)
    assert "missing" in msg and "visual.conv1.weight" in msg and "FetalCLIP_weights.pt" in msg
    # a tiny checkpoint given for the real config: both shapes named and the fix suggested
    with pytest.raises(FetalIQAError) as err:
        build_vision_tower("fetalclip", save_base_weights(tiny_state, tmp_path / "tiny.pt"))
    msg = str(err.value)
    assert "shape mismatch at visual.class_embedding: file has [128], config expects [1024]" in msg
    assert "--base-config tiny" in msg
    # one block missing and one unknown vision key
    cut = dict(tiny_state)
    cut.pop("visual.transformer.resblocks.7.mlp.c_fc.weight")
    cut["visual.head.weight"] = torch.zeros(1)
    with pytest.raises(FetalIQAError) as err:
        build_vision_tower("tiny", save_base_weights(cut, tmp_path / "cut.pt"))
    assert "resblocks.7.mlp.c_fc.weight" in str(err.value) and "visual.head.weight" in str(err.value)


def test_sha256_is_cached_but_notices_changes(tmp_path, tiny_state):
    path = save_base_weights(tiny_state, tmp_path / "w.pt")
    first = base_mod.file_sha256(path)
    assert base_mod.file_sha256(path) == first
    save_base_weights(random_clip_state_dict("tiny", 5), path)
    assert base_mod.file_sha256(path) != first


# ----------------------------------------------------------------------------------- LoRA
def _randomise_lora(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in model.encoder.adapted_modules():
            w = module.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.05)


def test_lora_settings_and_trainable_parameters():
    model = FetalCLIPClassifier(_visual())
    s = model.encoder.lora
    assert (s.r, s.alpha, s.dropout, s.bias) == (8, 16, 0.1, "none")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    width, depth = 128, 8
    # per block: in_proj (w->3w), out_proj (w->w), c_fc (w->4w), c_proj (4w->w): r*w*(4+2+5+5)
    assert lora_params == 8 * width * 16 * depth
    # the reference's MLP-only adapters: r*w*(5+5) per block (1.97 M on ViT-L/14: 8*1024*10*24)
    mlp = FetalCLIPClassifier(_visual(), LoraSettings(targets=("mlp.c_fc", "mlp.c_proj")))
    assert sum(p.numel() for n, p in mlp.named_parameters() if "lora_" in n) == 8 * width * 10 * depth
    assert 8 * 1024 * 10 * 24 == 1_966_080 and 8 * 1024 * 16 * 24 == 3_145_728
    assert model.head.in_features == 128 and model.head.out_features == 1
    with pytest.raises(FetalIQAError):
        LoraSettings(targets=("attn.out_proj",))


def test_every_lora_adapter_changes_the_output():
    """Each adapter changes the encoder's embedding (the classifier's single logit could miss a
    change by chance: a random head once projected it to 1e-5, and the test failed depending on
    what ran before it)."""
    torch.manual_seed(0)
    model = FetalCLIPClassifier(_visual())
    model.eval()
    x = _x(1)
    adapted = model.encoder.adapted_modules()
    names = [n for n, _ in adapted]
    # attention (fused qkv and its out_proj) and both MLP layers in each of the 8 blocks
    assert len(adapted) == 8 * 4
    assert any(n.endswith("attn") for n in names) and any(n.endswith("attn.base_layer.out_proj") for n in names)
    with torch.no_grad():
        y0, e0 = model(x), model.encoder(x)
        for name, module in adapted:
            w = module.lora_B["default"].weight
            saved = w.clone()
            w.normal_(0, 0.5)
            e1 = model.encoder(x)
            w.copy_(saved)
            assert (e1 - e0).abs().max() > 1e-3, f"LoRA on {name} has no effect"
        # peft's attention LoRA adds and subtracts its update around each call: fp32 rounding only
        assert torch.allclose(model(x), y0, atol=1e-6)


def test_lora_training_refuses_low_precision_base():
    """peft's attention LoRA adds and subtracts its update around each call; with bf16 base
    weights that rounding would drift the frozen base step after step."""
    model = FetalCLIPClassifier(_visual()).to(torch.bfloat16)
    model.train()
    x = _x(1).to(torch.bfloat16)
    with pytest.raises(FetalIQAError, match="float32"):
        model(x)
    with torch.no_grad():  # inference in bf16 is fine
        assert model(x).shape == (1, 1)
    model.float()
    attn = model.encoder.visual.transformer.resblocks[0].attn.get_base_layer()
    before = attn.in_proj_weight.detach().clone()
    _randomise_lora(model)
    for _ in range(3):
        model(_x(1)).sum().backward()
    assert (attn.in_proj_weight.detach() - before).abs().max() < 1e-6


def test_reference_out_proj_adapter_is_inert():
    """Why attention is adapted through peft's MultiheadAttention layer: a LoRA placed on
    ``attn.out_proj`` as a Linear (the reference code) never runs (peft issue #761)."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    visual = _visual()
    model = LoraModel(visual, LoraConfig(r=8, lora_alpha=16, target_modules=["out_proj"]), "default")
    x = _x(1)
    with torch.no_grad():
        y0 = model.model(x)
        for module in model.model.modules():
            if isinstance(getattr(module, "lora_B", None), nn.ModuleDict):
                module.lora_B["default"].weight.normal_(0, 1.0)
        assert torch.equal(model.model(x), y0)


def test_merge_matches_unmerged_and_removes_peft_layers():
    model = FetalCLIPClassifier(_visual())
    _randomise_lora(model)
    model.eval()
    x = _x(2)
    with torch.no_grad():
        before = model(x)
        model.encoder.merge_lora()
        after = model(x)
    assert torch.allclose(before, after, atol=1e-4)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert type(model.encoder.visual.transformer.resblocks[0].attn) is nn.MultiheadAttention


# ----------------------------------------------------------------------------------- segmenter
def test_segmentation_blocks_follow_the_paper():
    assert segmentation_blocks(24) == (6, 8, 12, 24)
    assert segmentation_blocks(8) == (2, 3, 4, 8)
    assert segmentation_blocks(12) == (3, 4, 6, 12)
    assert len(set(segmentation_blocks(4))) == 4
    with pytest.raises(FetalIQAError):
        segmentation_blocks(3)


def test_token_grid_is_exact_bilinear_resize():
    grid = TokenGrid((16, 16), 14)
    x = torch.randn(2, 256, 40)
    ours = grid(x)
    ref = F.interpolate(x.transpose(1, 2).reshape(2, 40, 16, 16), size=(14, 14), mode="bilinear",
                        align_corners=False)
    assert ours.shape == (2, 40, 14, 14)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_encoder_taps_the_right_blocks():
    model = FetalCLIPSegmenter(_visual(), None)
    outputs = {}
    blocks = model.encoder.visual.transformer.resblocks
    hooks = [blocks[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i + 1, out))
             for i in range(len(blocks))]
    x = _x(1)
    with torch.no_grad():
        _, tokens = model.encoder.features(x, model.seg.blocks)
    for h in hooks:
        h.remove()
    assert model.seg.blocks == (2, 3, 4, 8)
    for b, t in zip(model.seg.blocks, tokens):
        assert t.shape == (1, 256, 128)
        assert torch.equal(t, outputs[b][:, 1:])  # class token dropped


@pytest.mark.parametrize("n_classes", [1, 3])
def test_segmenter_shapes_and_lora_trains(n_classes):
    model = FetalCLIPSegmenter(_visual(), LoraSettings(), n_classes=n_classes)
    model.train()
    logits = model(_x(2))
    assert logits.shape == (2, n_classes, 224, 224)
    target = torch.zeros(2, 224, 224, dtype=torch.long)
    target[:, 80:150, 60:170] = 1
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], target.float()) if n_classes == 1 \
        else F.cross_entropy(logits, target)
    loss.backward()
    lora = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    assert lora
    # lora_B starts at zero, so lora_A's first gradient is zero; lora_B's must not be
    for n, p in lora:
        if "lora_B" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert model.seg.decoder.out.weight.grad.abs().sum() > 0
    # after a step the adapters are non-zero and lora_A receives gradients as well
    _randomise_lora(model)
    model.zero_grad()
    model(_x(1)).float().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora)


def test_channels_last_decoder_gives_the_same_masks():
    """The CUDA path runs the decoder channels_last; the numbers must not change."""
    model = FetalCLIPSegmenter(_visual(), None, n_classes=1).eval()
    x = _x(1)
    with torch.no_grad():
        plain = model(x)
        model.seg.use_channels_last(True)
        nhwc = model(x)
    assert torch.allclose(plain, nhwc, atol=1e-4)


def test_mask_quality_call_threshold_named_once():
    assert MASK_AREA_FRACTION == 0.01
    prob = torch.zeros(2, 1, 224, 224)
    prob.view(2, -1)[0, :501] = 0.9  # 501 px < 1 % of 50176
    prob.view(2, -1)[1, :502] = 0.9  # 502 px >= 1 %
    assert mask_quality_call(prob).tolist() == [False, True]
    # 3-class: P(abdomen) = 1 - P(background), whether optimal or suboptimal
    logits = torch.zeros(1, 3, 224, 224)
    logits[0, 0] = 5.0  # background everywhere...
    logits[0, 2, :30, :30] = 10.0  # ...except 900 px of suboptimal plane
    assert mask_quality_call(segmentation_probabilities(logits)).tolist() == [True]


def test_joint_model_shares_one_pass():
    model = FetalCLIPJoint(_visual(), LoraSettings(), n_classes=3)
    _randomise_lora(model)
    model.eval()
    x = _x(2)
    with torch.no_grad():
        cls_logits, seg_logits = model(x)
        assert torch.allclose(cls_logits, model.head(model.encoder(x)), atol=1e-5)
        _, tokens = model.encoder.features(x, model.seg.blocks)
        assert torch.allclose(seg_logits, model.seg(x, tokens), atol=1e-5)
    assert cls_logits.shape == (2, 1) and seg_logits.shape == (2, 3, 224, 224)


# ----------------------------------------------------------------------------------- real size
def test_real_size_architecture_with_random_weights():
    """FetalCLIP's real ViT-L/14 config: build it (random weights), one frame through the
    classifier and the segmenter."""
    t0 = time.perf_counter()
    visual, info = random_base("fetalclip", 0)
    built = time.perf_counter() - t0
    assert (info.embed_dim, info.width, info.layers) == (768, 1024, 24)
    assert sum(p.numel() for p in visual.parameters()) == pytest.approx(303.97e6, rel=1e-4)
    model = FetalCLIPJoint(visual, LoraSettings(), n_classes=1)
    assert model.head.in_features == 768 and model.seg.blocks == (6, 8, 12, 24)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 16 * 8 * 1024 * 24
    model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        cls_logits, seg_logits = model(_x(1))
    print(f"real-size: build {built:.1f} s, one frame (encoder + both heads) {time.perf_counter() - t0:.1f} s")
    assert cls_logits.shape == (1, 1) and seg_logits.shape == (1, 1, 224, 224)
    assert torch.isfinite(cls_logits).all() and torch.isfinite(seg_logits).all()


def test_task_table_builds_each_model_and_splits_its_output():
    """One table says what each kind of model has; building from it gives the model of that kind,
    and its output splits into exactly the logits it declares."""
    from fetaliqa_core.models.tasks import TASKS, task

    visual, _ = random_base("tiny", seed=0)
    x = torch.randn(1, 3, 224, 224)
    for name, kind in TASKS.items():
        torch.manual_seed(0)
        model = kind.build(visual, LoraSettings(), n_classes=3, init_filters=4).eval()
        assert model.task == name
        with torch.no_grad():
            cls_logits, seg_logits = kind.split(model(x))
        assert (cls_logits is not None) == kind.has_cls and (seg_logits is not None) == kind.has_seg
        if kind.has_cls:
            assert cls_logits.shape == (1, 1)
        if kind.has_seg:
            assert seg_logits.shape == (1, 3, 224, 224)
    assert set(TASKS) == {"cls", "seg", "joint"}
    with pytest.raises(FetalIQAError, match="cls, seg, joint"):
        task("both")


def test_a_damaged_tensor_in_a_base_of_the_right_architecture_is_called_damaged(tmp_path, tiny_state):
    """One tensor's shape changed in a file of the config's own architecture gave "the file holds a
    ViT of width 128, ...; the config expects width 128, ...: pass the matching --base-config",
    two identical descriptions and a fix no config could give."""
    key = next(k for k in tiny_state if k.endswith("mlp.c_fc.weight"))
    bad = dict(tiny_state)
    bad[key] = torch.zeros(bad[key].shape[0] - 4, bad[key].shape[1])
    with pytest.raises(FetalIQAError) as err:
        build_vision_tower("tiny", save_base_weights(bad, tmp_path / "damaged.pt"))
    msg = str(err.value)
    assert f"shape mismatch at {key}" in msg and "it is damaged" in msg and "--base-config" not in msg


def test_a_pair_trained_on_two_base_files_is_refused_in_one_line(tmp_path, capsys):
    """A classifier and a segmenter trained on two different weights files: with either file as
    --base one of them was refused, naming the other file, so the advice went round in a circle."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.io import write_volume
    from fetaliqa_core.models.base import random_clip_state_dict, save_base_weights
    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter
    import numpy as np

    bundles = {}
    for task, seed in (("cls", 1), ("seg", 2)):
        weights = save_base_weights(random_clip_state_dict("tiny", seed), tmp_path / f"base_{task}.pt")
        visual, info = build_vision_tower("tiny", weights)
        model = FetalCLIPClassifier(visual, LoraSettings()) if task == "cls" else \
            FetalCLIPSegmenter(visual, LoraSettings(), n_classes=3, init_filters=8)
        bundles[task] = save_bundle(model, tmp_path / task, manifest_for(model, info))
    sweep = tmp_path / "sweep.mha"
    write_volume(sweep, np.zeros((2, 64, 64), np.uint8), spacing_mm=(0.3, 0.3))
    for base in ("base_cls.pt", "base_seg.pt"):
        assert main(["score", str(sweep), "--cls", str(bundles["cls"]), "--seg", str(bundles["seg"]),
                     "--base", str(tmp_path / base), "--out", str(tmp_path / "out"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "one scoring run uses one base" in err and err.count("\n") == 1


def test_a_base_no_bundle_uses_is_refused_not_ignored(tiny_bundle_dirs, tmp_path, capsys):
    """--base with a student's bundle, or with bundles trained on a random base, was ignored without
    a word (the run's numbers came from no such file), while --model demo-student --base was refused."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.io import write_volume
    from fetaliqa_core.models.bundle import demo_models_dir

    import numpy as np

    sweep = tmp_path / "sweep.mha"
    write_volume(sweep, np.zeros((2, 64, 64), np.uint8), spacing_mm=(0.3, 0.3))
    weights = tmp_path / "FetalCLIP_weights.pt"
    weights.write_bytes(b"not read")
    student = demo_models_dir() / "student"
    for models in (["--cls", str(student), "--seg", str(student)], ["--cls", str(tiny_bundle_dirs["cls"])]):
        assert main(["score", str(sweep), *models, "--base", str(weights), "--out", str(tmp_path / "o"),
                     "--quiet"]) == 1
        assert "is used by none of these bundles" in capsys.readouterr().err
