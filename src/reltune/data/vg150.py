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

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from reltune.data.flat import FlatScenes, ImageProblem, empty_flat, ranges_to_flat_index
from reltune.data.raw import RawDataset, RawPart, first_val, require_keys
from reltune.data.values import image_id_text, integer_column, integer_problem
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
    expected = [str(index) for index in range(1, len(mapping) + 1)]
    if sorted(mapping, key=lambda index: (len(index), index)) != expected:  # exactly "1".."N" ("01", " 1" are not)
        raise InputError(file, f"{key} keys must be \"1\"..\"{len(mapping)}\" (1-based, contiguous)")
    names = [mapping[index] for index in expected]
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise InputError(file, f"{key} has an empty or non-string name")
    return names


@dataclass(frozen=True)
class H5Columns:
    """The h5 datasets checked for shape and type: ids and ranges are int64, boxes float64."""

    labels: np.ndarray  # (N_obj,) 1-based
    boxes_scaled: np.ndarray  # (N_obj, 4) cx, cy, w, h at BOX_SCALE
    predicates: np.ndarray  # (N_rel,) 1-based
    relationships: np.ndarray  # (N_rel, 2) global box indices
    first_box: np.ndarray
    last_box: np.ndarray
    first_rel: np.ndarray
    last_rel: np.ndarray
    split: np.ndarray


@dataclass
class ImageEntries:
    """image_data.json aligned with the h5 rows: ids, sizes, and the rows that are unusable."""

    image_ids: np.ndarray  # object array of str
    widths: np.ndarray
    heights: np.ndarray
    problems: dict[int, ImageProblem]
    notes: dict


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in H5_DATASETS if name not in h5]
            if missing:
                raise InputError(path, f"missing dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            not_datasets = [name for name in H5_DATASETS if not isinstance(h5[name], h5py.Dataset)]
            if not_datasets:
                raise InputError(path, f"{', '.join(not_datasets)} must be datasets, not groups")
            arrays = {name: np.asarray(h5[name][()]) for name in H5_DATASETS}
    except InputError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as error:
        raise InputError(path, f"not a readable HDF5 file ({type(error).__name__}: {error})") from None
    return arrays


def _column(arrays: dict[str, np.ndarray], name: str, path: Path, width: int | None, integer: bool = True) -> np.ndarray:
    """One h5 dataset of shape (N,) or (N,1) when width is None, else (N, width); integers unless told."""
    array = arrays[name]
    if width is None:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InputError(path, f"dataset {name} has shape {array.shape}, expected (N,) or (N, 1)")
    elif array.ndim != 2 or array.shape[1] != width:
        raise InputError(path, f"dataset {name} has shape {array.shape}, expected (N, {width})")
    if integer:
        return integer_column(array, path, name)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(path, f"dataset {name} is not numeric (dtype {array.dtype})")
    return array.astype(np.float64)


def read_h5_columns(path: Path) -> H5Columns:
    """Read the h5 and check every dataset's shape, type and row count against the others."""
    arrays = _read_h5(path)
    columns = H5Columns(
        labels=_column(arrays, "labels", path, None),
        boxes_scaled=_column(arrays, f"boxes_{BOX_SCALE}", path, 4, integer=False),
        predicates=_column(arrays, "predicates", path, None),
        relationships=_column(arrays, "relationships", path, 2),
        first_box=_column(arrays, "img_to_first_box", path, None),
        last_box=_column(arrays, "img_to_last_box", path, None),
        first_rel=_column(arrays, "img_to_first_rel", path, None),
        last_rel=_column(arrays, "img_to_last_rel", path, None),
        split=_column(arrays, "split", path, None),
    )
    n_images = len(columns.split)
    for name in ("first_box", "last_box", "first_rel", "last_rel"):
        if len(getattr(columns, name)) != n_images:
            length = len(getattr(columns, name))
            raise InputError(path, f"dataset img_to_{name} has {length} rows but split has {n_images}")
    if len(columns.labels) != len(columns.boxes_scaled):
        raise InputError(path, f"labels has {len(columns.labels)} rows but boxes_{BOX_SCALE} has {len(columns.boxes_scaled)}")
    if len(columns.predicates) != len(columns.relationships):
        raise InputError(
            path, f"predicates has {len(columns.predicates)} rows but relationships has {len(columns.relationships)}"
        )
    return columns


def _range_problems(first: np.ndarray, last: np.ndarray, total: int) -> np.ndarray:
    """Mask of images whose inclusive range is neither (-1, -1) nor inside [0, total)."""
    none = (first == -1) & (last == -1)
    valid = (first >= 0) & (last >= first) & (last < total)
    return ~(none | valid)


def read_vocabulary(dicts_path: Path) -> tuple[list[str], list[str]]:
    """Object and predicate names from VG-SGG-dicts-with-attri.json."""
    dicts = read_json(dicts_path)
    require_keys(dicts, ("idx_to_label", "idx_to_predicate"), dicts_path)
    return indexed_names(dicts, "idx_to_label", dicts_path), indexed_names(dicts, "idx_to_predicate", dicts_path)


def _align_image_data(image_data: list, n_images: int, path: Path) -> tuple[list, dict]:
    """image_data.json entries, one per h5 row; the real release's known corrupt images are dropped."""
    if len(image_data) == n_images:
        return image_data, {}

    def known_corrupt(entry: object) -> bool:
        return isinstance(entry, dict) and type(entry.get("image_id")) is int and entry["image_id"] in KNOWN_CORRUPT_IMAGE_IDS

    kept = [entry for entry in image_data if not known_corrupt(entry)]
    if len(kept) != n_images:
        raise InputError(path, f"lists {len(image_data)} images but {H5_NAME} has {n_images} rows")
    dropped = sorted(entry["image_id"] for entry in image_data if known_corrupt(entry))
    return kept, {"image_data_entries_without_h5_row": dropped}


def _entry_problem(entry: object) -> tuple[str, str, str | None]:
    """(image id text, field, reason or None) of one image_data.json entry."""
    if not isinstance(entry, dict) or any(key not in entry for key in ("image_id", "width", "height")):
        return "", IMAGE_DATA_NAME, "entry lacks image_id, width or height"
    image_id, id_problem = image_id_text(entry["image_id"], "image_id")
    if id_problem:
        return image_id, "image_id", id_problem
    size_problem = integer_problem(entry["width"]) or integer_problem(entry["height"])
    if size_problem:
        return image_id, "width/height", f"width/height {size_problem}"
    return image_id, "", None


def read_image_entries(path: Path, n_images: int) -> ImageEntries:
    """Ids and sizes of image_data.json, checked per entry (a bad entry is one bad image)."""
    image_data = read_json(path)
    if not isinstance(image_data, list):
        raise InputError(path, "expected a JSON list of images")
    image_data, notes = _align_image_data(image_data, n_images, path)
    entries = ImageEntries(
        image_ids=np.empty(n_images, dtype=object),
        widths=np.full(n_images, np.nan),
        heights=np.full(n_images, np.nan),
        problems={},
        notes=notes,
    )
    for row, entry in enumerate(image_data):
        image_id, field, problem = _entry_problem(entry)
        entries.image_ids[row] = image_id or f"row{row}"
        if problem:
            entries.problems[row] = ImageProblem(row, field, problem, file=str(path))
            continue
        entries.widths[row], entries.heights[row] = float(entry["width"]), float(entry["height"])
    return entries


def _structure_problems(columns: H5Columns, problems: dict[int, ImageProblem]) -> np.ndarray:
    """Add images whose box / relation ranges or split value are invalid; return the unreadable mask."""
    n_boxes, n_relations = len(columns.labels), len(columns.relationships)
    bad_box_range = _range_problems(columns.first_box, columns.last_box, n_boxes)
    bad_rel_range = _range_problems(columns.first_rel, columns.last_rel, n_relations)
    for row in np.flatnonzero(bad_box_range).tolist():
        reason = f"box range [{columns.first_box[row]}, {columns.last_box[row]}] is invalid for {n_boxes} boxes"
        problems.setdefault(row, ImageProblem(row, "img_to_first_box/img_to_last_box", reason))
    for row in np.flatnonzero(bad_rel_range).tolist():
        reason = (
            f"relation range [{columns.first_rel[row]}, {columns.last_rel[row]}] is invalid for {n_relations} relations"
        )
        problems.setdefault(row, ImageProblem(row, "img_to_first_rel/img_to_last_rel", reason))
    split = columns.split
    for row in np.flatnonzero((split != TRAIN_SPLIT) & (split != TEST_SPLIT)).tolist():
        problems.setdefault(row, ImageProblem(row, "split", f"split value {split[row]} is neither 0 (train) nor 2 (test)"))
    return bad_box_range | bad_rel_range


def assemble_flat(columns: H5Columns, entries: ImageEntries, unreadable: np.ndarray) -> FlatScenes:
    """Gather each image's boxes (in pixels) and relations (local box indices); unreadable images get none."""
    n_images = len(columns.split)
    box_take, box_offsets = ranges_to_flat_index(np.where(unreadable, -1, columns.first_box), columns.last_box)
    rel_take, relation_offsets = ranges_to_flat_index(np.where(unreadable, -1, columns.first_rel), columns.last_rel)

    # cx,cy,w,h at the 1024 scale -> pixels (box / 1024 * max(w, h)) -> x1,y1,x2,y2
    box_image = np.repeat(np.arange(n_images), np.diff(box_offsets))
    longer_side = np.maximum(entries.widths, entries.heights)[box_image]
    scaled = columns.boxes_scaled[box_take] / BOX_SCALE * longer_side[:, None]
    centre, size = scaled[:, :2], scaled[:, 2:]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)

    relation_image = np.repeat(np.arange(n_images), np.diff(relation_offsets))
    pairs = columns.relationships[rel_take] - columns.first_box[relation_image][:, None]
    # an image whose relations exist but boxes do not: make every index invalid
    pairs[columns.first_box[relation_image] < 0] = -1
    return FlatScenes(
        image_ids=entries.image_ids,
        image_paths=np.array([f"{IMAGE_DIR}/{image_id}.jpg" for image_id in entries.image_ids], dtype=object),
        widths=entries.widths,
        heights=entries.heights,
        box_offsets=box_offsets,
        boxes=boxes,
        label_ids=columns.labels[box_take] - 1,
        relation_offsets=relation_offsets,
        relation_subj=pairs[:, 0].copy(),
        relation_obj=pairs[:, 1].copy(),
        predicate_ids=columns.predicates[rel_take] - 1,
        source_rows=np.arange(n_images, dtype=np.int64),
    )


def split_parts(flat: FlatScenes, split: np.ndarray, problems: dict[int, ImageProblem], h5_path: Path) -> list[RawPart]:
    """One part per h5 split value (train, test, and any other value, whose images are all bad)."""
    parts = []
    for name, value in (("train", TRAIN_SPLIT), ("test", TEST_SPLIT), ("other split value", None)):
        mask = (split == value) if value is not None else (split != TRAIN_SPLIT) & (split != TEST_SPLIT)
        rows = np.flatnonzero(mask)
        part_flat = flat.subset(rows) if len(rows) else empty_flat()
        position = {int(row): index for index, row in enumerate(rows.tolist())}
        part_problems = {
            position[row]: replace(problem, row=position[row]) for row, problem in problems.items() if row in position
        }
        if name != "other split value" or len(rows):
            parts.append(RawPart(name=name, file=str(h5_path), flat=part_flat, problems=part_problems))
    return parts


def _assign_splits(kept: dict[str, FlatScenes], val_size: int) -> dict[str, FlatScenes]:
    train = kept["train"]
    val_rows, train_rows = first_val(train, val_size)
    return {"train": train.subset(train_rows), "val": train.subset(val_rows), "test": kept["test"]}


def read_vg150(src: str | Path) -> RawDataset:
    """Read the three VG150 files into flat arrays (one part per h5 split value)."""
    src = Path(src)
    h5_path, dicts_path, image_data_path = src / H5_NAME, src / DICTS_NAME, src / IMAGE_DATA_NAME
    objects, predicates = read_vocabulary(dicts_path)
    columns = read_h5_columns(h5_path)
    entries = read_image_entries(image_data_path, len(columns.split))
    problems = dict(entries.problems)
    unreadable = _structure_problems(columns, problems)  # such images get no boxes or relations
    flat = assemble_flat(columns, entries, unreadable)
    return RawDataset(
        format="vg150",
        objects=objects,
        predicates=predicates,
        parts=split_parts(flat, columns.split, problems, h5_path),
        image_root=str(src),
        vocab_file=str(dicts_path),
        assign_splits=_assign_splits,
        conventions={
            "train": "h5 split 0 minus val",
            "val": "the first val_size images of h5 split 0 that have boxes and relations",
            "test": "h5 split 2",
            "dropped": "images without boxes or without relations",
            "boxes": f"boxes_{BOX_SCALE} (cx,cy,w,h) / {BOX_SCALE} * max(width, height) -> x1,y1,x2,y2",
        },
        notes=entries.notes,
        field_names={
            "boxes": f"boxes_{BOX_SCALE}",
            "labels": "labels",
            "relationships": "relationships",
            "predicates": "predicates",
        },
    )
