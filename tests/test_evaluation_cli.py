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


def evaluate_argv(paths: dict[str, str], out) -> list[str]:
    argv = ["evaluate", "--scenes", paths["scenes.parquet"], "--predictions", paths["pred.parquet"]]
    return argv + ["--train-vocab", paths["vocab.json"], "--out", str(out)]


def test_cli_evaluate_with_real_minilm(tmp_path):
    # MiniLM: "man wears hat" vs "man wearing hat" ~0.99 (>= 0.95); "man on horse" vs "man under horse" ~0.85
    predictions = pd.DataFrame(
        {"image_id": [1, 2], "subj": [0, 0], "obj": [1, 1], "predicate": ["wears", "on"], "score": [0.9, 0.8]}
    )
    paths = write_inputs(tmp_path, predictions)
    out, details, per_predicate = (tmp_path / "m" / name for name in ("metrics.json", "details/metrics.json", "per_predicate.csv"))
    argv = evaluate_argv(paths, out) + ["--details", str(details), "--per-predicate", str(per_predicate), "--ks", "1,5", "--vocab", paths["vocab.json"]]
    assert run_cli(argv) == 0
    metrics = json.loads(details.read_text())
    # --out: only the compared keys, constrained R/mR/gR/mgR at each K then unique/unseen; --details: all of them and more
    compact = json.loads(out.read_text())
    assert list(compact) == ["R@1", "R@5", "mR@1", "mR@5", "gR@1", "gR@5", "mgR@1", "mgR@5", "unique_predicates", "unseen_predicates"]
    assert compact == {key: metrics[key] for key in compact} and len(metrics) > len(compact)
    assert metrics["R@1"] == 0.0 and metrics["mR@5"] == 0.0
    assert metrics["gR@1"] == 50.0 and metrics["mgR@5"] == 50.0
    assert (metrics["unique_predicates"], metrics["unseen_predicates"], metrics["images"], metrics["gt_relations"]) == (2, 1, 2, 2)
    assert (metrics["nggR@1"], metrics["mR_vocab@5"], metrics["ngmR_vocab@5"]) == (50.0, 0.0, 0.0)
    # the similarity behind gR is recorded beside the numbers it produced
    assert (metrics["similarity_model"], metrics["similarity_sentence"], metrics["graph_constraint"]) == ("all-MiniLM-L6-v2", "{s} {p} {o}", True)
    table = pd.read_csv(per_predicate)
    assert table.set_index("predicate")["gR@1"].to_dict() == {"under": 0.0, "wearing": 100.0}
    assert table.set_index("predicate")["nggR@1"].to_dict() == {"under": 0.0, "wearing": 100.0}


def test_cli_sentence_template_changes_the_similarity_and_is_recorded(tmp_path):
    # "man wears hat" vs "man wearing hat" reaches 0.95 as a bare triplet; a long shared prefix pulls every pair up
    predictions = pd.DataFrame({"image_id": ["2"], "subj": [0], "obj": [1], "predicate": ["on"], "score": [0.9]})
    paths = write_inputs(tmp_path, predictions)
    template = "A photo of an image where, as one can clearly see, {s} {p} {o} in the picture"
    options = ["--ks", "1", "--similarity-threshold", "0.9"]
    assert run_cli(evaluate_argv(paths, tmp_path / "bare.json") + options) == 0
    padded_options = options + ["--similarity-sentence", template, "--details", str(tmp_path / "padded_details.json")]
    assert run_cli(evaluate_argv(paths, tmp_path / "padded.json") + padded_options) == 0
    bare, padded = (json.loads((tmp_path / name).read_text()) for name in ("bare.json", "padded.json"))
    assert json.loads((tmp_path / "padded_details.json").read_text())["similarity_sentence"] == template
    assert "similarity_sentence" not in padded  # the settings are in --details, not the compact DVC metric
    # image 2: "man on horse" vs GT "man under horse": 0.85 bare (README), above 0.9 once padded
    assert (bare["gR@1"], padded["gR@1"]) == (0.0, 50.0)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--similarity-threshold", "nan"], "expected a finite number"),
        (["--similarity-threshold", "2"], "must be in [0.0, 1.0], got 2"),
        (["--ks", "20,0"], "expected comma-separated positive integers"),
        (["--ks", "a"], "expected comma-separated positive integers"),
        (["--graph-constraint", "maybe"], "expected true or false"),
        (["--similarity-sentence", "{s} {p}"], "must use {s}, {p} and {o} once each"),
        (["--similarity-sentence", "{s} {p} {o} {x}"], "must use {s}, {p} and {o} once each"),
        (["--similarity-model", "/nonexistent/model"], "not a directory"),
    ],
)
def test_cli_refuses_bad_evaluate_arguments_before_reading_anything(tmp_path, capsys, extra, reason):
    argv = ["evaluate", "--scenes", "missing.parquet", "--predictions", "missing.parquet", "--train-vocab", "x", "--out", str(tmp_path / "m.json")]
    with pytest.raises(SystemExit) as stop:
        run_cli(argv + extra)
    assert stop.value.code == 2 and reason in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["export-graphs", "--scenes", "s", "--predictions", "p", "--out", "o", "--top-k", "0"],
        ["report", "--plot-k", "0"],
        ["report", "--gallery-top-k", "-1"],
        ["report", "--gallery-images", "-1"],
    ],
)
def test_cli_refuses_bad_export_and_report_counts(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        run_cli(argv)
    assert stop.value.code == 2 and "must be at least" in capsys.readouterr().err


def test_cli_reports_missing_columns_in_one_line(tmp_path):
    paths = write_inputs(tmp_path, pd.DataFrame({"image_id": ["1"], "subj": [0], "obj": [1], "predicate": ["on"]}))
    argv = evaluate_argv(paths, tmp_path / "x.json")
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


def test_dvc_metrics_show_reads_the_compact_metric_and_the_recorded_settings_in_details(tmp_path):
    import subprocess
    import sys

    predictions = pd.DataFrame({"image_id": ["1"], "subj": [0], "obj": [1], "predicate": ["wearing"], "score": [0.9]})
    paths = write_inputs(tmp_path, predictions)
    out, details = tmp_path / "metrics.json", tmp_path / "details.json"
    assert run_cli(evaluate_argv(paths, out) + ["--details", str(details), "--similarity-sentence", "Yes, {s} {p} {o}"]) == 0
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    command = [sys.executable, "-m", "dvc", "metrics", "show", "--json", out.name, details.name]
    shown = json.loads(subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True).stdout)[""]["data"]
    # the DVC metric: the 14 compared columns (4 families x 3 K + unique/unseen); the details file: the settings too
    compact, data = shown[out.name]["data"], shown[details.name]["data"]
    assert len(compact) == 14 and (compact["R@20"], compact["mgR@100"], compact["unseen_predicates"]) == (50.0, 50.0, 0)
    assert (data["R@20"], data["ngR@20"], data["similarity_sentence"], data["graph_constraint"]) == (50.0, 50.0, "Yes, {s} {p} {o}", True)
