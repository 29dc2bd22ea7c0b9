"""How much of ART's allocation in a round follows the sampling noise of the validation split? (issue 16, part 1)

ART gives each predicate a share of the round's budget from its validation
recall (Alg. 2), measured on the validation split's positives of that
predicate: in the embedded default 1 to 4 relations for half the predicates.
This script keeps everything of one round fixed (the workspace's round model,
its pool scores, the previous selection, the seed) and redraws only the
per-predicate validation recall from its posterior given the measured
answers (Jeffreys Beta(k + 1/2, n - k + 1/2), n the predicate's validation
positives, k the recalled ones), then reruns the round's selection with the
locked `select@<round>` settings. The spread of each predicate's added
examples over the draws is the allocation noise that the validation split
alone causes; `--factors 1 5` also shows it for a split 5x larger (n and k
scaled, the same recall). Predicates the round did not score (budget 0 in the
run, so no pool scores) keep their measured recall.

Usage (after `make repro` with strategy art; reads dvc.lock and data/loop/round_<k>):
    .venv/bin/python benchmarks/validation_noise.py [--round 1] [--draws 30] [--factors 1 5] \
        [--out benchmarks/results/validation_noise.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from training_order import flag_value, stage_arguments
from reltune.io import read_json, read_parquet
from reltune.sampling.loop import (
    SCORE_COLUMNS,
    SELECTION_COLUMNS,
    select_round,
    training_positives,
    validate_previous_selection,
    validate_recall,
    validate_scores,
)
from reltune.sampling.strategies import make_strategy


def posterior_recall(
    recall: dict[str, float], support: dict[str, int], scored: set[str], factor: int, rng: np.random.Generator
) -> dict[str, float]:
    """One draw of every scored predicate's recall from Beta(k + 1/2, n - k + 1/2), n = factor x its support."""
    drawn = dict(recall)
    for predicate, value in recall.items():
        count = int(support.get(predicate, 0))
        if count == 0 or predicate not in scored:
            continue
        recalled = round(value * count) * factor
        drawn[predicate] = float(rng.beta(recalled + 0.5, count * factor - recalled + 0.5))
    return drawn


def round_inputs(lock: dict, round_index: int) -> dict:
    """The locked select@<round> settings and the tables it read (validated as the stage does)."""
    (select,) = stage_arguments(lock, (f"select@{round_index}",), "dvc.lock")
    (score,) = stage_arguments(lock, (f"score@{round_index}",), "dvc.lock")
    flag = lambda name: flag_value(select, name, f"select@{round_index}")  # noqa: E731
    instructions = flag("--instructions")
    positives = training_positives(read_parquet(instructions, ["qid", "kind", "predicate"]), instructions)
    previous = validate_previous_selection(read_parquet(flag("--previous"), SELECTION_COLUMNS), positives, round_index, flag("--previous"))
    scores = validate_scores(read_parquet(flag("--scores"), SCORE_COLUMNS), positives, previous["qid"], flag("--scores"))
    val_path = flag_value(score, "--val-instructions", f"score@{round_index}")
    val = read_parquet(val_path, ["kind", "predicate"])
    return {
        "positives": positives, "previous": previous, "scores": scores,
        "recall": validate_recall(read_json(flag("--val-recall")), flag("--val-recall")),
        "support": val.loc[val["kind"] == "positive", "predicate"].value_counts().to_dict(),
        "strategy": make_strategy(flag("--strategy"), components=flag("--components").split(","),
                                  z_init=float(flag("--z-init")), z_step=float(flag("--z-step"))),
        "budget_fraction": float(flag("--budget-fraction")), "seed": int(flag("--seed")),
        "output": Path(flag("--out")) / "selection.parquet",
    }  # fmt: skip


def added_per_predicate(inputs: dict, round_index: int, recall: dict[str, float]) -> pd.Series:
    """Examples the round adds per predicate when its validation recall is `recall`."""
    selection, _ = select_round(inputs["positives"], inputs["previous"], inputs["strategy"], round_index,
                                inputs["budget_fraction"], inputs["seed"], inputs["scores"], recall)  # fmt: skip
    added = selection.loc[~selection["qid"].isin(inputs["previous"]["qid"]), "qid"]
    return inputs["positives"].set_index("qid").loc[added, "predicate"].value_counts()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    parser.add_argument("--out", default="benchmarks/results/validation_noise.json")
    args = parser.parse_args()
    inputs = round_inputs(yaml.safe_load(Path("dvc.lock").read_text()) or {}, args.round)
    if not inputs["strategy"].needs_scores:
        raise SystemExit(f"select@{args.round} ran strategy {inputs['strategy'].name}, which ignores validation recall")
    scored = set(inputs["positives"].set_index("qid").loc[inputs["scores"]["qid"], "predicate"])
    measured = added_per_predicate(inputs, args.round, inputs["recall"])
    locked = read_parquet(inputs["output"], SELECTION_COLUMNS)  # what select@<round> itself wrote
    locked_added = locked.loc[locked["added_in_round"] == args.round, "qid"]
    stage_counts = inputs["positives"].set_index("qid").loc[locked_added, "predicate"].value_counts()
    if not stage_counts.sort_index().equals(measured.sort_index()):
        raise SystemExit(f"{inputs['output']}: the measured recall does not reproduce select@{args.round}'s selection (`dvc status`)")
    print(f"select@{args.round} reproduced from its locked inputs: {int(measured.sum())} examples added")
    rng = np.random.default_rng(args.seed)
    record = {"round": args.round, "draws": args.draws, "not_scored": sorted(set(inputs["recall"]) - scored), "factors": {}}
    for factor in args.factors:
        draws = pd.DataFrame([added_per_predicate(inputs, args.round, posterior_recall(inputs["recall"], inputs["support"], scored, factor, rng))
                              for _ in range(args.draws)]).fillna(0)  # fmt: skip
        table = pd.DataFrame({"validation positives": pd.Series(inputs["support"]) * factor, "added (measured recall)": measured,
                              "added mean": draws.mean(), "added sd": draws.std(ddof=1)}).fillna(0).sort_values("validation positives")  # fmt: skip
        print(f"validation split x{factor}: sd of the examples added per predicate over {args.draws} draws, "
              f"mean over predicates {table['added sd'].mean():.2f}")  # fmt: skip
        print(table.round(2).to_markdown())
        record["factors"][str(factor)] = {"mean_sd": float(table["added sd"].mean()), "per_predicate": table.round(4).to_dict(orient="index")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
