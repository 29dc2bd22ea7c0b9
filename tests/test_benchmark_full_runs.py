"""benchmarks/full_runs.py: issue 16's parts 3-4 and paired differences on crafted run workspaces."""

import json
import sys

import pandas as pd
import pytest
import yaml

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def full_runs():
    return load_benchmark("full_runs")


HELD_IN_TABLE = pd.DataFrame(
    {"predicate": ["on", "near", "left of"], "gt_relations": [100, 50, 20], "seen_in_training": [True] * 3, "R@20": [100.0, 80.0, 75.0]}
)
HELD_OUT_TABLE = pd.DataFrame(
    {"predicate": ["on", "near", "hug"], "gt_relations": [40, 20, 12], "seen_in_training": [True, True, False], "R@20": [75.0, 40.0, 0.0]}
)


def per_image_document(rows: list[tuple[str, str, int, int]]) -> dict:
    """(image_id, predicate, gt, recalled@20) rows -> an `evaluate --per-image` document."""
    columns = list(zip(*rows))
    return {"format": "reltune-per-image/1", "ks": [20], "image_id": list(columns[0]), "predicate": list(columns[1]), "gt": list(columns[2]), "recalled@20": list(columns[3])}


def scene(image_id: str, labels: list[str], relations: list[tuple[int, int, str]]) -> dict:
    boxes = [[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(len(labels))]
    relation_rows = [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations]
    return {"image_id": image_id, "image_path": f"{image_id}.png", "width": 100, "height": 100, "boxes": boxes, "labels": labels, "relations": relation_rows}


def make_run(root, name: str, held_in_recalled: list[int], held_out_recalled: list[int], more_held_in_rows: list | None = None):
    """A workspace as `dvc repro` leaves it: params.yaml, the scenes chance reads, metrics/."""
    run = root / name
    (run / "metrics" / "per_predicate").mkdir(parents=True)
    (run / "metrics" / "per_image").mkdir()
    params = {"held_in": "syn", "scenes": {"datasets": {"syn": {}, "ood": {}}}, "evaluate": {"split": "test"}}
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    (run / "data" / "scenes" / "syn").mkdir(parents=True)
    (run / "data" / "scenes" / "ood").mkdir(parents=True)
    (run / "data" / "scenes" / "syn" / "vocab.json").write_text(json.dumps({"predicates": ["on", "near", "left of", "has"]}))
    # one annotated pair per image, one of 4 training predicates: chance R = mgR@20 = 25 on `on` alone
    ood_scenes = [scene("o1", ["fox", "cake"], [(0, 1, "on")]), scene("o2", ["fox", "box"], [(0, 1, "on")])]
    pd.DataFrame(ood_scenes).to_parquet(run / "data" / "scenes" / "ood" / "test.parquet")
    metrics = {"syn": {"R@20": 95.0, "mR@20": 92.5, "mgR@20": 93.0}, "ood": {"R@20": 50.0, "mR@20": 40.0, "mgR@20": 80.0}, "ood_blind": {"R@20": 5.0, "mR@20": 4.0, "mgR@20": 20.0}}
    for dataset, values in metrics.items():
        (run / "metrics" / f"{dataset}.json").write_text(json.dumps(values))
    HELD_IN_TABLE.to_csv(run / "metrics" / "per_predicate" / "syn.csv", index=False)
    HELD_OUT_TABLE.to_csv(run / "metrics" / "per_predicate" / "ood.csv", index=False)
    # three images x two predicates held in; two images of `on` held out
    held_in_rows = [(f"i{n}", predicate, 2, recalled) for n, (predicate, recalled) in enumerate(zip(["on", "near"] * 3, held_in_recalled))]
    held_in_rows += more_held_in_rows or []
    held_out_rows = [(f"o{n + 1}", "on", 1, recalled) for n, recalled in enumerate(held_out_recalled)]
    (run / "metrics" / "per_image" / "syn.json").write_text(json.dumps(per_image_document(held_in_rows)))
    (run / "metrics" / "per_image" / "ood.json").write_text(json.dumps(per_image_document(held_out_rows)))
    return run


# `left of` recalled on 1, 1, 1, 0 of four images: HELD_IN_TABLE's 75
LEFT_OF_ROWS = [(f"l{n}", "left of", 1, recalled) for n, recalled in enumerate([1, 1, 1, 0])]


def test_checks_read_the_workspace_metrics_and_its_own_chance_level(full_runs, tmp_path):
    run = make_run(tmp_path, "wt_s3", [2, 1, 2, 0, 1, 2], [1, 0], LEFT_OF_ROWS)
    text, checks = full_runs.run_checks(run)
    by_what = {check.what.split(" (")[0]: check for check in checks}
    assert by_what["lowest held-in predicate R@20"].value == 75.0 and not by_what["lowest held-in predicate R@20"].met
    assert "(left of, 95% [25.0, 100.0]; 1 below: left of)" in by_what["lowest held-in predicate R@20"].what
    assert by_what["held-in mR@20"].met
    assert by_what["held-out / held-in R@20 of on"].value == pytest.approx(0.75) and by_what["held-out / held-in R@20 of on"].met
    assert by_what["held-out / held-in R@20 of near"].value == pytest.approx(0.5) and not by_what["held-out / held-in R@20 of near"].met
    assert "held-out / held-in R@20 of hug" not in by_what  # never seen in training
    assert by_what["held-out mgR@20 / blind control"].value == pytest.approx(4.0)
    assert by_what["held-out mgR@20 / chance"].value == pytest.approx(80.0 / 25.0)
    # each lowest predicate with its bootstrap interval over its test images: left of 1, 1, 1, 0
    # (a resample's mean is 0 with probability 0.004, at most 0.25 with 0.051: the 2.5th percentile is 25)
    assert "lowest held-in: left of 75.0 (95% [25.0, 100.0]), near 80.0 (95% [" in text
    assert "syn R / mR / mgR @20 95.00 / 92.50 / 93.00" in text and "ood blind mgR@20 20.00" in text


def test_paired_lines_difference_each_pair_and_pool_them(full_runs, tmp_path):
    runs = [make_run(tmp_path, "a0", [2, 2, 2, 2, 2, 2], [1, 1]), make_run(tmp_path, "a1", [2, 1, 2, 1, 2, 1], [1, 1])]
    baselines = [make_run(tmp_path, "b0", [1, 1, 1, 1, 1, 1], [0, 1]), make_run(tmp_path, "b1", [2, 1, 2, 1, 2, 1], [1, 1])]
    lines = full_runs.paired_lines(runs, baselines, ("syn", "ood"))
    # held in: a0 recalls everything (mR 100), b0 half (50); a1 = b1 (on 100, near 50)
    assert lines[0].startswith(f"syn mR@20 {runs[0]} - {baselines[0]}: +50.00 [+50.00, +50.00] ahead")
    assert lines[1].startswith(f"syn mR@20 {runs[1]} - {baselines[1]}: +0.00")
    assert lines[2].startswith("syn mR@20 over 2 pairs: +25.00")
    # one pair's verdict holds its two models fixed: said so on the line; the pooled line resamples the pairs too
    assert lines[0].endswith("(test images only)") and not lines[2].endswith("(test images only)")
    # held out: a0 100, b0 50 (one of two `on` images)
    assert lines[3].startswith(f"ood mR@20 {runs[0]} - {baselines[0]}: +50.00")
    assert len(lines) == 6


def test_a_missing_metric_names_the_file(full_runs, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, "wt", [2] * 6, [1, 1], LEFT_OF_ROWS)
    (run / "metrics" / "ood_blind.json").unlink()
    with pytest.raises(Exception, match="ood_blind.json"):
        full_runs.run_checks(run)
    # a per-image file without the lowest predicate the CSV names: the interval names that file
    other = make_run(tmp_path, "wt_other", [2] * 6, [1, 1])
    with pytest.raises(Exception, match=r"wt_other/metrics/per_image/syn.json.*'left of'"):
        full_runs.run_checks(other)
    monkeypatch.setattr(sys, "argv", ["full_runs.py", str(run), "--against", str(run), str(run)])
    with pytest.raises(SystemExit):
        full_runs.main()
    assert "--against needs one workspace per run (1), got 2" in capsys.readouterr().err


def test_direction_right_ends_count_top_answers_on_each_axis(full_runs, tmp_path):
    run = make_run(tmp_path, "wt", [2] * 6, [1, 1])
    held_in = [
        scene("i1", ["cup", "table"], [(0, 1, "above")]),
        scene("i2", ["cup", "table"], [(0, 1, "below")]),
        scene("i3", ["cup", "table"], [(0, 1, "left of"), (1, 0, "right of")]),
        scene("i4", ["cup", "table"], [(0, 1, "on")]),
    ]
    pd.DataFrame(held_in).to_parquet(run / "data" / "scenes" / "syn" / "test.parquet")
    (run / "data" / "predictions").mkdir()
    predictions = pd.DataFrame(
        [
            ("i1", 0, 1, "below", 0.4), ("i1", 0, 1, "above", 0.9),  # the top one is right
            ("i2", 0, 1, "above", 0.8), ("i2", 0, 1, "below", 0.8),  # a tie: the first in file order, the wrong end
            ("i3", 0, 1, "on", 0.7), ("i3", 0, 1, "left of", 0.6),  # off the axis
            ("i3", 1, 0, "right of", 0.5),  # the converse pair, answered right
            ("i4", 0, 1, "left of", 0.9),  # not a direction pair
        ],
        columns=["image_id", "subj", "obj", "predicate", "score"],
    )
    predictions.to_parquet(run / "data" / "predictions" / "syn.parquet")
    line = full_runs.direction_right_ends(run)
    assert line == "directions: vertical 2 of 2 answered on the axis, right end 0.50; horizontal 1 of 2 answered on the axis, right end 1.00"
    (run / "data" / "predictions" / "syn.parquet").unlink()
    with pytest.raises(Exception, match="syn.parquet"):
        full_runs.direction_right_ends(run)


def test_unseen_class_answers_split_each_transferred_predicate_by_whether_its_classes_were_seen(full_runs, tmp_path):
    run = make_run(tmp_path, "wt", [2] * 6, [1, 1])
    vocab = run / "data" / "scenes" / "syn" / "vocab.json"
    vocab.write_text(json.dumps({"predicates": ["on", "near", "left of", "has"], "objects": ["cake", "box"]}))
    held_out = [
        scene("o1", ["cake", "box"], [(0, 1, "on"), (1, 0, "near")]),  # two seen classes
        scene("o2", ["fox", "box"], [(0, 1, "on"), (1, 0, "hug")]),  # an unseen class; `hug` is not transferred
        scene("o3", ["cake", "fox"], [(0, 1, "on")]),
    ]
    pd.DataFrame(held_out).to_parquet(run / "data" / "scenes" / "ood" / "test.parquet")
    (run / "data" / "predictions").mkdir()
    predictions = pd.DataFrame(
        [
            ("o1", 0, 1, "near", 0.3), ("o1", 0, 1, "on", 0.8),  # the top one is right
            ("o1", 1, 0, "on", 0.9),  # `near` missed
            ("o2", 0, 1, "on", 0.6),  # right, with the unseen fox
            ("o2", 1, 0, "hug", 0.9),
            # o3's pair has no answer: missed
        ],
        columns=["image_id", "subj", "obj", "predicate", "score"],
    )
    predictions.to_parquet(run / "data" / "predictions" / "ood.parquet")
    line = full_runs.unseen_class_answers(run)
    assert line == (
        "held-out top answers right: on 1/1 of two seen classes, 1/2 with an unseen class; "
        "near 0/1 of two seen classes, 0/0 with an unseen class"
    )
    vocab.write_text(json.dumps({"predicates": ["on"]}))
    with pytest.raises(Exception, match="vocab.json"):
        full_runs.unseen_class_answers(run)


def test_paired_runs_on_other_test_images_fail_in_one_line(full_runs, tmp_path, monkeypatch):
    left_of_rows = [("l0", "left of", 1, 1)]
    run = make_run(tmp_path, "wt", [2] * 6, [1, 1], left_of_rows)
    baseline = make_run(tmp_path, "other_test_set", [2] * 6, [1, 1], left_of_rows + [("extra", "on", 1, 1)])  # one image more
    with pytest.raises(Exception, match="other_test_set.*syn.json: other test images or predicates than .*wt's"):
        full_runs.paired_lines([run], [baseline], ("syn", "ood"))
    # main turns the project's input errors into one line naming the file
    (run / "metrics" / "ood_blind.json").unlink()
    monkeypatch.setattr(sys, "argv", ["full_runs.py", str(run)])
    with pytest.raises(SystemExit, match=r"^full_runs.py: .*ood_blind.json"):
        full_runs.main()
