"""Argument types shared by the stage commands."""

from __future__ import annotations

import argparse


def boolean(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, any case): DVC writes YAML booleans as `True`/`False`."""
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
