"""The `make compare` table: rows from `dvc exp show --json`, chance row, per-variant seed summary."""

from __future__ import annotations

import json

import pandas as pd

from reltune.evaluation import compare
from reltune.io import write_json, write_parquet


def experiment(name: str, strategy: str, seed: int, held_in_mr: float, blind_mr: float, wall_s: float) -> dict:
    metrics = {
        "metrics/synthetic.json": {"data": {"R@20": 2 * held_in_mr, "mR@20": held_in_mr, "unique_predicates": 7}},
        "metrics/synthetic_blind.json": {"data": {"R@20": 1.0, "mR@20": blind_mr}},
        "metrics/timing/train-final.json": {"data": {"wall_s": wall_s}},
        "metrics/pretrain_tiny.json": {"data": {"accuracy": 0.7}},
    }
    params = {"params.yaml": {"data": {"sampling": {"strategy": strategy, "seed": seed}}}}
    return {"rev": name[:7], "name": name, "data": {"metrics": metrics, "params": params}}


def exp_show(commit_metrics: bool) -> list[dict]:
    workspace = experiment("workspace", "art", 0, 50.0, 19.0, 60.0)
    workspace["rev"] = "workspace"
    head = experiment("main", "art", 0, 50.0, 19.0, 60.0)
    if not commit_metrics:
        head["data"]["metrics"] = {}
    head["experiments"] = [
        {"revs": [experiment("art-seed0", "art", 0, 50.0, 19.0, 600.0)]},
        {"revs": [experiment("art-seed1", "art", 1, 40.0, 17.0, 660.0)]},
        {"revs": [experiment("random-seed0", "random", 0, 30.0, 16.0, 540.0)], "executor": {"state": "success"}},
        # still running: `dvc exp show` gives it the workspace's metrics
        {"revs": [experiment("random-seed1", "random", 1, 50.0, 19.0, 60.0)], "executor": {"state": "running"}},
    ]
    return [workspace, head]


def test_rows_blind_columns_and_baselines_filter():
    rows = compare.comparison_rows(exp_show(commit_metrics=True))
    assert [row["experiment"] for row in rows] == ["workspace", "main", "art-seed0", "art-seed1", "random-seed0"]
    art_seed1 = rows[3]
    assert (art_seed1["strategy"], art_seed1["seed"]) == ("art", 1)
    assert art_seed1["synthetic mR@20"] == 40.0 and art_seed1["synthetic blind mR@20"] == 17.0
    assert art_seed1["synthetic unique_predicates"] == 7 and "synthetic blind unique_predicates" not in art_seed1
    assert art_seed1["wall time (min)"] == 11.0
    assert not any(column.startswith("pretrain") for column in art_seed1)
    # every commit: old commits' own runs are left out, the workspace stays
    names = [row["experiment"] for row in compare.comparison_rows(exp_show(commit_metrics=True), baselines=False)]
    assert names == ["workspace", "art-seed0", "art-seed1", "random-seed0"]


def test_seed_summary_gives_mean_and_spread_of_variants_with_two_seeds():
    summary = compare.seed_summary_rows(compare.comparison_rows(exp_show(commit_metrics=False)))
    assert len(summary) == 1  # random has one seed: no spread to give
    art = summary[0]
    assert (art["variant"], art["seeds"]) == ("art", "0,1")
    assert art["synthetic mR@20"] == "45.00 (40.00-50.00)"
    assert art["synthetic blind mR@20"] == "18.00 (17.00-19.00)"
    assert art["wall time (min)"] == "10.50 (10.00-11.00)"


def test_main_prints_the_chance_row_from_workspace_scenes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("held_in: synthetic\nevaluate: {split: test}\n")
    write_json({"predicates": ["on", "near", "has", "with"]}, tmp_path / "data/scenes/synthetic/vocab.json")
    scenes = pd.DataFrame(
        {
            "image_id": ["a"],
            "image_path": ["a.png"],
            "width": [10],
            "height": [10],
            "boxes": [[[0.0, 0.0, 2.0, 2.0], [3.0, 3.0, 5.0, 5.0]]],
            "labels": [["man", "horse"]],
            "relations": [[{"subj": 0, "obj": 1, "predicate": "on"}, {"subj": 1, "obj": 0, "predicate": "under"}]],
        }
    )
    write_parquet(scenes, tmp_path / "data/scenes/synthetic/test.parquet")
    shown = tmp_path / "exp_show.json"
    shown.write_text(json.dumps(exp_show(commit_metrics=False)))
    assert compare.main([str(shown)]) == 0
    lines = capsys.readouterr().out.splitlines()
    chance = next(line for line in lines if line.startswith("| chance"))
    header = lines[0].split(" | ")
    cells = chance.split(" | ")
    # one of two GT relations is seen, hit with 1/4: R = 12.5; predicates on 0.25, under 0 -> mR = 12.5
    assert cells[header.index("synthetic R@20")] == "12.50" and cells[header.index("synthetic mR@20")] == "12.50"
    assert cells[header.index("synthetic blind mR@20")] == ""
    assert any(line.startswith("Per variant over seeds") for line in lines)
