"""Atomic writers: outputs appear complete or not at all (DESIGN §10)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
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


# Temporary siblings of an output directory: `.<name>.<pid>.<random>.tmp` while it is
# built, `.<name>.<pid>.<random>.old` while the previous output is swapped out.
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.(tmp|old)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(target: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of `target` left by a killed run (their process is gone).

    Siblings of a process that is still running are kept: that run may be writing them.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = _SIBLING.match(entry.name)
        if match and match["name"] == target.name and not _process_alive(int(match["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _sibling_directory(target: Path, kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=f".{kind}", dir=target.parent))


def replace_directory(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a finished directory over `target` (the old one is removed after the swap).

    Between the two renames `target` is briefly absent, never mixed: readers see
    the old output, nothing, or the new output.
    """
    source, target = Path(source), Path(target)
    if target.exists() or target.is_symlink():
        old = _sibling_directory(target, "old")
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of directory `path`; on success it replaces `path` whole.

    On an exception the temporary directory is removed and `path` keeps its
    previous content (or stays absent). Leftovers of a killed earlier run are
    removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    temporary = _sibling_directory(target, "tmp")
    try:
        yield temporary
        os.chmod(temporary, 0o755)  # mkdtemp creates 0700; outputs are ordinary directories
        replace_directory(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


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
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, or an integer of > 4300 digits
        raise InputError(path, f"not valid JSON ({error})") from None
    except RecursionError:
        raise InputError(path, "not usable JSON (nested too deeply)") from None
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from None


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
