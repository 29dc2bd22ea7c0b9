"""The Makefile's `compare-run`: JOBS experiments at a time, each with its share of the cores as torch threads."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def planned_threads(jobs: int) -> int:
    """OMP_NUM_THREADS under which `make -n compare-run JOBS=<jobs>` would start the queue's JOBS workers."""
    planned = subprocess.run(["make", "-n", "--no-print-directory", "compare-run", f"JOBS={jobs}"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"queue start -j {jobs} " in planned, planned
    (threads,) = re.findall(r"export OMP_NUM_THREADS=(\d+);", planned)
    return int(threads)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("nproc") is None, reason="needs make and nproc")
def test_each_queued_experiment_gets_its_share_of_the_cores_and_at_least_one_thread():
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    assert cores == len(os.sched_getaffinity(0))  # nproc counts the cores this process may use
    for jobs in (1, 2, 3, cores, 2 * cores + 1):
        assert planned_threads(jobs) == max(1, cores // jobs)
