"""Visual Genome VG150 in the Scene-Graph-Benchmark layout (DESIGN §5).

`VG-SGG-with-attri.h5`: `labels` (N_obj,1, 1-based), `boxes_1024` (N_obj,4)
cx,cy,w,h scaled so that the longer image side is 1024, inclusive
`img_to_first_box`/`img_to_last_box` and `img_to_first_rel`/`img_to_last_rel`
(-1 = none), `relationships` (N_rel,2) of GLOBAL box indices, `predicates`
(N_rel,1, 1-based), `split` (0 train, 2 test). `VG-SGG-dicts-with-attri.json`
names labels and predicates; `image_data.json` is aligned with the h5 rows;
images are `VG_100K/<image_id>.jpg`. Split convention: val = the first
`val_size` train-split images that have boxes and relations; images without
boxes or relations are dropped (counted in the report).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from reltune.data.flat import FlatScenes, ImageProblem, empty_flat, ranges_to_flat_index
from reltune.data.raw import RawDataset, RawPart, first_val, require_keys
from reltune.errors import InputError
from reltune.io import read_json

H5_NAME = "VG-SGG-with-attri.h5"
DICTS_NAME = "VG-SGG-dicts-with-attri.json"
IMAGE_DATA_NAME = "image_data.json"
IMAGE_DIR = "VG_100K"
BOX_SCALE = 1024
TRAIN_SPLIT, TEST_SPLIT = 0, 2
# image_data.json of the real release lists 108,077 images; these 4 corrupt ones
# have no row in the h5 (Scene-Graph-Benchmark skips them when aligning).
KNOWN_CORRUPT_IMAGE_IDS = (1592, 1722, 4616, 4617)
H5_DATASETS = (
    "labels",
    f"boxes_{BOX_SCALE}",
    "img_to_first_box",
    "img_to_last_box",
    "relationships",
    "predicates",
    "img_to_first_rel",
    "img_to_last_rel",
    "split",
)


def indexed_names(dicts: dict, key: str, file: Path) -> list[str]:
    """`{"1": name, ..., "N": name}` -> [name_1, ..., name_N]; keys must be exactly 1..N."""
    mapping = dicts[key]
    if not isinstance(mapping, dict) or not mapping:
        raise InputError(file, f"{key} must be a non-empty object {{\"1\": name, ...}}")
    try:
        indices = sorted(int(index) for index in mapping)
    except ValueError:
        raise InputError(file, f"{key} has a non-integer key") from None
    if indices != list(range(1, len(mapping) + 1)):
        raise InputError(file, f"{key} keys must be 1..{len(mapping)} (1-based, contiguous)")
    names = [mapping[str(index)] for index in indices]
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise InputError(file, f"{key} has an empty or non-string name")
    return names


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in H5_DATASETS if name not in h5]
            if missing:
                raise InputError(path, f"missing dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            arrays = {name: np.asarray(h5[name][()]) for name in H5_DATASETS}
    except InputError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise InputError(path, f"not a readable HDF5 file ({type(error).__name__}: {error})") from None
    return arrays


def _column(arrays: dict[str, np.ndarray], name: str, path: Path, width: int | None) -> np.ndarray:
    """Check the shape of one h5 dataset: (N,) or (N,1) when width is None, else (N, width)."""
    array = arrays[name]
    if width is None:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InputError(path, f"dataset {name} has shape {array.shape}, expected (N,) or (N, 1)")
    elif array.ndim != 2 or array.shape[1] != width:
        raise InputError(path, f"dataset {name} has shape {array.shape}, expected (N, {width})")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(path, f"dataset {name} is not numeric (dtype {array.dtype})")
    return array


def _range_problems(first: np.ndarray, last: np.ndarray, total: int) -> np.ndarray:
    """Mask of images whose inclusive range is neither (-1, -1) nor inside [0, total)."""
    none = (first == -1) & (last == -1)
    valid = (first >= 0) & (last >= first) & (last < total)
    return ~(none | valid)


def read_vg150(src: str | Path) -> RawDataset:
    """Read the three VG150 files into flat arrays (one part per h5 split value)."""
    src = Path(src)
    h5_path, dicts_path, image_data_path = src / H5_NAME, src / DICTS_NAME, src / IMAGE_DATA_NAME
    dicts = read_json(dicts_path)
    require_keys(dicts, ("idx_to_label", "idx_to_predicate"), dicts_path)
    objects = indexed_names(dicts, "idx_to_label", dicts_path)
    predicates = indexed_names(dicts, "idx_to_predicate", dicts_path)
    image_data = read_json(image_data_path)
    if not isinstance(image_data, list):
        raise InputError(image_data_path, "expected a JSON list of images")

    arrays = _read_h5(h5_path)
    labels = _column(arrays, "labels", h5_path, None)
    boxes_scaled = _column(arrays, f"boxes_{BOX_SCALE}", h5_path, 4).astype(np.float64)
    predicate_column = _column(arrays, "predicates", h5_path, None)
    relationships = _column(arrays, "relationships", h5_path, 2).astype(np.int64)
    first_box = _column(arrays, "img_to_first_box", h5_path, None).astype(np.int64)
    last_box = _column(arrays, "img_to_last_box", h5_path, None).astype(np.int64)
    first_rel = _column(arrays, "img_to_first_rel", h5_path, None).astype(np.int64)
    last_rel = _column(arrays, "img_to_last_rel", h5_path, None).astype(np.int64)
    split = _column(arrays, "split", h5_path, None).astype(np.int64)
    n_images = len(split)
    for name, array in (
        ("img_to_first_box", first_box),
        ("img_to_last_box", last_box),
        ("img_to_first_rel", first_rel),
        ("img_to_last_rel", last_rel),
    ):
        if len(array) != n_images:
            raise InputError(h5_path, f"dataset {name} has {len(array)} rows but split has {n_images}")
    if len(labels) != len(boxes_scaled):
        raise InputError(h5_path, f"labels has {len(labels)} rows but boxes_{BOX_SCALE} has {len(boxes_scaled)}")
    if len(predicate_column) != len(relationships):
        raise InputError(h5_path, f"predicates has {len(predicate_column)} rows but relationships has {len(relationships)}")

    notes: dict = {}
    if len(image_data) != n_images:
        # the real release: drop the known corrupt images that have no h5 row
        kept = [
            entry
            for entry in image_data
            if not (isinstance(entry, dict) and entry.get("image_id") in KNOWN_CORRUPT_IMAGE_IDS)
        ]
        if len(kept) != n_images:
            raise InputError(
                image_data_path, f"lists {len(image_data)} images but {H5_NAME} has {n_images} rows"
            )
        notes["image_data_entries_without_h5_row"] = sorted(
            entry["image_id"] for entry in image_data if isinstance(entry, dict) and entry.get("image_id") in KNOWN_CORRUPT_IMAGE_IDS
        )
        image_data = kept

    problems: dict[int, ImageProblem] = {}
    image_ids = np.empty(n_images, dtype=object)
    widths = np.full(n_images, np.nan)
    heights = np.full(n_images, np.nan)
    for row, entry in enumerate(image_data):
        if not isinstance(entry, dict) or any(key not in entry for key in ("image_id", "width", "height")):
            problems[row] = ImageProblem(row, IMAGE_DATA_NAME, "entry lacks image_id, width or height")
            image_ids[row] = f"row{row}"
            continue
        image_ids[row] = str(entry["image_id"])
        try:
            widths[row] = float(entry["width"])
            heights[row] = float(entry["height"])
        except (TypeError, ValueError):
            problems[row] = ImageProblem(row, IMAGE_DATA_NAME, "width/height are not numbers")
    image_paths = np.array([f"{IMAGE_DIR}/{image_id}.jpg" for image_id in image_ids], dtype=object)

    # structural problems: ranges that cannot be read; such images get no boxes/relations
    bad_box_range = _range_problems(first_box, last_box, len(labels))
    bad_rel_range = _range_problems(first_rel, last_rel, len(relationships))
    for row in np.flatnonzero(bad_box_range).tolist():
        problems.setdefault(
            row,
            ImageProblem(
                row,
                "img_to_first_box/img_to_last_box",
                f"box range [{first_box[row]}, {last_box[row]}] is invalid for {len(labels)} boxes",
            ),
        )
    for row in np.flatnonzero(bad_rel_range).tolist():
        problems.setdefault(
            row,
            ImageProblem(
                row,
                "img_to_first_rel/img_to_last_rel",
                f"relation range [{first_rel[row]}, {last_rel[row]}] is invalid for {len(relationships)} relations",
            ),
        )
    for row in np.flatnonzero((split != TRAIN_SPLIT) & (split != TEST_SPLIT)).tolist():
        problems.setdefault(row, ImageProblem(row, "split", f"split value {split[row]} is neither 0 (train) nor 2 (test)"))
    unreadable = bad_box_range | bad_rel_range
    box_first = np.where(unreadable, -1, first_box)
    rel_first = np.where(unreadable, -1, first_rel)
    box_take, box_offsets = ranges_to_flat_index(box_first, last_box)
    rel_take, relation_offsets = ranges_to_flat_index(rel_first, last_rel)

    # cx,cy,w,h at the 1024 scale -> pixels (box / 1024 * max(w, h)) -> x1,y1,x2,y2
    box_image = np.repeat(np.arange(n_images), np.diff(box_offsets))
    longer_side = np.maximum(widths, heights)[box_image]
    scaled = boxes_scaled[box_take] / BOX_SCALE * longer_side[:, None]
    centre, size = scaled[:, :2], scaled[:, 2:]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)

    relation_image = np.repeat(np.arange(n_images), np.diff(relation_offsets))
    pairs = relationships[rel_take] - first_box[relation_image][:, None]
    # an image whose relations exist but boxes do not: make every index invalid
    pairs[first_box[relation_image] < 0] = -1
    flat = FlatScenes(
        image_ids=image_ids,
        image_paths=image_paths,
        widths=widths,
        heights=heights,
        box_offsets=box_offsets,
        boxes=boxes,
        label_ids=labels[box_take].astype(np.int64) - 1,
        relation_offsets=relation_offsets,
        relation_subj=pairs[:, 0].copy(),
        relation_obj=pairs[:, 1].copy(),
        predicate_ids=predicate_column[rel_take].astype(np.int64) - 1,
        source_rows=np.arange(n_images, dtype=np.int64),
    )

    parts = []
    for name, value in (("train", TRAIN_SPLIT), ("test", TEST_SPLIT), ("other split value", None)):
        mask = (split == value) if value is not None else (split != TRAIN_SPLIT) & (split != TEST_SPLIT)
        rows = np.flatnonzero(mask)
        part_flat = flat.subset(rows) if len(rows) else empty_flat()
        position = {int(row): index for index, row in enumerate(rows.tolist())}
        part_problems = {
            position[row]: ImageProblem(position[row], problem.field, problem.reason)
            for row, problem in problems.items()
            if row in position
        }
        if name != "other split value" or len(rows):
            parts.append(RawPart(name=name, file=str(h5_path), flat=part_flat, problems=part_problems))

    def assign(kept: dict[str, FlatScenes], val_size: int) -> dict[str, FlatScenes]:
        train = kept["train"]
        val_rows, train_rows = first_val(train, val_size)
        return {"train": train.subset(train_rows), "val": train.subset(val_rows), "test": kept["test"]}

    return RawDataset(
        format="vg150",
        objects=objects,
        predicates=predicates,
        parts=parts,
        image_root=str(src),
        vocab_file=str(dicts_path),
        assign_splits=assign,
        conventions={
            "train": "h5 split 0 minus val",
            "val": "the first val_size images of h5 split 0 that have boxes and relations",
            "test": "h5 split 2",
            "dropped": "images without boxes or without relations",
            "boxes": f"boxes_{BOX_SCALE} (cx,cy,w,h) / {BOX_SCALE} * max(width, height) -> x1,y1,x2,y2",
        },
        notes=notes,
        field_names={
            "boxes": f"boxes_{BOX_SCALE}",
            "labels": "labels",
            "relationships": "relationships",
            "predicates": "predicates",
        },
    )
