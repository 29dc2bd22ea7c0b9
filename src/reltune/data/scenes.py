"""Scene tables (DESIGN §4): schema, construction, validation, reading and writing.

One row per image: `image_id, image_path, width, height, boxes (x1,y1,x2,y2
pixels), labels, relations (subj, obj, predicate)`, plus `vocab.json` with
`objects, predicates, categories, image_root`. Other areas read scenes only
through `read_scenes` and may check tables they build with
`validate_scene_table`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reltune.data.flat import FlatScenes
from reltune.errors import InputError
from reltune.io import atomic_path, read_json, write_json

SPLITS = ("train", "val", "test")
SCENE_COLUMNS = ("image_id", "image_path", "width", "height", "boxes", "labels", "relations")
VOCAB_KEYS = ("objects", "predicates", "categories", "image_root")
NAME_KEYS = ("objects", "predicates")  # what the names file (stage `names`) keeps of each vocab.json
CATEGORY_NAMES = ("spatial", "possessive", "semantic")

RELATION_TYPE = pa.struct([("subj", pa.int64()), ("obj", pa.int64()), ("predicate", pa.string())])
SCENE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("image_path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("boxes", pa.list_(pa.list_(pa.float64(), 4))),
        ("labels", pa.list_(pa.string())),
        ("relations", pa.list_(RELATION_TYPE)),
    ]
)


def scene_table_from_flat(flat: FlatScenes, objects: Sequence[str], predicates: Sequence[str]) -> pa.Table:
    """Build the arrow scene table from flat arrays (label/predicate ids must be valid)."""
    box_values = pa.FixedSizeListArray.from_arrays(pa.array(flat.boxes.reshape(-1), type=pa.float64()), 4)
    boxes = pa.ListArray.from_arrays(pa.array(flat.box_offsets.astype(np.int32)), box_values)
    label_names = pc.take(pa.array(list(objects), type=pa.string()), pa.array(flat.label_ids))
    labels = pa.ListArray.from_arrays(pa.array(flat.box_offsets.astype(np.int32)), label_names)
    predicate_names = pc.take(pa.array(list(predicates), type=pa.string()), pa.array(flat.predicate_ids))
    relation_values = pa.StructArray.from_arrays(
        [pa.array(flat.relation_subj, type=pa.int64()), pa.array(flat.relation_obj, type=pa.int64()), predicate_names],
        fields=list(RELATION_TYPE),
    )
    relations = pa.ListArray.from_arrays(pa.array(flat.relation_offsets.astype(np.int32)), relation_values)
    return pa.Table.from_arrays(
        [
            pa.array(flat.image_ids.tolist(), type=pa.string()),
            pa.array(flat.image_paths.tolist(), type=pa.string()),
            pa.array(np.rint(flat.widths).astype(np.int64)),
            pa.array(np.rint(flat.heights).astype(np.int64)),
            boxes,
            labels,
            relations,
        ],
        schema=SCENE_SCHEMA,
    )


def _to_arrow(table: pd.DataFrame | pa.Table, file: object) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    missing = [column for column in SCENE_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    columns = table[list(SCENE_COLUMNS)]
    try:
        return pa.Table.from_pandas(columns, schema=SCENE_SCHEMA, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        pass  # not the exact schema: infer the types, the checks below say what is wrong
    try:
        return pa.Table.from_pandas(columns, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
        raise InputError(file, f"columns do not have the scene table types ({error})") from None


def _flat_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten one list level: (parent row of each element, list lengths)."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return parents, lengths


@dataclass(frozen=True)
class _Failure:
    """Raises the one-line error of a scene table, naming the row and its image."""

    file: str | os.PathLike
    image_ids: list

    def __call__(self, row: int, problem: str) -> NoReturn:
        raise InputError(self.file, problem, where=f"row {row}, image {self.image_ids[row]}")


def _check_ids_and_sizes(arrow: pa.Table, file: str | os.PathLike) -> tuple[_Failure, np.ndarray, np.ndarray]:
    """Unique non-empty image ids, non-empty paths, positive sizes; returns the failure helper and the sizes."""
    image_ids = arrow.column("image_id").to_pylist()
    for row, image_id in enumerate(image_ids):
        if not isinstance(image_id, str) or not image_id:
            raise InputError(file, "image_id must be a non-empty string", where=f"row {row}")
    fail = _Failure(file, image_ids)
    seen: dict[str, int] = {}
    for row, image_id in enumerate(image_ids):
        if image_id in seen:
            fail(row, f"duplicate image_id (also row {seen[image_id]})")
        seen[image_id] = row
    for row, path in enumerate(arrow.column("image_path").to_pylist()):
        if not isinstance(path, str) or not path:
            fail(row, "image_path must be a non-empty string")
    try:
        widths = np.asarray(arrow.column("width").to_pylist(), dtype=float)
        heights = np.asarray(arrow.column("height").to_pylist(), dtype=float)
    except (TypeError, ValueError):
        raise InputError(file, "width/height must be numbers") from None
    bad = np.flatnonzero(~(np.isfinite(widths) & np.isfinite(heights) & (widths > 0) & (heights > 0)))
    if len(bad):
        fail(int(bad[0]), f"image size {widths[bad[0]]} x {heights[bad[0]]} is not positive")
    return fail, widths, heights


def _check_boxes(
    arrow: pa.Table, file: str | os.PathLike, fail: _Failure, widths: np.ndarray, heights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One label per box; 4 finite numbers with x2 > x1, y2 > y1 inside the image. Returns (box counts, box starts)."""
    boxes_column = arrow.column("boxes")
    box_parents, box_counts = _flat_values(boxes_column)
    _, label_counts = _flat_values(arrow.column("labels"))
    mismatch = np.flatnonzero(box_counts != label_counts)
    if len(mismatch):
        row = int(mismatch[0])
        fail(row, f"{box_counts[row]} boxes but {label_counts[row]} labels")
    box_items = pc.list_flatten(boxes_column)
    coordinate_counts = pc.fill_null(pc.list_value_length(box_items), 0).to_numpy(zero_copy_only=False)
    if np.any(coordinate_counts != 4):
        box = int(np.flatnonzero(coordinate_counts != 4)[0])
        fail(int(box_parents[box]), f"box {box - int(np.sum(box_counts[: box_parents[box]]))} does not have 4 numbers")
    try:
        coordinates = pc.list_flatten(box_items).to_numpy(zero_copy_only=False).astype(float).reshape(-1, 4)
    except (TypeError, ValueError, pa.ArrowInvalid):
        raise InputError(file, "boxes must hold numbers") from None
    box_starts = np.concatenate([[0], np.cumsum(box_counts)])
    x1, y1, x2, y2 = coordinates.T
    width = widths[box_parents]
    height = heights[box_parents]
    tolerance = 1e-6 * np.maximum(width, height)
    with np.errstate(invalid="ignore"):
        bad_box = ~np.isfinite(coordinates).all(axis=1) | (x2 <= x1) | (y2 <= y1)
        bad_box |= (x1 < -tolerance) | (y1 < -tolerance) | (x2 > width + tolerance) | (y2 > height + tolerance)
    if np.any(bad_box):
        box = int(np.flatnonzero(bad_box)[0])
        row = int(box_parents[box])
        fail(
            row,
            f"box {box - box_starts[row]} {coordinates[box].tolist()} is degenerate or outside the "
            f"{widths[row]:g} x {heights[row]:g} image",
        )
    return box_counts, box_starts


def _check_labels(arrow: pa.Table, file: str | os.PathLike, fail: _Failure, box_starts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Labels are non-empty strings; returns them flattened with their parent rows."""
    label_parents, _ = _flat_values(arrow.column("labels"))
    labels = pc.list_flatten(arrow.column("labels"))
    if not (pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type) or len(labels) == 0):
        raise InputError(file, "labels must be lists of strings")
    empty_label = _empty_strings(labels)
    if np.any(empty_label):
        index = int(np.flatnonzero(empty_label)[0])
        row = int(label_parents[index])
        fail(row, f"label {index - box_starts[row]} is empty")
    return labels, label_parents


def _check_relations(
    arrow: pa.Table, file: str | os.PathLike, fail: _Failure, box_counts: np.ndarray
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Relations are (subj, obj, predicate) structs inside the image's boxes with non-empty predicates.

    Returns the predicates flattened, their parent rows and each row's first relation.
    """
    relations_column = arrow.column("relations")
    relation_parents, relation_counts = _flat_values(relations_column)
    relation_starts = np.concatenate([[0], np.cumsum(relation_counts)])
    relation_items = pc.list_flatten(relations_column)
    if not len(relation_items):
        return pa.array([], type=pa.string()), relation_parents, relation_starts
    relation_type = relation_items.type
    if not pa.types.is_struct(relation_type) or {"subj", "obj", "predicate"} - {
        relation_type.field(i).name for i in range(relation_type.num_fields)
    }:
        raise InputError(file, "relations must be structs with subj, obj and predicate")
    items = pa.concat_arrays(relation_items.chunks) if isinstance(relation_items, pa.ChunkedArray) else relation_items
    subj_array, obj_array = items.field("subj"), items.field("obj")
    if not (pa.types.is_integer(subj_array.type) and pa.types.is_integer(obj_array.type)):
        raise InputError(file, "relation subj/obj must be integers")
    subj = pc.fill_null(subj_array, -1).to_numpy(zero_copy_only=False)
    obj = pc.fill_null(obj_array, -1).to_numpy(zero_copy_only=False)
    n_boxes = box_counts[relation_parents]
    bad_relation = (subj < 0) | (subj >= n_boxes) | (obj < 0) | (obj >= n_boxes)
    if np.any(bad_relation):
        index = int(np.flatnonzero(bad_relation)[0])
        row = int(relation_parents[index])
        fail(
            row,
            f"relation {index - relation_starts[row]} refers to box ({subj[index]}, {obj[index]}) "
            f"but the image has {n_boxes[index]} boxes",
        )
    predicates = items.field("predicate")
    if not pa.types.is_string(predicates.type):
        raise InputError(file, "relation predicates must be strings")
    empty_predicate = _empty_strings(predicates)
    if np.any(empty_predicate):
        index = int(np.flatnonzero(empty_predicate)[0])
        row = int(relation_parents[index])
        fail(row, f"relation {index - relation_starts[row]} has an empty predicate")
    return predicates, relation_parents, relation_starts


def _check_in_vocabulary(fail: _Failure, vocab: dict[str, Any], named: list[tuple]) -> None:
    """Every label and predicate is listed in the vocabulary."""
    for values, parents, key, what in named:
        if len(values) == 0:
            continue
        known = pc.is_in(values, value_set=pa.array(list(vocab.get(key, [])), type=pa.string()))
        unknown = ~pc.fill_null(known, False).to_numpy(zero_copy_only=False)
        if np.any(unknown):
            index = int(np.flatnonzero(unknown)[0])
            fail(int(parents[index]), f"{what} {values[index].as_py()!r} is not in the vocabulary ({key})")


def validate_scene_table(
    table: pd.DataFrame | pa.Table, file: str | os.PathLike, vocab: dict[str, Any] | None = None
) -> None:
    """Check a scene table against DESIGN §4; raise a one-line InputError naming row and image.

    Checks: columns and types, unique non-empty image ids, positive sizes,
    one label per box, boxes of 4 finite numbers with x2 > x1, y2 > y1 inside
    the image, relation indices inside the image's boxes, non-empty predicates,
    and (with `vocab`) labels and predicates that the vocabulary lists.
    """
    arrow = _to_arrow(table, file)
    missing = [column for column in SCENE_COLUMNS if column not in arrow.column_names]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    fail, widths, heights = _check_ids_and_sizes(arrow, file)
    box_counts, box_starts = _check_boxes(arrow, file, fail, widths, heights)
    labels, label_parents = _check_labels(arrow, file, fail, box_starts)
    predicates, relation_parents, _ = _check_relations(arrow, file, fail, box_counts)
    if vocab is not None:
        _check_in_vocabulary(
            fail,
            vocab,
            [(labels, label_parents, "objects", "label"), (predicates, relation_parents, "predicates", "predicate")],
        )


def _empty_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Mask of null or empty strings."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    lengths = pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
    return lengths == 0


def validate_vocab(vocab: Any, file: str | os.PathLike) -> dict[str, Any]:
    """Check vocab.json: the four keys, unique names, a category for every predicate."""
    if not isinstance(vocab, dict):
        raise InputError(file, "vocab must be a JSON object")
    missing = [key for key in VOCAB_KEYS if key not in vocab]
    if missing:
        raise InputError(file, f"missing keys {missing}")
    for key in ("objects", "predicates"):
        names = vocab[key]
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise InputError(file, f"{key} must be a list of non-empty strings")
        if len(set(names)) != len(names):
            raise InputError(file, f"{key} has duplicate names")
    categories = vocab["categories"]
    if not isinstance(categories, dict):
        raise InputError(file, "categories must be an object {predicate: category}")
    for predicate in vocab["predicates"]:
        if categories.get(predicate) not in CATEGORY_NAMES:
            raise InputError(file, f"predicate {predicate!r} has no category among {CATEGORY_NAMES}")
    if not isinstance(vocab["image_root"], str):
        raise InputError(file, "image_root must be a string")
    return vocab


def read_vocab(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / "vocab.json"
    return validate_vocab(read_json(path), path)


def _name_lists(entry: Any, file: str | os.PathLike, where: str = "") -> dict[str, list[str]]:
    """{"objects", "predicates"} of a vocab.json, or of one dataset of the names file, checked."""
    lists = {}
    for key in NAME_KEYS:
        values = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise InputError(file, f"{where}'{key}' must be a list of names")
        lists[key] = list(values)
    return lists


def dataset_vocabularies(scene_root: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """{dataset: {"objects": [...], "predicates": [...]}} of every `<scene_root>/<dataset>/vocab.json`."""
    files = sorted(Path(scene_root).glob("*/vocab.json"))
    if not files:
        raise InputError(str(scene_root), "no */vocab.json below it: give the scene root (data/scenes)")
    return {file.parent.name: _name_lists(read_json(file), file) for file in files}


def write_dataset_names(scene_root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Stage `names`: every dataset's object and predicate names in one file, {"datasets": {...}}.

    Training excludes these names from its substitutes and depends on this file
    rather than on the scene folders, so a larger test split does not retrain.
    """
    names = {"datasets": dataset_vocabularies(scene_root)}
    write_json(names, out)
    return names


def read_dataset_names(file: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """The `names` stage's file, checked: {dataset: {"objects": [...], "predicates": [...]}}."""
    names = read_json(file)
    datasets = names.get("datasets") if isinstance(names, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise InputError(file, 'expected {"datasets": {dataset: {"objects": [...], "predicates": [...]}}} (`reltune data names`)')
    return {dataset: _name_lists(entry, file, f"datasets.{dataset}: ") for dataset, entry in datasets.items()}


def read_scenes(directory: str | os.PathLike, split: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate `<directory>/<split>.parquet` and `<directory>/vocab.json`."""
    if split not in SPLITS:
        raise InputError(directory, f"unknown split {split!r} (expected one of {SPLITS})")
    vocab = read_vocab(directory)
    path = Path(directory) / f"{split}.parquet"
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        arrow = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"not a readable parquet file ({type(error).__name__}: {error})") from None
    validate_scene_table(arrow, path, vocab)
    return arrow.to_pandas(), vocab


def write_scene_table(table: pa.Table | pd.DataFrame, path: str | os.PathLike) -> None:
    """Write one scene table atomically (arrow tables keep the exact schema)."""
    if isinstance(table, pd.DataFrame):
        table = _to_arrow(table, path)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def validate_scenes(directory: str | os.PathLike, splits: dict[str, pa.Table | pd.DataFrame], vocab: dict[str, Any]) -> None:
    """Check the vocabulary and every split table; errors name `<directory>/<split>.parquet`."""
    directory = Path(directory)
    validate_vocab(vocab, directory / "vocab.json")
    for split, table in splits.items():
        validate_scene_table(table, directory / f"{split}.parquet", vocab)


def write_scene_files(directory: str | os.PathLike, splits: dict[str, pa.Table | pd.DataFrame], vocab: dict[str, Any]) -> None:
    """Write `{split}.parquet` for each split and `vocab.json` (each file atomically; tables already validated)."""
    directory = Path(directory)
    for split, table in splits.items():
        write_scene_table(table, directory / f"{split}.parquet")
    write_json({key: vocab[key] for key in VOCAB_KEYS}, directory / "vocab.json")


def write_scenes(
    directory: str | os.PathLike, splits: dict[str, pa.Table | pd.DataFrame], vocab: dict[str, Any]
) -> None:
    """Validate and write `{split}.parquet` for each split and `vocab.json`."""
    validate_scenes(directory, splits, vocab)
    write_scene_files(directory, splits, vocab)
