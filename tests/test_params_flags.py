"""Every parameter a stage passes reaches a command-line flag that exists.

Each stage command of dvc.yaml is resolved with params.yaml (and with each
real-data profile merged over it) by DVC itself, then parsed by the reltune
parser: a flag that was renamed or removed, or a value the flag's type
refuses, fails here naming the stage. Conversely every params.yaml value
must be used by some stage, so a parameter added to params.yaml but never
wired into dvc.yaml (or left behind by a removed flag) fails too.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from reltune.cli import build_parser
from reltune.profiles import merge_profile
from test_stage_deps import reltune_arguments, subcommand

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
REAL_PROFILES = [path for path in PROFILES if path.stem.startswith("vg150-")]  # the others keep the synthetic world


def stage_commands(root: Path) -> dict[str, str]:
    """name -> command of every stage of root/dvc.yaml, interpolated with root/params.yaml by DVC."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.name: stage.cmd for stage in repo.index.stages}


def scratch_project(directory: Path, params: dict, dvc_yaml: str | None = None) -> Path:
    """A DVC project (no git) holding only dvc.yaml and the given params."""
    from dvc.repo import Repo

    directory.mkdir(parents=True, exist_ok=True)
    Repo.init(str(directory), no_scm=True).close()
    (directory / "dvc.yaml").write_text(dvc_yaml if dvc_yaml is not None else (ROOT / "dvc.yaml").read_text())
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return directory


def command_problems(commands: dict[str, str]) -> list[str]:
    """'stage: parser message' for every command the reltune parser refuses."""
    problems = []
    for name, command in sorted(commands.items()):
        arguments = reltune_arguments(command)
        if arguments is None:
            problems.append(f"{name}: not a reltune command: {command[:60]}")
            continue
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                build_parser(subcommand(command)).parse_args(arguments)
        except SystemExit:
            problems.append(f"{name}: {errors.getvalue().strip().splitlines()[-1]}")
    return problems


def parameter_leaves(tree: object, prefix: str = "") -> list[str]:
    """Dotted paths of the values of a params mapping (an empty mapping holds none)."""
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in parameter_leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def used_patterns(dvc_yaml: dict) -> list[str]:
    """Regexes of the params paths dvc.yaml reads: `${a.b}` references, and `${item.x}` inside a
    foreach/matrix over `${group}` (any key of group, then x)."""
    patterns = []
    for definition in dvc_yaml["stages"].values():
        # the stage body: the foreach/matrix source itself is no use of the params under it
        text = yaml.safe_dump({key: value for key, value in definition.items() if key not in ("foreach", "matrix")})
        sources = []
        if "foreach" in definition:
            sources.append(("item", definition["foreach"]))
        for axis, values in (definition.get("matrix") or {}).items():
            sources.append((f"item.{axis}", values))
        for reference in re.findall(r"\$\{([^}]+)\}", text):
            reference = reference.strip()
            source = next((group for alias, group in sources if reference == alias or reference.startswith(alias + ".")), None)
            if source is not None:
                if not isinstance(source, str) or not source.startswith("${"):
                    continue  # a literal list in dvc.yaml, not params
                group = source.strip("${} ")
                alias = next(a for a, g in sources if g is source)
                rest = reference[len(alias):]
                patterns.append(re.escape(group) + r"\.[^.]+" + re.escape(rest))
            elif reference != "key":
                patterns.append(re.escape(reference))
    return patterns


def subparser(parser, name: str):
    """The parser of one subcommand."""
    import argparse

    choices = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices
    return choices[name]


def unused_parameters(params: dict, dvc_yaml: dict) -> list[str]:
    patterns = [re.compile(pattern + r"(\..*)?$") for pattern in used_patterns(dvc_yaml)]
    return [leaf for leaf in parameter_leaves(params) if not any(pattern.match(leaf) for pattern in patterns)]


@pytest.fixture(scope="module")
def commands() -> dict[str, str]:
    return stage_commands(ROOT)


def test_every_stage_command_parses(commands):
    assert {"seed", "train@final", "select@1", "evaluate@synthetic-blind1"} <= set(commands)
    problems = command_problems(commands)
    assert not problems, "stage commands the reltune parser refuses:\n" + "\n".join(problems)


@pytest.mark.parametrize("profile", PROFILES, ids=[path.stem for path in PROFILES])
def test_every_stage_command_of_a_profile_parses(profile, tmp_path):
    params = merge_profile(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(profile.read_text()))
    # the profile's local sentence-model directory is checked when score/evaluate parse
    sentence_model = tmp_path / "paraphrase-MiniLM-L6-v2"
    sentence_model.mkdir()
    (sentence_model / "modules.json").write_text("[]")
    params["similarity"]["model"] = str(sentence_model)
    commands = stage_commands(scratch_project(tmp_path / "project", params))
    if profile in REAL_PROFILES:
        assert "train@5" in commands and not any(name.startswith("world") for name in commands)
    else:
        assert "train@2" in commands and "world@synthetic" in commands and "pretrain-tiny@tiny" in commands
    problems = command_problems(commands)
    assert not problems, f"{profile.name}: stage commands the reltune parser refuses:\n" + "\n".join(problems)


def test_a_renamed_flag_and_a_refused_value_are_reported(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    renamed = (ROOT / "dvc.yaml").read_text().replace("--z-init ", "--z-start ")
    problems = command_problems(stage_commands(scratch_project(tmp_path / "renamed", params, renamed)))
    assert [problem.partition(":")[0] for problem in problems] == ["select@1", "select@2"]
    assert all("unrecognized arguments: --z-start" in problem for problem in problems)

    params["sampling"]["z_step"] = "fast"
    problems = command_problems(stage_commands(scratch_project(tmp_path / "bad-value", params)))
    assert [problem.partition(":")[0] for problem in problems] == ["select@1", "select@2"]
    assert all("argument --z-step" in problem and "'fast'" in problem for problem in problems)


def test_every_parameter_is_used_by_a_stage():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert not unused_parameters(params, dvc_yaml), "params.yaml values no stage passes on"
    params["sampling"]["forgotten"] = 3
    params["world"]["synthetic"]["new_knob"] = 1
    assert unused_parameters(params, dvc_yaml) == ["world.synthetic.new_knob", "sampling.forgotten"]


def test_the_round_chain_and_the_trained_models_agree():
    """train_on has one model per loop round (trained on that round's predecessor) and `final` on the last selection."""
    from reltune.plan import round_chain

    for path in [ROOT / "params.yaml", *PROFILES]:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        if path != ROOT / "params.yaml":
            params = merge_profile(params, yaml.safe_load(path.read_text()))
        rounds = params["sampling"]["rounds"]
        _, models = round_chain(params, path)  # refuses items of the wrong form
        assert {key: models[key].selection for key in rounds} == {key: item["previous"] for key, item in rounds.items()}, path.name
        assert set(models) == set(rounds) | {"final"}, path.name
        last = max((int(key) for key in rounds), default=0)
        assert models["final"].selection == last, path.name


def test_score_and_select_share_the_sampling_defaults():
    """One home for the selection defaults: both commands take them from SamplingSettings."""
    from reltune.sampling.settings import SamplingSettings

    settings = SamplingSettings()
    select = build_parser("select").parse_args(["select", "--instructions", "i", "--round", "0", "--strategy", "art", "--out", "o"])
    assert (select.budget_fraction, select.seed, select.z_init, select.z_step) == (
        settings.budget_fraction, settings.seed, settings.z_init, settings.z_step)
    assert list(select.components) == list(settings.components)
    assert dict(select.fixed_thresholds) == dict(settings.fixed_thresholds)
    score_defaults = {action.dest: action.default for action in subparser(build_parser("score"), "score")._actions}
    assert score_defaults["budget_fraction"] == settings.budget_fraction
    assert score_defaults["pool_cap_factor"] == settings.pool_cap_factor
    assert score_defaults["seed"] == settings.seed


def test_the_tiny_model_sizes_in_params_reach_the_pretraining_sizes(tmp_path):
    """`dvc exp run -S pretrain_tiny.tiny.text_d_model=64` builds a 64-wide language model: the size
    params pass through DVC's interpolation and the parser to the sizes pretrain-tiny builds with."""
    from reltune.models.backbone import TinySizes
    from reltune.models.commands import _sizes

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = TinySizes()
    wired = ("vision_layers", "qformer_layers", "text_d_model", "text_d_ff", "text_layers")
    assert {name: params["pretrain_tiny"]["tiny"][name] for name in wired} == {name: getattr(defaults, name) for name in wired}
    changed = dict(vision_layers=1, qformer_layers=3, text_d_model=64, text_d_ff=96, text_layers=4)
    params["pretrain_tiny"]["tiny"].update(changed)
    command = stage_commands(scratch_project(tmp_path / "project", params))["pretrain-tiny@tiny"]
    sizes = _sizes(build_parser(subcommand(command)).parse_args(reltune_arguments(command)))
    assert {name: sizes[name] for name in wired} == changed
    assert sizes["vision_hidden"] == defaults.vision_hidden  # the sizes not in params keep their defaults
