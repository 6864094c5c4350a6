"""Argument types shared by the subcommands: each refuses a bad value with one readable line."""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable

# Longer than any run; keeps a duration from overflowing the clocks it is added to.
MAX_SECONDS = 1e7


def _parsed(text: str, convert: Callable[[str], float], not_a: str):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {not_a}") from None


def _refuse(message: str):
    raise argparse.ArgumentTypeError(message)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = _parsed(text, int, "a whole number")
    return value if value >= 1 else _refuse(f"{value} must be at least 1")


#: More CPU threads than any machine: a larger count makes PyTorch map a stack per thread and crash.
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """argparse type: CPU threads, 1 to :data:`MAX_THREADS`."""
    value = positive_int(text)
    return value if value <= MAX_THREADS else _refuse(f"{value} threads is more than any machine has; give "
                                                      f"1 to {MAX_THREADS} (e.g. the number of cores)")


#: Sweeps read ahead of the model: each one decoded is up to a few hundred MB, and more than a few
#: never make the model wait less (a thousand filled 2.4 GB and went on growing).
MAX_PREFETCH = 16
#: Worker processes making synthetic cases (~1.5 GB each at full size).
MAX_JOBS = 64


def prefetch_count(text: str) -> int:
    """argparse type: sweeps read ahead, 0 to :data:`MAX_PREFETCH`."""
    value = non_negative_int(text)
    return value if value <= MAX_PREFETCH else _refuse(f"{value} sweeps read ahead would hold them all in memory "
                                                       f"and gain nothing; give 0 to {MAX_PREFETCH}")


def job_count(text: str) -> int:
    """argparse type: worker processes, 1 to :data:`MAX_JOBS`."""
    value = positive_int(text)
    return value if value <= MAX_JOBS else _refuse(f"{value} worker processes of ~1.5 GB each is more than any "
                                                   f"machine holds; give 1 to {MAX_JOBS} (e.g. the number of cores)")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of 0 or more."""
    value = _parsed(text, int, "a whole number")
    return value if value >= 0 else _refuse(f"{value} is negative; give 0 or more")


def positive_number(text: str) -> float:
    """argparse type: a finite number greater than 0 (a learning rate)."""
    value = _parsed(text, float, "a number")
    return value if math.isfinite(value) and value > 0 else _refuse(f"{text} must be a number greater than 0")


def non_negative_number(text: str) -> float:
    """argparse type: a finite number of 0 or more (a weight decay)."""
    value = _parsed(text, float, "a number")
    return value if math.isfinite(value) and value >= 0 else _refuse(f"{text} must be a number of 0 or more")


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1 (a threshold on a probability); nan and inf refused."""
    value = _parsed(text, float, "a number; give one from 0 to 1")
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else _refuse(f"{text} is not between 0 and 1")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0 (and below :data:`MAX_SECONDS`)."""
    value = _parsed(text, float, "a number of seconds")
    ok = math.isfinite(value) and 0 < value < MAX_SECONDS
    return value if ok else _refuse(f"{text} must be a positive number of seconds")


def spacing_mm(text: str) -> float | tuple[float, float]:
    """argparse type: a pixel spacing in mm per pixel, one number for square pixels (``0.28``) or
    width x height as the product prints it (``0.3x0.4``), plausible for
    obstetric ultrasound (the range the readers apply, ``io.spacing.PLAUSIBLE_SPACING_MM``): a
    float, or ``(row_mm, col_mm)``. A wrong value is a wrong command line (status 2), told before
    any file is read; whether one number suits the file's pixels is told once it is read."""
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.io.spacing import parse_spacing, user_spacing

    try:
        value = parse_spacing(text)
        user_spacing(value)
    except FetalIQAError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


#: Characters a terminal acts on instead of showing: control codes (a newline in a file name
#: printed a forged result line; an escape sequence hid an error or cleared the screen), and the
#: line separators and direction overrides of Unicode.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(text: object) -> str:
    """``text`` as a terminal should print it: each character in :data:`_UNPRINTABLE` as its
    escape (``\\n``, ``\\x1b``), a byte of a file name that is not UTF-8 as ``\\xff``
    (:func:`~fetaliqa_core.files.plain_text`), everything else as it is."""
    from fetaliqa_core.files import plain_text

    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), plain_text(text))
