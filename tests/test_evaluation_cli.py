"""`reltune evaluate` end to end (real MiniLM) and its one-line input errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reltune.errors import InputError
from evaluation_helpers import run_cli
from reltune.evaluation.metrics import evaluate_predictions
from reltune.io import write_json, write_parquet


def scenes_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["1", "2"],
            "image_path": ["1.jpg", "2.jpg"],
            "width": [100, 100],
            "height": [100, 100],
            "boxes": [[[0.0, 0.0, 5.0, 5.0], [5.0, 5.0, 9.0, 9.0]], [[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 4.0, 4.0]]],
            "labels": [["man", "hat"], ["man", "horse"]],
            "relations": [
                [{"subj": 0, "obj": 1, "predicate": "wearing"}],
                [{"subj": 0, "obj": 1, "predicate": "under"}],
            ],
        }
    )


def write_inputs(tmp_path, predictions: pd.DataFrame) -> dict[str, str]:
    paths = {name: str(tmp_path / name) for name in ("scenes.parquet", "pred.parquet", "vocab.json")}
    write_parquet(scenes_table(), paths["scenes.parquet"])
    write_parquet(predictions, paths["pred.parquet"])
    write_json({"objects": ["man"], "predicates": ["wearing", "under", "on"]}, paths["vocab.json"])
    return paths


def test_cli_evaluate_with_real_minilm(tmp_path):
    # MiniLM: "man wears hat" vs "man wearing hat" ~0.99 (>= 0.95); "man on horse" vs "man under horse" ~0.85
    predictions = pd.DataFrame(
        {"image_id": [1, 2], "subj": [0, 0], "obj": [1, 1], "predicate": ["wears", "on"], "score": [0.9, 0.8]}
    )
    paths = write_inputs(tmp_path, predictions)
    out, per_predicate = tmp_path / "m" / "metrics.json", tmp_path / "m" / "per_predicate.csv"
    argv = ["evaluate", "--scenes", paths["scenes.parquet"], "--predictions", paths["pred.parquet"]]
    argv += ["--train-vocab", paths["vocab.json"], "--out", str(out), "--per-predicate", str(per_predicate), "--ks", "1,5"]
    assert run_cli(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["R@1"] == 0.0 and metrics["mR@5"] == 0.0
    assert metrics["gR@1"] == 50.0 and metrics["mgR@5"] == 50.0
    assert (metrics["unique_predicates"], metrics["unseen_predicates"], metrics["images"], metrics["gt_relations"]) == (2, 1, 2, 2)
    table = pd.read_csv(per_predicate)
    assert table.set_index("predicate")["gR@1"].to_dict() == {"under": 0.0, "wearing": 100.0}


def test_cli_reports_missing_columns_in_one_line(tmp_path):
    paths = write_inputs(tmp_path, pd.DataFrame({"image_id": ["1"], "subj": [0], "obj": [1], "predicate": ["on"]}))
    argv = ["evaluate", "--scenes", paths["scenes.parquet"], "--predictions", paths["pred.parquet"]]
    argv += ["--train-vocab", paths["vocab.json"], "--out", str(tmp_path / "x.json")]
    with pytest.raises(InputError) as error:
        run_cli(argv)
    message = str(error.value)
    assert "\n" not in message and message.startswith(paths["pred.parquet"]) and "missing columns ['score']" in message
    assert not (tmp_path / "x.json").exists()


def evaluate(predictions: dict) -> None:
    evaluate_predictions(
        scenes_table(), pd.DataFrame(predictions), ["on"], similarity=lambda *a: np.zeros(len(a[1])), predictions_file="pred.parquet"
    )


BASE = {"image_id": ["1", "2"], "subj": [0, 0], "obj": [1, 1], "predicate": ["on", "on"], "score": [0.5, 0.4]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image_id": ["1", "9"]}, r"pred\.parquet \[row 1\]: image_id '9' is not in the scenes"),
        ({"obj": [1, 2]}, r"\[row 1, image '2'\]: subj/obj \(0, 2\) out of range: the image has 2 boxes"),
        ({"subj": [-1, 0]}, r"\[row 0, image '1'\]: subj/obj \(-1, 1\) out of range"),
        ({"score": [0.5, float("nan")]}, r"\[row 1, image '2'\]: score is NaN"),
        ({"predicate": ["on", None]}, r"\[row 1, image '2'\]: predicate is missing or empty"),
        ({"subj": [0.5, 0]}, r"\[row 0, image '1'\]: subj must be an integer index"),
        ({"subj_box": [[0, 0, 1, 1]] * 2}, r"detected-box predictions need all of"),
    ],
)
def test_bad_predictions_name_file_row_and_problem(change, expected):
    with pytest.raises(InputError, match=expected) as error:
        evaluate({**BASE, **change})
    assert "\n" not in str(error.value)


def test_bad_scene_relation_index_names_the_image():
    scenes = scenes_table()
    scenes.at[1, "relations"] = [{"subj": 0, "obj": 5, "predicate": "on"}]
    with pytest.raises(InputError, match=r"scenes \[image '2'\]: relation \(0, 5\) indexes outside the image's 2 boxes"):
        evaluate_predictions(scenes, pd.DataFrame(BASE), ["on"], similarity=lambda *a: np.zeros(len(a[1])))
