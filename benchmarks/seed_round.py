"""What does each seed strategy select, and what does a model tuned on it learn? (issue 16, part 5)

For each strategy and seed: the pipeline's `seed` (select --round 0), `train@1`
and `score@1` commands as rendered in the workspace's dvc.lock (the last `dvc
repro`), with the strategy, seed and outputs replaced; `score` runs with
`--strategy random` (validation only: the pool is not scored). So the numbers
are the ones ART steers by, and a flag added to the stage cannot be forgotten
here. Prints per predicate how many positives each strategy selected (mean
over seeds) and the validation recall of its model (mean over seeds), then the
mean recall per strategy with its seed standard deviation.

Usage (after `make repro`, which builds the backbone, instructions, scenes and dvc.lock):
    .venv/bin/python benchmarks/seed_round.py --strategies balanced random --seeds 0 1 2 \
        [--budget-fraction 0.04] [--epochs 20] [--lr 0.001] [--min-steps 560] [--out benchmarks/results/seed_round.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from training_order import flag_value, replace_flags, stage_arguments

SEED_ROUND_STAGES = ("seed", "train@1", "score@1")


def reltune(arguments: list[str]) -> None:
    """Run one reltune command as the pipeline does; stop with its stderr tail on failure."""
    done = subprocess.run([sys.executable, "-m", "reltune.cli", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reltune {' '.join(arguments[2:3])} failed:\n{done.stderr[-2000:]}")


@dataclass(frozen=True)
class Overrides:
    """What a run changes in the locked commands besides the strategy, seed and outputs (None: as locked)."""

    budget_fraction: float | None = None
    epochs: int | None = None
    lr: float | None = None
    min_steps: int | None = None

    def train_flags(self) -> dict[str, str]:
        chosen = {"--epochs": self.epochs, "--lr": self.lr, "--min-steps": self.min_steps}
        return {flag: str(value) for flag, value in chosen.items() if value is not None}


def seed_round_commands(locked: list[list[str]], strategy: str, seed: int, run: Path, overrides: Overrides) -> list[list[str]]:
    """The locked seed, train@1 and score@1 arguments with `strategy`, `seed`, every output under `run` and `overrides`."""
    select, train, score = locked
    round_0, model, round_1 = run / "round_0", run / "model", run / "round_1"
    selection = str(round_0 / "selection.parquet")
    budget = {} if overrides.budget_fraction is None else {"--budget-fraction": str(overrides.budget_fraction)}
    select_flags = {"--timing": str(run / "seed_timing.json"), "--strategy": strategy, "--seed": str(seed), "--out": str(round_0), **budget}
    train_flags = {"--timing": str(run / "train_timing.json"), "--selection": selection, "--out": str(model), "--seed": str(seed),
                   "--checkpoint-every": "0", **overrides.train_flags()}  # fmt: skip
    # `random` needs no scores: score@1 then answers the validation questions only
    score_flags = {"--timing": str(run / "score_timing.json"), "--backbone": str(model), "--selection": selection,
                   "--out": str(round_1), "--strategy": "random", "--seed": str(seed), **budget}  # fmt: skip
    return [
        replace_flags(select, select_flags, "seed"),
        replace_flags(train, train_flags, "train@1"),
        replace_flags(score, score_flags, "score@1"),
    ]


def one_run(work: Path, locked: list[list[str]], strategy: str, seed: int, overrides: Overrides) -> dict:
    """select -> train -> validation recall of one (strategy, seed); returns counts and recalls per predicate."""
    run = work / f"{strategy}-{seed}"
    started = time.perf_counter()
    commands = seed_round_commands(locked, strategy, seed, run, overrides)
    for arguments in commands:
        reltune(arguments)
    instructions = flag_value(commands[0], "--instructions", "seed")
    selected = pd.read_parquet(run / "round_0" / "selection.parquet", columns=["qid"])
    table = pd.read_parquet(instructions, columns=["qid", "predicate"]).set_index("qid")
    recall = json.loads((run / "round_1" / "val_recall.json").read_text())
    return {
        "strategy": strategy, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
        "selected": {str(k): int(v) for k, v in table.loc[selected["qid"], "predicate"].value_counts().items()},
        "val_recall": recall["recall"], "val_mean_recall": recall["mean_recall"], "per_predicate": recall["per_predicate"],
    }  # fmt: skip


def summary(runs: list[dict]) -> str:
    """Per predicate: mean selected count and mean validation recall per strategy; then mean recall ± seed sd."""
    strategies = list(dict.fromkeys(run["strategy"] for run in runs))
    predicates = sorted({p for run in runs for p in run["per_predicate"]})
    header = ["predicate"] + [f"{s} n" for s in strategies] + [f"{s} recall" for s in strategies]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for predicate in predicates:
        counts = [np.mean([r["selected"].get(predicate, 0) for r in runs if r["strategy"] == s]) for s in strategies]
        recalls = [np.mean([r["per_predicate"].get(predicate, 0.0) for r in runs if r["strategy"] == s]) for s in strategies]
        lines.append("| " + " | ".join([predicate, *(f"{c:.1f}" for c in counts), *(f"{r:.2f}" for r in recalls)]) + " |")
    lines.append("")
    for strategy in strategies:
        means = [r["val_mean_recall"] for r in runs if r["strategy"] == strategy]
        overall = [r["val_recall"] for r in runs if r["strategy"] == strategy]
        spread = f" (seed sd {np.std(means, ddof=1):.3f})" if len(means) > 1 else ""
        lines.append(f"{strategy}: validation mean recall {np.mean(means):.3f}{spread}, recall {np.mean(overall):.3f}, "
                     f"{len(means)} seed(s)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["balanced", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-fraction", type=float, default=None, help="default: the locked seed stage's")
    parser.add_argument("--epochs", type=int, default=None, help="default: the locked train@1's")
    parser.add_argument("--lr", type=float, default=None, help="default: the locked train@1's")
    parser.add_argument("--min-steps", type=int, default=None, help="default: the locked train@1's")
    parser.add_argument("--lock", default="dvc.lock", help="the pipeline whose commands are run (after `make repro`)")
    parser.add_argument("--out", default="benchmarks/results/seed_round.json")
    args = parser.parse_args()
    if not Path(args.lock).is_file():
        raise SystemExit(f"{args.lock}: not found (run `make repro` first)")
    locked = stage_arguments(yaml.safe_load(Path(args.lock).read_text()) or {}, SEED_ROUND_STAGES, args.lock)
    overrides = Overrides(args.budget_fraction, args.epochs, args.lr, args.min_steps)
    runs = []
    with tempfile.TemporaryDirectory(prefix="seed_round_") as work:
        for seed in args.seeds:
            for strategy in args.strategies:
                runs.append(one_run(Path(work), locked, strategy, seed, overrides))
                print(f"{strategy} seed {seed}: validation mean recall {runs[-1]['val_mean_recall']:.3f} "
                      f"({runs[-1]['seconds']} s)", file=sys.stderr, flush=True)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    budget_fraction = overrides.budget_fraction or float(flag_value(locked[0], "--budget-fraction", "seed"))
    record = {"budget_fraction": budget_fraction, "epochs": args.epochs, "lr": args.lr, "min_steps": args.min_steps,
              "commands": [" ".join(arguments) for arguments in locked], "runs": runs}  # fmt: skip
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(summary(runs))


if __name__ == "__main__":
    main()
