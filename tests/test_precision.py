"""Precision choice (bf16 only where the CPU measurably gains) and bf16-vs-fp32 agreement."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models import device as dev
from fetaliqa_core.models.agreement import output_agreement, predict_all


def test_forced_precisions_and_bad_values(monkeypatch):
    assert dev.select_device("cpu", "fp32").dtype == torch.float32
    bf16 = dev.select_device("cpu", "bf16")
    assert bf16.dtype == torch.bfloat16 and "bf16" in bf16.description and "forced" in bf16.description
    with pytest.raises(FetalIQAError, match="precision"):
        dev.select_device("cpu", "fp8")
    monkeypatch.setenv(dev.PRECISION_ENV, "bf16")
    assert dev.select_device("cpu").dtype == torch.bfloat16  # the environment's default
    assert dev.select_device("cpu", "fp32").dtype == torch.float32  # an explicit choice wins
    monkeypatch.setenv(dev.PRECISION_ENV, "half")
    with pytest.raises(FetalIQAError, match=dev.PRECISION_ENV):
        dev.select_device("cpu")
    # an existing choice is converted when another precision is asked for
    assert dev.select_device(bf16, "fp32").dtype == torch.float32
    assert dev.select_device(bf16, "auto") is bf16


def test_auto_is_fp32_without_bf16_instructions_and_never_measures(monkeypatch):
    dev.cpu_precision_probe.cache_clear()
    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: ((), True))
    monkeypatch.setattr(dev, "measure_cpu_matmul", lambda *a, **k: pytest.fail("measured without bf16 flags"))
    try:
        choice = dev.select_device("cpu", "auto")
        assert choice.dtype == torch.float32 and "no bf16" in choice.description
    finally:
        dev.cpu_precision_probe.cache_clear()


@pytest.mark.parametrize("flags, fp32, bf16, expect", [
    # bf16 instructions: bf16 unless measured slower (a busy machine measures both near-equal:
    # the choice must not flip between runs, nor the answer with it)
    ((("avx512_bf16",), True), 60.0, 140.0, torch.bfloat16),
    ((("avx512_bf16",), True), 74.0, 82.0, torch.bfloat16),
    ((("avx512_bf16",), True), 60.0, 50.0, torch.float32),
    # flags unknown (not Linux): bf16 only where measured clearly faster
    (((), False), 60.0, 62.0, torch.float32),
    (((), False), 60.0, 140.0, torch.bfloat16),
])
def test_auto_follows_the_measured_probe(monkeypatch, flags, fp32, bf16, expect):
    dev.cpu_precision_probe.cache_clear()
    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: flags)
    calls = []
    monkeypatch.setattr(dev, "measure_cpu_matmul", lambda *a, **k: calls.append(1) or (fp32, bf16))
    try:
        assert dev.select_device("cpu", "auto").dtype == expect
        assert dev.select_device("cpu", "auto").dtype == expect
        assert len(calls) == 1  # cached per process
    finally:
        dev.cpu_precision_probe.cache_clear()


def test_real_probe_is_consistent_with_this_cpu():
    probe = dev.cpu_precision_probe()
    flags, known = dev.cpu_bf16_flags()
    assert probe.flags == flags
    if known and not flags:
        assert not probe.use_bf16 and probe.bf16_gflops is None
    else:
        assert probe.fp32_gflops > 0 and probe.bf16_gflops > 0
        assert probe.use_bf16 == dev.bf16_pays(flags, probe.fp32_gflops, probe.bf16_gflops)


def test_agreement_numbers():
    p = np.array([0.1, 0.6, 0.9, 0.4])
    lab = np.zeros((4, 10, 10), np.uint8)
    lab[1, :5] = 1
    other = lab.copy()
    other[2, 0, 0] = 2  # one pixel: area 1 % -> mask score 0.5, flagged
    a = output_agreement(p, lab, p + np.array([0, 0, 0, 0.2]), other)
    assert a["cls_max_abs_dp"] == pytest.approx(0.2) and a["cls_flag_agreement"] == 0.75
    assert a["seg_flag_agreement"] == 0.75 and a["flag_agreement"] == 0.75
    assert a["mask_pixel_agreement"] == pytest.approx(1 - 1 / 400)


def test_demo_models_in_bf16_agree_with_fp32():
    from fetaliqa_core.bench import quick_frames
    from fetaliqa_core.models.bundle import demo_models
    from fetaliqa_core.preprocess import preprocess_frames

    x = preprocess_frames(quick_frames(8, 3))
    ref = predict_all(*demo_models(dev.select_device("cpu", "fp32")), x)
    models = demo_models(dev.select_device("cpu", "bf16"))
    assert models[0].model.head.weight.dtype == torch.bfloat16
    got = predict_all(*models, x.to(torch.bfloat16))
    a = output_agreement(*ref, *got)
    print("bf16 vs fp32 on the demo models:", a)
    assert a["cls_max_abs_dp"] < 0.05 and a["seg_max_abs_dp"] < 0.1
    assert a["flag_agreement"] >= 7 / 8 and a["mask_pixel_agreement"] > 0.98


def test_predict_all_runs_a_joint_model_once_per_batch():
    """Two bundles sharing one base (or a joint bundle) are one model: given as both classifier
    and segmenter it must run once per batch, or every time measured with it doubles."""
    calls = []

    class Joint:
        def predict_labels(self, part):
            calls.append(len(part))
            n = len(part)
            return SimpleNamespace(p_cls=torch.full((n,), 0.7), labels=torch.zeros((n, 4, 4), dtype=torch.uint8))

    joint = Joint()
    p, lab = predict_all(joint, joint, torch.zeros(5, 3, 4, 4), batch=2)
    assert calls == [2, 2, 1] and p.shape == (5,) and lab.shape == (5, 4, 4)
    calls.clear()
    other = Joint()
    predict_all(joint, other, torch.zeros(4, 3, 4, 4), batch=2)  # two models: each runs
    assert calls == [2, 2, 2, 2]


def test_the_measured_choice_is_kept_per_machine(monkeypatch):
    """A probe disturbed by other programs must not flip the precision (and so the answer) of the
    same command on the same machine: the first measurement is kept, in the cache folder."""
    from fetaliqa_core import paths

    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: (("avx512_bf16",), True))
    rates = iter([(60.0, 140.0), (60.0, 50.0), (60.0, 50.0)])  # then bf16 measured slower
    calls = []
    monkeypatch.setattr(dev, "measure_cpu_matmul", lambda *a, **k: calls.append(1) or next(rates))
    try:
        dev.cpu_precision_probe.cache_clear()
        assert dev.select_device("cpu", "auto").dtype == torch.bfloat16
        dev.cpu_precision_probe.cache_clear()  # a new process on the same machine
        assert dev.select_device("cpu", "auto").dtype == torch.bfloat16 and len(calls) == 1
        # a damaged or foreign file is measured again (and replaced), never trusted
        kept = paths.cache_dir() / dev.PROBE_FILE
        kept.write_text('{"key": {"cpu": "x"}, "fp32_gflops": 1, "bf16_gflops": "nan"}', encoding="utf-8")
        dev.cpu_precision_probe.cache_clear()
        assert dev.select_device("cpu", "auto").dtype == torch.float32 and len(calls) == 2
        kept.write_bytes(b"\xff" * 10_000)
        dev.cpu_precision_probe.cache_clear()
        assert dev.select_device("cpu", "auto").dtype == torch.float32 and len(calls) == 3
        # nested past the JSON reader's depth, or a number too large for a float: measured again
        key = dev._machine_key(("avx512_bf16",))
        for text in ("[" * 4000, json.dumps({"key": key, "fp32_gflops": 1, "bf16_gflops": 1})[:-2] + "9" * 400 + "}"):
            kept.write_text(text, encoding="utf-8")
            rates = iter([(60.0, 140.0)])
            dev.cpu_precision_probe.cache_clear()
            assert dev.select_device("cpu", "auto").dtype == torch.bfloat16
    finally:
        dev.cpu_precision_probe.cache_clear()


def test_forced_bf16_on_a_cpu_without_bf16_instructions_is_honoured_and_said_once(monkeypatch, caplog):
    """Forcing bf16 (--precision, FETALIQA_PRECISION, the window's remembered choice) on a CPU
    without bf16 matrix instructions ran several times slower than fp32 without a word: the
    description said only "bf16: forced" and nothing came on stderr."""
    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: ((), True))
    monkeypatch.setattr(dev, "_slow_bf16_warned", False)
    choice = dev.select_device("cpu", "bf16")
    assert choice.dtype == torch.bfloat16  # the user's choice is kept
    assert "forced; this CPU has no bf16 matrix instructions" in choice.description
    assert "several times slower than fp32" in choice.description and choice.warning
    monkeypatch.setenv(dev.PRECISION_ENV, "bf16")
    assert dev.select_device("cpu").warning  # the environment's bf16 too
    said = [r.getMessage() for r in caplog.records if r.name == "fetaliqa"]  # (stderr outside pytest)
    assert len(said) == 1 and said[0].startswith("warning: bf16 forced") and dev.SLOW_BF16 in said[0]  # once

def test_forced_bf16_on_a_cpu_with_bf16_instructions_gives_no_warning(monkeypatch, caplog):
    """The warning above is for CPUs without bf16 instructions only: with them (or where the
    flags cannot be read) a forced bf16 is plain "forced"."""
    monkeypatch.setattr(dev, "_slow_bf16_warned", False)
    for flags in ((("amx_bf16", "avx512_bf16"), True), ((), False)):
        monkeypatch.setattr(dev, "cpu_bf16_flags", lambda flags=flags: flags)
        choice = dev.select_device("cpu", "bf16")
        assert choice.precision_reason == "forced" and not choice.warning
    assert not [r for r in caplog.records if r.name == "fetaliqa"]


def test_loaded_models_name_the_precision_its_reason_and_a_slow_bf16(monkeypatch):
    """summary.json held the precision only inside the models string, with no reason; the
    window's status bar showed "CPU bf16" with nothing saying it was slow there."""
    from fetaliqa_core.models.choice import ModelChoice, load_models, provenance

    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: ((), True))
    monkeypatch.setattr(dev, "_slow_bf16_warned", True)
    dev.cpu_precision_probe.cache_clear()
    try:
        auto = load_models(ModelChoice(model="demo", device="cpu", precision="auto"))
        forced = load_models(ModelChoice(model="demo", device="cpu", precision="bf16"))
    finally:
        dev.cpu_precision_probe.cache_clear()
    prov = provenance(auto)
    assert (prov["precision"], prov["precision_reason"]) == ("fp32", "no bf16 matrix instructions")
    assert "slow" not in auto.short()
    assert forced.short().endswith("CPU bf16 (slow on this CPU)")
    assert "no bf16 matrix instructions" in forced.describe()  # the status bar's tooltip
    assert provenance(forced)["precision_reason"].startswith("forced; ")


def test_record_reason_leaves_out_the_measured_rates():
    """The probe's reason carries measured rates that change from run to run; summary.json gets
    words that do not."""
    probe = dev.CpuPrecisionProbe(("avx512_bf16",), True, 60.0, 140.0, use_bf16=True)
    assert "2.3x" in probe.reason and probe.record_reason == "AVX512_BF16, bf16 measured faster than fp32"
    choice = dev.DeviceChoice(torch.device("cpu"), torch.float32, 4, probe.reason, record_reason=probe.record_reason)
    assert choice.precision_record == probe.record_reason
