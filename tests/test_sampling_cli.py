"""`reltune select`: seed round, adaptive round, input validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import reltune.cli
from reltune.cli import main

# 40 positives: on 24, has 10, near 6; each with a counter-negative.
COUNTS = {"on": 24, "has": 10, "near": 6}


@pytest.fixture(autouse=True)
def only_select_command(monkeypatch):
    # The real `reltune` entry point, without importing the model stack for other subcommands.
    monkeypatch.setattr(reltune.cli, "COMMAND_MODULES", ("reltune.sampling.commands",))


@pytest.fixture()
def instructions(tmp_path):
    rows = []
    for predicate, count in COUNTS.items():
        for index in range(count):
            qid = f"img{index}/{predicate}"
            rows.append({"qid": qid, "kind": "positive", "predicate": predicate, "positive_qid": None})
            rows.append({"qid": qid + "/neg", "kind": "negative", "predicate": None, "positive_qid": qid})
    path = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def run_seed(instructions, out, strategy="balanced"):
    return main(["select", "--instructions", str(instructions), "--round", "0", "--strategy", strategy,
                 "--budget-fraction", "0.25", "--seed", "7", "--out", str(out)])


def pool_scores(instructions, selection_path):
    table = pd.read_parquet(instructions)
    pool = table[(table["kind"] == "positive") & ~table["qid"].isin(pd.read_parquet(selection_path)["qid"])]
    rng = np.random.default_rng(0)
    outcome = np.array(["TP", "FN", "FP"])[np.arange(len(pool)) % 3]
    return pd.DataFrame({
        "qid": pool["qid"].to_numpy(),
        "predicate": pool["predicate"].to_numpy(),
        "answer": "x",
        "predicted_predicate": "y",
        "outcome": outcome,
        "entropy": rng.random(len(pool)),
        "similarity": np.where(outcome == "FP", rng.random(len(pool)), np.nan),
        "sequence_score": 0.0,
    })


def test_seed_then_art_round(tmp_path, instructions):
    round_0 = tmp_path / "loop" / "round_0"
    assert run_seed(instructions, round_0) == 0
    seed_selection = pd.read_parquet(round_0 / "selection.parquet")
    # B = round(.25 * 40) = 10 dealt over on(24), has(10), near(6): 4, 3, 3.
    assert len(seed_selection) == 10
    assert seed_selection.merge(pd.read_parquet(instructions), on="qid")["predicate"].value_counts().to_dict() == {
        "on": 4, "has": 3, "near": 3}
    assert set(seed_selection["reason"]) == {"balanced"} and set(seed_selection["added_in_round"]) == {0}
    report = json.loads((round_0 / "selection_report.json").read_text())
    assert report["budget"] == 10 and report["pool_left"] == 30 and report["per_predicate"]["near"]["pool_left"] == 3

    scores = pool_scores(instructions, round_0 / "selection.parquet")
    scores.to_parquet(round_0 / "scores.parquet", index=False)
    (round_0 / "val_recall.json").write_text(json.dumps({"per_predicate": {"on": 0.75, "has": 0.0}, "mean_recall": 0.4}))
    round_1 = tmp_path / "loop" / "round_1"
    code = main(["select", "--instructions", str(instructions), "--round", "1", "--strategy", "art",
                 "--budget-fraction", "0.25", "--seed", "7", "--out", str(round_1),
                 "--previous", str(round_0 / "selection.parquet"), "--scores", str(round_0 / "scores.parquet"),
                 "--val-recall", str(round_0 / "val_recall.json")])
    assert code == 0
    selection = pd.read_parquet(round_1 / "selection.parquet")
    assert len(selection) == 20 and not selection["qid"].duplicated().any()
    assert (selection["added_in_round"] == 1).sum() == 10
    assert selection.iloc[:10].equals(seed_selection)
    report = json.loads((round_1 / "selection_report.json").read_text())
    # w: on .25, has 1, near 1 (missing) over pools on 20, has 7, near 3:
    # 10*.25/2.25 = 1.11, 4.44, 4.44 -> near capped at 3; 7 left: on 7*.25/1.25 = 1.4, has 5.6 -> 1, 6 (has .6 wins).
    assert {p: v["budget"] for p, v in report["per_predicate"].items()} == {"has": 6, "near": 3, "on": 1}
    assert sum(report["taken"].values()) == 10
    assert report["recall_missing"] == ["near"]
    kinds = selection.merge(pd.read_parquet(instructions), on="qid")["kind"]
    assert len(kinds) == 20 and (kinds == "positive").all()
    assert set(report["taken"]) <= {"tp_high_entropy", "fn_high_entropy", "fn_low_entropy", "fp_low_similarity", "fill"}


def test_balanced_round_needs_no_scores(tmp_path, instructions):
    run_seed(instructions, tmp_path / "r0", strategy="random")
    code = main(["select", "--instructions", str(instructions), "--round", "1", "--strategy", "balanced",
                 "--budget-fraction", "0.25", "--out", str(tmp_path / "r1"),
                 "--previous", str(tmp_path / "r0" / "selection.parquet")])
    assert code == 0
    selection = pd.read_parquet(tmp_path / "r1" / "selection.parquet")
    assert len(selection) == 20 and set(selection["reason"]) == {"random", "balanced"}


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s: pd.concat([s, s.iloc[:1]]), "[row 30]: duplicate qid"),  # 30 pool rows; the repeat is row 30
        (lambda s: s.assign(qid=["nope"] + list(s["qid"][1:])), "[row 0]: qid 'nope' is not a training positive"),
        (lambda s: s.assign(outcome=["MAYBE"] + list(s["outcome"][1:])), "[row 0]: outcome must be TP, FP or FN"),
        (lambda s: s.assign(entropy=[np.nan] + list(s["entropy"][1:])), "[row 0]: entropy is missing"),
        (lambda s: s.assign(entropy=list(s["entropy"][:2]) + [-1.0] + list(s["entropy"][3:])),
         "[row 2]: entropy must be finite and >= 0"),
        (lambda s: s.assign(similarity=[1e150] + list(s["similarity"][1:])), "[row 0]: similarity must lie in [-1, 1]"),
    ],
)
def test_bad_scores_fail_with_one_line(tmp_path, instructions, capsys, corrupt, message):
    run_seed(instructions, tmp_path / "r0")
    scores = corrupt(pool_scores(instructions, tmp_path / "r0" / "selection.parquet"))
    scores.to_parquet(tmp_path / "scores.parquet", index=False)
    (tmp_path / "recall.json").write_text(json.dumps({"per_predicate": {}}))
    capsys.readouterr()
    code = main(["select", "--instructions", str(instructions), "--round", "1", "--strategy", "art",
                 "--out", str(tmp_path / "r1"), "--previous", str(tmp_path / "r0" / "selection.parquet"),
                 "--scores", str(tmp_path / "scores.parquet"), "--val-recall", str(tmp_path / "recall.json")])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert message in error and "scores.parquet" in error and "\n" not in error
    assert not (tmp_path / "r1").exists()


def test_seed_rejects_adaptive_strategy_and_bad_previous(tmp_path, instructions, capsys):
    assert main(["select", "--instructions", str(instructions), "--round", "0", "--strategy", "art",
                 "--out", str(tmp_path / "r0")]) == 2
    assert "seed (round 0)" in capsys.readouterr().err
    bad_previous = tmp_path / "previous.parquet"
    pd.DataFrame({"qid": ["img0/on", "img0/on"], "added_in_round": [0, 0], "reason": ["balanced"] * 2}).to_parquet(bad_previous)
    assert main(["select", "--instructions", str(instructions), "--round", "1", "--strategy", "balanced",
                 "--out", str(tmp_path / "r1"), "--previous", str(bad_previous)]) == 2
    assert "duplicate qid 'img0/on'" in capsys.readouterr().err


def _art_round(instructions, tmp_path, scores, extra=()):
    scores.to_parquet(tmp_path / "scores.parquet", index=False)
    (tmp_path / "recall.json").write_text(json.dumps({"per_predicate": {"on": 0.5}}))
    return main(["select", "--instructions", str(instructions), "--round", "1", "--strategy", "art",
                 "--budget-fraction", "0.25", "--out", str(tmp_path / "r1"),
                 "--previous", str(tmp_path / "r0" / "selection.parquet"),
                 "--scores", str(tmp_path / "scores.parquet"), "--val-recall", str(tmp_path / "recall.json"), *extra])


def test_empty_scores_are_an_error_for_a_non_empty_pool_only(tmp_path, instructions, capsys):
    # A pool of 30 positives with a scores file of zero rows: the scoring stage produced nothing.
    run_seed(instructions, tmp_path / "r0")
    empty = pool_scores(instructions, tmp_path / "r0" / "selection.parquet").iloc[:0]
    capsys.readouterr()
    assert _art_round(instructions, tmp_path, empty) == 2
    error = capsys.readouterr().err.strip()
    assert "scores.parquet: no score rows, but the pool has 30 positives" in error and "\n" not in error
    assert not (tmp_path / "r1").exists()
    # Everything already selected (budget 1.0): the pool is empty, and so legitimately are the scores.
    assert main(["select", "--instructions", str(instructions), "--round", "0", "--strategy", "balanced",
                 "--budget-fraction", "1", "--out", str(tmp_path / "r0")]) == 0
    assert _art_round(instructions, tmp_path, empty) == 0
    report = json.loads((tmp_path / "r1" / "selection_report.json").read_text())
    assert report["selected_this_round"] == 0 and report["selected_total"] == 40 and report["pool_left"] == 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--z-step", "0", "argument --z-step: must be in [1e-09, 1000000.0], got 0"),
        ("--z-step", "nan", "argument --z-step: expected a finite number"),
        ("--z-step", "inf", "argument --z-step: expected a finite number"),
        ("--z-step", "-0.1", "argument --z-step: must be in"),
        ("--z-init", "nan", "argument --z-init: expected a finite number"),
        ("--z-init", "-inf", "argument --z-init: expected a finite number"),
        ("--budget-fraction", "0", "argument --budget-fraction: must be in (0.0, 1.0]"),
        ("--budget-fraction", "1.5", "argument --budget-fraction: must be in (0.0, 1.0]"),
        ("--round", "-1", "argument --round: must be at least 0"),
        ("--seed", "-3", "argument --seed: must be in [0, 4294967295]"),
        ("--components", "h_tp,bogus", "argument --components: expected distinct names"),
        ("--components", ",", "argument --components: expected distinct names"),
        ("--fixed-thresholds", "t_fp=1.5", "argument --fixed-thresholds: must be in [0.0, 1.0]"),
        ("--fixed-thresholds", "h_fn=-0.1", "argument --fixed-thresholds: must be in [0.0, inf)"),
        ("--fixed-thresholds", "t_fn=nan", "argument --fixed-thresholds: expected a finite number"),
        ("--fixed-thresholds", "zz=0.5", "argument --fixed-thresholds: expected distinct names"),
    ],
)
def test_out_of_domain_arguments_fail_before_any_work(tmp_path, instructions, capsys, flag, value, message):
    run_seed(instructions, tmp_path / "r0")
    scores = pool_scores(instructions, tmp_path / "r0" / "selection.parquet")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _art_round(instructions, tmp_path, scores, extra=(f"{flag}={value}",))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "r1").exists()
