"""ACOUSLIC-AI layout -> cases, a grouped split, a per-frame index and a lazy frame dataset.

Layout (the ACOUSLIC-AI challenge's training set, v1.1)::

    DATA/images/stacked_fetal_ultrasound/<uuid>.mha      (N, H, W) uint8 frames, 6 sweeps
    DATA/masks/stacked_fetal_abdomen/<uuid>.mha          (N, H, W) labels 0 / 1 optimal / 2 suboptimal
    DATA/circumferences/fetal_abdominal_circumferences_per_sweep.csv
        uuid, subject_id, sweep_1_ac_mm, ..., sweep_6_ac_mm   (blank where a sweep has no AC)

Frames are never copied to disk: an uncompressed volume is memory-mapped by
:func:`fetaliqa_core.io.load_sweep`; a compressed one is decoded on first use and kept in a small
per-process LRU cache of volumes. :class:`CaseChunkSampler` shuffles in chunks of a few cases so
that such a cache is hit instead of decoding a case per frame.

A frame is positive ("good for measuring the AC") when its mask is non-empty (label 1 or 2).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetaliqa_core.acouslic import CSV_RELPATH, IMAGES_SUBDIR, MASKS_SUBDIR
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_path
#: The paper's split: by case, 70 / 10 / 20 train / val / test, with a fixed seed.
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_NAMES = ("train", "val", "test")
#: The project's default split seed (the grouped split of ``--preset fetaliqa``).
SPLIT_SEED = 42
#: The seed of the paper's reference code's split (its seeded permutation of the cases), the
#: default of ``--preset paper``: with it, :func:`permutation_split` cuts the 300 ACOUSLIC-AI
#: training cases into the reference's train / val / test cases.
REFERENCE_SPLIT_SEED = 9872398152123123767126
#: Decoded compressed volumes kept per process (an ACOUSLIC case is ~350 MB decoded).
DEFAULT_CACHE_CASES = 4
INDEX_VERSION = "1"


# ------------------------------------------------------------------------------------------
# Cases and the split
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRecord:
    """One case of the dataset (one row of the circumferences CSV)."""

    uuid: str
    subject_id: str
    image_path: Path
    mask_path: Path
    ac_mm: tuple[float | None, ...]  # reference AC per sweep (mm), None where the sweep has none
    #: False where the CSV leaves the subject blank (the case then stands for a subject of its own)
    subject_given: bool = True

    @property
    def n_sweeps(self) -> int:
        return len(self.ac_mm)

    def sweeps_with_ac(self) -> list[int]:
        """Zero-based indices of the sweeps that have a reference AC."""
        return [i for i, v in enumerate(self.ac_mm) if v is not None]


#: More rows than any fetal ultrasound dataset holds (ACOUSLIC-AI: 300 cases); a CSV with more
#: is refused while it is read, before its rows fill the memory.
MAX_CSV_CASES = 100_000
#: More bytes than such a CSV takes (a row: a case id, a subject and six ACs, about 100 bytes; 300
#: bytes allowed each). A larger file is refused before it is read: a 1 GB file whose first row
#: never ended was read whole (2.4 GB of memory, over a minute) to be called a field too long.
MAX_CSV_BYTES = MAX_CSV_CASES * 300
#: A reference AC in mm is a length between 0 and this (a term abdomen is ~350 mm).
MAX_REFERENCE_AC_MM = 1000.0


def _parse_ac(text: str, where: str) -> float | None:
    """A sweep's reference AC in mm; None for a blank cell (or the words data tools write for
    one: nan, none, na). Anything else that is not a length in mm is refused with its place."""
    text = (text or "").strip()
    if not text or text.lower() in ("nan", "none", "na"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise FetalIQAError(f"{where}: {_shown(text)} is not a number; leave the cell blank when a sweep has no AC") from None
    if not math.isfinite(value) or not 0 < value < MAX_REFERENCE_AC_MM:
        raise FetalIQAError(f"{where}: {_shown(text)} is not a circumference in mm (0-{MAX_REFERENCE_AC_MM:.0f}); "
                            "correct it, or leave the cell blank when a sweep has no AC")
    return value


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, printable characters only and cut to ``limit``."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return repr(clean + ("..." if len(text) > limit else ""))


def _sweep_columns(header: Sequence[str], csv_path: Path) -> list[str]:
    cols = []
    k = 1
    while f"sweep_{k}_ac_mm" in header:
        cols.append(f"sweep_{k}_ac_mm")
        k += 1
    stray = sorted(h for h in header if h.startswith("sweep_") and h.endswith("_ac_mm") and h not in cols)
    if stray:
        raise FetalIQAError(f"{csv_path}: the sweep columns must run sweep_1_ac_mm, sweep_2_ac_mm, ... without a "
                            f"gap; {', '.join(stray[:3])} follow(s) a missing one. Add the missing column (blank "
                            "cells) or renumber them.")
    return cols


def read_cases(data_dir: str | Path) -> list[CaseRecord]:
    """Cases of an ACOUSLIC-layout folder, in CSV order; raises FetalIQAError when the layout is
    incomplete (missing CSV, columns, or image/mask files)."""
    data = Path(data_dir)
    if not data.is_dir():
        what = "is a file, not a folder" if data.exists() else "no such folder"
        raise FetalIQAError(f"--data {data}: {what}; give the folder that holds images/, masks/ and circumferences/")
    csv_path = data / CSV_RELPATH
    if not csv_path.is_file() and (csv_path.exists() or csv_path.is_symlink()):
        # (a pipe, or a link to /dev/zero, was called missing)
        raise FetalIQAError(f"{csv_path} cannot be read: it is {_not_a_file(csv_path)}. Put the circumferences "
                            "CSV file (one row per case: uuid, subject_id, sweep_1_ac_mm ...) in its place")
    if not csv_path.is_file():
        raise FetalIQAError(
            f"{csv_path} is missing: --data must be a folder in the ACOUSLIC-AI layout "
            f"({IMAGES_SUBDIR}/, {MASKS_SUBDIR}/, {CSV_RELPATH}); "
            + (_layout_hint(data, CSV_RELPATH) or "`fetaliqa synth --out DIR` writes one"))
    try:
        rows, sweep_cols = _read_csv_rows(csv_path)
    except UnicodeDecodeError:
        raise FetalIQAError(f"{csv_path}: the file is not UTF-8 text; save it as UTF-8 CSV (comma-separated)") from None
    except csv.Error as exc:
        raise FetalIQAError(f"{csv_path}: not a readable CSV file ({exc}); save it as a comma-separated table with "
                            "one row per case") from None
    cases: list[CaseRecord] = []
    seen: set[str] = set()
    missing_files: list[Path] = []
    not_files: list[Path] = []
    for line, row in rows:
        uuid = (row.get("uuid") or "").strip()
        if not uuid:
            continue
        if len(uuid.encode("utf-8")) > 200:  # names its files: longer than a file name may be
            raise FetalIQAError(f"{csv_path}, line {line}: the case id {_shown(uuid)} is {len(uuid)} characters "
                                "long; a case id names its files in images/ and masks/, and file names end at "
                                "255 bytes. Shorten it.")
        if uuid in (".", "..") or any(ch in uuid for ch in "/\\:") or not uuid.isprintable():
            raise FetalIQAError(f"{csv_path}, line {line}: the case id {_shown(uuid)} is not a plain name (it holds a "
                                "folder, a drive or control characters); a case id names its files in images/ and "
                                "masks/")
        if uuid in seen:
            raise FetalIQAError(f"{csv_path}, line {line}: case {uuid} is listed twice; keep one row per case")
        seen.add(uuid)
        raw_subject = row.get("subject_id") or ""
        subject = subject_key(raw_subject) or uuid
        ac = tuple(_parse_ac(row.get(c, ""), f"{csv_path}, line {line}, {c}") for c in sweep_cols)
        image = data / IMAGES_SUBDIR / f"{uuid}.mha"
        mask = data / MASKS_SUBDIR / f"{uuid}.mha"
        for p in (image, mask):
            if not p.is_file():
                (missing_files if not p.exists() and not p.is_symlink() else not_files).append(p)
        cases.append(CaseRecord(uuid, subject, image, mask, ac, subject_given=bool(raw_subject.strip())))
    for sub in (IMAGES_SUBDIR, MASKS_SUBDIR):  # a whole folder missing, spelt otherwise: said as such
        hint = (_layout_hint(data, sub) if not (data / sub).is_dir()
                and any(p.parent == data / sub for p in missing_files) else "")
        if hint:
            raise FetalIQAError(f"{data / sub}/ is missing: the ACOUSLIC-AI layout keeps the cases' .mha files in "
                                f"{IMAGES_SUBDIR}/ and {MASKS_SUBDIR}/ beside {CSV_RELPATH}; {hint}")
    if missing_files:
        more = f" and {len(missing_files) - 3} more" if len(missing_files) > 3 else ""
        raise FetalIQAError(f"{len(missing_files)} file(s) named in {csv_path} are missing: "
                            f"{', '.join(map(str, missing_files[:3]))}{more}"
                            f"{_other_names_hint(missing_files[0]) or _SUBSET_HINT}")
    if not_files:  # there, but no file to read: they were "missing", the message listing them as present
        more = f" and {len(not_files) - 3} more" if len(not_files) > 3 else ""
        shown = ", ".join(f"{p} ({_not_a_file(p)})" for p in not_files[:3])
        raise FetalIQAError(f"{len(not_files)} file(s) named in {csv_path} cannot be read: {shown}{more}; put "
                            "each case's .mha file in their place")
    if not cases:
        raise FetalIQAError(f"{csv_path} lists no case; add one row per case (uuid, subject_id, sweep ACs)")
    return cases


#: What to do with a CSV naming cases whose files are not there (the challenge's CSV lists all its
#: cases; a folder holding some of them was refused with no word on how to use those it holds).
_SUBSET_HINT = ("; put them in their place, or, to use only the cases the folder holds, take the other cases' rows "
                "out of a copy of the CSV")


def subject_key(text: str) -> str:
    """The subject a ``subject_id`` cell names, as the split groups cases by it: spaces around it
    dropped, and a whole number however a spreadsheet or pandas wrote it (``7``, ``7.0``, ``07``)
    as that number (``7``). Compared as written, ``7`` and ``7.0`` were two subjects and one
    subject's cases landed in training and in test, no word said. Other ids are kept as they are."""
    text = (text or "").strip()
    digits = text[:-2] if text.endswith(".0") else text
    if digits.isascii() and digits.isdigit():
        return str(int(digits))
    return text


def no_subject_line(cases: Sequence[CaseRecord]) -> str | None:
    """One line counting the cases whose ``subject_id`` is blank (each taken as its own subject,
    so the split may put one subject's cases in two splits); None when every case has one."""
    n = sum(not c.subject_given for c in cases)
    if not n:
        return None
    return (f"note: {n} case(s) have no subject_id: each is taken as its own subject, so a subject's cases may be "
            "split apart")


def _layout_name(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def _layout_hint(data: Path, rel: Path) -> str:
    """What the folder holds in place of ``data / rel`` of the layout: the same path spelt
    otherwise (hyphens or spaces for underscores, another letter case: ``stacked-fetal-abdomen``),
    or the whole layout one folder down (a zip unpacked into a folder of its name); "" when
    neither. The message said only that the path, or every case's file, was missing."""
    here = data
    for part in rel.parts:
        nxt = here / part
        if not nxt.exists():
            try:
                found = [p for p in here.iterdir() if _layout_name(p.name) == _layout_name(part)]
            except OSError:
                found = []
            if len(found) != 1:
                here = None
                break
            nxt = found[0]
        here = nxt
    if here is not None and here != data / rel:
        return (f"{data} holds {here.relative_to(data)} instead: rename it {rel} (the layout's names are the "
                "ACOUSLIC-AI challenge's)")
    try:
        subs = [p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"]
    except OSError:
        return ""
    if len(subs) == 1 and ((subs[0] / CSV_RELPATH).is_file() or (subs[0] / IMAGES_SUBDIR).is_dir()):
        return f"the layout is one folder down, in {subs[0]}: give --data {subs[0]}"
    return ""


def _not_a_file(path: Path) -> str:
    """What ``path``, which is there but no regular file, is: a folder, a pipe, a device, a socket
    (through a link, the link's target named too: a link to /dev/zero was "missing")."""
    import os
    import stat

    if path.is_symlink() and not path.exists():
        return "a link to nothing readable: its target is missing, or the link leads back to itself"
    if path.is_dir():
        return "a folder"
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    kind = ("a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "")
    if not kind:
        return "not a regular file: a pipe, device or socket"
    if path.is_symlink():
        try:
            return f"a link to {os.path.realpath(path)}, {kind}, not a regular file"
        except (OSError, ValueError):
            pass
    return f"{kind}, not a regular file"


def unlisted_cases(data_dir: str | Path, cases: Sequence[CaseRecord]) -> list[str]:
    """Case ids of ``.mha`` files in images/ or masks/ that the CSV does not list: such a case is
    left out of training and evaluation (a row deleted by mistake left it out without a word)."""
    listed = {c.uuid for c in cases}
    found = {name[:-len(".mha")] for name in _mha_names(data_dir) if not _is_mac_metadata(name)}
    return sorted(found - listed)


def _mha_names(data_dir: str | Path) -> list[str]:
    """Names of the ``.mha`` files in images/ and masks/ (one entry per file)."""
    names: list[str] = []
    for sub in (IMAGES_SUBDIR, MASKS_SUBDIR):
        try:
            names.extend(p.name for p in (Path(data_dir) / sub).iterdir() if p.name.endswith(".mha"))
        except OSError:
            continue
    return names


def _is_mac_metadata(name: str) -> bool:
    """A macOS AppleDouble file (``._<uuid>.mha``, a few kB of a Mac's metadata written beside
    each file copied from it): never a case, though named like one (as ``score`` tells them)."""
    return name.startswith("._")


def mac_metadata_line(data_dir: str | Path) -> str | None:
    """One line counting the macOS metadata files in images/ or masks/, left out; None when none.
    They were named as cases missing from the CSV ("add their rows")."""
    n = sum(_is_mac_metadata(name) for name in _mha_names(data_dir))
    if not n:
        return None
    return (f"note: {n} macOS metadata file(s) in {IMAGES_SUBDIR}/ or {MASKS_SUBDIR}/ (named ._*, written beside "
            "files copied from a Mac) are not cases and are left out")


def unlisted_cases_line(data_dir: str | Path, cases: Sequence[CaseRecord], purpose: str) -> str | None:
    """One line naming the cases with files in images/ or masks/ but no row in the CSV, left out
    (``purpose``: what their rows would let the command do, e.g. "train on them"); None when none.
    Evaluation named them; training and distillation left them out without a word."""
    unlisted = unlisted_cases(data_dir, cases)
    if not unlisted:
        return None
    shown = ", ".join(unlisted[:3]) + (" ..." if len(unlisted) > 3 else "")
    return (f"note: {len(unlisted)} case(s) have files in {IMAGES_SUBDIR}/ or {MASKS_SUBDIR}/ but no row in "
            f"{CSV_RELPATH} and are left out ({shown}); add their rows to {purpose}")


def data_notes(data_dir: str | Path, cases: Sequence[CaseRecord], purpose: str,
               cache_dir: Path | None = None) -> list[str]:
    """The notes training and distillation print on the dataset they read: cases with files but no
    row (``purpose`` as :func:`unlisted_cases_line` takes it), macOS metadata files, cases without a subject id, and
    reference ACs on sweeps whose mask labels no frame (as ``eval`` says them: such a sweep was
    trained on as negatives without a word). ``cache_dir``: :func:`frame_labels`' cache."""
    from training.evaluate import reference_ac_notes

    lines = [unlisted_cases_line(data_dir, cases, purpose), mac_metadata_line(data_dir), no_subject_line(cases)]
    found = {uuid: {"not_annotated": sweeps} for uuid, sweeps in ac_without_annotation(cases, cache_dir).items()}
    return [line for line in lines if line] + reference_ac_notes({"reference_ac_mismatch": found})


def ac_without_annotation(cases: Sequence[CaseRecord], cache_dir: Path | None = None) -> dict[str, list[int]]:
    """``{case id: [sweep numbers, from 1]}`` of the sweeps with a reference AC in the CSV whose
    mask labels no frame (an AC written a column off, or a mask saved empty). A case that cannot
    be read is passed over here: reading it for training or distillation says what is wrong."""
    found: dict[str, list[int]] = {}
    for case in cases:
        if not case.sweeps_with_ac():
            continue
        try:
            labels = frame_labels(case, cache_dir)
            ranges = _sweep_ranges(case, labels.shape[0])
        except (FetalIQAError, OSError, ValueError):
            continue
        empty = [s + 1 for s in case.sweeps_with_ac() if s < len(ranges) and not labels[slice(*ranges[s])].any()]
        if empty:
            found[case.uuid] = empty
    return found


def _other_names_hint(missing: Path) -> str:
    """What a missing ``<uuid>.mha`` may be under another name in its folder (another format,
    another letter case): training reads the challenge's layout, ``.mha`` files named by case id."""
    try:
        stem = missing.name[: -len(".mha")].lower()
        found = [p.name for p in missing.parent.iterdir() if p.name.lower().split(".")[0] == stem][:1]
    except OSError:
        return ""
    if not found:
        return ""
    return (f" (the folder holds {found[0]}: training and evaluation read the ACOUSLIC-AI layout, one .mha file a case "
            "named by its case id as the CSV writes it; convert the files or rename them)")


def _read_csv_rows(csv_path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """``(line, row)`` of every row of the circumferences CSV and its sweep columns; every row must
    have as many cells as the header, and there may be at most :data:`MAX_CSV_CASES` rows."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        import os

        size = os.fstat(fh.fileno()).st_size
        if size > MAX_CSV_BYTES:
            raise FetalIQAError(f"{csv_path}: the file holds {size / 1e6:,.0f} MB, far more than a circumferences CSV "
                                f"takes (about 100 bytes a case; at most {MAX_CSV_CASES} cases are read). Check that "
                                "this is the circumferences file.")
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("uuid", "subject_id") if c not in header]
        sweep_cols = _sweep_columns(header, csv_path)
        if missing or not sweep_cols:
            need = missing + ([] if sweep_cols else ["sweep_1_ac_mm ..."])
            found = ", ".join(_shown(h, 24) for h in header[:6]) or "nothing"
            sep = (" (the header looks separated by ';' or tabs: save the CSV with commas)"
                   if len(header) == 1 and any(c in header[0] for c in ";\t") else "")
            raise FetalIQAError(f"{csv_path}: column(s) {', '.join(need)} missing; expected uuid, subject_id, "
                                f"sweep_1_ac_mm ... sweep_6_ac_mm, found {found}{sep}")
        rows: list[tuple[int, dict]] = []
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise FetalIQAError(f"{csv_path}, line {line}: {len(cells)} cell(s) where the header has "
                                    f"{len(header)}; every row needs one cell per column (blank where there is no AC)")
            if len(rows) >= MAX_CSV_CASES:
                raise FetalIQAError(f"{csv_path}: more than {MAX_CSV_CASES} rows; a dataset's CSV has one row per "
                                    "case. Check that this is the circumferences file.")
            rows.append((line, dict(zip(header, cells))))
    return rows, sweep_cols


def data_fingerprint(data_dir: str | Path, cases: Sequence[CaseRecord]) -> str:
    """A SHA-256 of what a bundle learnt from: the circumferences CSV's bytes, each case's mask
    bytes (the labels) and its image file's name and size (hashing every sweep's pixels would cost
    minutes on a full dataset). A manifest recorded only the data folder's path and its cases' ids:
    a dataset whose masks were relabelled since could not be told from the one trained on."""
    import hashlib

    h = hashlib.sha256()
    with (Path(data_dir) / CSV_RELPATH).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    for case in sorted(cases, key=lambda c: c.uuid):
        h.update(f"\0{case.uuid}\0{case.image_path.name}\0{case.image_path.stat().st_size}\0".encode())
        with case.mask_path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def case_digest(uuid: str) -> str:
    """A short fingerprint of a case id (16 hex digits of its SHA-256), as a bundle's manifest
    records the cases it was trained on: 100 000 cases fit its size limit whatever their ids."""
    return hashlib.sha256(uuid.encode("utf-8")).hexdigest()[:16]


def permutation_split(cases: Sequence[CaseRecord], seed: int = SPLIT_SEED,
                      fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, list[CaseRecord]]:
    """The reference code's split: a seeded permutation of the cases (in CSV order), cut at
    70 / 10 / 20 %, ignoring subjects (cases of one subject may land in two splits).

    Cut as the reference cuts it: truncated, ``int(0.7 n)`` training cases and validation up to
    ``int((1 - 0.2) n)``, the rest test (on 6 cases 4 / 0 / 2, where rounding gave 4 / 1 / 1; the
    same on the 300 ACOUSLIC-AI cases), so that with its seed (:data:`REFERENCE_SPLIT_SEED`) the
    cases fall where they fell for the paper."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise FetalIQAError(f"split fractions {tuple(fractions)} must be three non-negative numbers")
    total = float(sum(fractions))
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    n = len(order)
    train_end = int(fractions[0] / total * n)
    val_end = max(train_end, int((1 - fractions[2] / total) * n))
    parts = (order[:train_end], order[train_end:val_end], order[val_end:])
    return {name: sorted(part, key=lambda c: c.uuid) for name, part in zip(SPLIT_NAMES, parts)}


def split_cases(
    cases: Sequence[CaseRecord],
    seed: int = SPLIT_SEED,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    method: str = "grouped",
) -> dict[str, list[CaseRecord]]:
    """Split by case into train / val / test, grouped by ``subject_id``.

    All cases of one subject land in one split. Subjects are ordered by id, shuffled with
    ``seed`` and assigned greedily so that each split's share of *cases* comes as close as it can
    to ``fractions`` (the split with the largest remaining deficit takes the next subject).
    Deterministic: the same cases and seed give the same split, whatever the CSV order. With at
    least 3 subjects, each split gets at least one subject.
    """
    if method == "permutation":
        return permutation_split(cases, seed, fractions)
    if method != "grouped":
        raise FetalIQAError(f"unknown split method {method!r}; use grouped or permutation")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise FetalIQAError(f"split fractions {tuple(fractions)} must be three non-negative numbers")
    total_f = float(sum(fractions))
    fr = [f / total_f for f in fractions]
    groups: dict[str, list[CaseRecord]] = {}
    for c in cases:
        groups.setdefault(c.subject_id, []).append(c)
    subjects = sorted(groups)
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    n_total = len(cases)
    counts = [0, 0, 0]
    assigned: list[list[str]] = [[], [], []]
    pending = list(order)
    # Seed each non-empty split with one subject first (when there are enough subjects).
    if len(pending) >= 3:
        for k in (2, 1, 0):
            if fr[k] > 0 and pending:
                s = pending.pop(0)
                assigned[k].append(s)
                counts[k] += len(groups[s])
    for s in pending:
        deficits = [fr[k] * n_total - counts[k] for k in range(3)]
        k = int(np.argmax(deficits))
        assigned[k].append(s)
        counts[k] += len(groups[s])
    out: dict[str, list[CaseRecord]] = {}
    for name, subs in zip(SPLIT_NAMES, assigned):
        members = sorted((c for s in subs for c in groups[s]), key=lambda c: c.uuid)
        out[name] = members
    return out


# ------------------------------------------------------------------------------------------
# Frame index
# ------------------------------------------------------------------------------------------


def _sweep_ranges(case: CaseRecord, n_frames: int, metadata: dict[str, str] | None = None) -> list[tuple[int, int]]:
    """The case's sweeps as half-open frame ranges, one per sweep the case holds.

    The sweep ranges its image file records (``FetalIQA_SweepRanges``, what ``fetaliqa score``
    reads) come first: a 2-sweep case in a table with six sweep columns was otherwise cut into
    six sweeps, its reference AC put on the wrong frames. Without them, equal consecutive blocks,
    one per sweep column of the CSV: the layout's own statement of how many sweeps a case holds
    (the ACOUSLIC stacking: 6 x 140; a blank AC is a sweep without a measurement, not a sweep
    missing, and refusing such cases stopped whole datasets of NIfTI files, which cannot record
    their sweeps). ``metadata``: the image header's FetalIQA fields when already read (:func:`_header_info`).
    """
    from fetaliqa_core.io import META_SWEEP_RANGES
    from fetaliqa_core.io.sweep import recorded_sweep_layout

    n_cols = case.n_sweeps
    if metadata is None:
        metadata = _header_info(case.image_path)[1]
    recorded = recorded_sweep_layout(n_frames, metadata)
    if recorded is not None:
        ranges = recorded[0]
        beyond = [s + 1 for s in case.sweeps_with_ac() if s >= len(ranges)]
        if beyond:
            raise FetalIQAError(
                f"{case.image_path}: the file records {len(ranges)} sweep(s) ({META_SWEEP_RANGES} "
                f"{_shown(metadata[META_SWEEP_RANGES])}) but the CSV gives case {case.uuid} a reference AC for "
                f"sweep {beyond[0]}; correct its row (one AC per sweep, in the file's sweep order)")
        return ranges
    if n_cols <= 0 or n_frames % n_cols:
        raise FetalIQAError(
            f"{case.image_path}: {n_frames} frames cannot be cut into {n_cols} equal sweeps (the CSV has "
            f"{n_cols} sweep columns) and the file records no sweep ranges ({META_SWEEP_RANGES}); every case "
            "must stack its sweeps with equal frame counts, or record where each sweep starts")
    per = n_frames // n_cols
    return [(i * per, (i + 1) * per) for i in range(n_cols)]


def _file_key(path: Path) -> str:
    """The file as it is now: a mask corrected in place keeping its size and modification time
    (``cp -p``, ``rsync -t``, a restore) has a new change time, or a new inode, which no user sets."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"


def frame_labels(case: CaseRecord, cache_dir: Path | None = None) -> np.ndarray:
    """Per-frame ground-truth label of a case ``(N,)`` uint8: the largest mask label in the frame
    (0 empty, 1 optimal, 2 suboptimal; a frame with both counts as 2 - both are positive).

    Reads the mask once; the result is cached in ``cache_dir`` keyed by the file's path, size,
    modification and change times and inode, so re-indexing 300 ACOUSLIC cases does not decode
    100 GB again.
    """
    key = hashlib.sha256(f"{INDEX_VERSION}|{_file_key(case.mask_path)}".encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.npy" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            arr = np.load(cached, allow_pickle=False)
            if arr.ndim == 1 and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass
    from fetaliqa_core.io import load_mask

    mask = load_mask(case.mask_path)
    n = mask.shape[0]
    labels = np.zeros(n, dtype=np.uint8)
    step = 32
    for s in range(0, n, step):  # chunked: a memory-mapped mask is never fully copied
        labels[s:s + step] = np.asarray(mask[s:s + step]).reshape(min(step, n - s), -1).max(axis=1)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached, suffix=".npy") as tmp:
                np.save(tmp, labels)
        except OSError:
            pass  # the cache is an optimisation only
    return labels


@dataclass
class FrameIndex:
    """The frames one split trains or evaluates on. All arrays ``(M,)``, one entry per frame."""

    cases: list[CaseRecord]
    case_idx: np.ndarray  # int32, index into ``cases``
    frame_idx: np.ndarray  # int32, frame within the case volume
    sweep_idx: np.ndarray  # int16, zero-based sweep of the frame
    label: np.ndarray  # uint8, ground-truth mask label of the frame (0 / 1 / 2)
    target: np.ndarray = field(default=None)  # float32 classification target (default label > 0)

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = (self.label > 0).astype(np.float32)

    def __len__(self) -> int:
        return int(self.case_idx.shape[0])

    @property
    def n_positive(self) -> int:
        return int((self.target > 0.5).sum())

    def summary(self) -> str:
        return f"{len(self.cases)} cases, {len(self)} frames, {self.n_positive} positive"


def _header_info(path: Path) -> tuple[tuple[int, ...] | None, dict[str, str]]:
    """``(frames, height, width)`` and the FetalIQA metadata (sweep ranges) from a volume's header
    alone; ``(None, {})`` when the header cannot be read here (reading the volume itself then says
    what is wrong)."""
    from fetaliqa_core.io import META_SWEEP_KINDS, META_SWEEP_RANGES

    keys = (META_SWEEP_RANGES, META_SWEEP_KINDS)
    try:
        import SimpleITK as sitk
    except ImportError:  # a machine with the models' libraries alone (the GPU checks'): MetaImage only
        from fetaliqa_core.io._common import full_suffix
        from fetaliqa_core.io.readers import metaimage_header

        if full_suffix(path) not in (".mha", ".mhd"):
            return None, {}
        size, header = metaimage_header(path)
        metadata = {k: header[k.lower()] for k in keys if k.lower() in header}
        return (_frames_shape(size) if size is not None else None), metadata
    from fetaliqa_core.io import quiet_itk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
        size = tuple(int(v) for v in reader.GetSize())
        metadata = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if k in keys}
    except RuntimeError:
        return None, {}
    return _frames_shape(size), metadata


def _frames_shape(size_xyz: Sequence[int]) -> tuple[int, ...] | None:
    """``(frames, height, width)`` of a header's size (x, y[, z]); a 2-D image is one frame (a
    single-frame mask beside a stacked image was passed over, the image then blamed for it)."""
    if len(size_xyz) == 2:
        return (1, int(size_xyz[1]), int(size_xyz[0]))
    return tuple(int(v) for v in reversed(size_xyz)) if len(size_xyz) == 3 else None


def _header_shape(path: Path) -> tuple[int, ...] | None:
    """``(frames, height, width)`` from a volume's header alone, None when it cannot be read here."""
    return _header_info(path)[0]


def _check_same_shape(case: CaseRecord, image: tuple[int, ...] | None) -> None:
    """A case's image (``image``: its header's shape) and mask must hold the same frames of the
    same size: labels taken from a mask of another length or size would be paired with the wrong
    frames without a word."""
    mask = _header_shape(case.mask_path)
    if image is not None and mask is not None and image != mask:
        from fetaliqa_core.io import fmt_shape

        if mask[0] != image[0]:  # (a 2-D mask is one frame)
            what = (f"{mask[0]} frame(s) where its image {case.image_path.name} has {image[0]} ({fmt_shape(mask)} "
                    f"against {fmt_shape(image)}, frames x height x width)")
        else:
            what = (f"{fmt_shape(mask)} (frames x height x width) but its image {case.image_path.name} has "
                    f"{fmt_shape(image)}")
        raise FetalIQAError(f"{case.mask_path}: the mask has {what}; image and mask of a case must match. Choose the "
                            "mask made for this sweep.")


def build_index(
    cases: Sequence[CaseRecord],
    all_sweeps: bool = False,
    cache_dir: Path | None = None,
) -> FrameIndex:
    """Every frame of the selected sweeps: by default only sweeps with a reference AC (the
    paper's choice); ``all_sweeps`` takes every sweep."""
    case_idx, frame_idx, sweep_idx, label = [], [], [], []
    kept: list[CaseRecord] = []
    for case in cases:
        image_shape, image_fields = _header_info(case.image_path)  # (one read of the header serves both)
        _check_same_shape(case, image_shape)
        labels = frame_labels(case, cache_dir)
        ranges = _sweep_ranges(case, labels.shape[0], image_fields)
        sweeps = range(len(ranges)) if all_sweeps else case.sweeps_with_ac()
        if not sweeps:
            continue
        ci = len(kept)
        kept.append(case)
        for s in sweeps:
            start, stop = ranges[s]
            frames = np.arange(start, stop, dtype=np.int32)
            case_idx.append(np.full(frames.shape, ci, np.int32))
            frame_idx.append(frames)
            sweep_idx.append(np.full(frames.shape, s, np.int16))
            label.append(labels[start:stop])
    if not case_idx:
        return FrameIndex(kept, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int16),
                          np.zeros(0, np.uint8))
    return FrameIndex(kept, np.concatenate(case_idx), np.concatenate(frame_idx),
                      np.concatenate(sweep_idx), np.concatenate(label))


def subsample_index(index: FrameIndex, n: int | None, seed: int = 0) -> FrameIndex:
    """Every positive frame of ``index`` and random negatives up to ``n`` frames in all (index
    order kept); the index itself when ``n`` is None/0 or not smaller. For quick validation."""
    if not n or len(index) <= n:
        return index
    pos = np.flatnonzero(index.target > 0.5)
    neg = np.flatnonzero(index.target <= 0.5)
    rng = np.random.default_rng([seed, 5])
    take = min(max(n - pos.size, 0), neg.size)
    keep = np.sort(np.concatenate([pos, rng.choice(neg, size=take, replace=False)]))
    return FrameIndex(index.cases, index.case_idx[keep], index.frame_idx[keep], index.sweep_idx[keep],
                      index.label[keep], index.target[keep].copy())


# ------------------------------------------------------------------------------------------
# Extra labels (e.g. trainers' verdicts exported by the review store)
# ------------------------------------------------------------------------------------------

_LABEL_WORDS = {
    "0": 0.0, "1": 1.0, "2": 1.0,
    "not_usable": 0.0, "not usable": 0.0, "unusable": 0.0, "negative": 0.0, "bad": 0.0, "false": 0.0, "no": 0.0,
    "optimal": 1.0, "suboptimal": 1.0, "positive": 1.0, "good": 1.0, "true": 1.0, "yes": 1.0,
}
#: The column naming the case, first found wins: ``uuid_or_hash`` is the review export's own (the
#: file's stem; its ``content_hash`` column says which pixels, see :func:`apply_extra_labels`).
_CASE_COLUMNS = ("uuid", "uuid_or_hash", "case", "sweep_path", "path")


#: Largest reviewer-labels CSV read (about 2 million rows).
MAX_LABELS_BYTES = 256 << 20


@dataclass
class ExtraLabels:
    """Reviewers' frame labels as a CSV gives them, before they meet the dataset: per
    ``(case id, frame)`` every row's ``(target, content_hash)`` (``""`` where the CSV has no
    hash). Rows are kept apart, not merged: which of them count depends on the pixels of the
    dataset's file (:func:`apply_extra_labels`)."""

    rows: dict[tuple[str, int], list[tuple[float, str]]] = field(default_factory=dict)
    #: SHA-256 of the file's bytes as read (what a bundle and a resumed run record of it)
    sha256: str = ""

    def __len__(self) -> int:
        return sum(len(v) for v in self.rows.values())

    def cases(self) -> set[str]:
        return {case for case, _ in self.rows}

    def targets(self) -> dict[tuple[str, int], float]:
        """``(case id, frame) -> target`` of the frames whose rows all give one target."""
        return {key: rows[0][0] for key, rows in self.rows.items() if len({t for t, _ in rows}) == 1}


@dataclass(frozen=True)
class ExtraLabelsApplied:
    """What :func:`apply_extra_labels` did: frames relabelled, label rows given on other pixels
    than the dataset's file holds (not used), frames whose remaining labels disagree (not used)."""

    changed: int = 0
    other_pixels: int = 0
    conflicting: int = 0


def read_extra_labels(path: str | Path) -> ExtraLabels:
    """Frame labels from a CSV: ``(case id, frame) -> [(target, content_hash), ...]``.

    Columns: one of ``uuid`` / ``uuid_or_hash`` / ``case`` / ``sweep_path`` / ``path`` (the case's uuid, or a path
    whose file stem is the uuid), ``frame`` (zero-based, in the stacked case volume),
    ``label`` (``optimal`` / ``suboptimal`` -> positive, ``not_usable`` -> negative, or 0/1/2) and,
    optionally, ``content_hash`` (the pixels the label was given on, as ``fetaliqa review labels``
    writes it).
    """
    p = Path(path)
    if not p.is_file():
        raise FetalIQAError(f"--extra-labels {p}: no such file")
    try:
        size = p.stat().st_size
        if size > MAX_LABELS_BYTES:  # ~2 million rows; read whole below
            raise FetalIQAError(f"--extra-labels {p}: {size / 1e6:.0f} MB, more than a labels file of "
                                f"{MAX_LABELS_BYTES / 1e6:.0f} MB; give the reviewers' labels CSV")
        raw = p.read_bytes()
    except OSError as exc:
        raise FetalIQAError(f"--extra-labels {p}: cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # a spreadsheet's export in Latin-1 / Windows-1252: names and notes only
        text = raw.decode("cp1252", errors="replace")
    try:
        labels = _parse_extra_labels(text, p)
    except csv.Error as exc:  # e.g. a field over the csv module's limit
        raise FetalIQAError(f"--extra-labels {p}: not a readable CSV ({exc}); give the reviewers' labels CSV") from None
    labels.sha256 = hashlib.sha256(raw).hexdigest()
    return labels


def _parse_extra_labels(text: str, p: Path) -> ExtraLabels:
    import io

    out = ExtraLabels()
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        case_col = next((c for c in _CASE_COLUMNS if c in header), None)
        if case_col is None or "frame" not in header or "label" not in header:
            raise FetalIQAError(f"--extra-labels {p}: needs columns uuid (or case/sweep_path), frame and label; "
                                f"found {', '.join(_shown(h, 24) for h in header[:6]) or 'none'}")
        for line, row in enumerate(reader, start=2):
            raw_case = (row.get(case_col) or "").strip()
            if not raw_case:
                continue
            uuid = Path(raw_case).name
            for suffix in (".nii.gz", ".mha", ".mhd", ".nrrd", ".nii"):
                if uuid.lower().endswith(suffix):
                    uuid = uuid[: -len(suffix)]
                    break
            try:
                frame = int(str(row.get("frame", "")).strip())
            except ValueError:
                raise FetalIQAError(f"--extra-labels {p}, line {line}: frame '{row.get('frame')}' is not an integer") from None
            word = str(row.get("label", "")).strip().lower()
            if word not in _LABEL_WORDS:
                raise FetalIQAError(f"--extra-labels {p}, line {line}: label '{word}' is not one of "
                                    "optimal, suboptimal, not_usable, 0, 1, 2")
            content = str(row.get("content_hash") or "").strip().lower()
            out.rows.setdefault((uuid, frame), []).append((_LABEL_WORDS[word], content))
    return out


def sweep_content_hash(path: Path) -> str:
    """The content hash of a case's image file as the viewer computes it for the review database
    (pixels, shape and the file's pixel spacing)."""
    from fetaliqa_core.io import load_sweep

    return load_sweep(path).content_hash


def apply_extra_labels(index: FrameIndex, labels: ExtraLabels, content_hash=sweep_content_hash) -> ExtraLabelsApplied:
    """Override the classification target of indexed frames named in ``labels``. Frames not in
    the index (other sweeps, other splits) are ignored.

    A label row with a content hash counts only when it is the hash of the case's file here
    (``content_hash(path)``, computed once per case named): a file name says nothing of the
    pixels, and a file replaced, restored or re-exported under the same name (or the same name in
    two folders) must not take another sweep's verdicts. Of the rows that count, those that
    disagree (one reviewer's optimal, another's not usable) relabel nothing: no row order or
    reviewer's rank decides for the trainers."""
    if not labels.rows or not len(index):
        return ExtraLabelsApplied()
    pos = {(index.cases[int(c)].uuid, int(f)): (i, int(c))
           for i, (c, f) in enumerate(zip(index.case_idx.tolist(), index.frame_idx.tolist()))}
    hashes: dict[int, str] = {}
    changed = other = conflicting = 0
    for key, rows in labels.rows.items():
        found = pos.get(key)
        if found is None:
            continue
        i, c = found
        if any(h for _, h in rows) and c not in hashes:
            hashes[c] = content_hash(index.cases[c].image_path).lower()
        kept = [t for t, h in rows if not h or h == hashes[c]]
        other += len(rows) - len(kept)
        if not kept:
            continue
        if len(set(kept)) > 1:
            conflicting += 1
            continue
        index.target[i] = kept[0]
        changed += 1
    return ExtraLabelsApplied(changed, other, conflicting)


# ------------------------------------------------------------------------------------------
# Lazy volumes
# ------------------------------------------------------------------------------------------


class VolumeCache:
    """Opened case volumes (frames, and masks when asked), per process.

    Memory-mapped volumes cost nothing to keep and stay open; decoded (compressed) ones are
    kept in an LRU of ``max_decoded`` cases.
    """

    def __init__(self, max_decoded: int = DEFAULT_CACHE_CASES) -> None:
        self.max_decoded = max(1, int(max_decoded))
        self._mapped: dict[Path, np.ndarray] = {}
        self._decoded: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.loads = 0  # volumes read from disk (for tests and diagnostics)

    def __getstate__(self):  # worker processes start with an empty cache
        return {"max_decoded": self.max_decoded}

    def __setstate__(self, state) -> None:
        self.__init__(state["max_decoded"])

    def _get(self, path: Path, loader) -> np.ndarray:
        if path in self._mapped:
            return self._mapped[path]
        if path in self._decoded:
            self._decoded.move_to_end(path)
            return self._decoded[path]
        arr = loader(path)
        self.loads += 1
        if _file_backed(arr):
            self._mapped[path] = arr
        else:
            self._decoded[path] = arr
            while len(self._decoded) > self.max_decoded:
                self._decoded.popitem(last=False)
        return arr

    def frames(self, path: Path) -> np.ndarray:
        """``(N, H, W)`` uint8 frames of a case."""
        def load(p: Path) -> np.ndarray:
            from fetaliqa_core.io import load_sweep

            return load_sweep(p).frames
        return self._get(path, load)

    def mask(self, path: Path) -> np.ndarray:
        """``(N, H, W)`` uint8 labels of a case."""
        def load(p: Path) -> np.ndarray:
            from fetaliqa_core.io import load_mask

            return load_mask(p)
        return self._get(path, load)


def _file_backed(arr: np.ndarray) -> bool:
    """Whether ``arr`` is (a view of) a memory-mapped file rather than decoded memory."""
    import mmap

    obj = arr
    while obj is not None:
        if isinstance(obj, (np.memmap, mmap.mmap)):
            return True
        obj = getattr(obj, "base", None)
    return False


def is_memory_mapped(path: Path) -> bool:
    """Whether :func:`fetaliqa_core.io.load_sweep` memory-maps this file (uncompressed MHA)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("latin-1", "replace")
    except OSError:
        return False
    for line in head.splitlines():
        if line.strip().lower().startswith("compresseddata"):
            return line.split("=", 1)[-1].strip().lower() != "true"
    return path.suffix.lower() == ".mha"


# ------------------------------------------------------------------------------------------
# Dataset and sampler
# ------------------------------------------------------------------------------------------


class FrameDataset:
    """A :class:`torch.utils.data.Dataset` over a :class:`FrameIndex`.

    Item: ``{"frame": (H, W) uint8 tensor, "target": float32 scalar tensor, "mask": (224, 224)
    uint8 tensor (label mask, pad + nearest resize as the model sees it; only with
    ``with_masks``), "index": int}``. Frames are augmented (when ``augment`` is given) with a
    random stream that depends only on (seed, epoch, item), so runs and resumed runs repeat
    exactly whatever the number of loader workers.

    ``offline_copies`` N > 0: the reference code's offline augmentation instead - pass 0 of an
    epoch shows the frames as they are, passes 1..N their N augmented copies, each copy drawn once
    from (seed, copy, item) and the same in every epoch (:meth:`set_pass`). ``pad_first``: pad
    the frame (and mask) to a square before augmenting, so the affine acts on the padded square
    (the reference); ``pre_resize="cv2_cubic"``: then, after the augmentation, resize that square
    to 224 with OpenCV's bicubic without antialiasing (the reference's ``cv2.INTER_CUBIC``
    pre-resize; masks nearest), which the models' own preprocessing leaves as it is.
    """

    def __init__(self, index: FrameIndex, with_masks: bool, augment=None, seed: int = 0,
                 cache_cases: int = DEFAULT_CACHE_CASES, offline_copies: int = 0, pad_first: bool = False,
                 pre_resize: str | None = None) -> None:
        self.index = index
        self.with_masks = with_masks
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.offline_copies = int(offline_copies)
        self.pass_index = 0
        self.pad_first = bool(pad_first) or pre_resize is not None
        if pre_resize not in (None, "cv2_cubic"):
            raise FetalIQAError(f"unknown pre-resize {pre_resize!r}; use cv2_cubic or none")
        self.pre_resize = pre_resize
        self.volumes = VolumeCache(cache_cases)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_pass(self, index: int) -> None:
        """Offline copies: which pass of the epoch the next items belong to (0: unaugmented)."""
        self.pass_index = int(index)

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw ``(H, W)`` uint8 frame and label mask (None without masks) of item ``i``."""
        case = self.index.cases[int(self.index.case_idx[i])]
        f = int(self.index.frame_idx[i])
        frames = self.volumes.frames(case.image_path)
        if f >= frames.shape[0]:
            raise FetalIQAError(f"{case.image_path}: has {frames.shape[0]} frames but its mask has more; "
                                "image and mask of a case must have the same number of frames")
        frame = np.array(frames[f], dtype=np.uint8, copy=True)
        mask = None
        if self.with_masks:
            mask = np.array(self.volumes.mask(case.mask_path)[f], dtype=np.uint8, copy=True)
            if mask.shape != frame.shape:
                raise FetalIQAError(f"{case.mask_path}: frame size {mask.shape} differs from the image's {frame.shape}")
        return frame, mask

    def __getitem__(self, i: int) -> dict:
        import torch

        from fetaliqa_core.preprocess import preprocess_masks

        frame, mask = self.load(i)
        if self.pad_first:
            frame, mask = _pad_square(frame), None if mask is None else _pad_square(mask)
        # augmented at full size, before the pre-resize, as the reference does (pad, augment,
        # resize): CLAHE's 8 x 8 tiles and the affine's resampling act on the frame's own pixels
        if self.augment is not None and self.offline_copies > 0:
            if self.pass_index > 0:  # the same copy every epoch: offline augmentation
                rng = np.random.default_rng([self.seed, 1_000_003, self.pass_index, int(i)])
                frame, mask = self.augment(frame, mask, rng)
        elif self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            frame, mask = self.augment(frame, mask, rng)
        if self.pre_resize == "cv2_cubic":
            import cv2

            frame = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_CUBIC)
            if mask is not None:
                mask = np.ascontiguousarray(preprocess_masks(np.ascontiguousarray(mask))[0].numpy())
        item = {
            "frame": torch.from_numpy(np.ascontiguousarray(frame)),
            "target": torch.tensor(float(self.index.target[i]), dtype=torch.float32),
            "index": int(i),
        }
        if mask is not None:
            item["mask"] = preprocess_masks(np.ascontiguousarray(mask))[0]
        return item


def _pad_square(img: np.ndarray) -> np.ndarray:
    """Zero-pad ``(H, W)`` to a centred square (the models' padding rule)."""
    from fetaliqa_core.preprocess import pad_geometry

    h, w = img.shape
    g = pad_geometry(h, w)
    if g.side == h == w:
        return img
    out = np.zeros((g.side, g.side), dtype=img.dtype)
    out[g.top:g.top + h, g.left:g.left + w] = img
    return out


def collate(items: list[dict]) -> dict:
    """Stack items; frames of different sizes stay a list (preprocessed one size at a time)."""
    import torch

    out: dict = {
        "target": torch.stack([it["target"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }
    shapes = {tuple(it["frame"].shape) for it in items}
    out["frame"] = (torch.stack([it["frame"] for it in items]) if len(shapes) == 1
                    else [it["frame"] for it in items])
    if "mask" in items[0]:
        out["mask"] = torch.stack([it["mask"] for it in items])
    return out


class CaseChunkSampler:
    """Shuffled, distributed sampler that keeps a case's frames close together.

    Each epoch the cases are shuffled and cut into chunks of ``chunk_cases``; the frames of a
    chunk are shuffled among themselves. With memory-mapped data use ``chunk_cases=None`` (one
    chunk: a plain full shuffle). Across ``num_replicas`` processes the order is split
    round-robin like :class:`torch.utils.data.DistributedSampler` and padded to equal length so
    every rank runs the same number of steps. ``shuffle=False`` gives index order (evaluation).
    """

    def __init__(self, index: FrameIndex, chunk_cases: int | None = None, shuffle: bool = True,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, pad: bool = True) -> None:
        self.index = index
        self.chunk_cases = chunk_cases
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = max(1, int(num_replicas))
        self.rank = int(rank)
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This epoch's order over all ranks (before splitting)."""
        n = len(self.index)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        if not self.chunk_cases:
            return rng.permutation(n)
        by_case: dict[int, np.ndarray] = {}
        cidx = self.index.case_idx
        for c in np.unique(cidx):
            by_case[int(c)] = np.flatnonzero(cidx == c)
        case_order = rng.permutation(sorted(by_case))
        parts = []
        for s in range(0, len(case_order), self.chunk_cases):
            members = np.concatenate([by_case[int(c)] for c in case_order[s:s + self.chunk_cases]])
            parts.append(rng.permutation(members))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _mine(self) -> np.ndarray:
        order = self.order()
        if self.num_replicas == 1:
            return order
        if self.pad and len(order):
            total = int(math.ceil(len(order) / self.num_replicas)) * self.num_replicas
            if total > len(order):
                order = np.concatenate([order, order[: total - len(order)]])
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine().tolist())

    def __len__(self) -> int:
        n = len(self.index)
        if self.num_replicas == 1:
            return n
        if self.pad:
            return int(math.ceil(n / self.num_replicas))
        return len(range(self.rank, n, self.num_replicas))
