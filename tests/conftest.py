"""Shared test set-up: offline model loading, no progress bars in logs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread per process, here and in every command a test starts (dvc stages, reltune
# subprocesses): `make test` runs a pytest worker per core (pytest-xdist), and more threads than
# cores stall each other (Makefile, THREADS_PER_JOB).
os.environ.setdefault("OMP_NUM_THREADS", "1")


import logging
import subprocess
from collections.abc import Callable

import pytest


@pytest.fixture(autouse=True)
def restore_dvc_logging():
    """Leave DVC's loggers as each test found them.

    Calling DVC in-process (`dvc.api.read` in the compare tests) installs
    handlers bound to the stderr of that moment, pytest's capture stream; a
    later test that makes DVC log would then write to a closed file.
    """
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_objects", "dvc_data")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def git_here(tmp_path, monkeypatch) -> Callable[..., str]:
    """A fresh git repository in tmp_path, made the working directory; returns `git(*args) -> stdout`."""
    monkeypatch.chdir(tmp_path)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "test")
    return git


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first (stable otherwise): `make test` hands whole files to its workers
    (`--dist loadfile`), and the pipeline runs take minutes, so they must start at once, not last."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
