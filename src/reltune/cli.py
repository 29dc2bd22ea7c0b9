"""The `reltune` command: one subcommand per pipeline stage.

Each subpackage owns its subcommands in its `commands.py` (a function
`add_commands(subparsers)` that registers them with a `func` default); this
file only assembles them and turns InputError into a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reltune.errors import InputError

# Subpackages that contribute subcommands, in the order `reltune --help` lists them.
COMMAND_MODULES = (
    "reltune.data.commands",
    "reltune.instructions.commands",
    "reltune.sampling.commands",
    "reltune.models.commands",
    "reltune.models.answer_commands",
    "reltune.evaluation.commands",
    "reltune.profiles",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reltune", description="Adaptive Relation Tuning pipeline stages.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # that subpackage has no commands yet
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except InputError as error:
        print(f"reltune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
