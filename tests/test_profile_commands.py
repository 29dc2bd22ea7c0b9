"""`reltune profile-commands`: the stage commands DVC would run under a profile and overrides, as a script."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reltune.cli import main
from reltune.profile_commands import rendered_stages, select_stages
from reltune.profiles import load_yaml, merge_profile

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
CANDIDATE = ROOT / "profiles" / "tiny-candidate.yaml"
# what `make compare` adds for a one-shot strategy: no rounds, the final model on the seed selection
ONE_SHOT = ["~sampling.rounds.1", "~sampling.rounds.2", "~train_on.1", "~train_on.2", "train_on.final.selection=0"]


def option(command: str, name: str) -> str:
    """The value after `name` in a rendered command (the first occurrence)."""
    words = shlex.split(command)
    return words[words.index(name) + 1]


def commands_of(stages: list[tuple[str, list[str]]]) -> dict[str, str]:
    assert all(len(commands) == 1 for _, commands in stages)
    return {name: commands[0] for name, commands in stages}


def script_of(capsys, *args: str) -> str:
    assert main(["profile-commands", "--params", str(ROOT / "params.yaml"), "--dvc-yaml", str(DVC_YAML), *args]) == 0
    return capsys.readouterr().out


def refusal(capsys, *args: str) -> str:
    assert main(["profile-commands", "--params", str(ROOT / "params.yaml"), "--dvc-yaml", str(DVC_YAML), *args]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("reltune profile-commands: error: ")
    return message


def test_every_stage_comes_after_the_stages_whose_outputs_its_command_reads():
    stages = rendered_stages(DVC_YAML, PARAMS)
    names = [name for name, _ in stages]
    position = {name: index for index, name in enumerate(names)}
    rounds = list(PARAMS["sampling"]["rounds"])
    assert len(names) == len(set(names)) and names[-1] == "report"
    before = [("world@synthetic", "scenes@synthetic"), ("scenes@synthetic", "instructions"),
              ("scenes@synthetic-ood", "names"), ("instructions", "pretrain-tiny@tiny"),
              ("pretrain-tiny@tiny", "train@1"), ("seed", "train@1")]  # fmt: skip
    for index, key in enumerate(rounds):
        previous_select = "seed" if index == 0 else f"select@{rounds[index - 1]}"
        before += [(previous_select, f"train@{key}"), (f"train@{key}", f"score@{key}"), (f"score@{key}", f"select@{key}")]
    before += [(f"select@{rounds[-1]}", "train@final")]
    for dataset in ("synthetic", "synthetic-ood"):
        for blind in ("blind0", "blind1"):
            before += [("train@final", f"predict@{dataset}-{blind}"), (f"predict@{dataset}-{blind}", f"evaluate@{dataset}-{blind}")]
    for first, then in before:
        assert position[first] < position[then], (first, then)


def test_each_model_trains_on_its_selection_with_its_own_floor_under_the_candidate_profile():
    candidate = merge_profile(PARAMS, load_yaml(CANDIDATE))
    commands = commands_of(rendered_stages(DVC_YAML, candidate, ["sampling.seed=3", "train.seed=3"]))
    assert candidate["train_on"]["final"]["min_steps"] != PARAMS["train_on"]["final"]["min_steps"]
    for model, item in candidate["train_on"].items():
        train = commands[f"train@{model}"]
        assert option(train, "--min-steps") == str(item["min_steps"])
        assert option(train, "--selection") == f"data/loop/round_{item['selection']}/selection.parquet"
        assert option(train, "--seed") == "3" and option(train, "--out") == f"models/round_{model}"
    assert option(commands["seed"], "--seed") == "3"
    assert option(commands["world@synthetic"], "--test-images") == str(candidate["world"]["synthetic"]["test_images"])


def test_one_shot_overrides_remove_the_rounds_and_train_the_final_model_on_the_seed_selection():
    commands = commands_of(rendered_stages(DVC_YAML, PARAMS, [*ONE_SHOT, "sampling.strategy=random"]))
    assert not [name for name in commands if name.split("@")[0] in ("train", "score", "select") and name != "train@final"]
    assert option(commands["train@final"], "--selection") == "data/loop/round_0/selection.parquet"
    assert "report" in commands


def test_the_script_selects_stages_by_pattern_and_runs_in_a_fresh_directory(tmp_path, capsys):
    script = script_of(capsys, "-S", "world.synthetic.train_images=6", "-S", "world.synthetic.test_images=4",
                       "-S", "world.synthetic.ood_images=4", "--stages", "world@*")  # fmt: skip
    assert script.startswith("#!/usr/bin/env bash\n") and "Initialized" not in script
    assert [line for line in script.splitlines() if line.startswith("# stage ")] == ["# stage world@synthetic"]
    (tmp_path / "run.sh").write_text(script)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "run.sh"], cwd=tmp_path, env=environment, check=True, capture_output=True, timeout=300)
    counts = json.loads((tmp_path / "data/raw/synthetic/world_counts.json").read_text())
    assert counts["images"] == {"train_images": 6, "test_images": 4, "ood_images": 4}  # the -S overrides reached it
    assert (tmp_path / "metrics/timing/world@synthetic.json").is_file()


def test_skip_leaves_out_the_stages_whose_outputs_come_from_elsewhere():
    stages = rendered_stages(DVC_YAML, PARAMS)
    kept = [name for name, _ in select_stages(stages, ["train@*", "pretrain-tiny@*"], ["pretrain-tiny@*", "train@1"])]
    assert kept == ["train@2", "train@final"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-S", "train_on.final=2"], "dvc.yaml: DVC cannot render the stages: failed to parse 'stages.train@final.cmd'"),
        (["-S", "no_such_section.key=1"], "-S: Invalid `--set-param` value"),
        (["--stages", "trian@*"], "--stages: 'trian@*' matches no stage"),
        (["--skip", "pretrain@*"], "--skip: 'pretrain@*' matches no stage"),
    ],
)
def test_refusals_are_one_line_and_name_the_cause(args, expected, capsys):
    message = refusal(capsys, *args)
    assert expected in message and "reltune-profile-commands-" not in message


def test_a_missing_profile_is_named(capsys):
    message = refusal(capsys, str(ROOT / "profiles" / "no-such-profile.yaml"))
    assert message.endswith("no-such-profile.yaml: file not found")
