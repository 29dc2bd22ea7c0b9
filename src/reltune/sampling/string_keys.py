"""Numpy views of string columns for the selection hot path (no per-row Python objects).

pandas 3 keeps `str` columns in Arrow buffers: one byte buffer and row
offsets into it. Reading those as little-endian 64-bit words gives every
string as a few integers, so equality tests and duplicate checks run as
array operations instead of hashing Python strings. Columns held otherwise
(object dtype, categoricals, nulls, Arrow string views) return None here and
callers use pandas instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# LOW_BYTES[r]: the mask keeping the first r bytes of a little-endian word (r = 0..8).
LOW_BYTES = np.array([(1 << (8 * count)) - 1 for count in range(9)], dtype=np.uint64)
# Odd 64-bit constants of the splitmix64 finaliser; arithmetic wraps modulo 2**64.
MIX_A = np.uint64(0xBF58476D1CE4E5B9)
MIX_B = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def arrow_string_buffers(column: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets int64 of length n+1, bytes uint8) of an Arrow-backed string column without nulls."""
    if not isinstance(column.dtype, pd.StringDtype) or column.dtype.storage != "pyarrow":
        return None
    array = column.array.__arrow_array__()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()  # free for the usual single chunk
    if array.null_count or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    _, offset_buffer, data_buffer = array.buffers()
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(
        offset_buffer, dtype=offset_type, count=len(array) + 1, offset=array.offset * np.dtype(offset_type).itemsize
    ).astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def string_words(offsets: np.ndarray, data: np.ndarray, width: int) -> np.ndarray:
    """The first `width` little-endian 64-bit words of each string, zero past its end: shape (n, width)."""
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    end = int(offsets[-1]) if len(offsets) > 1 else 0
    if len(lengths) and (lengths == lengths[0]).all() and lengths[0] <= 8 * width:
        # All strings of one length lie back to back: a byte matrix, padded to whole words.
        length = int(lengths[0])
        padded = np.zeros((len(lengths), 8 * width), dtype=np.uint8)
        padded[:, :length] = data[int(offsets[0]) : end].reshape(len(lengths), length)
        return padded.view("<u8").astype(np.uint64, copy=False)
    padded = np.zeros(end + 8, dtype=np.uint8)  # so an 8-byte read at any start stays inside
    padded[:end] = data[:end]
    # One (unaligned) uint64 starting at every byte position of the buffer.
    word_at = np.ndarray(shape=(end + 1,), dtype="<u8", buffer=padded, strides=(1,))
    words = np.empty((len(starts), width), dtype=np.uint64)
    for index in range(width):
        words[:, index] = word_at[np.minimum(starts + 8 * index, end)]
        remaining = lengths - 8 * index
        if remaining.min(initial=8) < 8:  # some strings end inside this word: clear the bytes after them
            words[:, index] &= LOW_BYTES[np.clip(remaining, 0, 8)]
    return words


def short_string_keys(column: pd.Series, names: tuple[str, ...]) -> np.ndarray | None:
    """Index into `names` per row (-1: any other value), or None when pandas must do it.

    Exact for names up to 8 bytes: a string's length and first word are the string.
    """
    buffers = arrow_string_buffers(column)
    encoded = [name.encode() for name in names]
    if buffers is None or any(len(name) > 8 for name in encoded):
        return None
    offsets, data = buffers
    lengths = np.diff(offsets)
    if len(lengths) and (lengths == lengths[0]).all() and int(lengths[0]) in (1, 2, 4, 8):
        # One length of a machine word size (e.g. TP/FP/FN): the bytes read as integers in place.
        length = int(lengths[0])
        words = data[int(offsets[0]) : int(offsets[-1])].view(f"<u{length}")
    else:
        words = string_words(offsets, data, 1)[:, 0]
    codes = np.full(len(lengths), -1, dtype=np.int8)
    for index, name in enumerate(encoded):
        match = (lengths == len(name)) & (words == int.from_bytes(name, "little"))
        codes += match.view(np.int8) * np.int8(index + 1)  # names differ, so at most one matches
    return codes


def string_hashes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A 64-bit hash per string (equal strings, equal hashes; unequal ones collide ~2**-64)."""
    lengths = np.diff(offsets)
    width = max(1, (int(lengths.max(initial=0)) + 7) // 8)
    words = string_words(offsets, data, width)
    hashes = lengths.astype(np.uint64) * GOLDEN
    for index in range(width):
        hashes ^= words[:, index]
        hashes *= MIX_A
        hashes ^= hashes >> np.uint64(29)
    # splitmix64's finaliser, so every input bit reaches every output bit.
    hashes ^= hashes >> np.uint64(30)
    hashes *= MIX_A
    hashes ^= hashes >> np.uint64(27)
    hashes *= MIX_B
    hashes ^= hashes >> np.uint64(31)
    return hashes


def has_duplicates(column: pd.Series) -> bool:
    """Whether any value occurs twice (exact: hash collisions are checked on the strings)."""
    buffers = arrow_string_buffers(column)
    if buffers is None:
        return bool(column.duplicated().any())
    hashes = string_hashes(*buffers)
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated) == 0:
        return False
    # Equal strings have equal hashes, so comparing the rows that share a hash is exact.
    suspects = np.flatnonzero(np.isin(hashes, repeated))
    return bool(column.iloc[suspects].duplicated().any())
