"""Shared pieces of the pipeline tests: a throw-away copy of the project."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def project_copy(destination: Path) -> Path:
    """Copy the project's files (tracked and untracked-not-ignored) into a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = PROJECT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    git(destination, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    return destination


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def run_dvc(repo: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", RELTUNE_NO_PROGRESS="1")
    result = subprocess.run(
        [str(VENV_BIN / "dvc"), *args], cwd=repo, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def read_params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
