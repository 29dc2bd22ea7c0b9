"""How much of a strategy's seed spread is training order, how much the draw, and does a change of the training remove it? (issue 16, part 1)

Fixes the positives an experiment's final model trained on (its
`data/loop/round_<last>/selection.parquet`, from the DVC cache) and retrains
that final model with `train.seed` 0..N-1 under one or more variants of the
train flags, then predicts and evaluates the held-in test split. The commands
are the experiment's own rendered `dvc.lock` commands (`train@final`,
`predict@<held-in>-blind0`, `evaluate@<held-in>-blind0`) with only the paths
moved to a work directory, `--seed` set and a variant's flags replaced, so a
number here is what the pipeline would have measured.

Prints held-in mR@20, mean and sd (with its 95% chi-square interval) over
`train.seed` for each experiment and variant (training order alone), and,
given several experiments (e.g. `balanced-seed0` .. `balanced-seed4`), over
their selections for each variant and train seed (the draw alone); Levene's
test (scipy, median-centred) against the first row of the same kind; the
root-mean-square bootstrap SE over test images and the rest, sqrt(sd^2 -
SE^2), the models' own spread. A variant without flags at the experiment's
own train seed retrains the experiment's final model: its mR@20 is checked
against the experiment's (`check: ... equal`).

Finished runs are kept in the work directory: a rerun only does what is missing.

Usage (from the repository root, after `make compare` made the experiments):
    .venv/bin/python benchmarks/training_order.py --experiment balanced-seed0 --seeds 5 --jobs 2 \
        --variant base= --variant "epochs40=--epochs 40" [--experiment balanced-seed1 ...] \
        [--work benchmarks/out/training_order] [--out benchmarks/out/training_order/summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from category_answers import experiment_commit, experiment_params
from issue16_targets import sd_interval
from reltune.evaluation.compare import SPREAD_KEY, cached_output, read_revision_json, read_revision_lock
from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.statistics import AlignedRecalls, align_per_image, test_image_standard_errors


@dataclass(frozen=True)
class Variant:
    name: str
    flags: dict[str, str]  # train flag -> value replacing the locked one


def parse_variant(text: str) -> Variant:
    """`name=--flag value --flag value` (flags may be empty: the locked command as is)."""
    name, separator, flag_text = text.partition("=")
    words = shlex.split(flag_text)
    if not separator or not name or len(words) % 2 or not all(word.startswith("--") for word in words[::2]):
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected NAME=[--flag value ...]")
    return Variant(name, dict(zip(words[::2], words[1::2])))


def replace_flags(command: list[str], replacements: dict[str, str], what: str) -> list[str]:
    """`command` with the value after each flag of `replacements` replaced; a flag the command lacks is an error."""
    replaced = list(command)
    for flag, value in replacements.items():
        flag_value(replaced, flag, what)  # refuses a flag the command lacks
        replaced[replaced.index(flag) + 1] = value
    return replaced


def stage_arguments(lock: dict, names: tuple[str, ...], what: str = "dvc.lock of the experiment") -> list[list[str]]:
    """The reltune arguments (after `reltune` or `python -m reltune.cli`) of the rendered commands of the named stages."""
    stages = lock.get("stages") or {}
    missing = [name for name in names if name not in stages]
    if missing:
        raise SystemExit(f"{what} has no stage {', '.join(missing)}")
    commands = []
    for name in names:
        words = shlex.split(stages[name]["cmd"])  # `reltune ARGS` or `python -m reltune.cli ARGS` (launch.score)
        commands.append(words[words.index("reltune.cli") + 1 :] if "reltune.cli" in words[:3] else words[1:])
    return commands


def locked_commands(lock: dict, held_in: str) -> tuple[list[str], list[str], list[str]]:
    """The reltune arguments of the rendered train@final, predict and evaluate commands of the held-in test split."""
    train, predict, evaluate = stage_arguments(lock, ("train@final", f"predict@{held_in}-blind0", f"evaluate@{held_in}-blind0"))
    return train, predict, evaluate


def flag_value(arguments: list[str], flag: str, what: str) -> str:
    if flag not in arguments:
        raise SystemExit(f"{what}: the locked command has no {flag}")
    return arguments[arguments.index(flag) + 1]


def check_same_inputs(experiment_lock: dict, workspace_lock: dict, held_in: str, moved: set[str]) -> None:
    """The workspace must hold the experiment's inputs and code (backbone, scenes, `src/`): same md5 in both dvc.locks."""
    for name in ("train@final", f"predict@{held_in}-blind0", f"evaluate@{held_in}-blind0"):
        ours = {dep["path"]: dep.get("md5") for dep in (workspace_lock.get("stages") or {}).get(name, {}).get("deps", [])}
        for dep in experiment_lock["stages"][name].get("deps", []):
            if dep["path"] not in moved and ours.get(dep["path"]) != dep.get("md5"):
                raise SystemExit(f"{name}: the workspace's {dep['path']} is not the experiment's (`dvc status`, `make repro`)")


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads of each of `jobs` runs side by side: its share of the cores, at least 1 (the Makefile's
    THREADS_PER_JOB). Why: `train` sets its own (cpu_threads 1), but predict and evaluate take every core, and two
    such processes beside each other, or one beside a training, stall (docs/RESULTS.md "Cost of `make compare`")."""
    return max(1, (cores or len(os.sched_getaffinity(0))) // max(1, jobs))  # the cores this process may use, as nproc


def run_commands(commands: list[list[str]], log: Path, threads: int = 0) -> None:
    """Run the reltune commands in order with this interpreter (`threads` > 0: OMP_NUM_THREADS); stop with the
    log's tail on the first failure."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads > 0 else None
    with log.open("w") as handle:
        for arguments in commands:
            command = [sys.executable, "-m", "reltune.cli", *arguments]
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
            if done.returncode != 0:
                raise SystemExit(f"reltune {' '.join(arguments[:3])} failed (log {log}):\n{log.read_text()[-1500:]}")


@dataclass(frozen=True)
class Experiment:
    name: str
    rev: str
    commands: tuple[list[str], ...]  # reltune arguments of train@final, predict, evaluate
    selection: Path  # a copy of its final selection in the work directory
    metric: float  # its own held-in mR@20
    train_seed: int  # the --seed its final model trained with


def prepare_experiment(name: str, work: Path, workspace_lock: dict) -> Experiment:
    """Resolve an experiment, check the workspace holds its inputs, copy its final selection out of the DVC cache."""
    rev = experiment_commit(name, "training_order")
    lock, held_in = read_revision_lock(rev) or {}, experiment_held_in(rev)
    commands = locked_commands(lock, held_in)
    selection_path = flag_value(commands[0], "--selection", "train@final")
    moved = {selection_path, flag_value(commands[1], "--backbone", "predict"), flag_value(commands[2], "--predictions", "evaluate")}
    check_same_inputs(lock, workspace_lock, held_in, moved)
    cached = cached_output(rev, selection_path)
    if cached is None:
        raise SystemExit(f"{name}: {selection_path} is not in the local DVC cache (dvc exp pull / rerun the experiment)")
    (work / name).mkdir(parents=True, exist_ok=True)
    selection = work / name / "selection.parquet"
    shutil.copyfile(cached, selection)  # the cache file has no suffix
    metric = float(read_revision_json(rev, f"metrics/{held_in}.json")[SPREAD_KEY])
    return Experiment(name, rev, commands, selection, metric, int(flag_value(commands[0], "--seed", "train@final")))


def moved_commands(experiment: Experiment, variant: Variant, seed: int, run_dir: Path) -> list[list[str]]:
    """The experiment's train, predict and evaluate arguments with every output in `run_dir`, `--seed` and the variant's flags."""
    train, predict, evaluate = experiment.commands
    model, predictions = str(run_dir / "model"), str(run_dir / "predictions.parquet")
    train_flags = {**variant.flags, "--timing": str(run_dir / "train_timing.json"), "--selection": str(experiment.selection), "--out": model, "--seed": str(seed)}
    predict_flags = {"--timing": str(run_dir / "predict_timing.json"), "--backbone": model, "--out": predictions}
    evaluate_flags = {"--timing": str(run_dir / "evaluate_timing.json"), "--predictions": predictions, "--out": str(run_dir / "metrics.json")}
    evaluate_flags |= {flag: str(run_dir / name) for flag, name in (("--details", "details.json"), ("--per-predicate", "per_predicate.csv"), ("--per-image", "per_image.json"))}
    return [
        replace_flags(train, train_flags, f"variant {variant.name}"),
        replace_flags(predict, predict_flags, "predict"),
        replace_flags(evaluate, evaluate_flags, "evaluate"),
    ]


def one_run(work: Path, experiment: Experiment, variant: Variant, seed: int, threads: int = 0) -> dict:
    """Train, predict, evaluate one (experiment, variant, seed) with `threads` (run_commands); `wall_seconds.txt`,
    written last, marks a finished run."""
    run_dir = work / experiment.name / variant.name / f"seed{seed}"
    finished = run_dir / "wall_seconds.txt"
    if not finished.exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # what an interrupted run left is started over, not trusted
        run_dir.mkdir(parents=True)
        started = time.time()
        run_commands(moved_commands(experiment, variant, seed, run_dir), run_dir / "log.txt", threads)
        finished.write_text(f"{time.time() - started:.1f}\n")
    value = float(json.loads((run_dir / "metrics.json").read_text())[SPREAD_KEY])
    return {"experiment": experiment.name, "variant": variant.name, "seed": seed, SPREAD_KEY: value, "per_image": run_dir / "per_image.json"}


RunKey = tuple[str, str, int]  # experiment, variant, train seed


def run_key(run: dict) -> RunKey:
    return (run["experiment"], run["variant"], run["seed"])


def aligned_recalls(runs: list[dict], k: int) -> AlignedRecalls:
    """The runs' per-image recalls at K, stacked in the order of `runs` (one read of their per-image files)."""
    tables = [read_per_image(json.loads(run["per_image"].read_text()), str(run["per_image"]), k) for run in runs]
    return align_per_image(tables, [str(run["per_image"]) for run in runs])


def run_errors(runs: list[dict], recalls: AlignedRecalls, resamples: int | None) -> dict[RunKey, float]:
    """Bootstrap SE over test images of each run's mR@K (the part of a seed sd a larger test split would shrink)."""
    return {run_key(run): float(error) for run, error in zip(runs, test_image_standard_errors(recalls, resamples))}


def test_image_errors(runs: list[dict], k: int, resamples: int | None) -> dict[RunKey, float]:
    """`run_errors` of the runs' per-image files."""
    return run_errors(runs, aligned_recalls(runs, k), resamples)


def spread_row(label: str, flags: str, runs: list[dict], errors: dict[RunKey, float], reference: list[float] | None) -> dict:
    """mR@20 of the runs, mean, sd with its 95% interval, Levene's p against `reference` (3+ values each), RMS test-image SE and
    the rest, sqrt(sd^2 - SE^2): the models' own spread."""
    scores = [run[SPREAD_KEY] for run in runs]
    spread = float(np.std(scores, ddof=1))
    low, high = sd_interval(spread, len(scores))
    comparable = reference is not None and min(len(reference), len(scores)) >= 3  # two values have no spread to compare
    levene = float(stats.levene(reference, scores, center="median").pvalue) if comparable else None
    test_error = float(np.sqrt(np.mean([errors[run_key(run)] ** 2 for run in runs])))
    return {"spread_over": label, "flags": flags, "runs": [list(run_key(run)) for run in runs], "values": scores,
            "mean": float(np.mean(scores)), "sd": spread, "sd_low": low, "sd_high": high, "levene_p_vs_first": levene,
            "test_image_se": test_error, "rest": float(np.sqrt(max(spread**2 - test_error**2, 0.0)))}  # fmt: skip


def summary_rows(runs: list[dict], experiments: list[str], variants: list[Variant], seeds: int, errors: dict[RunKey, float]) -> list[dict]:
    """Spread over train.seed per (experiment, variant) with 2+ seeds (training order, the draw fixed), then over
    experiments per (variant, seed) with 2+ experiments (the draw, training order fixed); Levene against the
    first row of its kind."""
    by_key = {run_key(run): run for run in runs}
    groups = []  # (label, variant, runs, kind)
    for experiment in experiments if seeds >= 2 else []:
        for variant in variants:
            members = [by_key[(experiment, variant.name, seed)] for seed in range(seeds)]
            groups.append((f"train.seed 0..{seeds - 1} on {experiment}'s selection", variant, members, "order"))
    for variant in variants if len(experiments) >= 2 else []:
        for seed in range(seeds):
            members = [by_key[(experiment, variant.name, seed)] for experiment in experiments]
            groups.append((f"selections of {', '.join(experiments)}, train.seed {seed}", variant, members, "draw"))
    first: dict[str, list[float]] = {}
    rows = []
    for label, variant, members, kind in groups:
        flags = " ".join(f"{flag} {value}" for flag, value in variant.flags.items())
        rows.append({"variant": variant.name, **spread_row(label, flags, members, errors, first.get(kind))})
        first.setdefault(kind, [member[SPREAD_KEY] for member in members])
    return rows


def print_summary(rows: list[dict], experiments: list[Experiment], runs: list[dict], variants: list[Variant]) -> None:
    print(f"held-in {SPREAD_KEY} of final models retrained on experiments' final selections")
    print("| variant | flags | spread over | values | mean | sd [95%] | Levene p vs first | test-image SE | rest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        values = " / ".join(f"{value:.2f}" for value in row["values"])
        levene = "" if row["levene_p_vs_first"] is None else f"{row['levene_p_vs_first']:.3f}"
        print(f"| {row['variant']} | {row['flags'] or '(locked)'} | {row['spread_over']} | {values} | {row['mean']:.2f} "
              f"| {row['sd']:.2f} [{row['sd_low']:.2f}, {row['sd_high']:.2f}] | {levene} | {row['test_image_se']:.2f} | {row['rest']:.2f} |")  # fmt: skip
    by_key = {run_key(run): run for run in runs}
    for experiment in experiments:  # the locked command with the experiment's own seed retrains its own final model
        for variant in variants:
            run = by_key.get((experiment.name, variant.name, experiment.train_seed))
            if not variant.flags and run is not None:
                verdict = "equal" if abs(run[SPREAD_KEY] - experiment.metric) < 1e-9 else "DIFFERENT"
                print(f"check: {experiment.name} {variant.name} seed {experiment.train_seed} {run[SPREAD_KEY]:.4f} vs the experiment's {experiment.metric:.4f}: {verdict}")


def add_run_options(parser: argparse.ArgumentParser, work: Path) -> None:
    """--jobs, --resamples, --work, --out: how the retraining runs share the machine and where they and the summary go."""
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each trains on one thread; predicts on its share of the cores)")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: make compare's)")
    parser.add_argument("--work", type=Path, default=work)
    parser.add_argument("--out", type=Path, default=None, help="summary JSON (default: <work>/summary.json)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", action="append", required=True, help="experiment name (the newest of that name) or git revision (repeat: several draws)")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, help="NAME=[--flag value ...] (repeat)")
    parser.add_argument("--seeds", type=int, default=5, help="train.seed 0..N-1")
    add_run_options(parser, Path("benchmarks/out/training_order"))
    args = parser.parse_args()
    if len({variant.name for variant in args.variant}) != len(args.variant) or len(set(args.experiment)) != len(args.experiment):
        raise SystemExit("variant names and experiments must differ")
    if args.seeds < 2 and len(args.experiment) < 2:
        raise SystemExit("a spread needs --seeds 2 or more, or two or more experiments")

    workspace_lock = read_revision_lock("workspace") or {}
    experiments = [prepare_experiment(name, args.work, workspace_lock) for name in args.experiment]
    jobs = [(experiment, variant, seed) for experiment in experiments for variant in args.variant for seed in range(args.seeds)]
    threads = threads_per_job(args.jobs)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda job: one_run(args.work, *job, threads), jobs))
    errors = test_image_errors(runs, int(SPREAD_KEY.partition("@")[2]), args.resamples)
    rows = summary_rows(runs, args.experiment, args.variant, args.seeds, errors)
    print_summary(rows, experiments, runs, args.variant)
    out = args.out or args.work / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"experiments": {e.name: {"rev": e.rev, SPREAD_KEY: e.metric, "train_seed": e.train_seed} for e in experiments}, "rows": rows}
    out.write_text(json.dumps(document, indent=1) + "\n")


def experiment_held_in(rev: str) -> str:
    """`held_in` of the experiment's params.yaml."""
    return str(experiment_params(rev)["held_in"])


if __name__ == "__main__":
    main()
