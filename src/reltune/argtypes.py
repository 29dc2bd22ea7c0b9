"""Argument types shared by the stage commands: every value is checked at the CLI boundary.

Each type turns the command-line text into a value or raises
`argparse.ArgumentTypeError` with a short reason; `reltune.cli` prints that as
one line (`reltune <command>: error: argument --x: <reason>`) and exits 2
before any work starts.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Domain:
    """What a type accepts, so that tests can draw values outside it (tests/test_cli_domains.py)."""

    kind: str  # "integer", "number" or "boolean"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value) or (self.kind == "integer" and value != int(value)):
            return False
        above_low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below_high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above_low and below_high


def boolean(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, any case): DVC writes YAML booleans as `True`/`False`."""
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


boolean.domain = Domain("boolean")  # type: ignore[attr-defined]


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


def int_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum] (maximum None: unbounded)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}" if maximum is None else f"integer in [{minimum}, {maximum}]"
    parse.domain = Domain("integer", minimum, maximum)  # type: ignore[attr-defined]
    return parse


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= minimum (`int_at_least(1)`: a count that must not be zero)."""
    return int_in(minimum)


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
# numpy, python and torch all accept seeds in [0, 2**32 - 1]
seed = int_in(0, 2**32 - 1)


def float_in(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in [low, high] (open ends with `low_open` / `high_open`; None = unbounded)."""
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    domain = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text: str) -> float:
        value = _finite(text)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {domain}, got {value:g}")
        return value

    parse.__name__ = f"number in {domain}"
    parse.domain = Domain("number", low, high, low_open, high_open)  # type: ignore[attr-defined]
    return parse


finite_float = float_in()
positive_float = float_in(0.0, None, low_open=True)
non_negative_float = float_in(0.0)
unit_interval = float_in(0.0, 1.0)
# a share of a whole that must not be empty, e.g. a budget fraction
fraction = float_in(0.0, 1.0, low_open=True)
# a dropout-like probability that must leave something
below_one = float_in(0.0, 1.0, high_open=True)

_DEVICE = re.compile(r"^(|cpu|cuda(:\d+)?)$")


def device(text: str) -> str:
    """'' (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if not _DEVICE.match(str(text).strip()):
        raise argparse.ArgumentTypeError(f"expected '', cpu, cuda or cuda:N, got {text!r}")
    return str(text).strip()
