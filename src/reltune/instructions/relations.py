"""Scene rows (DESIGN §4) -> one row per annotated relation, with labels and boxes looked up.

The nested columns are handled as pyarrow list arrays (flatten, parent
indices, offsets), so no Python code runs per relation or per box. Checks
only what building questions relies on; each failure is an InputError naming
the file and image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reltune.errors import InputError
from reltune.text import normalise_predicate

SCENE_COLUMNS = ("image_id", "boxes", "labels", "relations")
RELATION_FIELDS = ("subj", "obj", "predicate")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numpy(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _list_array(series: pd.Series, image_ids: np.ndarray, file: str, column: str) -> pa.Array:
    """A list column as one pyarrow array (zero-copy for pyarrow-backed columns)."""
    try:
        array = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
        raise InputError(file, f"column {column!r} is not a list column ({error})") from None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise InputError(file, f"column {column!r} has type {array.type}, expected a list")
    if array.null_count:
        row = _first(_numpy(array.is_null()))
        raise InputError(file, f"column {column!r} is null", where=f"image {image_ids[row]}")
    return array


@dataclass(frozen=True)
class _Objects:
    """Boxes and labels of every image, flattened: image `i` owns rows starts[i] : starts[i] + counts[i]."""

    starts: np.ndarray
    counts: np.ndarray
    coordinates: np.ndarray  # (total boxes, 4) x1, y1, x2, y2
    labels: pa.Array  # string, one per box


def _objects(boxes: pa.Array, labels: pa.Array, image_ids: np.ndarray, file: str) -> _Objects:
    counts = _numpy(pc.list_value_length(boxes)).astype(np.int64)
    label_counts = _numpy(pc.list_value_length(labels)).astype(np.int64)
    if (bad := counts != label_counts).any():
        row = _first(bad)
        raise InputError(file, f"{label_counts[row]} labels for {counts[row]} boxes", where=f"image {image_ids[row]}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def owner(flat_box: int) -> str:
        return f"image {image_ids[np.searchsorted(starts, flat_box, side='right') - 1]}"

    box_lists = boxes.flatten()
    if len(box_lists) == 0:
        return _Objects(starts, counts, np.zeros((0, 4)), pa.array([], type=pa.string()))
    coordinate_counts = _numpy(pc.list_value_length(box_lists).fill_null(0))
    if (bad := coordinate_counts != 4).any():
        box = _first(bad)
        within = box - starts[np.searchsorted(starts, box, side="right") - 1]
        raise InputError(file, f"box {within} has {coordinate_counts[box]} coordinates, expected 4", where=owner(box))
    coordinates = _numpy(box_lists.flatten().cast(pa.float64())).reshape(-1, 4)
    if (bad := ~np.isfinite(coordinates).all(axis=1)).any():
        box = _first(bad)
        within = box - starts[np.searchsorted(starts, box, side="right") - 1]
        raise InputError(file, f"box {within} has a missing or non-finite coordinate", where=owner(box))
    flat_labels = labels.flatten().cast(pa.string())
    if flat_labels.null_count:
        box = _first(_numpy(flat_labels.is_null()))
        raise InputError(file, "a box has no label", where=owner(box))
    return _Objects(starts, counts, coordinates, flat_labels)


def _relation_fields(
    relations: pa.Array, image_ids: np.ndarray, file: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """(owning image row, subj, obj, raw predicate) of every relation."""
    flat = relations.flatten()
    image_row = _numpy(pc.list_parent_indices(relations)).astype(np.int64)
    if len(flat) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, pa.array([], type=pa.string())
    if not pa.types.is_struct(flat.type) or any(flat.type.get_field_index(name) < 0 for name in RELATION_FIELDS):
        raise InputError(file, f"relations have type {flat.type}, expected struct<subj: int, obj: int, predicate: str>")
    fields = {name: flat.field(name) for name in RELATION_FIELDS}
    missing_struct = _numpy(flat.is_null())
    for name, values in fields.items():
        if (missing := missing_struct | _numpy(values.is_null())).any():
            raise InputError(file, f"relation has no {name}", where=f"image {image_ids[image_row[_first(missing)]]}")
    subj = _numpy(fields["subj"].cast(pa.int64()))
    obj = _numpy(fields["obj"].cast(pa.int64()))
    return image_row, subj, obj, fields["predicate"].cast(pa.string())


def _normalised_predicates(raw: pa.Array) -> np.ndarray:
    """normalise_predicate of each value, computed once per distinct name."""
    encoded = raw.dictionary_encode()
    names = np.array([normalise_predicate(name) for name in encoded.dictionary.to_pylist()], dtype=object)
    return names[_numpy(encoded.indices).astype(np.int64)]


def explode_relations(scenes: pd.DataFrame, file: str = "scenes") -> pd.DataFrame:
    """One row per annotated relation, in scene order.

    Columns: image_row (position of the image in `scenes`), image_id, subj,
    obj, subj_label, obj_label, predicate (normalised, DESIGN §7), and the
    boxes as subj_x1, subj_y1, subj_x2, subj_y2, obj_x1, ..., obj_y2.
    Raises InputError for a repeated image_id, a box without 4 finite
    coordinates, a label/box count mismatch, a relation index out of range or
    a missing/empty predicate.
    """
    missing = [column for column in SCENE_COLUMNS if column not in scenes.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    image_ids = scenes["image_id"].astype(str).to_numpy()
    if (repeated := pd.Series(image_ids).duplicated().to_numpy()).any():
        row = _first(repeated)
        raise InputError(file, "image_id appears more than once", where=f"row {row}, image {image_ids[row]}")

    lists = {column: _list_array(scenes[column], image_ids, file, column) for column in SCENE_COLUMNS[1:]}
    objects = _objects(lists["boxes"], lists["labels"], image_ids, file)
    image_row, subj, obj, raw_predicates = _relation_fields(lists["relations"], image_ids, file)

    for name, index in (("subj", subj), ("obj", obj)):
        if (bad := (index < 0) | (index >= objects.counts[image_row])).any():
            row = image_row[_first(bad)]
            raise InputError(
                file,
                f"relation {name} index {index[_first(bad)]} out of range for {objects.counts[row]} boxes",
                where=f"image {image_ids[row]}",
            )
    predicates = _normalised_predicates(raw_predicates)
    if (empty := predicates == "").any():
        raise InputError(file, "relation has an empty predicate", where=f"image {image_ids[image_row[_first(empty)]]}")

    subj_box_row = objects.starts[image_row] + subj
    obj_box_row = objects.starts[image_row] + obj
    table = pd.DataFrame(
        {
            "image_row": image_row,
            "image_id": pd.Series(image_ids[image_row], dtype="str"),
            "subj": subj,
            "obj": obj,
            "subj_label": pd.Series(objects.labels.take(pa.array(subj_box_row)), dtype="str"),
            "obj_label": pd.Series(objects.labels.take(pa.array(obj_box_row)), dtype="str"),
            "predicate": pd.Series(predicates, dtype="str"),
        }
    )
    for prefix, box_row in (("subj", subj_box_row), ("obj", obj_box_row)):
        for column, name in enumerate(("x1", "y1", "x2", "y2")):
            table[f"{prefix}_{name}"] = objects.coordinates[box_row, column]
    return table
