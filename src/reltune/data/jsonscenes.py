"""Build FlatScenes from per-image JSON records (GQA200 and Open Images layouts).

The records are parsed one image at a time (the JSON is already Python
objects), each image's arrays are checked for shape there, and everything is
concatenated once; the per-box checks then run vectorised in `flat.find_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reltune.data.flat import FlatScenes, ImageProblem
from reltune.data.values import number_array, printable


@dataclass
class ImageRecord:
    """One image as parsed from JSON, or the reason it could not be parsed."""

    image_id: str
    image_path: str
    width: float
    height: float
    boxes: np.ndarray | None  # (k, 4) x1,y1,x2,y2
    label_ids: np.ndarray | None  # (k,) 0-based
    relations: np.ndarray | None  # (r, 3): subj, obj, predicate id (0-based)
    problem: tuple[str, str] | None = None  # (field, reason)


def parse_image(
    image_id: str,
    image_path: str,
    size: object,
    boxes: object,
    labels: object,
    relations: object,
    label_offset: int,
    predicate_offset: int,
    field_names: dict[str, str],
    id_problem: tuple[str, str] | None = None,
) -> ImageRecord:
    """Parse one image's JSON values; ids become 0-based by subtracting the offsets.

    `id_problem` ((field, reason), from `values.image_id_text`) marks an image
    whose id or file name is unusable; the first problem found is kept.
    """
    record = ImageRecord(image_id, image_path, np.nan, np.nan, None, None, None, problem=id_problem)
    if id_problem is not None:
        return record
    size_array, why = number_array(list(size) if isinstance(size, (list, tuple)) else size, (), integer=True)
    if size_array is None or len(size_array) != 2:
        record.problem = (field_names["size"], f"image size {printable(repr(size))[:60]} is not [width, height] integers")
        return record
    record.width, record.height = float(size_array[0]), float(size_array[1])
    box_array, why = number_array(boxes, (4,), integer=False)
    if box_array is None:
        record.problem = (field_names["boxes"], f"boxes are not a list of [x1, y1, x2, y2] ({why})")
        return record
    label_array, why = number_array(labels, (), integer=True)
    if label_array is None or len(label_array) != len(box_array):
        detail = f" ({why})" if why else ""
        record.problem = (field_names["labels"], f"labels are not one integer per box ({len(box_array)} boxes){detail}")
        return record
    relation_array, why = number_array(relations, (3,), integer=True)
    if relation_array is None:
        record.problem = (field_names["relations"], f"relations are not a list of integer [subj, obj, predicate] ({why})")
        return record
    record.boxes = box_array
    record.label_ids = label_array.astype(np.int64) - label_offset
    relation_ints = relation_array.astype(np.int64)
    relation_ints[:, 2] -= predicate_offset
    record.relations = relation_ints
    return record


def flat_from_records(records: list[ImageRecord]) -> tuple[FlatScenes, dict[int, ImageProblem]]:
    """Concatenate parsed images; unparsable ones keep a row (no boxes) and a problem."""
    problems: dict[int, ImageProblem] = {}
    box_counts = np.zeros(len(records), dtype=np.int64)
    relation_counts = np.zeros(len(records), dtype=np.int64)
    box_pieces, label_pieces, relation_pieces = [], [], []
    for row, record in enumerate(records):
        if record.problem is not None:
            problems[row] = ImageProblem(row, *record.problem)
            continue
        box_counts[row] = len(record.boxes)
        relation_counts[row] = len(record.relations)
        box_pieces.append(record.boxes)
        label_pieces.append(record.label_ids)
        relation_pieces.append(record.relations)
    box_offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(box_counts, out=box_offsets[1:])
    relation_offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(relation_counts, out=relation_offsets[1:])
    relations = np.concatenate(relation_pieces) if relation_pieces else np.zeros((0, 3), dtype=np.int64)
    flat = FlatScenes(
        image_ids=np.array([record.image_id for record in records], dtype=object),
        image_paths=np.array([record.image_path for record in records], dtype=object),
        widths=np.array([record.width for record in records], dtype=np.float64),
        heights=np.array([record.height for record in records], dtype=np.float64),
        box_offsets=box_offsets,
        boxes=np.concatenate(box_pieces).reshape(-1, 4) if box_pieces else np.zeros((0, 4)),
        label_ids=np.concatenate(label_pieces) if label_pieces else np.zeros(0, dtype=np.int64),
        relation_offsets=relation_offsets,
        relation_subj=relations[:, 0].copy(),
        relation_obj=relations[:, 1].copy(),
        predicate_ids=relations[:, 2].copy(),
        source_rows=np.arange(len(records), dtype=np.int64),
    )
    return flat, problems
