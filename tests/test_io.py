"""Sweep I/O: formats, conversion to uint8 frames, sweep layout, and bad input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io import (
    META_SWEEP_KINDS,
    META_SWEEP_RANGES,
    Sweep,
    load_mask,
    load_sweep,
    write_volume,
)

SPACING = (0.3, 0.28)  # (row_mm, col_mm): different on purpose, to catch a swapped order


def _frames(n: int = 6, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def _sitk_image(arr: np.ndarray, spacing=SPACING, is_vector: bool = False) -> sitk.Image:
    img = sitk.GetImageFromArray(arr, isVector=is_vector)
    row, col = spacing
    img.SetSpacing((col, row) + (1.0,) * (img.GetDimension() - 2))
    return img


def _write_mha_header(path: Path, dims: tuple[int, ...], payload: bytes, element_type: str = "MET_UCHAR",
                      spacing: str | None = None, extra: str = "") -> None:
    nd = len(dims)
    spacing = spacing or " ".join(["0.28"] * nd)
    header = (f"ObjectType = Image\nNDims = {nd}\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"CompressedData = False\nElementSpacing = {spacing}\nDimSize = {' '.join(map(str, dims))}\n"
              f"{extra}ElementType = {element_type}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + payload)


# --------------------------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("name,compress", [
    ("s.mha", False), ("s.mha", True), ("s.mhd", False), ("s.nrrd", True), ("s.nii", False), ("s.nii.gz", True),
])
def test_formats_round_trip(tmp_path, name, compress):
    arr = _frames()
    path = tmp_path / name
    write_volume(path, arr, spacing_mm=SPACING, compress=compress)
    sweep = load_sweep(path)
    assert sweep.frames.dtype == np.uint8 and sweep.frames.flags.c_contiguous
    np.testing.assert_array_equal(sweep.frames, arr)
    assert sweep.spacing_mm == pytest.approx(SPACING, abs=1e-6)
    assert sweep.path == path
    assert (sweep.n_frames, sweep.height, sweep.width) == arr.shape
    assert not sweep.frames.flags.writeable


def test_uncompressed_mha_is_memory_mapped(tmp_path):
    arr = _frames()
    write_volume(tmp_path / "u.mha", arr)
    write_volume(tmp_path / "c.mha", arr, compress=True)
    assert isinstance(load_sweep(tmp_path / "u.mha").frames, np.memmap)
    assert not isinstance(load_sweep(tmp_path / "c.mha").frames, np.memmap)


def test_acouslic_size_mha_opens_without_reading_pixels(tmp_path):
    """An 840 x 562 x 744 uncompressed .mha (351 MB) opens at once: the header is parsed, the size
    checked and the pixels mapped, not read. (Sparse file: no disk space used.)"""
    path = tmp_path / "big.mha"
    n, h, w = 840, 562, 744
    _write_mha_header(path, (w, h, n), b"")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size + n * h * w)
    t0 = time.perf_counter()
    sweep = load_sweep(path)
    first = np.array(sweep.frames[0])
    elapsed = time.perf_counter() - t0
    assert isinstance(sweep.frames, np.memmap)
    assert first.shape == (h, w)
    # (the map is the check; the time only catches a gross regression, such as a pass over every
    # pixel, with room for a loaded machine: 0.55 s beside other work where 0.1 s is usual)
    assert elapsed < 2.0, f"opening took {elapsed:.2f} s"
    assert sweep.sweep_ranges == [(i * 140, (i + 1) * 140) for i in range(6)]
    assert sweep.sweep_kinds == ["transverse"] * 3 + ["sagittal"] * 3
    assert "content_hash" not in sweep.__dict__  # lazy


def test_dicom_multiframe_file(tmp_path):
    arr = _frames(5)
    path = tmp_path / "cine.dcm"
    sitk.WriteImage(_sitk_image(arr), str(path))
    sweep = load_sweep(path)
    np.testing.assert_array_equal(sweep.frames, arr)
    assert sweep.spacing_mm == pytest.approx(SPACING)


def _write_dicom_series(folder: Path, arr: np.ndarray) -> None:
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.123456789"
    # Written in reverse order with shuffled names: the reader must sort by position.
    for k in reversed(range(arr.shape[0])):
        s = _sitk_image(arr[k])
        s.SetMetaData("0020|000e", series_uid)
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0020|0032", f"0\\0\\{k * 1.0}")
        s.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        s.SetMetaData("0008|0060", "US")
        writer.SetFileName(str(folder / f"img_{(k * 7) % 11:03d}_{k}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder(tmp_path):
    arr = _frames(4)
    folder = tmp_path / "series"
    _write_dicom_series(folder, arr)
    sweep = load_sweep(folder)
    np.testing.assert_array_equal(sweep.frames, arr)
    assert sweep.path == folder


def test_unit_axes_are_dropped(tmp_path):
    """NIfTI-style x, y, 1, t data is a plain stack of frames."""
    arr = _frames(3)[:, None]  # (t, 1, y, x)
    path = tmp_path / "xyzt.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(path))
    np.testing.assert_array_equal(load_sweep(path).frames, arr[:, 0])


def test_single_2d_image_is_one_frame_sweep(tmp_path):
    img = _frames(1)[0]
    path = tmp_path / "one.mha"
    sitk.WriteImage(_sitk_image(img), str(path))
    sweep = load_sweep(path)
    assert sweep.frames.shape == (1, *img.shape)
    np.testing.assert_array_equal(sweep.frames[0], img)
    assert sweep.sweep_ranges == [(0, 1)] and sweep.sweep_kinds == ["unknown"]


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_frames_become_grey(tmp_path, channels):
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 40, 48, channels), dtype=np.uint8)
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(_sitk_image(rgb, is_vector=True), str(path))
    sweep = load_sweep(path)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert sweep.frames.shape == (3, 40, 48)
    assert np.abs(sweep.frames.astype(float) - expected).max() <= 1.5


def test_16bit_is_windowed_with_robust_percentiles(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.integers(1000, 3000, size=(4, 40, 48)).astype(np.uint16)
    arr[0, 0, 0] = 65535  # one hot pixel must not squash the rest into a few grey levels
    path = tmp_path / "w.mha"
    sitk.WriteImage(_sitk_image(arr), str(path))
    frames = load_sweep(path).frames
    assert frames.dtype == np.uint8
    assert frames[0, 0, 0] == 255
    body = frames.reshape(-1)[1:]
    assert body.min() <= 3 and body.max() >= 252
    assert len(np.unique(body)) > 200
    # monotonic: brighter input never gives a darker output
    order = np.argsort(arr.reshape(-1)[1:], kind="stable")
    assert np.all(np.diff(body[order].astype(int)) >= 0)


@pytest.mark.parametrize("dtype,scale", [(np.uint16, 1.0), (np.int16, 1.0), (np.float32, 1.0),
                                         (np.float64, 1.0 / 255.0), (np.float32, 1.0 / 255.0)],
                         ids=["u16", "i16", "f32-grey", "f64-unit", "f32-unit"])
def test_grey_levels_stored_in_a_wider_type_are_kept(tmp_path, dtype, scale):
    """8-bit frames another tool stored as 16-bit integers or floats (0-255), or normalised to
    0-1, read back as the same grey levels: the model sees what the scanner wrote, not a
    contrast stretch (windowing them changed the demo model's answer on such a file)."""
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 231, size=(3, 40, 48)).astype(np.uint8)  # never reaches 255
    path = tmp_path / "g.nrrd"
    sitk.WriteImage(_sitk_image((grey.astype(np.float64) * scale).astype(dtype)), str(path))
    assert np.array_equal(load_sweep(path).frames, grey)


def test_float_with_nan_is_windowed_nan_safe(tmp_path):
    arr = np.random.default_rng(3).normal(0, 1, size=(3, 40, 48)).astype(np.float32)
    arr[1, :10] = np.nan
    path = tmp_path / "f.nrrd"
    sitk.WriteImage(_sitk_image(arr), str(path))
    frames = load_sweep(path).frames
    assert frames.dtype == np.uint8
    assert (frames[1, :10] == 0).all()
    assert frames[0].std() > 20  # the finite values use the grey range


# --------------------------------------------------------------------------------------------
# Sweep layout and hash


def test_default_layout_840_frames_is_six_sweeps(tmp_path):
    write_volume(tmp_path / "a.mha", np.zeros((840, 32, 32), np.uint8))
    s = load_sweep(tmp_path / "a.mha")
    assert s.sweep_ranges == [(i * 140, (i + 1) * 140) for i in range(6)]
    assert s.sweep_kinds == ["transverse"] * 3 + ["sagittal"] * 3
    assert s.sweep_index(0) == 0 and s.sweep_index(139) == 0 and s.sweep_index(140) == 1
    assert s.sweep_index(839) == 5
    with pytest.raises(IndexError):
        s.sweep_index(840)


def test_other_frame_counts_are_one_unknown_sweep(tmp_path):
    write_volume(tmp_path / "a.mha", _frames(7))
    s = load_sweep(tmp_path / "a.mha")
    assert s.sweep_ranges == [(0, 7)] and s.sweep_kinds == ["unknown"]


@pytest.mark.parametrize("name,compress", [("m.mha", False), ("m.mha", True), ("m.nrrd", False)])
def test_sweep_ranges_metadata_round_trip(tmp_path, name, compress):
    ranges = [(0, 2), (2, 5), (5, 6)]
    kinds = ["transverse", "transverse", "sagittal"]
    write_volume(tmp_path / name, _frames(6), compress=compress, sweep_ranges=ranges, sweep_kinds=kinds)
    header = (tmp_path / name).read_bytes()[:2000]
    assert META_SWEEP_RANGES.encode() in header and META_SWEEP_KINDS.encode() in header
    s = load_sweep(tmp_path / name)
    assert s.sweep_ranges == ranges and s.sweep_kinds == kinds
    assert s.n_sweeps == 3 and s.sweep_index(4) == 1


def test_invalid_sweep_metadata_falls_back_to_default(tmp_path):
    path = tmp_path / "m.mha"
    _write_mha_header(path, (32, 32, 4), bytes(32 * 32 * 4), extra=f"{META_SWEEP_RANGES} = 0-2,3-4\n")
    s = load_sweep(path)
    assert s.sweep_ranges == [(0, 4)]


def test_content_hash_depends_on_pixels_and_spacing_not_format(tmp_path):
    arr = _frames()
    write_volume(tmp_path / "a.mha", arr, spacing_mm=SPACING)
    write_volume(tmp_path / "b.nrrd", arr, spacing_mm=SPACING, compress=True)
    changed = arr.copy()
    changed[3, 10, 10] ^= 1
    write_volume(tmp_path / "c.mha", changed, spacing_mm=SPACING)
    write_volume(tmp_path / "d.mha", arr, spacing_mm=(0.28, 0.28))
    a, b, c, d = (load_sweep(tmp_path / n) for n in ("a.mha", "b.nrrd", "c.mha", "d.mha"))
    assert "content_hash" not in a.__dict__
    assert a.content_hash == b.content_hash
    assert len({a.content_hash, c.content_hash, d.content_hash}) == 3
    assert len(a.content_hash) == 32 and int(a.content_hash, 16) >= 0


def test_sweep_rejects_ranges_that_do_not_cover_frames():
    with pytest.raises(ValueError):
        Sweep(frames=np.zeros((4, 32, 32), np.uint8), spacing_mm=(1.0, 1.0), sweep_ranges=[(0, 3)],
              sweep_kinds=["unknown"], path=None)


# --------------------------------------------------------------------------------------------
# Masks, FOV, writing


def test_load_mask_labels_and_shape(tmp_path):
    sweep_arr = _frames(4)
    write_volume(tmp_path / "s.mha", sweep_arr)
    sweep = load_sweep(tmp_path / "s.mha")
    mask = np.zeros((4, 40, 48), np.uint8)
    mask[1, 5:10, 5:10] = 1
    mask[2, 5:10, 5:10] = 2
    write_volume(tmp_path / "m.mha", mask, compress=True)
    got = load_mask(tmp_path / "m.mha", like=sweep)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, mask)


def test_load_mask_accepts_integer_and_float_label_types(tmp_path):
    mask = np.zeros((2, 40, 48), np.int16)
    mask[0, :4] = 2
    sitk.WriteImage(_sitk_image(mask), str(tmp_path / "i.nrrd"))
    sitk.WriteImage(_sitk_image(mask.astype(np.float32)), str(tmp_path / "f.nrrd"))
    for name in ("i.nrrd", "f.nrrd"):
        got = load_mask(tmp_path / name)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, mask)


def test_fov_mask():
    from fetaliqa_core import acouslic

    fov = acouslic.fov_mask()
    assert fov.shape == (562, 744) and fov.dtype == bool
    assert 0.6 < fov.mean() < 0.68
    assert not fov[0, 0] and fov[300, 372]


def test_write_volume_leaves_no_temporary_files(tmp_path):
    write_volume(tmp_path / "x.mha", _frames(2))
    write_volume(tmp_path / "x.mha", _frames(3))  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mha"]
    assert load_sweep(tmp_path / "x.mha").n_frames == 3


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shape", [(3, 40, 50), (40, 50)])
def test_write_volume_without_simpleitk_writes_what_simpleitk_reads(tmp_path, monkeypatch, compress, shape):
    """Where SimpleITK is missing (the GPU machines' image), .mha is written by FetalIQA's own code:
    SimpleITK and io read back the same pixels, spacing and sweep layout as from its own file."""
    import sys

    frames = (np.arange(int(np.prod(shape))) % 251).astype(np.uint8).reshape(shape)
    layout = dict(sweep_ranges=[(0, 1), (1, 3)], sweep_kinds=["transverse", "sagittal"]) if len(shape) == 3 else {}
    write_volume(tmp_path / "ref.mha", frames, (0.28, 0.3), compress=compress, **layout, metadata={"Note": "a\nb"})
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    write_volume(tmp_path / "own.mha", frames, (0.28, 0.3), compress=compress, **layout, metadata={"Note": "a\nb"})
    with pytest.raises(FetalIQAError, match="needs SimpleITK"):
        write_volume(tmp_path / "own.nrrd", frames)
    monkeypatch.undo()
    ref, own = sitk.ReadImage(str(tmp_path / "ref.mha")), sitk.ReadImage(str(tmp_path / "own.mha"))
    assert np.array_equal(sitk.GetArrayFromImage(own), frames)
    assert own.GetSpacing() == ref.GetSpacing() and own.GetSize() == ref.GetSize()
    assert {k: own.GetMetaData(k) for k in ref.GetMetaDataKeys()} == {k: ref.GetMetaData(k)
                                                                       for k in ref.GetMetaDataKeys()}
    assert (tmp_path / "own.mha").stat().st_size < frames.size if compress else True
    if len(shape) == 3:
        sweep = load_sweep(tmp_path / "own.mha")
        assert np.array_equal(np.asarray(sweep.frames), frames) and sweep.spacing_mm == (0.28, 0.3)
        assert sweep.sweep_ranges == [(0, 1), (1, 3)] and sweep.sweep_kinds == ["transverse", "sagittal"]


def test_write_volume_to_unwritable_place_is_a_user_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(FetalIQAError) as exc:
        write_volume(blocker / "sub" / "x.mha", _frames(2))
    assert "file.txt" in str(exc.value)


# --------------------------------------------------------------------------------------------
# Bad input: every case raises FetalIQAError naming the file, in well under the timeout.


def _bad_missing(tmp_path):
    return tmp_path / "nope.mha"


def _bad_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _bad_folder_without_dicom(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    return tmp_path / "notes"


def _bad_zero_bytes(tmp_path):
    (tmp_path / "zero.mha").write_bytes(b"")
    return tmp_path / "zero.mha"


def _bad_truncated_mha(tmp_path):
    write_volume(tmp_path / "t.mha", _frames())
    data = (tmp_path / "t.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(data[: len(data) - 5000])
    return tmp_path / "t.mha"


def _bad_truncated_compressed_mha(tmp_path):
    write_volume(tmp_path / "tc.mha", _frames(), compress=True)
    data = (tmp_path / "tc.mha").read_bytes()
    (tmp_path / "tc.mha").write_bytes(data[: len(data) // 2])
    return tmp_path / "tc.mha"


def _bad_truncated_nii_gz(tmp_path):
    write_volume(tmp_path / "t.nii.gz", _frames(), compress=True)
    data = (tmp_path / "t.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[: len(data) * 2 // 3])
    return tmp_path / "t.nii.gz"


def _bad_truncated_nii(tmp_path):
    write_volume(tmp_path / "t.nii", _frames())
    data = (tmp_path / "t.nii").read_bytes()
    (tmp_path / "t.nii").write_bytes(data[:-3000])
    return tmp_path / "t.nii"


def _bad_truncated_nrrd(tmp_path):
    write_volume(tmp_path / "t.nrrd", _frames())
    data = (tmp_path / "t.nrrd").read_bytes()
    (tmp_path / "t.nrrd").write_bytes(data[:-3000])
    return tmp_path / "t.nrrd"


def _bad_header_size_lies(tmp_path):
    # DimSize announces 4 frames, the file holds 6.
    _write_mha_header(tmp_path / "lie.mha", (48, 40, 4), _frames(6).tobytes())
    return tmp_path / "lie.mha"


def _bad_compressed_header_absurd(tmp_path):
    write_volume(tmp_path / "c.mha", _frames(), compress=True)
    data = (tmp_path / "c.mha").read_bytes().replace(b"DimSize = 48 40 6", b"DimSize = 48 40 19000")
    (tmp_path / "c.mha").write_bytes(data)
    return tmp_path / "c.mha"


def _bad_text_named_mha(tmp_path):
    (tmp_path / "notes.mha").write_text("Patient notes\nnothing to see here\n")
    return tmp_path / "notes.mha"


def _bad_binary_named_mha(tmp_path):
    (tmp_path / "junk.mha").write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    return tmp_path / "junk.mha"


def _bad_text_named_nrrd(tmp_path):
    (tmp_path / "x.nrrd").write_text("hello")
    return tmp_path / "x.nrrd"


def _bad_text_named_dcm(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"\0" * 200 + b"not dicom")
    return tmp_path / "x.dcm"


def _bad_4d(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 40, 48), np.uint8), isVector=False),
                    str(tmp_path / "4d.mha"))
    return tmp_path / "4d.mha"


def _bad_vector2(tmp_path):
    sitk.WriteImage(_sitk_image(np.zeros((3, 40, 48, 2), np.uint8), is_vector=True), str(tmp_path / "v.nrrd"))
    return tmp_path / "v.nrrd"


def _bad_many_channels(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 40, 48), np.uint8), isVector=True),
                    str(tmp_path / "ch.mha"))  # 48 channels per pixel
    return tmp_path / "ch.mha"


def _bad_zero_frames(tmp_path):
    _write_mha_header(tmp_path / "z.mha", (48, 40, 0), b"")
    return tmp_path / "z.mha"


def _bad_small_frames(tmp_path):
    write_volume(tmp_path / "s.mha", np.zeros((5, 20, 20), np.uint8))
    return tmp_path / "s.mha"


def _mhd_pointing_at(tmp_path, data_file: str, extra: str = "") -> Path:
    (tmp_path / "h.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 48 40 2\n"
                                    f"ElementType = MET_UCHAR\n{extra}ElementDataFile = {data_file}\n")
    return tmp_path / "h.mhd"


def _bad_mhd_data_outside(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.raw").write_bytes(bytes(48 * 40 * 2))
    return _mhd_pointing_at(tmp_path, str(tmp_path / "elsewhere" / "d.raw"))


def _bad_mhd_data_parent(tmp_path):
    (tmp_path / "d.raw").write_bytes(bytes(48 * 40 * 2))
    (tmp_path / "sub").mkdir()
    path = _mhd_pointing_at(tmp_path, "../d.raw")
    return path.rename(tmp_path / "sub" / "h.mhd")


def _bad_mhd_system_file_tail(tmp_path):
    """A header reading the last bytes of a system file as its pixels (HeaderSize = -1)."""
    return _mhd_pointing_at(tmp_path, "/etc/passwd", extra="HeaderSize = -1\n")


def _bad_mhd_list_of_pipes(tmp_path):
    """A data-file list naming a pipe: a reader that opens it waits forever."""
    os.mkfifo(tmp_path / "slice0.raw")
    (tmp_path / "h.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 48 40 1\n"
                                    "ElementType = MET_UCHAR\nElementDataFile = LIST 2D\nslice0.raw\n")
    return tmp_path / "h.mhd"


def _bad_mhd_pattern(tmp_path):
    os.mkfifo(tmp_path / "s001.raw")
    return _mhd_pointing_at(tmp_path, "s%03d.raw 1 2 1")


def _nifti_patched(tmp_path, offset: int, fmt: str, value: int) -> Path:
    """A valid NIfTI-1 file with one header field overwritten."""
    import struct

    path = tmp_path / "n.nii"
    write_volume(path, _frames(2))
    data = bytearray(path.read_bytes())
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))
    return path


def _compressed_mha(tmp_path, payload: bytes, name: str = "c.mha") -> Path:
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              "CompressedData = True\nElementSpacing = 0.28 0.28 1\nDimSize = 48 40 2\n"
              "ElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    (tmp_path / name).write_bytes(header.encode() + payload)
    return tmp_path / name


def _bad_compressed_garbage(tmp_path):
    return _compressed_mha(tmp_path, np.random.default_rng(0).integers(0, 256, 600, np.uint8).tobytes())


def _bad_compressed_cut(tmp_path):
    import zlib

    data = zlib.compress(np.random.default_rng(1).integers(0, 256, 48 * 40 * 2, np.uint8).tobytes())
    return _compressed_mha(tmp_path, data[: len(data) // 2])


def _bad_compressed_short(tmp_path):
    import zlib

    return _compressed_mha(tmp_path, zlib.compress(bytes(48 * 40)))  # one frame of the two


def _bad_mhd_missing_raw(tmp_path):
    (tmp_path / "h.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 48 40 2\n"
                                    "ElementType = MET_UCHAR\nElementDataFile = h.raw\n")
    return tmp_path / "h.mhd"


def _bad_all_nan(tmp_path):
    sitk.WriteImage(_sitk_image(np.full((2, 40, 48), np.nan, np.float32)), str(tmp_path / "nan.nrrd"))
    return tmp_path / "nan.nrrd"


BAD_SWEEPS = [
    ("missing path", _bad_missing, "no such file"),
    ("empty folder", _bad_empty_folder, "folder is empty"),
    ("folder without DICOM", _bad_folder_without_dicom, "no DICOM series"),
    ("zero-byte file", _bad_zero_bytes, "empty (0 bytes)"),
    ("truncated pixel data", _bad_truncated_mha, "truncated"),
    ("truncated compressed mha", _bad_truncated_compressed_mha, "truncated"),
    ("truncated nii.gz", _bad_truncated_nii_gz, "truncated"),
    ("truncated nii", _bad_truncated_nii, "truncated"),
    ("truncated nrrd", _bad_truncated_nrrd, "truncated"),
    ("header size lies", _bad_header_size_lies, "header's size is wrong"),
    ("compressed header absurd", _bad_compressed_header_absurd, "header is wrong"),
    ("text named .mha", _bad_text_named_mha, "not a MetaImage file"),
    ("binary junk named .mha", _bad_binary_named_mha, "not a MetaImage file"),
    ("text named .nrrd", _bad_text_named_nrrd, "not a readable image"),
    ("junk named .dcm", _bad_text_named_dcm, "not a readable image"),
    ("4-D data", _bad_4d, "4-D data"),
    ("2-component vectors", _bad_vector2, "vector data"),
    ("48 channels", _bad_many_channels, "vector data"),
    ("zero frames", _bad_zero_frames, "no frames"),
    ("frames under 32 px", _bad_small_frames, "at least 32 x 32"),
    (".mhd without its data file", _bad_mhd_missing_raw, "is missing"),
    (".mhd data file in another folder", _bad_mhd_data_outside, "outside its own folder"),
    (".mhd data file in the parent folder", _bad_mhd_data_parent, "outside its own folder"),
    (".mhd reading a system file's tail", _bad_mhd_system_file_tail, "outside its own folder"),
    (".mhd data-file list naming a pipe", _bad_mhd_list_of_pipes, "several files"),
    (".mhd data-file pattern", _bad_mhd_pattern, "several files"),
    ("NIfTI with -1 dimensions", lambda t: _nifti_patched(t, 40, "<h", -1), "dimensions"),
    ("NIfTI with an unknown datatype", lambda t: _nifti_patched(t, 70, "<h", 1234), "datatype code 1234"),
    # a defined datatype the reader does not take, and a negative size: "damaged", ITK's
    # "UNKNOWNCOMPONENTTYPE", and "frames of 1 x 80 pixels are a strip" before
    ("NIfTI of 1-bit pixels", lambda t: _nifti_patched(t, 70, "<h", 1), "1 bit per pixel (binary), which is not read"),
    ("NIfTI of 128-bit floats", lambda t: _nifti_patched(t, 70, "<h", 1536), "128-bit floating-point pixels"),
    ("NIfTI with a negative size", lambda t: _nifti_patched(t, 44, "<h", -64), "is negative. The file is damaged"),
    ("compressed data that is garbage", _bad_compressed_garbage, "cannot be inflated"),
    ("compressed data cut short", _bad_compressed_cut, "compressed pixel data"),
    ("compressed data one frame short", _bad_compressed_short, "ends after 1920"),
    ("all NaN", _bad_all_nan, "NaN"),
]


def _assert_user_error(exc: FetalIQAError, path: Path, expected: str) -> None:
    msg = str(exc)
    assert path.name in msg, msg
    assert expected.lower() in msg.lower(), msg
    assert ".cxx" not in msg and "sitk::ERROR" not in msg and "Traceback" not in msg, msg
    assert "\n" not in msg, msg
    # says what to do
    assert any(w in msg for w in ("Choose", "choose", "Copy", "Export", "export", "Check", "Fix", "Keep")), msg


@pytest.mark.timeout(60)
@pytest.mark.parametrize("label,make,expected", BAD_SWEEPS, ids=[b[0] for b in BAD_SWEEPS])
def test_bad_sweep_input(tmp_path, label, make, expected):
    path = make(tmp_path)
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(path)
    _assert_user_error(exc.value, path, expected)


@pytest.mark.parametrize("spacing", ["0 0.28 1", "-0.28 -0.28 1", "nan 0.28 1"])
def test_a_spacing_that_is_no_length_leaves_the_sweep_readable_without_lengths(tmp_path, spacing):
    """A header whose pixel spacing is zero, negative or not a number: the frames are read, no
    length may be shown (the problem says what the file records), and a spacing the user gives
    replaces it."""
    _write_mha_header(tmp_path / "sp.mha", (48, 40, 2), bytes(range(48)) * 80, spacing=spacing)
    sweep = load_sweep(tmp_path / "sp.mha")
    assert sweep.frames.shape == (2, 40, 48)
    assert sweep.spacing_problem and "no length" in sweep.spacing_problem
    fixed = sweep.with_spacing(0.3)
    assert fixed.spacing_problem is None and fixed.spacing_mm == (0.3, 0.3)


def test_compressed_metaimage_is_inflated_exactly(tmp_path):
    """A compressed .mha (zlib, as MetaIO writes it) is read bit for bit, and a second read in the
    same process is not fed the first one's pixels."""
    import zlib

    arr = np.random.default_rng(2).integers(0, 256, (2, 40, 48), np.uint8)
    good = _compressed_mha(tmp_path, zlib.compress(arr.tobytes()), "good.mha")
    np.testing.assert_array_equal(load_sweep(good).frames, arr)
    with pytest.raises(FetalIQAError):
        load_sweep(_bad_compressed_garbage(tmp_path))


def _mask_case(tmp_path, mask: np.ndarray, name: str = "m.mha", is_vector: bool = False):
    write_volume(tmp_path / "s.mha", _frames(4))
    sweep = load_sweep(tmp_path / "s.mha")
    if is_vector or mask.dtype != np.uint8:
        sitk.WriteImage(_sitk_image(mask, is_vector=is_vector), str(tmp_path / name))
    else:
        write_volume(tmp_path / name, mask)
    return tmp_path / name, sweep


BAD_MASKS = [
    ("wrong frame count", lambda: np.zeros((3, 40, 48), np.uint8), "Choose the mask made for this sweep"),
    ("wrong frame size", lambda: np.zeros((4, 40, 40), np.uint8), "Choose the mask made for this sweep"),
    ("label 3 and 255", lambda: np.pad(np.full((1, 2, 2), 3, np.uint8), ((0, 3), (0, 38), (0, 46)),
                                       constant_values=255), "labels other than 0, 1, 2"),
    ("negative int labels", lambda: np.full((4, 40, 48), -1, np.int16), "labels other than 0, 1, 2"),
    ("probability map", lambda: np.full((4, 40, 48), 0.5, np.float32), "a probability map, not labels"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("label,make,expected", BAD_MASKS, ids=[b[0] for b in BAD_MASKS])
def test_bad_mask_input(tmp_path, label, make, expected):
    path, sweep = _mask_case(tmp_path, make())
    with pytest.raises(FetalIQAError) as exc:
        load_mask(path, like=sweep)
    _assert_user_error(exc.value, path, expected)


def test_colour_mask_is_rejected(tmp_path):
    path, sweep = _mask_case(tmp_path, np.zeros((4, 40, 48, 3), np.uint8), name="c.nrrd", is_vector=True)
    with pytest.raises(FetalIQAError) as exc:
        load_mask(path, like=sweep)
    _assert_user_error(exc.value, path, "values per pixel")


def test_missing_mask_file(tmp_path):
    with pytest.raises(FetalIQAError) as exc:
        load_mask(tmp_path / "gone.mha")
    _assert_user_error(exc.value, tmp_path / "gone.mha", "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    write_volume(tmp_path / "p.mha", _frames(2))
    (tmp_path / "p.mha").chmod(0)
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(tmp_path / "p.mha")
    _assert_user_error(exc.value, tmp_path / "p.mha", "permission")


@pytest.mark.parametrize("offset,value,said", [(40, -1, "dimensions"), (70, 1234, "datatype code 1234"),
                                               (42, 0, "has a size of 0")], ids=["dimensions", "datatype", "width 0"])
def test_a_damaged_nifti_header_is_one_line_and_nothing_on_stderr(tmp_path, capfd, offset, value, said):
    """The NIfTI library prints its own '** ERROR' on stderr for such a header ("bad dim[1]" for a
    width of 0, before the line calling the file no NIfTI); it is refused before the library reads it."""
    path = _nifti_patched(tmp_path, offset, "<h", value)
    with pytest.raises(FetalIQAError, match=said):
        load_sweep(path)
    assert capfd.readouterr().err == ""


def test_a_read_can_be_stopped_between_chunks(tmp_path):
    """Opening another file, or closing the window, left the earlier read running to its end
    (5.3 GB resident after three quick opens). A read in a :func:`cancellable` block stops between
    chunks of inflating and converting."""
    import threading

    import SimpleITK as sitk

    from fetaliqa_core.io import load_sweep
    from fetaliqa_core.io._common import ReadCancelled, cancellable

    frames = (np.random.default_rng(0).random((40, 64, 80)) * 4000).astype(np.uint16)
    for name, compress in (("packed.mha", True), ("plain.mha", False)):
        path = tmp_path / name
        sitk.WriteImage(sitk.GetImageFromArray(frames), str(path), compress)
        asked = []
        with pytest.raises(ReadCancelled), cancellable(lambda: asked.append(1) or len(asked) > 1):
            load_sweep(path)
        assert len(asked) == 2
        with cancellable(threading.Event().is_set):
            assert load_sweep(path).frames.shape == (40, 64, 80)  # never stopped: read in full


def test_the_viewers_loader_stopped_says_nothing(qtbot, tmp_path):
    import SimpleITK as sitk

    from app.worker import SweepLoader

    path = tmp_path / "s.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 64, 80), np.uint16) + 300), str(path), True)
    loader = SweepLoader(str(path))
    said = []
    loader.loaded.connect(lambda *a: said.append("loaded"))
    loader.failed.connect(lambda *a: said.append("failed"))
    loader.stop()
    loader.run()  # in this thread: stopped before the first chunk
    assert said == []


def test_empty_header_values_are_left_out(tmp_path, capfd):
    from fetaliqa_core.io import read_mask_volume, write_volume

    path = tmp_path / "m.mha"
    write_volume(path, np.zeros((2, 40, 50), np.uint8), metadata={"FetalIQA_ACNote": "", "FetalIQA_ACStatus": "ok"})
    assert "WARNING" not in capfd.readouterr().err
    assert read_mask_volume(path).metadata == {"FetalIQA_ACStatus": "ok"}


def test_without_simpleitk_other_formats_are_refused_in_one_line_and_metaimage_reads(tmp_path, monkeypatch):
    """On a machine without SimpleITK every file but a MetaImage ended in an ImportError traceback."""
    import sys

    import SimpleITK as sitk

    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.io import load_sweep, write_volume

    frames = np.zeros((2, 40, 50), np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(tmp_path / "s.nrrd"))
    write_volume(tmp_path / "s.mha", frames)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    with pytest.raises(FetalIQAError, match="needs SimpleITK, which is not installed here"):
        load_sweep(tmp_path / "s.nrrd")
    assert load_sweep(tmp_path / "s.mha").n_frames == 2


def test_a_note_with_other_than_ascii_reads_back_as_written(tmp_path):
    """Header values are written as UTF-8 and were read back as Latin-1: an AC note stored in a mask
    came back from `fetaliqa ac` with "–" as "â\x80\x93" and "µm" as "Âµm"."""
    from fetaliqa_core.io import read_mask_volume, write_volume

    note = "AC 231.2 mm (doubtful) – pixel 280 µm, café"
    for compress in (False, True):
        path = tmp_path / f"m{int(compress)}.mha"
        write_volume(path, np.zeros((2, 40, 50), np.uint8), compress=compress, metadata={"FetalIQA_ACNote": note})
        assert read_mask_volume(path).metadata["FetalIQA_ACNote"] == note


def test_a_sweep_in_memory_no_longer_depends_on_its_file(tmp_path, monkeypatch):
    """An uncompressed sweep's frames are mapped from its file; truncating the file while it was
    scored killed the process (SIGBUS). Scoring and the viewer use it in memory."""
    from fetaliqa_core.io import write_volume

    frames = np.arange(3 * 40 * 48, dtype=np.uint8).reshape(3, 40, 48)
    write_volume(tmp_path / "u.mha", frames, compress=False)
    mapped = load_sweep(tmp_path / "u.mha")
    assert isinstance(mapped.frames, np.memmap)
    held = mapped.in_memory()
    del mapped
    (tmp_path / "u.mha").write_bytes(b"")  # truncated under it
    assert not isinstance(held.frames, np.memmap) and not held.frames.flags.writeable
    assert np.array_equal(held.frames, frames)
    assert held.in_memory() is held
    # a file mapped without reading it may be larger than the memory a copy needs: said, not tried
    from fetaliqa_core import validate

    write_volume(tmp_path / "v.mha", frames, compress=False)
    monkeypatch.setattr(validate, "machine_memory_bytes", lambda: 1000)
    with pytest.raises(FetalIQAError, match="needs .* of memory"):
        load_sweep(tmp_path / "v.mha").in_memory()
    monkeypatch.undo()
    # truncated between opening and reading into memory (a new export copied over it): the copy
    # from the mapping itself died of SIGBUS; it is read with ordinary reads, and the short read said
    opened = load_sweep(tmp_path / "v.mha")
    os.truncate(tmp_path / "v.mha", (tmp_path / "v.mha").stat().st_size - 100)
    with pytest.raises(FetalIQAError, match="became shorter while it was read"):
        opened.in_memory()


def test_a_label_mask_opened_as_a_sweep_is_noted(tmp_path):
    """`score MASK` ran without a word on an annotation (values 0-2), answering 'no frame'."""
    masks = np.zeros((20, 40, 48), np.uint8)
    masks[13, 10:20, 10:30] = 1  # one annotated frame, between the frames a quick look samples
    path = tmp_path / "mask.mha"
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(path))
    assert any("looks like a label mask" in n for n in load_sweep(path).read_notes)
    masks[13, 10:20, 10:30] = 200
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(path))
    assert not any("label mask" in n for n in load_sweep(path).read_notes)


def _file_pages_resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="counts the file's pages in /proc")
def test_a_blank_sweep_larger_than_the_mask_check_is_read_only_in_part(tmp_path, monkeypatch):
    """A blank uncompressed sweep (all zeros: preallocated, a copy never finished) passed the first
    frames' label-mask test, and then every byte of it was read to be sure (``frames.max()`` over
    the memory map): a 335 GB one took the window's loader minutes and all the memory, could not be
    stopped, kept the process alive after its window closed, and `score` ignored SIGTERM. Now at
    most ``MASK_CHECK_BYTES`` of it are read, and the read can be stopped. (Sparse file.)"""
    import threading

    from fetaliqa_core.io import sweep as sweep_module
    from fetaliqa_core.io._common import ReadCancelled, cancellable

    monkeypatch.setattr(sweep_module, "MASK_CHECK_BYTES", 8 << 20)
    n, h, w = 8192, 256, 256  # 512 MB
    path = tmp_path / "blank.mha"
    _write_mha_header(path, (w, h, n), b"")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size + n * h * w)
    before = _file_pages_resident_bytes()
    sweep = load_sweep(path)
    touched = _file_pages_resident_bytes() - before
    assert isinstance(sweep.frames, np.memmap) and sweep.n_frames == n
    assert not any("label mask" in note for note in sweep.read_notes)
    assert touched < 64 << 20, f"{touched >> 20} MB of the 512 MB file read on opening it"
    del sweep
    # the part that is read is read a few frames at a time, and stops when asked
    monkeypatch.setattr(sweep_module, "MASK_CHECK_BYTES", 32 << 20)
    asked = []
    with pytest.raises(ReadCancelled), cancellable(lambda: asked.append(1) or len(asked) > 1):
        sweep_module._looks_like_label_mask(np.zeros((64, 1024, 1024), np.uint8))
    with cancellable(threading.Event().is_set):
        assert not sweep_module._looks_like_label_mask(np.zeros((64, 1024, 1024), np.uint8))


def test_the_frame_axis_check_on_the_largest_frames_takes_little_memory():
    """The check for a stack read along the wrong axis turned whole 4096 x 4096 frames into floats:
    1.1 GB and seconds before a sweep far too large for memory was refused (and as much for any
    sweep of such frames). It now samples large frames more sparsely."""
    import tracemalloc

    from fetaliqa_core.io.sweep import frames_axis_evidence

    frames = np.zeros((8, 4096, 4096), np.uint8)
    frames[:, ::2] = 60  # (grey enough to be counted)
    tracemalloc.start()
    try:
        frames_axis_evidence(frames)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150 << 20, f"{peak >> 20} MB"


def test_a_label_mask_is_told_from_a_part_of_a_sweep_larger_than_the_mask_check(tmp_path, monkeypatch):
    """Reading only part of a large file must still tell a mask annotated on a run of frames, and a
    sweep whose first frames are dark."""
    from fetaliqa_core.io import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "MASK_CHECK_BYTES", 30 * 40 * 48)  # 30 of the 200 frames
    masks = np.zeros((200, 40, 48), np.uint8)
    masks[120:130, 10:20, 10:30] = 2
    assert sweep_module._looks_like_label_mask(masks)
    dark = masks.copy()
    dark[150:, 5:35, 5:40] = 90
    assert not sweep_module._looks_like_label_mask(dark)
    assert not sweep_module._looks_like_label_mask(np.zeros((200, 40, 48), np.uint8))
    # a mask held in memory is read whole: the challenge answer's mask labels one frame, which the
    # sample of a file mapped from disk misses (its note was lost on an 840-frame mask)
    one = np.zeros((200, 40, 48), np.uint8)
    one[101, 10:20, 10:30] = 1  # (not among the 30 frames sampled)
    assert sweep_module._looks_like_label_mask(one)


def test_the_viewers_loader_works_out_the_field_of_view_off_the_windows_thread(qtbot, tmp_path, monkeypatch):
    """The window's first overlay worked out the sweep's field of view on its own thread (0.1-0.4 s
    of a frozen event loop). The loader does it once the sweep is handed over, and the sweep keeps
    it, read-only: the window's call is then free."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.io import write_volume

    from app.worker import SweepLoader

    path = tmp_path / "s.mha"
    write_volume(path, (acouslic.fov_mask((64, 80)) * 120).astype(np.uint8)[None].repeat(4, axis=0))
    loader = SweepLoader(str(path))
    got = []
    loader.loaded.connect(lambda p, sweep: got.append(sweep))
    loader.run()  # in this thread
    calls = []
    monkeypatch.setattr(acouslic, "data_fan", lambda frames: calls.append(1) or np.ones(frames.shape[1:], bool))
    fov = acouslic.sweep_fov(got[0])
    assert calls == [] and isinstance(fov, np.ndarray) and not fov.flags.writeable
    assert acouslic.sweep_fov(got[0]) is fov


def test_running_out_of_memory_reading_a_nifti_is_said_so_not_called_damage(tmp_path, monkeypatch):
    """An honest 18 GB .nii.gz or .nrrd over the memory the process may have read "the pixel data
    cannot be read (Failed to allocate memory for image.). The file is truncated or damaged"."""
    path = tmp_path / "sweep.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 40, 48), np.uint8)), str(path))

    def no_memory(self):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/itkImportImageContainer.hxx:"
                           "196:\nITK ERROR: ImportImageContainer(0x55d0): Failed to allocate memory for image.")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_memory)
    with pytest.raises(FetalIQAError, match="out of memory") as err:
        load_sweep(path)
    assert "damaged" not in str(err.value) and "more memory" in str(err.value)


def test_frames_windowed_between_percentiles_say_so(tmp_path):
    """Signed frames (or values of no known grey depth) are shown between their 0.5th and 99.5th
    percentiles: brighter or darker than the scanner showed them (an int16 sweep offset by -500
    read its mean grey 61 where its 8-bit copy read 34), and nothing said so. A note says it;
    8-bit frames and grey levels of a known depth read as they are, without it."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 200, (3, 40, 48)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(grey - 500), str(tmp_path / "signed.mha"))
    signed = load_sweep(tmp_path / "signed.mha")
    assert any("0.5th and 99.5th percentiles" in n and "int16" in n for n in signed.read_notes), signed.read_notes
    sitk.WriteImage(sitk.GetImageFromArray(grey.astype(np.uint8)), str(tmp_path / "grey.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(grey.astype(np.uint16) * 16), str(tmp_path / "deep.mha"))
    for name in ("grey.mha", "deep.mha"):
        assert not any("percentiles" in n for n in load_sweep(tmp_path / name).read_notes), name


def test_a_file_no_reader_takes_names_every_kind_of_sweep_file_read(tmp_path):
    """The line for a file no reader takes listed the volume formats only, while pictures (a
    multi-page TIFF, PNG, JPEG, a still GIF) are read as sweeps too."""
    junk = tmp_path / "sweep.dat"
    junk.write_bytes(b"neither a header nor pixels\n" * 40)
    with pytest.raises(FetalIQAError) as err:
        load_sweep(junk)
    said = str(err.value)
    assert "not a readable image file" in said and ".nrrd" in said and "multi-page TIFF, PNG, JPEG" in said, said
