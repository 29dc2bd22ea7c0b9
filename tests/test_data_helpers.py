"""Shared pieces of the data tests (not a test module itself: no test functions)."""

import reltune.cli


def data_cli(argv, monkeypatch):
    """Run `reltune <argv>` with only the data subcommands registered (other areas import torch)."""
    monkeypatch.setattr(reltune.cli, "COMMAND_MODULES", ("reltune.data.commands",))
    return reltune.cli.main(argv)
