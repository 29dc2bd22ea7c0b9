"""Per-image scene graphs (objects + scored relations) as JSON for downstream
reasoning, e.g. scene-graph-based segmentation (paper §4 Q5, Fig. 8).

Relations are the image's predictions ranked exactly as in evaluation
(score descending, ties in file order, repeats dropped) and cut at top-K.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reltune.evaluation.tables import (
    OBJECT_BOX,
    SUBJECT_BOX,
    flat_boxes,
    ground_truth_table,
    is_detected_mode,
    object_counts,
    prediction_table,
    rank_predictions,
    scene_image_index,
)
from reltune.errors import InputError
from reltune.io import atomic_path, write_json
from reltune.progress import track

DEFAULT_GRAPH_TOP_K = 50
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _rounded_box(values: np.ndarray) -> list[float]:
    return [round(float(value), 2) for value in values]


def scene_graphs(
    scenes: pd.DataFrame,
    predictions: pd.DataFrame,
    top_k: int = DEFAULT_GRAPH_TOP_K,
    scenes_file: str = "scenes",
    predictions_file: str = "predictions",
) -> list[dict[str, Any]]:
    """One graph per scene image, in scene order.

    Each graph: image_id, image_path, width, height, `objects` (index, label,
    box), `relations` (rank, subj, obj, subject, predicate, object, score;
    subj/obj index `objects`), `ground_truth` (subj, obj, predicate). With
    detected-box predictions the objects are the distinct detected
    (label, box) pairs and the annotated objects go to `ground_truth_objects`.
    """
    if top_k <= 0:
        raise InputError(predictions_file, f"top-k must be positive, got {top_k}")
    image_index = scene_image_index(scenes, scenes_file)
    boxes_per_image = object_counts(scenes, scenes_file)
    detected = is_detected_mode(predictions, predictions_file)
    table = prediction_table(predictions, image_index, boxes_per_image, predictions_file, scenes_file)
    kept = rank_predictions(table, top_k, detected)
    ground_truth = ground_truth_table(scenes, scenes_file)
    boxes = flat_boxes(scenes, scenes_file)
    offsets = np.concatenate([[0], np.cumsum(boxes_per_image)[:-1]]).astype(np.int64)
    relations_by_image = dict(tuple(kept.groupby("image", sort=False)))
    truth_by_image = dict(tuple(ground_truth.groupby("image", sort=False)))

    graphs = []
    for position in track(range(len(scenes)), "scene graphs"):
        row = scenes.iloc[position]
        labels = [str(label) for label in (row["labels"] if row["labels"] is not None else [])]
        annotated = [
            {"index": index, "label": label, "box": _rounded_box(boxes[offsets[position] + index])} for index, label in enumerate(labels)
        ]
        graph: dict[str, Any] = {
            "image_id": image_index[position],
            "image_path": str(row["image_path"]) if "image_path" in scenes.columns else None,
            "width": int(row["width"]) if "width" in scenes.columns else None,
            "height": int(row["height"]) if "height" in scenes.columns else None,
        }
        image_relations = relations_by_image.get(position)
        if detected:
            graph["objects"], graph["relations"] = _detected_graph(image_relations)
            graph["ground_truth_objects"] = annotated
        else:
            graph["objects"] = annotated
            graph["relations"] = _annotated_relations(image_relations, labels)
        truth = truth_by_image.get(position)
        graph["ground_truth"] = (
            []
            if truth is None
            else [
                {"subj": int(s), "obj": int(o), "predicate": str(p)}
                for s, o, p in zip(truth["subj"], truth["obj"], truth["predicate"])
            ]
        )
        graphs.append(graph)
    return graphs


def _annotated_relations(relations: pd.DataFrame | None, labels: list[str]) -> list[dict[str, Any]]:
    if relations is None:
        return []
    return [
        {"rank": int(rank) + 1, "subj": int(s), "obj": int(o), "subject": labels[s], "predicate": str(p), "object": labels[o], "score": float(score)}
        for rank, s, o, p, score in zip(relations["rank"], relations["subj"], relations["obj"], relations["predicate"], relations["score"])
    ]


def _detected_graph(relations: pd.DataFrame | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Objects = distinct detected (label, box) in rank order; relations index them."""
    if relations is None:
        return [], []
    objects: list[dict[str, Any]] = []
    index_of: dict[tuple, int] = {}

    def object_index(label: str, box: np.ndarray) -> int:
        key = (label, *box.tolist())
        if key not in index_of:
            index_of[key] = len(objects)
            objects.append({"index": len(objects), "label": label, "box": _rounded_box(box)})
        return index_of[key]

    subject_boxes = relations[list(SUBJECT_BOX)].to_numpy()
    object_boxes = relations[list(OBJECT_BOX)].to_numpy()
    graph_relations = []
    for position, (rank, subject, predicate, obj_label, score) in enumerate(
        zip(relations["rank"], relations["subj_label"], relations["predicate"], relations["obj_label"], relations["score"])
    ):
        graph_relations.append(
            {
                "rank": int(rank) + 1,
                "subj": object_index(str(subject), subject_boxes[position]),
                "obj": object_index(str(obj_label), object_boxes[position]),
                "subject": str(subject),
                "predicate": str(predicate),
                "object": str(obj_label),
                "score": float(score),
            }
        )
    return objects, graph_relations


def write_scene_graphs(graphs: list[dict[str, Any]], out: str | os.PathLike) -> None:
    """`*.jsonl` -> one graph per line in one file; otherwise a directory with
    `<image_id>.json` per image (unsafe characters -> `_`) and `index.json`."""
    out = Path(out)
    if out.suffix == ".jsonl":
        with atomic_path(out) as temporary:
            with temporary.open("w") as handle:
                for graph in graphs:
                    handle.write(json.dumps(graph, ensure_ascii=False) + "\n")
        return
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory (use a .jsonl name for a single file)")
    names: dict[str, str] = {}
    used: set[str] = {"index.json"}
    for graph in graphs:
        name = _UNSAFE_FILENAME.sub("_", str(graph["image_id"])) + ".json"
        if name in used:
            raise InputError(out, f"image ids collide on file name {name!r}; write a .jsonl file instead", where=f"image {graph['image_id']!r}")
        used.add(name)
        names[str(graph["image_id"])] = name
    for graph in track(graphs, "writing graphs"):
        write_json(graph, out / names[str(graph["image_id"])])
    write_json(names, out / "index.json")
