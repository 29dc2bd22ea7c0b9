"""benchmarks/seed_round.py: the pipeline's own seed-round commands, rewritten for one strategy and seed."""

from pathlib import Path

import pytest
import yaml

from benchmark_helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seed_round():
    return load_benchmark("seed_round")


@pytest.fixture(scope="module")
def locked(seed_round):
    """The committed dvc.lock's seed, train@1 and score@1 arguments."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    return seed_round.stage_arguments(lock, seed_round.SEED_ROUND_STAGES, "dvc.lock")


def flags(arguments: list[str]) -> dict[str, str]:
    """Flag -> value of a reltune argument list (the subcommand word dropped)."""
    words = [word for word in arguments if word not in ("select", "train", "score")]
    return dict(zip(words[::2], words[1::2]))


def test_the_seed_round_runs_the_locked_commands_with_only_strategy_seed_and_outputs_replaced(seed_round, locked, tmp_path):
    select, train, score = seed_round.seed_round_commands(locked, "random", 3, tmp_path, seed_round.Overrides())
    assert [select[2], train[2], score[2]] == ["select", "train", "score"]
    replaced = {
        0: {"--strategy": "random", "--seed": "3", "--out": str(tmp_path / "round_0"), "--timing": str(tmp_path / "seed_timing.json")},
        1: {"--selection": str(tmp_path / "round_0" / "selection.parquet"), "--out": str(tmp_path / "model"), "--seed": "3",
            "--checkpoint-every": "0", "--timing": str(tmp_path / "train_timing.json")},
        2: {"--backbone": str(tmp_path / "model"), "--selection": str(tmp_path / "round_0" / "selection.parquet"),
            "--out": str(tmp_path / "round_1"), "--strategy": "random", "--seed": "3", "--timing": str(tmp_path / "score_timing.json")},
    }  # fmt: skip
    for index, command in enumerate((select, train, score)):
        assert flags(command) == {**flags(locked[index]), **replaced[index]}
    # the train flags are the stage's, so the run trains as train@1 does (min_steps included)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert flags(train)["--min-steps"] == str(params["train_on"]["1"]["min_steps"])
    assert flags(train)["--name-substitution-mode"] == params["train"]["name_substitution_mode"]
    assert flags(train)["--exclude-names-of"] == "data/names.json"  # the names stage's file


def test_overrides_replace_the_budget_and_training_length_only_where_asked(seed_round, locked, tmp_path):
    overrides = seed_round.Overrides(budget_fraction=0.08, epochs=40, min_steps=0)
    select, train, score = seed_round.seed_round_commands(locked, "balanced", 0, tmp_path, overrides)
    assert flags(select)["--budget-fraction"] == flags(score)["--budget-fraction"] == "0.08"
    assert (flags(train)["--epochs"], flags(train)["--min-steps"]) == ("40", "0")
    assert flags(train)["--lr"] == flags(locked[1])["--lr"]  # not overridden: as locked


def test_a_lock_without_the_seed_round_stages_is_refused_by_name(seed_round):
    lock = {"stages": {"seed": {"cmd": "reltune --timing t.json select --seed 0"}}}
    with pytest.raises(SystemExit, match=r"my\.lock has no stage train@1, score@1"):
        seed_round.stage_arguments(lock, seed_round.SEED_ROUND_STAGES, "my.lock")
