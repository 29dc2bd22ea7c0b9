"""Raw dataset -> scene tables (stage `scenes@<dataset>`).

Order of work, the same for every format:
1. the format reader turns the files into flat arrays (whole-file problems raise);
2. images without boxes or relations are dropped by convention and counted;
3. every remaining image is checked (boxes, labels, relations, predicates,
   duplicate ids, image files); a bad image raises a one-line InputError, or
   with `skip_bad` is skipped and listed in the report;
4. the format's split convention assigns train / val / test;
5. boxes overshooting the image within the tolerance are clipped (counted).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reltune.data.flat import FlatScenes, ImageProblem, clip_boxes, find_problems
from reltune.data.gqa200 import read_gqa200
from reltune.data.openimages import read_openimages
from reltune.data.raw import RawDataset
from reltune.data.scenes import SPLITS, scene_table_from_flat, write_scenes
from reltune.data.vg150 import read_vg150
from reltune.errors import InputError
from reltune.instructions.categories import predicate_categories
from reltune.io import write_json
from reltune.progress import log
from reltune.text import normalise_predicate

READERS = {"vg150": read_vg150, "gqa200": read_gqa200, "oi": read_openimages}
FORMATS = tuple(READERS)
DEFAULT_DATASET_OF_FORMAT = {"vg150": "vg150", "gqa200": "gqa200"}
REPORT_NAME = "import_report.json"
_SPACES = re.compile(r"\s+")


def normalise_label(name: str) -> str:
    """Object labels: lowercase, `_` -> space, single spaces (punctuation kept: `t-shirt`)."""
    return _SPACES.sub(" ", str(name).lower().replace("_", " ")).strip()


def _normalised_names(names: list[str], normalise, what: str, file: str) -> list[str]:
    result = [normalise(name) for name in names]
    first_of: dict[str, str] = {}
    for original, name in zip(names, result):
        if not name:
            raise InputError(file, f"{what} name {original!r} is empty after normalisation")
        if name in first_of:
            raise InputError(file, f"{what} names {first_of[name]!r} and {original!r} both normalise to {name!r}")
        first_of[name] = original
    return result


@dataclass
class ImportResult:
    """Scene tables per split, the vocabulary and the import report."""

    splits: dict[str, pa.Table]
    vocab: dict[str, Any]
    report: dict[str, Any]


def _problem_error(raw: RawDataset, part_index: int, problem: ImageProblem) -> InputError:
    part = raw.parts[part_index]
    image_id = part.flat.image_ids[problem.row]
    where = f"{part.name} image {image_id} (row {int(part.flat.source_rows[problem.row])})"
    file = part.file
    if problem.field == "image file":
        file = str(Path(raw.image_root) / part.flat.image_paths[problem.row])
    return InputError(file, f"{problem.field}: {problem.reason}", where=where)


def import_scenes(
    format: str,
    src: str | os.PathLike,
    dataset: str | None = None,
    val_size: int = 5000,
    skip_bad: bool = False,
    check_images: bool = True,
    box_tolerance: float = 0.02,
) -> ImportResult:
    """Read a raw dataset and return its scene tables (DESIGN §4), vocab and report."""
    if format not in READERS:
        raise InputError(src, f"unknown format {format!r} (expected one of {FORMATS})")
    if dataset is None:
        if format not in DEFAULT_DATASET_OF_FORMAT:
            raise InputError(src, f"--dataset is required for format {format!r} (e.g. oiv4, oiv6, synthetic-ood)")
        dataset = DEFAULT_DATASET_OF_FORMAT[format]
    if val_size < 0:
        raise InputError(src, f"val_size must be >= 0, got {val_size}")
    raw = READERS[format](src)
    objects = _normalised_names(raw.objects, normalise_label, "object", raw.vocab_file)
    predicates = _normalised_names(raw.predicates, normalise_predicate, "predicate", raw.vocab_file)
    categories = predicate_categories(dataset, predicates)

    problems: list[tuple[int, ImageProblem]] = []
    dropped: dict[str, dict[str, list[str]]] = {}
    candidates: list[np.ndarray] = []
    for part_index, part in enumerate(raw.parts):
        flat = part.flat
        structural = np.zeros(len(flat), dtype=bool)
        structural[list(part.problems)] = True
        no_boxes = ~structural & (flat.box_counts == 0)
        no_relations = ~structural & ~no_boxes & (flat.relation_counts == 0)
        dropped[part.name] = {
            "no_boxes": flat.image_ids[no_boxes].tolist(),
            "no_relations": flat.image_ids[no_relations].tolist(),
        }
        rows = np.flatnonzero(~structural & ~no_boxes & ~no_relations)
        found = find_problems(
            flat.subset(rows),
            n_objects=len(objects),
            n_predicates=len(predicates),
            box_tolerance=box_tolerance,
            image_root=Path(raw.image_root) if check_images else None,
            box_field=raw.field_names.get("boxes", "boxes"),
            label_field=raw.field_names.get("labels", "labels"),
            relation_field=raw.field_names.get("relationships", raw.field_names.get("relations", "relations")),
            predicate_field=raw.field_names.get("predicates", "predicates"),
        )
        part_problems = dict(part.problems)
        for sub_row, problem in found.items():
            row = int(rows[sub_row])
            part_problems[row] = ImageProblem(row, problem.field, problem.reason)
        problems.extend((part_index, problem) for _, problem in sorted(part_problems.items()))
        candidates.append(np.array([row for row in rows.tolist() if row not in part_problems], dtype=np.int64))

    # duplicate image ids among the images that would be written (any source split)
    first_seen: dict[str, tuple[str, int]] = {}
    for part_index, part in enumerate(raw.parts):
        duplicate_rows = []
        for row in candidates[part_index].tolist():
            image_id = part.flat.image_ids[row]
            if image_id in first_seen:
                other_part, other_row = first_seen[image_id]
                problems.append(
                    (part_index, ImageProblem(row, "image id", f"duplicate image id (also {other_part} row {other_row})"))
                )
                duplicate_rows.append(row)
            else:
                first_seen[image_id] = (part.name, int(part.flat.source_rows[row]))
        if duplicate_rows:
            candidates[part_index] = np.setdiff1d(candidates[part_index], duplicate_rows)

    problems.sort(key=lambda item: (item[0], item[1].row))
    if problems and not skip_bad:
        part_index, problem = problems[0]
        more = f" (+{len(problems) - 1} more bad images; --skip-bad skips them)" if len(problems) > 1 else ""
        error = _problem_error(raw, part_index, problem)
        raise InputError(error.file, error.problem + more, where=error.where)

    kept: dict[str, FlatScenes] = {}
    boxes_clipped = 0
    for part_index, part in enumerate(raw.parts):
        flat, clipped = clip_boxes(part.flat.subset(candidates[part_index]))
        boxes_clipped += clipped
        kept[part.name] = flat
    splits = raw.assign_splits(kept, val_size)
    tables = {split: scene_table_from_flat(splits[split], objects, predicates) for split in SPLITS}

    skipped = []
    for part_index, problem in problems:
        part = raw.parts[part_index]
        error = _problem_error(raw, part_index, problem)
        skipped.append(
            {
                "source_split": part.name,
                "row": int(part.flat.source_rows[problem.row]),
                "image_id": str(part.flat.image_ids[problem.row]),
                "file": error.file,
                "field": problem.field,
                "reason": problem.reason,
            }
        )
    vocab = {"objects": objects, "predicates": predicates, "categories": categories, "image_root": raw.image_root}
    report = {
        "format": format,
        "dataset": dataset,
        "source": str(src),
        "val_size": val_size,
        "box_tolerance": box_tolerance,
        "check_images": check_images,
        "conventions": raw.conventions,
        "splits": {
            split: {
                "images": len(splits[split]),
                "boxes": int(len(splits[split].boxes)),
                "relations": int(len(splits[split].predicate_ids)),
                "predicate_counts": {
                    predicates[index]: int(count)
                    for index, count in enumerate(np.bincount(splits[split].predicate_ids, minlength=len(predicates)))
                },
            }
            for split in SPLITS
        },
        "dropped_by_convention": {
            part: {reason: {"count": len(ids), "image_ids": ids} for reason, ids in reasons.items()}
            for part, reasons in dropped.items()
        },
        "skipped_bad": {"count": len(skipped), "images": skipped},
        "boxes_clipped_to_image": boxes_clipped,
        **raw.notes,
    }
    return ImportResult(splits=tables, vocab=vocab, report=report)


def write_import(result: ImportResult, out: str | os.PathLike) -> None:
    """Write `{train,val,test}.parquet`, `vocab.json` and `import_report.json` atomically."""
    out = Path(out)
    write_scenes(out, result.splits, result.vocab)
    write_json(result.report, out / REPORT_NAME)
    counts = ", ".join(f"{split} {result.report['splits'][split]['images']}" for split in SPLITS)
    log(
        f"scenes of {result.report['dataset']} -> {out}: images {counts}; "
        f"skipped {result.report['skipped_bad']['count']} bad"
    )
