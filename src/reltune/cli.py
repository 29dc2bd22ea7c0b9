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
    "score": "reltune.models.answer_commands",
    "predict": "reltune.models.answer_commands",
    "evaluate": "reltune.evaluation.commands",
    "export-graphs": "reltune.evaluation.commands",
    "report": "reltune.evaluation.commands",
    "profile-args": "reltune.profiles",
}


def build_parser(only_command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (with `only_command`) one holding just that command's module."""
    parser = argparse.ArgumentParser(prog="reltune", description="Adaptive Relation Tuning pipeline stages.")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((item for item in argv if not item.startswith("-")), None)
    args = build_parser(first).parse_args(argv)
    try:
        result = args.func(args)
    except InputError as error:
        print(f"reltune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
