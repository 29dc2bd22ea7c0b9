"""GQA200 in the SHA-GCL layout (DESIGN §5).

`GQA_200_ID_Info.json` has `ind_to_classes` and `ind_to_predicates` (index 0
= `__background__`); `GQA_200_Train.json` / `GQA_200_Test.json` hold parallel
lists `filenames_all`, `img_info_all` (width/height), `gt_boxes_all` (x1,y1,x2,y2
pixels), `gt_classes_all`, `relationships_all` ([s, o, p]); class and predicate
ids index the lists directly, so id 0 (background) is invalid. Images are
`images/<filename>`. Split convention (SHA-GCL's loader): val = the first
`val_size` Test images that have boxes and relations, test = ALL of Test
(val is a subset of test, as in the reference, so that test metrics stay
comparable); images without boxes or relations are dropped.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from reltune.data.flat import FlatScenes
from reltune.data.jsonscenes import ImageRecord, flat_from_records, parse_image
from reltune.data.raw import RawDataset, RawPart, first_val, require_keys
from reltune.data.values import image_id_text
from reltune.errors import InputError
from reltune.io import read_json

INFO_NAME = "GQA_200_ID_Info.json"
PART_FILES = (("train", "GQA_200_Train.json"), ("test", "GQA_200_Test.json"))
IMAGE_DIR = "images"
LISTS = ("filenames_all", "img_info_all", "gt_boxes_all", "gt_classes_all", "relationships_all")
FIELD_NAMES = {
    "size": "img_info_all",
    "boxes": "gt_boxes_all",
    "labels": "gt_classes_all",
    "relations": "relationships_all",
    "predicates": "relationships_all",
}


def _names_after_background(info: dict, key: str, file: Path) -> list[str]:
    names = info[key]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(name, str) and name for name in names):
        raise InputError(file, f"{key} must be a list of names starting with __background__")
    return names[1:]


def _parse_gqa_image(filename: object, image_info: object, boxes: object, classes: object, relations: object) -> ImageRecord:
    """One image of the parallel lists; the file name must stay inside `images/`."""
    name, name_problem = image_id_text(filename, "file name")
    size = [image_info.get("width"), image_info.get("height")] if isinstance(image_info, dict) else image_info
    return parse_image(
        image_id=PurePosixPath(name).stem,
        image_path=f"{IMAGE_DIR}/{name}",
        size=size,
        boxes=boxes,
        labels=classes,
        relations=relations,
        label_offset=1,
        predicate_offset=1,
        field_names=FIELD_NAMES,
        id_problem=("filenames_all", name_problem) if name_problem else None,
    )


def read_gqa200(src: str | Path) -> RawDataset:
    src = Path(src)
    info_path = src / INFO_NAME
    info = read_json(info_path)
    require_keys(info, ("ind_to_classes", "ind_to_predicates"), info_path)
    objects = _names_after_background(info, "ind_to_classes", info_path)
    predicates = _names_after_background(info, "ind_to_predicates", info_path)
    parts = []
    for name, file_name in PART_FILES:
        path = src / file_name
        data = read_json(path)
        require_keys(data, LISTS, path)
        lengths = {key: len(data[key]) if isinstance(data[key], list) else -1 for key in LISTS}
        if len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise InputError(path, f"the parallel lists differ in length or are not lists: {lengths}")
        records = [_parse_gqa_image(*values) for values in zip(*(data[key] for key in LISTS))]
        flat, problems = flat_from_records(records)
        parts.append(RawPart(name=name, file=str(path), flat=flat, problems=problems))

    def assign(kept: dict[str, FlatScenes], val_size: int) -> dict[str, FlatScenes]:
        test = kept["test"]
        val_rows, _ = first_val(test, val_size)
        return {"train": kept["train"], "val": test.subset(val_rows), "test": test}

    return RawDataset(
        format="gqa200",
        objects=objects,
        predicates=predicates,
        parts=parts,
        image_root=str(src),
        vocab_file=str(info_path),
        assign_splits=assign,
        val_from_test=True,
        conventions={
            "train": "GQA_200_Train.json",
            "val": "the first val_size images of GQA_200_Test.json that have boxes and relations (a subset of test)",
            "test": "all of GQA_200_Test.json (SHA-GCL convention; overlaps val)",
            "dropped": "images without boxes or without relations",
        },
        field_names=FIELD_NAMES,
    )
