"""Pixel spacing provenance: known from the file or its DICOM ultrasound calibration, unknown, or
implausible for obstetric ultrasound (then no length may be shown)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fakes import us_dicom

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io import (
    PLAUSIBLE_SPACING_MM,
    SPACING_FROM_DICOM_PIXEL_SPACING,
    SPACING_FROM_HEADER,
    SPACING_FROM_US_REGION,
    SPACING_FROM_USER,
    SPACING_NONE,
    load_sweep,
    write_volume,
)

pydicom = pytest.importorskip("pydicom")



def _frames(n: int = 4, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def _region(x0: int, y0: int, x1: int, y1: int, dx_cm: float, dy_cm: float, units: int = 3):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat = 1  # 2-D tissue
    r.RegionDataType = 1
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = units
    r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX = dx_cm
    r.PhysicalDeltaY = dy_cm
    return r


def write_us_dicom(path: Path, arr: np.ndarray, regions=(), pixel_spacing=None) -> None:
    """A multi-frame ultrasound DICOM file with an optional Sequence of Ultrasound Regions."""
    from pydicom.sequence import Sequence

    attrs = {}
    if regions:
        attrs["SequenceOfUltrasoundRegions"] = Sequence(list(regions))
    if pixel_spacing is not None:
        attrs["PixelSpacing"] = list(pixel_spacing)
    us_dicom(path, arr, **attrs)


def test_dicom_ultrasound_region_calibration_is_read(tmp_path):
    arr = _frames()
    path = tmp_path / "us.dcm"
    # Physical Delta in cm: 0.028 cm = 0.28 mm per column, 0.03 cm = 0.3 mm per row.
    write_us_dicom(path, arr, regions=[_region(0, 0, 47, 39, dx_cm=0.028, dy_cm=0.03)])
    sweep = load_sweep(path)
    np.testing.assert_array_equal(sweep.frames, arr)
    assert sweep.spacing_mm == pytest.approx((0.3, 0.28))
    assert sweep.spacing_source == SPACING_FROM_US_REGION
    assert sweep.spacing_known and sweep.spacing_plausible and sweep.spacing_problem is None
    assert sweep.measurement_spacing_mm == pytest.approx((0.3, 0.28))


def test_dicom_largest_calibrated_region_wins_over_a_doppler_strip(tmp_path):
    arr = _frames(h=60)
    path = tmp_path / "us.dcm"
    write_us_dicom(path, arr, regions=[
        _region(0, 0, 47, 9, dx_cm=0.5, dy_cm=0.5, units=4),        # seconds: a spectral strip
        _region(0, 10, 47, 15, dx_cm=0.05, dy_cm=0.05),             # small calibrated strip
        _region(0, 16, 47, 59, dx_cm=0.025, dy_cm=0.025),           # the B-mode image
    ])
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_FROM_US_REGION
    assert sweep.spacing_mm == pytest.approx((0.25, 0.25))
    # a strip 6 rows high is no image: not counted among the image's calibrations either
    assert sweep.spacing_note == ""


def test_dicom_region_too_small_to_be_the_image_does_not_calibrate_it(tmp_path):
    """A calibrated region of one pixel (or any strip or thumbnail under 32 pixels) gave the whole
    frame its Physical Deltas: the frames are not cut to such a region, and its size is not theirs."""
    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames(), regions=[_region(5, 5, 5, 5, dx_cm=0.05, dy_cm=0.05)])
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE and not sweep.spacing_known
    assert sweep.measurement_spacing_mm is None
    assert "only a region of 1 x 1 pixels, too small" in sweep.spacing_note
    # beside a Pixel Spacing, that one gives the size
    path = tmp_path / "us2.dcm"
    write_us_dicom(path, _frames(), regions=[_region(0, 0, 47, 20, dx_cm=0.05, dy_cm=0.05)],
                   pixel_spacing=(0.3, 0.28))
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_FROM_DICOM_PIXEL_SPACING
    assert sweep.spacing_mm == pytest.approx((0.3, 0.28))


def test_dicom_regions_without_cm_units_and_no_pixel_spacing_are_unknown(tmp_path):
    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames(), regions=[_region(0, 0, 47, 39, 0.5, 0.5, units=4)])
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE and not sweep.spacing_known
    assert sweep.measurement_spacing_mm is None
    assert "not calibrated in cm" in sweep.spacing_problem


def test_dicom_region_in_cm_with_a_zero_delta_says_so(tmp_path):
    """A region in cm whose Physical Delta X is 0 was said to be "not calibrated in cm": its units
    are cm, its size is what is missing."""
    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames(), regions=[_region(0, 0, 47, 39, 0.0, 0.03)])
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE
    assert "Physical Delta X 0" in sweep.spacing_note and "no length" in sweep.spacing_note
    assert "not calibrated in cm" not in sweep.spacing_note


def test_dicom_without_any_calibration_is_unknown(tmp_path):
    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames())
    sweep = load_sweep(path)
    assert not sweep.spacing_known
    assert "no ultrasound region calibration" in sweep.spacing_problem


def test_dicom_pixel_spacing_is_used_without_regions(tmp_path):
    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames(), pixel_spacing=(0.3, 0.28))
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_FROM_DICOM_PIXEL_SPACING
    assert sweep.spacing_mm == pytest.approx((0.3, 0.28))


def test_dicom_series_folder_reads_the_calibration(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    arr = _frames(1)
    write_us_dicom(folder / "a.dcm", arr, regions=[_region(0, 0, 47, 39, 0.028, 0.03)])
    sweep = load_sweep(folder)
    assert sweep.spacing_source == SPACING_FROM_US_REGION
    assert sweep.spacing_mm == pytest.approx((0.3, 0.28))


def test_nifti_written_without_spacing_is_spacing_unknown(tmp_path):
    path = tmp_path / "nospacing.nii.gz"
    img = sitk.GetImageFromArray(_frames())  # no SetSpacing: the writer records 1.0
    sitk.WriteImage(img, str(path))
    assert sitk.ReadImage(str(path)).GetSpacing() == (1.0, 1.0, 1.0)
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE
    assert not sweep.spacing_known and not sweep.spacing_plausible
    assert sweep.measurement_spacing_mm is None
    problem = sweep.spacing_problem
    assert "unknown" in problem and "not shown" in problem and "\n" not in problem


def test_metaimage_without_element_spacing_is_spacing_unknown(tmp_path):
    path = tmp_path / "nospacing.mha"
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = False\n"
              "DimSize = 48 40 2\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + bytes(48 * 40 * 2))
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE
    assert "records no pixel spacing" in sweep.spacing_problem


@pytest.mark.parametrize("name", ["s.mha", "s.nrrd", "s.nii.gz"])
def test_spacing_from_the_header_is_known_and_plausible(tmp_path, name):
    write_volume(tmp_path / name, _frames(), spacing_mm=(0.3, 0.28), compress=name != "s.mha")
    sweep = load_sweep(tmp_path / name)
    assert sweep.spacing_source == SPACING_FROM_HEADER
    assert sweep.measurement_spacing_mm == pytest.approx((0.3, 0.28))


@pytest.mark.parametrize("spacing", [(3.0, 3.0), (0.01, 0.01), (0.28, 1.5)])
def test_implausible_spacing_hides_lengths(tmp_path, spacing):
    write_volume(tmp_path / "s.mha", _frames(), spacing_mm=spacing)
    sweep = load_sweep(tmp_path / "s.mha")
    assert sweep.spacing_known and not sweep.spacing_plausible
    assert sweep.measurement_spacing_mm is None
    assert "implausible for obstetric ultrasound" in sweep.spacing_problem


def test_user_spacing_makes_lengths_measurable_and_keeps_the_content_hash(tmp_path):
    path = tmp_path / "nospacing.nii"
    sitk.WriteImage(sitk.GetImageFromArray(_frames()), str(path))
    sweep = load_sweep(path)
    given = sweep.with_spacing(0.28)
    assert given.spacing_source == SPACING_FROM_USER
    assert given.measurement_spacing_mm == (0.28, 0.28)
    assert given.content_hash == sweep.content_hash
    assert given.frames is sweep.frames


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 5.0, "abc"])
def test_user_spacing_outside_the_plausible_range_is_refused(tmp_path, bad):
    path = tmp_path / "s.mha"
    write_volume(path, _frames())
    with pytest.raises(FetalIQAError, match="mm per pixel"):
        load_sweep(path).with_spacing(bad)


def test_plausible_range_is_documented_and_contains_acouslic():
    lo, hi = PLAUSIBLE_SPACING_MM
    assert lo <= 0.28 < hi and hi <= 1.0


@pytest.mark.parametrize("change,expected", [
    (lambda ds: setattr(ds, "NumberOfFrames", 5000), "needs"),   # 5000 frames claimed, 4 stored
    (lambda ds: setattr(ds, "BitsAllocated", 16), "needs"),      # 8-bit pixels read as 16-bit
    (lambda ds: setattr(ds, "BitsAllocated", 12), "12 bits"),
], ids=["frames claimed", "16 bits over 8", "12 bits"])
def test_dicom_whose_pixel_data_is_shorter_than_its_header_is_refused_before_reading(tmp_path, change, expected):
    """A DICOM header that claims more pixel data than the file holds is refused from the header
    alone (one line, what to do), before the image reader allocates what the header claims or
    pads the missing frames with zeros; in a series folder as well."""
    from fetaliqa_core.errors import FetalIQAError

    path = tmp_path / "us.dcm"
    write_us_dicom(path, _frames(), pixel_spacing=(0.3, 0.3))
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(str(path))
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(path)
    msg = str(exc.value)
    assert expected in msg and "\n" not in msg and ("Export" in msg or "Copy" in msg)
    series = tmp_path / "series"
    series.mkdir()
    path.rename(series / "us.dcm")
    write_us_dicom(series / "us2.dcm", _frames(), pixel_spacing=(0.3, 0.3))
    other = pydicom.dcmread(series / "us2.dcm")  # the same series as the damaged file
    other.StudyInstanceUID, other.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    other.InstanceNumber, ds.InstanceNumber = 2, 1
    other.save_as(str(series / "us2.dcm"))
    ds.save_as(str(series / "us.dcm"))
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(series)
    assert "us.dcm" in str(exc.value)


def test_a_damaged_file_of_a_series_is_named_not_dropped_and_other_series_are_left_alone(tmp_path):
    """A series folder whose third file is cut short: the series scan leaves it out, which would
    make a sweep with a frame missing and no word said; it is named instead. A file of another
    series in the same folder (a localiser) is left out without complaint."""
    from fetaliqa_core.errors import FetalIQAError

    folder = tmp_path / "series"
    folder.mkdir()
    first = None
    for k in range(3):
        write_us_dicom(folder / f"f{k}.dcm", _frames(1), pixel_spacing=(0.3, 0.3))
        ds = pydicom.dcmread(folder / f"f{k}.dcm")
        first = first or ds
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = first.StudyInstanceUID, first.SeriesInstanceUID, k + 1
        ds.save_as(str(folder / f"f{k}.dcm"))
    write_us_dicom(folder / "localiser.dcm", _frames(1), pixel_spacing=(0.3, 0.3))  # another series
    assert load_sweep(folder).n_frames == 3
    data = (folder / "f2.dcm").read_bytes()
    (folder / "f2.dcm").write_bytes(data[: len(data) - 700])
    with pytest.raises(FetalIQAError) as exc:
        load_sweep(folder)
    assert "f2.dcm" in str(exc.value) and "localiser" not in str(exc.value)


def test_the_field_of_view_is_looked_for_inside_the_image_regions_the_file_names(tmp_path):
    """A scanner screen: a large grey control panel and a spectral Doppler strip beside the image.
    The field of view was the largest bright region of the whole screen, the panel (an abdomen in
    the fan then had 'no AC: too small or cut off'); the strip took it in duplex mode; of a dual
    display only one image was used."""
    from types import SimpleNamespace

    import cv2

    from fetaliqa_core.acouslic import sweep_fov

    rng = np.random.default_rng(4)
    h, w = 300, 520
    frames = np.zeros((6, h, w), np.uint8)
    fan = np.zeros((h, w), np.uint8)
    cv2.ellipse(fan, (100, 10), (150, 150), 90, -35, 35, 1, -1)  # a sector fan at left
    second = np.zeros((h, w), np.uint8)
    cv2.ellipse(second, (270, 10), (150, 150), 90, -35, 35, 1, -1)  # a second image beside it
    frames[:, fan != 0] = rng.integers(30, 120, (6, int(fan.sum())), dtype=np.uint8)
    frames[:, second != 0] = rng.integers(30, 120, (6, int(second.sum())), dtype=np.uint8)
    frames[:, 20:290, 360:515] = 128  # the scanner's grey panel, larger than either fan
    frames[:, 200:290, 20:340] = np.maximum(frames[:, 200:290, 20:340], 8)  # a strip's noise floor
    strip = _region(20, 200, 339, 289, dx_cm=0.01, dy_cm=1.0, units=4)
    strip.RegionSpatialFormat, strip.RegionDataType = 3, 3  # spectral Doppler
    path = tmp_path / "screen.dcm"
    write_us_dicom(path, frames, regions=[_region(0, 0, 185, 170, 0.03, 0.03),
                                          _region(186, 0, 355, 170, 0.03, 0.03), strip])
    sweep = load_sweep(path)
    # the frames are cut to the two images (the panel and the strip are no part of what is scored)
    assert sweep.crop == ((0, 0, 355, 170), (h, w)) and sweep.frames.shape == (6, 171, 356)
    assert np.array_equal(sweep.frames, frames[:, :171, :356])
    assert any("cut to the ultrasound image" in n for n in sweep.read_notes)
    assert sweep.image_regions == ((0, 0, 185, 170), (186, 0, 355, 170))
    fov = sweep_fov(sweep)
    truth = ((fan != 0) | (second != 0))[:171, :356]
    assert (fov & truth).sum() / (fov | truth).sum() > 0.9  # both images of the dual display
    # the same screen with the panel inside the regions' rectangle: the fan is still looked for in
    # each region, not on the panel (the largest bright region)
    uncut = SimpleNamespace(frames=frames, height=h, width=w, n_frames=6,
                            image_regions=((0, 0, 185, 170), (186, 0, 355, 170)))
    fov = sweep_fov(uncut)
    assert not fov[:, 360:].any() and not fov[200:].any()
    # a mask drawn on the whole screen is cut as the frames are
    from fetaliqa_core.io import crop_like

    assert crop_like(np.zeros((6, h, w), np.uint8), sweep).shape == (6, 171, 356)
    # without regions (another format), the largest region is still what the frames show
    write_volume(tmp_path / "screen.mha", frames)
    assert not load_sweep(tmp_path / "screen.mha").image_regions


def test_a_mask_drawn_on_the_whole_screen_is_measured_on_the_cut_frames(tmp_path, capsys):
    import json

    import cv2

    from fetaliqa_core.cli import main

    h, w = 400, 600
    frames = np.zeros((3, h, w), np.uint8)
    frames[:, 50:350, 100:400] = 60  # the image; a grey panel at the right
    frames[:, 20:380, 450:590] = 128
    cv2.ellipse(frames[1], (250, 200), (80, 70), 0, 0, 360, 150, -1)
    path = tmp_path / "screen.dcm"
    write_us_dicom(path, frames, regions=[_region(100, 50, 399, 349, 0.03, 0.03)])
    masks = np.zeros((3, h, w), np.uint8)
    cv2.ellipse(masks[1], (250, 200), (80, 70), 0, 0, 360, 1, -1)
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(tmp_path / "mask.mha"))
    assert main(["ac", str(tmp_path / "mask.mha"), "--sweep", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    truth = 2 * np.pi * np.sqrt((80 ** 2 + 70 ** 2) / 2) * 0.3
    assert record["frame"] == 1 and abs(record["ac_mm"] - truth) / truth < 0.03
    assert any("cut to the ultrasound image" in n for n in record["read_notes"])
    # a mask whose own pixel size agrees: the sweep's calibration is named as the source, not the mask's header
    image = sitk.GetImageFromArray(masks)
    image.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(image, str(tmp_path / "mask03.mha"))
    assert main(["ac", str(tmp_path / "mask03.mha"), "--sweep", str(path), "--json"]) == 0
    source = json.loads(capsys.readouterr().out)["spacing_source"]
    assert source.startswith("its sweep's DICOM ultrasound region calibration") and "agrees" in source


def test_a_colour_box_alone_says_nothing_of_where_the_image_lies(tmp_path):
    """A file listing only its colour-flow box (no tissue region) would have had its frames cut to
    the box: only tissue regions (or regions of no stated type) place the image."""
    frames = _frames(n=2, h=120, w=160)
    box = _region(40, 30, 100, 90, 0.03, 0.03)
    box.RegionDataType = 2  # colour flow
    path = tmp_path / "colour.dcm"
    write_us_dicom(path, frames, regions=[box])
    sweep = load_sweep(path)
    assert sweep.crop is None and sweep.image_regions == () and sweep.frames.shape == (2, 120, 160)


def _typed(region, data_type):
    region.RegionDataType = data_type
    return region


@pytest.mark.parametrize("data_type", [2, 0x0D], ids=["colour_flow_box", "grey_bar"])
def test_the_pixel_size_is_the_tissue_regions_not_a_box_listed_over_the_whole_screen(tmp_path, data_type):
    """A colour-flow box (or a grey bar) listed over the whole screen at 0.5 mm beside the tissue
    image at 0.28 mm: the frames were cut to the tissue image but measured at the box's 0.5 mm, the
    largest region's (an AC 1.8 times too long, shown plainly, no problem said)."""
    frames = _frames(n=2, h=120, w=160)
    path = tmp_path / "box.dcm"
    write_us_dicom(path, frames, regions=[_typed(_region(0, 0, 159, 119, 0.05, 0.05), data_type),
                                          _region(40, 30, 139, 109, 0.028, 0.028)])
    sweep = load_sweep(path)
    assert sweep.crop == ((40, 30, 139, 109), (120, 160)) and sweep.frames.shape == (2, 80, 100)
    assert sweep.spacing_mm == pytest.approx((0.28, 0.28)) and sweep.spacing_source == SPACING_FROM_US_REGION
    assert sweep.spacing_problem is None and sweep.region_calibrations == ()
    assert sweep.measurement_spacing_mm == pytest.approx((0.28, 0.28))
    assert not any("differently calibrated" in n for n in sweep.read_notes)
    # the same with the tissue region of no stated type (older writers): still the image's size
    untyped = tmp_path / "untyped.dcm"
    tissue = _region(40, 30, 139, 109, 0.028, 0.028)
    del tissue.RegionDataType
    write_us_dicom(untyped, frames, regions=[_typed(_region(0, 0, 159, 119, 0.05, 0.05), data_type), tissue])
    assert load_sweep(untyped).spacing_mm == pytest.approx((0.28, 0.28))


def test_tissue_regions_that_disagree_are_not_settled_by_a_box_over_them(tmp_path):
    """Two like-sized tissue images at 0.3 and 0.6 mm leave the pixel size unknown; a colour box over
    the whole screen at 0.5 mm (the largest region) had been used for both."""
    frames = _frames(n=2, h=120, w=160)
    path = tmp_path / "dual.dcm"
    write_us_dicom(path, frames, regions=[_typed(_region(0, 0, 159, 119, 0.05, 0.05), 2),
                                          _region(0, 0, 79, 119, 0.03, 0.03), _region(80, 0, 159, 119, 0.06, 0.06)])
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE and sweep.spacing_problem is not None
    assert "like size with different pixel sizes (0.3 x 0.3 mm and 0.6 x 0.6 mm)" in sweep.spacing_note


def test_a_colour_box_alone_gives_its_size_and_a_grey_bar_alone_none(tmp_path):
    """With no tissue region listed, a colour-flow box is drawn over the tissue image at its scale:
    its size is the frames'. A grey bar's is never the body's: no size, and the note says why."""
    frames = _frames(n=2, h=120, w=160)
    colour = tmp_path / "colour.dcm"
    write_us_dicom(colour, frames, regions=[_typed(_region(0, 0, 159, 119, 0.03, 0.03), 2)])
    sweep = load_sweep(colour)
    assert sweep.spacing_mm == pytest.approx((0.3, 0.3)) and sweep.spacing_source == SPACING_FROM_US_REGION
    bar = tmp_path / "bar.dcm"
    write_us_dicom(bar, frames, regions=[_typed(_region(0, 0, 159, 119, 0.03, 0.03), 0x0D)])
    sweep = load_sweep(bar)
    assert sweep.spacing_source == SPACING_NONE and sweep.spacing_problem is not None
    assert "only regions that are not the image of the body (a grey bar)" in sweep.spacing_note


def test_pixels_said_not_to_be_square_need_both_sizes_from_the_user(tmp_path):
    """A DICOM's Pixel Aspect Ratio 4\\3 (no Pixel Spacing) was ignored and one --spacing value made
    its pixels square (an AC 12 % short, shown plainly); one value also replaced a 0.3 x 0.4 mm
    region calibration by a square one without a word (AC 288.5 -> 258.4 mm)."""
    aspect = tmp_path / "aspect.dcm"
    us_dicom(aspect, _frames(), PixelAspectRatio=[4, 3])
    sweep = load_sweep(aspect)
    assert sweep.spacing_source == SPACING_NONE and sweep.pixel_aspect == pytest.approx((4.0, 3.0))
    assert "4:3 (height:width)" in sweep.spacing_note and "both sizes" in sweep.spacing_note
    with pytest.raises(FetalIQAError, match=r"not square.*Give both sizes, width x height \(e.g. 0.3x0.4; 0.3x0.3 for "
                       r"square pixels\)"):
        sweep.with_spacing(0.3)
    assert sweep.with_spacing((0.4, 0.3)).spacing_mm == pytest.approx((0.4, 0.3))
    square = tmp_path / "square.dcm"
    us_dicom(square, _frames(), PixelAspectRatio=[1, 1])
    assert load_sweep(square).pixel_aspect is None and load_sweep(square).with_spacing(0.3).spacing_mm == (0.3, 0.3)
    # a file's own calibration of pixels that are not square
    region = tmp_path / "region.dcm"
    write_us_dicom(region, _frames(), regions=[_region(0, 0, 47, 39, dx_cm=0.03, dy_cm=0.04)])
    sweep = load_sweep(region)
    with pytest.raises(FetalIQAError, match=r"not square \(0.3 x 0.4 mm \(width x height\)"):
        sweep.with_spacing(0.3)
    given = sweep.with_spacing((0.45, 0.3), "given with --spacing")
    assert given.spacing_source == SPACING_FROM_USER and given.spacing_mm == pytest.approx((0.45, 0.3))
    assert any("given with --spacing, replacing the file's 0.3 x 0.4 mm" in n for n in given.read_notes)
    with pytest.raises(FetalIQAError, match="not square"):  # nor a size given before
        given.with_spacing(0.3)
    # the file's own size given again replaces nothing, and says nothing of it
    same = sweep.with_spacing((0.4, 0.3), "given with --spacing")
    assert same.spacing_mm == pytest.approx((0.4, 0.3)) and not any("replacing" in n for n in same.read_notes)


def test_a_pixel_spacing_is_typed_as_one_number_or_width_x_height():
    from fetaliqa_core.io.spacing import parse_spacing

    assert parse_spacing("0.28") == 0.28
    assert parse_spacing("0.3x0.4") == (0.4, 0.3) and parse_spacing("0.3 x 0.4 mm") == (0.4, 0.3)
    for comma in ("0,3", "0.3,0.4"):  # a decimal comma, or two sizes: not guessed
        with pytest.raises(FetalIQAError, match="decimals with a point"):
            parse_spacing(comma)
    for bad in ("", "0.3x", "0.3x0.4x0.5", "a"):
        with pytest.raises(FetalIQAError, match="not a pixel spacing"):
            parse_spacing(bad)


def _picture_in_picture(tmp_path):
    """A scanner's screen with a main image at 0.3 mm (300 x 300 px) and a picture-in-picture beside
    it at 0.6 mm (150 x 150 px), both showing the same abdomen (semi-axes 24 x 19.2 mm), and masks
    outlining it in each image and one across both."""
    import cv2

    h, w = 300, 480
    rng = np.random.default_rng(7)
    fans = np.zeros((h, w), np.uint8)
    cv2.ellipse(fans, (150, 0), (299, 299), 90, -45, 45, 1, -1)  # the main image's sector
    cv2.ellipse(fans, (395, 0), (149, 149), 90, -45, 45, 1, -1)  # the picture-in-picture's
    frames = np.zeros((3, h, w), np.uint8)
    frames[:, fans != 0] = rng.integers(30, 90, (3, int(fans.sum())), dtype=np.uint8)
    body = np.zeros((h, w), np.uint8)
    cv2.ellipse(body, (150, 150), (80, 64), 0, 0, 360, 1, -1)
    cv2.ellipse(body, (395, 75), (40, 32), 0, 0, 360, 1, -1)
    frames[1][body != 0] = rng.integers(110, 170, int(body.sum()), dtype=np.uint8)
    path = tmp_path / "pip.dcm"
    write_us_dicom(path, frames, regions=[_region(0, 0, 299, 299, 0.03, 0.03), _region(320, 0, 469, 149, 0.06, 0.06)])
    masks = {}
    for name, (center, axes) in {"main": ((150, 150), (80, 64)), "pip": ((395, 75), (40, 32)),
                                 "across": ((300, 120), (90, 40))}.items():
        m = np.zeros((3, h, w), np.uint8)
        cv2.ellipse(m[1], center, axes, 0, 0, 360, 1, -1)
        masks[name] = m
    truth = np.pi * (3 * (24 + 19.2) - np.sqrt((3 * 24 + 19.2) * (24 + 3 * 19.2)))
    return path, masks, truth


def test_an_outline_in_a_picture_in_picture_is_measured_at_that_image_s_own_pixel_size(tmp_path, capsys):
    """A screen with a main image at 0.3 mm and a picture-in-picture at 0.6 mm: the sweep's one pixel
    size was the largest region's, so an outline drawn in the small image was measured at 0.3 mm,
    half its length, plain, with a GA ten weeks early. Now an outline is measured at the size of the
    region holding it, said so; one across the two images, or outside them, has no mm."""
    import json

    from fetaliqa_core.cli import main

    path, masks, truth = _picture_in_picture(tmp_path)
    sweep = load_sweep(path)
    assert sweep.spacing_mm == pytest.approx((0.3, 0.3)) and sweep.spacing_source == SPACING_FROM_US_REGION
    for name, m in masks.items():
        sitk.WriteImage(sitk.GetImageFromArray(m), str(tmp_path / f"{name}.mha"))
    assert main(["ac", str(tmp_path / "main.mha"), "--sweep", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] == pytest.approx(truth, rel=0.03) and record["spacing_mm"] == [0.3, 0.3]
    assert main(["ac", str(tmp_path / "pip.mha"), "--sweep", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] == pytest.approx(truth, rel=0.03) and record["spacing_mm"] == [0.6, 0.6]
    assert "the region holding the outline" in record["spacing_source"]
    assert any("image region calibrated at 0.6 x 0.6 mm" in n for n in record["read_notes"])
    assert main(["ac", str(tmp_path / "pip.mha"), "--sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pixel 0.6 x 0.6 mm" in out and "calibrated at 0.6 x 0.6 mm" in out
    # across both images: which size applies is not known, so no mm and no GA
    assert main(["ac", str(tmp_path / "across.mha"), "--sweep", str(path), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "no units" and record["ac_mm"] is None and record["ga"] is None
    assert record["spacing_problem"].startswith("pixel size unknown where the outline lies")
    # a size the user gives stands for every pixel
    assert main(["ac", str(tmp_path / "pip.mha"), "--sweep", str(path), "--spacing", "0.6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spacing_mm"] == [0.6, 0.6]


def test_the_chosen_frame_s_ac_in_a_picture_in_picture_uses_that_image_s_pixel_size():
    """`score` and the window measured the chosen mask with the sweep's one pixel size, the largest
    region's, wherever the mask lay. Now the mask in the 0.6 mm picture-in-picture is measured, and
    judged by the frame choice, at 0.6 mm, said in the note; one across the two images has no mm."""
    import tempfile

    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import SweepResults
    from fetaliqa_core.preprocess import preprocess_masks

    with tempfile.TemporaryDirectory() as tmp:
        path, masks, truth = _picture_in_picture(Path(tmp))
        sweep = load_sweep(path).in_memory()

    def answer(mask):
        res = SweepResults(3, True, True)
        res.p_cls[:] = 0.1
        res.p_cls[1] = 0.9
        res.p_opt[:] = 0.0
        res.done[:] = True
        small = preprocess_masks(mask[1], size=224).numpy().reshape(224, 224).astype(np.uint8)
        for i in range(3):
            res.masks[i] = small if i == 1 else np.zeros((224, 224), np.uint8)
        res.seg_area_px[:] = [int(np.count_nonzero(res.masks[i])) for i in range(3)]
        res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * 224 * 224)
        return assess(sweep, res, Thresholds(value=0.5, model=0.5)).summary

    main = answer(masks["main"])
    assert main.chosen_frame == 1 and main.chosen_ac["ac_mm"] == pytest.approx(truth, rel=0.04)
    pip = answer(masks["pip"])
    assert pip.chosen_frame == 1 and pip.chosen_ac["ac_mm"] == pytest.approx(truth, rel=0.06)
    assert "calibrated at 0.6 x 0.6 mm" in pip.chosen_ac["note"]
    # judged at its own image's size too: at the main image's 0.3 mm this 136 mm abdomen read 68 mm,
    # and the AC was doubtful as "implausible size", a wrong reason for a right outline
    assert pip.chosen_ac["status"] == "ok" and "implausible" not in pip.chosen_ac["note"]
    across = answer(masks["across"])
    assert across.chosen_ac["ac_mm"] is None and across.chosen_ac["status"] == "no units"


def test_a_size_given_for_a_picture_in_picture_is_compared_with_the_file_s_where_the_outline_lies(tmp_path, capsys):
    """`ac --spacing` (and `score --spacing`, the window's size set by hand) on a screen whose image
    regions are calibrated differently: 0.3 mm given for an outline in the 0.6 mm inset read half its
    length, plain, without a word; 0.6 mm, the inset's own size, was told it replaced "the file's 0.3
    x 0.3 mm" (the largest region's); `ac` dropped the sweep's note on the regions and `score` kept
    "the largest ... used", no longer true. Now what is said compares with the size the file gives
    where the outline lies."""
    import json

    import cv2

    from fetaliqa_core.cli import main

    path, masks, truth = _picture_in_picture(tmp_path)
    for name, m in masks.items():
        sitk.WriteImage(sitk.GetImageFromArray(m), str(tmp_path / f"{name}.mha"))

    def ac(name, given):
        assert main(["ac", str(tmp_path / f"{name}.mha"), "--sweep", str(path), "--spacing", given, "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        return record, [n for n in record["read_notes"] or [] if n.startswith("pixel spacing")]

    record, said = ac("pip", "0.3")  # the main image's size, given for an outline in the inset
    assert record["ac_mm"] == pytest.approx(truth / 2, rel=0.03) and record["spacing_source"] == "user"
    assert said == ["pixel spacing given with --spacing, replacing the file's 0.6 x 0.6 mm from its DICOM ultrasound "
                    "region calibration, the region holding the outline"]
    record, said = ac("pip", "0.6")  # the inset's own size: it replaces nothing there
    assert record["ac_mm"] == pytest.approx(truth, rel=0.03) and said == []
    record, said = ac("main", "0.6")  # the inset's size for an outline in the main image: its 0.3 mm named
    assert len(said) == 1 and "replacing the file's 0.3 x 0.3 mm" in said[0] and "holding the outline" in said[0]
    record, said = ac("across", "0.3")  # across both: the file gives no one size there
    assert record["ac_mm"] is not None and len(said) == 1
    assert "no one size where the outline lies" in said[0] and "0.3 x 0.3 mm and 0.6 x 0.6 mm" in said[0]
    assert main(["ac", str(tmp_path / "pip.mha"), "--sweep", str(path), "--spacing", "0.3"]) == 0
    assert "replacing the file's 0.6 x 0.6 mm" in capsys.readouterr().out
    # two images of like size (a split screen), so the sweep's size unknown: the one given was said to
    # replace nothing, for an outline in the image the file calibrates at 0.6 mm
    split = tmp_path / "split.dcm"
    frames = np.random.default_rng(3).integers(30, 90, (3, 120, 200), dtype=np.uint8)
    write_us_dicom(split, frames, regions=[_region(0, 0, 99, 119, 0.03, 0.03), _region(100, 0, 199, 119, 0.06, 0.06)])
    assert load_sweep(split).spacing_problem is not None
    right = np.zeros((3, 120, 200), np.uint8)
    cv2.ellipse(right[1], (150, 60), (30, 25), 0, 0, 360, 1, -1)
    sitk.WriteImage(sitk.GetImageFromArray(right), str(tmp_path / "right.mha"))
    assert main(["ac", str(tmp_path / "right.mha"), "--sweep", str(split), "--no-fov", "--spacing", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["read_notes"] == [
        "pixel spacing given with --spacing, replacing the file's 0.6 x 0.6 mm from its DICOM ultrasound region "
        "calibration, the region holding the outline"]
    assert any("replacing the file's calibration of its image regions" in n
               for n in load_sweep(split).with_spacing(0.3, "given with --spacing").read_notes)
    # a sweep given a size (score --spacing, the window): the note that the largest region's size is
    # used goes, and one says the size given replaces the regions' sizes, whichever it is
    sweep = load_sweep(path)
    assert any("the largest (twice any other) used" in n for n in sweep.read_notes)
    for size in (0.3, 0.6):
        given = sweep.with_spacing(size, "given with --spacing")
        assert not any("the largest" in n for n in given.read_notes), size
        assert [n for n in given.read_notes if n.startswith("pixel spacing")] == [
            "pixel spacing given with --spacing for every pixel, replacing the file's calibration of its image regions, "
            "which differ (0.3 x 0.3 mm and 0.6 x 0.6 mm): an outline in a region of another size measures wrong by "
            "their ratio"]


def test_the_chosen_frame_s_ac_at_a_size_given_for_a_picture_in_picture_says_the_file_s_size_there():
    """`score --spacing` and the window's size set by hand measure every outline at the size given:
    an outline in the 0.6 mm inset at 0.3 mm given read half its length, plain, without a word. The
    AC now says the file calibrates that region otherwise, and the frame choice judges the mask at
    the size given, as its AC is measured."""
    import tempfile

    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import SweepResults
    from fetaliqa_core.preprocess import preprocess_masks

    with tempfile.TemporaryDirectory() as tmp:
        path, masks, truth = _picture_in_picture(Path(tmp))
        sweep = load_sweep(path).in_memory()

    def answer(on, mask):
        res = SweepResults(3, True, True)
        res.p_cls[:] = 0.1
        res.p_cls[1] = 0.9
        res.p_opt[:] = 0.0
        res.done[:] = True
        small = preprocess_masks(mask[1], size=224).numpy().reshape(224, 224).astype(np.uint8)
        for i in range(3):
            res.masks[i] = small if i == 1 else np.zeros((224, 224), np.uint8)
        res.seg_area_px[:] = [int(np.count_nonzero(res.masks[i])) for i in range(3)]
        res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * 224 * 224)
        return assess(on, res, Thresholds(value=0.5, model=0.5)).summary

    pip = answer(sweep.with_spacing(0.3, "given with --spacing"), masks["pip"])
    assert pip.chosen_frame == 1 and pip.chosen_ac["ac_mm"] == pytest.approx(truth / 2, rel=0.06)
    assert ("the file calibrates the image region holding the outline at 0.6 x 0.6 mm, not at the 0.3 x 0.3 mm "
            "given, which makes the AC 0.5 times the file's: check the size given") in pip.chosen_ac["note"]
    # judged at the size given too (a 68 mm abdomen), not at the region's 0.6 mm
    assert "implausible size" in pip.chosen_ac["note"]
    own = answer(sweep.with_spacing(0.6, "given with --spacing"), masks["pip"])  # the inset's own size
    assert own.chosen_ac["ac_mm"] == pytest.approx(truth, rel=0.06) and "calibrates" not in own.chosen_ac["note"]
    across = answer(sweep.with_spacing(0.3, "given with --spacing"), masks["across"])
    assert across.chosen_ac["ac_mm"] is not None
    assert "the file gives no one pixel size where the outline lies" in across.chosen_ac["note"]


def test_a_nifti_stating_only_an_sform_has_that_sform_s_pixel_size(tmp_path):
    """A NIfTI header with qform_code 0, an sform of 0.3 mm and its voxel sizes (pixdim) left at the
    format's default 1 was called self-contradictory (1 against 0.3 mm), so no mm: the sform is the
    only transform it states, and its 0.3 mm is read now, said so. Both stated and differing: still
    refused."""
    import struct

    path = tmp_path / "sform.nii"
    image = sitk.GetImageFromArray(_frames())
    image.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(image, str(path))
    head = bytearray(path.read_bytes())
    assert struct.unpack("<i", head[:4])[0] == 348 and struct.unpack("<h", head[254:256])[0] > 0
    head[80:88] = struct.pack("<2f", 1.0, 1.0)  # pixdim[1], pixdim[2]
    contradicting = bytes(head)
    head[252:254] = struct.pack("<h", 0)  # qform_code
    path.write_bytes(bytes(head))
    sweep = load_sweep(path)
    assert sweep.spacing_mm == pytest.approx((0.3, 0.3)) and sweep.spacing_source == SPACING_FROM_HEADER
    assert any("sform matrix, the only transform" in n for n in sweep.read_notes)
    path.write_bytes(contradicting)  # a qform too: pixdim 1 is stated, and differs from the sform
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE and "disagree" in sweep.spacing_problem


@pytest.mark.parametrize("unit,factor", [(1, 1e-3), (3, 1e3)])
def test_a_nifti_stating_only_an_sform_in_metres_or_microns_has_that_sform_s_pixel_size(tmp_path, unit, factor):
    """The same sform-only header (qform_code 0, voxel sizes left at 1) in metres or micrometres was
    refused as self-contradictory, "1000 x 1000 mm (its voxel sizes)" against the sform's 0.3 mm: the
    default 1 was converted to the unit before it was recognised as the default."""
    import struct

    path = tmp_path / "sform.nii"
    image = sitk.GetImageFromArray(_frames())
    image.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(image, str(path))
    head = bytearray(path.read_bytes())
    head[80:88] = struct.pack("<2f", 1.0, 1.0)  # pixdim[1], pixdim[2]
    head[252:254] = struct.pack("<h", 0)  # qform_code
    head[123] = (head[123] & ~0x07) | unit  # xyzt_units: metre (1) or micrometre (3)
    srow = np.array(struct.unpack("<12f", head[280:328])) * factor
    head[280:328] = struct.pack("<12f", *srow)
    path.write_bytes(bytes(head))
    sweep = load_sweep(path)
    assert sweep.spacing_mm == pytest.approx((0.3, 0.3)) and sweep.spacing_source == SPACING_FROM_HEADER, \
        sweep.spacing_problem
    assert any("sform matrix, the only transform" in n for n in sweep.read_notes)


def test_a_review_report_measures_a_thumbnail_s_outline_at_its_own_image_region_s_pixel_size(tmp_path):
    """The review database keeps one pixel size a sweep (the largest image region's): a report
    measured a flagged frame's mask across the main image and the 0.6 mm picture-in-picture at
    0.3 mm, plainly. Such an outline gets no AC now; one in the picture-in-picture is never given
    the main image's size (half its AC)."""
    import re

    from fetaliqa_core.review.report import build_report
    from fetaliqa_core.review.store import ReviewStore

    path, masks, truth = _picture_in_picture(tmp_path)
    sweep = load_sweep(path).in_memory()
    for name in ("pip", "across", "main"):
        with ReviewStore(tmp_path / f"{name}.sqlite3") as store:
            sid = store.add_sweep_from(sweep)
            flagged = np.array([False, True, False])
            store.add_model_run(sid, {"seg": {"hash": "ab", "name": "seg"}}, np.full(3, np.nan, np.float32),
                                np.array([0.1, 0.9, 0.1], np.float32), np.array([0, 500, 0]), flagged,
                                masks={1: masks[name][1]})
            page = build_report(store, tmp_path / f"{name}.html",
                                sweep_loader=lambda p: sweep).read_text(encoding="utf-8")
        shown = [float(v) for v in re.findall(r"AC (\d+\.\d) mm", page)]
        if name == "across":
            assert not shown and "AC not shown: pixel size unknown where the outline lies" in page
        elif name == "pip":
            assert all(v == pytest.approx(truth, rel=0.06) for v in shown), shown
        else:
            assert shown and shown[0] == pytest.approx(truth, rel=0.06), (name, shown)


def test_a_long_frame_time_vector_is_read_only_as_far_as_its_rate_needs(tmp_path):
    """A Frame Time Vector of a million entries was parsed whole (6 s and 518 MB) for the mean of
    its first 4096 gaps: only the bytes those entries can take are read now."""
    import tracemalloc

    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    from fetaliqa_core.io._common import dicom_frame_rate

    path = us_dicom(tmp_path / "cine.dcm", np.full((4, 32, 40), 90, np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # (4-byte lengths: a vector of any length)
    ds.add_new(0x00181065, "DS", "0" + "\\40" * 100_000)
    ds.save_as(path, enforce_file_format=True)
    tracemalloc.start()
    try:
        rate = dicom_frame_rate(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rate == (25.0, "Frame Time Vector, 40 ms between frames")
    assert peak < 8e6, f"{peak / 1e6:.0f} MB to read a frame rate"


@pytest.mark.parametrize("attrs, fps, words", [
    ({"FrameTime": "33.3", "CineRate": 15}, 30.03, "Frame Time 33.3 ms"),  # the acquisition's own interval first
    ({"FrameTimeVector": [0, 40, 40, 40]}, 25.0, "Frame Time Vector"),
    ({"CineRate": 30}, 30.0, "Cine Rate 30"),
    ({"RecommendedDisplayFrameRate": 24}, 24.0, "Recommended Display Frame Rate 24"),
    ({"FrameTime": "0", "CineRate": 20}, 20.0, "Cine Rate 20"),  # a Frame Time of 0 is no rate
    ({}, None, None),
])
def test_a_dicom_cine_s_frame_rate_is_read_from_its_header(tmp_path, attrs, fps, words):
    """The window played every sweep at its own 15 frames per second: a DICOM cine stating Frame
    Time 33.3 ms (30 per second) was played at half speed, and the box's "15 fps" could be read as
    the acquisition's rate. The sweep now carries the rate its file states and what it states."""
    frames = np.full((4, 32, 40), 90, np.uint8)
    sweep = load_sweep(us_dicom(tmp_path / "cine.dcm", frames, **attrs))
    if fps is None:
        assert sweep.frame_rate is None
    else:
        assert sweep.frame_rate[0] == pytest.approx(fps, abs=0.01)
        assert words in sweep.frame_rate[1]


@pytest.mark.parametrize("directions,said", [
    ("(0.25,0.25,0) (0,0.3,0) (0,0,1)", "are not perpendicular (the pixels' columns and rows meet at 45 degrees"),
    ("(1e308,0,0) (0,1e308,0) (0,0,1)", "record pixels 1e+308 wide and 1e+308 high, an implausible size"),
    ("(1e200,0,0) (0,0.3,0) (0,0,1)", "record pixels 1e+200 wide and 0.3 high, an implausible size"),
])
def test_a_nrrd_whose_space_directions_give_no_usable_pixel_size_says_why(tmp_path, directions, said):
    """Sheared space directions were read as 0.354 x 0.3 mm without a word (a sheared grid has no
    pixel size a length can use), and 1e308 mm, whose length the image reader cannot compute, as
    "1 x 1 mm per pixel, the value image writers put when no spacing was known"."""
    frames = _frames(2)
    head = ("NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 48 40 2\n"
            "space directions: {}\nencoding: raw\n\n")
    path = tmp_path / "odd.nrrd"
    path.write_bytes(head.format(directions).encode() + frames.tobytes())
    sweep = load_sweep(path)
    assert sweep.spacing_source == SPACING_NONE and said in sweep.spacing_note, sweep.spacing_note
    assert "image writers put" not in sweep.spacing_note
    # columns and rows at a right angle, in any order, stay the file's own pixel size
    for fine in ("(0.3,0,0) (0,0.28,0) (0,0,1)", "(0,0.28,0) (0.3,0,0) (0,0,1)", "(0.3,0,0) (0,0,0.28) (0,1,0)"):
        path.write_bytes(head.format(fine).encode() + frames.tobytes())
        sweep = load_sweep(path)
        assert sweep.spacing_source != SPACING_NONE and sorted(sweep.spacing_mm) == [0.28, 0.3], fine


def _metaimage(path: Path, frames: np.ndarray, spacing: str, matrix: str | None, field: str = "TransformMatrix"):
    n, h, w = frames.shape
    head = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"ElementSpacing = {spacing}\n" + (f"{field} = {matrix}\n" if matrix else "")
            + f"DimSize = {w} {h} {n}\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    path.write_bytes(head.encode() + np.ascontiguousarray(frames, np.uint8).tobytes())
    return path


@pytest.mark.parametrize("matrix,field,said", [
    ("2 0 0 0 2 0 0 0 1", "TransformMatrix", "states two pixel sizes: 0.3 x 0.3 mm (its ElementSpacing) and 0.6 x 0.6 mm "
                                             "(that spacing scaled by its TransformMatrix, whose axes are 2 and 2 long"),
    ("0.5 0 0 0 0.5 0 0 0 1", "Rotation", "0.6 x 0.6 mm (its ElementSpacing) and 0.3 x 0.3 mm (that spacing scaled "
                                          "by its Rotation"),
    ("1 0 0 0.5 0.866025 0 0 0 1", "TransformMatrix", "the pixels' columns and rows meet at 60 degrees, not 90"),
    ("0 0 0 0 1 0 0 0 1", "Orientation", "gives the pixels' columns or rows no direction"),
])
def test_a_metaimage_whose_matrix_is_no_rotation_has_no_pixel_size(tmp_path, matrix, field, said):
    """A TransformMatrix of 2s was ignored: the image reader places the pixels 0.6 mm apart where
    the ElementSpacing says 0.3 mm, and the AC was shown at 0.3 mm, half the file's geometry's,
    without a word (a skewed one made a sheared grid read as square). The header states two pixel
    sizes: unknown, with the reason, as a NRRD's sheared space directions are."""
    frames = _frames(2)
    spacing = "0.6 0.6 1" if matrix.startswith("0.5") else "0.3 0.3 1"
    sweep = load_sweep(_metaimage(tmp_path / "odd.mha", frames, spacing, matrix, field))
    assert sweep.spacing_source == SPACING_NONE and said in sweep.spacing_note, sweep.spacing_note
    assert "MetaImage header" in sweep.spacing_note and sweep.spacing_problem.startswith("pixel spacing unknown")
    # a rotation, a reflection or axes exchanged (6 digits, as writers round them) keep the file's own size
    for fine in ("0.866025 0.5 0 -0.5 0.866025 0 0 0 1", "1 0 0 0 -1 0 0 0 1", "0 1 0 1 0 0 0 0 1", None):
        sweep = load_sweep(_metaimage(tmp_path / "fine.mha", frames, "0.3 0.4 1", fine))
        assert sweep.spacing_source == SPACING_FROM_HEADER and sweep.spacing_mm == pytest.approx((0.4, 0.3)), fine


@pytest.mark.parametrize("attrs,said", [
    ({"PixelSpacing": [0.3, 0.3], "PixelAspectRatio": [4, 3]},
     "0.3 x 0.3 mm (its Pixel Spacing), square pixels, and pixels of 4:3 (height:width) (its Pixel Aspect Ratio)"),
    ({"regions": [(0.03, 0.03)], "PixelAspectRatio": [4, 3]},
     "0.3 x 0.3 mm (its ultrasound region calibration), square pixels, and pixels of 4:3 (height:width)"),
    ({"regions": [(0.03, 0.04)], "PixelAspectRatio": [1, 1]},
     "0.3 x 0.4 mm (width x height) (its ultrasound region calibration), pixels of 1.33:1 (height:width), and "
     "square pixels (its Pixel Aspect Ratio)"),
])
def test_a_dicom_pixel_aspect_ratio_that_contradicts_its_calibration_leaves_the_size_unknown(tmp_path, attrs, said):
    """A Pixel Aspect Ratio of 4\\3 beside a Pixel Spacing (or region deltas) of square pixels, or
    1\\1 beside deltas of 0.03 and 0.04 cm, was read plainly, the ratio ignored: the header states
    two pixel sizes, one of them wrong, so lengths are not shown, said as other disagreements are."""
    from pydicom.sequence import Sequence

    attrs = dict(attrs)
    regions = [_region(0, 0, 47, 39, dx_cm=dx, dy_cm=dy) for dx, dy in attrs.pop("regions", ())]
    if regions:
        attrs["SequenceOfUltrasoundRegions"] = Sequence(regions)
    sweep = load_sweep(us_dicom(tmp_path / "odd.dcm", _frames(), **attrs))
    assert sweep.spacing_source == SPACING_NONE, sweep.spacing_mm
    assert f"the DICOM header gives two pixel sizes that disagree: {said}" in sweep.spacing_note, sweep.spacing_note
    assert sweep.spacing_problem.startswith("pixel spacing unknown")
    # a ratio that agrees (4\3 beside 0.3 x 0.4 mm, 1\1 beside square pixels, within rounding) changes nothing
    for fine, expected, source in (({"PixelSpacing": [0.4, 0.3], "PixelAspectRatio": [4, 3]}, (0.4, 0.3),
                                    SPACING_FROM_DICOM_PIXEL_SPACING),
                                   ({"PixelSpacing": [0.3, 0.3], "PixelAspectRatio": [1, 1]}, (0.3, 0.3),
                                    SPACING_FROM_DICOM_PIXEL_SPACING),
                                   ({"SequenceOfUltrasoundRegions": Sequence([_region(0, 0, 47, 39, 0.03, 0.0399)]),
                                     "PixelAspectRatio": [4, 3]}, (0.399, 0.3), SPACING_FROM_US_REGION)):
        sweep = load_sweep(us_dicom(tmp_path / "fine.dcm", _frames(), **fine))
        assert sweep.spacing_source == source and sweep.spacing_mm == pytest.approx(expected), fine
