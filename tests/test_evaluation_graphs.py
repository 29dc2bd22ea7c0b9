"""`reltune export-graphs`: per-image scene graphs as JSON."""

from __future__ import annotations

import json

import pandas as pd

from evaluation_helpers import run_cli
from reltune.evaluation.graphs import scene_graphs
from reltune.io import write_parquet


def scenes_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["img/1", "img/2"],
            "image_path": ["1.jpg", "2.jpg"],
            "width": [640, 320],
            "height": [480, 240],
            "boxes": [[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0], [1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]]],
            "labels": [["boat", "water", "flag"], ["cup", "table"]],
            "relations": [[{"subj": 0, "obj": 1, "predicate": "in"}], []],
        }
    )


PREDICTIONS = pd.DataFrame(
    {
        "image_id": ["img/1"] * 4,
        "subj": [0, 0, 2, 0],
        "obj": [1, 1, 0, 1],
        "predicate": ["in", "floating_on", "on back of", "In"],
        "score": [0.5, 0.9, 0.2, 0.4],
    }
)


def test_graphs_rank_dedupe_and_cut_at_top_k():
    graphs = scene_graphs(scenes_table(), PREDICTIONS, top_k=2)
    first, second = graphs
    assert first["objects"][1] == {"index": 1, "label": "water", "box": [5.0, 5.0, 20.0, 20.0]}
    assert [(r["rank"], r["subject"], r["predicate"], r["object"], r["score"]) for r in first["relations"]] == [
        (1, "boat", "floating on", "water", 0.9),
        (2, "boat", "in", "water", 0.5),  # the repeated "In" (0.4) is dropped; "on back of" is third
    ]
    assert first["ground_truth"] == [{"subj": 0, "obj": 1, "predicate": "in"}]
    assert (second["image_id"], second["width"], second["relations"], second["ground_truth"]) == ("img/2", 320, [], [])


def test_graphs_for_detected_boxes_index_the_detections():
    detected = PREDICTIONS.iloc[:2].assign(
        subj_box=[[0.0, 0.0, 9.0, 9.0]] * 2, obj_box=[[5.0, 5.0, 20.0, 20.0], [6.0, 6.0, 20.0, 20.0]], subj_label="boat", obj_label="water"
    )
    first = scene_graphs(scenes_table(), detected, top_k=5)[0]
    assert first["objects"] == [
        {"index": 0, "label": "boat", "box": [0.0, 0.0, 9.0, 9.0]},
        {"index": 1, "label": "water", "box": [6.0, 6.0, 20.0, 20.0]},
        {"index": 2, "label": "water", "box": [5.0, 5.0, 20.0, 20.0]},
    ]
    assert [(r["subj"], r["obj"], r["predicate"]) for r in first["relations"]] == [(0, 1, "floating on"), (0, 2, "in")]
    assert len(first["ground_truth_objects"]) == 3


def test_cli_export_graphs_jsonl_and_directory(tmp_path):
    write_parquet(scenes_table(), tmp_path / "scenes.parquet")
    write_parquet(PREDICTIONS, tmp_path / "pred.parquet")
    common = ["export-graphs", "--scenes", str(tmp_path / "scenes.parquet"), "--predictions", str(tmp_path / "pred.parquet")]
    assert run_cli([*common, "--out", str(tmp_path / "graphs.jsonl"), "--top-k", "1"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "graphs.jsonl").read_text().splitlines()]
    assert [line["image_id"] for line in lines] == ["img/1", "img/2"]
    assert [r["predicate"] for r in lines[0]["relations"]] == ["floating on"]

    assert run_cli([*common, "--out", str(tmp_path / "graphs")]) == 0
    index = json.loads((tmp_path / "graphs" / "index.json").read_text())
    assert index == {"img/1": "img_1.json", "img/2": "img_2.json"}
    graph = json.loads((tmp_path / "graphs" / "img_1.json").read_text())
    assert len(graph["relations"]) == 3
