"""Cached results are never trusted: a hostile or damaged cache file reads as "not cached"
(no MemoryError, no out-of-range value shown), and an unwritable cache folder degrades to
"not cached" with one warning."""

from __future__ import annotations

import io
import logging
import os
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetaliqa_core import paths
from fetaliqa_core.engine import ResultCache, SweepResults

FUZZ = settings(max_examples=int(os.environ.get("FETALIQA_FUZZ_EXAMPLES", "60")), deadline=3000,
                derandomize=not os.environ.get("FETALIQA_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])
META = {"n_frames": 6, "has_cls": True, "has_seg": True, "mask_size": 224, "sweep": "abc"}


def _results() -> SweepResults:
    r = SweepResults(6, has_cls=True, has_seg=True)
    r.p_cls[:] = np.linspace(0, 1, 6, dtype=np.float32)
    r.p_seg[:] = 0.5
    r.p_opt[:] = 0.25
    r.seg_area_px[:] = [0, 10, 100, 1000, 0, 5]
    r.done[:] = True
    for i in range(6):
        m = np.zeros((224, 224), np.uint8)
        m[:i * 3, :i * 3] = 1 + i % 2
        r.masks[i] = m
    return r


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _cache_with(tmp_path, **replace) -> ResultCache:
    cache = ResultCache(tmp_path / "results")
    cache.save("k", META, _results())
    members = _members(cache.path_for("k").read_bytes())
    for name, blob in replace.items():
        members[f"{name}.npy"] = blob
    cache.path_for("k").write_bytes(_archive(members))
    return cache


def test_valid_cache_round_trips(tmp_path):
    cache = ResultCache(tmp_path / "results")
    cache.save("k", META, _results())
    loaded = cache.load("k", META)
    assert loaded is not None and loaded.complete
    np.testing.assert_array_equal(loaded.p_cls, _results().p_cls)


def test_npy_in_cache_whose_header_claims_4tb_is_not_cached_without_memory_error(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)
    cache = _cache_with(tmp_path, p_cls=blob)
    assert cache.load("k", META) is None


def test_npy_meta_claiming_huge_size_is_not_cached(tmp_path):
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (4398046511104,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)
    assert _cache_with(tmp_path, meta=blob).load("k", META) is None


@pytest.mark.parametrize("name,value", [("p_cls", 7.0), ("p_seg", -0.5), ("p_opt", np.inf)])
def test_cached_probability_out_of_range_is_not_trusted(tmp_path, name, value):
    arr = getattr(_results(), name).copy()
    arr[2] = value
    assert _cache_with(tmp_path, **{name: _npy(arr)}).load("k", META) is None


def test_cached_mask_area_larger_than_the_mask_is_not_trusted(tmp_path):
    area = _results().seg_area_px.copy()
    area[1] = 224 * 224 + 1
    assert _cache_with(tmp_path, seg_area_px=_npy(area)).load("k", META) is None


def test_binary_segmenter_masks_round_trip(tmp_path):
    """A one-class segmenter's masks hold label 3 (abdomen, no plane grade): a valid cache."""
    r = _results()
    for i, m in r.masks.items():
        r.masks[i] = np.where(m > 0, 3, 0).astype(np.uint8)
    cache = ResultCache(tmp_path / "results")
    cache.save("k", META, r)
    loaded = cache.load("k", META)
    assert loaded is not None and int(loaded.masks[5].max()) == 3


def test_cached_mask_with_labels_other_than_0_to_3_is_not_trusted(tmp_path):
    r = _results()
    index = np.array(sorted(i for i, m in r.masks.items() if m.any()), np.int64)
    masks = np.stack([r.masks[int(i)] for i in index])
    masks[0, 0, 0] = 9
    assert _cache_with(tmp_path, masks=_npy(masks)).load("k", META) is None


def test_read_only_cache_folder_degrades_to_not_cached_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # unwritable even for root
    cache = ResultCache(blocker / "results")
    with caplog.at_level(logging.WARNING, logger="fetaliqa"):
        cache.save("k", META, _results())
        cache.save("k2", META, _results())
    assert cache.load("k", META) is None
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and "continuing without it" in warnings[0].getMessage()


def test_an_empty_folder_where_a_cache_entry_goes_makes_way_for_it(tmp_path, caplog):
    """An empty folder under an entry's name: the warning said the whole results cache "cannot be
    written (it is a folder)", and that sweep was scored again on every run."""
    cache = ResultCache(tmp_path / "results")
    cache.path_for("k").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="fetaliqa"):
        cache.save("k", META, _results())
    assert not caplog.records
    assert cache.path_for("k").is_file() and cache.load("k", META) is not None


def test_a_folder_with_files_where_a_cache_entry_goes_is_named_in_the_warning(tmp_path, caplog):
    """A folder holding files under an entry's name is left alone, and the warning names that
    entry and says what to do; it named the results cache folder, which was fine."""
    cache = ResultCache(tmp_path / "results")
    cache.path_for("k").mkdir(parents=True)
    (cache.path_for("k") / "keep.txt").write_text("not ours to delete")
    with caplog.at_level(logging.WARNING, logger="fetaliqa"):
        cache.save("k", META, _results())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert f"({cache.path_for('k')}) cannot be written (it is a folder)" in warnings[0]
    assert "Remove that folder" in warnings[0]
    assert (cache.path_for("k") / "keep.txt").is_file()
    cache.save("k2", META, _results())  # the other entries are written
    assert cache.load("k2", META) is not None


def test_cache_dir_that_cannot_be_created_does_not_stop_the_program(tmp_path, monkeypatch, caplog):
    (tmp_path / "home").write_text("a file, not a folder")
    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "home"))
    with caplog.at_level(logging.WARNING, logger="fetaliqa"):
        folder = paths.cache_dir()
    assert not folder.is_dir()
    assert any("folder" in r.getMessage() for r in caplog.records)



def test_a_cache_folder_that_cannot_be_written_is_warned_about_once(tmp_path, monkeypatch, caplog):
    """A read-only cache folder gave two warnings for the one cause: the cache folder, then the
    results cache inside it."""
    (tmp_path / "home").write_text("a file, not a folder")
    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "home"))
    with caplog.at_level(logging.WARNING, logger="fetaliqa"):
        ResultCache(paths.cache_dir() / "results").save("k", META, _results())
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and "the cache folder" in warnings[0], warnings


@FUZZ
@given(position=st.integers(0, 10**9), data=st.binary(min_size=1, max_size=16), mode=st.sampled_from(["flip", "cut",
                                                                                                     "insert"]))
def test_mutated_cache_file_reads_as_results_or_not_cached(tmp_path, position, data, mode):
    cache = ResultCache(tmp_path / "results")
    cache.save("k", META, _results())
    raw = bytearray(cache.path_for("k").read_bytes())
    pos = position % len(raw)
    if mode == "flip":
        raw[pos:pos + len(data)] = bytes(a ^ b for a, b in zip(raw[pos:pos + len(data)], data))
    elif mode == "cut":
        del raw[pos:]
    else:
        raw[pos:pos] = data
    cache.path_for("k").write_bytes(bytes(raw))
    loaded = cache.load("k", META)
    if loaded is not None:
        assert loaded.n_frames == 6
        for arr in (loaded.p_cls, loaded.p_seg, loaded.p_opt):
            finite = arr[np.isfinite(arr)]
            assert np.all((finite >= 0) & (finite <= 1))
        assert np.all((loaded.seg_area_px >= -1) & (loaded.seg_area_px <= 224 * 224))


@FUZZ
@given(shape=st.lists(st.integers(0, 2**45), min_size=0, max_size=3),
       descr=st.sampled_from(["<f4", "|u1", "<i8", "|b1", "<f8", "|O"]),
       member=st.sampled_from(["p_cls", "p_seg", "seg_area_px", "done", "mask_index", "masks", "meta"]))
def test_any_npy_header_in_a_cache_file_is_checked_before_allocating(tmp_path, shape, descr, member):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(256)
    loaded = _cache_with(tmp_path, **{member: blob}).load("k", META)
    assert loaded is None or loaded.n_frames == 6
