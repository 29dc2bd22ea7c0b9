"""Every stage command refuses out-of-domain arguments before any work (issue 13, classes 3 and 4).

The parsers are walked, not listed by hand: every option of every subcommand
that takes a number or a boolean must use a checked type from
reltune.argtypes (which declares its domain) or a custom type with known bad
values below. Hypothesis then draws values outside each domain; each must end
in exit code 2, exactly one stderr line naming the flag, no output written,
and no time spent (the parse fails before the command starts).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reltune.cli
from reltune.argtypes import Domain
from reltune.errors import InputError

# The stage commands with their required arguments: {missing} never exists, everything a command
# writes lies under {out}; neither may appear.
STAGE_COMMANDS = {
    "data import": ["--format", "vg150", "--src", "{missing}", "--out", "{out}"],
    "data world": ["--out", "{out}"],
    "data download": ["--dataset", "x", "--out", "{out}", "--path", "{missing}"],
    "data names": ["--scenes", "{missing}", "--out", "{out}/names.json"],
    "instructions": ["--scenes", "{missing}", "--out", "{out}"],
    "select": ["--instructions", "{missing}", "--round", "1", "--strategy", "art", "--out", "{out}"],
    "build-tiny": ["--scenes", "{missing}", "--world", "{missing}", "--out", "{out}"],
    "pretrain-tiny": ["--scenes", "{missing}", "--world", "{missing}", "--out", "{out}/m", "--metrics", "{out}/m.json"],
    "train": ["--backbone", "{missing}", "--instructions", "{missing}", "--scenes", "{missing}", "--out", "{out}"],
    "score": [
        "--backbone", "{missing}", "--instructions", "{missing}", "--scenes", "{missing}", "--selection", "{missing}",
        "--val-instructions", "{missing}", "--out", "{out}",
    ],  # fmt: skip
    "predict": ["--backbone", "{missing}", "--scenes", "{missing}", "--out", "{out}/p.parquet"],
    "evaluate": ["--scenes", "{missing}", "--predictions", "{missing}", "--train-vocab", "{missing}", "--out", "{out}/e.json"],
    "report": [
        "--loop-dir", "{missing}", "--metrics-dir", "{missing}", "--per-predicate-dir", "{missing}",
        "--scenes-dir", "{missing}", "--predictions-dir", "{missing}", "--instructions-dir", "{missing}",
        "--out-dir", "{out}",
    ],  # fmt: skip
    "export-graphs": ["--scenes", "{missing}", "--predictions", "{missing}", "--out", "{out}"],
    "convert-lavis": ["--checkpoint", "{missing}", "--preset", "tiny", "--base", "{missing}", "--out", "{out}"],
    "profile-args": ["{missing}", "--write", "{out}/p.yaml"],
    "profile-commands": ["{missing}"],  # prints a script; a missing profile is one line
    "plan": ["--params", "{missing}"],  # not a stage (prints a plan), but its numbers are checked the same way
}

# Custom types (no declared domain) and values each must refuse.
CUSTOM_BAD_VALUES = {
    "--pair-probabilities": ["0.5,nan,0.25,0.25", "1,-1,0.5,0.5", "a,b", "", "0.5,0.5"],
    "--jpeg-quality": ["0", "101", "nan", "x", "9.5"],
    "--components": ["bogus", ",", "h_tp,h_tp", ""],
    "--fixed-thresholds": ["t_fp=2", "h_fn=-1", "t_fn=nan", "x=1", "t_fp=inf", "t_fp"],
    "--device": ["gpu", "cuda:x", "tpu", "cpu "+"x"],
    "--pool-cap-factor": ["-1", "0.5", "nan", "inf", "x"],
    "--answers-per-question": ["0", "-1", "x", "nan", "1.5"],
    "--ks": ["0", "-5", "x", "nan", "1,0", ","],
    "--similarity-sentence": ["", "no placeholders here"],
    "--similarity-model": ["/nonexistent/model/dir"],
}
BOOLEAN_WORDS = {"true", "1", "yes", "false", "0", "no"}


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = any(isinstance(item, argparse._SubParsersAction) for item in sub._actions)
                yield from _walk(sub, (*prefix, name)) if nested else [((*prefix, name), sub)]


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    """{"data import": its parser, ...} of the full `reltune` parser (imports every command module once)."""
    return {" ".join(path): parser for path, parser in _walk(reltune.cli.build_parser())}


def _typed_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and action.type is not None and action.type is not Path]


def _unchecked_number(action: argparse.Action) -> bool:
    """A bare int/float/bool type, or a numeric default parsed as text (no type at all)."""
    if not action.option_strings or action.nargs == 0:  # positionals, store_true / store_false
        return False
    if action.type in (int, float, bool):
        return True
    return action.type is None and isinstance(action.default, (int, float)) and not isinstance(action.default, bool)


def test_every_stage_command_exists_and_every_number_or_boolean_is_checked(commands):
    assert set(STAGE_COMMANDS) <= set(commands), sorted(set(STAGE_COMMANDS) - set(commands))
    unknown = sorted(set(commands) - set(STAGE_COMMANDS))
    assert not unknown, f"new commands {unknown}: add their required arguments to STAGE_COMMANDS"
    unchecked = [
        f"{name} {action.option_strings[0]} ({getattr(action.type, '__name__', action.type)})"
        for name, parser in commands.items()
        for action in parser._actions
        if _unchecked_number(action)
    ]
    assert unchecked == [], f"options without a checked type (use reltune.argtypes): {unchecked}"


# ---------------------------------------------------------------- out-of-domain values

# ("--" is argparse's end-of-options marker, not a value: `--x=--` keeps the default)
_JUNK = st.sampled_from(["", "abc", "1e", "0x10", "½", "1,2", " ", "None", "a\nb"])
_NONFINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])


def _finite_floats(**bounds) -> st.SearchStrategy[str]:
    return st.floats(allow_nan=False, allow_infinity=False, **bounds).map(repr)


def out_of_domain(domain: Domain) -> st.SearchStrategy[str]:
    """Command-line texts outside `domain`."""
    if domain.kind == "boolean":
        return st.one_of(_JUNK, st.text(max_size=12)).filter(lambda text: text.strip().lower() not in BOOLEAN_WORDS)
    outside = [_JUNK, _NONFINITE]
    if domain.kind == "integer":
        outside.append(_finite_floats().filter(lambda value: "." in value or "e" in value))  # not integer texts
        if domain.low is not None:
            outside.append(st.integers(max_value=int(domain.low) - 1).map(str))
        if domain.high is not None:
            outside.append(st.integers(min_value=int(domain.high) + 1).map(str))
    else:
        if domain.low is not None:
            outside.append(_finite_floats(max_value=domain.low, exclude_max=not domain.low_open))
        if domain.high is not None:
            outside.append(_finite_floats(min_value=domain.high, exclude_min=not domain.high_open))
    return st.one_of(outside)


def _bad_value(action: argparse.Action) -> st.SearchStrategy[str]:
    if action.option_strings[0] in CUSTOM_BAD_VALUES:
        return st.sampled_from(CUSTOM_BAD_VALUES[action.option_strings[0]])
    return out_of_domain(action.type.domain)


def _argv(command: str, root: Path, extra: list[str]) -> list[str]:
    fill = {"{missing}": str(root / "missing"), "{out}": str(root / "out")}
    base = []
    for item in STAGE_COMMANDS[command]:
        for placeholder, value in fill.items():
            item = item.replace(placeholder, value)
        base.append(item)
    return [*command.split(), *base, *extra]


def run_cli(argv: list[str]) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of `reltune <argv>` run in this process."""
    stderr = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = reltune.cli.main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, stderr.getvalue(), time.perf_counter() - started


def assert_refused_before_work(command: str, flag: str, root: Path, argv: list[str]) -> None:
    code, stderr, seconds = run_cli(argv)
    assert code == 2, (argv, code, stderr)
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), repr(stderr)
    assert stderr.startswith(f"reltune {command.split()[0]}") and ": error: " in stderr and flag in stderr, stderr
    assert not root.exists(), f"{argv} wrote {list(root.rglob('*'))}"
    assert seconds < 2.0, f"{argv} took {seconds:.1f} s: the refusal came after some work"


@pytest.mark.parametrize("command", sorted(STAGE_COMMANDS))
def test_out_of_domain_values_exit_2_with_one_line_before_any_work(command, commands, tmp_path_factory):
    options = [
        action
        for action in _typed_options(commands[command])
        if hasattr(action.type, "domain") or action.option_strings[0] in CUSTOM_BAD_VALUES
    ]
    if not options:  # profile-args, profile-commands: paths and patterns only; a missing profile is still one line, nothing written
        root = tmp_path_factory.mktemp("domains") / "run"
        code, stderr, _ = run_cli(_argv(command, root, []))
        assert code == 2 and stderr.count("\n") == 1 and not root.exists(), stderr
        return
    base = tmp_path_factory.mktemp("domains")

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        action = data.draw(st.sampled_from(options), label="option")
        value = data.draw(_bad_value(action), label="value")
        flag = action.option_strings[0]
        if action.nargs == 2:  # --betas: one good value, one bad
            extra = [flag, "0.9", value] if not value.startswith("-") else [f"{flag}=0.9", value]
        else:
            extra = [f"{flag}={value}"]
        root = base / uuid.uuid4().hex
        assert_refused_before_work(command, flag, root, _argv(command, root, extra))

    check()


@pytest.mark.parametrize(
    ("command", "extra", "flag"),
    [
        ("build-tiny", ["--vision-hidden", "63"], "--vision-hidden"),  # not divisible by 4 heads
        ("pretrain-tiny", ["--text-heads", "3"], "--text-d-model"),
        ("build-tiny", ["--image-size", "60"], "--image-size"),  # not divisible by 8 px patches
        ("train", ["--select-best", "true"], "--val"),
        ("select", ["--round", "0"], "--strategy"),  # the seed takes no adaptive strategy
    ],
)
def test_combinations_are_refused_before_any_work(command, extra, flag, commands, tmp_path):
    root = tmp_path / "run"
    assert_refused_before_work(command, flag, root, _argv(command, root, extra))


def test_zero_optimizer_steps_refused_before_the_model_is_loaded(tmp_path):
    # TrainSettings built in code (not through the CLI, whose domains exclude it): epochs 0.
    from reltune.models.training import TrainSettings, train_backbone

    examples = pd.DataFrame(
        {"image_path": ["a.png"], "union_box": [[0.0, 0.0, 4.0, 4.0]], "prompt": ["Q?"], "target": ["A."]}
    )
    with pytest.raises(InputError, match="no optimizer step: 1 examples, epochs 0"):
        train_backbone(tmp_path / "no-backbone", examples, tmp_path, tmp_path / "out", TrainSettings(epochs=0, device="cpu", name_substitution=0.0))
    assert not (tmp_path / "out").exists()


def test_the_command_name_skips_the_timing_value():
    # Only the named command's module is imported (the model stack takes seconds).
    assert reltune.cli.command_name(["--timing", "metrics/timing/x.json", "select", "--round", "1"]) == "select"
    assert reltune.cli.command_name(["--timing=t.json", "train"]) == "train"
    assert reltune.cli.command_name(["--help"]) is None
