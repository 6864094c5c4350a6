"""Segmented Palette Color LUT Data (DICOM PS3.3 C.7.9.2) expanded with bounded work.

A PALETTE COLOR image may give its colour table as segments: discrete (opcode 0: that many
entries follow), linear (opcode 1: that many entries on a straight line from the table's last
entry to the value that follows) and indirect (opcode 2: copy that many segments starting at a
byte offset in the same data). pydicom expands them without comparing the result with the
table's length, and again for every frame: a 1 MB file of linear segments of 65,535 entries each
grew past 5 GB, indirect segments that copy one another doubled the work at each level, and a
valid 65,536-entry table cost 64 ms a frame. Here the table is expanded once, and every segment is
checked before it is expanded, so the work never exceeds the entries the descriptor gives (at most
65,536) and the segments the data holds: anything else is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fetaliqa_core.errors import FetalIQAError

DISCRETE, LINEAR, INDIRECT = 0, 1, 2

#: The most entries a colour table has (a descriptor's 0 stands for 2**16: PS3.3 C.7.6.3.1.5).
MAX_ENTRIES = 1 << 16


class _Segment(NamedTuple):
    opcode: int
    length: int  # entries (discrete, linear) or segments to copy (indirect)
    body: int  # where, in the data's values, the values after opcode and length start


class PaletteTable(NamedTuple):
    """An expanded colour table: ``rgb`` (entries x 3, uint8: a 16-bit table's high bytes, as
    the image reader gives colour) and the stored value mapped to its first entry."""
    rgb: np.ndarray
    first_mapped: int

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame``'s indices as RGB: values below the first one mapped take the first entry,
        values past the table's end the last (PS3.3 C.7.6.3.1.5), as pydicom maps them (which, for a
        table of 8-bit entries, wraps indices past 255 round to its start)."""
        index = np.clip(frame.astype(np.int64) - self.first_mapped, 0, self.rgb.shape[0] - 1)
        return self.rgb[index]


def has_segmented_palette(ds: Any) -> bool:
    """Whether a PALETTE COLOR dataset gives its table only as Segmented Palette Color LUT Data."""
    return "SegmentedRedPaletteColorLookupTableData" in ds and "RedPaletteColorLookupTableData" not in ds


def segmented_palette(path: Path, ds: Any) -> PaletteTable:
    """The colour table of ``ds`` (read from ``path``) expanded from its Segmented Palette Color
    LUT Data, once for the whole file. Refused in one line when a channel is missing, a segment
    is of an unknown type, runs past the data, gives no entry, would take the table past the
    entries its descriptor gives, when an indirect segment points where no segment starts or
    copies another indirect segment (they may not nest: a loop or a chain of copies is refused
    before it is followed), or when the table ends with fewer entries than its descriptor gives.

    The linear segment's values are pydicom's (the previous segment's last value left out, the
    new end value included, rounded to the nearest). An indirect segment's offset counts bytes,
    as the standard says (pydicom counts values; the same for 8-bit entries)."""
    try:
        entries, first_mapped, depth = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    except Exception:  # noqa: BLE001 - missing, or not three numbers
        raise _refused(path, "has no Palette Color Lookup Table Descriptor of three numbers (entries, first value "
                             "mapped, bits per entry)") from None
    entries = (entries % MAX_ENTRIES) or MAX_ENTRIES  # (unsigned, whichever way it was read; 0 stands for 2**16)
    if not 0 < entries <= MAX_ENTRIES or depth not in (8, 16):
        raise _refused(path, f"has a descriptor of {entries} entries of {depth} bits (at most {MAX_ENTRIES} entries "
                             "of 8 or 16 bits are possible)")
    encoding = getattr(ds, "original_encoding", (None, True))
    little = encoding[1] is not False
    kind = np.dtype(np.uint8) if depth == 8 else np.dtype("<u2" if little else ">u2")
    expanded: dict[bytes, np.ndarray] = {}  # the three channels often share one set of segments
    channels = []
    for colour in ("Red", "Green", "Blue"):
        data = ds.get(f"Segmented{colour}PaletteColorLookupTableData", None)
        if data is None:
            raise _refused(path, f"gives no {colour.lower()} segments beside the red ones")
        data = bytes(data.value if hasattr(data, "value") else data)
        if data not in expanded:
            values = np.frombuffer(data[:len(data) - len(data) % kind.itemsize], dtype=kind)
            expanded[data] = _expand(path, values, entries, little, colour.lower())
        channels.append(expanded[data])
    table = np.stack(channels, axis=-1)
    rgb = (table >> 8).astype(np.uint8) if depth == 16 else table.astype(np.uint8)
    return PaletteTable(rgb=rgb, first_mapped=first_mapped)


def _refused(path: Path, what: str, colour: str = "") -> FetalIQAError:
    whose = f"the {colour} channel of its" if colour else "its"
    return FetalIQAError(f"{path}: {whose} segmented colour table (Segmented Palette Color LUT Data) {what}: the "
                         "file is damaged or was written wrongly. Export the sweep again as RGB or grey.")


def _segments(path: Path, values: np.ndarray, entries: int, wide: bool, colour: str) -> list[_Segment]:
    """The segments of one channel's data, in order, each checked to lie within the data and to
    give at least one entry (or copy at least one segment). More segments than the table has
    entries cannot all give one: refused before they are all read."""
    segments: list[_Segment] = []
    at, n = 0, values.size
    offset_values = 2 if wide else 4  # an indirect segment's 32-bit byte offset
    while at < n:
        if at == n - 1 and not wide and values[at] == 0:
            break  # (8-bit entries: one zero pads the data to an even length)
        if at + 2 > n:
            raise _refused(path, "ends in the middle of a segment", colour)
        if len(segments) == entries:
            raise _refused(path, f"holds more segments than the {entries} entries its descriptor gives", colour)
        opcode, length = int(values[at]), int(values[at + 1])
        if opcode not in (DISCRETE, LINEAR, INDIRECT):
            raise _refused(path, f"holds a segment of unknown type {opcode} (only 0 discrete, 1 linear and "
                                 "2 indirect exist)", colour)
        if length == 0:
            raise _refused(path, "holds a segment of no entries", colour)
        size = length if opcode == DISCRETE else 1 if opcode == LINEAR else offset_values
        if at + 2 + size > n:
            raise _refused(path, "holds a segment that runs past the end of its data", colour)
        segments.append(_Segment(opcode, length, at + 2))
        at += 2 + size
    return segments


def _expand(path: Path, values: np.ndarray, entries: int, little: bool, colour: str) -> np.ndarray:
    """One channel's table (``entries`` values, int64) from its segment data ``values``."""
    wide = values.dtype.itemsize == 2
    segments = _segments(path, values, entries, wide, colour)
    starts = {segment.body - 2: i for i, segment in enumerate(segments)}  # a segment's first value's index
    table = np.empty(entries, dtype=np.int64)
    filled = 0

    def put(segment: _Segment) -> None:
        nonlocal filled
        length = segment.length
        if filled + length > entries:
            raise _refused(path, f"expands past the {entries} entries its descriptor gives", colour)
        if segment.opcode == DISCRETE:
            table[filled:filled + length] = values[segment.body:segment.body + length]
        else:
            if filled == 0:
                raise _refused(path, "starts with a linear segment, which needs an entry before it", colour)
            y0, y1 = int(table[filled - 1]), int(values[segment.body])
            if y0 == y1:
                table[filled:filled + length] = y1
            else:
                step = (y1 - y0) / length
                table[filled:filled + length] = np.around(np.linspace(y0 + step, y1, length))
        filled += length

    for segment in segments:
        if segment.opcode != INDIRECT:
            put(segment)
            continue
        if filled == 0:
            raise _refused(path, "starts with an indirect segment, which needs segments before it", colour)
        body = segment.body
        low, high = ((int(values[body]), int(values[body + 1])) if wide
                     else _bytes_as_words(values[body:body + 4], little))
        offset = low | (high << 16)
        first = starts.get(offset // values.dtype.itemsize) if offset % values.dtype.itemsize == 0 else None
        if first is None:
            raise _refused(path, f"holds an indirect segment pointing at byte {offset}, where no segment "
                                 "starts", colour)
        if first + segment.length > len(segments):
            raise _refused(path, f"holds an indirect segment copying {segment.length} segments where "
                                 f"only {len(segments) - first} follow", colour)
        for k in range(first, first + segment.length):  # each gives an entry: at most `entries` in all
            copied = segments[k]
            if copied.opcode == INDIRECT:
                raise _refused(path, "holds an indirect segment copying another indirect segment "
                                     "(they may not nest)", colour)
            put(copied)
    if filled != entries:
        raise _refused(path, f"expands to {filled} entries, where its descriptor gives {entries}", colour)
    return table


def _bytes_as_words(four: np.ndarray, little: bool) -> tuple[int, int]:
    """An indirect segment's offset in 8-bit data: two 16-bit words (low word first), each in the
    file's byte order."""
    b = [int(v) for v in four]
    if little:
        return b[0] | (b[1] << 8), b[2] | (b[3] << 8)
    return (b[0] << 8) | b[1], (b[2] << 8) | b[3]
