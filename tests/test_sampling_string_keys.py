"""Numpy views of Arrow string columns: words, short keys, exact duplicate checks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reltune.sampling import string_keys
from reltune.sampling.string_keys import arrow_string_buffers, has_duplicates, short_string_keys, string_words


def words_of(values: list[str], width: int) -> list[list[int]]:
    offsets, data = arrow_string_buffers(pd.Series(values, dtype="str"))
    return string_words(offsets, data, width).tolist()


def test_words_are_little_endian_and_zero_past_the_end():
    # Variable lengths (gather path): "ab" = 0x6261; "abcdefghi" spills one byte into word 2.
    assert words_of(["ab", "abcdefghi", ""], 2) == [
        [0x6261, 0],
        [int.from_bytes(b"abcdefgh", "little"), ord("i")],
        [0, 0],
    ]
    # One length throughout (byte-matrix path) gives the same words.
    assert words_of(["abc", "xyz"], 1) == [[0x636261], [0x7A7978]]


def test_short_string_keys_map_exact_names_only():
    column = pd.Series(["TP", "FN", "FP", "XX", "T", "TPX"], dtype="str")
    assert short_string_keys(column, ("TP", "FP", "FN")).tolist() == [0, 2, 1, -1, -1, -1]
    # Same-length column (read in place as 16-bit integers).
    assert short_string_keys(pd.Series(["FP", "TP", "PF"], dtype="str"), ("TP", "FP", "FN")).tolist() == [1, 0, -1]
    assert short_string_keys(pd.Series(["TP"], dtype=object), ("TP",)) is None  # not Arrow: caller uses pandas


def test_has_duplicates_is_exact_across_storage_and_slices():
    unique = ["a", "a\x00", "ab", "vg150/train/0000001", "vg150/train/0000002", ""]
    assert not has_duplicates(pd.Series(unique, dtype="str"))
    assert has_duplicates(pd.Series([*unique, "ab"], dtype="str"))
    assert has_duplicates(pd.Series(["q1", "q2", "q1"], dtype=object))  # pandas fallback
    sliced = pd.Series(["zz", "q1", "q2", "q1"], dtype="str").iloc[1:]  # Arrow offset into the buffers
    assert has_duplicates(sliced)
    assert not has_duplicates(sliced.iloc[:2])


def test_hash_collisions_are_settled_on_the_strings(monkeypatch):
    # Every string hashing alike forces the exact comparison of all suspects.
    monkeypatch.setattr(string_keys, "string_hashes", lambda offsets, data: np.zeros(len(offsets) - 1, dtype=np.uint64))
    assert not has_duplicates(pd.Series(["a", "b", "c"], dtype="str"))
    assert has_duplicates(pd.Series(["a", "b", "a"], dtype="str"))
