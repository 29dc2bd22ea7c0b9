"""The Makefile's `compare-queue` (what each strategy queues) and `compare-run` (JOBS experiments at a time, each with its share of the cores as torch threads)."""

import os
import re
import shutil
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def planned_threads(jobs: int, environment: dict[str, str] | None = None) -> int:
    """OMP_NUM_THREADS under which `make -n compare-run JOBS=<jobs>` would start the queue's JOBS workers."""
    planned = subprocess.run(["make", "-n", "--no-print-directory", "compare-run", f"JOBS={jobs}"],
                             cwd=ROOT, capture_output=True, text=True, check=True, env=environment).stdout  # fmt: skip
    assert f"queue start -j {jobs} " in planned, planned
    (threads,) = re.findall(r"export OMP_NUM_THREADS=(\d+);", planned)
    return int(threads)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("nproc") is None, reason="needs make and nproc")
def test_each_queued_experiment_gets_its_share_of_the_cores_and_at_least_one_thread():
    cores = len(os.sched_getaffinity(0))  # the cores this process may use
    for jobs in (1, 2, 3, cores, 2 * cores + 1):
        assert planned_threads(jobs) == max(1, cores // jobs)
    # nproc reports OMP_NUM_THREADS / OMP_THREAD_LIMIT when they are set (the test run sets the first):
    # the Makefile counts the cores without them
    for variable in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"):
        assert planned_threads(1, {**os.environ, variable: "1"}) == cores
        assert planned_threads(1, {**os.environ, variable: str(cores + 5)}) == cores


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
        assert all(removal in command for removal in removals) and " -S train_on.final.selection=0" in command
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


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_with_exp_args_the_shared_pretraining_is_a_temporary_experiment_with_those_arguments_then_removed():
    """A profile may change pretrain_tiny: the workspace's params.yaml would pretrain another backbone."""
    exp_args = "-S pretrain_tiny.tiny.seed=1 -S 'train.converse_predicates=above:below,left of:right of'"
    planned = subprocess.run(["make", "-n", "--no-print-directory", "compare-run", "EXP_SUFFIX=-candidate",
                              f"EXP_ARGS={exp_args}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    pretraining = planned.find(f"dvc exp run --temp -n pretrain-candidate-shared pretrain-tiny {exp_args} ")
    assert 0 <= pretraining < planned.find("queue start"), planned
    assert "dvc repro pretrain-tiny" not in planned
    # removed before (a leftover of an interrupted run) and after: it is no compared experiment
    removals = [index for index in range(len(planned)) if planned.startswith("/pretrain-candidate-shared; if git show-ref", index)]
    assert len(removals) == 2 and removals[0] < pretraining < removals[1] < planned.find("queue start"), planned


FAKE_DVC = """#!/bin/sh
# stands in for dvc: `queue status` moves to the next canned state and says whether anything is queued
case "$1 $2" in
  "queue status")
    n=$(cat {state}); echo $((n + 1)) > {state}
    if [ -f {states}/queued-$((n + 1)) ]; then echo "q0  random-seed0  06:00 AM   Queued"; fi
    echo "Worker status: 0 active, 0 idle";;  # never trusted: DVC's own check misses busy workers
  "queue start") echo "queue start $3 $4" >> {log};;
esac
"""
# stands in for the count of experiment processes: the running experiments of the current state
FAKE_RUNNING = """#!/bin/sh
cat {states}/running-$(cat {state}) 2>/dev/null || echo 0
"""


def makefile_copy(directory: Path) -> Path:
    """The Makefile in a directory of its own, its virtual environment taken as built (no experiments run there)."""
    directory.mkdir()
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, directory / name)
    (directory / ".venv").mkdir()
    (directory / ".venv" / ".installed").touch()
    return directory


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_compare_run_starts_workers_only_while_fewer_than_jobs_experiments_run(tmp_path):
    states = tmp_path / "states"
    states.mkdir()
    # (queued, running) after each look at the queue; DVC's worker status says "0 active" throughout
    for index, (queued, running) in enumerate([(True, 2), (True, 1), (True, 3), (True, 0), (False, 0)], start=1):
        if queued:
            (states / f"queued-{index}").touch()
        (states / f"running-{index}").write_text(f"{running}\n")
    (tmp_path / "state").write_text("0")
    log = tmp_path / "starts.log"
    fields = {"state": tmp_path / "state", "states": states, "log": log}
    fake_dvc = executable(tmp_path / "dvc", FAKE_DVC.format(**fields))
    fake_running = executable(tmp_path / "running", FAKE_RUNNING.format(**fields))
    directory = makefile_copy(tmp_path / "project")
    subprocess.run(["make", "--no-print-directory", "compare-run", "JOBS=2", "QUEUE_POLL=0", f"DVC={fake_dvc}",
                    f"RUNNING_EXPERIMENTS={fake_running}"], cwd=directory, capture_output=True, text=True, check=True,
                   timeout=60)  # fmt: skip
    assert log.read_text().splitlines() == ["queue start -j 2", "queue start -j 2"]


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("pgrep") is None, reason="needs make and pgrep")
def test_compare_run_does_not_count_its_own_shell_as_a_running_experiment(tmp_path):
    """The default count greps process command lines for a pattern that the recipe's shell also holds."""
    fake_dvc = executable(tmp_path / "dvc", "#!/bin/sh\necho 'Task  Name  Created  Status'\n")  # nothing queued
    directory = makefile_copy(tmp_path / "project")
    # its own session, so that a recipe stuck waiting on itself can be stopped whole
    make = subprocess.Popen(["make", "--no-print-directory", "compare-run", "QUEUE_POLL=1", f"DVC={fake_dvc}"],
                            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        _, stderr = make.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        make.communicate()
        pytest.fail("compare-run kept waiting with no experiment running: it counted its own shell")
    assert make.returncode == 0, stderr


def candidate_exp_args() -> tuple[dict, dict, str]:
    """params.yaml, the candidate profile, and the EXP_ARGS the README makes of it (`reltune profile-args`)."""
    import yaml

    from reltune.profiles import profile_overrides

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles" / "tiny-candidate.yaml").read_text())
    return params, profile, " ".join(f"-S {shlex.quote(item)}" for item in profile_overrides(params, profile))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_profile_given_as_exp_args_reaches_every_queued_experiment_with_its_quotes():
    """README: make compare EXP_ARGS="$(reltune profile-args profiles/tiny-candidate.yaml)"."""
    arguments = candidate_exp_args()[2]
    commands = queued_commands("art balanced full", f"EXP_ARGS={arguments}", "EXP_SUFFIX=-candidate")
    assert set(commands) == {"art-candidate-seed3", "balanced-candidate-seed3", "full-candidate-seed3"}
    for command in commands.values():
        # the recipe's shell removed the shell quotes and kept Hydra's: one override, comma and spaces inside
        assert " -S train.converse_predicates='above:below,left of:right of' " in command + " "
        assert " -S train.copy_replay=0.1" in command and " -S instructions.negatives='random'" in command


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_dvc_applies_a_profile_s_round_model_steps_to_art_and_drops_them_for_the_one_shot_strategies(tmp_path):
    """The candidate sets train_on.1.min_steps: DVC's own override code (what `dvc exp run -S` calls) must accept
    each queued command's overrides, art keeping the profile's seed-round floor, balanced and full no round model."""
    import yaml
    from dvc.utils.hydra import apply_overrides

    params, profile, arguments = candidate_exp_args()
    assert "1" in profile["train_on"]
    train_on = {}
    for name, command in queued_commands("art balanced full", f"EXP_ARGS={arguments}").items():
        # echo printed the arguments the recipe's shell made, Hydra's quotes kept: split at the flags, not shell-wise
        overrides = [part.strip() for part in command.split(" -S ")[1:]]
        applied = tmp_path / f"{name}.yaml"
        shutil.copy(ROOT / "params.yaml", applied)
        apply_overrides(str(applied), overrides)
        train_on[name] = yaml.safe_load(applied.read_text())["train_on"]
    final = profile["train_on"]["final"]["min_steps"]
    assert train_on["art-seed3"]["1"] == {"selection": 0, "min_steps": profile["train_on"]["1"]["min_steps"]}
    assert train_on["art-seed3"]["2"] == params["train_on"]["2"]
    assert train_on["art-seed3"]["final"] == {"selection": 2, "min_steps": final}
    for one_shot in ("balanced-seed3", "full-seed3"):
        assert train_on[one_shot] == {"final": {"selection": 0, "min_steps": final}}, one_shot


# stands in for dvc in a workspace whose dvc.lock outputs are, or are not, in the cache; logs every call
FAKE_DVC_CACHE = """#!/bin/sh
echo "$*" >> {log}
case "$1 $2" in
  "stage list") echo "pretrain-tiny@tiny";;
  "data status") cat {status};;
  "queue status") echo "Task  Name  Created  Status";;  # nothing queued
esac
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("cached", [False, True])
def test_with_exp_args_compare_run_refuses_before_pretraining_when_the_lock_outputs_are_not_cached(tmp_path, cached):
    """The temporary pretraining experiment reads the lock's outputs from the cache: it would fail after pretraining."""
    status = tmp_path / "status.json"
    status.write_text('{"committed": {"modified": ["params.yaml"]}}' if cached else
                      '{"not_in_cache": ["report/", "models/round_final/"], "committed": {}}')  # fmt: skip
    log = tmp_path / "dvc.log"
    fake_dvc = executable(tmp_path / "dvc", FAKE_DVC_CACHE.format(log=log, status=status))
    directory = makefile_copy(tmp_path / "project")
    # the leftover experiment of an interrupted run is looked up under the commit
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(directory)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "workspace"], check=True)
    made = subprocess.run(["make", "--no-print-directory", "compare-run", "QUEUE_POLL=0", f"DVC={fake_dvc}",
                           "RUNNING_EXPERIMENTS=echo 0", "EXP_ARGS=-S pretrain_tiny.tiny.seed=1"], cwd=directory,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    pretrained = [line for line in log.read_text().splitlines() if line.startswith("exp run --temp")]
    if cached:
        assert made.returncode == 0, made.stderr
        assert pretrained == ["exp run --temp -n pretrain-shared pretrain-tiny -S pretrain_tiny.tiny.seed=1"]
    else:
        assert made.returncode != 0 and pretrained == []
        assert "not in the DVC cache" in made.stderr and "make repro" in made.stderr
