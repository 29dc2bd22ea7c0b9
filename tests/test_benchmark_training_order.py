"""benchmarks/training_order.py: variants, rewritten locked commands, the input check and the spread summary."""

import argparse
import json
import math

import pytest
from scipy import stats

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def order():
    return load_benchmark("training_order")


def test_variants_parse_flags_and_refuse_malformed_ones(order):
    assert order.parse_variant("base=") == order.Variant("base", {})
    assert order.parse_variant("slow=--lr 0.0003 --epochs 40") == order.Variant("slow", {"--lr": "0.0003", "--epochs": "40"})
    for bad in ("base", "=--lr 1", "x=--lr", "x=lr 0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME="):
            order.parse_variant(bad)


LOCK = {
    "stages": {
        "train@final": {
            "cmd": "reltune --timing metrics/timing/train@final.json train --selection data/loop/round_2/selection.parquet --out models/round_final --seed 0 --lr 0.001",
            "deps": [
                {"path": "models/tiny-pretrained", "md5": "a.dir"},
                {"path": "data/loop/round_2/selection.parquet", "md5": "b"},
                {"path": "src/reltune/models", "md5": "c.dir"},
            ],
        },
        "predict@synthetic-blind0": {
            "cmd": "python -m reltune.cli --timing t.json predict --backbone models/round_final --out data/predictions/synthetic.parquet",
            "deps": [{"path": "models/round_final", "md5": "d.dir"}, {"path": "data/scenes/synthetic", "md5": "e.dir"}],
        },
        "evaluate@synthetic-blind0": {
            "cmd": "reltune --timing e.json evaluate --predictions data/predictions/synthetic.parquet --out metrics/synthetic.json "
            "--details metrics/details/synthetic.json --per-predicate metrics/per_predicate/synthetic.csv "
            "--per-image metrics/per_image/synthetic.json --similarity-sentence '{s} {p} {o}'",
            "deps": [{"path": "data/predictions/synthetic.parquet", "md5": "f"}],
        },
    }
}


def test_locked_commands_drop_either_program_prefix_and_keep_quoted_values(order):
    train, predict, evaluate = order.locked_commands(LOCK, "synthetic")
    assert train[:3] == ["--timing", "metrics/timing/train@final.json", "train"]
    assert predict[:3] == ["--timing", "t.json", "predict"]
    assert evaluate[:4] == ["--timing", "e.json", "evaluate", "--predictions"]
    assert evaluate[-2:] == ["--similarity-sentence", "{s} {p} {o}"]
    with pytest.raises(SystemExit, match="no stage predict@other-blind0"):
        order.locked_commands(LOCK, "other")


def test_replace_flags_changes_only_the_named_values_and_refuses_unknown_flags(order):
    train = order.locked_commands(LOCK, "synthetic")[0]
    replaced = order.replace_flags(train, {"--seed": "3", "--lr": "0.0003"}, "variant slow")
    assert replaced == [*train[:-4], "--seed", "3", "--lr", "0.0003"]
    assert train[-1] == "0.001"  # the locked command is not changed in place
    with pytest.raises(SystemExit, match="variant slow: the locked command has no --epochs"):
        order.replace_flags(train, {"--epochs": "40"}, "variant slow")


def test_inputs_and_code_must_match_except_moved_paths(order):
    moved = {"data/loop/round_2/selection.parquet", "models/round_final", "data/predictions/synthetic.parquet"}
    workspace = {"stages": {name: {"deps": [dict(dep) for dep in stage["deps"]]} for name, stage in LOCK["stages"].items()}}
    workspace["stages"]["train@final"]["deps"][1]["md5"] = "other"  # the selection is moved: it may differ
    order.check_same_inputs(LOCK, workspace, "synthetic", moved)
    workspace["stages"]["train@final"]["deps"][2]["md5"] = "other"
    with pytest.raises(SystemExit, match="train@final: the workspace's src/reltune/models is not the experiment's"):
        order.check_same_inputs(LOCK, workspace, "synthetic", moved)
    workspace["stages"]["train@final"]["deps"][2]["md5"] = "c.dir"
    workspace["stages"]["predict@synthetic-blind0"]["deps"][1]["md5"] = "other"
    with pytest.raises(SystemExit, match="predict@synthetic-blind0: the workspace's data/scenes/synthetic is not the experiment's"):
        order.check_same_inputs(LOCK, workspace, "synthetic", moved)


def run(variant, seed, value, experiment="balanced-seed0"):
    return {"experiment": experiment, "variant": variant, "seed": seed, "mR@20": value}


def test_summary_gives_seed_sd_its_interval_and_levene_against_the_first_variant(order):
    variants = [order.Variant("base", {}), order.Variant("slow", {"--lr": "0.0003"})]
    # balanced-seed0's selection retrained with train.seed 0, 1, 2 (this script, README part 1) gave sd 3.15
    runs = [run("base", seed, value) for seed, value in enumerate([38.00, 40.24, 44.22])]
    runs += [run("slow", seed, value) for seed, value in reversed(list(enumerate([41.0, 41.5, 40.5])))]
    errors = {order.run_key(member): 1.0 for member in runs} | {("balanced-seed0", "slow", 2): 0.0}
    base, slow = order.summary_rows(runs, ["balanced-seed0"], variants, 3, errors)
    assert base["sd"] == pytest.approx(3.15, abs=0.005)
    assert base["levene_p_vs_first"] is None and base["flags"] == ""
    assert slow["values"] == [41.0, 41.5, 40.5]  # ordered by seed whatever the run order
    assert slow["flags"] == "--lr 0.0003" and slow["spread_over"] == "train.seed 0..2 on balanced-seed0's selection"
    assert slow["mean"] == pytest.approx(41.0) and slow["sd"] == pytest.approx(0.5)
    # chi-square interval with 2 degrees of freedom: sd * sqrt(2 / chi2_{0.975}) .. sd * sqrt(2 / chi2_{0.025})
    assert slow["sd_low"] == pytest.approx(0.5 * math.sqrt(2 / 7.3778), rel=1e-4)
    assert slow["sd_high"] == pytest.approx(0.5 * math.sqrt(2 / 0.050636), rel=1e-4)
    assert base["test_image_se"] == pytest.approx(1.0) and base["rest"] == pytest.approx(math.sqrt(3.15**2 - 1.0), abs=0.01)
    assert slow["test_image_se"] == pytest.approx(math.sqrt(2 / 3))
    assert slow["rest"] == 0.0  # an sd below the test-image SE leaves nothing for the models
    # median-centred Levene = one-way ANOVA of the absolute deviations from each variant's median
    anova = stats.f_oneway([40.24 - 38.00, 0.0, 44.22 - 40.24], [0.0, 0.5, 0.5])
    assert slow["levene_p_vs_first"] == pytest.approx(anova.pvalue, rel=1e-9)


def test_summary_with_several_experiments_adds_the_spread_over_draws_per_train_seed(order):
    variants = [order.Variant("base", {})]
    values = {("a", 0): 10.0, ("a", 1): 12.0, ("a", 2): 11.0, ("b", 0): 20.0, ("b", 1): 26.0, ("b", 2): 23.0}
    runs = [run("base", seed, value, experiment) for (experiment, seed), value in values.items()]
    rows = order.summary_rows(runs, ["a", "b"], variants, 3, {order.run_key(member): 0.0 for member in runs})
    assert [row["spread_over"] for row in rows] == [
        "train.seed 0..2 on a's selection", "train.seed 0..2 on b's selection",
        "selections of a, b, train.seed 0", "selections of a, b, train.seed 1", "selections of a, b, train.seed 2",
    ]  # fmt: skip
    assert [row["values"] for row in rows] == [[10.0, 12.0, 11.0], [20.0, 26.0, 23.0], [10.0, 20.0], [12.0, 26.0], [11.0, 23.0]]
    assert [row["sd"] for row in rows] == pytest.approx([1.0, 3.0, math.sqrt(50), math.sqrt(98), math.sqrt(72)])
    # Levene only against the first row of the same kind, and only with 3+ values on both sides
    anova = stats.f_oneway([1.0, 1.0, 0.0], [3.0, 3.0, 0.0])
    assert rows[0]["levene_p_vs_first"] is None and rows[1]["levene_p_vs_first"] == pytest.approx(anova.pvalue, rel=1e-9)
    assert all(row["levene_p_vs_first"] is None for row in rows[2:])
    # one train seed: only the spread over draws
    first_seed = [member for member in runs if member["seed"] == 0]
    assert [row["values"] for row in order.summary_rows(first_seed, ["a", "b"], variants, 1, {order.run_key(m): 0.0 for m in runs})] == [[10.0, 20.0]]


def per_image(path, recalled):
    """A per-image file of two images, one `on` relation each, recalled as given."""
    document = {"format": "reltune-per-image/1", "ks": [20], "image_id": ["1", "2"], "predicate": ["on", "on"], "gt": [1, 1], "recalled@20": recalled}
    path.write_text(json.dumps(document))
    return path


def test_test_image_errors_are_zero_for_a_constant_run_and_equal_for_equal_runs(order, tmp_path):
    runs = [
        run("base", 0, 100.0) | {"per_image": per_image(tmp_path / "a.json", [1, 1])},
        run("base", 1, 50.0) | {"per_image": per_image(tmp_path / "b.json", [1, 0])},
        run("slow", 0, 50.0) | {"per_image": per_image(tmp_path / "c.json", [0, 1])},
    ]
    errors = order.test_image_errors(runs, 20, 999)
    assert errors[("balanced-seed0", "base", 0)] == 0.0  # every resample of images recalls everything
    # one of two images recalled: a resample's mR is 0, 50 or 100 with probabilities 1/4, 1/2, 1/4 -> SE about 35.4
    assert errors[("balanced-seed0", "base", 1)] == pytest.approx(100 * math.sqrt(1 / 8), rel=0.1)
    assert errors[("balanced-seed0", "slow", 0)] == pytest.approx(errors[("balanced-seed0", "base", 1)], rel=0.1)


def test_one_run_moves_every_output_into_its_run_directory_and_restarts_an_interrupted_run(order, tmp_path, monkeypatch):
    commands = order.locked_commands(LOCK, "synthetic")
    experiment = order.Experiment("balanced-seed0", "abc", commands, tmp_path / "selection.parquet", 38.0, 0)
    run_dir = tmp_path / "work" / "balanced-seed0" / "slow" / "seed3"
    run_dir.mkdir(parents=True)
    (run_dir / "half-written.bin").write_text("left by a killed run")
    ran = []

    def fake_run(arguments_list, log, threads):
        assert threads == 1
        ran.extend(arguments_list)
        (run_dir / "metrics.json").write_text(json.dumps({"mR@20": 41.5}))

    monkeypatch.setattr(order, "run_commands", fake_run)
    variant = order.Variant("slow", {"--lr": "0.0003"})
    result = order.one_run(tmp_path / "work", experiment, variant, 3, threads=1)
    assert result["mR@20"] == 41.5 and result["per_image"] == run_dir / "per_image.json"
    assert not (run_dir / "half-written.bin").exists() and (run_dir / "wall_seconds.txt").exists()
    train, predict, evaluate = ran
    value = {flag: arguments[arguments.index(flag) + 1] for arguments in (train,) for flag in ("--selection", "--out", "--seed", "--lr", "--timing")}
    assert value == {"--selection": str(tmp_path / "selection.parquet"), "--out": str(run_dir / "model"), "--seed": "3",
                     "--lr": "0.0003", "--timing": str(run_dir / "train_timing.json")}  # fmt: skip
    assert predict[predict.index("--backbone") + 1] == str(run_dir / "model")
    assert predict[predict.index("--out") + 1] == str(run_dir / "predictions.parquet")
    assert evaluate[evaluate.index("--predictions") + 1] == str(run_dir / "predictions.parquet")
    # nothing the pipeline owns is written: every path a command writes lies in the run directory
    outputs = ("--out", "--timing", "--details", "--per-predicate", "--per-image")
    written = [arguments[arguments.index(flag) + 1] for arguments in ran for flag in outputs if flag in arguments]
    assert len(written) == 9 and all(path.startswith(str(run_dir)) for path in written)
    # a finished run is read back, not run again
    ran.clear()
    assert order.one_run(tmp_path / "work", experiment, variant, 3)["mR@20"] == 41.5 and ran == []


def test_runs_side_by_side_get_their_share_of_the_cores_as_omp_threads(order, tmp_path, monkeypatch):
    assert [order.threads_per_job(jobs, cores=2) for jobs in (1, 2, 3)] == [2, 1, 1]
    assert order.threads_per_job(2, cores=16) == 8
    seen = []

    def fake_subprocess_run(command, stdout, stderr, env):
        seen.append((command[3], None if env is None else env["OMP_NUM_THREADS"]))
        return argparse.Namespace(returncode=0)

    monkeypatch.setattr(order.subprocess, "run", fake_subprocess_run)
    order.run_commands([["train"], ["predict"]], tmp_path / "log.txt", threads=1)
    order.run_commands([["evaluate"]], tmp_path / "log.txt")  # 0: the environment as it is
    assert seen == [("train", "1"), ("predict", "1"), ("evaluate", None)]
