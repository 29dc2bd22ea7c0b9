"""What a raw-format reader hands to the importer, and helpers shared by the readers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reltune.data.flat import FlatScenes, ImageProblem
from reltune.errors import InputError


@dataclass
class RawPart:
    """One source split of a raw dataset (e.g. VG150 split 0, GQA_200_Test.json)."""

    name: str  # source split name: train | val | test | ...
    file: str  # the annotation file, for messages
    flat: FlatScenes
    problems: dict[int, ImageProblem] = field(default_factory=dict)  # found while reading (structure)


@dataclass
class RawDataset:
    """A raw dataset read into flat arrays, before checks and split conventions."""

    format: str
    objects: list[str]
    predicates: list[str]
    parts: list[RawPart]
    image_root: str
    vocab_file: str  # the file that names objects and predicates
    # (parts kept after checks, val_size) -> {train, val, test}; documents itself in `conventions`
    assign_splits: Callable[[dict[str, FlatScenes], int], dict[str, FlatScenes]]
    conventions: dict[str, str]
    notes: dict[str, Any] = field(default_factory=dict)  # format facts for the report
    # the format's convention takes val from its test images (GQA200, SHA-GCL):
    # fine for a held-out dataset, but a held-in one must not steer ART with test images
    val_from_test: bool = False
    field_names: dict[str, str] = field(default_factory=dict)  # source field names for messages


def held_in_splits(kept: dict[str, FlatScenes], val_size: int) -> dict[str, FlatScenes]:
    """Validation carved from the first `val_size` training images, test left whole."""
    val_rows, train_rows = first_val(kept["train"], val_size)
    return {"train": kept["train"].subset(train_rows), "val": kept["train"].subset(val_rows), "test": kept["test"]}


def require_keys(record: Any, keys: tuple[str, ...], file: Path, where: str | None = None) -> None:
    """Whole-file structure: missing keys cannot be skipped, so they raise."""
    if not isinstance(record, dict):
        raise InputError(file, "expected a JSON object", where=where)
    missing = [key for key in keys if key not in record]
    if missing:
        raise InputError(file, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}", where=where)


def first_val(flat: FlatScenes, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the first `val_size` images and of the rest."""
    rows = np.arange(len(flat))
    return rows[:val_size], rows[val_size:]
