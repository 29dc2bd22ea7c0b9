"""Build FlatScenes from per-image JSON records (GQA200 and Open Images layouts).

The records are parsed one image at a time (the JSON is already Python
objects), each image's arrays are checked for shape there, and everything is
concatenated once; the per-box checks then run vectorised in `flat.find_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reltune.data.flat import FlatScenes, ImageProblem
from reltune.data.raw import as_array


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
    image_id: object,
    image_path: str,
    size: object,
    boxes: object,
    labels: object,
    relations: object,
    label_offset: int,
    predicate_offset: int,
    field_names: dict[str, str],
) -> ImageRecord:
    """Parse one image's JSON values; ids become 0-based by subtracting the offsets."""
    record = ImageRecord(str(image_id), image_path, np.nan, np.nan, None, None, None)
    try:
        width, height = (float(value) for value in size)  # type: ignore[union-attr]
        record.width, record.height = width, height
    except (TypeError, ValueError):
        record.problem = (field_names["size"], f"image size {size!r} is not [width, height]")
        return record
    box_array = as_array(boxes, (4,), np.float64)
    if box_array is None:
        record.problem = (field_names["boxes"], "boxes are not a list of [x1, y1, x2, y2]")
        return record
    label_array = as_array(labels, (), np.float64)
    if label_array is None or len(label_array) != len(box_array):
        record.problem = (field_names["labels"], f"labels are not one integer per box ({len(box_array)} boxes)")
        return record
    if np.any(label_array != np.round(label_array)):
        record.problem = (field_names["labels"], "labels are not integers")
        return record
    relation_array = as_array(relations, (3,), np.float64)
    if relation_array is None:
        record.problem = (field_names["relations"], "relations are not a list of [subj, obj, predicate]")
        return record
    if np.any(relation_array != np.round(relation_array)):
        record.problem = (field_names["relations"], "relations are not integers")
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
