"""Strict checks of raw values, shared by every importer.

JSON and HDF5 sources may hold a value of the wrong type where a number is
meant (`"64"`, `true`, `2.5` for an id). numpy would convert such values
silently (`"64"` iterates as 6 and 4, `2.999` truncates to 2), so every
numeric field passes through here first: numbers must be real numbers
(never bool or text), and integers must be integral. Image ids and file
names must be text that can be written (UTF-8) and paths that stay inside the
image root.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import numpy as np

from reltune.errors import InputError

# Larger integers are not exact in float64 (and no count or id of a dataset comes near).
INTEGER_LIMIT = 2**53


def printable(text: object) -> str:
    """`text` with characters that UTF-8 cannot encode (lone surrogates) escaped, for messages and reports."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def is_number(value: object) -> bool:
    """A JSON number: int or float, not bool (which Python counts as an int) and not text."""
    return type(value) in (int, float)


def integer_problem(value: object) -> str | None:
    """Why `value` is not an integer, or None when it is one (an integral float such as 3.0 is)."""
    if not is_number(value):
        return f"{printable(repr(value))} is not a number"
    if isinstance(value, float) and not (np.isfinite(value) and value == int(value)):
        return f"{value!r} is not an integer"
    if abs(value) > INTEGER_LIMIT:
        return f"{value!r} is out of range"
    return None


def number_array(value: Any, shape_tail: tuple[int, ...], integer: bool) -> tuple[np.ndarray | None, str | None]:
    """A JSON list as a float64 array of shape (k, *shape_tail), or (None, why not).

    Only lists of real numbers pass (no bool, no text, no nesting beyond the
    shape); with `integer`, every number must also be integral.
    """
    if not isinstance(value, list):
        return None, f"expected a list, got {type(value).__name__}"
    leaves: list = value
    for width in shape_tail:  # one level of nesting per dimension, each row of the right width
        if not all(isinstance(row, list) and len(row) == width for row in leaves):
            return None, f"expected a list of {width} numbers per entry"
        leaves = [item for row in leaves for item in row]
    for index, item in enumerate(leaves):
        if not is_number(item):
            return None, f"value {index // max(1, int(np.prod(shape_tail)))}: {printable(repr(item))[:40]} is not a number"
    array = np.array(leaves, dtype=np.float64).reshape(-1, *shape_tail)
    if integer:
        flat = array.reshape(-1)
        bad = ~np.isfinite(flat) | (flat != np.round(flat)) | (np.abs(flat) > INTEGER_LIMIT)
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            return None, f"value {first // max(1, int(np.prod(shape_tail)))}: {float(flat[first])!r} is not an integer"
    return array, None


def integer_column(array: np.ndarray, file: object, name: str) -> np.ndarray:
    """An HDF5 dataset meant to hold integers, as int64; a bool, text or non-integral value raises.

    The error names the dataset and the first bad row.
    """
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(file, f"dataset {name} must hold integers (dtype {array.dtype})")
    if np.issubdtype(array.dtype, np.floating):
        values = array.reshape(len(array), -1) if array.ndim else array.reshape(1, -1)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > INTEGER_LIMIT)
        if np.any(bad):
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            shown = values[row].tolist()
            raise InputError(file, f"dataset {name} holds {shown[0] if len(shown) == 1 else shown} (not an integer)", where=f"row {row}")
    elif np.issubdtype(array.dtype, np.unsignedinteger) and array.size and array.max() > np.iinfo(np.int64).max:
        raise InputError(file, f"dataset {name} holds values beyond int64")
    return array.astype(np.int64)


def text_problem(value: object, what: str) -> str | None:
    """Why `value` cannot be an image id or name: not text, empty, or not writable as UTF-8."""
    if not isinstance(value, str):
        return f"{what} {printable(repr(value))[:60]} is not text"
    if not value.strip():
        return f"{what} is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} {printable(repr(value))[:60]} is not valid UTF-8 (lone surrogate)"
    if "\x00" in value:
        return f"{what} {printable(repr(value))[:60]} contains a NUL character"
    return None


def relative_path_problem(path: str, what: str) -> str | None:
    """Why `path` (relative to the image root) could name a file outside the root, or None."""
    problem = text_problem(path, what)
    if problem:
        return problem
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        return f"{what} {path!r} is an absolute path"
    # backslashes are path separators elsewhere (`..\\x`); no dataset uses them in names
    if ".." in PurePosixPath(path).parts or "\\" in path:
        return f"{what} {path!r} leaves the image directory"
    return None


def image_id_text(value: object, what: str) -> tuple[str, str | None]:
    """An image id or file name as text (ints are allowed: VG150 ids are numbers) and why it is unusable.

    Unusable: not an int or text, empty, not writable as UTF-8, or a path that
    leaves the image root. The returned text is printable even then (for messages).
    """
    if type(value) is int:
        return str(value), None
    if not isinstance(value, str):
        return printable(repr(value))[:60], f"{what} {printable(repr(value))[:60]} is not an integer or text"
    return printable(value), relative_path_problem(value, what)
