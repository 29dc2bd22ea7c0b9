"""Command-line groups built from settings dataclasses: one table line per setting.

A stage's settings live in a dataclass (its defaults = params.yaml). Instead
of repeating `group.add_argument("--x", type=..., default=defaults.x)` and
`Settings(x=args.x, ...)` for every field, a command declares a table

    TRAIN = {"epochs": Setting(positive_int), "lr": Setting(positive_float, "peak learning rate"), ...}

and calls `add_settings(group, TRAIN, defaults)` to register `--epochs`,
`--lr`, ... with the dataclass defaults and checked types (reltune.argtypes),
then `settings_from_args(TrainSettings, args, TRAIN)` to build the settings.
Every value is therefore checked once, at the CLI boundary, before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from reltune.argtypes import boolean

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """The command-line form of one settings field (its default comes from the settings)."""

    type: Callable[[str], Any] | None = None  # None: free text
    help: str | None = None
    flag: str | None = None  # default: --<field-with-dashes>
    choices: Sequence[str] | None = None
    nargs: int | None = None
    metavar: str | tuple[str, ...] | None = None
    hidden: bool = False  # test hooks: accepted, not listed in --help

    def option(self, name: str) -> str:
        return self.flag or f"--{name.replace('_', '-')}"

    def dest(self, name: str) -> str:
        return self.option(name).lstrip("-").replace("-", "_")


def _default(defaults: Any, name: str) -> Any:
    value = defaults[name] if isinstance(defaults, Mapping) else getattr(defaults, name)
    return list(value) if isinstance(value, tuple) else value


def _help(setting: Setting) -> str:
    """The setting's help, then its domain and default (argparse fills in %(default)s)."""
    domain = getattr(setting.type, "__name__", "") if hasattr(setting.type, "domain") and setting.type is not boolean else ""
    facts = "; ".join(part for part in (domain, "default %(default)s") if part)
    return f"{setting.help} ({facts})" if setting.help else facts


def add_settings(group: Any, table: Mapping[str, Setting], defaults: Any) -> None:
    """Register one option per table entry on `group` (a parser or argument group).

    `defaults` is a settings instance or a mapping of field name -> default.
    """
    for name, setting in table.items():
        options: dict[str, Any] = {"default": _default(defaults, name), "dest": setting.dest(name)}
        if setting.type is not None:
            options["type"] = setting.type
        if setting.choices is not None:
            options["choices"] = setting.choices
        if setting.nargs is not None:
            options["nargs"] = setting.nargs
        metavar = setting.metavar or ("true|false" if setting.type is boolean else None)
        if metavar is not None:
            options["metavar"] = metavar
        options["help"] = argparse.SUPPRESS if setting.hidden else _help(setting)
        group.add_argument(setting.option(name), **options)


def settings_from_args(cls: Callable[..., T], args: argparse.Namespace, table: Mapping[str, Setting], **fixed: Any) -> T:
    """`cls(**fields)` from the parsed options of `table` (fields whose option this command lacks keep their default)."""
    tuple_fields = {field.name for field in dataclasses.fields(cls) if isinstance(field.default, tuple)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, setting in table.items():
        if hasattr(args, setting.dest(name)):
            value = getattr(args, setting.dest(name))
            values[name] = tuple(value) if name in tuple_fields else value
    return cls(**{**values, **fixed})


def add_optional_flag(group: Any, flag: str, default: bool, help: str, dest: str | None = None) -> None:
    """A boolean option that also works bare: `--x` (true), `--x true|false` (how DVC passes params)."""
    group.add_argument(
        flag, nargs="?", const=True, default=default, type=boolean, metavar="true|false", help=help, **({"dest": dest} if dest else {})
    )
