"""benchmarks/hard_picks.py: the swapped twin of a selection, its files, and the own - swapped summary."""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark_helpers import load_benchmark
from reltune.errors import InputError


@pytest.fixture(scope="module")
def picks():
    return load_benchmark("hard_picks")


def positives(**pools):
    return pd.DataFrame([(qid, predicate) for predicate, qids in pools.items() for qid in qids], columns=["qid", "predicate"])


POSITIVES = positives(on=["q1", "q2", "q3", "q4", "q5", "q6"], near=["n1", "n2"])
# the seed round's picks, then two rounds of art's picks; `near` has nothing left to draw from
SELECTION = pd.DataFrame(
    [("q1", 0, "balanced"), ("n1", 0, "balanced"), ("q2", 1, "tp_high_entropy"), ("n2", 1, "fn_low_entropy"), ("q3", 2, "fp_low_similarity")],
    columns=["qid", "added_in_round", "reason"],
)


def test_round_picks_become_uniform_unselected_positives_of_the_same_predicate(picks):
    swapped, kept = picks.swap_round_picks(SELECTION, POSITIVES, draw_seed=0)
    assert swapped.iloc[:2].equals(SELECTION.iloc[:2])  # the seed round is kept as it is
    assert kept == {"near": 1} and swapped.iloc[3].tolist() == ["n2", 1, "fn_low_entropy"]  # near's pool is used up
    drawn = swapped.iloc[[2, 4]]
    assert set(drawn["qid"]) <= {"q4", "q5", "q6"} and drawn["qid"].is_unique  # never a qid of either set
    assert drawn["added_in_round"].tolist() == [1, 2] and set(drawn["reason"]) == {"random"}
    predicate_of = POSITIVES.set_index("qid")["predicate"]
    assert predicate_of[swapped["qid"]].value_counts().equals(predicate_of[SELECTION["qid"]].value_counts())
    again, _ = picks.swap_round_picks(SELECTION, POSITIVES, draw_seed=0)
    assert again.equals(swapped)  # the draw depends on the draw seed alone
    # uniform over the unselected pool: over many draw seeds the first replacement hits q4, q5, q6 alike
    firsts = [picks.swap_round_picks(SELECTION, POSITIVES, seed)[0]["qid"].iloc[2] for seed in range(300)]
    counts = pd.Series(firsts).value_counts().reindex(["q4", "q5", "q6"], fill_value=0)
    assert stats.chisquare(counts).pvalue > 0.001


def test_a_pool_used_up_midway_keeps_the_remaining_picks(picks):
    selection = pd.DataFrame(
        [("q1", 0, "balanced"), ("q2", 1, "tp_high_entropy"), ("q3", 1, "tp_high_entropy"), ("q4", 2, "fp_low_similarity")],
        columns=["qid", "added_in_round", "reason"],
    )
    swapped, kept = picks.swap_round_picks(selection, POSITIVES, draw_seed=3)
    assert sorted(swapped["qid"].iloc[1:3]) == ["q5", "q6"] and swapped.iloc[3].tolist() == ["q4", 2, "fp_low_similarity"]
    assert kept == {"on": 1}


def test_a_selection_naming_no_training_positive_is_refused_with_its_file(picks, tmp_path):
    bad = pd.concat([SELECTION, pd.DataFrame([("zz", 1, "fill")], columns=SELECTION.columns)], ignore_index=True)
    with pytest.raises(ValueError, match=r"selection qid 'zz' \(row 5\) is not a training positive"):
        picks.swap_round_picks(bad, POSITIVES, 0)
    experiment, _ = experiment_on_disk(picks, tmp_path, bad)
    with pytest.raises(InputError, match=r"selection\.parquet: selection qid 'zz'"):
        picks.swapped_experiment(experiment, tmp_path / "work", 0)


def experiment_on_disk(picks, tmp_path, selection=SELECTION):
    """An Experiment whose train command reads a toy instructions file (positives and one negative)."""
    tmp_path.mkdir(exist_ok=True)
    instructions = tmp_path / "train.parquet"
    negative = pd.DataFrame([("x1", "negative", None)], columns=["qid", "kind", "predicate"])
    pd.concat([POSITIVES.assign(kind="positive"), negative], ignore_index=True).to_parquet(instructions)
    (tmp_path / "work" / "art-seed0").mkdir(parents=True)
    path = tmp_path / "work" / "art-seed0" / "selection.parquet"
    selection.to_parquet(path, index=False)
    train = ["train", "--instructions", str(instructions), "--selection", "data/loop/round_2/selection.parquet", "--seed", "0"]
    return picks.Experiment("art-seed0", "abc", (train, ["predict"], ["evaluate"]), path, 81.86, 0), instructions


def test_the_swapped_twin_is_written_beside_the_experiment_and_keeps_its_commands(picks, tmp_path):
    experiment, _ = experiment_on_disk(picks, tmp_path)
    twin, facts = picks.swapped_experiment(experiment, tmp_path / "work", 0)
    assert twin.name == "art-seed0-swapped" and twin.selection == tmp_path / "work" / "art-seed0-swapped" / "selection.parquet"
    assert twin.commands == experiment.commands and math.isnan(twin.metric)
    assert pd.read_parquet(twin.selection).equals(picks.swap_round_picks(SELECTION, POSITIVES, 0)[0])
    assert facts == {"picks": 3, "replaced": 2, "kept_where_pool_used_up": {"near": 1}}
    # a random seed round's picks carry the reason of the draws; they are not counted as replaced
    random_seed_round = SELECTION.assign(reason=["random", "random", *SELECTION["reason"].iloc[2:]])
    experiment, _ = experiment_on_disk(picks, tmp_path / "random", random_seed_round)
    assert picks.swapped_experiment(experiment, tmp_path / "random" / "work", 0)[1]["replaced"] == 2


def per_image(path, recalled):
    """A per-image file of two images, one `on` relation each, recalled as given."""
    document = {"format": "reltune-per-image/1", "ks": [20], "image_id": ["1", "2"], "predicate": ["on", "on"], "gt": [1, 1], "recalled@20": recalled}
    path.write_text(json.dumps(document))
    return path


# per train seed, (own, swapped) recalled flags of the two images: mR@20 100/0, 50/0, 100/50
RECALLED = [([1, 1], [0, 0]), ([1, 0], [0, 0]), ([1, 1], [1, 0])]


def test_main_pairs_own_and_swapped_runs_by_train_seed(picks, tmp_path, monkeypatch, capsys):
    experiment, _ = experiment_on_disk(picks, tmp_path)
    monkeypatch.setattr(picks, "prepare_experiment", lambda name, work, lock: experiment)
    trained = []

    def fake_one_run(work, run_experiment, variant, seed, threads):
        assert variant == picks.LOCKED and threads >= 1
        trained.append((run_experiment.name, seed, pd.read_parquet(run_experiment.selection)["qid"].tolist()))
        recalled = RECALLED[seed][run_experiment.name.endswith("-swapped")]
        path = per_image(tmp_path / f"{run_experiment.name}-{seed}.json", recalled)
        return {"experiment": run_experiment.name, "variant": variant.name, "seed": seed, "mR@20": 50.0 * sum(recalled), "per_image": path}

    monkeypatch.setattr(picks, "one_run", fake_one_run)
    out = tmp_path / "summary.json"
    argv = ["hard_picks.py", "--experiment", "art-seed0", "--seeds", "3", "--jobs", "2", "--work", str(tmp_path / "work"), "--resamples", "999", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    picks.main()
    assert sorted((name, seed) for name, seed, _ in trained) == [(name, seed) for name in ("art-seed0", "art-seed0-swapped") for seed in range(3)]
    assert all(qids == SELECTION["qid"].tolist() for name, _, qids in trained if name == "art-seed0")
    document = json.loads(out.read_text())
    own, swapped = document["rows"]
    assert own["values"] == [100.0, 50.0, 100.0] and swapped["values"] == [0.0, 0.0, 50.0]
    assert own["levene_p_vs_first"] is None
    assert swapped["levene_p_vs_first"] == pytest.approx(stats.levene([100.0, 50.0, 100.0], [0.0, 0.0, 50.0], center="median").pvalue)
    differences = np.array([100.0, 50.0, 50.0])
    student = document["own_minus_swapped"]["seeds (Student's t)"]
    low, high = stats.t.interval(0.95, 2, loc=differences.mean(), scale=stats.sem(differences))
    assert (student["mean"], student["low"], student["high"]) == pytest.approx((200 / 3, low, high))
    bootstrap = document["own_minus_swapped"]["seeds and test images"]
    assert bootstrap["mean"] == pytest.approx(200 / 3) and 0 <= bootstrap["low"] <= 200 / 3 <= bootstrap["high"] <= 100
    assert document["swap"] == {"picks": 3, "replaced": 2, "kept_where_pool_used_up": {"near": 1}, "draw_seed": 0}
    printed = capsys.readouterr().out
    assert "swapped twin: 2 of 3 round picks replaced (draw seed 0), kept where the pool was used up: near 1" in printed
    assert "| own selection | 100.00 / 50.00 / 100.00 | 83.33 |" in printed
    assert "own - swapped over seeds (Student's t): +66.67" in printed
