"""The `reltune` command: one subcommand per pipeline stage.

Each subpackage owns its subcommands in its `commands.py` (a function
`add_commands(subparsers)` that registers them with a `func` default); this
file only assembles them and turns InputError into a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time
from pathlib import Path
from typing import NoReturn

from reltune.errors import InputError
from reltune.io import write_json

# Subpackages that contribute subcommands, in the order `reltune --help` lists them.
COMMAND_MODULES = (
    "reltune.data.commands",
    "reltune.instructions.commands",
    "reltune.sampling.commands",
    "reltune.models.commands",
    "reltune.inference.commands",
    "reltune.evaluation.commands",
    "reltune.profiles",
    "reltune.profile_commands",
    "reltune.plan",
)


# Which module owns each subcommand, so that running one stage imports only
# its own module (the model stack takes seconds to import).
COMMAND_OWNERS = {
    "data": "reltune.data.commands",
    "instructions": "reltune.instructions.commands",
    "select": "reltune.sampling.commands",
    "build-tiny": "reltune.models.commands",
    "pretrain-tiny": "reltune.models.commands",
    "train": "reltune.models.commands",
    "convert-lavis": "reltune.models.commands",
    "score": "reltune.inference.commands",
    "predict": "reltune.inference.commands",
    "evaluate": "reltune.evaluation.commands",
    "export-graphs": "reltune.evaluation.commands",
    "report": "reltune.evaluation.commands",
    "profile-args": "reltune.profiles",
    "profile-commands": "reltune.profile_commands",
    "plan": "reltune.plan",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage block), like InputError."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n".replace("\n", " ").rstrip() + "\n")


def build_parser(only_command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (with `only_command`) one holding just that command's module."""
    parser = OneLineParser(prog="reltune", description="Adaptive Relation Tuning pipeline stages.")
    parser.add_argument(
        "--timing",
        type=Path,
        default=None,
        metavar="JSON",
        help="write this command's wall time and peak memory to JSON (the pipeline's metrics/timing/)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = COMMAND_MODULES
    if only_command in COMMAND_OWNERS:
        modules = (COMMAND_OWNERS[only_command],)
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # that subpackage has no commands yet
            raise
        module.add_commands(subparsers)
    return parser


def command_name(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is neither an option nor --timing's value)."""
    words = iter(argv)
    for word in words:
        if word == "--timing":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_name(argv)).parse_args(argv)
    started = time.perf_counter()
    try:
        result = args.func(args)
    except InputError as error:
        print(f"reltune {args.command}: error: {error}", file=sys.stderr)
        return 2
    # a command run by several processes (accelerate) lets only its main process write the
    # timing, with every process's figures in `timing_extra`
    if args.timing is not None and getattr(args, "write_timing", True):
        write_timing(args.timing, args.command, time.perf_counter() - started, getattr(args, "timing_extra", None))
    return int(result or 0)


def write_timing(path: Path, command: str, wall_seconds: float, extra: dict | None = None) -> None:
    """Wall time and peak resident memory (this process and its children) as JSON, plus `extra`."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    write_json(
        {
            "command": command,
            "wall_s": round(wall_seconds, 3),
            "peak_rss_mib": round(max(own, children) / 1024, 1),
            **(extra or {}),
        },
        path,
    )


if __name__ == "__main__":
    sys.exit(main())
