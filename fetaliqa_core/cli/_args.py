"""Argument types shared by the subcommands: each refuses a bad value with one readable line."""

from __future__ import annotations

import argparse
import math
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


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of 0 or more."""
    value = _parsed(text, int, "a whole number")
    return value if value >= 0 else _refuse(f"{value} is negative; give 0 or more")


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1 (a threshold on a probability); nan and inf refused."""
    value = _parsed(text, float, "a number; give one from 0 to 1")
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else _refuse(f"{text} is not between 0 and 1")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0 (and below :data:`MAX_SECONDS`)."""
    value = _parsed(text, float, "a number of seconds")
    ok = math.isfinite(value) and 0 < value < MAX_SECONDS
    return value if ok else _refuse(f"{text} must be a positive number of seconds")
