"""benchmarks/direction_spread.py: a seed spread split into the directions' order and the rest, on crafted runs."""

import json
import math

import pandas as pd
import pytest
import scipy.stats

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def direction_spread():
    return load_benchmark("direction_spread")


def scene(image_id: str, relations: list[tuple[int, int, str]]) -> dict:
    boxes = [[0.0, 0.0, 8.0, 8.0], [20.0, 0.0, 28.0, 8.0]]
    rows = [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations]
    return {"image_id": image_id, "image_path": f"{image_id}.png", "width": 40, "height": 40, "boxes": boxes, "labels": ["cup", "table"], "relations": rows}


# four direction pairs and one `on` pair; each run answers the `on` pair right
SCENES = [
    scene("i1", [(0, 1, "above")]),
    scene("i2", [(0, 1, "below")]),
    scene("i3", [(0, 1, "left of")]),
    scene("i4", [(0, 1, "right of")]),
    scene("i5", [(0, 1, "on")]),
]
CONVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def make_run(root, name: str, recalls: dict[str, float], wrong_ends: int, off_axis: int = 0):
    """A run workspace: per-predicate recalls as given (mR@20 their mean over the seen ones), and top answers
    naming the converse on the first `wrong_ends` direction pairs and `near` on the next `off_axis` ones."""
    run = root / name
    for folder in ("metrics/per_predicate", "data/predictions", "data/scenes/syn"):
        (run / folder).mkdir(parents=True)
    table = pd.DataFrame({"predicate": list(recalls), "gt_relations": 1, "seen_in_training": True, "R@20": list(recalls.values())})
    table.loc[len(table)] = ["hug", 1, False, 0.0]  # unseen in training: not part of mR
    table.to_csv(run / "metrics/per_predicate/syn.csv", index=False)
    (run / "metrics/syn.json").write_text(json.dumps({"mR@20": sum(recalls.values()) / len(recalls)}))
    pd.DataFrame(SCENES).to_parquet(run / "data/scenes/syn/test.parquet")
    answers = []
    for index, row in enumerate(SCENES):
        truth = row["relations"][0]["predicate"]
        answer = CONVERSE[truth] if index < wrong_ends else "near" if index < wrong_ends + off_axis and truth in CONVERSE else truth
        answers += [(row["image_id"], 0, 1, answer, 0.9), (row["image_id"], 0, 1, "with", 0.1)]  # the low one never counts
    pd.DataFrame(answers, columns=["image_id", "subj", "obj", "predicate", "score"]).to_parquet(run / "data/predictions/syn.parquet")
    return run


def recalls(directions: float, others: float) -> dict[str, float]:
    return {"above": directions, "below": directions, "left of": directions, "right of": directions, "on": others, "near": others}


def test_a_run_is_split_into_its_directions_and_the_rest(direction_spread, tmp_path):
    run = make_run(tmp_path, "r0", {**recalls(50.0, 90.0), "above": 70.0}, wrong_ends=1, off_axis=1)
    split = direction_spread.split_run(run, "syn", "test")
    assert split.mean_recall == pytest.approx((70 + 50 * 3 + 90 * 2) / 6)
    assert split.without_directions == pytest.approx(90.0)
    assert split.directions == pytest.approx((70 + 150) / 4)
    # i1 the wrong end, i2 off its axis (`near`), i3 and i4 right: 2 of 3 on their axis
    assert (split.right_ends, split.on_axis) == (2, 3)
    low, high = scipy.stats.binomtest(2, 3).proportion_ci(method="wilson")
    assert split.line().endswith(f"true end 0.667 [{low:.3f}, {high:.3f}] of 3 pairs")


def test_a_mean_recall_that_is_not_the_per_predicate_mean_is_refused(direction_spread, tmp_path):
    run = make_run(tmp_path, "r0", recalls(50.0, 90.0), wrong_ends=0)
    (run / "metrics/syn.json").write_text(json.dumps({"mR@20": 71.0}))
    with pytest.raises(Exception, match=r"syn\.json.*not the mean"):
        direction_spread.split_run(run, "syn", "test")


def test_a_group_spread_that_is_all_directions_vanishes_without_them(direction_spread, tmp_path):
    # three seeds: the directions learned (wrong ends 0), half (2) and not (4); the rest identical
    runs = [make_run(tmp_path, f"s{seed}", recalls(direction, 88.0), wrong_ends=wrong) for seed, (direction, wrong) in enumerate([(100.0, 0), (50.0, 2), (0.0, 4)])]
    lines = direction_spread.group_lines("art", [direction_spread.split_run(run, "syn", "test") for run in runs])
    means = [(4 * direction + 2 * 88.0) / 6 for direction in (100.0, 50.0, 0.0)]
    spread = pd.Series(means).std()
    assert f"seed sd of mR@20 {spread:.2f}" in lines[3]
    assert "without the directions 0.00 [0.00, 0.00]" in lines[3]
    assert lines[4].startswith("art: Pearson r of mR@20 and the true-end share +1.00")
    assert "true end 0.500" in lines[1] and "true end 0.000" in lines[2]


def test_one_run_has_no_spread_and_no_direction_pair_no_share(direction_spread, tmp_path):
    run = make_run(tmp_path, "r0", recalls(0.0, 90.0), wrong_ends=0, off_axis=4)
    split = direction_spread.split_run(run, "syn", "test")
    assert split.on_axis == 0 and math.isnan(split.true_end)
    lines = direction_spread.group_lines("full", [split])
    assert lines[0].endswith("no direction pair answered on its axis") and lines[1] == "full: one run, no seed spread"
