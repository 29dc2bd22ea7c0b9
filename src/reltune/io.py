"""Atomic writers: outputs appear complete or not at all (DESIGN §10)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from reltune.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` on success.

    On an exception the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        if temporary_path.is_file():
            os.chmod(temporary_path, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(temporary_path, target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def write_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame as parquet atomically (no index column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_table = pa.Table.from_pandas(table, preserve_index=False)
    # pandas' own metadata names ArrowDtype columns in a form pandas 3.1 cannot
    # read back; the arrow schema alone round-trips every column type we use.
    arrow_table = arrow_table.replace_schema_metadata(None)
    with atomic_path(path) as temporary:
        pq.write_table(arrow_table, temporary)


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically, pretty-printed, keys in insertion order."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or corrupt file into a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from None


def read_parquet(path: str | os.PathLike, required_columns: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a parquet table and check that the required columns are present."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        table = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"not a readable parquet file ({type(error).__name__}: {error})") from None
    missing = [column for column in required_columns if column not in table.columns]
    if missing:
        raise InputError(path, f"missing columns {missing}")
    return table
