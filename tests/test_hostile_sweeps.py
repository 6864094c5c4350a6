"""Hostile and broken sweep files: each is refused with one line, fast, before any large
allocation (one test per failure found when the readers were attacked, named after it), plus
property-based tests that feed mutated headers to the readers."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetaliqa_core import validate
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io import load_sweep, write_volume

ROOT = Path(__file__).resolve().parents[1]
# derandomize: CI sees the same examples every run (a failure is reproducible, never flaky).
FUZZ = settings(max_examples=int(os.environ.get("FETALIQA_FUZZ_EXAMPLES", "40")), deadline=3000,
               derandomize=not os.environ.get("FETALIQA_FUZZ_RANDOM"),
               suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def small_memory(monkeypatch):
    """Pretend the machine has 256 MB available: anything claiming more must be refused."""
    monkeypatch.setattr(validate, "machine_memory_bytes", lambda: 256 << 20)


def _mha(path: Path, dims: str, payload: bytes = b"", element_type: str = "MET_UCHAR", extra: str = "") -> Path:
    header = (f"ObjectType = Image\nNDims = {len(dims.split())}\nBinaryData = True\n"
              f"CompressedData = False\nElementSpacing = 0.28 0.28 1\nDimSize = {dims}\n{extra}"
              f"ElementType = {element_type}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + payload)
    return path


def _nifti_header(dims: tuple[int, ...], datatype: int = 2, bitpix: int = 8) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4 extension bytes) for uint8 data."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    dim = [len(dims), *dims] + [1] * (7 - len(dims))
    struct.pack_into("<8h", hdr, 40, *dim)
    struct.pack_into("<h", hdr, 70, datatype)
    struct.pack_into("<h", hdr, 72, bitpix)
    struct.pack_into("<8f", hdr, 76, 1.0, 0.28, 0.28, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    hdr[123] = 2  # xyzt_units: mm
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + b"\0\0\0\0"


@pytest.fixture(scope="module", autouse=True)
def _readers_imported(tmp_path_factory):
    """The time limits below are on refusing a file, not on importing the image libraries (which
    a loaded CI machine can take seconds over): read one small file of each kind first."""
    folder = tmp_path_factory.mktemp("warm")
    frames = np.zeros((2, 40, 48), np.uint8)
    for name in ("warm.mha", "warm.nii.gz", "warm.nrrd"):
        write_volume(folder / name, frames)
        load_sweep(folder / name)


def _assert_refused(path: Path, *words: str, within_s: float = 5.0) -> str:
    t0 = time.monotonic()
    with pytest.raises(FetalIQAError) as info:
        load_sweep(path)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert elapsed < within_s, f"refusal took {elapsed:.1f} s"
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# --------------------------------------------------------------------------------------------
# One test per failure


def test_nifti_non_utf8_name_is_refused_cleanly(tmp_path):
    """SimpleITK aborts the whole process (exit 134) on such a name; it must never reach it.
    Run in a child process so that a regression cannot take the test run down with it."""
    good = tmp_path / "good.nii.gz"
    write_volume(good, np.zeros((2, 40, 48), np.uint8), compress=True)
    bad = os.path.join(os.fsencode(tmp_path), b"sweep-\xff\xfe.nii.gz")
    os.link(os.fsencode(good), bad)
    code = ("import os, sys\nfrom fetaliqa_core.io import load_sweep\nfrom fetaliqa_core.errors import FetalIQAError\n"
            "try:\n    load_sweep(os.fsdecode(sys.argv[1].encode('latin-1')))\n"
            "except FetalIQAError as e:\n    print('REFUSED', e)\n")
    proc = subprocess.run([sys.executable, "-c", code, bad.decode("latin-1")], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("REFUSED") and "not valid UTF-8" in proc.stdout and "Rename" in proc.stdout


@pytest.mark.timeout(60)
def test_nifti_header_claiming_4gib_is_refused_fast(tmp_path):
    """388 bytes of .nii.gz whose header claims 4 GiB (gzip size field forged to match)."""
    dims = (1024, 1024, 4096)
    body = gzip.compress(_nifti_header(dims) + bytes(32))
    claimed = 352 + 1024 * 1024 * 4096
    forged = body[:-4] + struct.pack("<I", claimed % (1 << 32))
    path = tmp_path / "big.nii.gz"
    path.write_bytes(forged)
    assert path.stat().st_size < 500
    _assert_refused(path, "big.nii.gz", within_s=3.0)


def test_nifti_header_claiming_4gib_is_refused_on_a_small_machine(tmp_path, small_memory):
    path = tmp_path / "big.nii"
    path.write_bytes(_nifti_header((1024, 1024, 4096)) + bytes(64))
    _assert_refused(path, "big.nii", within_s=3.0)


@pytest.mark.parametrize("dims", ["48 40 1e20", "48 40 100000000000000000000"])
def test_mha_dimsize_1e20_is_refused(tmp_path, dims):
    path = _mha(tmp_path / "huge.mha", dims, bytes(64))
    _assert_refused(path, "huge.mha")


def test_mha_dimsize_product_overflowing_int64_is_refused(tmp_path):
    path = _mha(tmp_path / "ovf.mha", "4294967296 4294967296 4294967296", bytes(64))
    message = _assert_refused(path, "ovf.mha")
    assert "OverflowError" not in message


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from Linux /proc")
def test_nrrd_of_700_bytes_claiming_4gb_is_refused_before_allocating(tmp_path):
    """Refused from the header alone: peak memory of the child process stays small."""
    data = gzip.compress(bytes(4096))
    header = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 4096\nencoding: gzip\n\n"
    path = tmp_path / "big.nrrd"
    path.write_bytes(header + data)
    assert path.stat().st_size < 1000
    code = ("import sys\nfrom fetaliqa_core.io import load_sweep\nfrom fetaliqa_core.errors import FetalIQAError\n"
            "try:\n    load_sweep(sys.argv[1])\nexcept FetalIQAError as e:\n    print('REFUSED', e)\n"
            # VmHWM: this process's peak (ru_maxrss would carry the forking test process's over exec)
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('RSS_KB', hwm)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "REFUSED" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    rss_mb = int(proc.stdout.split("RSS_KB")[1]) / 1024
    assert rss_mb < 600, f"peak RSS {rss_mb:.0f} MB"


def test_nrrd_checks_read_the_whole_header_and_a_short_raw_payload_is_refused_before_allocating(tmp_path):
    """80 KB of comments before 'data file:' hid it from every check (only the first 64 KiB were
    read; the image library reads all): a file outside the header's folder was read. A 76-byte raw
    NRRD claiming 3.2 GB made the library allocate it before finding the data missing."""
    padding = "".join(f"# comment line {k:06d} {'x' * 60}\n" for k in range(1200))
    (tmp_path / "outside.raw").write_bytes(bytes(48 * 40 * 2))
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "escape.nhdr").write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 48 40 2\nencoding: raw\n"
                                     + padding + "data file: ../outside.raw\n")
    _assert_refused(sub / "escape.nhdr", "outside its own folder")
    (sub / "long.nrrd").write_text("NRRD0004\ntype: uint8\n" + "# x\n" * 300_000 + "\n")
    _assert_refused(sub / "long.nrrd", "header is longer than 1 MB")
    # a header written on Windows (CR LF) ends in a blank line too: read, its length checked
    crlf = tmp_path / "crlf.nrrd"
    frames = (np.arange(20 * 200 * 300) % 251).astype(np.uint8)
    crlf.write_bytes(b"NRRD0004\r\ntype: uint8\r\ndimension: 3\r\nsizes: 300 200 20\r\nspacings: 0.3 0.3 1\r\n"
                     b"encoding: raw\r\n\r\n" + frames.tobytes())
    assert load_sweep(crlf).n_frames == 20
    crlf.write_bytes(crlf.read_bytes()[:-300 * 200])  # a frame short
    _assert_refused(crlf, "truncated")
    short = tmp_path / "short.nrrd"
    short.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4000 4000 200\nencoding: raw\n\n" + bytes(8))
    _assert_refused(short, "describes 3200000000 bytes", within_s=3.0)


def test_a_compressed_dicom_claiming_gigabytes_from_a_few_bytes_is_refused_before_decoding(tmp_path):
    """An 840-byte RLE file claiming 800 frames of 2000 x 2000 made the decoder allocate 3.2 GB
    before it found the frames missing."""
    from pydicom.uid import RLELossless

    segment_table = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    path = _us_dicom_file(tmp_path / "bomb.dcm", RLELossless, 2000, 2000, 800,
                          [segment_table + bytes([0x81, 0x00]) * 10], encapsulated=True)  # runs of 128 zeros
    _assert_refused(path, "3200000000 bytes", "compressed data", within_s=3.0)


@pytest.mark.parametrize("as_folder", [False, True])
def test_a_dicom_marker_followed_by_megabytes_of_zeros_is_refused_from_its_header_alone(tmp_path, as_folder):
    """A preamble and "DICM" followed by zeros (an interrupted copy, a failed sync) was walked by
    pydicom as endless empty elements, 2 s per MB: 200 MB ran past 150 s, and the window's Open
    folder... said "Opening" all that time. A run of zeros where elements should be ends the read."""
    folder = tmp_path / "series"
    folder.mkdir()
    path = folder / "IM0001.dcm"
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        fh.truncate(48 << 20)  # sparse: 48 MB of zeros, written in no time
    message = _assert_refused(folder if as_folder else path, "IM0001.dcm", "only zero bytes", "copy",
                              within_s=20.0)  # a hang guard: it takes well under a second
    assert "byte 132" in message


def test_a_dicom_header_cut_off_by_zeros_is_refused_and_a_whole_one_still_reads(tmp_path):
    """The same run of zeros after the first elements of a real header (a copy that stopped
    there, its file pre-allocated) is refused the same way; the file it came from reads."""
    from fakes import us_dicom

    whole = us_dicom(tmp_path / "whole.dcm", np.full((3, 40, 48), 90, np.uint8))
    assert load_sweep(whole).frames.shape[0] == 3
    data = whole.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400] + bytes(len(data) - 400 + (8 << 20)))
    _assert_refused(cut, "cut.dcm", "only zero bytes", within_s=20.0)


def test_frames_of_32_by_20000_pixels_are_refused(tmp_path):
    path = _mha(tmp_path / "strip.mha", "20000 32 4", bytes(20000 * 32 * 4))
    _assert_refused(path, "strip.mha", "32 x 20000")


def test_frames_wider_than_4096_pixels_are_refused(tmp_path):
    path = _mha(tmp_path / "wide.mha", "5000 4000 1", bytes(5000 * 4000))
    _assert_refused(path, "wide.mha", "4096")


def test_more_frames_than_any_sweep_are_refused(tmp_path):
    path = _mha(tmp_path / "long.mha", f"40 32 {validate.MAX_FRAMES + 1}", b"")
    _assert_refused(path, "long.mha", "frames")


def test_compressed_volume_larger_than_memory_is_refused(tmp_path, small_memory):
    arr = np.zeros((300, 1024, 1024), np.uint8)  # 300 MB of zeros, compressed to ~300 KB
    path = tmp_path / "zeros.nrrd"
    write_volume(path, arr[:1], compress=True)
    text = path.read_bytes()
    path.write_bytes(text.replace(b"sizes: 1024 1024 1", b"sizes: 1024 1024 300"))
    _assert_refused(path, "zeros.nrrd", "memory")


def test_a_name_a_file_dialog_could_not_decode_says_so_not_that_the_file_is_missing(tmp_path):
    """Qt hands on undecodable bytes as U+FFFD; 'no such file' was wrong after a user picked it."""
    with pytest.raises(FetalIQAError, match="not valid UTF-8.*Rename") as err:
        load_sweep(tmp_path / "sweep-\ufffd\ufffd.mha")
    assert "no such file" not in str(err.value)
    real = tmp_path / "odd-\ufffd.mha"  # a name that really holds U+FFFD opens as any other
    write_volume(real, np.zeros((2, 40, 48), np.uint8))
    assert load_sweep(real).n_frames == 2


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_detached_nrrd_with_a_named_pipe_as_data_file_is_refused_without_hang(tmp_path):
    os.mkfifo(tmp_path / "data.raw")
    (tmp_path / "pipe.nhdr").write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 48 40 2\nencoding: raw\ndata file: data.raw\n\n")
    _assert_refused(tmp_path / "pipe.nhdr", "not a regular file", within_s=3.0)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_mhd_with_a_named_pipe_as_data_file_is_refused_without_hang(tmp_path):
    os.mkfifo(tmp_path / "data.raw")
    (tmp_path / "pipe.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 48 40 2\nElementType = MET_UCHAR\nElementDataFile = data.raw\n")
    _assert_refused(tmp_path / "pipe.mhd", "not a regular file", within_s=3.0)
    # a folder named as the data file is called a folder (it was "a pipe, device or socket")
    (tmp_path / "frames").mkdir()
    (tmp_path / "folder.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 48 40 2\nElementType = MET_UCHAR\nElementDataFile = frames\n")
    _assert_refused(tmp_path / "folder.mhd", "is a folder, not a file")


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_opened_as_the_sweep_is_named_as_such(tmp_path):
    """It used to be called an empty file from an interrupted copy."""
    os.mkfifo(tmp_path / "sweep.mha")
    _assert_refused(tmp_path / "sweep.mha", "not a regular file", within_s=3.0)


def test_nrrd_spreading_data_over_a_file_list_is_refused(tmp_path):
    (tmp_path / "list.nhdr").write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 48 40 2\nencoding: raw\ndata file: LIST\na.raw\nb.raw\n")
    _assert_refused(tmp_path / "list.nhdr")


def test_nrrd_byte_skip_below_minus_one_or_a_data_file_naming_itself_is_refused(tmp_path):
    """'byte skip: -2' (the format defines -1 only: the data end the file) was read with every frame
    shifted (83 grey levels off on average for uint16), and an attached NRRD whose 'data file' named
    itself had its own header text read as its first pixels, without a word either."""
    frames = np.random.default_rng(0).integers(0, 4000, (2, 40, 48), np.uint16)
    head = "NRRD0004\ntype: uint16\ndimension: 3\nsizes: 48 40 2\nendian: little\nencoding: raw\n"
    for skip in (-1, -2, -100):
        path = tmp_path / f"skip{-skip}.nrrd"
        path.write_bytes(f"{head}byte skip: {skip}\n\n".encode() + frames.astype("<u2").tobytes())
        if skip == -1:  # the data end the file: read from there, rightly
            assert np.array_equal(np.asarray(load_sweep(path).frames).shape, frames.shape)
        else:
            _assert_refused(path, f"'byte skip: {skip}'", "shifted", "export the file again")
    path = tmp_path / "self.nrrd"
    path.write_bytes(f"{head}data file: self.nrrd\n\n".encode() + frames.astype("<u2").tobytes())
    _assert_refused(path, "names its own file", "'self.nrrd'")


# --------------------------------------------------------------------------------------------
# Property-based: mutated headers never give anything but a Sweep or one FetalIQAError


def _outcome(path: Path) -> None:
    try:
        sweep = load_sweep(path)
    except FetalIQAError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert sweep.frames.ndim == 3 and sweep.frames.dtype == np.uint8
    assert sweep.frames.nbytes <= 64 << 20


_SIZES = st.one_of(st.integers(-5, 5000), st.integers(0, 2**70), st.sampled_from([0, 1, 32, 2**31, 2**63]))


@FUZZ
@given(x=_SIZES, y=_SIZES, z=_SIZES, element=st.sampled_from(["MET_UCHAR", "MET_USHORT", "MET_FLOAT", "MET_DOUBLE",
                                                               "MET_LONG", "MET_BOGUS"]),
       channels=st.sampled_from(["", "ElementNumberOfChannels = 3\n", "ElementNumberOfChannels = 0\n",
                                 "ElementNumberOfChannels = 99999999\n"]),
       compressed=st.booleans(), payload=st.integers(0, 4096))
def test_mutated_metaimage_headers_never_crash(tmp_path, small_memory, x, y, z, element, channels, compressed,
                                               payload):
    extra = channels + ("CompressedData = True\n" if compressed else "")
    path = _mha(tmp_path / "fuzz.mha", f"{x} {y} {z}", gzip.compress(bytes(payload)) if compressed else bytes(payload),
                element_type=element, extra=extra)
    _outcome(path)


@FUZZ
@given(data=st.binary(min_size=0, max_size=300), cut=st.integers(0, 400))
def test_random_bytes_in_a_metaimage_header_never_crash(tmp_path, small_memory, data, cut):
    write_volume(tmp_path / "ok.mha", np.zeros((2, 40, 48), np.uint8))
    raw = (tmp_path / "ok.mha").read_bytes()
    header_end = raw.index(b"ElementDataFile")
    cut = min(cut, header_end)
    (tmp_path / "fuzz.mha").write_bytes(raw[:cut] + data + raw[cut:])
    _outcome(tmp_path / "fuzz.mha")


@FUZZ
@given(dims=st.lists(st.integers(-3, 32767), min_size=2, max_size=5),
       datatype=st.sampled_from([(2, 8), (4, 16), (16, 32), (64, 64), (128, 24), (0, 0), (1, 1)]),
       vox=st.sampled_from([352.0, 0.0, -1.0, 1e30, float("nan")]), gz=st.booleans(), payload=st.integers(0, 2048))
def test_mutated_nifti_headers_never_crash(tmp_path, small_memory, dims, datatype, vox, gz, payload):
    head = bytearray(_nifti_header(tuple(max(d, 0) for d in dims), *datatype))
    struct.pack_into(f"<{len(dims) + 1}h", head, 40, len(dims), *dims)
    struct.pack_into("<f", head, 108, vox)
    data = bytes(head) + bytes(payload)
    path = tmp_path / ("fuzz.nii.gz" if gz else "fuzz.nii")
    path.write_bytes(gzip.compress(data) if gz else data)
    _outcome(path)


@FUZZ
@given(sizes=st.lists(st.integers(0, 2**40), min_size=1, max_size=4),
       kind=st.sampled_from(["uint8", "short", "float", "double", "int64", "block"]),
       encoding=st.sampled_from(["raw", "gzip", "ascii", "txt", "hex", "bzip2"]), payload=st.integers(0, 2048))
def test_mutated_nrrd_headers_never_crash(tmp_path, small_memory, sizes, kind, encoding, payload):
    header = (f"NRRD0004\ntype: {kind}\ndimension: {len(sizes)}\nsizes: {' '.join(map(str, sizes))}\n"
              f"encoding: {encoding}\n\n").encode()
    body = bytes(payload)
    if encoding == "gzip":
        body = gzip.compress(body)
    (tmp_path / "fuzz.nrrd").write_bytes(header + body)
    _outcome(tmp_path / "fuzz.nrrd")


def test_validation_limits_are_documented_numbers():
    assert validate.MAX_FRAMES >= 840 and validate.MAX_FRAME_SIDE >= 744
    json.dumps({k: getattr(validate, k) for k in ("MAX_FRAMES", "MAX_FRAME_SIDE", "MAX_FRAME_ASPECT")})


def test_a_link_to_nothing_says_so(tmp_path, capsys):
    """A link that leads back to itself read as 'no such file or folder', which sends the user
    looking for a file that is there."""
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.io import load_sweep

    loop = tmp_path / "loop.mha"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.mha"
    dangling.symlink_to(tmp_path / "never.mha")
    for link in (loop, dangling):
        with pytest.raises(FetalIQAError, match="a link to nothing readable"):
            load_sweep(link)
    # the commands say so too, before any model is loaded (they said 'no such file or folder')
    from fetaliqa_core.cli import main

    for args in (["score", str(loop)], ["score", str(loop), "--archive"], ["gui", str(loop)]):
        assert main(args) == 1
        assert "a link to nothing readable" in capsys.readouterr().err


def test_dicom_sequences_nested_thousands_deep_are_refused_not_a_crash(tmp_path):
    """The image library's DICOM parser crashed the process (SIGSEGV, no word, no archive
    table) on a 50 KB file of sequences nested 20,000 deep, alone or inside a series folder.
    In a child process: a regression must not take the test run down with it."""
    from fakes import us_dicom

    good = us_dicom(tmp_path / "good.dcm", np.zeros((3, 40, 48), np.uint8))
    raw = good.read_bytes()
    pixels = raw.rfind(b"\xe0\x7f\x10\x00")
    depth = 20000
    sq = b"\x09\x00\x10\x10SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    deep = tmp_path / "deep.dcm"
    deep.write_bytes(raw[:pixels] + sq * depth + ends * depth + raw[pixels:])
    bare = us_dicom(tmp_path / "bare.dcm", np.zeros((3, 40, 48), np.uint8), preamble=False).read_bytes()
    at = bare.rfind(b"\xe0\x7f\x10\x00")
    (tmp_path / "deep_bare.dcm").write_bytes(bare[:at] + sq * depth + ends * depth + bare[at:])  # no preamble
    series = tmp_path / "series"
    series.mkdir()
    for k in range(2):
        us_dicom(series / f"IM{k}", np.zeros((40, 48), np.uint8), series="1.2.3", instance=k + 1)
    (series / "IM9").write_bytes(deep.read_bytes())
    code = ("import sys\nfrom fetaliqa_core.io import load_sweep\nfrom fetaliqa_core.errors import FetalIQAError\n"
            "try:\n    load_sweep(sys.argv[1])\nexcept FetalIQAError as exc:\n    print(exc)\n")
    for path in (deep, tmp_path / "deep_bare.dcm", series):
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        assert done.returncode == 0, done.stderr[-400:]
        assert "nests its sequences deeper than any image file" in done.stdout


def test_a_header_the_image_library_would_read_otherwise_is_refused(tmp_path):
    """MET_LONG pixels were read by the image library, whose header parser takes keys in their
    exact spelling only: 'elementdatafile = LOCAL' before 'ElementDataFile = /elsewhere' passed
    every check on the first and had the second read (a foreign file, a device, a pipe that hung).
    Its damaged compressed data were scored as uninitialised memory."""
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(bytes(range(256)) * 64)
    two = _mha(tmp_path / "two.mha", "8 8 2", bytes(512), "MET_LONG",
               extra="").read_bytes().replace(b"ElementDataFile = LOCAL",
                                              b"elementdatafile = LOCAL\nElementDataFile = " + str(foreign).encode())
    (tmp_path / "two.mha").write_bytes(two)
    # (read by FetalIQA's own reader now, as every other type: the header ends at its first data file)
    _assert_refused(tmp_path / "two.mha", "the header's size is wrong")
    packed = _mha(tmp_path / "z.mha", "8 8 2", b"x\x9c" + bytes(40), "MET_LONG", extra="CompressedDataSize = 42\n")
    packed.write_bytes(packed.read_bytes().replace(b"CompressedData = False", b"CompressedData = True"))
    _assert_refused(packed, "compressed")
    twice = _mha(tmp_path / "twice.mha", "8 8 2", bytes(128), extra="dimsize = 8 8 1\n")
    _assert_refused(twice, "gives 'DimSize' twice")


@pytest.mark.parametrize("field, value", [("DimSize", "8 8 1_6"), ("DimSize", "8 8 \u0661\u0666"),
                                          ("ElementSpacing", "0.2_8 0.28 1"), ("HeaderSize", "1_0")])
def test_a_header_number_python_reads_otherwise_than_metaio_is_refused(tmp_path, field, value):
    """Python's int() reads "1_6" and Arabic-Indic "16" as 16, MetaIO as 1 and 0: a header the image
    library would read as one frame was read here as 16 (no such number is plain ASCII)."""
    path = _mha(tmp_path / "odd.mha", "8 8 16", bytes(1024))
    raw = path.read_bytes().decode()
    head, _, rest = raw.partition("ElementType")
    head = "\n".join(f"{field} = {value}" if line.startswith(field) else line for line in head.split("\n"))
    if field not in head:
        head += f"{field} = {value}\n"
    path.write_bytes((head + "ElementType" + rest).encode("utf-8"))
    _assert_refused(path, f"header's {field} is", "not plain numbers")


def test_a_sequence_metafile_with_a_long_header_is_read(tmp_path):
    """A PLUS / SlicerIGT sequence metafile (a tracked freehand sweep) writes eight lines a frame
    before its data: past ~90 frames its header ran over 64 KB and the file was called "not a
    MetaImage file ... damaged". A header of lines that never names its data stays refused."""
    n, h, w = 300, 40, 48
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "CompressedData = False", f"DimSize = {w} {h} {n}",
             "ElementSpacing = 0.3 0.3 1", "ElementType = MET_UCHAR"]
    for i in range(n):
        lines += [f"Seq_Frame{i:04d}_ImageToProbeTransform = " + " ".join(["0.107"] * 16),
                  f"Seq_Frame{i:04d}_ProbeToTrackerTransform = " + " ".join(["12.5"] * 16),
                  f"Seq_Frame{i:04d}_Timestamp = {1000 + i / 30:.6f}", f"Seq_Frame{i:04d}_ImageStatus = OK"]
    head = ("\n".join(lines) + "\nElementDataFile = LOCAL\n").encode()
    assert len(head) > 1 << 16
    frames = (np.arange(n * h * w) % 251).astype(np.uint8)
    path = tmp_path / "sweep.seq.mha"
    path.write_bytes(head + frames.tobytes())
    sweep = load_sweep(path)
    assert sweep.n_frames == n and np.array_equal(np.asarray(sweep.frames[-1]).ravel(), frames[-h * w:])
    endless = tmp_path / "endless.mha"
    endless.write_bytes(b"ObjectType = Image\n" + b"Comment = x\n" * ((17 << 20) // 12))
    _assert_refused(endless, "header runs past 16 MB")


def test_a_cut_gzip_nrrd_is_called_truncated_not_a_wrong_header(tmp_path):
    """A gzip NRRD cut short (an interrupted copy) was said to hold "2005384948 bytes of pixel data,
    more than ... its header describes": the last 4 bytes of a cut stream are no length."""
    import SimpleITK as sitk

    rng = np.random.default_rng(17)
    image = sitk.GetImageFromArray((rng.random((6, 60, 80)) * 255).astype(np.uint8))
    whole = tmp_path / "whole.nrrd"
    sitk.WriteImage(image, str(whole), useCompression=True)
    assert load_sweep(whole).n_frames == 6
    raw = whole.read_bytes()
    for tail in (b"\n", bytes(512)):  # padding after a whole stream: ignored, as the image library does
        padded = tmp_path / "padded.nrrd"
        padded.write_bytes(raw + tail)
        assert load_sweep(padded).n_frames == 6
    for share in (0.5, 0.9, 0.99):
        cut = tmp_path / f"cut{int(share * 100)}.nrrd"
        cut.write_bytes(raw[:int(len(raw) * share)])
        _assert_refused(cut, "stop short", "truncated or damaged")


def test_finite_doubles_beyond_float32_are_numbers(tmp_path):
    """float64 values beyond float32's range became infinite on conversion: finite pixels were said to
    "hold no number (NaN or infinite)" and shown black, and a sweep of +-1e300 refused as all NaN."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    values = rng.uniform(-1.0, 1.0, (3, 48, 64)) * 1e300
    path = tmp_path / "huge.mha"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    sweep = load_sweep(path)
    assert not any("no number" in n for n in sweep.read_notes)
    frames = np.asarray(sweep.frames, dtype=np.float64)
    # shown in order: the brightest pixel is the largest value, the darkest the smallest
    assert frames.ravel()[values.argmax()] >= 250 and frames.ravel()[values.argmin()] <= 5
    # spanning nearly float64's whole range (+-1.5e308: the window's width is no finite number)
    sitk.WriteImage(sitk.GetImageFromArray(values * 1.5e8), str(path))
    frames = np.asarray(load_sweep(path).frames, dtype=np.float64)
    assert frames.ravel()[values.argmax()] >= 250 and frames.ravel()[values.argmin()] <= 5


def test_met_long_pixels_get_the_same_length_checks(tmp_path):
    """MET_LONG / MET_ULONG files went to the image library unchecked: one with a frame more than
    its header describes (or twice the data) was read as the header's frames without a word. They
    are 4-byte integers (as MetaIO and the image library read them)."""
    import SimpleITK as sitk

    frames = (np.arange(3 * 48 * 64) % 200).astype("<i4").reshape(3, 48, 64)
    for element in ("MET_LONG", "MET_ULONG"):
        exact = _mha(tmp_path / f"{element}.mha", "64 48 3", frames.tobytes(), element)
        sweep = load_sweep(exact)
        assert sweep.n_frames == 3 and np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(exact))), frames)
        longer = _mha(tmp_path / f"{element}_more.mha", "64 48 3", frames.tobytes() + frames[:1].tobytes(), element)
        _assert_refused(longer, "the header's size is wrong")


def test_pixels_in_a_second_file_the_checks_do_not_see_are_refused(tmp_path):
    """An Analyze/NIfTI pair (.hdr + .img) was handed to the image library, which opened its .img
    unchecked: a pipe there hung the command (and the viewer), a link to /dev/zero or outside the
    folder was scored. A .mhd whose data file is a link out of its folder was read too."""
    import SimpleITK as sitk

    frames = np.zeros((2, 40, 48), np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(tmp_path / "pair.hdr"))
    assert (tmp_path / "pair.img").exists()
    _assert_refused(tmp_path / "pair.hdr", "NIfTI pair", "one .nii")
    import gzip as _gzip

    (tmp_path / "pair.img.gz").write_bytes(_gzip.compress((tmp_path / "pair.img").read_bytes()))
    _assert_refused(tmp_path / "pair.img.gz", "NIfTI pair")
    nii = tmp_path / "one.nii"
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(nii))
    head = bytearray(nii.read_bytes())
    head[344:348] = b"ni1\0"
    nii.write_bytes(bytes(head))
    _assert_refused(nii, "separate .img file")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(bytes(2 * 40 * 48))
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "data.raw").symlink_to(outside / "secret.bin")
    (folder / "sym.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 48 40 2\nElementType = MET_UCHAR\n"
                                    "ElementDataFile = data.raw\n")
    _assert_refused(folder / "sym.mhd", "a link to a file outside the header's folder")


def test_a_series_folder_holding_what_is_no_file_names_it(tmp_path):
    """A pipe in a series folder read as 'no DICOM series in this folder'; a link to /dev/zero or
    looping links made good files of the series 'damaged ... remove them'."""
    from fakes import us_dicom

    for kind in ("pipe", "device", "loop"):
        folder = tmp_path / kind
        folder.mkdir()
        for k in range(2):
            us_dicom(folder / f"IM{k}", np.zeros((40, 48), np.uint8), series="1.2.3", instance=k + 1)
        if kind == "pipe":
            os.mkfifo(folder / "IM9")
        elif kind == "device":
            (folder / "IM9").symlink_to("/dev/zero")
        else:
            (folder / "self").symlink_to(folder / "self")
        message = _assert_refused(folder, "holds 1 entry that is not a file")
        assert "IM0" not in message and "IM1" not in message  # good files are not blamed


def test_a_sweep_larger_than_the_memory_available_now_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    """A 3.8 MB compressed sweep (zlib .mha, gzip .nrrd, .nii.gz) whose honest header describes
    4096 x 4096 x 232 pixels was decoded until the system killed the process: only the machine's
    total memory bounded a sweep. What is available now bounds it too, said in one line with both
    sizes; an uncompressed file (memory-mapped) is bounded when it is read into memory."""
    import SimpleITK as sitk

    frames = np.zeros((40, 64, 64), np.uint8)
    write_volume(tmp_path / "z.mha", frames, compress=True)
    write_volume(tmp_path / "z.nrrd", frames, compress=True)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(tmp_path / "z.nii.gz"))
    write_volume(tmp_path / "raw.mha", frames, compress=False)
    mapped = load_sweep(tmp_path / "raw.mha")
    monkeypatch.setattr(validate, "available_memory_bytes", lambda: 200 << 20, raising=False)
    for name in ("z.mha", "z.nrrd", "z.nii.gz"):
        message = _assert_refused(tmp_path / name, name, "40 x 64 x 64 pixels", "160.0 KB", "only 200.0 MB available now",
                                  "fewer frames")
        assert "Traceback" not in message
    with pytest.raises(FetalIQAError, match="only 200.0 MB available now"):
        mapped.in_memory()
    monkeypatch.setattr(validate, "available_memory_bytes", lambda: 2 << 30)
    assert load_sweep(tmp_path / "z.mha").n_frames == 40


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS are Linux's")
def test_the_memory_available_now_is_what_the_system_and_an_address_space_limit_leave():
    """MemAvailable, or less under ``ulimit -v``: a read past either is killed or fails without a word."""
    assert 0 < validate.available_memory_bytes() <= (validate.machine_memory_bytes() or 1 << 62)
    code = ("import resource; from fetaliqa_core import validate; "
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); print(validate.available_memory_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert 0 <= int(out.stdout) < 2 << 30


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS are Linux's")
def test_a_sweep_refused_for_an_address_space_limit_says_the_limit_not_the_machine():
    """Under `ulimit -v`, a sweep too large for what the limit leaves was refused as "this machine
    has only 6.3 GB available now: close other programs", which would not help."""
    code = ("import resource; from fetaliqa_core import validate\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "try: validate.check_memory('s.mha', 3 << 30, 'a sweep', now=True)\n"
            "except Exception as exc: print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "address-space limit (ulimit -v) leaves only" in out.stdout and "close other programs" not in out.stdout


def test_a_container_s_droppable_page_cache_is_not_counted_as_memory_in_use(monkeypatch):
    """In a container (cgroup v2), memory.current counts the page cache the kernel drops on demand:
    after reading earlier cases it reached the limit, and a 750 KB sweep was refused as "only 100 MB
    available now". The cache memory.stat calls inactive_file is left out, as container tools do."""
    import builtins
    import io as _io

    limit, cache = 4 << 30, (4 << 30) - (600 << 20)
    files = {"/sys/fs/cgroup/memory.max": f"{limit}\n", "/sys/fs/cgroup/memory.current": f"{limit - (100 << 20)}\n",
             "/sys/fs/cgroup/memory.stat": f"anon 400000000\nfile {cache}\ninactive_file {cache}\n",
             "/proc/meminfo": f"MemTotal: {64 << 20} kB\nMemAvailable: {32 << 20} kB\n"}
    real_open = builtins.open

    def fake_open(name, *args, **kwargs):
        return _io.StringIO(files[name]) if isinstance(name, str) and name in files else real_open(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    # (in use: 100 MB short of the limit, of which all but 500 MB is droppable cache)
    assert validate.available_memory_bytes() == pytest.approx(limit - (500 << 20), abs=1 << 20)
    del files["/sys/fs/cgroup/memory.stat"]  # without the breakdown: what memory.current says
    assert validate.available_memory_bytes() == pytest.approx(100 << 20, abs=1 << 20)


def _us_dicom_file(path: Path, syntax: str, rows: int, cols: int, frames: int, pixels: bytes,
                   encapsulated: bool = False) -> Path:
    """An ultrasound multi-frame DICOM of 8-bit grey frames in transfer syntax ``syntax`` whose
    header says ``rows`` x ``cols`` x ``frames`` and whose pixel data are ``pixels`` as they are
    (compressed fragments when ``encapsulated``), whatever they hold."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(pixels) if encapsulated else pixels
    if encapsulated:
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _deflated_dicom(path: Path, frames_in_header: int, pixels: bytes, rows: int = 48, cols: int = 64) -> Path:
    """A Deflated Explicit VR Little Endian ultrasound DICOM of 8-bit grey frames whose header
    says ``frames_in_header`` and whose pixel data are ``pixels``, whatever their length."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    return _us_dicom_file(path, DeflatedExplicitVRLittleEndian, rows, cols, frames_in_header, pixels)


def _random_frames(n: int) -> np.ndarray:
    return (np.random.default_rng(3).random((n, 48, 64)) * 255).astype(np.uint8)


@pytest.mark.parametrize("header, held, words", [
    (10, 5, ("15360 bytes of pixel data", "needs 30720", "truncated or its header is wrong")),
    (5, 10, ("30720 bytes of pixel data", "more than the 15360", "the data hold 10 frames", "leave frames out")),
    (1, 10, ("more than the 3072", "the data hold 10 frames", "leave frames out")),
])
def test_a_deflated_dicom_whose_number_of_frames_disagrees_with_its_pixel_data_is_refused(tmp_path, header, held,
                                                                                          words):
    """Deflated DICOM skipped the size check an uncompressed file gets: a header of 10 frames over
    the data of 5 was scored on 10 (5 never in the file, read from whatever followed), and a header
    of 5 or 1 over the data of 10 left frames out, without a word. The same file whole reads."""
    path = _deflated_dicom(tmp_path / "sweep.dcm", header, _random_frames(held).tobytes())
    _assert_refused(path, "sweep.dcm", *words)
    whole = _deflated_dicom(tmp_path / "whole.dcm", 10, _random_frames(10).tobytes())
    assert np.array_equal(load_sweep(whole).frames, _random_frames(10))


def test_a_deflated_dicom_whose_pixel_data_inflate_far_past_its_header_is_refused_in_little_memory(tmp_path):
    """A 3.3 MB deflated file whose header describes 30 KB of pixels but whose pixel data inflate
    to 3.3 GB took more than 5 GB of memory (pydicom inflates the whole dataset before any check),
    and a score --archive over it never scored the good sweeps beside it. Here: 64 MB of zeros in
    a 64 KB file, refused while memory stays a few MB, and still found as a sweep of a folder
    (the folder's run names it failed instead of leaving it out as 'not a sweep')."""
    import tracemalloc

    from fetaliqa_core.io import multiframe_dicom_files

    path = _deflated_dicom(tmp_path / "bomb.dcm", 10, bytes(64 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        _assert_refused(path, "bomb.dcm", f"holds {64 << 20} bytes of (deflated) pixel data", "more than the 30720",
                        "10 frame(s) of 64 x 48 pixels")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak >> 20} MB allocated to refuse it"
    _deflated_dicom(tmp_path / "good.dcm", 10, _random_frames(10).tobytes())
    assert [p.name for p in multiframe_dicom_files(tmp_path, at_least=1)] == ["bomb.dcm", "good.dcm"]


def test_a_deflated_dicom_whose_data_go_on_far_past_its_pixel_data_is_refused(tmp_path):
    """The stream is counted as it inflates: elements after an honest pixel data element that
    inflate to far more than any trailer (here 40 MB of zeros in a private element) are refused
    before pydicom inflates them all in memory (it did, then called them bytes appended to the
    file, judging their places in the inflated data against the file's size)."""
    from pydicom.dataset import Dataset

    path = _deflated_dicom(tmp_path / "tail.dcm", 10, _random_frames(10).tobytes())
    import pydicom

    ds = pydicom.dcmread(path)
    ds.add_new(0x7FE10010, "OB", bytes(40 << 20))  # (after the pixel data, by its tag)
    ds.save_as(path, enforce_file_format=True)
    assert isinstance(ds, Dataset) and path.stat().st_size < 1 << 20
    del ds
    import tracemalloc

    tracemalloc.start()
    try:
        _assert_refused(path, "tail.dcm", "expand to more than", "damaged or crafted")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak >> 20} MB allocated to refuse it"


@pytest.mark.parametrize("pixels, cut", [("noise", 10), ("noise", "half"), ("smooth", 10)])
def test_a_deflated_dicom_cut_short_is_refused_as_truncated_before_the_image_reader_opens_it(tmp_path, monkeypatch,
                                                                                             pixels, cut):
    """A deflated DICOM file a few bytes short (an interrupted copy): a 100 KB sweep of smooth
    pixels held the image reader for minutes at 1.9 GB of memory, deaf to Ctrl-C and SIGTERM;
    frames of noise read with their last pixels zeroed and no word said; a small smooth one was
    'pixels this reader cannot decode'. Each is refused as truncated, before the image reader
    opens the file (here it would fail the test); the same file whole reads."""
    import SimpleITK

    rows, cols = (48, 64) if pixels == "noise" else (120, 160)
    frames = _random_frames(6) if pixels == "noise" else np.stack(
        [(np.add.outer(np.arange(rows), np.arange(cols)) + 5 * k) % 256 for k in range(6)]).astype(np.uint8)
    whole = _deflated_dicom(tmp_path / "whole.dcm", 6, frames.tobytes(), rows, cols)
    assert np.array_equal(load_sweep(whole).frames, frames)
    data = whole.read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:len(data) // 2] if cut == "half" else data[:-cut])

    def opened(*args, **kwargs):
        raise AssertionError("the image reader was given the truncated file")

    monkeypatch.setattr(SimpleITK, "ImageFileReader", opened)
    _assert_refused(path, "cut.dcm", "deflated data stop before their end", "truncated", "copy or export it again")


def test_a_jpeg_dicom_whose_frames_are_smaller_than_its_rows_and_columns_says_so(tmp_path):
    """A header of 4096 x 4096 over ten 64 x 48 JPEG frames was said to contain 'no frames
    (0 x 48 x 64)'; the header's size is what is wrong."""
    import io as _io

    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    def jpeg(seed: int) -> bytes:
        out = _io.BytesIO()
        Image.fromarray(_random_frames(seed + 1)[-1]).save(out, "JPEG", quality=50)
        return out.getvalue()

    path = _us_dicom_file(tmp_path / "rows.dcm", JPEGBaseline8Bit, 4096, 4096, 10, [jpeg(i) for i in range(10)],
                          encapsulated=True)
    message = _assert_refused(path, "rows.dcm", "4096 x 4096 pixels (Columns x Rows)", "compressed frames are 64 x 48",
                              "header is wrong")
    assert "no frames" not in message


def _segmented_palette_dicom(path: Path, segments: list[int], entries: int = 256, depth: int = 16,
                             frames: int = 4) -> Path:
    """A PALETTE COLOR ultrasound DICOM of 8-bit indices whose three colour tables are the same
    Segmented Palette Color LUT Data ``segments`` (PS3.3 C.7.9.2), of ``entries`` entries of
    ``depth`` bits by its descriptors."""
    from fakes import us_dicom

    data = (bytes(segments) + b"\0" * (len(segments) % 2) if depth == 8
            else struct.pack(f"<{len(segments)}H", *segments))
    attrs = {f"{c}PaletteColorLookupTableDescriptor": [entries % 65536, 0, depth] for c in ("Red", "Green", "Blue")}
    attrs.update({f"Segmented{c}PaletteColorLookupTableData": data for c in ("Red", "Green", "Blue")})
    return us_dicom(path, _random_frames(frames)[:, :40, :48], PhotometricInterpretation="PALETTE COLOR", **attrs)


_LINEAR_PAST = [0, 1, 0] + [1, 65535, 65535, 1, 65535, 0] * 4  # 8 x 65,535 entries for a table of 256
_INDIRECT_DOUBLING = [0, 1, 100] + [v for k in range(1, 21) for v in (2, k, 0, 0)]  # segment k copies all before it


@pytest.mark.parametrize("segments, depth, words", [
    (_LINEAR_PAST, 16, ("expands past the 256 entries its descriptor gives",)),
    ([0, 1, 0] + [1, 255, 200] * 20, 8, ("expands past the 256 entries",)),  # 8-bit entries
    ([0, 1, 7] + [1, 1, 7] * 300, 16, ("more segments than the 256 entries",)),
    (_INDIRECT_DOUBLING, 16, ("indirect segment copying another indirect segment", "may not nest")),
    ([0, 1, 5, 2, 2, 0, 0], 16, ("indirect segment copying another indirect segment",)),  # copies itself
    ([0, 1, 5, 2, 1, 3, 0], 16, ("pointing at byte 3, where no segment starts",)),
    ([0, 1, 0, 1, 99, 65535], 16, ("expands to 100 entries, where its descriptor gives 256",)),
])
def test_a_segmented_colour_table_that_expands_past_its_descriptor_or_nests_is_refused_at_once(tmp_path, segments,
                                                                                               depth, words):
    """pydicom expands Segmented Palette Color LUT Data with no bound against the descriptor's
    entry count, once per frame: a 1 MB file of linear segments of 65,535 entries took more than
    5 GB, indirect segments copying one another doubled the work at each level (still running
    after 2 minutes), and a table of 100 entries for 256 was "damaged" without saying why, when
    the pixels happened to need more."""
    message = _assert_refused(_segmented_palette_dicom(tmp_path / "palette.dcm", segments, depth=depth), "palette.dcm",
                              "segmented colour table", "Export the sweep again as RGB or grey", *words)
    assert message.count(":") <= 3, message


def test_a_segmented_colour_table_is_expanded_once_for_the_sweep_not_once_a_frame(tmp_path, monkeypatch):
    """A valid table of 65,536 entries (16-bit indices) cost 64 ms a frame, expanded again for each
    frame by pydicom: 54 s for a sweep of 840 frames. The frames are its colours, as before."""
    import pydicom.pixels.processing as processing

    expansions = []
    expand = processing._expand_segmented_lut
    monkeypatch.setattr(processing, "_expand_segmented_lut", lambda *a, **k: expansions.append(1) or expand(*a, **k))
    # an inverting table: one entry at 65535, then a straight line down to 0
    path = _segmented_palette_dicom(tmp_path / "palette.dcm", [0, 1, 65535, 1, 255, 0], frames=6)
    frames = np.asarray(load_sweep(path).frames, dtype=int)
    assert np.abs(frames - (255 - _random_frames(6)[:, :40, :48].astype(int))).max() <= 1
    assert len(expansions) <= 3, f"the table was expanded {len(expansions)} times for 6 frames"


@pytest.mark.parametrize("segments, depth", [
    ([0, 3, 10, 2000, 65535, 1, 40, 0, 1, 7, 30000, 0, 2, 9, 8], 16),
    ([0, 2, 1, 250, 1, 30, 3, 0, 3, 9, 8, 7, 2, 2, 0, 0, 0, 0, 1, 50, 255, 2, 1, 4, 0, 0, 0, 1, 41, 40], 8),
])
def test_segmented_colour_tables_expand_as_pydicom_expands_them(tmp_path, segments, depth):
    """The bounded expansion gives pydicom's colours on valid tables: discrete, linear (rising,
    falling, flat) and, with 8-bit entries, indirect segments copying a discrete and a linear one."""
    import pydicom
    from pydicom.pixels import apply_color_lut

    from fetaliqa_core.io.palette import segmented_palette

    ds = pydicom.dcmread(_segmented_palette_dicom(tmp_path / "palette.dcm", segments, depth=depth))
    entries = len(pydicom.pixels.processing._expand_segmented_lut(  # how many the segments give
        struct.unpack(f"<{len(segments)}{'B' if depth == 8 else 'H'}", bytes(segments) if depth == 8
                      else struct.pack(f"<{len(segments)}H", *segments)), "<B" if depth == 8 else "<H"))
    for colour in ("Red", "Green", "Blue"):
        ds[f"{colour}PaletteColorLookupTableDescriptor"].value = [entries, 0, depth]
    index = np.arange(entries + 5, dtype=np.uint16).reshape(1, -1)
    expected = apply_color_lut(index, ds)
    expected = (expected >> 8).astype(np.uint8) if depth == 16 else expected
    assert np.array_equal(segmented_palette(Path("palette.dcm"), ds).apply(index), expected)


def test_a_growing_process_s_address_space_limit_is_told_as_the_limit(monkeypatch):
    """The refusal compared what is available (which read the process's size) with a second
    reading of what the limit leaves: a process growing between the two (the window's threads)
    was told "this machine has only ... available now: close other programs" once in 200 calls."""
    left = iter(range(3 << 30, 0, -(1 << 20)))  # each reading finds 1 MB more of the limit taken
    monkeypatch.setattr(validate, "address_space_left", lambda: next(left))
    monkeypatch.setattr(validate, "machine_memory_bytes", lambda: 64 << 30)
    with pytest.raises(FetalIQAError) as info:
        validate.check_memory("s.mha", 8 << 30, "a sweep", now=True)
    assert "address-space limit (ulimit -v)" in str(info.value) and "close other programs" not in str(info.value)
