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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reltune.data.flat import FlatScenes, ImageProblem, clip_boxes, find_problems
from reltune.data.gqa200 import read_gqa200
from reltune.data.openimages import read_openimages
from reltune.data.raw import RawDataset, RawPart, held_in_splits
from reltune.data.scenes import SPLITS, scene_table_from_flat, validate_scenes, write_scene_files
from reltune.data.values import printable, text_problem
from reltune.data.vg150 import read_vg150
from reltune.errors import InputError
from reltune.instructions.categories import available_category_maps, predicate_categories
from reltune.io import atomic_directory, write_json
from reltune.progress import log
from reltune.text import normalise_predicate

READERS = {"vg150": read_vg150, "gqa200": read_gqa200, "oi": read_openimages}
FORMATS = tuple(READERS)
DEFAULT_DATASET_OF_FORMAT = {"vg150": "vg150", "gqa200": "gqa200"}
REPORT_NAME = "import_report.json"
DEFAULT_VAL_SIZE = 5000  # images in val (each format's convention says which)
DEFAULT_BOX_TOLERANCE = 0.02  # overshoot allowed as a fraction of the longer image side
_SPACES = re.compile(r"\s+")


def normalise_label(name: str) -> str:
    """Object labels: lowercase, `_` -> space, single spaces (punctuation kept: `t-shirt`)."""
    return _SPACES.sub(" ", str(name).lower().replace("_", " ")).strip()


def _normalised_names(names: list[str], normalise, what: str, file: str) -> list[str]:
    for original in names:
        problem = text_problem(original, f"{what} name")
        if problem:
            raise InputError(file, problem)
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
    """The error of one bad image, naming the source file at fault and the image's record."""
    part = raw.parts[part_index]
    image_id = printable(part.flat.image_ids[problem.row])
    where = f"{part.name} image {image_id} (row {int(part.flat.source_rows[problem.row])})"
    file = problem.file or part.file
    if problem.field == "image file":
        file = str(Path(raw.image_root) / part.flat.image_paths[problem.row])
    return InputError(file, f"{problem.field}: {problem.reason}", where=where)


@dataclass
class CheckedPart:
    """One source split after the checks: images kept, images dropped by convention."""

    candidates: np.ndarray  # rows to write (no problem found)
    problems: list[ImageProblem]
    dropped: dict[str, list[str]]  # reason -> image ids


def check_part(part: RawPart, n_objects: int, n_predicates: int, box_tolerance: float, image_root: Path | None, field_names: dict[str, str]) -> CheckedPart:
    """Drop images without boxes or relations (convention), then check the rest (DESIGN §5)."""
    flat = part.flat
    structural = np.zeros(len(flat), dtype=bool)
    structural[list(part.problems)] = True
    no_boxes = ~structural & (flat.box_counts == 0)
    no_relations = ~structural & ~no_boxes & (flat.relation_counts == 0)
    dropped = {"no_boxes": flat.image_ids[no_boxes].tolist(), "no_relations": flat.image_ids[no_relations].tolist()}
    rows = np.flatnonzero(~structural & ~no_boxes & ~no_relations)
    found = find_problems(
        flat.subset(rows),
        n_objects=n_objects,
        n_predicates=n_predicates,
        box_tolerance=box_tolerance,
        image_root=image_root,
        box_field=field_names.get("boxes", "boxes"),
        label_field=field_names.get("labels", "labels"),
        relation_field=field_names.get("relationships", field_names.get("relations", "relations")),
        predicate_field=field_names.get("predicates", "predicates"),
    )
    problems = dict(part.problems)
    for sub_row, problem in found.items():
        problems[int(rows[sub_row])] = replace(problem, row=int(rows[sub_row]))
    candidates = np.array([row for row in rows.tolist() if row not in problems], dtype=np.int64)
    return CheckedPart(candidates, [problem for _, problem in sorted(problems.items())], dropped)


def drop_duplicate_ids(raw: RawDataset, checked: list[CheckedPart]) -> None:
    """Images whose id was already kept (in any source split) become problems."""
    first_seen: dict[str, tuple[str, int]] = {}
    for part, result in zip(raw.parts, checked):
        duplicate_rows = []
        for row in result.candidates.tolist():
            image_id = part.flat.image_ids[row]
            if image_id in first_seen:
                other_part, other_row = first_seen[image_id]
                result.problems.append(ImageProblem(row, "image id", f"duplicate image id (also {other_part} row {other_row})"))
                duplicate_rows.append(row)
            else:
                first_seen[image_id] = (part.name, int(part.flat.source_rows[row]))
        if duplicate_rows:
            result.candidates = np.setdiff1d(result.candidates, duplicate_rows)
        result.problems.sort(key=lambda problem: problem.row)


def _skipped_entries(raw: RawDataset, checked: list[CheckedPart]) -> list[dict[str, Any]]:
    """The report's list of bad images (ids made printable: the report is UTF-8 JSON)."""
    skipped = []
    for part_index, (part, result) in enumerate(zip(raw.parts, checked)):
        for problem in result.problems:
            error = _problem_error(raw, part_index, problem)
            skipped.append(
                {
                    "source_split": part.name,
                    "row": int(part.flat.source_rows[problem.row]),
                    "image_id": printable(part.flat.image_ids[problem.row]),
                    "file": printable(error.file),
                    "field": problem.field,
                    "reason": problem.reason,
                }
            )
    return skipped


def _split_summary(flat: FlatScenes, predicates: list[str]) -> dict[str, Any]:
    counts = np.bincount(flat.predicate_ids, minlength=len(predicates))
    return {
        "images": len(flat),
        "boxes": int(len(flat.boxes)),
        "relations": int(len(flat.predicate_ids)),
        "predicate_counts": {predicates[index]: int(count) for index, count in enumerate(counts)},
    }


def _dataset_of(format: str, src: str | os.PathLike, dataset: str | None, val_size: int) -> str:
    """Check the arguments that need no reading; the dataset name (default: the format's)."""
    if format not in READERS:
        raise InputError(src, f"unknown format {format!r} (expected one of {FORMATS})")
    if text_problem(str(src), "source directory"):  # it is written into vocab.json and the report
        raise InputError(src, text_problem(str(src), "source directory"))
    if type(val_size) is not int or val_size < 0:
        raise InputError(src, f"val_size must be an integer >= 0, got {val_size!r}")
    if dataset is not None:
        if dataset not in available_category_maps():  # also keeps the name from naming a path
            raise InputError(src, f"no predicate category map for dataset {printable(dataset)!r} "
                             f"(have: {', '.join(available_category_maps())})")
        return dataset
    if format not in DEFAULT_DATASET_OF_FORMAT:
        raise InputError(src, f"--dataset is required for format {format!r} (e.g. oiv4, oiv6, synthetic-ood)")
    return DEFAULT_DATASET_OF_FORMAT[format]


def _first_error(raw: RawDataset, checked: list[CheckedPart]) -> InputError:
    """The first bad image's error, counting the others."""
    bad = [(index, problem) for index, result in enumerate(checked) for problem in result.problems]
    more = f" (+{len(bad) - 1} more bad images; --skip-bad skips them)" if len(bad) > 1 else ""
    error = _problem_error(raw, *bad[0])
    return InputError(error.file, error.problem + more, where=error.where)


def import_scenes(
    format: str,
    src: str | os.PathLike,
    dataset: str | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    skip_bad: bool = False,
    check_images: bool = True,
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
    held_in: bool = False,
) -> ImportResult:
    """Read a raw dataset and return its scene tables (DESIGN §4), vocab and report.

    `held_in`: the dataset is the one tuned on, so its validation split (which
    steers ART) comes from training images even where the format's convention
    carves it from test (GQA200).
    """
    dataset = _dataset_of(format, src, dataset, val_size)
    raw = READERS[format](src)
    objects = _normalised_names(raw.objects, normalise_label, "object", raw.vocab_file)
    predicates = _normalised_names(raw.predicates, normalise_predicate, "predicate", raw.vocab_file)
    categories = predicate_categories(dataset, predicates)

    image_root = Path(raw.image_root) if check_images else None
    checked = [
        check_part(part, len(objects), len(predicates), box_tolerance, image_root, raw.field_names) for part in raw.parts
    ]
    drop_duplicate_ids(raw, checked)
    if any(result.problems for result in checked) and not skip_bad:
        raise _first_error(raw, checked)

    kept: dict[str, FlatScenes] = {}
    boxes_clipped = 0
    for part, result in zip(raw.parts, checked):
        kept[part.name], clipped = clip_boxes(part.flat.subset(result.candidates))
        boxes_clipped += clipped
    conventions = dict(raw.conventions)
    if held_in and raw.val_from_test:
        splits = held_in_splits(kept, val_size)
        conventions["val"] = (f"held-in dataset: the first val_size training images that have boxes and relations "
                              f"(removed from train), never test images (format convention: {conventions['val']})")
        conventions["test"] = "all test images"
    else:
        splits = raw.assign_splits(kept, val_size)
    tables = {split: scene_table_from_flat(splits[split], objects, predicates) for split in SPLITS}

    skipped = _skipped_entries(raw, checked)
    report = {
        "format": format,
        "dataset": dataset,
        "source": str(src),
        "val_size": val_size,
        "box_tolerance": box_tolerance,
        "check_images": check_images,
        "held_in": held_in,
        "val_uses_test_images": raw.val_from_test and not held_in,
        "conventions": conventions,
        "splits": {split: _split_summary(splits[split], predicates) for split in SPLITS},
        "dropped_by_convention": {
            part.name: {reason: {"count": len(ids), "image_ids": ids} for reason, ids in result.dropped.items()}
            for part, result in zip(raw.parts, checked)
        },
        "skipped_bad": {"count": len(skipped), "images": skipped},
        "boxes_clipped_to_image": boxes_clipped,
        **raw.notes,
    }
    vocab = {"objects": objects, "predicates": predicates, "categories": categories, "image_root": raw.image_root}
    return ImportResult(splits=tables, vocab=vocab, report=report)


def write_import(result: ImportResult, out: str | os.PathLike) -> None:
    """Write `{train,val,test}.parquet`, `vocab.json` and `import_report.json` as one directory.

    The tables are validated against their final names first; the directory is
    built in a temporary sibling and renamed over `out`, so a failed run leaves
    the previous output (or none), never new tables beside an old report.
    """
    out = Path(out)
    validate_scenes(out, result.splits, result.vocab)
    with atomic_directory(out) as temporary:
        write_scene_files(temporary, result.splits, result.vocab)
        write_json(result.report, temporary / REPORT_NAME)
    counts = ", ".join(f"{split} {result.report['splits'][split]['images']}" for split in SPLITS)
    log(
        f"scenes of {result.report['dataset']} -> {out}: images {counts}; "
        f"skipped {result.report['skipped_bad']['count']} bad"
    )
