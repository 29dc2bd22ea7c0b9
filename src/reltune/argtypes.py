"""Argument types shared by the stage commands: every value is checked at the CLI boundary.

Each type turns the command-line text into a value or raises
`argparse.ArgumentTypeError` with a short reason; `reltune.cli` prints that as
one line (`reltune <command>: error: argument --x: <reason>`) and exits 2
before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def boolean(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, any case): DVC writes YAML booleans as `True`/`False`."""
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _integer(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _finite(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= minimum (`int_at_least(1)`: a count that must not be zero)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def float_in(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in [low, high] (open ends with `low_open` / `high_open`; None = unbounded)."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    domain = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text: str) -> float:
        value = _finite(text)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {domain}, got {value:g}")
        return value

    parse.__name__ = f"number in {domain}"
    return parse


finite_float = float_in()
positive_float = float_in(0.0, None, low_open=True)
non_negative_float = float_in(0.0)
unit_interval = float_in(0.0, 1.0)
