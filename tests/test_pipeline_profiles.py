"""The real-data profile yields valid stage commands, and its data stages run on
small fixtures written in the real VG150 / GQA200 / Open Images layouts."""

import copy

import pandas as pd
import pytest
import yaml

from pipeline_helpers import PROJECT, project_copy, read_params, run_dvc, write_params
from reltune.cli import build_parser
from reltune.profiles import merge_profile, profile_overrides
from test_data_gqa_oi import write_gqa, write_oi
from test_data_vg150 import write_vg150
from test_stage_deps import reltune_arguments, subcommand

PROFILE = PROJECT / "profiles" / "vg150-flan-t5-xl.yaml"


def test_overrides_reproduce_the_merged_profile(tmp_path):
    """What `eval "dvc exp run $(reltune profile-args ...)"` applies equals merge_profile."""
    from dvc.utils.hydra import apply_overrides

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    profile = yaml.safe_load(PROFILE.read_text())
    target = tmp_path / "params.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    apply_overrides(target, profile_overrides(params, profile))
    applied = yaml.safe_load(target.read_text())
    merged = merge_profile(params, profile)
    assert applied == merged
    assert applied["world"] == {} and applied["pretrain_tiny"] == {}
    assert sorted(applied["scenes"]["datasets"]) == ["gqa200", "oiv4", "oiv6", "vg150"]
    assert applied["train"]["warmup_steps"] == 3000 and applied["train_on"]["final"] == {"selection": 5, "min_steps": 0}
    assert applied["train_on"]["5"] == {"selection": 4, "min_steps": 0} and sorted(applied["sampling"]["rounds"]) == ["1", "2", "3", "4", "5"]


def test_override_values_with_quotes_are_refused():
    with pytest.raises(ValueError, match="use --write"):
        profile_overrides({"model": {"backbone": "x"}}, {"model": {"backbone": "/it's/x"}})


def test_printed_overrides_survive_the_shell_with_spaces(tmp_path, capsys):
    """`eval "dvc exp run $(reltune profile-args ...)"`: each override stays one word."""
    import shlex

    from dvc.utils.hydra import apply_overrides

    from reltune.cli import main

    params = {"launch": {"score": "python -m"}, "similarity": {"sentence": "{s} {p} {o}"}}
    profile = {"launch": {"score": "accelerate launch --multi_gpu --num_processes 4 -m"},
               "similarity": {"sentence": "Yes, {s} {p} {o}"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    assert main(["profile-args", "--params", str(tmp_path / "params.yaml"), str(tmp_path / "profile.yaml")]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[0::2] == ["-S", "-S"]
    target = tmp_path / "applied.yaml"
    target.write_text(yaml.safe_dump(params))
    apply_overrides(target, words[1::2])
    assert yaml.safe_load(target.read_text()) == profile


def test_real_profile_commands_parse_and_data_stages_run(tmp_path):
    raw = tmp_path / "raw"
    write_vg150(raw / "vg150")
    write_gqa(raw / "gqa200")
    write_oi(raw / "oiv4")
    write_oi(raw / "oiv6")
    weights = tmp_path / "weights"
    weights.mkdir()

    repo = project_copy(tmp_path / "repo")
    profile = yaml.safe_load(PROFILE.read_text())
    profile = copy.deepcopy(profile)
    for name in profile["download"]:
        profile["download"][name] = {"path": str(raw / name)}
    profile["model"]["backbone"] = str(weights)
    sentence_model = tmp_path / "paraphrase-MiniLM-L6-v2"  # checked to be one when the commands parse
    sentence_model.mkdir()
    (sentence_model / "modules.json").write_text("[]")
    profile["similarity"]["model"] = str(sentence_model)
    profile["sampling"]["budget_fraction"] = 0.5
    profile["scenes"] = {"check_images": False, "datasets": {
        name: {**spec, "val_size": 1} for name, spec in profile["scenes"]["datasets"].items()}}
    write_params(repo, merge_profile(read_params(repo), profile))

    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        stages = {stage.name: stage.cmd for stage in dvc_repo.index.stages}
    expected = {"download@vg150", "scenes@oiv6", "instructions", "seed", "train@5", "score@5", "select@5",
                "train@final", "predict@gqa200-blind0", "evaluate@oiv4-blind0", "evaluate@vg150-blind1"}
    assert expected <= set(stages)
    assert not [name for name in stages if name.startswith(("world", "pretrain-tiny"))]
    for name, command in stages.items():
        arguments = reltune_arguments(command)  # after `reltune` or a launcher's `-m reltune.cli`
        assert arguments is not None, name
        build_parser(subcommand(command)).parse_args(arguments)  # exits (SystemExit) on an invalid command
    assert f"--backbone {weights}" in stages["train@1"]
    assert "--selection data/loop/round_4/selection.parquet --out models/round_5" in stages["train@5"]
    assert "--warmup-steps 3000" in stages["train@final"]
    assert "--selection data/loop/round_5/selection.parquet --out models/round_final" in stages["train@final"]

    run_dvc(repo, "repro", "seed", "scenes@gqa200", "scenes@oiv4", "scenes@oiv6")
    assert (repo / "data" / "raw" / "vg150").is_symlink()
    vg150_train = pd.read_parquet(repo / "data" / "scenes" / "vg150" / "train.parquet")
    # fixture split 0: images 10, 11, 15 have relations; the first (10) is val
    assert vg150_train["image_id"].tolist() == ["11", "15"]
    oi_test = pd.read_parquet(repo / "data" / "scenes" / "oiv6" / "test.parquet")
    assert oi_test["image_id"].tolist() == ["c1"]
    selection = pd.read_parquet(repo / "data" / "loop" / "round_0" / "selection.parquet")
    positives = pd.read_parquet(repo / "data" / "instructions" / "vg150" / "train.parquet").query("kind == 'positive'")
    assert len(positives) == 3 and len(selection) == round(0.5 * 3)
    assert set(selection["reason"]) == {"balanced"} and set(selection["qid"]) <= set(positives["qid"])


def test_the_candidate_profile_applies_through_hydra_with_its_comma_value_whole(tmp_path):
    """`dvc exp run $(reltune profile-args profiles/tiny-candidate.yaml)`: unquoted, Hydra would read the
    comma of converse_predicates as a sweep over two values."""
    from dvc.utils.hydra import apply_overrides

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    profile = yaml.safe_load((PROJECT / "profiles" / "tiny-candidate.yaml").read_text())
    overrides = profile_overrides(params, profile)
    assert "train.converse_predicates='above:below,left of:right of'" in overrides
    target = tmp_path / "params.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    apply_overrides(target, overrides)
    applied = yaml.safe_load(target.read_text())
    assert applied == merge_profile(params, profile)
    assert applied["train"]["converse_predicates"] == "above:below,left of:right of"
    assert applied["instructions"]["negatives"] == "random" and applied["pretrain_tiny"]["tiny"]["relative_where"] is True
    # the synthetic world stays, with larger test splits only: the same training and validation images
    larger_tests = {**params["world"]["synthetic"], "test_images": 5000, "ood_images": 2000}
    assert applied["world"] == {"synthetic": larger_tests}
