"""Parameter profiles: a YAML overlay on params.yaml, applied with `dvc exp run -S`.

A profile file holds the parameters that differ from params.yaml. Top-level
`replace: [key, ...]` names mappings that the profile replaces whole (for
example the dataset list), instead of merging into them. `reltune
profile-args PROFILE` prints the `-S` overrides that turn params.yaml into
the profile, quoted for the shell, so a run is
`eval "dvc exp run $(reltune profile-args profiles/X.yaml)"` (values such as
a launcher command or a sentence template hold spaces), and
`reltune profile-args --write OUT PROFILE` writes the merged file.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from reltune.errors import InputError
from reltune.io import atomic_path


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(path, f"not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a mapping")
    return data


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (what `dvc exp run -S` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if any(character in "'\\\n" for character in value):
            # Hydra's quoted strings would need escapes here: rare enough to send to --write
            raise ValueError(f"value {value!r} has a quote, backslash or line break: use --write")
        return f"'{value}'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{_hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    raise TypeError(f"cannot express {value!r} as an override")


def _overrides(base: Mapping, overlay: Mapping, replace: set[str], prefix: str = "") -> Iterator[str]:
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if key not in base:
            yield f"+{path}={_hydra_value(value)}"
        elif path in replace and isinstance(value, Mapping) and isinstance(base[key], Mapping):
            for old_key in base[key]:
                if old_key not in value:
                    yield f"~{path}.{old_key}"
            for new_key, item in value.items():
                sign = "" if new_key in base[key] else "+"
                yield f"{sign}{path}.{new_key}={_hydra_value(item)}"
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            yield from _overrides(base[key], value, replace, prefix=f"{path}.")
        else:
            yield f"{path}={_hydra_value(value)}"


def profile_overrides(params: Mapping, profile: Mapping) -> list[str]:
    """The `-S` overrides (without the flag) that turn `params` into `profile`."""
    profile = dict(profile)
    replace = set(profile.pop("replace", []) or [])
    return list(_overrides(params, profile, replace))


def merge_profile(params: Mapping, profile: Mapping) -> dict:
    """params.yaml with the profile applied (what the overrides produce)."""
    profile = dict(profile)
    replace = set(profile.pop("replace", []) or [])

    def merge(base: dict, overlay: Mapping, prefix: str) -> dict:
        for key, value in overlay.items():
            path = f"{prefix}{key}"
            if path not in replace and isinstance(value, Mapping) and isinstance(base.get(key), dict):
                merge(base[key], value, f"{path}.")
            else:
                base[key] = copy.deepcopy(value)
        return base

    return merge(copy.deepcopy(dict(params)), profile, "")


def _run(args: argparse.Namespace) -> int:
    params = load_yaml(args.params)
    profile = load_yaml(args.profile)
    if args.write:
        merged = merge_profile(params, profile)
        with atomic_path(args.write) as temporary:
            temporary.write_text(yaml.safe_dump(merged, sort_keys=False))
        return 0
    overrides = profile_overrides(params, profile)
    if args.json:
        print(json.dumps(overrides))
    else:
        # quoted for `eval "dvc exp run $(...)"`: the shell then hands each override
        # to DVC as one word, spaces and Hydra's single quotes included
        print(" ".join(f"-S {shlex.quote(item)}" for item in overrides))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile-args",
        help="print the `dvc exp run -S` overrides of a parameter profile",
        description="Print `-S key=value` overrides that turn params.yaml into a profile "
        '(usage: eval "dvc exp run $(reltune profile-args profiles/vg150-flan-t5-xl.yaml)").',
    )
    parser.add_argument("profile", type=Path, help="profile YAML (an overlay on params.yaml)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--json", action="store_true", help="print the overrides as a JSON list")
    parser.add_argument("--write", type=Path, default=None, help="write the merged params to this file instead")
    parser.set_defaults(func=_run)
