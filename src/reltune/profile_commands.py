"""`reltune profile-commands`: a profile's stage commands as a shell script, rendered by DVC.

Long runs outside DVC (several seeds of one strategy side by side, each in
its own copy of the repository, resumed from training checkpoints after an
interruption) need the exact commands `dvc repro` would run under a profile
and `-S` overrides. Copying them by hand from `dvc.yaml` drifts; this renders
them with DVC itself: `dvc.yaml` and the merged params go into a temporary
DVC repository, and DVC's own index gives each stage's command, in the order
of its stage graph. Nothing in the workspace is read besides `dvc.yaml` and
the params, and nothing is written.

    reltune profile-commands profiles/tiny-candidate.yaml -S sampling.seed=1 -S train.seed=1 > run.sh
    reltune profile-commands -S sampling.strategy=random --stages 'train@*' 'predict@*'
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import logging
import re
import shlex
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from reltune.errors import InputError
from reltune.profiles import load_yaml, merge_profile

SCRIPT_HEADER = (
    "#!/usr/bin/env bash\n"
    "# Rendered by `reltune profile-commands` from dvc.yaml and the params below; run it from the\n"
    "# repository root with the virtual environment's bin/ on PATH (as `make repro` does).\n"
    "set -euo pipefail\n"
)


@contextlib.contextmanager
def _quiet_dvc() -> Iterator[None]:
    """DVC logs "Initialized DVC repository." to stdout: keep stdout for the script."""
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def rendered_stages(dvc_yaml: Path, params: Mapping, overrides: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """(stage name, its commands) for every stage of `dvc_yaml` under `params` and the `-S` overrides,
    dependencies first (DVC's stage graph, ties in `dvc.yaml` order)."""
    import networkx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="reltune-profile-commands-") as directory:
        root = Path(directory)
        (root / "dvc.yaml").write_text(Path(dvc_yaml).read_text())
        (root / "params.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False))
        try:
            if overrides:
                # DVC's own override grammar, exactly what `dvc exp run -S` applies
                apply_overrides(root / "params.yaml", list(overrides))
        except DvcException as error:
            raise InputError("-S", f"{error} ({' '.join(overrides)})") from None
        try:
            with _quiet_dvc(), Repo.init(root, no_scm=True) as repo:
                graph = repo.index.graph
                file_order = {stage: position for position, stage in enumerate(repo.index.stages)}
                # DVC's edges point from a stage to the stages it depends on: reversed, dependencies first
                order = networkx.lexicographical_topological_sort(graph.reverse(), key=file_order.__getitem__)
                stages = [(stage.name, _commands(stage.cmd)) for stage in order]
        except DvcException as error:
            # DVC names the temporary copy: name the file the user gave instead
            message = re.sub(r"'[^']*reltune-profile-commands-[^']*'", f"'{dvc_yaml}'", str(error))
            raise InputError(dvc_yaml, f"DVC cannot render the stages: {message}") from None
    return stages


def _commands(cmd: str | list[str] | None) -> list[str]:
    if cmd is None:
        return []
    return [cmd] if isinstance(cmd, str) else list(cmd)


def select_stages(
    stages: Sequence[tuple[str, list[str]]], patterns: Sequence[str], skip: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """The stages matching any of `patterns` (fnmatch; all when empty) and none of `skip`.

    A pattern that matches no stage is refused: a misspelt stage would otherwise drop silently.
    """
    names = [name for name, _ in stages]
    for option, option_patterns in (("--stages", patterns), ("--skip", skip)):
        for pattern in option_patterns:
            if not fnmatch.filter(names, pattern):
                raise InputError(option, f"{pattern!r} matches no stage (stages: {', '.join(names)})")

    def wanted(name: str) -> bool:
        chosen = not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        return chosen and not any(fnmatch.fnmatchcase(name, pattern) for pattern in skip)

    return [(name, commands) for name, commands in stages if wanted(name)]


def script(stages: Sequence[tuple[str, list[str]]], settings: str) -> str:
    """The stages as a bash script: a comment naming each stage above its commands."""
    lines = [SCRIPT_HEADER + f"# params: {settings}\n"]
    for name, commands in stages:
        lines.append(f"\n# stage {name}\n" + "".join(f"{command}\n" for command in commands))
    return "".join(lines)


def _run(args: argparse.Namespace) -> int:
    params = load_yaml(args.params)
    settings = str(args.params)
    if args.profile is not None:
        params = merge_profile(params, load_yaml(args.profile))
        settings += f" + {args.profile}"
    if args.set:
        settings += " " + " ".join(f"-S {shlex.quote(item)}" for item in args.set)
    if not args.dvc_yaml.is_file():
        raise InputError(args.dvc_yaml, "file not found")
    stages = rendered_stages(args.dvc_yaml, params, args.set)
    print(script(select_stages(stages, args.stages, args.skip), settings), end="")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile-commands",
        help="print the stage commands of dvc.yaml under a profile and -S overrides, as a bash script",
        description="Print the commands `dvc repro` would run under params.yaml, an optional profile and "
        "`-S` overrides (rendered by DVC, dependencies first), as a bash script for runs outside DVC "
        "(usage: reltune profile-commands profiles/tiny-candidate.yaml -S sampling.seed=1 > run.sh).",
    )
    parser.add_argument("profile", type=Path, nargs="?", default=None, help="profile YAML (an overlay on --params)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a `dvc exp run -S` override, applied after the profile (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--stages", nargs="+", default=[], metavar="PATTERN",
        help="only the stages matching these fnmatch patterns, e.g. 'train@*' (default: every stage)",
    )  # fmt: skip
    parser.add_argument(
        "--skip", nargs="+", default=[], metavar="PATTERN",
        help="leave out the stages matching these patterns (outputs reused from elsewhere, e.g. 'pretrain-tiny@*')",
    )  # fmt: skip
    parser.set_defaults(func=_run)
