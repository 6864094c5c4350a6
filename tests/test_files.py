"""The one atomic writer and the one JSON writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core.files import atomic_output_dir, atomic_path, atomic_write, json_safe, write_json


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_temporary_file_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "y.dat", suffix=".npy") as tmp:
        assert tmp.suffix == ".npy"
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "y.dat").tolist() == [0, 1, 2]


def test_json_has_null_for_nan_and_plain_numbers_for_numpy(tmp_path):
    data = {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": np.float32(0.25),
            "d": np.int64(7), "e": np.array([1.0, np.nan]), "f": (1, 2), "g": np.bool_(True),
            "h": tmp_path}
    safe = json_safe(data)
    assert safe == {"a": None, "b": [1.5, None, None], "c": 0.25, "d": 7, "e": [1.0, None], "f": [1, 2],
                    "g": True, "h": str(tmp_path)}
    path = write_json(tmp_path / "x.json", data)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["a"] is None
    assert not math.isnan(json.loads(text)["c"])


def test_output_folder_appears_only_complete(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError), atomic_output_dir(out) as tmp:
        (tmp / "frames.csv").write_text("x")
        raise ValueError("failed half way")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with atomic_output_dir(out) as tmp:
        (tmp / "frames.csv").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["frames.csv", "keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_too_large_names_the_output_folder_given_and_the_size_limit(tmp_path):
    """Under a file size limit `score` said "tmp/.out._cc_qvjp/summary.json: File too large; check
    the path and try again": a hidden temporary folder the user never named (and which is gone),
    and advice about a path that was right."""
    import errno

    from fetaliqa_core.paths import os_error_message

    out = tmp_path / "out"
    with pytest.raises(OSError) as info, atomic_output_dir(out) as tmp:
        raise OSError(errno.EFBIG, "File too large", str(tmp / "summary.json"))
    message = os_error_message(info.value)
    assert message.startswith(f"{out / 'summary.json'}: ") and "._" not in message
    assert "size limit" in message and "check the path" not in message


def test_results_go_into_a_folder_on_another_disk_and_never_through_a_dangling_link(tmp_path):
    """An --out that was a mount point or a link to another disk failed with 'Invalid cross-device
    link' after every frame was scored (the temporary folder was made beside it); a link to
    nothing said 'a part of the path is a file'."""
    import os
    import uuid

    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.files import atomic_output_dir

    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to write to")
    target = other / f"fetaliqa-test-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    try:
        (tmp_path / "usb").symlink_to(target)
        (target / "mine.txt").write_text("kept")
        with atomic_output_dir(tmp_path / "usb") as tmp:
            (tmp / "summary.json").write_text("{}")
        assert sorted(p.name for p in target.iterdir()) == ["mine.txt", "summary.json"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["usb"]  # nothing left beside it
    finally:
        import shutil

        shutil.rmtree(target, ignore_errors=True)
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FetalIQAError, match="is a link to nothing"):
        with atomic_output_dir(tmp_path / "gone"):
            pass


@pytest.mark.parametrize("exists", [True, False])
def test_results_in_a_subfolder_have_their_folder_flushed_too(tmp_path, monkeypatch, exists):
    """The challenge's mask lies in images/fetal-abdomen-segmentation/: only the results folder
    itself was flushed, so after a crash the mask could be missing while the outputs list named it."""
    from fetaliqa_core import files

    flushed = []
    monkeypatch.setattr(files, "_fsync_dir", lambda folder: flushed.append(Path(folder).name))
    out = tmp_path / "results"
    if exists:
        out.mkdir()
    with atomic_output_dir(out) as tmp:
        (tmp / "images" / "mask").mkdir(parents=True)
        (tmp / "images" / "mask" / "m.mha").write_bytes(b"x")
        (tmp / "summary.json").write_text("{}")
    assert (out / "images" / "mask" / "m.mha").read_bytes() == b"x"
    assert {"images", "mask"} <= set(flushed)
