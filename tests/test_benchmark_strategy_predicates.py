"""benchmarks/strategy_predicates.py: selected positives and test recall per predicate, mean over seeds."""

import pandas as pd
import pytest

from benchmark_helpers import load_benchmark

POSITIVES = pd.DataFrame({"qid": ["a", "b", "c", "d", "e"], "predicate": ["on", "on", "on", "near", "left of"]})


@pytest.fixture(scope="module")
def strategy_predicates():
    return load_benchmark("strategy_predicates")


def test_selected_counts_map_qids_to_predicates(strategy_predicates):
    counts = strategy_predicates.selected_per_predicate(pd.DataFrame({"qid": ["a", "c", "e"]}), POSITIVES)
    assert counts.to_dict() == {"on": 2, "left of": 1}


def test_a_selection_naming_a_non_positive_is_refused(strategy_predicates):
    with pytest.raises(SystemExit, match="1 qids that are not positives.*zz"):
        strategy_predicates.selected_per_predicate(pd.DataFrame({"qid": ["a", "zz"]}), POSITIVES)


def test_strategy_table_means_over_seeds_rarest_first(strategy_predicates):
    predicates = ["left of", "near", "on"]
    seed0 = pd.DataFrame({"selected": [1, 0, 2], "R@20": [0.0, 50.0, 100.0]}, index=predicates)
    seed1 = pd.DataFrame({"selected": [0, 1, 3], "R@20": [20.0, 70.0, 90.0]}, index=predicates)
    table = strategy_predicates.strategy_table({"random": [seed0, seed1]}, POSITIVES)
    assert table.index.tolist()[-1] == "on"  # 3 positives, the most frequent
    assert table.loc["on", "share %"] == 60.0
    assert table.loc["on", "random selected"] == 2.5
    assert table.loc["left of", "random R@20"] == 10.0
    assert table.loc["near", "random R@20"] == 60.0


def test_variance_shares_add_up_to_the_seed_variance_of_the_mean_recall(strategy_predicates):
    # 3 predicates x 4 seeds; "near" moves against "on"
    recalls = pd.DataFrame(
        {0: [10.0, 50.0, 90.0], 1: [30.0, 40.0, 95.0], 2: [20.0, 45.0, 80.0], 3: [60.0, 20.0, 85.0]}, index=["left of", "near", "on"]
    )
    shares = strategy_predicates.variance_shares(recalls)
    assert shares.sum() == pytest.approx(100.0)
    mean_recall = recalls.mean(axis=0)
    # a predicate's share is its covariance with the mean recall over the mean recall's variance (a second method)
    for predicate in recalls.index:
        expected = recalls.loc[predicate].cov(mean_recall) / len(recalls) / mean_recall.var()
        assert shares[predicate] == pytest.approx(100 * expected)
    assert shares["near"] < 0 < shares["left of"]
    predicates = ["left of", "near", "on"]
    runs = [pd.DataFrame({"selected": [1, 1, 1], "R@20": recalls[seed].to_numpy()}, index=predicates) for seed in recalls]
    table = strategy_predicates.strategy_table({"art": runs}, POSITIVES, pd.Series({"on": 40, "near": 9, "left of": 3}))
    assert table.loc["left of", "test relations"] == 3
    assert table.loc["left of", "art R@20 sd"] == round(recalls.loc["left of"].std(), 1)
    assert table.loc["near", "art var %"] == round(shares["near"], 1)


def _rows(experiment: str, seeds: list[int], label: str = "") -> list[dict]:
    return [{"experiment": f"{experiment}-seed{seed}", "seed": seed, "rev": f"{experiment}{seed}", **({"pipeline": label} if label else {})} for seed in seeds]


def test_a_variant_is_found_without_its_other_pipeline_label(strategy_predicates):
    variants = {"art": _rows("art", [0, 1]), "art-ep40 @9653d6f": _rows("art-ep40", [0, 1, 2], "9653d6f")}
    assert sorted(strategy_predicates.variant_members(variants, "art-ep40")) == [0, 1, 2]
    assert sorted(strategy_predicates.variant_members(variants, "art-ep40 @9653d6f")) == [0, 1, 2]
    assert sorted(strategy_predicates.variant_members(variants, "art")) == [0, 1]
    assert strategy_predicates.variant_members(variants, "balanced") == {}


def test_a_variant_name_in_two_pipelines_must_be_labelled(strategy_predicates):
    variants = {"art-ep40 @9653d6f": _rows("art-ep40", [0]), "art-ep40 @1111111": _rows("art-ep40", [1])}
    with pytest.raises(SystemExit, match="art-ep40 exists in 2 pipelines"):
        strategy_predicates.variant_members(variants, "art-ep40")


def test_each_experiment_is_read_at_the_round_its_own_params_train_its_final_model_on(strategy_predicates, tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    revisions = []
    # art after its rounds; balanced drawn at once (make compare's ONE_SHOT); an older commit's bare round number
    for final in ("{selection: 2, min_steps: 560}", "{selection: 0, min_steps: 2120}", "2"):
        (tmp_path / "params.yaml").write_text(f"train_on:\n  final: {final}\n")
        subprocess.run(["git", "add", "params.yaml"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"final {final}"], check=True)
        revisions.append(subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip())
    assert [strategy_predicates.final_round_of(rev) for rev in revisions] == [2, 0, 2]
    with pytest.raises(SystemExit, match="params.yaml of experiment"):
        strategy_predicates.final_round_of("0" * 40)
