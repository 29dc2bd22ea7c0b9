"""Scenes of one source split as flat numpy arrays, and the per-image checks on them.

Importers read each raw format into a `FlatScenes` (one entry per image, one
row per box, one row per relation, joined by offsets) so that every check and
every split convention is a vectorised numpy operation: no per-box Python loop
runs on the 1.2M boxes of VG150.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FlatScenes:
    """Images with their boxes and relations as flat arrays.

    Boxes of image i are rows `box_offsets[i]:box_offsets[i+1]` of `boxes` and
    `label_ids`; its relations are rows `relation_offsets[i]:relation_offsets[i+1]`
    of `relation_subj`, `relation_obj` (indices into the image's own boxes) and
    `predicate_ids`. Label and predicate ids are 0-based vocabulary indices and
    may still be invalid until `find_problems` has checked them.
    """

    image_ids: np.ndarray  # object array of str
    image_paths: np.ndarray  # object array of str, relative to the image root
    widths: np.ndarray  # float64
    heights: np.ndarray  # float64
    box_offsets: np.ndarray  # int64, len n + 1
    boxes: np.ndarray  # float64 (m, 4): x1, y1, x2, y2 in pixels
    label_ids: np.ndarray  # int64 (m,)
    relation_offsets: np.ndarray  # int64, len n + 1
    relation_subj: np.ndarray  # int64 (r,)
    relation_obj: np.ndarray  # int64 (r,)
    predicate_ids: np.ndarray  # int64 (r,)
    source_rows: np.ndarray  # int64 (n,): row of each image in its source file

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def box_counts(self) -> np.ndarray:
        return np.diff(self.box_offsets)

    @property
    def relation_counts(self) -> np.ndarray:
        return np.diff(self.relation_offsets)

    def box_image_index(self) -> np.ndarray:
        """For every box, the index of its image."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.box_counts)

    def relation_image_index(self) -> np.ndarray:
        """For every relation, the index of its image."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.relation_counts)

    def subset(self, rows: np.ndarray) -> FlatScenes:
        """The images at `rows` (indices or boolean mask), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
        box_take, box_offsets = _gather_ranges(self.box_offsets, rows)
        relation_take, relation_offsets = _gather_ranges(self.relation_offsets, rows)
        return FlatScenes(
            image_ids=self.image_ids[rows],
            image_paths=self.image_paths[rows],
            widths=self.widths[rows],
            heights=self.heights[rows],
            box_offsets=box_offsets,
            boxes=self.boxes[box_take],
            label_ids=self.label_ids[box_take],
            relation_offsets=relation_offsets,
            relation_subj=self.relation_subj[relation_take],
            relation_obj=self.relation_obj[relation_take],
            predicate_ids=self.predicate_ids[relation_take],
            source_rows=self.source_rows[rows],
        )

    def with_boxes(self, boxes: np.ndarray) -> FlatScenes:
        return replace(self, boxes=boxes)


def _gather_ranges(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element indices of the ranges of `rows` (concatenated) and their new offsets."""
    starts = offsets[rows]
    counts = offsets[rows + 1] - starts
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    take = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1], dtype=np.int64)
    return take, new_offsets


def ranges_to_flat_index(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive ranges [first, last] (-1 = empty) -> element indices and offsets."""
    counts = np.where(first >= 0, last - first + 1, 0).astype(np.int64)
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    take = np.repeat(first.astype(np.int64) - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
    return take, offsets


def empty_flat() -> FlatScenes:
    no_int = np.zeros(0, dtype=np.int64)
    return FlatScenes(
        image_ids=np.zeros(0, dtype=object),
        image_paths=np.zeros(0, dtype=object),
        widths=np.zeros(0),
        heights=np.zeros(0),
        box_offsets=np.zeros(1, dtype=np.int64),
        boxes=np.zeros((0, 4)),
        label_ids=no_int,
        relation_offsets=np.zeros(1, dtype=np.int64),
        relation_subj=no_int,
        relation_obj=no_int,
        predicate_ids=no_int,
        source_rows=no_int,
    )


@dataclass(frozen=True)
class ImageProblem:
    """Why one image is bad input: the field at fault and a one-line reason."""

    row: int  # index of the image in its FlatScenes
    field: str
    reason: str
    file: str | None = None  # the source file at fault when it is not the part's annotation file


def _first_per_image(bad_element: np.ndarray, element_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images having a bad element, and the index of each image's first bad element."""
    bad = np.flatnonzero(bad_element)
    images, first = np.unique(element_image[bad], return_index=True)
    return images, bad[first]


class _Problems(dict):
    """row -> the first problem found for that image (later checks do not overwrite earlier ones)."""

    def add(self, rows: np.ndarray, field: str, reasons: list[str]) -> None:
        for row, reason in zip(rows.tolist(), reasons):
            self.setdefault(int(row), ImageProblem(int(row), field, reason))


def _size_problems(flat: FlatScenes, problems: _Problems) -> None:
    bad_size = ~(np.isfinite(flat.widths) & np.isfinite(flat.heights) & (flat.widths > 0) & (flat.heights > 0))
    rows = np.flatnonzero(bad_size)
    problems.add(rows, "width/height", [f"image size {flat.widths[r]} x {flat.heights[r]} is not positive" for r in rows])


def _box_problems(flat: FlatScenes, box_tolerance: float, box_field: str, problems: _Problems) -> None:
    """Non-finite, degenerate, and outside the image beyond the tolerance (or not overlapping it at all)."""
    box_image = flat.box_image_index()
    box_local = np.arange(len(flat.boxes), dtype=np.int64) - flat.box_offsets[box_image]
    boxes = flat.boxes
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    finite = np.isfinite(boxes).all(axis=1)
    images, first = _first_per_image(~finite, box_image)
    problems.add(images, box_field, [f"box {box_local[b]} has a non-finite coordinate" for b in first])

    with np.errstate(invalid="ignore"):
        degenerate = finite & ((x2 - x1 <= 0) | (y2 - y1 <= 0))
    images, first = _first_per_image(degenerate, box_image)
    problems.add(
        images,
        box_field,
        [
            f"box {box_local[b]} is degenerate (width {x2[b] - x1[b]:.6g}, height {y2[b] - y1[b]:.6g} must be > 0)"
            for b in first
        ],
    )

    width = flat.widths[box_image]
    height = flat.heights[box_image]
    slack = box_tolerance * np.maximum(width, height)
    with np.errstate(invalid="ignore"):
        # beyond the tolerance, or not overlapping the image at all (clipping would leave nothing)
        outside = finite & (
            (x1 < -slack) | (y1 < -slack) | (x2 > width + slack) | (y2 > height + slack)
            | (x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)
        )
    images, first = _first_per_image(outside, box_image)
    problems.add(
        images,
        box_field,
        [
            f"box {box_local[b]} [{x1[b]:.6g}, {y1[b]:.6g}, {x2[b]:.6g}, {y2[b]:.6g}] lies outside the "
            f"{width[b]:.6g} x {height[b]:.6g} image"
            for b in first
        ],
    )


def _label_problems(flat: FlatScenes, n_objects: int, label_field: str, problems: _Problems) -> None:
    box_image = flat.box_image_index()
    box_local = np.arange(len(flat.boxes), dtype=np.int64) - flat.box_offsets[box_image]
    unknown_label = (flat.label_ids < 0) | (flat.label_ids >= n_objects)
    images, first = _first_per_image(unknown_label, box_image)
    problems.add(
        images,
        label_field,
        [f"box {box_local[b]} has unknown label id (index {flat.label_ids[b]} of {n_objects} classes)" for b in first],
    )


def _relation_problems(
    flat: FlatScenes, n_predicates: int, relation_field: str, predicate_field: str, problems: _Problems
) -> None:
    """Relations must point at the image's own boxes and name a known predicate."""
    relation_image = flat.relation_image_index()
    relation_local = np.arange(len(flat.relation_subj), dtype=np.int64) - flat.relation_offsets[relation_image]
    n_boxes = flat.box_counts[relation_image]
    out_of_range = (
        (flat.relation_subj < 0)
        | (flat.relation_subj >= n_boxes)
        | (flat.relation_obj < 0)
        | (flat.relation_obj >= n_boxes)
    )
    images, first = _first_per_image(out_of_range, relation_image)
    problems.add(
        images,
        relation_field,
        [
            f"relation {relation_local[r]} refers to box ({flat.relation_subj[r]}, {flat.relation_obj[r]}) "
            f"but the image has {n_boxes[r]} boxes"
            for r in first
        ],
    )
    unknown_predicate = (flat.predicate_ids < 0) | (flat.predicate_ids >= n_predicates)
    images, first = _first_per_image(unknown_predicate, relation_image)
    problems.add(
        images,
        predicate_field,
        [
            f"relation {relation_local[r]} has unknown predicate id (index {flat.predicate_ids[r]} of "
            f"{n_predicates} predicates)"
            for r in first
        ],
    )


def _image_file_problems(flat: FlatScenes, image_root: Path, problems: _Problems) -> None:
    root = str(image_root)
    for row, image_path in enumerate(flat.image_paths.tolist()):
        if row not in problems and not os.path.isfile(os.path.join(root, image_path)):
            problems[row] = ImageProblem(row, "image file", f"image file {os.path.join(root, image_path)} is missing")


def find_problems(
    flat: FlatScenes,
    n_objects: int,
    n_predicates: int,
    box_tolerance: float,
    image_root: Path | None = None,
    box_field: str = "boxes",
    label_field: str = "labels",
    relation_field: str = "relationships",
    predicate_field: str = "predicates",
) -> dict[int, ImageProblem]:
    """Check every image; return the first problem of each bad image (row -> problem).

    A box may overshoot the image by at most `box_tolerance` x the image's
    longer side (rounding in the source formats); more is bad input. The field
    names are the source format's, so that messages name what to fix.
    """
    problems = _Problems()
    _size_problems(flat, problems)
    _box_problems(flat, box_tolerance, box_field, problems)
    _label_problems(flat, n_objects, label_field, problems)
    _relation_problems(flat, n_predicates, relation_field, predicate_field, problems)
    if image_root is not None:
        _image_file_problems(flat, image_root, problems)
    return dict(sorted(problems.items()))


def clip_boxes(flat: FlatScenes) -> tuple[FlatScenes, int]:
    """Clip boxes to their image (overshoot within tolerance); return the number changed."""
    box_image = flat.box_image_index()
    upper = np.stack(
        [flat.widths[box_image], flat.heights[box_image], flat.widths[box_image], flat.heights[box_image]], axis=1
    )
    clipped = np.clip(flat.boxes, 0.0, upper)
    changed = int(np.count_nonzero((clipped != flat.boxes).any(axis=1)))
    return flat.with_boxes(clipped), changed
