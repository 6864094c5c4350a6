"""Sweeps as other tools write them: display windows, padding, units, layouts and header
variants that scanners, PACS exports and research pipelines produce. Each case is one a reader
got wrong without a word, or refused although it is valid."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fetaliqa_core.errors import FetalIQAError
from fakes import us_dicom

from fetaliqa_core.io import (SPACING_FROM_DICOM_PIXEL_SPACING, SPACING_FROM_IMAGEJ, SPACING_FROM_US_REGION, SPACING_NONE,
                              load_sweep)

pydicom = pytest.importorskip("pydicom")

ENHANCED_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"


def _grey(n: int = 4, h: int = 40, w: int = 48) -> np.ndarray:
    """A ramp 20..235 along the columns with a bright 8 x 8 marker at the top left."""
    ramp = np.linspace(20, 235, w)[None, None, :].repeat(h, 1).repeat(n, 0)
    ramp[:, :8, :8] = 250
    return ramp


def _jpeg_frames(ds, grey: np.ndarray, syntax, has_bot: bool = True, **save) -> list[bytes]:
    """``grey`` frames as JPEG streams put into ``ds``'s pixel data under transfer syntax
    ``syntax`` (labelled so, whatever they are); the streams, for tests that damage them."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    streams = []
    for frame in grey:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", **save)
        streams.append(buffer.getvalue())
    ds.PixelData = encapsulate(streams, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return streams


def _region(dx_cm: float, dy_cm: float, spatial_format: int = 1, box=(0, 0, 47, 39), units: int = 3):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = spatial_format, 1, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units  # 3: cm
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
    return r


_dicom = us_dicom


def _pixel_measures(spacing):
    """A functional group item (shared or per frame) stating a Pixel Measures pixel spacing."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    measures = Dataset()
    measures.PixelSpacing = spacing
    item = Dataset()
    item.PixelMeasuresSequence = Sequence([measures])
    return item


# --- grey levels ------------------------------------------------------------------------------------------


def test_float_frames_normalised_to_one_keep_their_grey_levels_despite_overshoot(tmp_path):
    """Resampling a 0-1 image overshoots a little; the frames were shown black (0 and 1 taken as
    grey levels) once any value passed 1."""
    img = _grey()
    arr = (img / 255.0).astype(np.float32)
    arr[:, 20:22, 20:22] = 1.01  # the overshoot of a resampling filter
    path = tmp_path / "norm.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    frames = np.asarray(load_sweep(path).frames, dtype=float)
    keep = np.ones(img.shape, bool)
    keep[:, 20:22, 20:22] = False
    assert np.abs(frames - img)[keep].max() <= 1
    assert frames[:, 20, 20].min() == 255


def test_padding_far_below_the_image_is_left_out_of_the_window(tmp_path):
    """A research pipeline's -32768 background (or a DICOM Pixel Padding Value) took the 0.5th
    percentile, and the image itself was washed out to grey 242-255."""
    img = _grey(w=72) * 10
    arr = img.astype(np.int16)
    arr[:, :, 34:] = -32768
    path = tmp_path / "padded.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    unpadded = tmp_path / "unpadded.mha"  # the image alone: what the padded one must look like
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(arr[:, :, :34])), str(unpadded))
    want = np.asarray(load_sweep(unpadded).frames)
    assert want.max() - want.min() > 200
    frames = np.asarray(load_sweep(path).frames)
    assert np.array_equal(frames[:, :, :34], want)  # the image keeps its contrast
    assert (frames[:, :, 34:] == 0).all()  # padding shows black
    # the same with a DICOM file naming its padding value
    dcm = _dicom(tmp_path / "padded.dcm", arr, bits=16, signed=True, PixelPaddingValue=-32768)
    frames = np.asarray(load_sweep(dcm).frames)
    assert np.array_equal(frames[:, :, :34], want) and (frames[:, :, 34:] == 0).all()


def test_dicom_voi_window_is_applied(tmp_path):
    """PS3.3 C.11.2.1.2: values below c - 0.5 - (w-1)/2 show black, above c - 0.5 + (w-1)/2 white.
    The file's window was ignored and a burnt-in 4095 band darkened the whole image."""
    arr = np.full((3, 40, 48), 1080, dtype=np.uint16)
    arr[:, :, 24:] = 2020
    arr[:, 30:, :] = 4095
    arr[:, 10, 10] = 1550  # the window's centre
    path = _dicom(tmp_path / "win.dcm", arr, bits=16, WindowCenter=1550, WindowWidth=1100)
    frames = np.asarray(load_sweep(path).frames, dtype=int)
    lo, hi = 1550 - 0.5 - 549.5, 1550 - 0.5 + 549.5
    expect = lambda v: round(float(np.clip((v - lo) / (hi - lo), 0, 1)) * 255)  # noqa: E731
    assert frames[0, 0, 0] == expect(1080) and frames[0, 0, 30] == expect(2020)
    assert abs(frames[0, 10, 10] - 127) <= 1 and frames[0, 35, 0] == 255


def _at_gain(gain: int, n: int = 1) -> tuple[np.ndarray, float, float]:
    """The 8-bit test frames stored at ``gain`` times their grey levels as 16-bit values, and the
    window (centre, width) that shows them as the 8-bit frames again (LINEAR_EXACT: exact)."""
    return (_grey(n=n) * gain).astype(np.uint16), 128.0 * gain, 256.0 * gain


def test_a_series_whose_files_each_state_their_own_window_shows_each_frame_through_its_own(tmp_path):
    """16-bit single-frame files stored at gains x4, x8, x16, each with the window that shows it:
    every frame was shown through the first file's window, two-thirds of the sweep 1.4x and 1.9x
    too bright and clipped at white, with no note."""
    want = np.rint(_grey(n=1)[0]).astype(int)
    folder = tmp_path / "series"
    folder.mkdir()
    for k, gain in enumerate((4, 8, 16, 4, 8, 16)):
        arr, centre, width = _at_gain(gain)
        _dicom(folder / f"f{k}.dcm", arr[0], bits=16, series="1.2.3.50", instance=k + 1,
               WindowCenter=centre, WindowWidth=width, VOILUTFunction="LINEAR_EXACT")
    frames = np.asarray(load_sweep(folder).frames, dtype=int)
    assert frames.shape[0] == 6
    for k in range(6):
        assert np.abs(frames[k] - want).max() <= 1, f"frame {k}"
    # a file without a window of its own among them: the frames that have one keep theirs, the
    # others get the sweep's default window (its values' range), not the first file's (all white)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, gain in enumerate((4, 16, 16)):
        arr, centre, width = _at_gain(gain)
        attrs = dict(WindowCenter=centre, WindowWidth=width, VOILUTFunction="LINEAR_EXACT") if k < 2 else {}
        _dicom(mixed / f"f{k}.dcm", arr[0], bits=16, series="1.2.3.51", instance=k + 1, **attrs)
    frames = np.asarray(load_sweep(mixed).frames, dtype=int)
    assert np.abs(frames[0] - want).max() <= 1 and np.abs(frames[1] - want).max() <= 1
    assert np.count_nonzero(frames[2] == 255) < 0.1 * frames[2].size
    assert np.corrcoef(frames[2].ravel(), want.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("where", ["shared", "per frame"])
def test_an_enhanced_files_window_in_its_functional_groups_is_applied(tmp_path, where):
    """An Enhanced US Volume keeps its window in the Frame VOI LUT functional group (PS3.3
    C.7.6.16.2.10), shared or one a frame. It was not read: a shared one gave way to the
    percentile window (5 % of the pixels clipped white), per-frame ones left frames stored at
    gains x4, x8, x16 at a quarter, half and full brightness in turn."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def group(centre, width):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = centre, width, "LINEAR_EXACT"
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        return item

    n = 6
    gains = [4] * n if where == "shared" else [(4, 8, 16)[k % 3] for k in range(n)]
    arr = np.stack([_at_gain(g)[0][0] for g in gains]).astype(np.uint16)
    # a window that would clip the stored x4 frames' top, as the percentile window did
    arr[:, 0, 0] = 4000
    if where == "shared":
        attrs = {"SharedFunctionalGroupsSequence": Sequence([group(*_at_gain(4)[1:])])}
    else:
        attrs = {"SharedFunctionalGroupsSequence": Sequence([Dataset()]),
                 "PerFrameFunctionalGroupsSequence": Sequence([group(*_at_gain(g)[1:]) for g in gains])}
    path = _dicom(tmp_path / "enh.dcm", arr, bits=16, sop=ENHANCED_US_VOLUME, **attrs)
    frames = np.asarray(load_sweep(path).frames, dtype=int)
    want = np.rint(_grey(n=1)[0]).astype(int)
    for k in range(n):
        assert np.abs(frames[k, 1:] - want[1:]).max() <= 1, f"frame {k}"


def _voi_group(centre, width):
    """A functional group item whose Frame VOI LUT is the window ``centre``/``width`` (LINEAR)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = centre, width
    item = Dataset()
    item.FrameVOILUTSequence = Sequence([voi])
    return item


@pytest.mark.parametrize("where", ["top level", "per frame"])
def test_a_window_too_wide_to_show_anything_is_not_used_and_says_so(tmp_path, where):
    """A Window Width of 1e300 (for the whole file, or for half its frames) blacked those frames out
    without a note, and numpy printed "RuntimeWarning: overflow encountered in cast" and a source
    line on the terminal. Through so wide a window every frame would be one flat grey anyway."""
    import warnings

    from pydicom.sequence import Sequence

    n = 6
    arr, centre, width = _at_gain(4, n)
    if where == "top level":
        attrs = {"WindowCenter": centre, "WindowWidth": "1e300"}
    else:
        attrs = {"SharedFunctionalGroupsSequence": Sequence([]),
                 "PerFrameFunctionalGroupsSequence": Sequence([_voi_group(centre, width if k < 3 else "1e300")
                                                               for k in range(n)])}
    path = _dicom(tmp_path / "wide.dcm", arr, bits=16, sop=ENHANCED_US_VOLUME, **attrs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep = load_sweep(path)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    frames = np.asarray(sweep.frames, dtype=float)
    for k in range(n):
        assert frames[k].std() > 10, f"frame {k} is flat (mean {frames[k].mean():.1f})"
        assert np.corrcoef(frames[k].ravel(), _grey(n=n)[k].ravel())[0, 1] > 0.99
    assert any("far wider than the range of values its pixels can hold" in note and "not used" in note
               for note in sweep.read_notes), sweep.read_notes


def test_frames_own_windows_given_for_another_number_of_frames_are_noted(tmp_path):
    """A file of 6 frames whose Per-frame Functional Groups give windows for 2 (or 12): the frames'
    own windows cannot be matched to them and one window was used for all, silently (a series
    whose files cannot be matched to their windows says so)."""
    from pydicom.sequence import Sequence

    arr, centre, width = _at_gain(4, 6)
    for count in (2, 12):
        groups = [_voi_group(centre, width if k % 2 else width / 2) for k in range(count)]
        path = _dicom(tmp_path / f"groups{count}.dcm", arr, bits=16, sop=ENHANCED_US_VOLUME,
                      PerFrameFunctionalGroupsSequence=Sequence(groups))
        sweep = load_sweep(path)
        assert any(f"for {count} frame(s), but holds 6" in note and "one window is used for all" in note
                   for note in sweep.read_notes), sweep.read_notes
        assert len(np.asarray(sweep.frames)) == 6


def test_pixels_without_a_number_are_named_in_the_read_notes(tmp_path):
    arr = (_grey() / 255.0).astype(np.float32)
    arr[:, 5:7, 5:7] = np.nan
    path = tmp_path / "nan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    sweep = load_sweep(path)
    assert any("16 pixel(s)" in n and "NaN" in n for n in sweep.read_notes)
    clean = tmp_path / "clean.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.nan_to_num(arr)), str(clean))
    assert load_sweep(clean).read_notes == ()


# --- units and calibration ------------------------------------------------------------------------------


def _nrrd(path: Path, arr: np.ndarray, extra: str, encoding: str = "raw") -> Path:
    n, h, w = arr.shape
    head = (f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {w} {h} {n}\nencoding: {encoding}\n"
            + (f"{extra}\n" if extra else ""))  # (a second blank line would be a byte of the data)
    data = arr.astype(np.uint8).tobytes()
    if encoding == "gzip":
        data = gzip.compress(data)
    path.write_bytes(head.encode() + b"\n" + data)
    return path


def test_a_nrrd_with_spacings_beside_space_directions_says_so_in_plain_words(tmp_path):
    """A NRRD stating both 'space directions' and 'spacings' (which the format forbids) was refused with
    the image library's own "[nrrd] _nrrdFieldCheckSpaceInfo: axis[0] has a direction vector, ..."."""
    arr = _grey().astype(np.uint8)
    both = _nrrd(tmp_path / "both.nrrd", arr, "space: left-posterior-superior\n"
                 "space directions: (0.28,0,0) (0,0.28,0) (0,0,1)\nspacings: 0.5 0.5 1")
    with pytest.raises(FetalIQAError) as err:
        load_sweep(both)
    message = str(err.value)
    assert "states the pixel size twice" in message and "'spacings: 0.5 0.5 1'" in message, message
    assert "(0.28,0,0)" in message and "_nrrdFieldCheckSpaceInfo" not in message and "[nrrd]" not in message
    mins = _nrrd(tmp_path / "mins.nrrd", arr, "space: left-posterior-superior\n"
                 "space directions: (0.28,0,0) (0,0.28,0) (0,0,1)\naxis mins: 0 0 0")
    with pytest.raises(FetalIQAError, match="gives 'axis mins' beside 'space directions'.*remove the line"):
        load_sweep(mins)


def test_nrrd_lengths_in_cm_are_converted_and_a_unit_that_is_no_length_is_unknown(tmp_path):
    """The image reader takes every NRRD length as mm: 0.05 cm was shown as 0.05 mm, so an AC
    was ten times too short."""
    arr = _grey().astype(np.uint8)
    cm = _nrrd(tmp_path / "cm.nrrd", arr, 'space: left-posterior-superior\nspace units: "cm" "cm" "cm"\n'
               "space directions: (0.03,0,0) (0,0.025,0) (0,0,1)\nkinds: domain domain domain")
    sweep = load_sweep(cm)
    assert sweep.spacing_mm == pytest.approx((0.25, 0.3)) and sweep.spacing_plausible
    per_axis = _nrrd(tmp_path / "units.nrrd", arr, 'spacings: 0.03 0.025 1\nunits: "cm" "cm" "s"\n'
                     "kinds: domain domain time")
    assert load_sweep(per_axis).spacing_mm == pytest.approx((0.25, 0.3))
    pixels = _nrrd(tmp_path / "px.nrrd", arr, 'spacings: 0.3 0.25 1\nunits: "px" "px" ""')
    sweep = load_sweep(pixels)
    assert sweep.spacing_source == SPACING_NONE and "'px'" in sweep.spacing_problem


@pytest.mark.parametrize("unit,encoding", [("\u00b5m", "utf-8"), ("\u03bcm", "utf-8"), ("\u00b5m", "latin-1"),
                                           ("\u00b5m", "mixed")])
def test_nrrd_micrometres_are_read_whichever_way_the_micro_sign_is_written(tmp_path, unit, encoding):
    """3D Slicer writes its header in UTF-8: "\u00b5m" read as Latin-1 became 'Âµm', "not a length", and
    the pixel size was unknown; the Greek mu (U+03BC) was refused the same way; and a header edited by
    hand, a Latin-1 comment beside Slicer's UTF-8 lines, read the "\u00b5m" as 'Âµm' again."""
    arr = _grey().astype(np.uint8)
    n, h, w = arr.shape
    head = (f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {w} {h} {n}\nencoding: raw\n"
            f'space: left-posterior-superior\nspace units: "{unit}" "{unit}" "{unit}"\n'
            "space directions: (300,0,0) (0,250,0) (0,0,1000)\nkinds: domain domain domain\n\n")
    path = tmp_path / "micro.nrrd"
    raw = head.encode("utf-8" if encoding == "mixed" else encoding)
    if encoding == "mixed":
        raw = raw.replace(b"type:", "# Fötus, Schädel\n".encode("latin-1") + b"type:", 1)
    path.write_bytes(raw + arr.tobytes())
    sweep = load_sweep(path)
    assert sweep.spacing_mm == pytest.approx((0.25, 0.3)) and sweep.spacing_plausible, sweep.spacing_problem


def test_bytes_appended_after_a_dicom_s_pixel_data_are_refused_before_the_image_library(tmp_path):
    """Ten stray bytes after the pixel data of a 37 KB DICOM made the image library's reader take
    3.6 GB while probing it, then call its pixels undecodable. Trailing padding is an element."""
    import struct

    arr = _grey().astype(np.uint8)
    good = _dicom(tmp_path / "good.dcm", arr)
    raw = good.read_bytes()
    padded = tmp_path / "padded.dcm"  # Data Set Trailing Padding (FFFC,FFFC), explicit VR OB
    padded.write_bytes(raw + struct.pack("<HH", 0xFFFC, 0xFFFC) + b"OB\0\0" + struct.pack("<I", 4) + bytes(4))
    assert load_sweep(padded).n_frames == arr.shape[0]
    zeros = tmp_path / "zeros.dcm"  # zero bytes after the pixel data: padding too
    zeros.write_bytes(raw + bytes(512))
    assert load_sweep(zeros).n_frames == arr.shape[0]
    for name, tail in (("junk", b"}\xc9[\xb0]\x94s5Q\x10"),
                       ("huge", struct.pack("<HH", 0x7FE0, 0x0020) + b"OB\0\0" + struct.pack("<I", 0xC0000000))):
        bad = tmp_path / f"{name}.dcm"
        bad.write_bytes(raw + tail)
        with pytest.raises(FetalIQAError, match="goes on after its pixel data"):
            load_sweep(bad)


def test_a_vanishing_pixel_spacing_is_implausible_not_damage(tmp_path):
    """A Pixel Spacing of 1e-300 made the image reader fail on a 'singular matrix', and the file was
    called truncated or damaged; other bad spacings read as unknown."""
    arr = _grey().astype(np.uint8)
    sweep = load_sweep(_dicom(tmp_path / "tiny.dcm", arr, PixelSpacing=[1e-300, 1e-300]))
    assert sweep.n_frames == arr.shape[0] and not sweep.spacing_plausible and "implausible" in sweep.spacing_problem


def test_a_dicom_with_only_imager_pixel_spacing_says_why_that_is_not_used(tmp_path):
    """Imager Pixel Spacing (the detector's pitch) is no size in the body: the pixel size stays unknown,
    and the reason names it (it read "no ultrasound region calibration and no Pixel Spacing" as if
    the file held nothing); beside a Pixel Spacing, the Pixel Spacing is used."""
    arr = _grey().astype(np.uint8)
    only = load_sweep(_dicom(tmp_path / "imager.dcm", arr, ImagerPixelSpacing=[0.2, 0.2]))
    assert only.spacing_source == SPACING_NONE
    assert "Imager Pixel Spacing (0.2 x 0.2 mm)" in only.spacing_problem and "not used" in only.spacing_problem
    both = load_sweep(_dicom(tmp_path / "both.dcm", arr, ImagerPixelSpacing=[0.25, 0.25], PixelSpacing=[0.2, 0.2]))
    assert both.spacing_mm == pytest.approx((0.2, 0.2)) and both.spacing_plausible


def test_dicom_calibration_without_preamble_in_enhanced_objects_and_beside_m_mode(tmp_path):
    arr = _grey().astype(np.uint8)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    bare = _dicom(tmp_path / "bare.dcm", arr, preamble=False, SequenceOfUltrasoundRegions=Sequence([_region(0.03, 0.025)]))
    sweep = load_sweep(bare)
    assert sweep.spacing_source == SPACING_FROM_US_REGION and sweep.spacing_mm == pytest.approx((0.25, 0.3))
    measures = Dataset()
    measures.PixelSpacing = [0.25, 0.3]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    enhanced = _dicom(tmp_path / "enh.dcm", arr, sop=ENHANCED_US_VOLUME,
                      SharedFunctionalGroupsSequence=Sequence([shared]))
    sweep = load_sweep(enhanced)
    assert sweep.spacing_source == SPACING_FROM_DICOM_PIXEL_SPACING and sweep.spacing_mm == pytest.approx((0.25, 0.3))
    # an M-mode strip (Region Spatial Format 2) larger than the 2-D image: its deltas are not the image's
    # (regions of at least 32 pixels each way: a smaller one is a strip or a thumbnail, no image)
    big = _grey(h=100, w=96).astype(np.uint8)
    mixed = _dicom(tmp_path / "mmode.dcm", big, SequenceOfUltrasoundRegions=Sequence([
        _region(0.03, 0.025, box=(0, 0, 40, 40)), _region(0.1, 0.1, spatial_format=2, box=(0, 0, 95, 99))]))
    assert load_sweep(mixed).spacing_mm == pytest.approx((0.25, 0.3))
    two = _dicom(tmp_path / "two.dcm", big, SequenceOfUltrasoundRegions=Sequence([
        _region(0.03, 0.025, box=(0, 0, 95, 67)), _region(0.05, 0.05, box=(0, 68, 95, 99))]))
    assert any("differently calibrated" in n for n in load_sweep(two).read_notes)


# --- layouts that were refused although valid -------------------------------------------------------------


def test_ybr_full_422_native_is_not_taken_for_truncated(tmp_path):
    """Two bytes per pixel (PS3.3 C.7.6.3.1.2), not three."""
    from pydicom.uid import ExplicitVRLittleEndian

    n, h, w = 2, 40, 48
    y = np.full((n, h, w), 150, dtype=np.uint8)
    packed = np.empty((n, h, w // 2, 4), dtype=np.uint8)
    packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[..., ::2], y[..., 1::2], 128, 128
    path = _dicom(tmp_path / "ybr.dcm", y)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.PixelData = packed.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    frames = np.asarray(load_sweep(path).frames, dtype=int)
    assert frames.shape == (n, h, w) and abs(frames.mean() - 150) <= 2


def test_an_unknown_photometric_word_is_named_unknown_not_misspelt(tmp_path):
    """'nan' was said to be spelt otherwise than the standard's 'NAN': no such value exists."""
    path = _dicom(tmp_path / "nan.dcm", (np.arange(2 * 40 * 48).reshape(2, 40, 48) % 200).astype(np.uint8))
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "nan"
    ds.save_as(path)
    with pytest.raises(FetalIQAError, match="Photometric Interpretation is 'nan', which is not one the standard "
                                            "defines") as refused:
        load_sweep(path)
    assert "NAN" not in str(refused.value)


@pytest.mark.parametrize("spelling", ["Monochrome1", "ybr_full_422"])
def test_photometric_in_another_case_is_refused_not_misread(tmp_path, spelling):
    """The image library matches the code string exactly: 'Monochrome1' was read without its
    inversion (every grey level flipped) and a lower-case YBR as three bytes a pixel."""
    y = (np.arange(2 * 40 * 48).reshape(2, 40, 48) % 200).astype(np.uint8)
    path = _dicom(tmp_path / "odd.dcm", y)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = spelling
    if spelling.upper().startswith("YBR"):
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.PixelData = np.repeat(y[..., ::2, None], 4, -1).tobytes()
    ds.save_as(path)
    with pytest.raises(FetalIQAError, match="spells its Photometric Interpretation"):
        load_sweep(path)
    ds.PhotometricInterpretation = "monochrome2"  # read the same as MONOCHROME2: accepted
    ds.SamplesPerPixel, ds.PixelData = 1, y.tobytes()
    ds.save_as(path)
    assert np.array_equal(np.asarray(load_sweep(path).frames), y)


def _nifti_scaled(path: Path, stored: np.ndarray, slope: float, inter: float) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(stored), str(path))
    data = bytearray(path.read_bytes())
    data[112:120] = struct.pack("<ff", slope, inter)  # scl_slope, scl_inter (nifti1.h)
    path.write_bytes(bytes(data))
    return path


def test_nifti_with_scaling_is_sized_on_its_stored_type(tmp_path):
    """scl_slope makes the reader return floats; the size check took those for the stored bytes
    and called the file truncated."""
    img = _grey()
    path = _nifti_scaled(tmp_path / "scaled.nii", ((img - 10) / 2).astype(np.uint8), 2.0, 10.0)
    frames = np.asarray(load_sweep(path).frames, dtype=float)
    assert np.abs(frames - np.floor((img - 10) / 2) * 2 - 10).max() <= 1
    cut = tmp_path / "cut.nii"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FetalIQAError, match="truncated"):
        load_sweep(cut)


def _nifti_with_sform(path: Path, spacing: tuple[float, float], sform_scale: tuple[float, float] | None,
                      units: int = 2) -> Path:
    """A NIfTI written by SimpleITK (qform and sform from ``spacing``, in mm), then given another
    sform (rotated 30 degrees in-plane, columns scaled by ``sform_scale``) and spatial unit code."""
    image = sitk.GetImageFromArray(_grey().astype(np.uint8))
    image.SetSpacing((spacing[1], spacing[0], 1.0))
    sitk.WriteImage(image, str(path))
    data = bytearray(path.read_bytes())
    data[123] = (data[123] & ~0x07) | units  # xyzt_units: the spatial part
    if sform_scale is not None:
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        col, row = sform_scale[1], sform_scale[0]
        srow = [c * col, -s * row, 0, 1.5, s * col, c * row, 0, -2.0, 0, 0, 1.0, 0]
        data[254:256] = struct.pack("<h", 1)  # sform_code: scanner
        data[280:328] = struct.pack("<12f", *srow)
    path.write_bytes(bytes(data))
    return path


def test_nifti_whose_two_pixel_sizes_disagree_gives_no_length(tmp_path):
    """A NIfTI header holds the pixel size twice (pixdim, the sform's columns). The image reader
    takes pixdim; when the sform says otherwise the file contradicts itself and no mm is shown."""
    agree = load_sweep(_nifti_with_sform(tmp_path / "agree.nii", (0.3, 0.25), (0.3, 0.25)))
    assert agree.spacing_mm == pytest.approx((0.3, 0.25)) and agree.spacing_problem is None
    # pixdim left at 1 x 1 (a writer that only set the sform): not read as a placeholder alone
    lone = load_sweep(_nifti_with_sform(tmp_path / "lone.nii", (1.0, 1.0), (0.3, 0.25)))
    assert lone.spacing_source == "none"
    assert "disagree" in lone.spacing_problem and "0.3 x 0.25 mm (its sform" in lone.spacing_problem
    # pixdim set, sform another size: neither is used
    both = load_sweep(_nifti_with_sform(tmp_path / "both.nii", (0.3, 0.3), (0.6, 0.6)))
    assert both.spacing_source == "none" and "0.3 x 0.3 mm (its voxel sizes" in both.spacing_problem
    # the spatial unit applies to both: micrometres
    um = load_sweep(_nifti_with_sform(tmp_path / "um.nii", (300.0, 250.0), (300.0, 250.0), units=3))
    assert um.spacing_mm == pytest.approx((0.3, 0.25)) and um.spacing_problem is None


def test_nifti_without_a_unit_code_says_its_pixel_size_is_read_as_mm(tmp_path):
    """xyzt_units 0 means "unknown" (nibabel's default): the pixel size is read as mm, as image
    readers do, and the sweep's notes say so; a header naming mm has no such note."""
    unknown = load_sweep(_nifti_with_sform(tmp_path / "unknown.nii", (0.3, 0.25), None, units=0))
    assert unknown.spacing_mm == pytest.approx((0.3, 0.25)) and unknown.spacing_problem is None
    assert any("names no unit" in n and "read as mm" in n for n in unknown.read_notes)
    named = load_sweep(_nifti_with_sform(tmp_path / "mm.nii", (0.3, 0.25), None, units=2))
    assert not any("unit" in n for n in named.read_notes)


def test_a_nrrd_or_nifti_naming_no_length_unit_says_its_pixel_size_is_read_as_mm(tmp_path):
    """A NRRD with no 'space units', 'units' or named space, and a NIfTI whose unit code is none NIfTI defines
    (xyzt_units 5), were read as mm without the note a NIfTI of unit code 0 gets: a header giving
    cm numbers (0.06) was shown as "pixel 0.06 x 0.06 mm · file header" with no word of doubt."""
    arr = _grey().astype(np.uint8)
    for name, extra in (("spacings.nrrd", "spacings: 0.06 0.06 1"),
                        ("none.nrrd", 'spacings: 0.06 0.06 1\nunits: "" "" "s"')):
        sweep = load_sweep(_nrrd(tmp_path / name, arr, extra))
        assert sweep.spacing_mm == pytest.approx((0.06, 0.06))
        assert any("names no unit" in n and "read as mm" in n for n in sweep.read_notes), (name, sweep.read_notes)
    named = load_sweep(_nrrd(tmp_path / "mm.nrrd", arr, 'spacings: 0.3 0.3 1\nunits: "mm" "mm" "s"'))
    assert not any("unit" in n for n in named.read_notes)
    # a named anatomical space without units (as ITK, 3D Slicer and this product write): mm by their
    # convention, not noted on every such file
    space = load_sweep(_nrrd(tmp_path / "dirs.nrrd", arr,
                             "space: left-posterior-superior\nspace directions: (0.3,0,0) (0,0.3,0) (0,0,1)"))
    assert space.spacing_mm == pytest.approx((0.3, 0.3)) and not any("unit" in n for n in space.read_notes)
    bare = load_sweep(_nrrd(tmp_path / "bare.nrrd", arr, ""))  # no spacing at all: unknown, nothing to say of units
    assert bare.spacing_source == SPACING_NONE and not any("unit" in n for n in bare.read_notes)
    undefined = load_sweep(_nifti_with_sform(tmp_path / "five.nii", (0.3, 0.25), None, units=5))
    assert undefined.spacing_mm == pytest.approx((0.3, 0.25))
    assert any("unit code" in n and "not a unit NIfTI defines" in n and "read as mm" in n
               for n in undefined.read_notes), undefined.read_notes


def test_metaimage_array_element_types_are_read(tmp_path):
    arr = _grey().astype(np.uint8)
    head = (f"ObjectType = Image\nNDims = 3\nDimSize = 48 40 4\nElementType = MET_UCHAR_ARRAY\n"
            f"ElementNumberOfChannels = 1\nElementSpacing = 0.3 0.25 1\nElementDataFile = LOCAL\n")
    path = tmp_path / "arr.mha"
    path.write_bytes(head.encode() + arr.tobytes())
    assert np.array_equal(np.asarray(load_sweep(path).frames), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_a_nifti_whose_pixels_would_start_inside_its_header_is_refused(tmp_path, gz):
    """vox_offset 0 in a single .nii file: the image reader read the 352 header bytes as pixels,
    every frame shifted, without a word."""
    arr = _grey().astype(np.uint8)
    good = tmp_path / "good.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(good))
    raw = bytearray(good.read_bytes())
    assert raw[344:348] == b"n+1\0"
    struct.pack_into("<f", raw, 108, 0.0)
    path = tmp_path / ("vox0.nii.gz" if gz else "vox0.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(FetalIQAError, match="pixels at byte 0, inside the header"):
        load_sweep(path)
    assert np.array_equal(np.asarray(load_sweep(good).frames), arr)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("datatype,bitpix", [(512, 8), (4, 8), (16, 8), (64, 8), (128, 8), (2304, 8), (2, 16)])
def test_a_nifti_whose_datatype_and_bitpix_disagree_is_refused(tmp_path, gz, datatype, bitpix):
    """The NIfTI library reads the pixels as the datatype says: a uint8 file marked uint16 (bitpix
    left at 8) came back with its first frames scrambled and its last ones blank, without a word;
    the reverse (bitpix 16, datatype uint8) was called truncated."""
    arr = _grey().astype(np.uint8)
    good = tmp_path / "good.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(good))
    raw = bytearray(good.read_bytes())
    assert struct.unpack_from("<hh", raw, 70) == (2, 8)
    struct.pack_into("<hh", raw, 70, datatype, bitpix)
    path = tmp_path / ("odd.nii.gz" if gz else "odd.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(FetalIQAError) as err:
        load_sweep(path)
    message = str(err.value)
    assert "contradicts itself" in message and f"bitpix says {bitpix} bits" in message, message
    assert f"datatype {datatype}" in message and "export the file again" in message and "truncated" not in message
    # a bitpix of 0 (or of no whole byte) says nothing: the datatype alone is read, rightly
    struct.pack_into("<hh", raw, 70, 2, 0)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    assert np.array_equal(np.asarray(load_sweep(path).frames), arr)


# --- what cannot be read says what it is ---------------------------------------------------------------


def test_unsupported_variants_are_named(tmp_path):
    arr = _grey().astype(np.uint8)
    bz = _nrrd(tmp_path / "b.nrrd", arr, "", encoding="bzip2")
    with pytest.raises(FetalIQAError, match="encoding 'bzip2'.*raw or gzip"):
        load_sweep(bz)
    nifti2 = tmp_path / "n2.nii"
    nifti2.write_bytes(struct.pack("<i", 540) + b"n+2\0" + bytes(600))
    with pytest.raises(FetalIQAError, match="NIfTI-2.*NIfTI-1"):
        load_sweep(nifti2)
    media = tmp_path / "cd"
    (media / "PT000000" / "ST000000" / "SE000000").mkdir(parents=True)
    _dicom(media / "PT000000" / "ST000000" / "SE000000" / "IM000000", arr)
    (media / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(FetalIQAError, match="DICOMDIR.*subfolder of one series"):
        load_sweep(media)
    assert load_sweep(media / "PT000000" / "ST000000" / "SE000000").n_frames == 4


def test_the_dicomdir_file_itself_gets_the_media_folder_line(tmp_path):
    """The DICOMDIR given by name was "holds no pixel data ... Choose the sweep's image file, or
    export it again", where its folder got the line that says where the images are."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.1.3.10", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    index = FileDataset(str(tmp_path / "DICOMDIR"), {}, file_meta=meta, preamble=b"\0" * 128)
    index.FileSetID, index.DirectoryRecordSequence = "CD", Sequence([])
    index.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    with pytest.raises(FetalIQAError, match="a DICOMDIR, the index of a DICOM media folder.*subfolder of one series"):
        load_sweep(tmp_path / "DICOMDIR")


def test_a_series_of_frames_of_different_sizes_names_the_odd_file(tmp_path):
    """One file 40 pixels wide among files 48 wide was "the DICOM series could not be read (Size:
    [40, 40, 1]). Check that all files belong to one series": neither the file nor the sizes."""
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(4):
        frame = _grey(n=1, w=40 if k == 2 else 48)[0].astype(np.uint8)
        _dicom(folder / f"IM{k}.dcm", frame, series="1.2.3.40", instance=k + 1)
    with pytest.raises(FetalIQAError, match=r"frames of different sizes \(3 file\(s\) of 48 x 40; 1 file\(s\) of "
                                            r"40 x 40 pixels, width x height; e\.g\. IM2\.dcm\).*Move the odd files out"):
        load_sweep(folder)


def test_a_label_mask_stored_as_monochrome1_is_named_not_called_other_labels(tmp_path):
    """A mask some converters write as MONOCHROME1 is inverted as a grey image is, and was refused
    as labels 253, 254, 255 to be renumbered in 3D Slicer; the cause is how it is stored. A 0/255
    one was even read as its negative where a binary mask is taken."""
    from fetaliqa_core.io import load_mask, read_mask_volume

    labels = np.zeros((2, 40, 48), np.uint8)
    labels[:, 10:30, 10:30], labels[:, 32:36, 10:30] = 1, 2
    inverted = us_dicom(tmp_path / "mono1.dcm", labels, PhotometricInterpretation="MONOCHROME1")
    with pytest.raises(FetalIQAError, match=r"stored as MONOCHROME1 .*labels read inverted \(as 253, 254, 255\)"
                                            r".*Export the mask as MONOCHROME2"):
        load_mask(inverted)
    binary = us_dicom(tmp_path / "binary.dcm", (labels == 1) * 255, PhotometricInterpretation="MONOCHROME1")
    with pytest.raises(FetalIQAError, match="MONOCHROME1"):
        read_mask_volume(binary, binary_255=True)
    assert np.array_equal(load_mask(us_dicom(tmp_path / "mono2.dcm", labels)), labels)


def test_a_numpy_array_file_is_named_with_what_to_save_instead(tmp_path):
    """A .npy was "not a readable image file (no supported image header found)", naming neither
    NumPy nor what to save instead."""
    np.save(tmp_path / "frames.npy", _grey().astype(np.uint8))
    with pytest.raises(FetalIQAError, match=r"a NumPy array file \(\.npy\), which is not read.*Save the sweep as \.mha"):
        load_sweep(tmp_path / "frames.npy")
    # numpy.savez / savez_compressed: a ZIP of .npy files, which was "a ZIP archive of files ... unpack it"
    # (unpacked, .npy files, refused in turn)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "frames.npz", frames=_grey().astype(np.uint8))
        with pytest.raises(FetalIQAError, match=r"a NumPy archive of arrays \(\.npz\), which is not read.*"
                                                 r"Save the sweep as \.mha") as err:
            load_sweep(tmp_path / "frames.npz")
        assert "unpack" not in str(err.value)


def test_hdf5_and_matlab_files_are_named_with_how_to_convert_them(tmp_path, capfd):
    """An HDF5 file (.h5) or a MATLAB file (.mat, v5 or v7.3) was "not a readable image file (no
    supported image header found)": no word that the format was recognised, nor how to convert it
    (a .npy gets both). Written here by hand: the first bytes h5py and MATLAB write (damaged HDF5,
    on which the HDF5 library printed a 40-line diagnostic stack before the line)."""
    hdf5 = b"\x89HDF\r\n\x1a\n" + bytes(2040)
    text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 12:00:00 2026"
    v5 = text.ljust(116, b" ") + bytes(8) + b"\x00\x01IM" + bytes(256)
    v73 = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    v73 = v73.ljust(512, b"\x00") + hdf5
    for name, data, said, loader in (("sweep.h5", hdf5, "an HDF5 file", "h5py"),
                                     ("sweep.mat", v5, "a MATLAB file,", "scipy.io.loadmat"),
                                     ("new.mat", v73, "a MATLAB file (v7.3, HDF5)", "h5py")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FetalIQAError) as err:
            load_sweep(tmp_path / name)
        message = str(err.value)
        assert said in message and "which is not read" in message and loader in message, message
        assert "GetImageFromArray" in message and "no supported image header" not in message
        assert "HDF5-DIAG" not in capfd.readouterr().err


def test_a_folder_of_several_series_says_which_it_read_or_refuses_a_tie(tmp_path):
    arr = _grey(n=1)[0]
    tie = tmp_path / "tie"
    tie.mkdir()
    for k in range(4):
        _dicom(tie / f"a{k}.dcm", arr, series="1.2.3.4.1", instance=k + 1)
        _dicom(tie / f"b{k}.dcm", arr, series="1.2.3.4.2", instance=k + 1)
    with pytest.raises(FetalIQAError, match="2 DICOM series.*own folder"):
        load_sweep(tie)
    (tie / "b3.dcm").unlink()
    sweep = load_sweep(tie)
    assert sweep.n_frames == 4
    assert any("2 DICOM series" in n and "(3 frame(s)) are left out" in n for n in sweep.read_notes)
    # one frame a file, each file a series of its own: said so, not "1 frames each at most"
    stills = tmp_path / "stills"
    stills.mkdir()
    for k in range(3):
        _dicom(stills / f"s{k}.dcm", arr, series=f"1.2.3.5.{k + 1}", instance=1)
    with pytest.raises(FetalIQAError, match=r"3 DICOM series of one frame each \(each file a series of its own\), "
                       "so none is a sweep. Export the sweep again as one series"):
        load_sweep(stills)


def _series_of_four(folder: Path, names: str = "f{k}.dcm") -> Path:
    folder.mkdir()
    for k in range(4):
        _dicom(folder / names.format(k=k), _grey(n=1)[0], series="1.2.3.60", instance=k + 1)
    return folder


@pytest.mark.parametrize("damage, why", [
    ("cut before its pixels", "cut short"), ("cut at 500 bytes", "cut short"), ("cut in its file meta", "cut short"),
    ("empty", "empty, 0 bytes"), ("a link to a text file", "not a DICOM file"), ("numbered alike", "not a DICOM file"),
])
def test_a_series_file_cut_short_empty_or_not_dicom_is_named_not_a_frame_left_out(tmp_path, damage, why):
    """A series folder one of whose files was cut before its pixel data (or in its header), is
    empty (0 bytes), or is a link to another file read as one sweep a frame short, no word said,
    and `score` scored it: the scan of the series leaves such a file out. It is named instead,
    where the evidence says it is one of the series' files (named as they are, DICOM of the
    series, or DICOM cut short). A README, a thumbnail, an index and a scratch file beside the
    series are no frames of it: that folder reads, without a note."""
    folder = _series_of_four(tmp_path / "series", "IM_{k:04d}" if damage == "numbered alike" else "f{k}.dcm")
    victim = folder / ("IM_0002" if damage == "numbered alike" else "f2.dcm")
    data = victim.read_bytes()
    if damage.startswith("cut"):
        at = {"cut before its pixels": data.index(b"\xe0\x7f\x10\x00"), "cut at 500 bytes": 500,
              "cut in its file meta": 200}[damage]
        victim.write_bytes(data[:at])
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        (tmp_path / "notes.txt").write_text("scanned on the second machine\n")
        victim.unlink()
        if damage == "numbered alike":
            victim.write_text("scanned on the second machine\n")
        else:
            victim.symlink_to(tmp_path / "notes.txt")
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(folder)
    message = str(exc.value)
    assert f"{victim.name} ({why}" in message and "frame missing" in message and "\n" not in message, message

    fine = _series_of_four(tmp_path / "fine")
    (fine / "README.txt").write_text("series of the 20-week scan\n")
    (fine / "f0.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))  # a thumbnail
    (fine / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (fine / "scratch.tmp").write_bytes(b"")
    (fine / "notes").symlink_to(tmp_path / "notes.txt" if (tmp_path / "notes.txt").exists() else fine / "README.txt")
    sweep = load_sweep(fine)
    assert sweep.n_frames == 4 and sweep.read_notes == ()


def test_pydicom_s_warnings_on_a_header_s_values_stay_off_the_terminal_and_others_do_not(tmp_path, monkeypatch):
    """A Number of Frames written '6.0' reads as 6, but pydicom's warning on it (two lines naming a
    file inside site-packages, "Invalid value for VR IS: '6.0'") printed above `fetaliqa score`'s
    own lines. Kept off where the readers read DICOM (the file, a folder's look for cines); a
    warning of another origin during a read still shows."""
    import warnings

    from fetaliqa_core.io import multiframe_dicom_files, readers

    path = _dicom(tmp_path / "six.dcm", _grey(n=6).astype(np.uint8))
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.NumberOfFrames = "6.0"
    ds.save_as(path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert load_sweep(path).n_frames == 6
        assert multiframe_dicom_files(tmp_path, at_least=1) == [path]
    shown = [f"{w.filename}: {w.message}" for w in said]
    assert not [line for line in shown if "pydicom" in line], shown

    photometric = readers._photometric

    def noisy(ds):
        warnings.warn("a warning of FetalIQA's own")
        return photometric(ds)

    monkeypatch.setattr(readers, "_photometric", noisy)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        load_sweep(path)
    assert any("of FetalIQA's own" in str(w.message) for w in said)


def test_a_series_is_read_in_acquisition_order(tmp_path):
    """Instance Number orders a cine (PS3.3 C.7.6.1), even where the positions run backwards; files
    with neither are taken in the order of their names, numbers compared as numbers, and said so."""
    def frame(k: int) -> np.ndarray:
        f = _grey(n=1)[0]
        f[30:, :] = 10 * k  # each file's own grey level in its bottom rows
        return f

    tracked = tmp_path / "tracked"
    tracked.mkdir()
    for k in range(5):
        _dicom(tracked / f"f{k}.dcm", frame(k), series="1.2.3.9", instance=k + 1,
               ImagePositionPatient=[0, 0, -float(k)], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    sweep = load_sweep(tracked)
    assert [int(f[35, 20]) for f in np.asarray(sweep.frames)] == [0, 10, 20, 30, 40] and sweep.read_notes == ()
    named = tmp_path / "named"
    named.mkdir()
    for k in range(12):
        _dicom(named / str(k + 1), frame(k), series="1.2.3.10")
    sweep = load_sweep(named)
    assert [int(f[35, 20]) for f in np.asarray(sweep.frames)] == [10 * k for k in range(12)]
    assert any("order of the file names" in n for n in sweep.read_notes)


def test_a_series_with_numbered_files_missing_says_so(tmp_path):
    """A series folder from which files were left behind (numbers 3 and 7-8 of 1-12) read as a
    sweep three frames short, jumping there, no word said. Numbers counting in steps of two, or
    without gaps, say nothing."""
    def folder(name: str, numbers: list[int]) -> Path:
        where = tmp_path / name
        where.mkdir()
        for k, n in enumerate(numbers):
            _dicom(where / f"IM{n}", _grey(n=1)[0], series=f"1.2.3.{70 + len(name)}", instance=n)
        return where

    notes = " ".join(load_sweep(folder("gaps", [1, 2, 4, 5, 6, 9, 10, 11, 12])).read_notes)
    assert "numbered 1-12 (Instance Number), but 3 of those numbers have no file here (3, 7-8)" in notes
    assert load_sweep(folder("whole", list(range(1, 10)))).read_notes == ()
    assert load_sweep(folder("odd", list(range(1, 19, 2)))).read_notes == ()


def test_a_series_whose_instance_numbers_do_not_order_it_is_ordered_by_time_or_says_how(tmp_path):
    """Instance Numbers all 1, one repeated, or missing in some files (files named IM1..IM12)
    were read in the plain text order of the names (IM1, IM10, IM11, IM12, IM2, ...) without a
    word. The acquisition times order them when each file has its own; positions that run
    backwards do not beat them; with neither, the names' natural order, and the answer says which."""
    def frame(k: int) -> np.ndarray:
        f = _grey(n=1)[0]
        f[30:, :] = 10 * k
        return f

    def levels(folder):
        sweep = load_sweep(folder)
        return [int(f[35, 20]) for f in np.asarray(sweep.frames)], " ".join(sweep.read_notes)

    cases = {
        "all_one": lambda k: {"instance": 1},
        "a_pair": lambda k: {"instance": 5 if k in (4, 5) else k + 1},
        "two_missing": lambda k: {"instance": None if k in (3, 7) else k + 1},
    }
    for name, numbering in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for k in range(12):
            _dicom(folder / f"IM{k + 1}", frame(k), series=f"1.2.3.{len(name)}", ContentDate="20261130",
                   ContentTime=f"1015{k:02d}.250000", **numbering(k))
        order, notes = levels(folder)
        assert order == [10 * k for k in range(12)], name
        assert "Instance Numbers do not order them" in notes and "acquisition times" in notes, name
    backwards = tmp_path / "backwards"
    backwards.mkdir()
    for k in range(6):  # no numbers; positions run backwards while the times run forwards
        _dicom(backwards / f"x{5 - k}.dcm", frame(k), series="1.2.3.40", instance=None, AcquisitionTime=f"0900{k:02d}",
               ImagePositionPatient=[0, 0, -2.0 * k], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    order, notes = levels(backwards)
    assert order == [10 * k for k in range(6)] and "carry no Instance Number" in notes
    # numbers counting down while the times go up: the numbers' order, said (it was silent)
    counted = tmp_path / "counted_down"
    counted.mkdir()
    for k in range(6):
        _dicom(counted / f"c{k}.dcm", frame(k), series="1.2.3.41", instance=6 - k, AcquisitionTime=f"0900{k:02d}")
    order, notes = levels(counted)
    assert order == [10 * k for k in range(6)][::-1] and "acquisition times run backwards" in notes
    forwards = tmp_path / "forwards"
    forwards.mkdir()
    for k in range(6):
        _dicom(forwards / f"f{k}.dcm", frame(k), series="1.2.3.43", instance=k + 1, AcquisitionTime=f"0900{k:02d}")
    assert "backwards" not in levels(forwards)[1]
    midnight = tmp_path / "midnight"
    midnight.mkdir()
    for k in range(6):  # times of day alone, across midnight: 23:59:57 ... 00:00:02
        _dicom(midnight / f"m{k}.dcm", frame(k), series="1.2.3.42", instance=1,
               ContentTime=f"{(86397 + k) % 86400 // 3600:02d}{(86397 + k) % 3600 // 60:02d}{(86397 + k) % 60:02d}")
    order, notes = levels(midnight)
    assert order == [10 * k for k in range(6)] and "acquisition times" in notes
    # positions alone (no numbers, no times), side by side in the image plane: along them
    placed = tmp_path / "placed"
    placed.mkdir()
    for k in range(12):
        _dicom(placed / f"IM{k + 1}", frame(k), series="1.2.3.43", instance=1, ImagePositionPatient=[float(k), 0.0, 0.0])
    order, notes = levels(placed)
    assert order == [10 * k for k in range(12)] and "Image Positions" in notes
    untimed = tmp_path / "untimed"
    untimed.mkdir()
    for k in range(12):
        _dicom(untimed / f"IM{k + 1}", frame(k), series="1.2.3.41", instance=1)
    order, notes = levels(untimed)
    assert order == [10 * k for k in range(12)] and "order of the file names" in notes


def test_jfif_frames_in_a_dicom_labelled_rgb_keep_their_grey_levels(tmp_path):
    """A JPEG stream is YCbCr (JFIF) while the header says RGB: the reader hands on YCbCr as RGB,
    and its 'luminance' pulled every grey level toward 128 (PS3.5 8.2.1 wants YBR_FULL_422)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    grey = _grey(n=2).astype(np.uint8)
    streams = []
    for f in grey:
        buf = io.BytesIO()
        Image.fromarray(np.repeat(f[..., None], 3, axis=2), "RGB").save(buf, format="JPEG", quality=95)
        streams.append(buf.getvalue())
    assert streams[0][6:11] == b"JFIF\0"
    path = _dicom(tmp_path / "jfif.dcm", grey)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    frames = np.asarray(load_sweep(path).frames, dtype=int)
    assert np.abs(frames - grey).max() <= 4  # JPEG's own loss only


@pytest.mark.parametrize("damage", ["bytes inserted", "fragment too long"])
def test_compressed_dicom_frames_whose_item_list_breaks_off_are_refused(tmp_path, damage):
    """20 bytes inserted inside a JPEG frame of a 7.8 KB file (its fragment's length no longer
    reaches the next item) made the image library take 3.5 GB of memory and 4 s, then say the
    pixels were of a kind it cannot decode. The items' headers are followed first."""
    from pydicom.uid import JPEGBaseline8Bit

    grey = _grey(n=3).astype(np.uint8)
    path = _dicom(tmp_path / "jpeg.dcm", grey)
    ds = pydicom.dcmread(path)
    streams = _jpeg_frames(ds, grey, JPEGBaseline8Bit, quality=95)
    ds.save_as(path, enforce_file_format=True)
    assert load_sweep(path).n_frames == 3
    raw = path.read_bytes()
    second = raw.index(streams[1])
    if damage == "bytes inserted":
        raw = raw[:second + 100] + bytes(range(20)) + raw[second + 100:]
    else:  # the last fragment's length says more than the file holds
        at = raw.index(streams[2]) - 4
        length = struct.unpack("<I", raw[at:at + 4])[0]
        raw = raw[:at] + struct.pack("<I", length + 10_000) + raw[at + 4:]
    path.write_bytes(raw)
    with pytest.raises(FetalIQAError, match="compressed frames are damaged .*Copy or export it again"):
        load_sweep(path)


@pytest.mark.parametrize("spacing", [b"0\\0 ", b"abc\\1 ", b"-0.28\\nan "])
def test_a_dicom_whose_pixel_spacing_is_no_length_opens_with_the_spacing_unknown(tmp_path, spacing):
    """The image reader refuses such a file whole, so it could not be opened at all, and neither
    --spacing nor the View menu could help; an .mha with the same spacing opened without mm."""
    arr = _grey().astype(np.uint8)
    placeholder = b"9" * (len(spacing) - 3) + b"\\1 "  # a valid value of the same length, then replaced
    path = _dicom(tmp_path / "bad_spacing.dcm", arr, PixelSpacing=placeholder.decode().strip().split("\\"))
    data = path.read_bytes()
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, spacing))
    sweep = load_sweep(path)
    assert np.array_equal(np.asarray(sweep.frames), arr)
    assert sweep.spacing_source == SPACING_NONE and "not a length" in sweep.spacing_problem
    assert sweep.with_spacing(0.28).spacing_plausible


def test_jpeg_frames_that_are_not_jpeg_are_refused_before_the_decoder_prints(tmp_path, capfd):
    """The JPEG decoder used to print 'Not a JPEG file' lines on stderr before the refusal."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    grey = _grey(n=2).astype(np.uint8)
    path = _dicom(tmp_path / "garbage.dcm", grey)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([bytes([0xBA, 0xBB]) + bytes(998)] * 2)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    capfd.readouterr()
    with pytest.raises(FetalIQAError, match="JPEG-compressed frames do not begin as JPEG data does"):
        load_sweep(path)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("kind,counted", [("rle", None), ("rle", 3), ("jpeg", 4), ("jpeg", 6), ("jpeg_nobot", 2)])
def test_compressed_frames_the_header_does_not_count_are_refused(tmp_path, kind, counted):
    """Compressed frames beyond Number of Frames (or without one) were left out without a word:
    6 RLE frames without the count read as 1 frame, 5 JPEG frames counted 4 as 4. Too high a count
    was 'could not be decoded'. With the right count the same file reads."""
    from pydicom.uid import JPEGBaseline8Bit, RLELossless

    grey = _grey(n=5).astype(np.uint8)
    path = _dicom(tmp_path / "frames.dcm", grey)
    ds = pydicom.dcmread(path)
    if kind == "rle":
        ds.compress(RLELossless)
    else:
        _jpeg_frames(ds, grey, JPEGBaseline8Bit, has_bot=kind == "jpeg", quality=95)
    if counted is None:
        del ds.NumberOfFrames
    else:
        ds.NumberOfFrames = counted
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FetalIQAError, match="holds 5 compressed frames but its header's Number of Frames"):
        load_sweep(path)
    ds.NumberOfFrames = 5
    ds.save_as(path, enforce_file_format=True)
    assert load_sweep(path).n_frames == 5


@pytest.mark.parametrize("codec", ["jpeg", "rle"])
def test_compressed_frames_indexed_by_an_extended_offset_table_are_read(tmp_path, codec):
    """A valid DICOM file whose compressed frames come with an Extended Offset Table (7FE0,0001)
    made the image reader fail with 'An invalid logic behavior occurred0', shown as 'the image
    header cannot be read ... The file is damaged'; then it was refused by name ("Export the file
    again uncompressed"). pydicom decodes the layout: the frames are read, all of them, in order."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate_extended, generate_fragmented_frames
    from pydicom.uid import JPEGBaseline8Bit, RLELossless

    grey = _grey(n=3).astype(np.uint8)
    path = _dicom(tmp_path / "frames.dcm", grey)
    ds = pydicom.dcmread(path)
    if codec == "jpeg":
        streams = []
        for frame in grey:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
            streams.append(buffer.getvalue())
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.compress(RLELossless)
        streams = [b"".join(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=3)]
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(streams)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    sweep = load_sweep(path)
    assert sweep.n_frames == 3
    error = np.abs(sweep.frames.astype(int) - grey.astype(int))
    if codec == "rle":
        assert error.max() == 0
    else:  # lossy, but each frame is its own (not a neighbour's, not blank)
        assert error.mean() < 3, error.mean()


def _jpeg12(frame: np.ndarray) -> bytes:
    """A 12-bit DCT JPEG stream (JPEG Extended, SOF1) of a frame made of flat 8 x 8 blocks: each
    block holds its DC coefficient alone (quantised by 1), so it decodes exactly. No installed
    writer makes 12-bit JPEG."""
    h, w = frame.shape
    seg = lambda marker, body: struct.pack(">HH", marker, len(body) + 2) + body  # noqa: E731
    out = b"\xff\xd8" + seg(0xFFDB, b"\x00" + b"\x01" * 64)
    out += seg(0xFFC1, struct.pack(">BHHB", 12, h, w, 1) + b"\x01\x11\x00")
    out += seg(0xFFC4, b"\x00" + bytes([0, 0, 0, 15, 1] + [0] * 11) + bytes(range(16)))  # DC: sizes 0-14 in 4 bits, 15 in 5
    out += seg(0xFFC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # AC: end of block alone, code 0
    out += seg(0xFFDA, b"\x01\x01\x00\x00\x3f\x00")
    codes = {s: (s, 4) for s in range(15)} | {15: (0b11110, 5)}
    bits, prev = [], 0
    for y in range(0, h, 8):
        for x in range(0, w, 8):
            dc = 8 * (int(frame[y, x]) - 2048)
            diff, prev = dc - prev, dc
            size = abs(diff).bit_length()
            code, n = codes[size]
            value = diff if diff >= 0 else diff + (1 << size) - 1
            bits += [(code >> (n - 1 - i)) & 1 for i in range(n)] + [(value >> (size - 1 - i)) & 1 for i in range(size)]
            bits.append(0)  # end of block
    bits += [1] * (-len(bits) % 8)
    data = bytearray()
    for i in range(0, len(bits), 8):
        data.append(int("".join(map(str, bits[i:i + 8])), 2))
        if data[-1] == 0xFF:
            data.append(0)
    return out + bytes(data) + b"\xff\xd9"


def test_a_12_bit_jpeg_dicom_reads_without_the_decoders_lines_on_the_terminal(tmp_path, capfd):
    """A JPEG Extended 12-bit file read right, but its decoder printed "Unsupported JPEG data
    precision 12" on stderr, several times for one good file (`score --json --quiet` too)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGExtended12Bit

    blocks = np.random.default_rng(1).integers(0, 4096, (3, 5, 6))
    stored = blocks.repeat(8, 1).repeat(8, 2).astype(np.uint16)
    plain = _dicom(tmp_path / "plain.dcm", stored, bits=16, BitsStored=12, HighBit=11)
    path = _dicom(tmp_path / "jpeg12.dcm", stored, bits=16, BitsStored=12, HighBit=11)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([_jpeg12(frame) for frame in stored])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    ds.save_as(path, enforce_file_format=True)
    capfd.readouterr()
    frames = np.asarray(load_sweep(path).frames)
    assert capfd.readouterr().err == ""
    assert np.array_equal(frames, np.asarray(load_sweep(plain).frames))


def _j2k(frame: np.ndarray) -> bytes:
    """A lossless JPEG 2000 codestream of an 8-bit frame (Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG2000", no_jp2=True, irreversible=False)
    return buffer.getvalue()


@pytest.mark.parametrize("layout", ["one frame", "frames with an offset table", "frames without one", "JPEG 2000"])
def test_compressed_frames_split_over_several_fragments_are_read(tmp_path, layout):
    """A valid layout (PS3.5 A.4: a frame may span several fragments) was refused: a JPEG frame in
    3 fragments as "pixels this reader cannot decode ... Export the sweep with 8- or 16-bit grey",
    for a file that was 8-bit grey; JPEG 2000 as "could not be decoded". They are read (through
    pydicom) as the same frames in one fragment each are."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    grey = _grey(n=1 if layout == "one frame" else 3).astype(np.uint8)
    if layout == "JPEG 2000":
        streams, syntax = [_j2k(frame) for frame in grey], JPEG2000Lossless
    else:
        path = _dicom(tmp_path / "streams.dcm", grey)
        streams, syntax = _jpeg_frames(pydicom.dcmread(path), grey, JPEGBaseline8Bit, quality=95), JPEGBaseline8Bit
    has_bot = layout != "frames without one"
    read = {}
    for pieces in (1, 3):
        path = _dicom(tmp_path / f"in{pieces}.dcm", grey if layout != "one frame" else grey[0])
        ds = pydicom.dcmread(path)
        ds.PixelData = encapsulate(streams, fragments_per_frame=pieces, has_bot=has_bot)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
        read[pieces] = np.asarray(load_sweep(path).frames, dtype=int)
    assert read[3].shape == grey.shape
    assert np.abs(read[3] - read[1]).max() <= 1  # (two JPEG decoders may round a level apart)
    assert np.abs(read[3] - grey).max() <= (0 if layout == "JPEG 2000" else 6)


def test_fragmented_frames_no_decoder_reads_are_named_with_what_to_do(tmp_path, monkeypatch):
    """Where no installed decoder reads frames split over fragments, the line said "Export the
    sweep with 8- or 16-bit grey or RGB pixels" to a file that was 8-bit grey: it names the layout."""
    import pydicom.pixels
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    def no_decoder(*args, **kwargs):
        raise NotImplementedError("no decoder for this transfer syntax")

    monkeypatch.setattr(pydicom.pixels, "iter_pixels", no_decoder)
    grey = _grey(n=2).astype(np.uint8)
    path = _dicom(tmp_path / "split.dcm", grey)
    ds = pydicom.dcmread(path)
    streams = _jpeg_frames(ds, grey, JPEGBaseline8Bit, quality=95)
    ds.PixelData = encapsulate(streams, fragments_per_frame=3)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FetalIQAError) as err:
        load_sweep(path)
    said = str(err.value)
    assert "split over several fragments each (6 fragments for 2 frame(s))" in said
    assert "uncompressed, or with each frame in one fragment" in said and "16-bit grey" not in said


@pytest.mark.parametrize("bits,intercept", [(12, 2048), (16, 32768)])
def test_signed_pixels_with_a_rescale_intercept_are_read_as_the_same_unsigned_ones(tmp_path, bits, intercept):
    """Signed 12-bit pixels with Rescale Intercept 2048 (values 0-4095) and signed 16-bit ones with
    32768 are valid, and pydicom decodes them exactly; the image reader's "Pixel type larger than
    output type" made them "damaged or not an image; export it again". They read as the same
    image stored unsigned does."""
    scale = 16 if bits == 12 else 256
    values = (_grey() * scale).astype(np.int64)
    unsigned = _dicom(tmp_path / "unsigned.dcm", values, bits=16, BitsStored=bits, HighBit=bits - 1)
    signed = _dicom(tmp_path / "signed.dcm", values - intercept, bits=16, signed=True, BitsStored=bits,
                    HighBit=bits - 1, RescaleIntercept=intercept, RescaleSlope=1)
    want = np.asarray(load_sweep(unsigned).frames)
    assert np.array_equal(np.asarray(load_sweep(signed).frames), want)
    # a VOI window applies to the rescaled values, as in any file
    windowed = _dicom(tmp_path / "windowed.dcm", values - intercept, bits=16, signed=True, BitsStored=bits,
                      HighBit=bits - 1, RescaleIntercept=intercept, RescaleSlope=1,
                      WindowCenter=125 * scale, WindowWidth=100 * scale)
    frames = np.asarray(load_sweep(windowed).frames)
    assert frames[0, 20, 0] == 0 and frames[0, 20, -1] == 255 and 0 < frames[0, 20, 24] < 255


@pytest.mark.parametrize("offset,refused", [("150 90 2", True), ("0 0 2", True), ("0 0 0", False)])
def test_a_slicer_segmentation_cropped_to_its_extent_is_refused(tmp_path, offset, refused):
    """3D Slicer saves a .seg.nrrd cropped to its segment and says where it starts in the image
    it was drawn on: read as it was, a mask drawn on frame 2 was measured as frame 0."""
    from fetaliqa_core.io import load_mask

    mask = np.zeros((1, 40, 48), np.uint8)
    mask[0, 10:30, 12:36] = 1
    path = _nrrd(tmp_path / "abdomen.seg.nrrd", mask, f"Segment0_LabelValue:=1\n"
                 f"Segmentation_ReferenceImageExtentOffset:={offset}")
    if refused:
        with pytest.raises(FetalIQAError, match="3D Slicer segmentation cropped.*Export to labelmap"):
            load_mask(path)
    else:
        assert np.array_equal(load_mask(path), mask)


def test_a_dicom_segmentation_object_is_named_not_read_as_a_mask(tmp_path):
    """A DICOM Segmentation stores only the annotated frames, each pointing at a sweep frame: a
    valid one was called damaged in the image library's words, or its one frame measured as frame 0."""
    from fetaliqa_core.io import load_mask

    mask = np.zeros((1, 40, 48), np.uint8)
    mask[0, 10:30, 12:36] = 1
    path = us_dicom(tmp_path / "seg.dcm", mask, sop="1.2.840.10008.5.1.4.1.1.66.4", Modality="SEG")
    with pytest.raises(FetalIQAError, match="DICOM Segmentation object.*label image"):
        load_mask(path)
    plain = us_dicom(tmp_path / "mask.dcm", mask)
    assert np.array_equal(load_mask(plain), mask)


def test_frames_compressed_otherwise_than_labelled_are_named(tmp_path):
    """A JPEG stream labelled JPEG-LS: the decoder's "Failed to change to Implicit Transfer Syntax"
    was passed on as 'truncated or damaged'. The compression the header claims is named."""
    from pydicom.uid import JPEGLSLossless

    grey = _grey(n=2).astype(np.uint8)
    path = _dicom(tmp_path / "mislabelled.dcm", grey)
    ds = pydicom.dcmread(path)
    _jpeg_frames(ds, grey, JPEGLSLossless)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FetalIQAError, match=r"compressed as JPEG-LS.*could not be decoded"):
        load_sweep(path)


def test_frames_far_narrower_than_ultrasound_are_noted(tmp_path):
    """numpy's (N, H, W) handed to a NIfTI writer as (x, y, z) reads as H frames of W x N pixels:
    a stack of 40 frames of 200 x 300 became 300 frames of 200 x 40, scored without a word."""
    rng = np.random.default_rng(0)
    fine = _nrrd(tmp_path / "fine.nrrd", rng.integers(0, 255, (10, 60, 80)), "")
    assert load_sweep(fine).read_notes == ()
    strips = _nrrd(tmp_path / "strips.nrrd", rng.integers(0, 255, (12, 200, 40)), "")
    sweep = load_sweep(strips)
    assert sweep.frames.shape == (12, 200, 40)
    assert any("200 x 40" in n and "far narrower than ultrasound" in n for n in sweep.read_notes)
    # frames of 200 x 40 pixels of 0.1 x 0.6 mm are 20 x 24 mm: judged in mm, nothing is said
    image = sitk.GetImageFromArray(rng.integers(0, 255, (12, 200, 40)).astype(np.uint8))
    image.SetSpacing((0.6, 0.1, 1.0))
    sitk.WriteImage(image, str(tmp_path / "wide_pixels.mha"))
    assert load_sweep(tmp_path / "wide_pixels.mha").read_notes == ()


def test_signed_padding_in_an_implicit_vr_file_is_read_as_signed(tmp_path):
    """Without Pixel Representation pydicom read -2000 as 63536 in implicit VR: the padding was
    missed and the image washed out."""
    from pydicom.uid import ImplicitVRLittleEndian

    img = (_grey(w=72) * 10).astype(np.int16)
    img[:, :, 34:] = -2000
    explicit = _dicom(tmp_path / "explicit.dcm", img, bits=16, signed=True, PixelPaddingValue=-2000)
    ds = pydicom.dcmread(explicit)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = tmp_path / "implicit.dcm"
    ds.save_as(implicit, enforce_file_format=True)
    a, b = np.asarray(load_sweep(explicit).frames), np.asarray(load_sweep(implicit).frames)
    assert np.array_equal(a, b) and (a[:, :, 34:] == 0).all() and a[:, 10:, 8:34].min() < 60  # not washed out


def test_one_grey_level_on_a_black_ground_is_an_image_not_padding(tmp_path):
    arr = np.zeros((3, 40, 48), np.uint16)
    arr[:, 10:30, 10:38] = 1000  # a phantom: one level inside, black outside
    path = tmp_path / "phantom.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    frames = np.asarray(load_sweep(path).frames)
    assert frames[0, 20, 20] == 255 and frames[0, 0, 0] == 0


def test_the_fallback_reader_inverts_monochrome1_as_the_image_reader_does(tmp_path):
    arr = _grey().astype(np.uint8)
    good = _dicom(tmp_path / "m1.dcm", arr, PhotometricInterpretation="MONOCHROME1")
    placeholder = b"9\\1 "
    bad = _dicom(tmp_path / "m1_bad.dcm", arr, PhotometricInterpretation="MONOCHROME1", PixelSpacing=["9", "1"])
    data = bad.read_bytes()
    bad.write_bytes(data.replace(placeholder, b"0\\0 "))
    a, b = np.asarray(load_sweep(good).frames), np.asarray(load_sweep(bad).frames)
    assert np.array_equal(a, 255 - arr) and np.array_equal(a, b)


def test_file_names_with_digits_that_are_not_decimal_still_sort(tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    for k, name in enumerate(["img1", "img2\u00b2", "img10"]):
        _dicom(folder / name, _grey(n=1)[0], series="1.2.3.11")
    assert load_sweep(folder).n_frames == 3


def test_extreme_float_values_count_only_real_holes_and_warn_nothing(tmp_path, recwarn):
    """Values near float32's limit overflowed while scaled: counted as pixels without a number,
    with numpy's warnings on stderr."""
    arr = np.zeros((2, 40, 48), np.float32)
    arr[:, :20] = 3e38
    arr[:, 20:] = -3e38
    arr[0, 0, 0] = np.nan
    path = tmp_path / "extreme.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    sweep = load_sweep(path)
    frames = np.asarray(sweep.frames)
    assert frames[1, 30, 30] == 0 and frames[1, 5, 5] == 255
    assert [n.split(" ")[0] for n in sweep.read_notes if "percentiles" not in n] == ["1"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_pixel_data_longer_than_the_header_says_is_refused(tmp_path):
    """A header counting fewer frames than the file holds was read short without a word: a DICOM
    without Number of Frames gave 1 frame of 24, a NIfTI or NRRD whose header says 12 gave 12."""
    import pydicom

    arr = _grey(n=6)
    dcm = us_dicom(tmp_path / "no_count.dcm", arr)
    ds = pydicom.dcmread(dcm)
    del ds.NumberOfFrames
    ds.save_as(str(dcm))
    with pytest.raises(FetalIQAError, match=r"Number of Frames is missing\); the data hold 6 frames"):
        load_sweep(dcm)
    ds.NumberOfFrames = 3
    ds.save_as(str(dcm))
    with pytest.raises(FetalIQAError, match=r"more than the .* its header describes \(3 frame"):
        load_sweep(dcm)
    ds.NumberOfFrames = 6
    ds.save_as(str(dcm))
    assert load_sweep(dcm).n_frames == 6
    bare = us_dicom(tmp_path / "bare.dcm", arr, preamble=False)  # no preamble: checked all the same
    ds = pydicom.dcmread(bare, force=True)
    del ds.NumberOfFrames
    ds.save_as(str(bare), enforce_file_format=False)
    with pytest.raises(FetalIQAError, match=r"the data hold 6 frames"):
        load_sweep(bare)
    for name, encoding in (("raw.nrrd", "raw"), ("gz.nrrd", "gzip")):
        path = _nrrd(tmp_path / name, arr, "kinds: domain domain domain", encoding)
        assert load_sweep(path).n_frames == 6
        text = path.read_bytes().replace(b"sizes: 48 40 6", b"sizes: 48 40 3")
        path.write_bytes(text)
        with pytest.raises(FetalIQAError, match="more than the 5760 its header describes"):
            load_sweep(path)
    nii = tmp_path / "x.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr.astype(np.uint8)), str(nii))
    assert load_sweep(nii).n_frames == 6
    nii.write_bytes(nii.read_bytes() + bytes(arr[:2].astype(np.uint8).tobytes()))
    with pytest.raises(FetalIQAError, match="more than the 11520 its header describes"):
        load_sweep(nii)


@pytest.mark.parametrize("short", ["column", "row"])
def test_a_header_a_column_or_row_short_is_refused_not_read_askew(tmp_path, short):
    """A header one column (or row) smaller than the stored pixels was read with every row shifted
    one pixel further than the last (sheared frames) by the NRRD, NIfTI and DICOM readers: less
    than a frame more than the header describes was let pass. A DICOM's one byte padding an odd
    length to an even one is no more data."""
    import pydicom

    arr = _grey(n=3, h=40, w=48).astype(np.uint8)
    h, w = (40, 47) if short == "column" else (39, 48)
    for name, encoding in (("raw.nrrd", "raw"), ("gz.nrrd", "gzip")):
        path = _nrrd(tmp_path / name, arr, "kinds: domain domain domain", encoding)
        assert load_sweep(path).n_frames == 3
        path.write_bytes(path.read_bytes().replace(b"sizes: 48 40 3", f"sizes: {w} {h} 3".encode()))
        with pytest.raises(FetalIQAError, match=f"5760 bytes .* more than the {w * h * 3} .* read askew"):
            load_sweep(path)
    for name in ("x.nii", "x.nii.gz"):
        nii = tmp_path / name
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(nii))
        assert load_sweep(nii).n_frames == 3
        head = bytearray(gzip.decompress(nii.read_bytes()) if name.endswith(".gz") else nii.read_bytes())
        struct.pack_into("<hh", head, 42, w, h)  # dim[1], dim[2]
        nii.write_bytes(gzip.compress(bytes(head)) if name.endswith(".gz") else bytes(head))
        with pytest.raises(FetalIQAError, match=f"5760 bytes .* more than the {w * h * 3} .* read askew"):
            load_sweep(nii)
    dcm = us_dicom(tmp_path / "x.dcm", arr)
    assert load_sweep(dcm).n_frames == 3
    ds = pydicom.dcmread(dcm)
    ds.Rows, ds.Columns = h, w
    ds.save_as(str(dcm))
    with pytest.raises(FetalIQAError, match=f"5760 bytes .* more than the {w * h * 3} .* read askew"):
        load_sweep(dcm)
    odd = us_dicom(tmp_path / "odd.dcm", _grey(n=1, h=39, w=47).astype(np.uint8))  # 1833 bytes, padded to 1834
    assert pydicom.dcmread(odd).get_item("PixelData").length == 1834
    assert load_sweep(odd).n_frames == 1


@pytest.mark.parametrize("count", ["inf", "+", "4.5"])
def test_a_number_of_frames_that_is_no_whole_number_is_refused(tmp_path, count):
    """Number of Frames 'inf' or '+' could not be read as a count: every size check was skipped
    and a 4-frame file was read as its first frame, calibrated, without a word."""
    dcm = us_dicom(tmp_path / "x.dcm", _grey(n=4).astype(np.uint8))
    raw = dcm.read_bytes()
    at = raw.find(b"\x28\x00\x08\x00IS")  # (0028,0008) IS, explicit VR little endian
    assert at > 0
    length = struct.unpack("<H", raw[at + 6:at + 8])[0]
    value = count.encode() + b" " * (len(count) % 2)
    dcm.write_bytes(raw[:at + 6] + struct.pack("<H", len(value)) + value + raw[at + 8 + length:])
    with pytest.raises(FetalIQAError, match=f"Number of Frames is '{re.escape(count)}', not a whole number"):
        load_sweep(dcm)


def test_a_picture_s_print_resolution_is_no_pixel_size(tmp_path):
    """A TIFF's 96 dpi read as 0.26 mm per pixel from the 'file header': an AC in mm from a
    printing resolution."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    tif = tmp_path / "stack.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:], dpi=(96, 96))
    sweep = load_sweep(tif)
    assert sweep.n_frames == 3 and sweep.spacing_source == SPACING_NONE
    assert "printing resolution" in sweep.spacing_problem
    # the same bytes under another name: the image reader opens a TIFF by its content, and its 96 dpi
    # was read as 0.26 mm from the "file header" (an AC and a GA in mm)
    for name in ("stack.dat", "stack", "stack.tif.orig"):
        other = tmp_path / name
        other.write_bytes(tif.read_bytes())
        sweep = load_sweep(other)
        assert sweep.spacing_source == SPACING_NONE and "TIFF picture" in sweep.spacing_problem, name


def test_a_damaged_tiff_is_called_a_damaged_tiff(tmp_path):
    """A TIFF the image library could not open read "not a readable image file (no supported image
    header found)", naming formats without TIFF, after the picture library's own warnings."""
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\xff\xff\xff\x7f" + bytes(range(256)) * 4)
    with pytest.raises(FetalIQAError, match="a TIFF file whose contents cannot be read: it is damaged"):
        load_sweep(bad)


def test_a_damaged_tiff_says_one_line_not_the_tiff_librarys_too(tmp_path, capfd):
    """The TIFF library inside the image readers wrote its own complaints to stderr, from C code
    ("TIFFReadDirectoryCheckOrder: Warning, Invalid TIFF directory; ..."), before the one line that
    says what to do. Other text written to stderr meanwhile still gets through."""
    import os
    import struct

    from fetaliqa_core.io._common import quiet_native_stderr

    # tags out of order and no ImageLength: the TIFF library warns about both
    tags = [(259, 3, 1, 1), (256, 3, 1, 16), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 90), (279, 4, 1, 256)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(256))
    with pytest.raises(FetalIQAError, match="TIFF file whose contents cannot be read"):
        load_sweep(bad)
    err = capfd.readouterr().err
    assert "TIFF" not in err and "Warning" not in err, err
    others = [b"another thread's message", b"FileNotFoundError: [Errno 2] No such file or directory: '/data/case.mha'",
              b"ValueError: the strip of frames is empty", b"UserWarning: field 'x' is deprecated",
              b"fetaliqa: case.mha: the field of view is unknown"]
    with quiet_native_stderr():
        os.write(2, b"TIFFFetchNormalTag: Warning, ASCII value for tag is not NUL-terminated.\n")
        os.write(2, b"LZWDecode: Not enough data at scanline 3 (short 12 bytes).\n")
        os.write(2, b"\n".join(others) + b"\n")
    err = capfd.readouterr().err
    assert all(line.decode() in err for line in others) and "TIFFFetch" not in err and "LZWDecode" not in err


def test_a_damaged_png_says_one_line_not_the_png_librarys_too(tmp_path, capfd):
    """The PNG library inside the image reader wrote its own lines to stderr ("libpng error: IHDR:
    CRC error", "libpng error: Read Error") before the one line that says the file is damaged."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(_grey(n=1)[0].astype(np.uint8)).save(good)
    raw = good.read_bytes()
    crc = tmp_path / "crc.png"
    crc.write_bytes(raw[:29] + bytes([raw[29] ^ 0xFF]) + raw[30:])  # the header chunk's checksum
    cut = tmp_path / "cut.png"
    cut.write_bytes(raw[:16])
    for path in (crc, cut):
        with pytest.raises(FetalIQAError, match="damaged"):
            load_sweep(path)
        err = capfd.readouterr().err
        assert "libpng" not in err, err
    assert load_sweep(good).frames.shape[0] == 1


def test_a_nifti_orientation_that_is_no_number_prints_no_matrix_dump(tmp_path, capfd):
    """A NIfTI whose sform held a NaN read fine, but ITK's linear algebra printed its matrix dump
    ("vnl_svd.hxx: suspicious return value ... M = [ ... nan ...") on the terminal of `score`,
    three times."""
    nii = tmp_path / "nan_sform.nii"
    image = sitk.GetImageFromArray(_grey(n=3).astype(np.uint8))
    image.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(image, str(nii))
    raw = bytearray(nii.read_bytes())
    struct.pack_into("<f", raw, 304, float("nan"))  # srow_y[2]
    nii.write_bytes(bytes(raw))
    capfd.readouterr()
    sweep = load_sweep(nii)
    assert sweep.n_frames == 3 and sweep.spacing_mm == pytest.approx((0.3, 0.3))
    err = capfd.readouterr().err
    assert "vnl" not in err and "nan" not in err and "M = [" not in err, err


def test_a_damaged_jpeg_read_all_the_same_says_so_in_a_note_not_on_stdout(tmp_path, capfd):
    """The JPEG library's "Corrupt JPEG data: 20 extraneous bytes before marker 0xd9" went to
    stdout, among `score`'s lines (and into the line of `score --json`), and the reading said
    nothing of it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_grey(n=1)[0].astype(np.uint8)).save(buffer, format="JPEG")
    fine = tmp_path / "fine.jpg"
    fine.write_bytes(buffer.getvalue())
    capfd.readouterr()
    assert load_sweep(fine).read_notes == ()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(buffer.getvalue()[:-2] + bytes(range(1, 21)) + buffer.getvalue()[-2:])  # before its end marker
    sweep = load_sweep(bad)
    out, err = capfd.readouterr()
    assert "Corrupt" not in out and "Corrupt" not in err, (out, err)
    assert sweep.n_frames == 1 and any("the JPEG's data is damaged in places" in n for n in sweep.read_notes)


def test_stderr_is_caught_only_while_a_tiff_is_read(tmp_path, monkeypatch):
    """Catching the process's stderr holds every thread's output back (a progress bar among it)
    and reads files one at a time: only the TIFF library needs it, so other files do not."""
    from contextlib import contextmanager

    import fetaliqa_core.io._common as common
    from fetaliqa_core.io import write_volume

    entered = []
    real = common.quiet_native_stderr

    @contextmanager
    def spy(**kwargs):
        entered.append(1)
        with real(**kwargs):
            yield

    monkeypatch.setattr(common, "quiet_native_stderr", spy)
    write_volume(tmp_path / "s.mha", np.zeros((2, 40, 48), np.uint8))
    load_sweep(tmp_path / "s.mha")
    assert not entered
    from PIL import Image

    Image.fromarray(np.zeros((40, 48), np.uint8)).save(tmp_path / "s.tif")
    load_sweep(tmp_path / "s.tif")
    assert entered


def _tiff_ifd_offsets(raw: bytes) -> list[tuple[int, int]]:
    """(offset of each directory, position of its 'next directory' pointer) of a little-endian TIFF."""
    import struct

    out, offset = [], struct.unpack("<I", raw[4:8])[0]
    while offset:
        count = struct.unpack("<H", raw[offset:offset + 2])[0]
        at = offset + 2 + 12 * count
        out.append((offset, at))
        offset = struct.unpack("<I", raw[at:at + 4])[0]
    return out


def test_a_tiff_whose_pages_loop_back_is_refused_not_read_forever(tmp_path):
    """A TIFF whose last directory points back at its first made the image library loop forever in
    its C code: `score` and the window hung, and neither Ctrl-C nor SIGTERM stopped them."""
    import struct

    from PIL import Image

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    tif = tmp_path / "loop.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    raw = bytearray(tif.read_bytes())
    ifds = _tiff_ifd_offsets(bytes(raw))
    assert len(ifds) == 3
    raw[ifds[-1][1]:ifds[-1][1] + 4] = struct.pack("<I", ifds[0][0])
    tif.write_bytes(bytes(raw))
    with pytest.raises(FetalIQAError, match="loops back on itself"):
        load_sweep(tif)


def _imagej_tiff(tif, n=4):
    """A 4-page TIFF as Fiji saves a stack whose scale is set (images=4, unit=mm)."""
    from PIL import Image, TiffImagePlugin

    frames = [Image.fromarray(f) for f in _grey(n=n).astype(np.uint8)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = f"ImageJ=1.54f\nimages={n}\nslices={n}\nunit=mm\nloop=false\n".encode()
    info[282], info[283], info[296] = 4.0, 4.0, 1
    frames[0].save(tif, save_all=True, append_images=frames[1:], tiffinfo=info)
    return tif.read_bytes()


@pytest.mark.parametrize("cut", [0.5, 0.75, "in the last page"])
def test_a_tiff_cut_short_is_refused_not_read_as_fewer_frames(tmp_path, cut):
    """An interrupted copy of a 4-page TIFF cut to half its bytes was scored as "2/2 frames", and an
    ImageJ stack so cut kept its calibration: the image library reads the pages it reaches."""
    import struct

    raw = _imagej_tiff(tmp_path / "whole.tif")
    assert load_sweep(tmp_path / "whole.tif").n_frames == 4
    if cut == "in the last page":
        last = _tiff_ifd_offsets(raw)[-1][0]
        count = struct.unpack("<H", raw[last:last + 2])[0]
        entries = [struct.unpack("<HHII", raw[last + 2 + 12 * k:last + 14 + 12 * k]) for k in range(count)]
        strip = next(e[3] for e in entries if e[0] == 273)
        keep = strip + 100  # the directory whole, its pixels not
    else:
        keep = int(len(raw) * cut)
    tif = tmp_path / "cut.tif"
    tif.write_bytes(raw[:keep])
    with pytest.raises(FetalIQAError, match="TIFF file whose contents cannot be read: it is damaged or cut short"):
        load_sweep(tif)


@pytest.mark.parametrize("where,to", [("last", 16), ("first", 3), ("last", 8 + 2 + 12 * 3)])
def test_a_tiff_whose_page_list_points_into_a_page_is_refused(tmp_path, where, to):
    """A page's link to the next pointing into the middle of a directory made pages of the wrong
    bytes: a 4-page TIFF read as 6 frames (two copies of the last), an ImageJ stack whose first link
    was damaged read as 1 calibrated frame."""
    import struct

    raw = bytearray(_imagej_tiff(tmp_path / "s.tif"))
    ifds = _tiff_ifd_offsets(bytes(raw))
    at = ifds[-1 if where == "last" else 0][1]
    raw[at:at + 4] = struct.pack("<I", to)
    tif = tmp_path / "linked.tif"
    tif.write_bytes(bytes(raw))
    with pytest.raises(FetalIQAError, match="TIFF file whose contents cannot be read: it is damaged or cut short"):
        load_sweep(tif)


@pytest.mark.parametrize("to", [0, 4])
def test_a_tiff_whose_pixels_are_placed_in_its_header_is_refused(tmp_path, to):
    """Every page's strips placed at the start of the file (a damaged StripOffsets field) read as
    identical frames made of the header's bytes, without a word."""
    import struct

    from PIL import Image

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    tif = tmp_path / "s.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    raw = bytearray(tif.read_bytes())
    for ifd, _ in _tiff_ifd_offsets(bytes(raw)):
        for k in range(struct.unpack("<H", raw[ifd:ifd + 2])[0]):
            at = ifd + 2 + 12 * k
            tag, kind, count = struct.unpack("<HHI", raw[at:at + 8])
            if tag == 273:  # StripOffsets: one inline value, or a list elsewhere
                size = {3: 2, 4: 4}[kind]
                where = at + 8 if count * size <= 4 else struct.unpack("<I", raw[at + 8:at + 12])[0]
                raw[where:where + count * size] = struct.pack("<" + "HI"[size // 4] * count, *[to] * count)
    bad = tmp_path / "placed.tif"
    bad.write_bytes(bytes(raw))
    with pytest.raises(FetalIQAError, match="TIFF file whose contents cannot be read: it is damaged or cut short"):
        load_sweep(bad)


@pytest.mark.parametrize("unit,per_unit,expected", [
    ("mm", (5.0, 4.0), (0.25, 0.2)), ("micron", (0.005, 0.005), (0.2, 0.2)), ("\\u00B5m", (0.004, 0.004), (0.25, 0.25)),
    ("\u00b5m", (0.004, 0.004), (0.25, 0.25)),  # raw UTF-8, as writers that copy ImageJ's format put it
    ("millimetres", (4.0, 4.0), (0.25, 0.25)), ("nm", (4e-6, 5e-6), (0.2, 0.25)),  # (was "not a length")
    ("pixel", (1.0, 1.0), None), ("furlong", (5.0, 5.0), "'furlong'"),
    ("inch", (72.0, 72.0), "printing resolution"), ("cm", (40.0, 40.0), "printing resolution"),
    ("m", (4000.0, 4000.0), "'m', a length no ultrasound pixel is measured in here")])
def test_a_tiff_scaled_in_imagej_keeps_its_calibration(tmp_path, unit, per_unit, expected):
    """Fiji's Set Scale writes "unit=mm" in the ImageDescription and pixels per mm in X/YResolution: a
    calibration someone made, which was refused as a printing resolution. ImageJ's own "pixel" (no
    scale set), a unit that is no length, and inches or centimetres (ImageJ's scale for a picture's
    dots per inch: 72 dpi read 0.35 mm) stay unknown, saying why."""
    from PIL import Image, TiffImagePlugin

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = f"ImageJ=1.54f\nimages=3\nslices=3\nunit={unit}\nspacing=1.0\nloop=false\n".encode()  # (bytes: as written)
    info[282], info[283], info[296] = per_unit[0], per_unit[1], 1
    tif = tmp_path / "fiji.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:], tiffinfo=info)
    sweep = load_sweep(tif)
    assert sweep.n_frames == 3
    if isinstance(expected, tuple):
        assert sweep.spacing_mm == pytest.approx(expected) and sweep.spacing_source == SPACING_FROM_IMAGEJ
    else:
        assert sweep.spacing_source == SPACING_NONE
        assert expected in sweep.spacing_problem if expected else "printing resolution" in sweep.spacing_problem


def _plain_tiff(path, frames, photometric=1, depth=None, mask=False, compression=1, dtype=np.uint8):
    """An uncompressed little-endian 8-bit TIFF, one page per frame, or all frames on one page with
    SGI's ImageDepth (tag 32997) as tifffile writes a volume; white is 0 where ``photometric`` is 0.
    ``compression``: the code written in its Compression tag (the pixels stay as they are);
    ``dtype``: its samples' type (a float one is written with SampleFormat 3)."""
    import struct

    n, h, w = frames.shape
    pages = [frames.reshape(1, n * h, w)[0]] if depth else list(frames)
    out = bytearray(b"II*\x00" + struct.pack("<I", 0))
    link = 4
    for page in pages:
        data = (255 - page if photometric == 0 and not mask else page).astype(dtype).tobytes()
        at = len(out)
        out += data
        tags = [(256, 3, w), (257, 3, h), (258, 3, 8 * np.dtype(dtype).itemsize), (259, 3, compression),
                (262, 3, photometric), (273, 4, at), (277, 3, 1), (278, 3, h * (n if depth else 1)),
                (279, 4, len(data))]
        if np.dtype(dtype).kind == "f":
            tags.append((339, 3, 3))
        if depth:
            tags.append((32997, 4, n))
        if len(out) % 2:
            out += b"\x00"
        struct.pack_into("<I", out, link, len(out))
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        link = len(out)
        out += struct.pack("<I", 0)
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize("compression,dtype,named", [
    (50000, np.uint8, "compressed with Zstandard .*LZW or deflate"),
    (34925, np.uint8, "compressed with LZMA .*LZW or deflate"),
    (1, np.float64, "64-bit floating-point numbers.*32-bit float or as 8- or 16-bit integers")])
def test_a_tiff_compressed_or_stored_in_a_way_not_decoded_says_which(tmp_path, compression, dtype, named):
    """A TIFF compressed with Zstandard or LZMA was "truncated or damaged; copy or export it
    again" ("TIFF CODEC 50000 is not supported"), and one of 64-bit floats "damaged or not an
    image": copying cannot help. The line names the compression or the sample type, and what to
    save instead."""
    grey = _grey(n=2).astype(np.uint8)
    assert load_sweep(_plain_tiff(tmp_path / "plain.tif", grey)).n_frames == 2
    with pytest.raises(FetalIQAError, match=named) as err:
        load_sweep(_plain_tiff(tmp_path / "odd.tif", grey, compression=compression, dtype=dtype))
    assert "damaged" not in str(err.value)


def test_a_tiff_storing_white_as_zero_is_read_the_right_way_round(tmp_path):
    """A MinIsWhite TIFF (PhotometricInterpretation 0) was read as stored: the sweep's negative,
    its black fan white, and `score` chose no frame where the same TIFF stored MinIsBlack chose one.
    It reads as picture viewers show it, with a note; a mask's labels are never inverted."""
    from fetaliqa_core.io import load_mask

    grey = _grey(n=3).astype(np.uint8)
    plain = load_sweep(_plain_tiff(tmp_path / "plain.tif", grey))
    white = load_sweep(_plain_tiff(tmp_path / "white.tif", grey, photometric=0))
    assert np.array_equal(np.asarray(white.frames), np.asarray(plain.frames))
    assert any("MinIsWhite" in note for note in white.read_notes)
    labels = np.zeros_like(grey)
    labels[:, 10:20, 10:30] = 1
    mask = load_mask(_plain_tiff(tmp_path / "mask.tif", labels, photometric=0, mask=True))
    assert np.array_equal(np.asarray(mask), labels)


def test_a_volumetric_tiff_is_refused_not_read_as_its_first_frame(tmp_path):
    """tifffile's ``volumetric=True`` puts every frame on one page (ImageDepth): the image library
    read the first frame alone and a 3-frame sweep was scored as one without a word."""
    with pytest.raises(FetalIQAError, match="volumetric TIFF: its page holds 3 frames"):
        load_sweep(_plain_tiff(tmp_path / "volume.tif", _grey(n=3).astype(np.uint8), depth=True))


def test_an_imagej_stack_on_one_page_is_refused_not_read_as_one_frame(tmp_path):
    """ImageJ writes a large stack as one page followed by the other frames ("images=3"): the image
    library read its first frame alone, and a 3-frame sweep was scored as one without a word."""
    from PIL import Image, TiffImagePlugin

    frames = _grey(n=3).astype(np.uint8)
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = "ImageJ=1.54f\nimages=3\nslices=3\nunit=mm\nloop=false\n".encode()
    tif = tmp_path / "stack.tif"
    Image.fromarray(frames[0]).save(tif, tiffinfo=info)
    tif.write_bytes(tif.read_bytes() + frames[1:].tobytes())
    with pytest.raises(FetalIQAError, match="stack of 3 images as 1 page"):
        load_sweep(tif)


@pytest.mark.parametrize("desc,pages,match", [
    ("images=12\nchannels=3\nframes=4\nhyperstack=true\nmode=composite\n", 12, "hyperstack of 3 channels"),
    ("images=4\nframes=6\n", 4, "holds 4 page.*counts 6"),
    ("images=4\nslices=2\nframes=3\nhyperstack=true\n", 4, "2 slices at each of 3 time points"),
    ("images=8\nslices=2\nframes=4\nhyperstack=true\n", 8, "2 slices at each of 4 time points"),
    ("images=4\nslices=4\n", 4, None),
    ("images=4\nframes=4\n", 4, None)])
def test_an_imagej_hyperstack_of_channels_is_refused_not_read_as_frames(tmp_path, desc, pages, match):
    """A composite of 4 time points in 3 channels keeps each channel on a page of its own: it was
    scored as 12 frames, with ImageJ's calibration shown; slices at several time points were read
    interleaved as one sweep. Counts that do not give the pages are a description that does not
    fit the file."""
    from PIL import Image, TiffImagePlugin

    frames = [Image.fromarray(f) for f in _grey(n=pages).astype(np.uint8)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = f"ImageJ=1.54f\n{desc}unit=mm\nloop=false\n"
    info[282], info[283], info[296] = 4.0, 4.0, 1
    tif = tmp_path / "hyper.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:], tiffinfo=info)
    if match is None:
        assert load_sweep(tif).n_frames == pages
    else:
        with pytest.raises(FetalIQAError, match=match):
            load_sweep(tif)


@pytest.mark.parametrize("yunit,expected", [("cm", (2.5, 0.25)), ("mm", (0.25, 0.25)), ("sec", "rows in 'sec'")])
def test_an_imagej_scale_with_its_rows_in_another_unit(tmp_path, yunit, expected):
    """ImageJ writes ``yunit=`` when the rows are measured in another unit than the columns: it
    was ignored, and rows in cm read 10 times too small, shown as ImageJ's calibration."""
    from PIL import Image, TiffImagePlugin

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = f"ImageJ=1.54f\nimages=3\nframes=3\nunit=mm\nyunit={yunit}\nloop=false\n"
    info[282], info[283], info[296] = 4.0, 4.0, 1
    tif = tmp_path / "yunit.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:], tiffinfo=info)
    sweep = load_sweep(tif)
    if isinstance(expected, tuple):
        assert sweep.spacing_mm == pytest.approx(expected) and sweep.spacing_source == SPACING_FROM_IMAGEJ
    else:
        assert sweep.spacing_source == SPACING_NONE and expected in sweep.spacing_problem


def test_nrrd_in_inches_and_a_frame_axis_marked_as_a_list(tmp_path):
    arr = _grey().astype(np.uint8)
    inches = _nrrd(tmp_path / "in.nrrd", arr, 'spacings: 0.01 0.01 1\nunits: "in" "in" ""')
    assert load_sweep(inches).spacing_mm == pytest.approx((0.254, 0.254))
    listed = _nrrd(tmp_path / "list.nrrd", arr, "kinds: domain domain list")
    with pytest.raises(FetalIQAError, match="marks an axis of 4 as 'list'.*Save the sweep as .mha"):
        load_sweep(listed)


def test_a_folder_of_dicom_cines_is_a_folder_of_sweeps(tmp_path):
    """An ultrasound system exports one multi-frame DICOM file a sweep: a folder of them was
    refused as 'several DICOM series, 1 file each'; loose ones beside .mha sweeps were left out."""
    from fetaliqa_core.cli.score import left_out_note, sweep_folder_members
    from fetaliqa_core.io import write_volume

    for k in range(3):
        us_dicom(tmp_path / f"cine{k}.dcm", _grey(n=4 + k))
    members = sweep_folder_members(tmp_path)
    assert [p.name for p in members] == ["cine0.dcm", "cine1.dcm", "cine2.dcm"]
    with pytest.raises(FetalIQAError, match="DICOM files of several frames each: one sweep a file"):
        load_sweep(tmp_path)
    write_volume(tmp_path / "other.mha", _grey().astype(np.uint8))
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "other.raw").write_bytes(b"")
    members = sweep_folder_members(tmp_path)
    assert [p.name for p in members] == ["cine0.dcm", "cine1.dcm", "cine2.dcm", "other.mha"]
    note = left_out_note(tmp_path, members)
    assert "1 file(s) are not sweeps and are left out: photo.png" in note
    # a subfolder of sweeps (one a patient) was passed over without a word
    (tmp_path / "patient1").mkdir()
    write_volume(tmp_path / "patient1" / "sweep.mha", _grey().astype(np.uint8))
    note = left_out_note(tmp_path, sweep_folder_members(tmp_path))
    assert "1 subfolder(s) hold no DICOM series and are not looked into: patient1" in note and "photo.png" in note
    lone = tmp_path / "lone"  # one cine beside a sweep of another format is a sweep too
    lone.mkdir()
    us_dicom(lone / "cine.dcm", _grey(n=4))
    write_volume(lone / "other.mha", _grey().astype(np.uint8))
    assert [p.name for p in sweep_folder_members(lone)] == ["cine.dcm", "other.mha"]
    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):  # single frames of one series: one sweep, read as before
        us_dicom(series / f"f{k}.dcm", _grey(n=1)[0], series="1.2.3", instance=k + 1)
    assert sweep_folder_members(series) is None and load_sweep(series).n_frames == 3


def test_dicom_files_this_reader_cannot_decode_say_what_they_are(tmp_path):
    """A 64-bit DICOM was 'not a readable image file (no supported image header found)'; one
    with no pixel data (or a header damaged before them) had the image library probe 2 GB."""
    import pydicom

    arr = _grey(n=2)
    path = us_dicom(tmp_path / "wide.dcm", arr)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 64, 64, 63
    ds.PixelData = arr.astype(np.uint64).tobytes()
    ds.save_as(str(path))
    with pytest.raises(FetalIQAError, match="whose pixels this reader cannot decode \\(64 bits allocated"):
        load_sweep(path)
    del ds.PixelData
    ds.save_as(str(path))
    with pytest.raises(FetalIQAError, match="holds no pixel data"):
        load_sweep(path)


def test_cines_beside_a_dicomdir_or_a_still_are_still_sweeps(tmp_path):
    """One file of a single frame (a still, or a DICOMDIR) made a folder of cines 'several
    series, 1 file each': refused."""
    from fetaliqa_core.cli.score import left_out_note, sweep_folder_members

    for k in range(2):
        us_dicom(tmp_path / f"cine{k}.dcm", _grey(n=4))
    us_dicom(tmp_path / "still.dcm", _grey(n=1)[0])
    members = sweep_folder_members(tmp_path)
    assert [p.name for p in members] == ["cine0.dcm", "cine1.dcm"]
    assert "left out: still.dcm" in left_out_note(tmp_path, members)


# --- several files, several calibrations -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_a_detached_data_file_whose_name_has_a_space_is_read(tmp_path, suffix):
    """SimpleITK writes 'case 12.mhd' with 'ElementDataFile = case 12.raw' (and the NRRD's 'data
    file: case 12.raw'); a name of two words was taken for a pattern of several files."""
    arr = _grey(n=3).astype(np.uint8)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.25, 0.3, 1.0))
    path = tmp_path / f"case 12{suffix}"
    sitk.WriteImage(image, str(path))
    assert (tmp_path / "case 12.raw").is_file()
    sweep = load_sweep(path)
    assert np.array_equal(np.asarray(sweep.frames), arr) and sweep.spacing_mm == pytest.approx((0.3, 0.25))


def test_a_region_calibrated_past_the_image_gives_no_pixel_size(tmp_path):
    """A region reaching to 1024 x 768 in a 48 x 40 image (calibrated before the frame was made
    smaller) gave its pixel size to the smaller image: every length half of what it is."""
    from pydicom.sequence import Sequence

    arr = _grey(n=1)[0].astype(np.uint8)
    past = _dicom(tmp_path / "past.dcm", arr, SequenceOfUltrasoundRegions=Sequence([
        _region(0.02, 0.02, box=(0, 0, 1023, 767))]), PixelSpacing=[0.2, 0.2])
    sweep = load_sweep(past)
    assert sweep.spacing_source == SPACING_NONE and "past the 48 x 40 image" in sweep.spacing_note
    edge = _dicom(tmp_path / "edge.dcm", arr, SequenceOfUltrasoundRegions=Sequence([
        _region(0.02, 0.02, box=(0, 0, 48, 40))]))  # one past the last pixel, as some scanners write it
    assert load_sweep(edge).spacing_mm == pytest.approx((0.2, 0.2))


def test_a_series_whose_calibration_changes_gives_no_one_pixel_size(tmp_path):
    """The first file's calibration stood for every frame: a depth change half-way through gave
    lengths off by half for the other frames, without a word."""
    from pydicom.sequence import Sequence

    arr = _grey(n=1)[0].astype(np.uint8)
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(6):
        dx = 0.02 if k < 3 else 0.04
        _dicom(folder / f"f{k}.dcm", arr, series="1.2.3.20", instance=k + 1,
               SequenceOfUltrasoundRegions=Sequence([_region(dx, dx)]))
    sweep = load_sweep(folder)
    assert sweep.n_frames == 6 and sweep.spacing_source == SPACING_NONE
    assert "changes within the series" in sweep.spacing_note and sweep.spacing_problem is not None
    # a pixel size given for it (--spacing) is used, but the change is still said
    given = sweep.with_spacing(0.2)
    assert given.spacing_problem is None
    assert any("changes within the series" in n and "applied to every frame" in n for n in given.read_notes)
    steady = tmp_path / "steady"
    steady.mkdir()
    for k in range(3):
        _dicom(steady / f"f{k}.dcm", arr, series="1.2.3.21", instance=k + 1,
               SequenceOfUltrasoundRegions=Sequence([_region(0.03, 0.03)]))
    assert load_sweep(steady).spacing_mm == pytest.approx((0.3, 0.3))


def test_one_series_uid_over_two_studies_or_a_cine_and_stills_is_refused(tmp_path):
    arr = _grey(n=1)[0].astype(np.uint8)
    studies = tmp_path / "studies"
    studies.mkdir()
    for k in range(4):  # an anonymiser gave both studies one series UID; instance numbers repeat
        _dicom(studies / f"a{k}.dcm", arr, series="1.2.3.30", instance=k + 1)
        _dicom(studies / f"b{k}.dcm", arr, series="1.2.3.30", instance=k + 1, StudyInstanceUID="1.2.3.5")
    with pytest.raises(FetalIQAError, match="come from 2 studies"):
        load_sweep(studies)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _dicom(mixed / "cine.dcm", _grey(n=6).astype(np.uint8), series="1.2.3.31", instance=1)
    for k in range(3):
        _dicom(mixed / f"still{k}.dcm", arr, series="1.2.3.31", instance=k + 2)
    with pytest.raises(FetalIQAError, match=r"cine beside single images.*\(e\.g\. cine.dcm\)"):
        load_sweep(mixed)
    # in series of their own, the cine is read: it has the most frames, the stills the most files
    apart = tmp_path / "apart"
    apart.mkdir()
    _dicom(apart / "cine.dcm", _grey(n=6).astype(np.uint8), series="1.2.3.32", instance=1)
    for k in range(3):
        _dicom(apart / f"still{k}.dcm", arr, series="1.2.3.33", instance=k + 1)
    sweep = load_sweep(apart)
    assert sweep.n_frames == 6
    assert any("longest (6 frames) is read" in n for n in sweep.read_notes)


def test_like_sized_regions_calibrated_differently_leave_the_pixel_size_unknown(tmp_path):
    """A split screen: the first region's calibration was used for the whole image ("the largest")."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    arr = _grey().astype(np.uint8)
    split = _dicom(tmp_path / "split.dcm", _grey(h=100, w=96).astype(np.uint8), SequenceOfUltrasoundRegions=Sequence([
        _region(0.02, 0.03, box=(0, 0, 47, 99)), _region(0.04, 0.06, box=(48, 0, 95, 99))]))
    sweep = load_sweep(split)
    assert sweep.spacing_source == SPACING_NONE and "like size" in sweep.spacing_note
    # Pixel Measures stated per frame (Enhanced US Volume), the same on every frame: read
    per_frame = _pixel_measures
    enhanced = _dicom(tmp_path / "perframe.dcm", arr, sop=ENHANCED_US_VOLUME,
                      PerFrameFunctionalGroupsSequence=Sequence([per_frame([0.2, 0.3]) for _ in range(4)]))
    sweep = load_sweep(enhanced)
    assert sweep.spacing_source == SPACING_FROM_DICOM_PIXEL_SPACING and sweep.spacing_mm == pytest.approx((0.2, 0.3))
    varying = _dicom(tmp_path / "varying.dcm", arr, sop=ENHANCED_US_VOLUME,
                     PerFrameFunctionalGroupsSequence=Sequence([per_frame([0.2 + 0.1 * (k > 1), 0.3])
                                                                for k in range(4)]))
    assert load_sweep(varying).spacing_source == SPACING_NONE


def test_a_dicom_header_stating_two_pixel_sizes_that_disagree_gives_no_length(tmp_path):
    """A region calibrated at 0.03 cm (0.3 mm) beside a Pixel Spacing of 0.03 mm: the region was
    used without a word, though one of them is ten times wrong. An enhanced object's top-level
    Pixel Spacing silently beat its Pixel Measures; Pixel Measures on some frames only were applied
    to all. A small calibrated inset set the size of an image whose main region is uncalibrated."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    arr = _grey().astype(np.uint8)
    both = _dicom(tmp_path / "both.dcm", arr, PixelSpacing=[0.03, 0.03],
                  SequenceOfUltrasoundRegions=Sequence([_region(0.03, 0.03)]))
    sweep = load_sweep(both)
    assert sweep.spacing_source == SPACING_NONE
    assert "disagree" in sweep.spacing_note and "region calibration" in sweep.spacing_note
    same = _dicom(tmp_path / "same.dcm", arr, PixelSpacing=[0.3, 0.3],
                  SequenceOfUltrasoundRegions=Sequence([_region(0.03, 0.03)]))
    assert load_sweep(same).spacing_mm == pytest.approx((0.3, 0.3))  # the same size written twice
    measures = _pixel_measures
    shared = _dicom(tmp_path / "shared.dcm", arr, sop=ENHANCED_US_VOLUME, PixelSpacing=[0.4, 0.4],
                    SharedFunctionalGroupsSequence=Sequence([measures([0.2, 0.2])]))
    sweep = load_sweep(shared)
    assert sweep.spacing_source == SPACING_NONE and "Pixel Measures" in sweep.spacing_note
    partial = _dicom(tmp_path / "partial.dcm", arr, sop=ENHANCED_US_VOLUME,
                     PerFrameFunctionalGroupsSequence=Sequence([measures([0.2, 0.2]) if k < 2 else Dataset()
                                                                for k in range(4)]))
    sweep = load_sweep(partial)
    assert sweep.spacing_source == SPACING_NONE and "2 of its 4 frames only" in sweep.spacing_note
    # shared Pixel Measures of 0.3 mm and every frame's of 0.45 mm: the shared one was used without a word
    both_measures = _dicom(tmp_path / "both_measures.dcm", arr, sop=ENHANCED_US_VOLUME,
                           SharedFunctionalGroupsSequence=Sequence([measures([0.3, 0.3])]),
                           PerFrameFunctionalGroupsSequence=Sequence([measures([0.45, 0.45]) for _ in range(4)]))
    sweep = load_sweep(both_measures)
    assert sweep.spacing_source == SPACING_NONE and "disagree" in sweep.spacing_note
    assert "0.3 x 0.3 mm" in sweep.spacing_note and "0.45 x 0.45 mm" in sweep.spacing_note
    inset = _dicom(tmp_path / "inset.dcm", arr, SequenceOfUltrasoundRegions=Sequence([
        _region(0.5, 0.5, units=0, box=(0, 0, 47, 39)), _region(0.01, 0.01, box=(0, 0, 9, 9))]))
    sweep = load_sweep(inset)
    assert sweep.spacing_source == SPACING_NONE and "only a region of 10 x 10 pixels" in sweep.spacing_note
    big = _grey(h=100, w=96).astype(np.uint8)
    inset = _dicom(tmp_path / "inset2.dcm", big, SequenceOfUltrasoundRegions=Sequence([
        _region(0.5, 0.5, units=0, box=(0, 0, 95, 99)), _region(0.01, 0.01, box=(0, 0, 39, 39))]))
    sweep = load_sweep(inset)
    assert sweep.spacing_source == SPACING_NONE and "largest region is not calibrated" in sweep.spacing_note


def test_dicom_headers_that_contradict_themselves_are_refused_in_one_line(tmp_path):
    """Samples per Pixel 3 labelled MONOCHROME2 was scored as scrambled grey with a confident pixel
    size; a header without Rows was blamed on its pixel format; one 16-bit file in an 8-bit series
    became an all-black frame; a Pixel Spacing of three values was called missing."""
    import pydicom
    from pydicom.sequence import Sequence

    arr = _grey().astype(np.uint8)
    mislabelled = _dicom(tmp_path / "mono.dcm", arr)
    ds = pydicom.dcmread(mislabelled)
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0  # RGB samples, still labelled MONOCHROME2
    ds.PixelData = np.repeat(arr[..., None], 3, axis=-1).tobytes()
    ds.save_as(mislabelled)
    with pytest.raises(FetalIQAError, match="3 sample.*MONOCHROME2, which has 1"):
        load_sweep(mislabelled)
    no_rows = _dicom(tmp_path / "norows.dcm", arr)
    ds = pydicom.dcmread(no_rows)
    del ds.Rows
    ds.save_as(no_rows)
    with pytest.raises(FetalIQAError, match="Rows missing"):
        load_sweep(no_rows)
    series = tmp_path / "series"
    series.mkdir()
    for k in range(4):
        frame = arr[k].astype(np.uint16) * 256 if k == 2 else arr[k]
        _dicom(series / f"f{k}.dcm", frame, series="1.2.3.77",
               instance=k + 1, **({"bits": 16} if k == 2 else {}))
    with pytest.raises(FetalIQAError, match="store their pixels differently.*16 bits.*f2.dcm"):
        load_sweep(series)
    three = _dicom(tmp_path / "three.dcm", arr, PixelSpacing=[0.3, 0.3, 1.0])
    sweep = load_sweep(three)
    assert sweep.spacing_source == SPACING_NONE and "not two positive numbers" in sweep.spacing_note
    # the same of an enhanced object's shared Pixel Measures (it was said to have no Pixel Spacing at all)
    for name, value in (("zero", [0, 0.3]), ("negative", [-0.3, -0.3])):
        shared = _dicom(tmp_path / f"{name}.dcm", arr, sop=ENHANCED_US_VOLUME,
                        SharedFunctionalGroupsSequence=Sequence([_pixel_measures(value)]))
        sweep = load_sweep(shared)
        assert sweep.spacing_source == SPACING_NONE
        assert "shared Pixel Measures" in sweep.spacing_note and "not two positive numbers" in sweep.spacing_note


def test_pictures_and_names_the_image_library_misreads_are_refused_saying_why(tmp_path):
    """An animated PNG was read as its first frame without a word; '.Nii' printed the NIfTI
    library's lines and 'not a readable image'; a TIFF with a thumbnail page and a grey+alpha PNG
    were called damaged."""
    from PIL import Image

    arr = _grey().astype(np.uint8)
    arr[:, 30:, :] = (10 * np.arange(len(arr)))[:, None, None]  # frames that differ (Pillow merges equal ones)
    frames = [Image.fromarray(f) for f in arr]
    apng = tmp_path / "anim.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(FetalIQAError, match=f"animated PNG of {len(frames)} frames"):
        load_sweep(apng)
    nii = tmp_path / "case.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(nii))
    mixed = tmp_path / "case.Nii"
    nii.rename(mixed)
    with pytest.raises(FetalIQAError, match="rename it to end in '.nii'"):
        load_sweep(mixed)
    tif = tmp_path / "thumb.tif"
    frames[0].save(tif, save_all=True, append_images=[*frames[1:], frames[0].resize((24, 20))])
    with pytest.raises(FetalIQAError, match="pages are of different sizes"):
        load_sweep(tif)
    # pages of one size but other pixels: decoded as the first is laid out, into scrambled frames
    # (different ones at each read, for an RGB first page)
    for first, rest in ((frames[0].convert("RGB"), frames[1:]), (frames[0], [f.convert("RGB") for f in frames[1:]]),
                        (frames[0], [Image.fromarray(f.astype(np.uint16) * 257) for f in arr[1:]])):
        first.save(tif, save_all=True, append_images=rest)
        with pytest.raises(FetalIQAError, match="pages hold different kinds of pixels"):
            load_sweep(tif)
    frames[0].convert("RGB").save(tif, save_all=True, append_images=[f.convert("RGB") for f in frames[1:]])
    assert np.abs(np.asarray(load_sweep(tif).frames, dtype=int) - arr).max() <= 1
    la = tmp_path / "la.png"
    Image.fromarray(np.stack([arr[0], np.full_like(arr[0], 255)], axis=-1), mode="LA").save(la)
    with pytest.raises(FetalIQAError, match="grey with transparency"):
        load_sweep(la)


def test_nrrd_time_axis_before_the_pixels_and_units_that_differ_between_space_axes(tmp_path):
    arr = _grey(n=6).astype(np.uint8)
    # frames on the fastest axis: read as rows, with the frame interval taken for a pixel size
    first = tmp_path / "time_first.nrrd"
    first.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 6 48 40\nkinds: time domain domain\n"
                      b"spacings: 0.066 0.3 0.2\nencoding: raw\n\n" + np.ascontiguousarray(arr.transpose(1, 2, 0)).tobytes())
    with pytest.raises(FetalIQAError, match="time axis is its axis 1 of 3.*Save the sweep with the frames"):
        load_sweep(first)
    # a mask of that layout was told to "Save the sweep"
    from fetaliqa_core.io import load_mask

    labels = tmp_path / "time_first_mask.nrrd"
    labels.write_bytes(first.read_bytes().split(b"\n\n")[0] + b"\n\n" + bytes(6 * 48 * 40))
    with pytest.raises(FetalIQAError, match="time axis is its axis 1 of 3.*Save the mask with the frames"):
        load_mask(labels)
    # a unit belongs to an axis of the space: here the image's rows run along the space's first (cm)
    rotated = _nrrd(tmp_path / "rotated.nrrd", arr, "space: left-posterior-superior\n"
                    "space directions: (0,0.3,0) (0.02,0,0) (0,0,1)\nspace units: \"cm\" \"mm\" \"mm\"")
    assert load_sweep(rotated).spacing_mm == pytest.approx((0.2, 0.3))


def test_a_metaimage_that_states_both_byte_orders_is_refused(tmp_path):
    arr = _grey().astype(np.uint16)
    path = tmp_path / "both.mha"
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 48 40 4\nElementType = MET_USHORT\n"
              "BinaryDataByteOrderMSB = False\nElementByteOrderMSB = True\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + arr.astype("<u2").tobytes())
    with pytest.raises(FetalIQAError, match="big-endian and that they are not"):
        load_sweep(path)


def test_a_local_metaimage_with_its_pixels_at_the_end_is_read(tmp_path):
    """HeaderSize = -1 puts the pixels at the end of the file (MetaIO reads them from there), also
    when the data are LOCAL: the bytes between the header and them were taken for a wrong size."""
    arr = _grey(n=4).astype(np.uint8)
    head = (f"ObjectType = Image\nNDims = 3\nDimSize = {arr.shape[2]} {arr.shape[1]} {arr.shape[0]}\n"
            "ElementType = MET_UCHAR\nHeaderSize = -1\nElementSpacing = 0.25 0.3 1\nElementDataFile = LOCAL\n")
    path = tmp_path / "local.mha"
    path.write_bytes(head.encode() + b"JUNK" * 16 + arr.tobytes())
    sweep = load_sweep(path)
    assert np.array_equal(np.asarray(sweep.frames), arr) and sweep.spacing_mm == pytest.approx((0.3, 0.25))
    path.write_bytes(head.encode() + arr.tobytes()[:-10])
    with pytest.raises(FetalIQAError, match="truncated"):
        load_sweep(path)


@pytest.mark.parametrize("header_size, said", [
    ("9223372036854775000", r"HeaderSize is 9223372036854775000 \(bytes to skip at the start of its data file, "
                            r"data.raw\), which leaves nothing of that file \(7680 bytes\) for the pixels: the header "
                            "is wrong"),
    ("7680", r"HeaderSize is 7680 \(bytes to skip .*leaves nothing of that file \(7680 bytes\)"),  # (was "truncated")
    ("-5", "HeaderSize is -5: no bytes can be skipped a negative number of times"),
])
def test_a_metaimage_header_size_that_means_nothing_blames_the_header(tmp_path, header_size, said):
    """A HeaderSize past the end of the data file called the (good) data file truncated; one of -5
    was read as none, and the sweep was scored without a word."""
    arr = _grey(n=4).astype(np.uint8)
    (tmp_path / "data.raw").write_bytes(arr.tobytes())
    path = tmp_path / "sweep.mhd"
    path.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {arr.shape[2]} {arr.shape[1]} {arr.shape[0]}\n"
                    f"ElementType = MET_UCHAR\nHeaderSize = {header_size}\nElementSpacing = 0.25 0.3 1\n"
                    "ElementDataFile = data.raw\n")
    with pytest.raises(FetalIQAError, match=said) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize("spacing", [None, [0, 0]])
def test_palette_colour_is_read_through_its_table_on_every_path(tmp_path, spacing):
    """A palette image whose Pixel Spacing is no length goes through the second decoder, which
    gave its raw indices: an inverting colour table came out as the inverse image."""
    arr = _grey().astype(np.uint8)
    lut = ((255 - np.arange(256)).astype("<u2") * 257).tobytes()
    attrs = {f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in ("Red", "Green", "Blue")}
    attrs.update({f"{c}PaletteColorLookupTableData": lut for c in ("Red", "Green", "Blue")})
    if spacing is not None:
        attrs["PixelSpacing"] = spacing
    path = _dicom(tmp_path / "palette.dcm", arr, PhotometricInterpretation="PALETTE COLOR", **attrs)
    assert np.abs(np.asarray(load_sweep(path).frames, dtype=int) - (255 - arr)).max() <= 1


def test_a_palette_given_as_segmented_colour_tables_is_read(tmp_path):
    """PALETTE COLOR whose Red/Green/Blue tables are given only as Segmented Palette Color LUT
    Data (PS3.3 C.7.9.2; scanners' tint maps) is valid, and pydicom expands it: the image reader's
    failure made it "damaged or not an image; export it again"."""
    arr = _grey().astype(np.uint8)
    # one discrete entry (65535), then a linear segment down to 0 over the 255 others: an inverting table
    segments = np.array([0, 1, 65535, 1, 255, 0], "<u2").tobytes()
    attrs = {f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in ("Red", "Green", "Blue")}
    attrs.update({f"Segmented{c}PaletteColorLookupTableData": segments for c in ("Red", "Green", "Blue")})
    path = _dicom(tmp_path / "segmented.dcm", arr, PhotometricInterpretation="PALETTE COLOR", **attrs)
    assert np.abs(np.asarray(load_sweep(path).frames, dtype=int) - (255 - arr)).max() <= 1


def test_encapsulated_uncompressed_pixels_are_refused_by_their_transfer_syntax(tmp_path):
    """Encapsulated Uncompressed Explicit VR Little Endian (1.2.840.10008.1.2.1.98), which the image
    reader and pydicom 3.0 do not decode, was refused with "Export the sweep with 8- or 16-bit grey
    or RGB pixels" for a file of 8-bit grey pixels: the line names the syntax and what to export."""
    from pydicom.encaps import encapsulate

    grey = _grey(n=3).astype(np.uint8)
    path = _dicom(tmp_path / "encapsulated.dcm", grey)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([frame.tobytes() for frame in grey])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.98"
    ds.save_as(path, enforce_file_format=True)
    try:
        read = np.asarray(load_sweep(path).frames)
    except FetalIQAError as exc:
        said = str(exc)
        assert "1.2.840.10008.1.2.1.98" in said and "Encapsulated Uncompressed" in said
        assert "Explicit VR Little Endian (uncompressed)" in said and "16-bit grey" not in said
    else:  # a pydicom that decodes it: the frames as stored
        assert np.array_equal(read, grey)


@pytest.mark.parametrize("name", ["clip.mha", "clip.mhd"])
def test_a_video_named_as_a_metaimage_gets_the_video_line(tmp_path, name):
    """An MP4 named .mha was "not a MetaImage file ... damaged or not an image", where the same
    file named .dcm, .tif, .nii or .png was said to be a video, and what to export instead."""
    (tmp_path / name).write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(4000))
    with pytest.raises(FetalIQAError, match=r"a video file \(MP4 / QuickTime\); FetalIQA reads sweeps from image"):
        load_sweep(tmp_path / name)


def test_video_is_named_as_video(tmp_path):
    """A DICOM file of H.264 frames was 'damaged or compressed otherwise than the header says'; an
    MP4 or AVI file 'not a readable image file': neither said that video is not read."""
    from pydicom.encaps import encapsulate

    arr = _grey(n=2).astype(np.uint8)
    path = _dicom(tmp_path / "h264.dcm", arr)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x67" + bytes(100)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(FetalIQAError, match=r"as video \(H\.264\)"):
        load_sweep(path)
    for name, head in (("clip.mp4", b"\x00\x00\x00\x18ftypmp42"), ("clip.avi", b"RIFF\x00\x10\x00\x00AVI LIST")):
        (tmp_path / name).write_bytes(head + bytes(200))
        with pytest.raises(FetalIQAError, match="a video file"):
            load_sweep(tmp_path / name)
    import zipfile

    with zipfile.ZipFile(tmp_path / "case.zip", "w") as z:
        z.writestr("case.mha", b"ObjectType = Image")
    with pytest.raises(FetalIQAError, match="a ZIP archive of files, not an image: unpack it"):
        load_sweep(tmp_path / "case.zip")
    (tmp_path / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))  # a still photo, no video
    with pytest.raises(FetalIQAError) as info:
        load_sweep(tmp_path / "photo.heic")
    assert "a video file" not in str(info.value) and "a HEIF picture" in str(info.value)


@pytest.mark.parametrize("animated", [False, True])
def test_a_webp_picture_is_named(tmp_path, animated):
    """A WebP (still or animated) was 'not a readable image file (no supported image header
    found)': the format was not named, as other formats not read are."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in _grey(n=2 if animated else 1).astype(np.uint8)]
    path = tmp_path / "sweep.webp"
    frames[0].save(path, save_all=animated, append_images=frames[1:], lossless=True)
    with pytest.raises(FetalIQAError, match="a WebP picture, a format this reader does not read"):
        load_sweep(path)


def test_lookup_tables_the_reader_does_not_apply_are_not_passed_over(tmp_path):
    """A Modality LUT Sequence (the values meant) and a VOI LUT Sequence (a display table) were
    ignored without a word; both inverted the image here."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    arr = _grey().astype(np.uint8)
    table = Dataset()
    table.LUTDescriptor = [256, 0, 8]
    table.add_new(0x00283006, "OW", np.arange(255, -1, -1, dtype="<u2").tobytes())  # LUT Data
    modality = _dicom(tmp_path / "modality.dcm", arr, ModalityLUTSequence=Sequence([table]))
    with pytest.raises(FetalIQAError, match="Modality LUT Sequence"):
        load_sweep(modality)
    voi = load_sweep(_dicom(tmp_path / "voi.dcm", arr, VOILUTSequence=Sequence([table])))
    assert np.array_equal(np.asarray(voi.frames), arr) and any("VOI LUT" in n for n in voi.read_notes)
    assert not load_sweep(_dicom(tmp_path / "plain.dcm", arr)).read_notes
    # empty sequences (as anonymisers write them) map nothing: read as they are, without a note
    empty = load_sweep(_dicom(tmp_path / "empty.dcm", arr, ModalityLUTSequence=Sequence([]),
                              VOILUTSequence=Sequence([])))
    assert np.array_equal(np.asarray(empty.frames), arr) and not empty.read_notes


@pytest.mark.parametrize("written, named", [(".mha", "case.dat"), (".mha", "case"), (".mha", "case.nrrd"),
                                            (".nrrd", "case.mha"), (".nii", "case.mha"), (".nii.gz", "case.bin")])
def test_a_sweep_file_named_as_another_kind_is_named_for_what_it_is(tmp_path, written, named):
    """A MetaImage copied without its extension (or given another) was 'not a readable image file
    (no supported image header found)', though it begins 'ObjectType = Image'."""
    path = tmp_path / f"sweep{written}"
    sitk.WriteImage(sitk.GetImageFromArray(_grey().astype(np.uint8)), str(path))
    wrong = path.rename(tmp_path / named)
    with pytest.raises(FetalIQAError, match=rf"rename it \(or a copy\) to end in {re.escape(written)} and open"):
        load_sweep(wrong)


@pytest.mark.parametrize("field", ["kinds: " + "domain " * 300, "spacings: " + "0.3 " * 300,
                                   'labels: ' + '"x" ' * 300, "space directions: " + "(1,0,0) " * 101,
                                   "measurement frame: " + "(1,0,0) " * 120])
def test_a_nrrd_field_with_more_entries_than_axes_is_refused_before_the_image_library(tmp_path, field):
    """300 kinds for 3 axes (a 2 KB line) crashed the process inside the image library's NRRD
    parser (SIGSEGV): an archive run lost every case, the viewer its window."""
    data = (np.arange(6 * 64 * 80) % 251).astype(np.uint8).tobytes()
    path = tmp_path / "overfull.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 80 64 6\n" + field.encode()
                     + b"\nencoding: raw\n\n" + data)
    with pytest.raises(FetalIQAError, match="entries for an image of 3 axes"):
        load_sweep(path)
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 300\nsizes: 80 64 6\nencoding: raw\n\n" + data)
    with pytest.raises(FetalIQAError, match="dimension '300'"):
        load_sweep(path)


@pytest.mark.parametrize("layout", ["members", "padding", "uncompressed"])
def test_a_nii_gz_in_several_gzip_members_or_padded_is_read(tmp_path, layout):
    """The check of a .nii.gz's length trusted the last gzip member's size field: a file in several
    members (block compressors, concatenated parts), one padded with zeros after the stream, and an
    uncompressed NIfTI named .nii.gz (all read by the image reader) were called truncated."""
    grey = _grey(n=6).astype(np.uint8)
    good = tmp_path / "good.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(good))
    raw = gzip.decompress(good.read_bytes())
    path = tmp_path / f"{layout}.nii.gz"
    if layout == "members":
        path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    elif layout == "padding":
        path.write_bytes(good.read_bytes() + bytes(512))
    else:
        path.write_bytes(raw)
    assert np.array_equal(np.asarray(load_sweep(path).frames), grey)
    cut = tmp_path / f"cut_{layout}.nii.gz"  # a member short is still truncated
    cut.write_bytes({"members": gzip.compress(raw[:5000]), "padding": good.read_bytes()[:len(good.read_bytes()) // 2],
                     "uncompressed": raw[:len(raw) // 2]}[layout])
    with pytest.raises(FetalIQAError, match="truncated"):
        load_sweep(cut)


def test_a_nii_gz_of_one_whole_stream_is_not_inflated_to_be_checked(tmp_path, monkeypatch):
    """A .nii.gz as image writers write it (one gzip stream, its length field the header's) was
    inflated once to count its bytes and once more to be read: opening an 840-frame case took
    twice as long. Its length field is taken then, as a NRRD's is."""
    from fetaliqa_core.io import readers

    grey = _grey(n=6).astype(np.uint8)
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(path))

    def inflated(*args, **kwargs):
        raise AssertionError("inflated to be checked")

    monkeypatch.setattr(readers, "_inflated_length", inflated)
    assert np.array_equal(np.asarray(load_sweep(path).frames), grey)


def test_a_damaged_gzip_nifti_is_one_line_never_a_zlib_error(tmp_path):
    """Bits flipped in a .nii.gz's compressed stream escaped as zlib.error: a traceback from `ac`
    and `score`, 'unexpected error' in a folder's table."""
    good = tmp_path / "good.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(_grey(n=6).astype(np.uint8)), str(good))
    data = good.read_bytes()
    for start in (12, 40, 80, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"bad{start}.nii.gz"
        bad.write_bytes(data[:start] + b"\xff" * 8 + data[start + 8:])
        try:
            load_sweep(bad)
        except FetalIQAError:
            pass


def test_a_gzip_compressed_sweep_file_is_said_to_be_one_to_decompress(tmp_path):
    """A .mha.gz (gzip around a whole MetaImage, which image readers do not read) was "not a
    readable image file (no supported image header found)": nothing said it only needed unpacking."""
    from fetaliqa_core.io import write_volume

    mha = tmp_path / "sweep.mha"
    write_volume(mha, _grey(n=3).astype(np.uint8))
    for name, data in (("sweep.mha.gz", gzip.compress(mha.read_bytes())),
                       ("cut.mha.gz", gzip.compress(mha.read_bytes())[:400]),  # the start still inflates
                       ("sweep.bin", gzip.compress(b"\x00" * 200))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(FetalIQAError) as err:
            load_sweep(path)
        message = str(err.value)
        assert "gzip-compressed" in message and "decompress it" in message, message
        assert ("(a MetaImage inside)" in message) == name.endswith(".mha.gz") and "no supported" not in message


@pytest.mark.parametrize("scale, dtype, gain", [(257, np.uint16, 1.0), (16, np.uint16, 1.0), (256, np.uint16, 1.0),
                                                (64, np.uint16, 1.0), (16, np.int16, 1.0), (257, np.uint16, 0.6),
                                                (16, np.uint16, 0.6)])
def test_an_8_bit_sweep_stored_wider_keeps_its_grey_levels(tmp_path, scale, dtype, gain):
    """The same sweep as 16-bit (x257, x256), 12-bit (x16) or 14-bit (x64) was windowed between
    its percentiles, 6 % more contrast than the 8-bit file: the models answered differently."""
    rng = np.random.default_rng(3)
    # as ultrasound is: mostly dark speckle (99.5th percentile near 140), a few bright echoes
    eight = np.clip(rng.gamma(2.0, 16.0, (4, 60, 80)), 0, 255).astype(np.uint8)
    eight[:, 30, 20:40] = 230
    eight[:, :, :10] = 0  # the dark outside a fan
    assert np.percentile(eight, 99.5) < 170
    eight = (eight * gain).astype(np.uint8)  # a low gain: nothing above 140
    paths = []
    for name, arr in (("eight.mha", eight), ("wide.mha", (eight.astype(np.uint32) * scale).astype(dtype))):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / name))
        paths.append(tmp_path / name)
    a, b = (np.asarray(load_sweep(p).frames, dtype=int) for p in paths)
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("offset, scale", [(-2048, 16), (-12000, 97)])
def test_signed_frames_below_zero_are_not_cut_to_black(tmp_path, offset, scale):
    """A sweep stored as signed integers centred on 0 (a signed 12-bit DICOM, an int16 NIfTI or
    MetaImage) was shown over the 0-based depth 0-4095 or 0-65535: every value below 0 black, the
    fan's tissue gone, and the models chose another frame. It is windowed as the README says."""
    rng = np.random.default_rng(4)
    eight = np.clip(rng.gamma(2.0, 16.0, (4, 60, 80)), 0, 255).astype(np.uint8)
    eight[:, 30, 20:40] = 230
    eight[:, :, :10] = 0
    signed = (eight.astype(np.int32) * scale + offset).astype(np.int16)
    assert signed.min() < 0 and np.count_nonzero(signed < 0) > signed.size // 2
    sitk.WriteImage(sitk.GetImageFromArray(signed), str(tmp_path / "signed.mha"))
    frames = np.asarray(load_sweep(tmp_path / "signed.mha").frames, dtype=float)
    tissue = eight > 0
    assert np.count_nonzero(frames[tissue] == 0) < 0.02 * np.count_nonzero(tissue)
    assert np.corrcoef(frames.ravel(), eight.ravel().astype(float))[0, 1] > 0.95  # (0.79 cut to black)


def test_a_folder_scored_into_itself_never_writes_into_a_series_folder(tmp_path, capsys):
    """`score FOLDER --out FOLDER`: the results of a DICOM series went into the series folder."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.io import write_volume

    arr = _grey(n=1)[0].astype(np.uint8)
    root = tmp_path / "study"
    (root / "s1").mkdir(parents=True)
    for k in range(3):
        _dicom(root / "s1" / f"f{k}.dcm", arr, series="1.2.3.30", instance=k + 1)
    write_volume(root / "other.mha", _grey().astype(np.uint8))
    before = sorted(p.name for p in (root / "s1").iterdir())
    assert main(["score", str(root), "--out", str(root), "--model", "demo", "--device", "cpu", "--quiet"]) == 1
    assert "would go into the series folder itself" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "s1").iterdir()) == before


def test_gzip_members_are_counted_whole_when_a_read_ends_inside_the_next_member_s_magic(tmp_path):
    """The inflated length of gzip data in several members (block compressors write thousands) is
    counted in reads of 1 MiB: a member ending one byte before a read's end left the next one's
    first magic byte alone, taken for padding, and a valid .nii.gz or gzip NRRD was 'truncated'."""
    import gzip

    from fetaliqa_core.io.readers import _inflated_length

    rng = np.random.default_rng(0)
    target = (1 << 20) - 1  # the first member ends here: the next read starts at its magic's second byte
    n = target - 18
    while True:
        first = gzip.compress(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), compresslevel=0, mtime=0)
        if len(first) == target:
            break
        n += target - len(first)
    second = gzip.compress(bytes(5000), mtime=0)
    path = tmp_path / "members.gz"
    path.write_bytes(first + second)
    assert _inflated_length(path, 0, 1 << 30) == (n + 5000, True)


def test_a_stack_saved_frames_first_is_not_measured(tmp_path):
    """numpy's (N, H, W) written as a NIfTI's (x, y, z) with the pixel size set per axis reads as
    W "frames", each a slice across the sweep, of a plausible size in mm: the narrow-frame note
    judged in mm said nothing, and an AC on such a slice was shown as a length."""
    from fetaliqa_core.io.sweep import frames_axis_evidence
    from fetaliqa_core.synth import synthesize_case

    frames = synthesize_case(seed=4, n_sweeps=1, frames_per_sweep=40, height=140, width=186).frames
    upright = sitk.GetImageFromArray(frames)
    upright.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(upright, str(tmp_path / "upright.nii.gz"))
    sweep = load_sweep(tmp_path / "upright.nii.gz")
    assert frames_axis_evidence(sweep.frames) is None and sweep.read_notes == ()
    assert sweep.spacing_problem is None

    across = sitk.GetImageFromArray(np.ascontiguousarray(frames.transpose(2, 1, 0)))
    across.SetSpacing((1.0, 0.3, 0.3))  # x is the frame axis now
    sitk.WriteImage(across, str(tmp_path / "frames_first.nii.gz"))
    sweep = load_sweep(tmp_path / "frames_first.nii.gz")
    assert sweep.frames.shape == (186, 140, 40)
    assert any("store its frames along another axis" in n for n in sweep.read_notes), sweep.read_notes
    assert "slices across the sweep" in sweep.spacing_problem
    # a pixel size the user gives is theirs to give: lengths are shown again, the note stays
    given = sweep.with_spacing(0.3)
    assert given.spacing_problem is None and any("another axis" in n for n in given.read_notes)
    # a probe held still over fine speckle (neighbouring frames alike, a frame's pixels not) is no
    # such stack: its rows and columns are alike
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 255, (1, 120, 160)), 12, axis=0).astype(np.uint8)
    still = np.clip(still + rng.integers(-3, 4, still.shape), 0, 255).astype(np.uint8)
    assert frames_axis_evidence(still) is None


def _slow_sweep(n: int = 40, h: int = 120, w: int = 150, fan: bool = True, seed: int = 0) -> np.ndarray:
    """A sweep whose frames change slowly (an abdomen-like ellipse growing and shrinking over smooth
    texture, a little fresh noise a frame), inside a probe's fan held still (black outside) or
    filling the frames: ``(n, h, w)`` uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.ones((h, w), bool)
    if fan:
        inside = (np.hypot(yy + 10, xx - w / 2) < h + 5) & (np.abs(np.degrees(np.arctan2(xx - w / 2, yy + 10))) < 40)
    frames = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        size = 1.0 - 0.5 * abs(i - n / 2) / n
        texture = 90 + 25 * np.sin(xx / 9 + i * 0.03) * np.cos(yy / 7) + 0.3 * (h - yy)
        belly = ((xx - w / 2) / (0.25 * w * size)) ** 2 + ((yy - 0.45 * h) / (0.2 * h * size)) ** 2 < 1
        image = np.where(belly, 140.0, texture) + rng.normal(0, 3, (h, w))
        frames[i] = np.where(inside, np.clip(image, 10, 255), 0).astype(np.uint8)
    return frames


def test_a_slowly_changing_sweep_saved_frames_first_is_not_measured(tmp_path):
    """numpy's (N, H, W) of a slowly changing sweep saved as a NIfTI's x, y, z with one size for all
    three axes was read as 150 "frames" of 120 x 40, each a slice across the sweep, at 0.6 mm, and
    scored with an AC in mm: its neighbouring frames, rows and columns are all alike, and only a
    marked difference between them was taken for this layout. The black outside the probe's fan,
    the same in every real frame, now lies along whole rows of every "frame": that tells it."""
    from fetaliqa_core.io.sweep import frames_axis_evidence

    frames = _slow_sweep()
    upright = sitk.GetImageFromArray(frames)
    upright.SetSpacing((0.6, 0.6, 1.0))
    sitk.WriteImage(upright, str(tmp_path / "upright.nii.gz"))
    sweep = load_sweep(tmp_path / "upright.nii.gz")
    assert sweep.spacing_problem is None and sweep.read_notes == ()
    across = sitk.GetImageFromArray(np.ascontiguousarray(frames.transpose(2, 1, 0)))
    across.SetSpacing((0.6, 0.6, 0.6))
    sitk.WriteImage(across, str(tmp_path / "frames_first.nii.gz"))
    sweep = load_sweep(tmp_path / "frames_first.nii.gz")
    assert sweep.frames.shape == (150, 120, 40)
    assert any("store its frames along another axis" in n for n in sweep.read_notes), sweep.read_notes
    assert "slices across the sweep" in (sweep.spacing_problem or "")
    said = frames_axis_evidence(np.asarray(sweep.frames))
    assert "black around the image lies along whole rows" in said and "far more alike" not in said
    # a sweep with a few blank frames (probe lifted) keeps its black in place: not taken for one
    blanks = frames.copy()
    blanks[[3, 20, 31]] = 0
    assert frames_axis_evidence(blanks) is None


def test_an_upright_sweep_whose_depth_changes_for_a_stretch_keeps_its_pixel_size(tmp_path):
    """A linear probe's sweep (its image fills the frames' width) whose depth was reduced for a
    stretch of frames has black along whole rows of those frames and in no one place: it was taken
    for a stack saved frames-first and lost its pixel size, a DICOM among them (told to "export it
    with the frames along the last axis"). A frames-first stack has whole black rows in (nearly)
    every "frame", and only NIfTI and NRRD files are written that way."""
    frames = _slow_sweep(fan=False)
    frames[10:26, 80:] = 0  # depth reduced for 16 of 40 frames
    for name in ("shallow.nii.gz", "shallow.mha"):
        image = sitk.GetImageFromArray(frames)
        image.SetSpacing((0.2, 0.2, 1.0))
        sitk.WriteImage(image, str(tmp_path / name))
        sweep = load_sweep(tmp_path / name)
        assert sweep.spacing_problem is None and sweep.spacing_mm == pytest.approx((0.2, 0.2)), name
        assert not any("another axis" in n for n in sweep.read_notes), (name, sweep.read_notes)


def test_an_upright_sweep_whose_depth_changes_early_or_late_keeps_its_pixel_size(tmp_path):
    """A linear probe's NIfTI sweep stored the usual way whose depth was set shorter from its third
    frame on (or deep only in its last fifth) has whole black rows in over 70 % of its frames: it was
    taken for a stack saved frames-first, lost its pixel size ("AC not shown") and the user was told
    to re-export a correctly stored file. Its black rows lie in one place all through the stretch
    (twice over when the depth was changed twice); read frames-first, they move from frame to frame."""
    from fetaliqa_core.io.sweep import frames_axis_evidence

    base = _slow_sweep(fan=False)
    cases = {"short_from3": (slice(3, None),), "deep_last_fifth": (slice(0, 32),),
             "changed_twice": (slice(3, None), slice(20, None))}
    for name, stretches in cases.items():
        frames = base.copy()
        for stretch, depth in zip(stretches, (80, 60)):
            frames[stretch, depth:] = 0
        image = sitk.GetImageFromArray(frames)
        image.SetSpacing((0.2, 0.2, 1.0))
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
        sweep = load_sweep(tmp_path / f"{name}.nii.gz")
        assert sweep.spacing_problem is None and sweep.spacing_mm == pytest.approx((0.2, 0.2)), name
        assert not any("another axis" in n for n in sweep.read_notes), (name, sweep.read_notes)
        assert frames_axis_evidence(frames) is None, name


def test_a_frames_first_layout_the_pixels_cannot_tell_is_not_measured(tmp_path):
    """A slowly changing sweep filling its frames (no black around the image) saved frames-first
    gives the pixels nothing to tell it by; read as frames far taller than wide, more of them than
    a frame is wide, with one size stated for all three axes, it was measured at that size. Its
    pixel size is now unknown, with a note saying what to check; the same frames upright, or a
    header giving the frame axis a size of its own, are read as before."""
    from fetaliqa_core.io.sweep import frames_axis_evidence

    frames = _slow_sweep(fan=False)
    stack = np.ascontiguousarray(frames.transpose(2, 1, 0))
    assert frames_axis_evidence(stack) is None
    for name, spacing, suspect in (("one_size.nii.gz", (0.6, 0.6, 0.6), True), ("one_size.nrrd", (0.6, 0.6, 0.6), True),
                                   ("frame_axis.nii.gz", (0.6, 0.6, 1.0), False)):
        image = sitk.GetImageFromArray(stack)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / name))
        sweep = load_sweep(tmp_path / name)
        assert sweep.frames.shape == (150, 120, 40)
        said = [n for n in sweep.read_notes if "far taller than wide" in n]
        if suspect:
            assert said and "frames-first" in said[0] and "Check the frames" in said[0], sweep.read_notes
            assert "may be slices across the sweep" in (sweep.spacing_problem or "")
            assert sweep.with_spacing(0.6).spacing_problem is None  # the user may still give it
        else:
            assert not said and sweep.spacing_problem is None
    upright = sitk.GetImageFromArray(frames)
    upright.SetSpacing((0.6, 0.6, 0.6))
    sitk.WriteImage(upright, str(tmp_path / "upright.nii.gz"))
    sweep = load_sweep(tmp_path / "upright.nii.gz")
    assert sweep.spacing_problem is None and sweep.read_notes == ()


def test_a_short_sweep_saved_frames_first_is_refused_for_what_it_is(tmp_path):
    """numpy's (16, 120, 150) saved as a NIfTI's x, y, z reads as 150 frames of 120 x 16 pixels: it
    was refused as too small, with advice to check for "a thumbnail or a vector field", which did
    not fit the file. The line names the frames-first layout and how to save the sweep."""
    rng = np.random.default_rng(0)
    frames = rng.integers(20, 230, (16, 120, 150)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(frames.transpose(2, 1, 0))),
                    str(tmp_path / "frames_first.nii.gz"))
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(tmp_path / "frames_first.nii.gz")
    message = str(exc.value)
    assert "120 x 16 pixels" in message and "16 frames of 120 x 150 stored frames-first" in message, message
    assert "frames along the last axis" in message and "thumbnail" not in message and "\n" not in message
    # the same narrow frames in a format written frame by frame (a multi-frame .mha here stands for a
    # TIFF's pages or a DICOM's frames) are not blamed on a NIfTI's axes
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(frames.transpose(2, 1, 0))),
                    str(tmp_path / "narrow.mha"))
    with pytest.raises(FetalIQAError, match="at least 32 x 32") as exc:
        load_sweep(tmp_path / "narrow.mha")
    assert "NIfTI" not in str(exc.value)
    # a small stack that is no sweep at all keeps the plain line
    sitk.WriteImage(sitk.GetImageFromArray(frames[:, :20, :20].copy()), str(tmp_path / "small.nii.gz"))
    with pytest.raises(FetalIQAError, match="at least 32 x 32"):
        load_sweep(tmp_path / "small.nii.gz")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_picture_is_read_upright_as_its_exif_orientation_asks(tmp_path, orientation):
    """A phone's photo of a scanner's screen stores its pixels sideways with an EXIF tag saying how
    to turn them: it was read in storage order (the fan on its side) without a word."""
    from PIL import Image, ImageOps

    grey = np.random.default_rng(orientation).integers(0, 255, (60, 90), dtype=np.uint8)
    for mode, pixels in (("L", grey), ("RGB", np.stack([grey] * 3, axis=-1))):
        picture = Image.fromarray(pixels, mode=mode)
        exif = picture.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"photo_{mode}.png"
        picture.save(path, exif=exif.tobytes())
        with Image.open(path) as stored:
            upright = np.asarray(ImageOps.exif_transpose(stored).convert("L"))
        sweep = load_sweep(path)
        assert np.array_equal(sweep.frames[0], upright), (mode, orientation)
        noted = [n for n in sweep.read_notes if "EXIF orientation" in n]
        assert len(noted) == (orientation != 1), sweep.read_notes
    # a TIFF's tag (read with its pages) turns it the same way
    Image.fromarray(grey).save(tmp_path / "photo.tif", tiffinfo={274: orientation})
    assert np.array_equal(load_sweep(tmp_path / "photo.tif").frames[0], upright), orientation


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_grey_label_tiff_that_asks_to_be_turned_is_read_as_its_sweep_is(tmp_path, orientation):
    """The image library reads a TIFF with an EXIF orientation as RGBA: a sweep's is made grey and
    turned, but a grey label mask tagged alike was refused as "4 values per pixel (one-hot
    channels ...)". It is read as its one grey now, turned as the sweep, labels kept."""
    from PIL import Image

    from fetaliqa_core.io import load_mask, read_mask_volume

    labels = np.zeros((3, 48, 72), np.uint8)
    labels[1, 10:30, 5:40] = 1
    labels[2, 20:44, 40:70] = 2
    grey = np.where(labels > 0, 200, 40).astype(np.uint8)

    def save(path, stack):
        pages = [Image.fromarray(a) for a in stack]
        pages[0].save(path, save_all=True, append_images=pages[1:], tiffinfo={274: orientation})

    save(tmp_path / "mask.tif", labels)
    save(tmp_path / "sweep.tif", grey)
    # as a picture viewer shows the first page (6: turned 90 degrees clockwise, 8: counter-clockwise)
    upright = np.rot90(labels[0], k={1: 0, 3: 2, 6: -1, 8: 1}[orientation])
    volume = read_mask_volume(tmp_path / "mask.tif")
    assert volume.labels.shape == (3,) + upright.shape
    assert np.array_equal(volume.labels[0], upright) and set(np.unique(volume.labels)) == {0, 1, 2}
    assert len([n for n in volume.notes if "EXIF orientation" in n]) == (orientation != 1)
    sweep = load_sweep(tmp_path / "sweep.tif")
    on_sweep = load_mask(tmp_path / "mask.tif", like=sweep)  # the shape of the sweep's frames, turned alike
    assert np.array_equal(on_sweep > 0, sweep.frames > 100)
    # colours that are no grey, tagged alike, are still refused as values per pixel
    Image.fromarray(np.stack([labels[1] * 200, labels[1] * 90, labels[1]], axis=-1), mode="RGB").save(
        tmp_path / "colour.tif", tiffinfo={274: orientation})
    with pytest.raises(FetalIQAError, match="values per pixel"):
        read_mask_volume(tmp_path / "colour.tif")


@pytest.mark.parametrize("kept", [0.999, 0.6, 0.2])
def test_a_dicom_file_cut_short_is_called_truncated(tmp_path, kept):
    """A multi-frame DICOM cut anywhere in its pixel data (an interrupted copy) was "a DICOM file
    whose pixels this reader cannot decode ... Export the sweep with 8- or 16-bit grey", for a
    file that already is 8-bit grey: the advice sent the user the wrong way."""
    arr = _grey().astype(np.uint8)
    raw = _dicom(tmp_path / "whole.dcm", arr).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[:int(len(raw) * kept)])
    with pytest.raises(FetalIQAError, match="it is truncated, probably an interrupted copy") as err:
        load_sweep(cut)
    assert "cannot decode" not in str(err.value)


def test_colour_frames_read_as_grey_say_so(tmp_path):
    """RGB frames with a colour Doppler box were made grey without a word: the coloured flow was
    scored as grey structures. Grey saved as RGB says nothing."""
    from PIL import Image

    grey = np.random.default_rng(2).integers(0, 200, (60, 80), dtype=np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "grey_as_rgb.png")
    assert load_sweep(tmp_path / "grey_as_rgb.png").read_notes == ()
    rgb[10:30, 20:50] = (200, 30, 30)  # a red flow box
    Image.fromarray(rgb).save(tmp_path / "doppler.png")
    (note,) = [n for n in load_sweep(tmp_path / "doppler.png").read_notes if "in colour" in n]
    assert "read as grey" in note and note.startswith("12.5%")


def test_padding_after_the_pixel_data_is_read_past_not_refused(tmp_path):
    """Refusing any byte past the pixel data a header describes (a column short reads every row
    askew) also refused valid files with padding: a NIfTI ending in a newline or padded to a
    block, a NRRD with a newline after its data. A few bytes of padding are read past; a column's
    or a row's worth in every frame, or a frame's, is still refused."""
    frames = np.random.default_rng(1).integers(0, 255, (4, 48, 64)).astype(np.uint8)
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.3, 0.3, 1.0))
    for suffix in (".nii", ".nrrd"):
        path = tmp_path / f"sweep{suffix}"
        sitk.WriteImage(image, str(path))
        whole = path.read_bytes()
        for name, tail in (("newline", b"\n"), ("block", bytes(512 - len(whole) % 512))):
            padded = tmp_path / f"{name}{suffix}"
            padded.write_bytes(whole + tail)
            assert np.array_equal(load_sweep(padded).frames, frames), (suffix, name)
        shifted = tmp_path / f"column{suffix}"  # one more pixel in every row of every frame
        shifted.write_bytes(whole + bytes(48 * 4))
        with pytest.raises(FetalIQAError, match="more than the"):
            load_sweep(shifted)


def _tiff_of_pages(path: Path, pages: int, side: int = 1) -> None:
    """A classic TIFF of ``pages`` 8-bit grey pages of ``side`` x ``side`` pixels, written as raw
    bytes (fast)."""
    head = b"II*\x00" + struct.pack("<I", 8)
    ifd_size = 2 + 6 * 12 + 4
    body = bytearray()
    for k in range(pages):
        at = 8 + k * (ifd_size + side * side)
        pixel = at + ifd_size
        tags = [(256, 3, 1, side), (257, 3, 1, side), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, pixel),
                (279, 4, 1, side * side)]
        nxt = at + ifd_size + side * side if k + 1 < pages else 0
        body += struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags)
        body += struct.pack("<I", nxt) + bytes((k * 7 + j) % 256 for j in range(side * side))
    path.write_bytes(head + bytes(body))


def test_a_tiff_of_more_pages_than_frames_accepted_is_refused_before_the_image_library_counts_them(
        tmp_path, monkeypatch):
    """A TIFF of a million one-pixel pages ran for more than ten minutes without an answer: the
    image library counted its pages by walking them all before the frame limit was applied. The
    page chain is refused where it passes the limit, the image library never asked."""
    from PIL import TiffImagePlugin

    from fetaliqa_core import validate

    tif = tmp_path / "pages.tif"
    _tiff_of_pages(tif, 9)
    monkeypatch.setattr(validate, "MAX_FRAMES", 8)
    counted = []
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames",
                        property(lambda self: counted.append(1) or 9))
    with pytest.raises(FetalIQAError, match="more than 8 pages.*at most 8 are accepted"):
        load_sweep(tif)
    assert not counted
    monkeypatch.undo()
    monkeypatch.setattr(validate, "MAX_FRAMES", 8)
    _tiff_of_pages(tif, 8, side=40)  # at the limit: read
    assert len(load_sweep(tif).frames) == 8


def test_compressed_data_counted_only_up_to_a_limit_are_said_to_be_at_least_that(tmp_path):
    """A gzip bomb inflating to 20 GB under a 12 MB header read "the file holds 12582560 bytes of
    pixel data": where inflating stopped counting, presented as what the file holds."""
    arr = (np.arange(8 * 40 * 48) % 251).astype(np.uint8).reshape(8, 40, 48)
    nii = tmp_path / "x.nii"
    sitk.WriteImage(sitk.GetImageFromArray(arr[:2]), str(nii))
    packed = tmp_path / "x.nii.gz"
    packed.write_bytes(gzip.compress(nii.read_bytes() + arr[2:].tobytes()))
    with pytest.raises(FetalIQAError, match="the file holds at least [0-9]+ bytes of pixel data, more than the 3840"):
        load_sweep(packed)
    nii.write_bytes(nii.read_bytes() + arr[2:3].tobytes())  # counted to its end: the number itself
    with pytest.raises(FetalIQAError, match="the file holds 5760 bytes of pixel data, more than the 3840"):
        load_sweep(nii)


def test_a_compressed_dicom_file_cut_short_is_called_truncated_without_pydicoms_warning(tmp_path, capfd):
    """An RLE DICOM cut inside its fragments (an interrupted copy) printed pydicom's two-line
    "UserWarning: End of file reached before delimiter" and then "holds no pixel data ... it is no
    image": the user was told the file was the wrong kind when it was only cut short."""
    pytest.importorskip("pydicom")
    from pydicom.uid import RLELossless

    arr = _grey().astype(np.uint8)
    path = _dicom(tmp_path / "whole.dcm", arr)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[:len(raw) * 2 // 3])
    capfd.readouterr()
    with pytest.raises(FetalIQAError, match="it is truncated, probably an interrupted copy") as err:
        load_sweep(cut)
    assert "no image" not in str(err.value)
    out, said = capfd.readouterr()
    assert "End of file" not in said + out and "Warning" not in said


def test_an_ome_tiff_s_stated_pixel_size_is_named_not_called_a_printing_resolution(tmp_path):
    """An OME-TIFF whose OME-XML states PhysicalSizeX/Y 0.3 mm was told "a TIFF picture records at most
    a printing resolution", untrue of it. Its pixel size is still not read (only an ImageJ scale is),
    and the reason now names what the file states."""
    from PIL import Image, TiffImagePlugin

    frames = [Image.fromarray(f) for f in _grey(n=3).astype(np.uint8)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
                 '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="48" SizeY="40" '
                 'SizeC="1" SizeZ="1" SizeT="3" PhysicalSizeX="0.3" PhysicalSizeXUnit="mm" PhysicalSizeY="0.3" '
                 'PhysicalSizeYUnit="mm"></Pixels></Image></OME>')
    tif = tmp_path / "sweep.ome.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:], tiffinfo=info)
    sweep = load_sweep(tif)
    assert sweep.n_frames == 3 and sweep.spacing_source == SPACING_NONE
    assert "OME metadata states a pixel size (PhysicalSizeX 0.3 mm, PhysicalSizeY 0.3 mm)" in sweep.spacing_problem
    assert "printing resolution" not in sweep.spacing_problem


def test_a_folder_of_exported_pictures_is_refused_saying_what_it_is_and_what_to_do(tmp_path, capsys):
    """A folder of PNG frames was refused as "no DICOM series in this folder", which says neither
    that picture folders are not read nor how to make a sweep of them."""
    from PIL import Image

    from fetaliqa_core.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((30, 40), 60 + i, np.uint8)).save(folder / f"frame_{i}.png")
    with pytest.raises(FetalIQAError, match="a folder of 3 pictures .*multi-page TIFF or an .mha"):
        load_sweep(folder)
    assert main(["score", str(folder), "--model", "demo", "--quiet", "--no-cache", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "a folder of 3 pictures" in err and "Traceback" not in err


def test_a_folder_of_pictures_and_a_video_names_both(tmp_path, capsys):
    """A folder of PNG frames beside a clip.mp4 was refused as "a folder of 5 pictures", with no
    word of the video in it: both kinds are named, and that the video is not read."""
    from PIL import Image

    from fetaliqa_core.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((30, 40), 60 + i, np.uint8)).save(folder / f"frame_{i}.png")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(400))
    said = (r"a folder of 3 pictures \(e\.g\. frame_\d\.png\) and 1 video file\(s\) "
            r"\(e\.g\. clip\.mp4, MP4 / QuickTime, which is not read")
    with pytest.raises(FetalIQAError, match=said):
        load_sweep(folder)
    assert main(["score", str(folder), "--model", "demo", "--quiet", "--no-cache", "--out", str(tmp_path / "o")]) == 1
    assert re.search(said, capsys.readouterr().err)


def _composed_tiff(path, pages, tile=None, orientation=None, compression=1, bits=None, encode=None,
                   predictor=None):
    """A little-endian TIFF of ``pages``, each ``(array, new_subfile_type)`` (an array of height x
    width, or x 3 for RGB, of any integer or float type), stored uncompressed in one strip or in
    ``tile`` (height, width) tiles padded at the edges, with an Orientation tag when given;
    ``compression``: the code written in its Compression tag, ``bits`` in its BitsPerSample (the
    pixels stay as they are unless ``encode``, given a strip's or tile's bytes, returns others),
    ``predictor`` in a Predictor tag."""
    import struct

    out = bytearray(b"II*\x00" + struct.pack("<I", 0))
    link = 4
    for arr, subfile in pages:
        arr = np.asarray(arr)
        h, w = arr.shape[:2]
        spp = arr.shape[2] if arr.ndim == 3 else 1
        chunks = []
        if tile:
            th, tw = tile
            for y in range(0, h, th):
                for x in range(0, w, tw):
                    block = np.zeros((th, tw) + arr.shape[2:], arr.dtype)
                    part = arr[y:y + th, x:x + tw]
                    block[:part.shape[0], :part.shape[1]] = part
                    chunks.append(block.tobytes())
        else:
            chunks.append(arr.tobytes())
        chunks = [encode(chunk) for chunk in chunks] if encode else chunks
        places = []
        for chunk in chunks:
            places.append(len(out))
            out += chunk + (b"\x00" if len(chunk) % 2 else b"")
        fmt = {"u": 1, "i": 2, "f": 3}[arr.dtype.kind]
        tags = {254: (4, [subfile]), 256: (4, [w]), 257: (4, [h]), 258: (3, [bits or 8 * arr.dtype.itemsize] * spp),
                259: (3, [compression]), 262: (3, [2 if spp == 3 else 1]), 277: (3, [spp]), 284: (3, [1]),
                339: (3, [fmt] * spp)}
        if orientation:
            tags[274] = (3, [orientation])
        if predictor is not None:
            tags[317] = (3, [predictor])
        if tile:
            tags.update({322: (3, [tile[1]]), 323: (3, [tile[0]]), 324: (4, places),
                         325: (4, [len(c) for c in chunks])})
        else:
            tags.update({273: (4, places), 278: (4, [h]), 279: (4, [len(chunks[0])])})
        extra = bytearray()  # values longer than an entry's 4 bytes, after the directory
        directory_at = len(out)
        extra_at = directory_at + 2 + 12 * len(tags) + 4
        entries = b""
        for tag in sorted(tags):
            kind, values = tags[tag]
            data = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
            if len(data) <= 4:
                field = data.ljust(4, b"\x00")
            else:
                field = struct.pack("<I", extra_at + len(extra))
                extra += data
            entries += struct.pack("<HHI", tag, kind, len(values)) + field
        struct.pack_into("<I", out, link, directory_at)
        out += struct.pack("<H", len(tags)) + entries
        link = len(out)
        out += struct.pack("<I", 0) + extra
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize("dtype,scale", [(np.uint16, 16), (np.int16, 16), (np.float32, 1 / 255)])
def test_a_tiled_tiff_of_wide_samples_reads_as_the_same_frames_in_strips(tmp_path, dtype, scale):
    """A TIFF of 12-bit content in 16-bit samples (unsigned or signed) stored in tiles was read
    through the image library's 8-bit fallback, which keeps the high byte: every frame at 1/16 of
    its brightness (max 15 of 255), no note, and `score` chose no frame; one of 32-bit floats in
    tiles was refused as "damaged or not an image". Tiles read as the same data in strips does."""
    frames = (_grey(n=3).astype(np.float64) * scale).astype(dtype)
    strips = load_sweep(_composed_tiff(tmp_path / "strips.tif", [(f, 0) for f in frames]))
    tiled = load_sweep(_composed_tiff(tmp_path / "tiled.tif", [(f, 0) for f in frames], tile=(16, 16)))
    assert tiled.n_frames == 3
    assert np.array_equal(np.asarray(tiled.frames), np.asarray(strips.frames))
    assert int(np.asarray(tiled.frames).max()) >= 240  # (the 12-bit sweep spans its depth: not 15)
    assert tiled.read_notes == strips.read_notes and tiled.spacing_source == SPACING_NONE


@pytest.mark.parametrize("tile,chunk,fill", [
    ((32, 32), "tile 1 holds 2048 bytes", "32 x 32 pixels of 12-bit samples fill 1536"),
    (None, "strip 1 holds 8192 bytes", "64 x 64 pixels of 12-bit samples fill 6144")])
def test_a_tiff_whose_bit_depth_disagrees_with_its_pixel_data_is_refused_in_one_line(tmp_path, tile, chunk, fill):
    """A tiled 16-bit TIFF whose BitsPerSample said 12 was decoded as 12-bit samples: garbage
    frames (correlating 0.13 with the picture stored) scored with a best frame and a note blaming
    the axis order. Each page's strips or tiles are checked against what its fields describe, and
    a page that holds more (or less) is refused in one line saying so."""
    frames = (_grey(n=2, h=64, w=64) * 16).astype(np.uint16)
    with pytest.raises(FetalIQAError, match=rf"page 1 does not hold what its header describes: its {chunk}, "
                                            rf"where {fill}; its BitsPerSample"):
        load_sweep(_composed_tiff(tmp_path / "bps12.tif", [(f, 0) for f in frames], tile=tile, bits=12))


def _packbits(data: bytes, row: int) -> bytes:
    """``data`` in PackBits, row by row (rows of ``row`` bytes: TIFF's runs never cross one), as
    literal runs of up to 128 bytes, each after a header of its count - 1."""
    rows = [data[y:y + row] for y in range(0, len(data), row)]
    return b"".join(bytes([len(r[k:k + 128]) - 1]) + r[k:k + 128] for r in rows for k in range(0, len(r), 128))


@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_a_tiff_whose_packbits_data_does_not_decode_to_its_pixels_is_refused_in_one_line(tmp_path, tile):
    """Raw 16-bit pixels under a Compression tag saying PackBits were decoded as noise (correlating
    0.03 with the picture stored) and scored ("best frame 5, p_cls 0.82") without a note. Each
    PackBits strip or tile is decoded for its length: one that decodes to more than its pixels, or
    to fewer, is refused in one line naming the page; PackBits that decodes to its pixels reads as
    the same frames uncompressed."""
    frames = (_grey(n=2) * 16).astype(np.uint16) + np.arange(48, dtype=np.uint16)
    pages = [(f, 0) for f in frames]
    chunk = "tile 1" if tile else "strip 1"
    pixels = "16 x 16" if tile else "48 x 40"
    row = 2 * (16 if tile else 48)
    with pytest.raises(FetalIQAError, match=rf"page 1 does not hold what its header describes: its {chunk}, compressed "
                                            rf"with PackBits, decodes to more than the \d+ bytes that {pixels} pixels "
                                            r"of 16-bit samples fill; its Compression tag"):
        load_sweep(_composed_tiff(tmp_path / "raw.tif", pages, tile=tile, compression=32773))
    with pytest.raises(FetalIQAError, match=rf"its {chunk}, compressed with PackBits, decodes to \d+ bytes, not the"):
        load_sweep(_composed_tiff(tmp_path / "short.tif", pages, tile=tile, compression=32773,
                                  encode=lambda b: _packbits(b, row)[:-row - 1]))  # (its last row left out)
    plain = load_sweep(_composed_tiff(tmp_path / "plain.tif", pages, tile=tile))
    packed = load_sweep(_composed_tiff(tmp_path / "packed.tif", pages, tile=tile, compression=32773,
                                        encode=lambda b: _packbits(b, row)))
    assert np.array_equal(np.asarray(packed.frames), np.asarray(plain.frames))


def _packbits_literal_across_rows(data: bytes) -> bytes:
    """``data`` in PackBits as one stream of literal runs of 128 bytes, ignoring rows."""
    return b"".join(bytes([len(data[k:k + 128]) - 1]) + data[k:k + 128] for k in range(0, len(data), 128))


def _packbits_across_rows(data: bytes) -> bytes:
    """``data`` in PackBits as one stream, runs of a repeated byte (up to 128) running on from one
    row into the next, literal bytes between them."""
    out, k = bytearray(), 0
    while k < len(data):
        n = 1
        while k + n < len(data) and n < 128 and data[k + n] == data[k]:
            n += 1
        if n >= 2:
            out += bytes([257 - n, data[k]])
        else:
            out += bytes([0, data[k]])
        k += n
    return bytes(out)


@pytest.mark.parametrize("encode", [_packbits_across_rows, _packbits_literal_across_rows])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_packbits_tiff_whose_runs_cross_rows_reads_as_written(tmp_path, capfd, dtype, encode):
    """PackBits whose runs run on from one row into the next (each strip encoded whole, as the
    picture library and tifffile read it) was refused as "truncated or damaged" (repeat runs: the
    image library decodes row by row), or read without a word as other pixels (literal runs: 3-44 %
    of the values right): it reads as the same frames uncompressed, without a word on the
    terminal."""
    grey = np.zeros((3, 40, 48), dtype)
    grey[:, 10:30, 5:40] = 180  # (uniform areas: runs of up to 128 bytes that cross rows)
    grey[:, ::5] += np.arange(48, dtype=dtype)
    packed = _composed_tiff(tmp_path / "cross.tif", [(f, 0) for f in grey], compression=32773, encode=encode)
    read = load_sweep(packed)
    plain = load_sweep(_composed_tiff(tmp_path / "plain.tif", [(f, 0) for f in grey]))
    assert np.array_equal(np.asarray(read.frames), np.asarray(plain.frames))
    assert read.spacing_source == plain.spacing_source and read.read_notes == plain.read_notes
    assert "row" not in capfd.readouterr().err


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_packbits_tiff_written_by_the_picture_library_still_reads(tmp_path, dtype):
    """The PackBits check reads what libtiff writes, a shorter last strip included: 8- and 16-bit
    frames come back as written."""
    from PIL import Image

    grey = np.random.default_rng(1).integers(0, 200, (3, 45, 64)).astype(dtype) * (200 if dtype == np.uint16 else 1)
    images = [Image.fromarray(f) for f in grey]
    images[0].save(tmp_path / "pb.tif", compression="packbits", save_all=True, append_images=images[1:],
                   strip_size=64 * 4 * grey.itemsize)
    plain = _composed_tiff(tmp_path / "plain.tif", [(f, 0) for f in grey])
    assert np.array_equal(np.asarray(load_sweep(tmp_path / "pb.tif").frames), np.asarray(load_sweep(plain).frames))


@pytest.mark.parametrize("predictor,said", [(4, "says 4, a value TIFF does not define"),
                                            (3, r"says 3 \(floating point\) on integer samples")])
def test_a_tiff_whose_predictor_cannot_apply_is_refused_naming_it(tmp_path, capfd, predictor, said):
    """A deflate TIFF whose Predictor tag held a value TIFF does not define (or the floating-point
    one on integers) was refused as "truncated or damaged; copy it again", with the TIFF library's
    complaint on the terminal. Refused in one line naming the Predictor."""
    import zlib

    frames = (_grey(n=2) * 16).astype(np.uint16)
    with pytest.raises(FetalIQAError, match=rf"page 1 does not hold what its header describes: its Predictor tag {said}"):
        load_sweep(_composed_tiff(tmp_path / "pred.tif", [(f, 0) for f in frames], compression=8,
                                  encode=zlib.compress, predictor=predictor))
    assert capfd.readouterr().err == ""


def test_a_tiff_stored_with_a_predictor_its_tag_leaves_out_is_not_put_down_to_the_axes_alone(tmp_path):
    """Deflated pixels stored with horizontal differencing under a Predictor tag saying none
    decode to noise; its only note said the file stores its frames along another axis. The note
    names the Predictor; the same pixels with the tag right read as stored, without a note."""
    import zlib

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:96, :128]
    blob = ((yy - 48) ** 2 / 30 ** 2 + (xx - 64) ** 2 / 40 ** 2) < 1
    frames = np.stack([(rng.integers(20, 60, (96, 128)) + 120 * blob) for _ in range(8)]).astype(np.uint16) * 200
    pages = [(np.diff(f, axis=1, prepend=np.uint16(0)), 0) for f in frames]  # (horizontal differencing)
    wrong = load_sweep(_composed_tiff(tmp_path / "off.tif", pages, compression=8, encode=zlib.compress, predictor=1))
    assert any("compressed with deflate and its Predictor tag says none" in note for note in wrong.read_notes)
    right = load_sweep(_composed_tiff(tmp_path / "on.tif", pages, compression=8, encode=zlib.compress, predictor=2))
    plain = load_sweep(_composed_tiff(tmp_path / "plain.tif", [(f, 0) for f in frames]))
    assert np.array_equal(np.asarray(right.frames), np.asarray(plain.frames))
    assert right.read_notes == plain.read_notes and not any("Predictor" in n for n in right.read_notes)


def test_a_refusal_of_a_page_of_many_samples_names_their_true_bit_depth(tmp_path):
    """A page of 96 samples a pixel (a list of bit depths too long to read) was refused for its
    strip length as "1-bit samples" where BitsPerSample said 8. The depth it says is read."""
    page = np.zeros((40, 48, 20), np.uint8)
    with pytest.raises(FetalIQAError, match=r"its strip 1 holds 38400 bytes, where 48 x 40 pixels of 16-bit samples, "
                                            r"20 a pixel fill 76800"):
        load_sweep(_composed_tiff(tmp_path / "many.tif", [(page, 0)], bits=16))


def test_a_tiff_whose_strips_hold_a_pad_byte_past_their_pixels_is_read(tmp_path):
    """Strips of an odd length padded by one byte (StripByteCounts one more than the pixels need),
    which libtiff and Pillow read, were refused as "damaged or crafted" by the check of a strip's
    length against its bit depth; less than a row more cannot be another bit depth."""
    import struct

    n, h, w = 3, 39, 41  # (h * w odd: one pad byte makes each strip even)
    frames = np.random.default_rng(0).integers(0, 256, (n, h, w), dtype=np.uint8)
    out, offsets, ifds = bytearray(b"II*\x00\0\0\0\0"), [], []
    for f in frames:
        offsets.append(len(out))
        out += f.tobytes() + b"\0"
    for k in range(n):
        entries = [(256, 3, w), (257, 3, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, offsets[k]),
                   (277, 3, 1), (278, 3, h), (279, 4, h * w + 1)]
        ifds.append(len(out))
        out += struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", v, 0) if kind == 3 else struct.pack("<I", v))
            for tag, kind, v in entries) + b"\0\0\0\0"
    struct.pack_into("<I", out, 4, ifds[0])
    for k in range(n - 1):
        struct.pack_into("<I", out, ifds[k] + 2 + 9 * 12, ifds[k + 1])
    (tmp_path / "padded.tif").write_bytes(bytes(out))
    sweep = load_sweep(tmp_path / "padded.tif")
    assert np.array_equal(np.asarray(sweep.frames), frames)


def test_tiles_of_wide_samples_that_do_not_decode_are_refused_in_one_line(tmp_path, capfd):
    """Tiles labelled LZW that hold no LZW data: one line of the reader's own, saying what to save,
    and not the TIFF library's complaint on the terminal as well."""
    frames = (_grey(n=2) * 16).astype(np.uint16)
    with pytest.raises(FetalIQAError, match=r"cannot be decoded .*Save the frames alone, in strips \(not tiles\)"):
        load_sweep(_composed_tiff(tmp_path / "lzw.tif", [(f, 0) for f in frames], tile=(16, 16), compression=5))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_a_16_bit_tiff_that_asks_to_be_turned_is_refused_not_read_by_its_high_byte(tmp_path, tile):
    """The image library reads a TIFF with an EXIF orientation through the same 8-bit fallback: a
    12-bit sweep in strips tagged "turned 90 degrees" was shown at 1/16 of its brightness, without
    a word. Refused in one line saying what to save; an 8-bit one still reads turned."""
    frames = (_grey(n=2) * 16).astype(np.uint16)
    with pytest.raises(FetalIQAError, match="asks to be shown turned 90 degrees clockwise .*Save the frames upright"):
        load_sweep(_composed_tiff(tmp_path / "turned16.tif", [(f, 0) for f in frames], tile=tile, orientation=6))
    grey = _grey(n=2).astype(np.uint8)
    turned = load_sweep(_composed_tiff(tmp_path / "turned8.tif", [(f, 0) for f in grey], tile=tile, orientation=6))
    assert np.array_equal(np.asarray(turned.frames), np.rot90(grey, k=3, axes=(1, 2)))


def test_tiled_16_bit_colour_is_read_when_it_spans_16_bits_and_refused_when_not(tmp_path):
    """Tiled 16-bit colour reaches FetalIQA as each sample's high byte (the picture library reads
    it so too): right for an 8-bit picture stored x257, near black for 12-bit content, which was
    read so without a word."""
    grey = _grey(n=2).astype(np.uint16)
    rgb = np.stack([grey] * 3, axis=-1)
    full = load_sweep(_composed_tiff(tmp_path / "x257.tif", [(f * 257, 0) for f in rgb], tile=(16, 16)))
    assert np.array_equal(np.asarray(full.frames), grey.astype(np.uint8))
    with pytest.raises(FetalIQAError, match="16-bit colour stored in tiles whose values do not span the 16 bits"):
        load_sweep(_composed_tiff(tmp_path / "x16.tif", [(f * 16, 0) for f in rgb], tile=(16, 16)))


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_tiff_s_thumbnail_page_is_left_out_with_a_note(tmp_path, where):
    """A multi-page TIFF with a page marked as a reduced-resolution copy (NewSubfileType 1, a
    thumbnail) was refused whole as pages of different sizes. The thumbnail is left out, said so,
    and the frames read as the same TIFF without it; a smaller page not marked so is still
    refused."""
    frames = _grey(n=3).astype(np.uint8)
    thumb = (np.asarray(frames[0][::4, ::4]), 1)
    pages = [(f, 0) for f in frames]
    pages = [thumb] + pages if where == "first" else pages + [thumb]
    plain = load_sweep(_composed_tiff(tmp_path / "plain.tif", [(f, 0) for f in frames]))
    sweep = load_sweep(_composed_tiff(tmp_path / "thumb.tif", pages))
    assert sweep.n_frames == 3 and np.array_equal(np.asarray(sweep.frames), np.asarray(plain.frames))
    page = 1 if where == "first" else 4
    assert any(f"reduced-resolution copies (a thumbnail or preview: page {page})" in note for note in sweep.read_notes)
    unmarked = [(f, 0) for f in frames] + [(thumb[0], 0)]
    with pytest.raises(FetalIQAError, match="pages are of different sizes"):
        load_sweep(_composed_tiff(tmp_path / "unmarked.tif", unmarked))


def test_a_tiff_of_frames_too_small_is_refused_before_its_pages_are_surveyed(tmp_path, monkeypatch):
    """A TIFF of 19 000 pages of 16 x 16 took 54 s to be refused as frames too small: every page
    was surveyed with the picture library first. The size is checked from the directories walked
    for damage; a mask's pages are not held to a frame's least size there."""
    from fetaliqa_core.io import readers

    def surveyed(path):
        raise AssertionError("the pages were surveyed")

    pages = [(np.full((16, 16), 100 + k, np.uint8), 0) for k in range(3)]
    path = _composed_tiff(tmp_path / "tiny.tif", pages)
    monkeypatch.setattr(readers, "_tiff_pages", surveyed)
    with pytest.raises(FetalIQAError, match=r"frames are 16 x 16 pixels \(height x width\); at least 32 x 32"):
        load_sweep(path)
    readers._refuse_damaged_tiff(path)  # (a mask's: no frame size asked)


@pytest.mark.parametrize("marks", [[0, 1, 0, 1], [1, 1, 1, 0]])
def test_a_tiff_page_as_large_as_the_frames_is_a_frame_whatever_its_mark(tmp_path, marks):
    """Pages marked as reduced-resolution copies (NewSubfileType 1) but of the frames' full size
    were left out as thumbnails: a sweep whose frames a writer marked so lost them (8 frames
    dropped and one blank page scored). Only smaller pages are thumbnails; these are read as
    frames, with a note; a smaller marked page is still left out."""
    frames = _grey(n=4).astype(np.uint8)
    plain = load_sweep(_composed_tiff(tmp_path / "plain.tif", [(f, 0) for f in frames]))
    pages = [(f, mark) for f, mark in zip(frames, marks)] + [(np.asarray(frames[0][::4, ::4]), 1)]
    sweep = load_sweep(_composed_tiff(tmp_path / "marked.tif", pages))
    assert sweep.n_frames == 4 and np.array_equal(np.asarray(sweep.frames), np.asarray(plain.frames))
    assert any(f"{sum(marks)} page(s) of the TIFF are marked as reduced-resolution copies (a thumbnail or preview) "
               "but are as large as the frames: they are read as frames" in note for note in sweep.read_notes)
    assert any("(a thumbnail or preview: page 5) and are left out" in note for note in sweep.read_notes)


def test_a_still_gif_is_read_as_a_one_frame_picture(tmp_path):
    """A valid single-frame GIF (grey or colour) was called "damaged or cut short. Copy or export
    it again", which could not help: the image library has no GIF reader. It reads as a one-frame
    picture with the pixel size unknown; an animated GIF is still refused as video."""
    from PIL import Image

    grey = _grey(n=2).astype(np.uint8)
    Image.fromarray(grey[0]).save(tmp_path / "grey.gif")
    sweep = load_sweep(tmp_path / "grey.gif")
    assert sweep.n_frames == 1 and np.array_equal(np.asarray(sweep.frames)[0], grey[0])
    assert sweep.spacing_source == SPACING_NONE and "GIF picture records no pixel size" in sweep.spacing_problem
    colour = np.stack([grey[0]] * 3, axis=-1)
    colour[:8, :8] = (255, 0, 0)  # a red mark
    Image.fromarray(colour).save(tmp_path / "colour.gif")
    sweep = load_sweep(tmp_path / "colour.gif")
    assert sweep.n_frames == 1 and np.array_equal(np.asarray(sweep.frames)[0, 8:, 8:], grey[0, 8:, 8:])
    frames = [Image.fromarray(f) for f in (grey[0], 255 - grey[1])]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(FetalIQAError, match=r"a video file \(GIF animation\)"):
        load_sweep(tmp_path / "anim.gif")


@pytest.mark.parametrize("side", [65535, 9000])
def test_a_gif_whose_screen_is_too_large_is_told_so(tmp_path, side):
    """A 43-byte GIF declaring a 65535 x 65535 screen (past the picture library's bomb limit) was
    "damaged or cut short. Copy or export it again", where a 9000 x 9000 one got the size line."""
    import struct

    from PIL import Image

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "big.gif")
    data = bytearray((tmp_path / "big.gif").read_bytes())
    struct.pack_into("<HH", data, 6, side, side)
    (tmp_path / "big.gif").write_bytes(bytes(data))
    with pytest.raises(FetalIQAError, match=rf"frames of {side} x {side} pixels .*at most 4096 per side are accepted"):
        load_sweep(tmp_path / "big.gif")


@pytest.mark.parametrize("name,head,kind", [
    ("clip.wmv", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c", "Windows Media"),
    ("clip.flv", b"FLV\x01\x05\x00\x00\x00\x09", "Flash video"),
    ("clip.ogv", b"OggS\x00\x02", "Ogg"),
    ("clip.rm", b".RMF\x00\x00\x00\x12", "RealMedia"),
    ("clip.ts", (b"\x47" + bytes(187)) * 3, "MPEG transport stream"),
    ("clip.m2ts", (bytes(4) + b"\x47" + bytes(187)) * 3, "MPEG transport stream"),
    ("clip.webm", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "Matroska / WebM"),
    ("clip.3gp", b"\x00\x00\x00\x14ftyp3gp4", "MP4 / QuickTime")])
def test_other_video_files_get_the_video_line(tmp_path, name, head, kind):
    """A Windows Media video (.wmv) got "not a readable image file (no supported image header
    found)" where MP4, AVI and Matroska got the line saying video is not read and what to export."""
    (tmp_path / name).write_bytes(head + bytes(400))
    with pytest.raises(FetalIQAError, match=rf"a video file \({re.escape(kind)}\); FetalIQA reads sweeps from image"):
        load_sweep(tmp_path / name)


@pytest.mark.parametrize("rows_per_strip", [None, 8])
def test_a_tiff_whose_width_is_a_pixel_short_is_refused_not_read_sheared(tmp_path, rows_per_strip):
    """Every page's ImageWidth one pixel short of the rows its strips hold: each row was read one pixel
    further along than the last, a sheared picture scored without a word (less than a row more per
    strip passed as a writer's padding). A whole pixel more on every row of every strip is refused;
    the same file with its width right reads as written."""
    from PIL import Image

    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 49), dtype=np.uint8)
    right, short = tmp_path / "right.tif", tmp_path / "short.tif"
    extra = {} if rows_per_strip is None else {"tiffinfo": {278: rows_per_strip}}
    pages = [Image.fromarray(f) for f in frames]
    pages[0].save(right, save_all=True, append_images=pages[1:], **extra)
    sweep = load_sweep(right)
    assert np.array_equal(np.asarray(sweep.frames), frames)
    data = bytearray(right.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    while ifd:  # every page's ImageWidth (tag 256, SHORT or LONG) one less
        count = struct.unpack_from("<H", data, ifd)[0]
        for k in range(count):
            at = ifd + 2 + 12 * k
            tag, kind = struct.unpack_from("<HH", data, at)
            if tag == 256:
                struct.pack_into("<H" if kind == 3 else "<I", data, at + 8, 48)
        ifd = struct.unpack_from("<I", data, ifd + 2 + 12 * count)[0]
    short.write_bytes(bytes(data))
    with pytest.raises(FetalIQAError, match=r"1 pixel more on every row than its width of 48 says.*ImageWidth is wrong"):
        load_sweep(short)


def _count_header_reads(monkeypatch) -> list[Path]:
    """Every DICOM header the readers parse, and the image library's folder scan made to fail."""
    from fetaliqa_core.io import readers

    read = []
    real = readers.dcmread_bounded

    def counted(path, **options):
        read.append(Path(path))
        return real(path, **options)

    def no_scan(*args):
        raise AssertionError("the folder was scanned")

    monkeypatch.setattr(readers, "dcmread_bounded", counted)
    monkeypatch.setattr(sitk.ImageSeriesReader, "GetGDCMSeriesIDs", staticmethod(no_scan))
    return read


def test_a_dicom_folder_of_too_many_files_is_refused_on_their_number_before_any_is_parsed(tmp_path, monkeypatch):
    """A folder of 28,847 tiny DICOM files took 281 s (every header parsed, then the image library's
    scan) to say it held more files than a sweep may have frames: their number says so at once."""
    from fetaliqa_core import validate

    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(7):
        _dicom(folder / f"IM{k:05d}.dcm", _grey(n=1)[0], series="1.2.3.70", instance=k + 1)
    monkeypatch.setattr(validate, "MAX_SERIES_FILES", 5)
    read = _count_header_reads(monkeypatch)
    with pytest.raises(FetalIQAError, match="holds 7 DICOM files, more than the 5 frames a sweep may have"):
        load_sweep(folder)
    assert not read


def test_a_dicom_folder_of_many_tiny_frames_is_refused_from_its_first_files(tmp_path, monkeypatch):
    """19,000 DICOM files of 8 x 8 pixels took 190 s (each parsed, then the scan) before "frames are
    8 x 8": the first files' headers say it."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for k in range(40):
        _dicom(folder / f"IM{k:05d}.dcm", np.full((8, 8), k, np.uint8), series="1.2.3.71", instance=k + 1)
    read = _count_header_reads(monkeypatch)
    with pytest.raises(FetalIQAError, match=r"frames are 8 x 8 pixels .* first 16 of its 40 DICOM files"):
        load_sweep(folder)
    assert len(read) <= 16


def test_a_dicom_folder_of_one_file_gets_that_file_s_checks_before_the_scan(tmp_path, monkeypatch):
    """A folder holding one DICOM file with gigabytes appended after its pixel data kept the image
    library's scan busy for minutes, silent and deaf to Ctrl-C; the file chosen itself is refused at
    once. The folder's file gets the same checks, before the scan."""
    folder = tmp_path / "one"
    folder.mkdir()
    good = _dicom(tmp_path / "good.dcm", _grey().astype(np.uint8))
    (folder / "huge.dcm").write_bytes(good.read_bytes() + struct.pack("<HH", 0x7FE0, 0x0020) + b"OB\0\0"
                                      + struct.pack("<I", 0xC0000000))
    _count_header_reads(monkeypatch)
    with pytest.raises(FetalIQAError, match="goes on after its pixel data"):
        load_sweep(folder)
