"""benchmarks/larger_test.py: re-testing runs on a larger world runs dvc.yaml's own commands."""

import json
import shutil

import pytest
import yaml

from benchmark_helpers import load_benchmark
from test_params_flags import ROOT, stage_commands
from test_stage_deps import reltune_arguments


@pytest.fixture(scope="module")
def larger_test():
    return load_benchmark("larger_test")


def without_timing(arguments: list[str]) -> list[str]:
    """reltune's arguments with the global `--timing FILE` (only the stages write timing files) removed."""
    if arguments[:1] == ["--timing"]:
        return arguments[2:]
    return arguments


def as_stage_arguments(command: list[str]) -> list[str]:
    """reltune's arguments in a command list, read as the stage commands are (after `-m reltune.cli`)."""
    return reltune_arguments(" ".join(f"'{word}'" for word in command))


def test_commands_are_the_stage_commands_of_the_committed_params(larger_test):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = {name: without_timing(reltune_arguments(command)) for name, command in stage_commands(ROOT).items()}
    (world,) = params["world"].values()
    commands = larger_test.world_commands(params, world["test_images"], world["ood_images"])
    expected = [stages["world@synthetic"]] + [stages[f"scenes@{dataset}"] for dataset in params["scenes"]["datasets"]]
    assert [as_stage_arguments(command) for command in commands] == expected
    # the held-in dataset, the held-out one and the held-out blind control: predict then evaluate
    stage_names = ["synthetic-blind0", "synthetic-ood-blind0", "synthetic-ood-blind1"]
    expected = [stages[f"{kind}@{name}"] for name in stage_names for kind in ("predict", "evaluate")]
    assert [as_stage_arguments(command) for command in larger_test.evaluation_commands(params)] == expected


def test_the_world_command_takes_the_larger_splits_and_nothing_else(larger_test):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (world_command, *_) = larger_test.world_commands(params, 5000, 2000)
    (world,) = params["world"].values()
    assert world_command[world_command.index("--test-images") + 1] == "5000"
    assert world_command[world_command.index("--ood-images") + 1] == "2000"
    assert world_command[world_command.index("--train-images") + 1] == str(world["train_images"])


def test_a_run_trained_on_other_scenes_is_refused(larger_test, tmp_path):
    run, world = tmp_path / "wt_s0", tmp_path / "out" / "world"
    for root in (run, world):
        (root / "data" / "scenes" / "syn").mkdir(parents=True)
        for name in larger_test.TRAINING_SCENE_FILES:
            (root / "data" / "scenes" / "syn" / name).write_text(f"{name} of the world")
    larger_test.check_same_training_scenes(run, world, "syn")  # identical: accepted
    (world / "data" / "scenes" / "syn" / "val.parquet").write_text("another validation split")
    with pytest.raises(Exception, match=r"wt_s0/data/scenes/syn/val.parquet: differs from the larger world's"):
        larger_test.check_same_training_scenes(run, world, "syn")
    shutil.rmtree(run / "data")
    with pytest.raises(Exception, match="train.parquet: missing"):
        larger_test.check_same_training_scenes(run, world, "syn")


def test_an_existing_world_of_other_sizes_is_refused(larger_test, tmp_path):
    counts = tmp_path / "world" / "data" / "raw" / "synthetic" / "world_counts.json"
    counts.parent.mkdir(parents=True)
    counts.write_text(json.dumps({"images": {"train_images": 2800, "test_images": 5000, "ood_images": 2000}}))
    larger_test.check_world_size(tmp_path / "world", 5000, 2000)  # the one asked for: reused
    with pytest.raises(Exception, match=r"world_counts.json: has 5000 test / 2000 held-out images, not 3000 / 2000"):
        larger_test.check_world_size(tmp_path / "world", 3000, 2000)
