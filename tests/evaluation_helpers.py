"""Shared pieces of the evaluation tests (not a test module itself)."""

import argparse

from reltune.evaluation.commands import add_commands


def run_cli(argv: list[str]) -> int:
    """The evaluation subcommands alone (reltune.cli assembles the same parsers)."""
    parser = argparse.ArgumentParser(prog="reltune")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
