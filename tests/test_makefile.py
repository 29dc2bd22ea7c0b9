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


def queued_commands(strategies: str, *make_args: str) -> dict[str, str]:
    """The `dvc exp run --queue` command `make compare-queue` would run per experiment name (dvc replaced by echo)."""
    printed = subprocess.run(["make", "--no-print-directory", "compare-queue", f"STRATEGIES={strategies}", "SEEDS=3",
                              "DVC=echo dvc", *make_args], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {re.search(r" -n (\S+)", line).group(1): line for line in printed.splitlines() if "exp run --queue" in line}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_balanced_and_random_draw_the_budget_of_every_round_at_once_and_skip_the_round_models():
    import yaml

    sampling = yaml.safe_load((ROOT / "params.yaml").read_text())["sampling"]
    rounds = list(sampling["rounds"])
    commands = queued_commands("balanced random art full")
    assert set(commands) == {"balanced-seed3", "random-seed3", "art-seed3", "full-seed3"}
    removals = [f"-S ~sampling.rounds.{key} -S ~train_on.{key}" for key in rounds]
    for name in ("balanced-seed3", "random-seed3"):
        command = commands[name]
        assert all(removal in command for removal in removals) and " -S train_on.final=0" in command
        (fraction,) = re.findall(r"-S sampling\.budget_fraction=(\S+)", command)
        assert float(fraction) == pytest.approx(sampling["budget_fraction"] * (len(rounds) + 1))
    assert "~sampling.rounds" not in commands["art-seed3"] and "budget_fraction" not in commands["art-seed3"]
    assert "~sampling.rounds" in commands["full-seed3"] and "budget_fraction" not in commands["full-seed3"]
    through_rounds = queued_commands("balanced random", "ONE_SHOT=0")
    assert all("~sampling.rounds" not in command and "budget_fraction" not in command for command in through_rounds.values())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_shared_pretraining_runs_once_in_the_workspace_before_the_queue_starts():
    planned = subprocess.run(["make", "-n", "--no-print-directory", "compare-run"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert 0 <= planned.find("dvc repro pretrain-tiny") < planned.find("queue start"), planned
    # only where the profile has a tiny pretraining stage (real profiles remove pretrain_tiny)
    assert "grep -q '^pretrain-tiny@'" in planned


FAKE_DVC = """#!/bin/sh
# stands in for dvc: `queue status` prints the next canned status, `queue start` is logged
log={log}
case "$1 $2" in
  "queue status")
    n=$(cat {counter}); echo $((n + 1)) > {counter}
    file={statuses}/$n; [ -f "$file" ] || file={statuses}/last
    cat "$file";;
  "queue start") echo "start $*" >> $log;;
esac
"""


def status_text(running: int, queued: int, workers: int) -> str:
    rows = [f"t{k}  art-seed{k}  06:00 AM   Running" for k in range(running)]
    rows += [f"q{k}  random-seed{k}  06:00 AM   Queued" for k in range(queued)]
    return "Task  Name  Created  Status\n" + "\n".join(rows) + f"\n\nWorker status: {workers} active, 0 idle\n"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_compare_run_starts_workers_only_while_fewer_than_jobs_experiments_run(tmp_path):
    statuses = tmp_path / "statuses"
    statuses.mkdir()
    sequence = [
        status_text(running=2, queued=3, workers=1),  # a busy worker missed by the status check: no start
        status_text(running=1, queued=3, workers=1),  # one slot free: start
        status_text(running=2, queued=1, workers=2),  # full: no start
        status_text(running=2, queued=1, workers=0),  # tasks of dead workers: start
    ]
    for index, text in enumerate(sequence):
        (statuses / str(index)).write_text(text)
    (statuses / "last").write_text(status_text(running=0, queued=0, workers=0))
    (tmp_path / "counter").write_text("0")
    fake = tmp_path / "dvc"
    log = tmp_path / "starts.log"
    fake.write_text(FAKE_DVC.format(log=log, counter=tmp_path / "counter", statuses=statuses))
    fake.chmod(0o755)
    subprocess.run(["make", "--no-print-directory", "compare-run", "JOBS=2", "QUEUE_POLL=0", f"DVC={fake}"],
                   cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    assert log.read_text().splitlines() == ["start queue start -j 2", "start queue start -j 2"]
