"""benchmarks/issue16_targets.py: the checks of issue 16's parts 1, 3 and 4 on crafted runs."""

import json
import math

import pandas as pd
import pytest

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def targets():
    return load_benchmark("issue16_targets")


HELD_IN = pd.DataFrame(
    {
        "predicate": ["on", "near", "left of", "riding"],
        "gt_relations": [100, 50, 20, 10],
        "seen_in_training": [True, True, True, True],
        "R@20": [100.0, 80.0, 0.0, 90.0],
    }
)
HELD_OUT = pd.DataFrame(
    {
        "predicate": ["on", "near", "riding", "left of", "playing"],
        "gt_relations": [40, 20, 5, 0, 12],
        "seen_in_training": [True, True, True, True, False],
        "R@20": [75.0, 40.0, 90.0, 0.0, 0.0],
    }
)


def test_transfer_ratios_cover_seen_predicates_both_splits_annotate(targets):
    ratios = targets.transfer_ratios(HELD_IN, HELD_OUT)
    # `left of` has no held-out relation, `playing` was never seen: neither is a transfer ratio
    assert sorted(ratios.index) == ["near", "on", "riding"]
    assert ratios["on"] == pytest.approx(0.75)
    assert ratios["near"] == pytest.approx(0.5)
    assert ratios["riding"] == pytest.approx(1.0)


def test_a_predicate_never_recalled_held_in_has_no_ratio(targets):
    held_in = HELD_IN.assign(**{"R@20": [0.0, 80.0, 0.0, 90.0]})
    assert math.isnan(targets.transfer_ratios(held_in, HELD_OUT)["on"])


def test_transfer_checks_judge_each_ratio_and_both_multiples(targets):
    ratios = targets.transfer_ratios(HELD_IN, HELD_OUT)
    checks = targets.transfer_checks("full-seed0", ratios, held_out_mgr=12.0, blind_mgr=5.0, chance_mgr=1.5)
    by_what = {check.what.split(" (")[0]: check for check in checks}
    assert [by_what[f"held-out / held-in R@20 of {p}"].met for p in ("near", "on", "riding")] == [False, True, True]
    assert by_what["held-out mgR@20 / blind control"].value == pytest.approx(2.4)
    assert not by_what["held-out mgR@20 / blind control"].met
    assert by_what["held-out mgR@20 / chance"].value == pytest.approx(8.0)
    assert by_what["held-out mgR@20 / chance"].met


def test_predicate_checks_name_every_predicate_below_the_bar(targets):
    lowest, mean = targets.predicate_checks("full-seed0", HELD_IN, held_in_mean_recall=92.5)
    assert lowest.value == 0.0 and not lowest.met
    assert "left of" in lowest.what and "2 below: near, left of" not in lowest.what
    assert "1 below: left of" in lowest.what  # near at exactly 80 meets the target
    assert mean.met and mean.value == 92.5


def test_predicate_checks_give_the_lowest_predicate_its_interval_from_an_experiments_per_image_file(targets, tmp_path, monkeypatch):
    # `left of` (the lowest, R@20 0) recalled on 0 of 3 images, `near` on 1 of 2: the workspace's per-image file
    document = {
        "format": "reltune-per-image/1", "ks": [20], "image_id": ["a", "b", "c", "d", "e"],
        "predicate": ["left of", "left of", "left of", "near", "near"], "gt": [1, 1, 2, 1, 1], "recalled@20": [0, 0, 0, 1, 0],
    }  # fmt: skip
    (tmp_path / "metrics" / "per_image").mkdir(parents=True)
    (tmp_path / "metrics" / "per_image" / "syn.json").write_text(json.dumps(document))
    monkeypatch.chdir(tmp_path)
    recalls = targets.aligned_variant([{"rev": "workspace", "experiment": "full-seed0"}], "syn", targets.read_revision_json)
    assert recalls.image_ids == ["a", "b", "c", "d", "e"] and recalls.predicates == ["left of", "near"]
    lowest, _ = targets.predicate_checks("full-seed0", HELD_IN, 92.5, recalls)
    assert "(left of, 95% [0.0, 0.0]; 1 below: left of)" in lowest.what
    # the interval is the lowest predicate's: another lowest gets its own
    lowest_near, _ = targets.predicate_checks("full-seed0", HELD_IN.assign(**{"R@20": [100.0, 50.0, 90.0, 90.0]}), 92.5, recalls)
    assert "(near, 95% [0.0, 100.0]; 1 below: near)" in lowest_near.what


def test_seed_spread_uses_sample_sd_of_each_strategy(targets):
    rows = [
        {"experiment": "art-seed0", "seed": 0, "synthetic mR@20": 30.0},
        {"experiment": "art-seed1", "seed": 1, "synthetic mR@20": 36.0},
        {"experiment": "random-seed0", "seed": 0, "synthetic mR@20": 20.0},
        {"experiment": "random-seed1", "seed": 1, "synthetic mR@20": 21.0},
        {"experiment": "full-seed0", "seed": 0, "synthetic mR@20": 70.0},
        {"experiment": "full-seed1", "seed": 1, "synthetic mR@20": 90.0},
    ]
    checks = {check.subject: check for check in targets.seed_spread_checks(rows, "synthetic", ("art", "random"))}
    assert set(checks) == {"art", "random"}  # full is not a strategy part 1 bounds
    assert checks["art"].value == pytest.approx(4.242640687)
    assert not checks["art"].met
    assert checks["random"].value == pytest.approx(0.707106781) and checks["random"].met
    assert "(95% interval 1.89-135.38)" in checks["art"].what  # chi-square table, 1 df: 5.0239 and 0.00098207


def test_sd_interval_matches_the_chi_square_table(targets):
    # 4 degrees of freedom: chi-square 2.5% / 97.5% points 0.4844 and 11.1433 (printed tables)
    low, high = targets.sd_interval(2.81, seeds=5)
    assert low == pytest.approx(2.81 * (4 / 11.1433) ** 0.5, rel=1e-4)
    assert high == pytest.approx(2.81 * (4 / 0.4844) ** 0.5, rel=1e-4)
    assert low < 2.81 < high


def test_variant_runs_are_by_seed_and_an_unknown_variant_names_the_known_ones(targets):
    variants = {
        "full": [{"experiment": "full-seed1", "seed": 1}, {"experiment": "full-seed0", "seed": 0}],
        "full-neg2 @87479b5": [{"experiment": "full-neg2-seed0", "seed": 0}],
    }
    assert [run["experiment"] for run in targets.variant_runs(variants, "full")] == ["full-seed0", "full-seed1"]
    assert [run["experiment"] for run in targets.variant_runs(variants, "full-neg2 @87479b5")] == ["full-neg2-seed0"]
    assert [run["experiment"] for run in targets.variant_runs(variants, "full-neg2")] == ["full-neg2-seed0"]  # label optional
    with pytest.raises(SystemExit, match="no experiments of variant 'full-x'; variants: full, full-neg2 @87479b5"):
        targets.variant_runs(variants, "full-x")
    assert targets.variant_runs({"art": []}, "full", required=False) == []  # `full` not run: parts 3-4 skipped
