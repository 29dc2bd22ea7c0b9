"""Every stage of dvc.yaml lists, as deps, all project source its command can run.

DVC reruns a stage only when one of its deps changes, so a stage whose
command imports a module it does not list goes stale silently. For each
stage this test takes the `reltune` subcommand of its cmd, the module that
owns it (`reltune.cli.COMMAND_OWNERS`), and the closure of that module's
imports (a static walk of every `import` in the file, lazy imports inside
functions included; importing `reltune.a.b` also runs the `__init__.py` of
`reltune` and `reltune.a`). Every file of the closure must be a dep of the
stage, itself or through a folder above it.
"""

from __future__ import annotations

import ast
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from reltune.cli import COMMAND_OWNERS

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"

# Modules that cannot change any output, and why; a stage need not list them.
EXEMPT = {
    "reltune/__init__.py": "the package docstring and version string",
    "reltune/argtypes.py": "argument types: a bad value stops the command before any work",
    "reltune/arguments.py": "argument groups built from settings dataclasses (command-line parsing)",
    "reltune/errors.py": "the InputError message text",
    "reltune/progress.py": "progress bars and log lines on stderr",
}
# Not followed: the CLI entry point imports the owner module by name (COMMAND_OWNERS);
# the walk starts there. It only parses arguments and writes the timing file.
ENTRY_POINT = "reltune/cli.py"


def module_file(module: str) -> Path | None:
    """The source file of a `reltune.*` module (package: its __init__.py), None if there is none."""
    base = SOURCE.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    """The package a file belongs to (for `x/__init__.py`: x itself), which relative imports start from."""
    return ".".join(path.relative_to(SOURCE).parts[:-1])


def imported_modules(path: Path) -> set[str]:
    """Every `reltune.*` module a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                anchor = _package_of(path).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from package import name`: name may be a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
    return {name for name in found if name == "reltune" or name.startswith("reltune.")}


def _with_parents(module: str) -> list[str]:
    """The module and every package above it (importing it runs their __init__.py)."""
    parts = module.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def import_closure(module: str) -> set[str]:
    """Source files (relative to src/) that importing `module` can run, transitively."""
    files: set[str] = set()
    pending = [module]
    while pending:
        for name in _with_parents(pending.pop()):
            path = module_file(name)
            if path is None:
                continue
            relative = path.relative_to(SOURCE).as_posix()
            if relative in files or relative == ENTRY_POINT:
                continue
            files.add(relative)
            pending.extend(imported_modules(path))
    return files


def reltune_arguments(cmd: str) -> list[str] | None:
    """The arguments of the reltune CLI in a stage command: after `reltune`, or after
    `-m reltune.cli` behind a launcher (`python -m`, `accelerate launch ... -m`); None: no reltune."""
    words = shlex.split(cmd)
    if words and Path(words[0]).name == "reltune":
        return words[1:]
    for index, word in enumerate(words[:-1]):
        if word == "-m" and words[index + 1] == "reltune.cli":
            return words[index + 2 :]
    return None


def subcommand(cmd: str) -> str | None:
    """The `reltune` subcommand a stage command runs (None: not a reltune command)."""
    rest = reltune_arguments(cmd)
    if rest is None:
        return None
    rest = list(rest)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option == "--timing" and rest:
            rest.pop(0)
    return rest[0] if rest else None


def covered(file: str, deps: Iterable[str]) -> bool:
    """Whether `file` (relative to src/) is a dep, itself or through a folder above it."""
    target = Path("src", file)
    for dep in deps:
        dep_path = Path(dep.rstrip("/"))
        if target == dep_path or dep_path in target.parents:
            return True
    return False


def missing_deps(stages: Mapping[str, tuple[str, list[str]]]) -> list[str]:
    """'stage: file' for every closure file a stage does not list; stages maps name -> (cmd, deps)."""
    problems = []
    closures: dict[str, set[str]] = {}
    for name, (cmd, deps) in sorted(stages.items()):
        command = subcommand(cmd)
        if command is None:
            continue
        if command not in COMMAND_OWNERS:
            problems.append(f"{name}: command {command!r} has no owner in reltune.cli.COMMAND_OWNERS")
            continue
        owner = COMMAND_OWNERS[command]
        if owner not in closures:
            closures[owner] = import_closure(owner)
        for file in sorted(closures[owner]):
            if file not in EXEMPT and not covered(file, deps):
                problems.append(f"{name}: src/{file} (imported by {owner}) is not a dep")
    return problems


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, list[str]]]:
    """Every stage of the repository's dvc.yaml, resolved with params.yaml: name -> (cmd, file deps)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            stage.name: (
                stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd),
                [dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)],
            )
            for stage in repo.index.stages
        }


def test_every_stage_lists_the_source_its_command_imports(stages):
    assert len(stages) >= 10 and all(subcommand(cmd) for cmd, _ in stages.values())
    problems = missing_deps(stages)
    assert not problems, "stage deps miss source their command runs:\n" + "\n".join(problems)


def test_a_removed_dep_is_reported(stages):
    """The checker finds a missing folder dep and a missing single-file dep."""
    select = next(name for name in stages if name.startswith("select"))
    cmd, deps = stages[select]
    assert "src/reltune/sampling" in deps
    copy = {select: (cmd, [dep for dep in deps if dep != "src/reltune/sampling"])}
    problems = missing_deps(copy)
    assert f"{select}: src/reltune/sampling/allocation.py (imported by reltune.sampling.commands) is not a dep" in problems
    assert not any("src/reltune/errors.py" in problem for problem in problems)  # exempt

    evaluate = next(name for name in stages if name.startswith("evaluate"))
    cmd, deps = stages[evaluate]
    copy = {evaluate: (cmd, [dep for dep in deps if dep != "src/reltune/text.py"])}
    assert missing_deps(copy) == [f"{evaluate}: src/reltune/text.py (imported by reltune.evaluation.commands) is not a dep"]


def test_closure_follows_lazy_relative_and_package_imports(tmp_path, monkeypatch):
    """A lazy import inside a function, `from . import x` and parent __init__ files are all in the closure."""
    package = tmp_path / "reltune" / "fake"
    package.mkdir(parents=True)
    (tmp_path / "reltune" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from reltune.fake import eager\n")
    (package / "eager.py").write_text("def run():\n    from . import lazy\n    return lazy\n")
    (package / "lazy.py").write_text("import reltune.fake.deep as deep\n")
    (package / "deep.py").write_text("import os\n")
    (package / "unused.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SOURCE", tmp_path)
    assert import_closure("reltune.fake.eager") == {
        "reltune/__init__.py", "reltune/fake/__init__.py", "reltune/fake/eager.py",
        "reltune/fake/lazy.py", "reltune/fake/deep.py",
    }


def test_subcommand_and_cover():
    assert subcommand("reltune --timing m/t.json data world --out x") == "data"
    assert subcommand("reltune select --round 0") == "select"
    assert subcommand("python script.py") is None
    assert subcommand("accelerate launch --num_processes 4 -m reltune.cli --timing t.json score --x 1") == "score"
    assert reltune_arguments("python -m reltune.cli predict --y") == ["predict", "--y"]
    assert covered("reltune/sampling/art.py", ["src/reltune/sampling"])
    assert covered("reltune/io.py", ["data/x", "src/reltune/io.py"])
    assert not covered("reltune/sampling/art.py", ["src/reltune/sampl"])
    assert not covered("reltune/io.py", ["src/reltune/sampling"])
