"""benchmarks/seed_components.py: the selection's and the training's share of a seed spread."""

import json
import sys

import pytest
import scipy.stats
import yaml

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def seed_components():
    return load_benchmark("seed_components")


def test_balanced_groups_split_by_the_mean_squares(seed_components):
    # by hand: group means 2, 7, 2, grand mean 11/3; SS between 2 * (25/9 + 100/9 + 25/9) = 100/3 over 2 df,
    # SS within 2 + 2 + 0 = 4 over 3 df: MSB 50/3, MSW 4/3, F 12.5, between (MSB - MSW) / 2 = 23/3
    split = seed_components.variance_components([[1.0, 3.0], [6.0, 8.0], [2.0, 2.0]])
    assert split.f_statistic == pytest.approx(12.5)
    assert split.p_value == pytest.approx(scipy.stats.f.sf(12.5, 2, 3))
    assert split.within_variance == pytest.approx(4 / 3)
    assert split.between_variance == pytest.approx(23 / 3)
    assert split.total_variance == pytest.approx(7.0)  # first runs 1, 6, 2


def test_unbalanced_groups_use_the_effective_group_size(seed_components):
    # means 2 and 6, grand 10/3: MSB 2 * 16/9 + 64/9 = 32/3 over 1 df, MSW 2 over 1 df;
    # n0 = (3 - 5/3) / 1 = 4/3, between (32/3 - 2) / (4/3) = 6.5
    split = seed_components.variance_components([[1.0, 3.0], [6.0]])
    assert split.within_variance == pytest.approx(2.0)
    assert split.between_variance == pytest.approx(6.5)
    assert split.f_statistic == pytest.approx((32 / 3) / 2)


def test_selections_no_further_apart_than_training_seeds_get_zero(seed_components):
    split = seed_components.variance_components([[0.0, 10.0], [4.0, 6.0]])  # MSB 0 < MSW 52
    assert split.between_variance == 0.0 and split.within_variance == pytest.approx(26.0)
    with pytest.raises(ValueError):
        seed_components.variance_components([[1.0], [2.0]])  # no group with two runs: no training variance


def make_run(root, name: str, mean_recall: float, recalled: list[int]):
    """A workspace with the held-in metric and per-image recalls (two images, one predicate)."""
    run = root / name
    (run / "metrics" / "per_image").mkdir(parents=True)
    params = {"held_in": "syn", "scenes": {"datasets": {"syn": {}, "ood": {}}}, "evaluate": {"split": "test"}}
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    (run / "metrics" / "syn.json").write_text(json.dumps({"mR@20": mean_recall}))
    document = {"format": "reltune-per-image/1", "ks": [20], "image_id": ["i0", "i1"], "predicate": ["on", "on"], "gt": [1, 1], "recalled@20": recalled}
    (run / "metrics" / "per_image" / "syn.json").write_text(json.dumps(document))
    return run


def test_the_script_reads_each_runs_metric_by_group(seed_components, tmp_path, monkeypatch, capsys):
    runs = [make_run(tmp_path, name, value, [1, 1]) for name, value in [("s0", 1.0), ("s0t", 3.0), ("s1", 6.0), ("s1t", 8.0)]]
    monkeypatch.setattr(sys, "argv", ["seed_components.py", "--group", str(runs[0]), str(runs[1]), "--group", str(runs[2]), str(runs[3])])
    seed_components.main()
    out = capsys.readouterr().out
    assert f"selection of {runs[0]}: mR@20 1.00, 3.00 (mean 2.00)" in out
    # MSB 2 * (2.5^2 + 2.5^2) = 25, MSW 2: F 12.5; between (25 - 2) / 2 = 11.5; first runs 1, 6: variance 12.5
    assert "F 12.50" in out
    # chi-square intervals: within on N - k = 2 degrees of freedom, one run per selection on k - 1 = 1
    within = f"[95% {(2 * 2 / scipy.stats.chi2.ppf(0.975, 2)) ** 0.5:.2f}, {(2 * 2 / scipy.stats.chi2.ppf(0.025, 2)) ** 0.5:.2f}]"
    total = f"[95% {(12.5 / scipy.stats.chi2.ppf(0.975, 1)) ** 0.5:.2f}, {(12.5 / scipy.stats.chi2.ppf(0.025, 1)) ** 0.5:.2f}]"
    assert f"training sd (within a selection) {2 ** 0.5:.2f} {within}; selection sd (between) {11.5 ** 0.5:.2f}" in out
    assert f"sd over one run per selection {12.5 ** 0.5:.2f} {total}; root-mean-square test-image SE 0.00" in out


def test_a_missing_metric_names_the_file(seed_components, tmp_path, monkeypatch):
    runs = [make_run(tmp_path, name, 1.0, [1, 0]) for name in ("a", "b", "c")]
    (runs[2] / "metrics" / "syn.json").unlink()
    monkeypatch.setattr(sys, "argv", ["seed_components.py", "--group", str(runs[0]), str(runs[1]), "--group", str(runs[2])])
    with pytest.raises(SystemExit, match=r"seed_components.py: .*c/metrics/syn.json.*missing"):
        seed_components.main()
