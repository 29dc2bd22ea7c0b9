"""What does each seed strategy select, and what does a model tuned on it learn? (issue 16, part 5)

For each strategy and seed: `reltune select --round 0` (the seed round), `reltune
train` from the pipeline's backbone with the train params of params.yaml, and
`reltune score --strategy random` (validation only: the pool is not scored).
Prints per predicate how many positives each strategy selected (mean over
seeds) and the validation recall of its model (mean over seeds), then the
mean recall per strategy with its seed standard deviation. The same commands
and flags as the pipeline's `seed`, `train@1` and `score@1` stages, so the
numbers are the ones ART steers by.

Usage (after `make repro`, which builds the backbone, instructions and scenes):
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
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def reltune(*arguments: str) -> None:
    """Run one reltune command as the pipeline does; stop with its stderr tail on failure."""
    done = subprocess.run([sys.executable, "-m", "reltune.cli", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reltune {arguments[0]} failed:\n{done.stderr[-2000:]}")


def train_flags(params: dict, epochs: int | None, lr: float | None, min_steps: int | None = None) -> list[str]:
    """The `train` flags of params.yaml (as the train@<k> stage passes them), epochs / lr / min_steps overridable."""
    train, model = params["train"], params["model"]
    flags = {
        "--train-all": str(model["train_all"]).lower(), "--lora-r": model["lora_r"],
        "--epochs": epochs or train["epochs"], "--batch-size": train["batch_size"], "--grad-accum": train["grad_accum"],
        "--lr": lr or train["lr"], "--warmup-steps": train["warmup_steps"], "--schedule": train["schedule"],
        "--decay-rate": train["decay_rate"], "--weight-decay": train["weight_decay"], "--clip-norm": train["clip_norm"],
        "--min-steps": train.get("min_steps", 0) if min_steps is None else min_steps,
        "--name-substitution": train["name_substitution"], "--name-substitution-mode": train["name_substitution_mode"],
        "--checkpoint-every": 0,
    }  # fmt: skip
    return [str(item) for pair in flags.items() for item in pair]


def one_run(work: Path, params: dict, strategy: str, seed: int, budget_fraction: float, epochs: int | None,
            lr: float | None, min_steps: int | None = None) -> dict:
    """select -> train -> validation recall of one (strategy, seed); returns counts and recalls per predicate."""
    held_in = params["held_in"]
    instructions, scenes = f"data/instructions/{held_in}/train.parquet", f"data/scenes/{held_in}"
    run = work / f"{strategy}-{seed}"
    started = time.perf_counter()
    reltune("select", "--instructions", instructions, "--round", "0", "--strategy", strategy,
            "--budget-fraction", str(budget_fraction), "--seed", str(seed), "--out", str(run / "round_0"))  # fmt: skip
    reltune("train", "--backbone", params["model"]["backbone"], "--instructions", instructions, "--scenes", scenes,
            "--selection", str(run / "round_0" / "selection.parquet"), "--out", str(run / "model"), "--seed", str(seed),
            "--exclude-names-of", "data/scenes", *train_flags(params, epochs, lr, min_steps))  # fmt: skip
    reltune("score", "--backbone", str(run / "model"), "--instructions", instructions,
            "--val-instructions", f"data/instructions/{held_in}/val.parquet", "--scenes", scenes,
            "--selection", str(run / "round_0" / "selection.parquet"), "--out", str(run / "round_1"),
            "--strategy", "random", "--budget-fraction", str(budget_fraction), "--seed", str(seed))  # fmt: skip
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
    parser.add_argument("--budget-fraction", type=float, default=None, help="default: sampling.budget_fraction")
    parser.add_argument("--epochs", type=int, default=None, help="default: train.epochs")
    parser.add_argument("--lr", type=float, default=None, help="default: train.lr")
    parser.add_argument("--min-steps", type=int, default=None, help="default: train.min_steps")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="benchmarks/results/seed_round.json")
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())
    budget_fraction = args.budget_fraction or params["sampling"]["budget_fraction"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="seed_round_") as work:
        for seed in args.seeds:
            for strategy in args.strategies:
                runs.append(one_run(Path(work), params, strategy, seed, budget_fraction, args.epochs, args.lr, args.min_steps))
                print(f"{strategy} seed {seed}: validation mean recall {runs[-1]['val_mean_recall']:.3f} "
                      f"({runs[-1]['seconds']} s)", file=sys.stderr, flush=True)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"budget_fraction": budget_fraction, "epochs": args.epochs, "lr": args.lr, "min_steps": args.min_steps, "runs": runs}, indent=1))
    print(summary(runs))


if __name__ == "__main__":
    main()
