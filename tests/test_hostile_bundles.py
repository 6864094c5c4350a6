"""Hostile and broken model bundles: every manifest number bounded before anything is built,
safetensors headers checked against the file, tensors finite. One test per failure found when
bundles were attacked, plus property-based tests on mutated manifests and safetensors headers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetaliqa_core import paths, validate
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.bundle import HEAD_FILE, MANIFEST_FILE, _read_tensors, load_bundle, read_manifest

FUZZ = settings(max_examples=int(os.environ.get("FETALIQA_FUZZ_EXAMPLES", "60")), deadline=3000,
                derandomize=not os.environ.get("FETALIQA_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A copy of the shipped demo classifier bundle (manifest + tensors)."""
    out = tmp_path / "cls"
    shutil.copytree(paths.resources_dir() / "demo" / "cls", out)
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_FILE).read_text())


def _write_manifest(bundle: Path, data: dict | str) -> None:
    (bundle / MANIFEST_FILE).write_text(data if isinstance(data, str) else json.dumps(data))


def _refused(bundle: Path, *words: str) -> str:
    with pytest.raises(FetalIQAError) as info:
        read_manifest(bundle)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def _set(data: dict, dotted: str, value) -> dict:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return data


# --------------------------------------------------------------------------------------------
# One test per failure (manifest numbers are refused before any model is built)


def test_manifest_with_deeply_nested_json_is_refused_without_recursion_error(bundle):
    _write_manifest(bundle, '{"metrics": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _refused(bundle, "nested", "export it again")


def test_manifest_larger_than_any_manifest_is_refused_before_reading(bundle):
    (bundle / MANIFEST_FILE).write_bytes(b"{" + b" " * (validate.MAX_MANIFEST_BYTES + 10) + b"}")
    _refused(bundle, "more than")


@pytest.mark.parametrize("seed", ["random:²", "random:99999999999999999999999", "random:-1", "random:1e3", "random:"])
def test_manifest_seed_that_overflows_or_is_not_ascii_digits_is_refused(bundle, seed):
    _write_manifest(bundle, _set(_manifest(bundle), "base_sha256", seed))
    _refused(bundle, "seed")


@pytest.mark.parametrize("field,value,word", [
    ("init_filters", 10_000_000, "init_filters"),
    ("init_filters", 0, "init_filters"),
    ("lora.r", 100_000_000, "LoRA r"),
    ("lora.alpha", 1e300, "alpha"),
    ("base_architecture.vision_cfg.width", 65536, "width"),
    ("base_architecture.embed_dim", 10**30, "embed_dim"),
    ("base_architecture.embed_dim", 1e30, "embed_dim"),
    ("base_architecture.vision_cfg.layers", 10_000, "layers"),
    ("base_architecture.vision_cfg.patch_size", 448, "patch_size"),
    ("base_architecture.vision_cfg.image_size", 100_000, "image_size"),
    ("base_architecture.vision_cfg.head_width", 0, "head_width"),
    # open_clip settings beyond a FetalCLIP-family ViT's went straight into open_clip: tracebacks
    ("base_architecture.vision_cfg.global_average_pool", True, "global_average_pool is not a setting"),
    ("base_architecture.vision_cfg.patch_dropout", 5, "patch_dropout is not a setting"),
    ("base_architecture.vision_cfg.output_tokens", True, "output_tokens is not a setting"),
    ("base_architecture.quick_gelu", "no", "quick_gelu 'no' is not true or false"),
])
def test_manifest_number_out_of_range_is_refused_before_building(bundle, field, value, word):
    _write_manifest(bundle, _set(_manifest(bundle), field, value))
    _refused(bundle, word)


@pytest.mark.parametrize("field,value,word", [
    ("preprocess.size", 448, "size 448"), ("preprocess.pad", "stretch", "pad 'stretch'"),
    ("preprocess.mean", [1e19, 1e19, 1e19], "mean [1e+19"), ("preprocess.std", [0.0, 0.0, 0.0], "std [0.0"),
    ("preprocess.channels", "rgb", "channels 'rgb'"), ("preprocess.size", True, "size True")])
def test_a_manifest_recording_other_preprocessing_is_refused(bundle, field, value, word):
    """Only the preprocessing version was compared: a manifest saying its model takes 448 pixels,
    stretched frames or a mean of 1e19 loaded without a word, and was served 224-pixel frames
    padded and normalised as every other bundle's."""
    from fetaliqa_core.models.bundle import checked_bundle

    checked_bundle(bundle)  # as written: loads
    _write_manifest(bundle, _set(_manifest(bundle), field, value))
    with pytest.raises(FetalIQAError, match="trained with preprocessing") as info:
        checked_bundle(bundle)
    assert word in str(info.value) and "\n" not in str(info.value)


def test_adapters_the_manifest_does_not_describe_are_not_left_out(bundle):
    """'lora: null' in the manifest of a bundle with LoRA weights loaded it without them, without
    a word: another model's scores."""
    from fetaliqa_core.models.bundle import load_bundle

    _write_manifest(bundle, _set(_manifest(bundle), "lora", None))
    with pytest.raises(FetalIQAError, match="holds adapter weights"):
        load_bundle(bundle, device="cpu")


@pytest.mark.parametrize("field", ["area_fraction", "task", "base_sha256", "init_filters", "lora.r", "lora.bias",
                                   "base_architecture.embed_dim", "base_architecture.vision_cfg.width",
                                   "preprocess.version"])
def test_a_long_manifest_value_is_cut_in_its_message(bundle, field):
    """A value of 200,000 characters was echoed whole into the one-line error (and the app's
    dialog)."""
    from fetaliqa_core.models.bundle import load_bundle

    _write_manifest(bundle, _set(_manifest(bundle), field, "A" * 200_000))
    with pytest.raises(FetalIQAError) as info:
        load_bundle(bundle, device="cpu")
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_a_manifest_giving_a_key_twice_is_refused(bundle):
    """Two "threshold" entries: Python's reader took the last, another reader may take the first."""
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"threshold":', '"threshold": 0.01, "threshold":', 1))
    _refused(bundle, "'threshold' twice")


def test_manifest_tower_too_large_for_any_fetalclip_is_refused(bundle):
    data = _manifest(bundle)
    _set(data, "base_architecture.vision_cfg.width", 8192)
    _set(data, "base_architecture.vision_cfg.layers", 96)
    _set(data, "base_architecture.vision_cfg.head_width", 64)
    _write_manifest(bundle, data)
    _refused(bundle, "parameters")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/head.safetensors", "..\\head.safetensors"])
def test_manifest_path_traversal_or_absolute_path_is_refused_with_what_to_do(bundle, name):
    data = _manifest(bundle)
    data["files"][name] = "0" * 64
    _write_manifest(bundle, data)
    _refused(bundle, "outside the bundle folder", "export the bundle again")


def _rehash(bundle: Path, name: str) -> None:
    data = _manifest(bundle)
    data["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    _write_manifest(bundle, data)


def test_safetensors_full_of_nan_is_refused(bundle):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(bundle / HEAD_FILE))
    tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(bundle / HEAD_FILE))
    _rehash(bundle, HEAD_FILE)
    with pytest.raises(FetalIQAError, match="NaN or infinite"):
        _read_tensors(bundle / HEAD_FILE)


def test_safetensors_header_claiming_2_pow_62_bytes_is_refused_before_reading(bundle):
    path = bundle / HEAD_FILE
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2**31, 2**31]
    header[name]["data_offsets"] = [0, 2**62]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    with pytest.raises(FetalIQAError) as info:
        _read_tensors(path)
    assert "beyond the file" in str(info.value) and "export it again" in str(info.value)


def test_safetensors_header_length_beyond_the_file_is_refused(bundle):
    path = bundle / HEAD_FILE
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    with pytest.raises(FetalIQAError, match="header claims"):
        _read_tensors(path)


def test_a_safetensors_header_larger_than_any_model_needs_is_refused_before_it_is_parsed(bundle, monkeypatch):
    """A 27 MB header listing 400,000 tensors held the viewer for 2.5 s in one parse call."""
    from fetaliqa_core import validate

    path = bundle / HEAD_FILE
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = {"padding": "x" * (validate.MAX_SAFETENSORS_HEADER + 10)}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    parsed = []
    monkeypatch.setattr(validate, "parse_json_bounded", lambda *a, **k: parsed.append(a) or {})
    with pytest.raises(FetalIQAError, match="far more than a model's list of tensors needs"):
        _read_tensors(path)
    assert parsed == []


def test_bundle_with_nan_tensors_is_refused_by_load_bundle(bundle):
    """End to end: the app's loader refuses it (a NaN model must never score)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(bundle / HEAD_FILE))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(bundle / HEAD_FILE))
    _rehash(bundle, HEAD_FILE)
    torch.set_num_threads(1)
    with pytest.raises(FetalIQAError, match="NaN"):
        load_bundle(bundle, base_weights=paths.resources_dir() / "demo" / "base_tiny.pt", device="cpu")


# --------------------------------------------------------------------------------------------
# Property-based


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                                       max_size=4),
                     max_leaves=12)


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


@FUZZ
@given(choice=st.integers(0, 10_000), value=_JSON)
def test_mutated_manifest_gives_a_manifest_or_one_line(tmp_path, choice, value):
    bundle = tmp_path / "b"
    if not bundle.exists():
        shutil.copytree(paths.resources_dir() / "demo" / "cls", bundle)
    data = json.loads((paths.resources_dir() / "demo" / "cls" / MANIFEST_FILE).read_text())
    keys = [p for p in _paths(data) if p[0] != "metrics"]
    target = keys[choice % len(keys)]
    node = data
    for k in target[:-1]:
        node = node[k]
    node[target[-1]] = value
    (bundle / MANIFEST_FILE).write_text(json.dumps(data))
    try:
        manifest = read_manifest(bundle)
    except FetalIQAError as exc:
        assert "\n" not in str(exc)
        return
    problem = validate.vision_config_problem(manifest.base_architecture)
    assert problem is None
    assert validate.int_in_range(manifest.init_filters, validate.INIT_FILTERS_RANGE)


@FUZZ
@given(header=_JSON, tail=st.binary(max_size=64))
def test_random_safetensors_header_gives_tensors_or_one_line(tmp_path, header, tail):
    text = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + tail)
    try:
        tensors = _read_tensors(path)
    except FetalIQAError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(tensors, dict)


@FUZZ
@given(shape=st.lists(st.integers(0, 2**40), max_size=4), start=st.integers(0, 2**63),
       stop=st.integers(0, 2**63), dtype=st.sampled_from(["F32", "BF16", "U8", "F64", "??"]))
def test_safetensors_entry_claims_are_checked_against_the_file(tmp_path, shape, start, stop, dtype):
    header = {"t": {"dtype": dtype, "shape": shape, "data_offsets": [start, stop]}}
    text = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(256))
    try:
        _read_tensors(path)
    except FetalIQAError as exc:
        assert "\n" not in str(exc)


def test_base_weights_swapped_with_their_mtime_kept_are_hashed_again(tmp_path, monkeypatch):
    """The remembered SHA-256 of the base weights is not trusted on path, size and mtime alone."""
    import time

    from fetaliqa_core.models import base

    monkeypatch.setattr(base, "_ALWAYS_HASH_BELOW", 0)  # use the remembered hash even for a small file
    weights = tmp_path / "FetalCLIP_weights.pt"
    weights.write_bytes(b"A" * 4096)
    first = base.file_sha256(weights)
    assert base.file_sha256(weights) == first  # remembered
    st = weights.stat()
    time.sleep(0.01)
    with open(weights, "r+b") as fh:  # same size, same path ...
        fh.write(b"B")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the mtime put back
    assert weights.stat().st_mtime_ns == st.st_mtime_ns and weights.stat().st_size == st.st_size
    assert base.file_sha256(weights) == hashlib.sha256(b"B" + b"A" * 4095).hexdigest()


def test_base_weights_hash_cache_with_junk_is_ignored(tmp_path, monkeypatch):
    from fetaliqa_core.models import base

    monkeypatch.setattr(base, "_ALWAYS_HASH_BELOW", 0)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"abc")
    (paths.cache_dir() / base._HASH_CACHE_FILE).write_text("[" * 100_000)
    assert base.file_sha256(weights) == hashlib.sha256(b"abc").hexdigest()


def test_a_copy_of_the_demo_bundles_keeps_the_not_for_clinical_use_notice(tmp_path):
    """The notice follows the demonstration model's content, not its folder: the same manifest
    and weights copied elsewhere are still the demo, and numbers from them say so."""
    from types import SimpleNamespace

    from fetaliqa_core.models.bundle import bundle_hash
    from fetaliqa_core.models.choice import provenance

    copy = tmp_path / "my-models" / "student"
    shutil.copytree(paths.resources_dir() / "demo" / "student", copy)
    model = SimpleNamespace(path=copy, bundle_hash=bundle_hash(copy))
    prov = provenance(SimpleNamespace(cls=model, seg=model))
    assert prov["demo"] and "not for clinical use" in prov["notice"]
    (copy / HEAD_FILE).write_bytes((copy / HEAD_FILE).read_bytes()[:-4] + b"\0\0\0\1")  # no longer the demo
    other = SimpleNamespace(path=copy, bundle_hash=bundle_hash(copy))
    assert not provenance(SimpleNamespace(cls=other, seg=other))["demo"]


def test_base_weights_far_larger_than_any_fetalclip_are_refused_before_hashing(tmp_path, monkeypatch):
    """A base file of hundreds of GB (a sparse file costs nothing to make) would be hashed for
    minutes without a word; it is refused from its size."""
    from types import SimpleNamespace

    from fetaliqa_core.models import bundle as b

    big = tmp_path / "FetalCLIP_weights.pt"
    with open(big, "wb") as fh:
        fh.truncate(10**6)
    monkeypatch.setattr(b, "MAX_BASE_WEIGHTS_BYTES", 10**5)
    monkeypatch.setattr(b, "file_sha256", lambda p: pytest.fail("hashed"))
    manifest = SimpleNamespace(base_sha256="0" * 64, is_student=False, base_fingerprint=None)
    with pytest.raises(FetalIQAError, match="far more than FetalCLIP"):
        b.base_for(manifest, {}, big, None, "bundle x")


def test_a_demo_bundle_with_its_manifest_edited_is_still_the_demo(tmp_path):
    """An independent test renamed the demo models' description (another bundle hash), and the
    same weights then gave plain ACs with a GA on skulls and hearts. A model on the
    demonstration base is the demo's kind whatever its manifest says."""
    import json

    from fetaliqa_core.models.bundle import MANIFEST_FILE, load_bundle
    from fetaliqa_core.models.choice import is_demo_bundle, provenance

    copy = tmp_path / "renamed" / "cls"
    shutil.copytree(paths.resources_dir() / "demo" / "cls", copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["description"] = "my clinic's classifier"
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    model = load_bundle(copy, base_weights=paths.resources_dir() / "demo" / "base_tiny.pt", device="cpu")
    assert is_demo_bundle(model)
    from types import SimpleNamespace

    prov = provenance(SimpleNamespace(cls=model, seg=None))
    assert prov["demo"] and prov["bundles"][0]["demo"] and "not for clinical use" in prov["notice"]


@pytest.mark.parametrize("make", ["int64", "bool", "float8_e4m3fn", "meta", "sparse"])
def test_a_base_whose_tensors_are_not_float_weights_is_refused_in_one_line(tmp_path, make):
    """Right shapes, wrong kind of tensor: int, bool and float8 bases ended in PyTorch tracebacks
    ("Only Tensors of floating point ... can require gradients", "isfinite not implemented"),
    meta and sparse ones too."""
    import torch

    from fetaliqa_core.models.base import build_vision_tower, random_base

    visual, _ = random_base("tiny", 0)
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    key = next(k for k in state if k.endswith("c_fc.weight"))
    if make == "meta":
        state[key] = torch.empty(state[key].shape, device="meta")
    elif make == "sparse":
        state[key] = state[key].to_sparse()
    else:
        state[key] = state[key].to(getattr(torch, make))
    path = tmp_path / "base.pt"
    torch.save(state, path)
    with pytest.raises(FetalIQAError, match=r"base weights file .*holds tensor .*(not as 16-|without its values|layout)"):
        build_vision_tower("tiny", path)


def test_cache_files_that_are_pipes_or_huge_neither_hang_nor_fill_memory(tmp_path, monkeypatch):
    """A FIFO at cache/cpu_precision.json hung every CPU run; one at cache/base_sha256.json every run
    with a base of 64 MB or more; a 1.5 GB file there was read whole."""
    from fetaliqa_core.models import base as base_mod
    from fetaliqa_core.models import device

    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "home"))
    cache = paths.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.mkfifo(cache / device.PROBE_FILE)
    assert device._kept_probe({"cpu": "x"}, (), False) is None  # returns at once (a read would block)
    os.mkfifo(cache / base_mod._HASH_CACHE_FILE)
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(base_mod._ALWAYS_HASH_BELOW + 1)  # sparse: large enough to consult the cache
    assert len(base_mod.file_sha256(big)) == 64


def test_a_base_config_file_is_read_within_bounds_and_its_text_tower_checked(tmp_path):
    from fetaliqa_core.models.base import load_base_config

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)  # was a RecursionError traceback
    with pytest.raises(FetalIQAError, match="base config"):
        load_base_config(str(deep))
    odd = tmp_path / "odd.json"
    config = load_base_config("tiny")
    config["text_cfg"] = {"layers": "x", "width": None}  # was a TypeError traceback from torch.empty
    odd.write_text(json.dumps(config))
    with pytest.raises(FetalIQAError, match="text_cfg"):
        load_base_config(str(odd))


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "folder"])
def test_a_bundle_file_or_manifest_that_is_no_regular_file_is_said_so_not_called_missing(bundle, target):
    """adapter.safetensors as a link to /dev/zero or a pipe was "missing", and manifest.json as a
    folder or such a link "no manifest.json": the file is there, it is not a regular file."""
    def replace(path: Path) -> None:
        path.unlink()
        if target == "fifo":
            os.mkfifo(path)
        elif target == "folder":
            path.mkdir()
        else:
            path.symlink_to(target)

    adapter = next(n for n in _manifest(bundle)["files"] if n != HEAD_FILE)
    replace(bundle / adapter)
    with pytest.raises(FetalIQAError, match=f"{adapter} is not a regular file"):
        load_bundle(bundle, base_weights=paths.resources_dir() / "demo" / "base_tiny.pt", device="cpu")
    replace(bundle / MANIFEST_FILE)
    _refused(bundle, f"{MANIFEST_FILE} is not a regular file")


def test_a_manifest_that_is_a_link_to_itself_is_said_so_not_called_missing(bundle):
    """manifest.json as a link to itself gave "it has no manifest.json", as if the folder were another."""
    (bundle / MANIFEST_FILE).unlink()
    (bundle / MANIFEST_FILE).symlink_to(MANIFEST_FILE)
    message = _refused(bundle, "leads back to itself")
    assert "has no manifest.json" not in message


@pytest.mark.parametrize("value", [["cls"], {"cls": 1}])
def test_a_manifest_task_that_is_no_text_is_named_without_python_internals(bundle, value):
    """`"task": ["cls"]` gave "manifest.json has malformed fields (unhashable type: 'list')"."""
    _write_manifest(bundle, _set(_manifest(bundle), "task", value))
    message = _refused(bundle, "task", "is not one of")
    assert "unhashable" not in message


@pytest.mark.parametrize("denied", ["folder", MANIFEST_FILE, HEAD_FILE])
def test_a_bundle_this_user_may_not_read_is_said_so_not_called_unwritable(bundle, tmp_path, monkeypatch, denied):
    """A link to a bundle inside a folder of another user's was refused with "permission denied;
    choose a folder you can write to": a bundle is only read. (The permission is simulated: the
    tests may run as root, who reads everything.)"""
    import builtins

    from fetaliqa_core.models.bundle import checked_bundle

    link = tmp_path / "link_to_private"
    link.symlink_to(bundle)
    private = str(link) if denied == "folder" else str(link / denied)
    real_stat, real_open = os.stat, builtins.open

    def stat(path, *a, follow_symlinks=True, **k):
        if follow_symlinks and os.fspath(path).startswith(private):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *a, follow_symlinks=follow_symlinks, **k)

    def open_(path, *a, **k):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == private:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat) if denied == "folder" else monkeypatch.setattr(builtins, "open", open_)
    with pytest.raises(FetalIQAError) as exc:
        load_bundle(link, device="cpu")
    text = str(exc.value)
    assert "cannot be read" in text and "permission denied" in text and "read access" in text, text
    assert "write" not in text and "damaged" not in text, text
    if denied != "folder":
        assert f"({private})" in text  # the file that cannot be read is named
    with pytest.raises(FetalIQAError) as again:  # the window reads a manifest alone first
        read_manifest(link) if denied != HEAD_FILE else checked_bundle(link)
    assert str(again.value) == text


def _edit_head_header(bundle: Path, edit) -> None:
    """Rewrite the head file's header with ``edit(header)`` (its data kept) and rehash it."""
    path = bundle / HEAD_FILE
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    _rehash(bundle, HEAD_FILE)


def _no_base(monkeypatch):
    from fetaliqa_core.models import bundle as bundle_mod

    def base_for(*a, **k):
        raise AssertionError("the base was loaded before the bundle's own files were checked")

    monkeypatch.setattr(bundle_mod, "base_for", base_for)


@pytest.mark.parametrize("damage", ["shape", "extra", "dtype", "past_end"])
def test_a_damaged_head_file_is_refused_before_the_base_is_loaded(bundle, monkeypatch, damage):
    """A damaged head.safetensors (a shape the manifest's model does not have, an extra or integer
    tensor, data past the end) was refused only after the base was built: 16-24 s and ~930 MB
    with a real base."""
    import numpy as np

    def edit(header):
        name = next(k for k in sorted(header) if k != "__metadata__")
        entry = header[name]
        if damage == "shape":  # the same bytes, another shape: self-consistent, but not this model
            entry["shape"] = [1, int(np.prod(entry["shape"]))]
        elif damage == "extra":
            header["extra.weight"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
        elif damage == "dtype":
            entry["dtype"] = "I32"
        else:
            entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] + 4096]

    _edit_head_header(bundle, edit)
    _no_base(monkeypatch)
    with pytest.raises(FetalIQAError) as exc:
        load_bundle(bundle, device="cpu")
    text = str(exc.value)
    assert HEAD_FILE in text and "\n" not in text and "export" in text.lower(), text


def test_a_huge_tensor_shape_is_said_in_plain_words_not_in_absurd_units(bundle, monkeypatch):
    """A head tensor whose shape claims 2^40 x 2^40 x 2^40 elements was reported as claiming
    "77371252455336267181195264.0 TB for its shape"."""
    def edit(header):
        name = next(k for k in sorted(header) if k != "__metadata__")
        header[name]["shape"] = [2**40, 2**40, 2**40]

    _edit_head_header(bundle, edit)
    _no_base(monkeypatch)
    with pytest.raises(FetalIQAError) as exc:
        load_bundle(bundle, device="cpu")
    text = str(exc.value)
    assert "elements, far more than the whole file holds" in text and "about 10^36" in text, text
    assert " TB" not in text
