"""Question sources for the inference runner, read in consecutive chunks (bounded memory).

A source is a sequence of questions (at least the columns `image_id`,
`union_box`, `prompt`) that can be read front to back in chunks of a given
size. `FrameQuestions` wraps a table already in memory; `ParquetQuestions`
streams the chosen rows of a parquet file, so a pool of a million questions
is never held whole: only the file's row mask (one byte per row) and the
chunk being answered are in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

# what the model sees of a question: two questions equal in these get the same answers
ANSWER_COLUMNS = ("image_id", "union_box", "prompt")
READ_ROWS = 65_536  # parquet rows decoded at a time while streaming


class QuestionSource(Protocol):
    """Questions in a fixed order, read in consecutive chunks."""

    def __len__(self) -> int: ...

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        """Consecutive chunks of `size` questions (the last one shorter), index reset."""
        ...


class FrameQuestions:
    """A question table already in memory."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        for start in range(0, len(self.table), size):
            yield self.table.iloc[start : start + size].reset_index(drop=True)


class ParquetQuestions:
    """The rows of a parquet file where `rows` is True (file order), streamed.

    `rows` None takes every row. Only `columns` are read.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], rows: np.ndarray | None = None) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.columns = list(columns)
        total = pq.ParquetFile(self.path).metadata.num_rows
        self.rows = np.ones(total, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
        if len(self.rows) != total:
            raise ValueError(f"row mask has {len(self.rows)} entries for the {total} rows of {self.path}")
        self.count = int(self.rows.sum())

    def __len__(self) -> int:
        return self.count

    def _selected_batches(self) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        start = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=READ_ROWS, columns=self.columns):
            keep = self.rows[start : start + batch.num_rows]
            start += batch.num_rows
            if keep.any():
                yield batch.to_pandas().loc[keep].reset_index(drop=True)

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        pending: list[pd.DataFrame] = []
        held = 0
        for part in self._selected_batches():
            pending.append(part)
            held += len(part)
            while held >= size:
                joined = pd.concat(pending, ignore_index=True)
                yield joined.iloc[:size].reset_index(drop=True)
                rest = joined.iloc[size:].reset_index(drop=True)
                pending, held = ([rest] if len(rest) else []), len(rest)
        if held:
            yield pd.concat(pending, ignore_index=True)


def read_parquet_columns(path: str | Path, columns: Sequence[str], file: str | None = None) -> pd.DataFrame:
    """Only `columns` of a parquet table, arrow-backed (a million short strings take tens of MB).

    A missing or unreadable file, or a missing column, is an InputError naming `file` (default: the path).
    """
    import pyarrow.parquet as pq

    from reltune.errors import InputError

    name = file or str(path)
    if not Path(path).is_file():
        raise InputError(name, "file not found")
    try:
        present = set(pq.ParquetFile(path).schema_arrow.names)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise InputError(name, f"not a readable parquet file ({type(error).__name__}: {error})") from None
    missing = [column for column in columns if column not in present]
    if missing:
        raise InputError(name, f"missing columns {missing}")
    return pd.read_parquet(path, columns=list(columns), dtype_backend="pyarrow")


def distinct_values(path: str | Path, column: str) -> set[str]:
    """The distinct non-null values of one column, streamed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    values: set[str] = set()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=[column]):
        values.update(str(value) for value in pc.unique(batch.column(0).drop_null()).to_pylist())
    return values


def _box_text(box: Sequence[float]) -> str:
    return ",".join(repr(float(value)) for value in box)


def questions_fingerprint(source: QuestionSource, chunk_size: int) -> str:
    """Hex digest of what the model sees of every question, in order (ANSWER_COLUMNS).

    One streamed pass; two sources with the same digest get the same answers.
    """
    digest = hashlib.sha256(f"{len(source)}|".encode())
    for chunk in source.chunks(chunk_size):
        seen = pd.DataFrame(
            {
                "image_id": chunk["image_id"].astype(str),
                "union_box": [_box_text(box) for box in chunk["union_box"]],
                "prompt": chunk["prompt"].astype(str),
            }
        )
        digest.update(pd.util.hash_pandas_object(seen, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:32]
