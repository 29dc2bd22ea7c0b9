"""Open Images v4/v6 relationships in the PySGG layout (DESIGN §5).

`annotations/vrd-{train,val,test}-anno.json`: a list of `{img_fn, img_size:
[w, h], bbox: [[x1,y1,x2,y2]] (pixels), det_labels (0-based), rel: [[s, o, p]]
(p 0-based)}`; `annotations/categories_dict.json` = `{"obj": [...], "rel":
[...]}`; images `images/<img_fn>.jpg`. Predicate names use underscores
(normalised to spaces by the importer). Split convention: each split from its
file, val capped at the first `val_size` images; images without boxes or
relations are dropped (as PySGG does for relation training and evaluation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reltune.data.flat import FlatScenes
from reltune.data.jsonscenes import ImageRecord, flat_from_records, parse_image
from reltune.data.raw import RawDataset, RawPart, first_val, require_keys
from reltune.data.values import image_id_text
from reltune.errors import InputError
from reltune.io import read_json

ANNOTATION_DIR = "annotations"
CATEGORIES_NAME = "categories_dict.json"
IMAGE_DIR = "images"
SPLIT_NAMES = ("train", "val", "test")
RECORD_KEYS = ("img_fn", "img_size", "bbox", "det_labels", "rel")
FIELD_NAMES = {"size": "img_size", "boxes": "bbox", "labels": "det_labels", "relations": "rel", "predicates": "rel"}


def annotation_file(src: Path, split: str) -> Path:
    return src / ANNOTATION_DIR / f"vrd-{split}-anno.json"


def _parse_oi_record(row: int, entry: object) -> ImageRecord:
    """One record of an annotation file; a broken record is one bad image (skippable), not a broken file."""
    raw_name = entry.get("img_fn", f"row {row}") if isinstance(entry, dict) else f"row {row}"
    name, name_problem = image_id_text(raw_name, "img_fn")
    missing = [key for key in RECORD_KEYS if not isinstance(entry, dict) or key not in entry]
    if missing or name_problem:
        problem = (missing[0], f"record lacks key {missing[0]!r}") if missing else ("img_fn", name_problem)
        return ImageRecord(name, f"{IMAGE_DIR}/{name}.jpg", np.nan, np.nan, None, None, None, problem=problem)
    return parse_image(
        image_id=name,
        image_path=f"{IMAGE_DIR}/{name}.jpg",
        size=entry["img_size"],
        boxes=entry["bbox"],
        labels=entry["det_labels"],
        relations=entry["rel"],
        label_offset=0,
        predicate_offset=0,
        field_names=FIELD_NAMES,
    )


def read_openimages(src: str | Path) -> RawDataset:
    src = Path(src)
    categories_path = src / ANNOTATION_DIR / CATEGORIES_NAME
    categories = read_json(categories_path)
    require_keys(categories, ("obj", "rel"), categories_path)
    for key in ("obj", "rel"):
        names = categories[key]
        if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
            raise InputError(categories_path, f"{key} must be a non-empty list of names")
    parts = []
    for split in SPLIT_NAMES:
        path = annotation_file(src, split)
        annotations = read_json(path)
        if not isinstance(annotations, list):
            raise InputError(path, "expected a JSON list of images")
        records = [_parse_oi_record(row, entry) for row, entry in enumerate(annotations)]
        flat, problems = flat_from_records(records)
        parts.append(RawPart(name=split, file=str(path), flat=flat, problems=problems))

    def assign(kept: dict[str, FlatScenes], val_size: int) -> dict[str, FlatScenes]:
        val_rows, _ = first_val(kept["val"], val_size)
        return {"train": kept["train"], "val": kept["val"].subset(val_rows), "test": kept["test"]}

    return RawDataset(
        format="oi",
        objects=list(categories["obj"]),
        predicates=list(categories["rel"]),
        parts=parts,
        image_root=str(src),
        vocab_file=str(categories_path),
        assign_splits=assign,
        conventions={
            "train": "annotations/vrd-train-anno.json",
            "val": "the first val_size images of annotations/vrd-val-anno.json that have boxes and relations",
            "test": "annotations/vrd-test-anno.json",
            "dropped": "images without boxes or without relations",
        },
        field_names=FIELD_NAMES,
    )
