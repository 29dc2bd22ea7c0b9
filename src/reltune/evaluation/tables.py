"""Scene and prediction tables turned into flat, validated frames for evaluation.

Scenes (DESIGN §4) hold one row per image with nested boxes/labels/relations;
evaluation works on one row per ground-truth relation and one row per
prediction, keyed by `image` = the scene row position, so that every later
step is a vectorised merge or groupby.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.text import normalise_predicate

SCENE_COLUMNS = ("image_id", "boxes", "labels", "relations")
PREDICTION_COLUMNS = ("image_id", "subj", "obj", "predicate", "score")
DETECTED_COLUMNS = ("subj_box", "obj_box", "subj_label", "obj_label")
SUBJECT_BOX = ("subj_x1", "subj_y1", "subj_x2", "subj_y2")
OBJECT_BOX = ("obj_x1", "obj_y1", "obj_x2", "obj_y2")


def normalise_values(values: pd.Series | np.ndarray | list) -> np.ndarray:
    """`normalise_predicate` applied once per distinct value (fast on millions of rows)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    normalised = np.array([normalise_predicate(value) for value in uniques], dtype=object)
    return normalised[codes]


def _require_columns(table: pd.DataFrame, columns: tuple[str, ...], file: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")


def _first_bad(mask: np.ndarray) -> tuple[int, str]:
    """Position of the first True and a note on how many more there are."""
    positions = np.flatnonzero(mask)
    extra = len(positions) - 1
    return int(positions[0]), (f" (and {extra} more rows)" if extra else "")


def _length(value: object) -> int:
    return 0 if value is None else len(value)  # type: ignore[arg-type]


def scene_image_index(scenes: pd.DataFrame, file: str) -> pd.Index:
    """Index of image ids (position = scene row); duplicate ids are an error."""
    _require_columns(scenes, SCENE_COLUMNS, file)
    image_ids = pd.Index(scenes["image_id"].astype(str).to_numpy(dtype=object))
    duplicated = image_ids.duplicated()
    if duplicated.any():
        position, extra = _first_bad(duplicated)
        raise InputError(file, f"image_id {image_ids[position]!r} appears more than once{extra}", where=f"row {position}")
    return image_ids


def object_counts(scenes: pd.DataFrame, file: str) -> np.ndarray:
    """Number of objects per image; boxes and labels must agree in length."""
    box_counts = np.fromiter((_length(boxes) for boxes in scenes["boxes"]), dtype=np.int64, count=len(scenes))
    label_counts = np.fromiter((_length(labels) for labels in scenes["labels"]), dtype=np.int64, count=len(scenes))
    mismatch = box_counts != label_counts
    if mismatch.any():
        position, extra = _first_bad(mismatch)
        raise InputError(
            file,
            f"{box_counts[position]} boxes but {label_counts[position]} labels{extra}",
            where=f"image {scenes['image_id'].iloc[position]!r}",
        )
    return box_counts


def flat_labels(scenes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """All object labels in one array, and each image's offset into it."""
    counts = np.fromiter((_length(labels) for labels in scenes["labels"]), dtype=np.int64, count=len(scenes))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    labels = [str(label) for labels in scenes["labels"] if labels is not None for label in labels]
    return np.array(labels, dtype=object), offsets


def flat_boxes(scenes: pd.DataFrame, file: str) -> np.ndarray:
    """All object boxes as one (n_objects, 4) float array, in `flat_labels` order."""
    boxes = [box for image_boxes in scenes["boxes"] if image_boxes is not None for box in image_boxes]
    try:
        array = np.array([np.asarray(box, dtype=np.float64) for box in boxes], dtype=np.float64).reshape(-1, 4)
    except ValueError:
        raise InputError(file, "every box must have 4 numbers (x1, y1, x2, y2)") from None
    return array


def ground_truth_table(scenes: pd.DataFrame, file: str, with_boxes: bool = False) -> pd.DataFrame:
    """One row per GT relation: image, image_id, subj, obj, predicate (normalised), labels [, boxes].

    `image` is the scene row position. Relation indices must address the
    image's boxes; an out-of-range index is an error naming the image.
    """
    image_ids = scene_image_index(scenes, file)
    counts = object_counts(scenes, file)
    relations = scenes["relations"]
    relation_counts = np.fromiter((_length(rels) for rels in relations), dtype=np.int64, count=len(scenes))
    flat = [relation for rels in relations if rels is not None for relation in rels]
    image = np.repeat(np.arange(len(scenes), dtype=np.int64), relation_counts)
    try:
        subj = np.array([relation["subj"] for relation in flat], dtype=np.int64)
        obj = np.array([relation["obj"] for relation in flat], dtype=np.int64)
        raw_predicates = [relation["predicate"] for relation in flat]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(file, f"relations must be structs with integer subj, obj and a predicate ({error})") from None
    out_of_range = (subj < 0) | (subj >= counts[image]) | (obj < 0) | (obj >= counts[image])
    if out_of_range.any():
        position, extra = _first_bad(out_of_range)
        raise InputError(
            file,
            f"relation ({subj[position]}, {obj[position]}) indexes outside the image's "
            f"{counts[image[position]]} boxes{extra}",
            where=f"image {image_ids[image[position]]!r}",
        )
    labels, offsets = flat_labels(scenes)
    table = pd.DataFrame(
        {
            "image": image,
            "image_id": image_ids.to_numpy()[image],
            "subj": subj,
            "obj": obj,
            "predicate": normalise_values(raw_predicates),
            "subj_label": labels[offsets[image] + subj] if len(flat) else np.array([], dtype=object),
            "obj_label": labels[offsets[image] + obj] if len(flat) else np.array([], dtype=object),
        }
    )
    empty = table["predicate"] == ""
    if empty.any():
        position, extra = _first_bad(empty.to_numpy())
        raise InputError(file, f"empty GT predicate{extra}", where=f"image {table['image_id'].iloc[position]!r}")
    if with_boxes:
        boxes = flat_boxes(scenes, file)
        for name, column in zip(SUBJECT_BOX, boxes[offsets[image] + subj].T if len(flat) else [[]] * 4):
            table[name] = column
        for name, column in zip(OBJECT_BOX, boxes[offsets[image] + obj].T if len(flat) else [[]] * 4):
            table[name] = column
    return table


def is_detected_mode(predictions: pd.DataFrame, file: str) -> bool:
    """Detected-box mode (paper Tab. 5) when predictions carry their own boxes and labels."""
    present = [column for column in DETECTED_COLUMNS if column in predictions.columns]
    if present and len(present) != len(DETECTED_COLUMNS):
        missing = [column for column in DETECTED_COLUMNS if column not in present]
        raise InputError(file, f"detected-box predictions need all of {list(DETECTED_COLUMNS)}; missing {missing}")
    return bool(present)


def _box_array(values: pd.Series, column: str, file: str, image_ids: pd.Series) -> np.ndarray:
    lengths = np.fromiter(
        (len(value) if isinstance(value, (list, tuple, np.ndarray)) else -1 for value in values),
        dtype=np.int64,
        count=len(values),
    )
    bad = lengths != 4
    if bad.any():
        position, extra = _first_bad(bad)
        raise InputError(
            file, f"{column} must be 4 numbers (x1, y1, x2, y2){extra}", where=f"row {position}, image {image_ids.iloc[position]!r}"
        )
    array = np.array([np.asarray(value, dtype=np.float64) for value in values], dtype=np.float64).reshape(-1, 4)
    not_finite = ~np.isfinite(array).all(axis=1)
    if not_finite.any():
        position, extra = _first_bad(not_finite)
        raise InputError(file, f"{column} has a missing or infinite coordinate{extra}", where=f"row {position}, image {image_ids.iloc[position]!r}")
    return array


def _integer_column(values: pd.Series, column: str, file: str, image_ids: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        position, extra = _first_bad(bad)
        raise InputError(
            file, f"{column} must be an integer index, got {values.iloc[position]!r}{extra}", where=f"row {position}, image {image_ids.iloc[position]!r}"
        )
    return numbers.astype(np.int64)


def prediction_table(
    predictions: pd.DataFrame,
    image_index: pd.Index,
    boxes_per_image: np.ndarray,
    file: str,
    scenes_file: str,
) -> pd.DataFrame:
    """Validated predictions: image (scene row), row (file position), subj, obj, predicate (normalised), score.

    In detected-box mode also subj_label/obj_label (normalised) and the eight
    box coordinates; subj/obj are then indices into the detector's boxes and
    are not checked against the scene.
    """
    detected = is_detected_mode(predictions, file)
    _require_columns(predictions, PREDICTION_COLUMNS, file)
    image_ids = predictions["image_id"].astype(str)
    image = image_index.get_indexer(image_ids.to_numpy(dtype=object))
    unknown = image < 0
    if unknown.any():
        position, extra = _first_bad(unknown)
        raise InputError(
            file, f"image_id {image_ids.iloc[position]!r} is not in the scenes {scenes_file}{extra}", where=f"row {position}"
        )
    score = pd.to_numeric(predictions["score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing_score = np.isnan(score)
    if missing_score.any():
        position, extra = _first_bad(missing_score)
        raise InputError(
            file,
            f"score is NaN or not a number ({predictions['score'].iloc[position]!r}){extra}",
            where=f"row {position}, image {image_ids.iloc[position]!r}",
        )
    subj = _integer_column(predictions["subj"], "subj", file, image_ids)
    obj = _integer_column(predictions["obj"], "obj", file, image_ids)
    if not detected:
        counts = boxes_per_image[image]
        out_of_range = (subj < 0) | (subj >= counts) | (obj < 0) | (obj >= counts)
        if out_of_range.any():
            position, extra = _first_bad(out_of_range)
            raise InputError(
                file,
                f"subj/obj ({subj[position]}, {obj[position]}) out of range: the image has {counts[position]} boxes{extra}",
                where=f"row {position}, image {image_ids.iloc[position]!r}",
            )
    raw_predicates = predictions["predicate"]
    predicate = normalise_values(raw_predicates.to_numpy(dtype=object))
    empty = raw_predicates.isna().to_numpy() | (predicate == "")
    if empty.any():
        position, extra = _first_bad(empty)
        raise InputError(file, f"predicate is missing or empty{extra}", where=f"row {position}, image {image_ids.iloc[position]!r}")
    table = pd.DataFrame(
        {
            "image": image.astype(np.int64),
            "row": np.arange(len(predictions), dtype=np.int64),
            "subj": subj,
            "obj": obj,
            "predicate": predicate,
            "score": score,
        }
    )
    if detected:
        for column in ("subj_label", "obj_label"):
            missing = predictions[column].isna().to_numpy()
            if missing.any():
                position, extra = _first_bad(missing)
                raise InputError(file, f"{column} is missing{extra}", where=f"row {position}, image {image_ids.iloc[position]!r}")
            table[column] = normalise_values(predictions[column].to_numpy(dtype=object))
        for column, names in (("subj_box", SUBJECT_BOX), ("obj_box", OBJECT_BOX)):
            array = _box_array(predictions[column], column, file, image_ids)
            for index, name in enumerate(names):
                table[name] = array[:, index]
    return table


def rank_predictions(predictions: pd.DataFrame, top_k: int, detected: bool, graph_constraint: bool = False) -> pd.DataFrame:
    """DESIGN §7 ranking: per image, by score descending (ties in file order),
    drop repeats of the same (subj, obj, predicate), keep the first `top_k`.

    With `graph_constraint` each (subj, obj) pair first keeps only its
    best-scored prediction (ties: first in file order), as Scene-Graph-Benchmark's
    PredCls. Adds `rank` (0-based). In detected-box mode a pair is the labelled
    subject and object boxes, and a repeat is the same predicate on them.
    """
    order = np.lexsort((predictions["row"].to_numpy(), -predictions["score"].to_numpy(), predictions["image"].to_numpy()))
    ranked = predictions.iloc[order]
    pair = ["image", "subj_label", "obj_label", *SUBJECT_BOX, *OBJECT_BOX] if detected else ["image", "subj", "obj"]
    # after the sort, the first row of a pair is its best-scored one (earliest in the file on ties)
    key = pair if graph_constraint else [*pair, "predicate"]
    ranked = ranked[~ranked.duplicated(subset=key, keep="first")]
    ranked = ranked.assign(rank=ranked.groupby("image", sort=False).cumcount().to_numpy())
    return ranked[ranked["rank"] < top_k].reset_index(drop=True)
