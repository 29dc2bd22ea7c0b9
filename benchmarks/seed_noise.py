"""Where does the seed spread of `make compare` come from? (issue 16, part 1)

Reads the experiments `make compare` groups (`<variant>-seed<N>`) and prints:

1. Per experiment: held-in mR@K with its bootstrap standard error over test
   images, and the validation recall / mean recall of every round model
   (`data/loop/round_<r>/val_recall.json`, the outcomes ART steers by).
2. `make compare`'s noise table: per variant the seed standard deviation of
   mR@20, the root-mean-square test-image standard error (about what a larger
   test split removes, since it shrinks with its square root) and the rest,
   sqrt(sd^2 - SE^2): what the seed's draw of samples, training order and
   round-to-round selection add. A variant that fixes `sampling.seed` and
   varies only `train.seed` (queued as e.g. `art-trainseed-seed<N>`)
   separates training noise from the draw.
3. Per variant: how much the seeds' selections overlap in each round (mean
   pairwise Jaccard of the positives each round added), and the predicates
   whose test recall varies most between seeds.

Usage (after `make compare`, from the repository root):
    .venv/bin/python benchmarks/seed_noise.py [--all-pipelines] [--k 20] [--dataset synthetic]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pandas as pd
import yaml

from category_answers import experiment_params  # a sibling script: benchmarks/ is on sys.path when run
from reltune.evaluation.compare import (
    PER_IMAGE_PATH,
    cached_output,
    comparison_rows,
    markdown_table,
    noise_rows,
    read_revision_json,
    same_pipeline_rows,
    show_experiments,
    variant_groups,
)
from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.statistics import align_per_image, test_image_standard_errors, weighted_mean_recalls

ROUND_FILES = "data/loop/round_{round}/{name}"


def experiment_record(row: dict, dataset: str, k: int, rounds: list[int], resamples: int) -> dict:
    """mR@K, its test-image SE, per-predicate test recall, round-model validation recalls and selections of one run."""
    rev = str(row["rev"])
    path = PER_IMAGE_PATH.format(dataset=dataset)
    table = read_per_image(read_revision_json(rev, path), f"{row['experiment']}:{path}", k)
    recalls = align_per_image([table], [path])
    mean_recall = float(weighted_mean_recalls(recalls, np.ones(len(recalls.image_ids)))[0])
    totals = table.groupby("predicate")[["recalled", "gt"]].sum()
    record = {
        "experiment": row["experiment"], "mR": mean_recall, "se": float(test_image_standard_errors(recalls, resamples)[0]),
        "predicate_recall": totals["recalled"] / totals["gt"], "val": {}, "added": {},
    }  # fmt: skip
    # the experiment's own rounds: `full` removes them, and dvc.lock may keep the stale entries
    own_params = experiment_params(rev)
    rounds = [round_index for round_index in rounds if str(round_index) in (own_params["sampling"].get("rounds") or {})]
    for round_index in rounds:
        val_file = cached_output(rev, ROUND_FILES.format(round=round_index, name="val_recall.json"))
        if val_file is not None:
            record["val"][round_index] = json.loads(val_file.read_text())
    for round_index in [0] + rounds:
        selection_file = cached_output(rev, ROUND_FILES.format(round=round_index, name="selection.parquet"))
        if selection_file is not None:
            selection = pd.read_parquet(selection_file)
            record["added"][round_index] = set(selection.loc[selection["added_in_round"] == round_index, "qid"])
    return record


def mean_jaccard(sets: list[set]) -> float:
    pairs = [(a, b) for a, b in itertools.combinations(sets, 2) if a or b]
    return float(np.mean([len(a & b) / len(a | b) for a, b in pairs])) if pairs else math.nan


def print_runs(records: list[dict], k: int, rounds: list[int]) -> None:
    head = f"| experiment | mR@{k} | test SE |" + "".join(f" round {r} val recall / mean |" for r in rounds)
    print(head + "\n|" + "---|" * (3 + len(rounds)))
    for record in records:
        cells = [record["experiment"], f"{record['mR']:.2f}", f"{record['se']:.2f}"]
        for round_index in rounds:
            val = record["val"].get(round_index)
            cells.append(f"{val['recall']:.3f} / {val['mean_recall']:.3f}" if val else "")
        print("| " + " | ".join(cells) + " |")


def print_variants(variants: dict[str, list[dict]], rounds: list[int], top: int) -> None:
    print("\n| variant | seeds |" + "".join(f" round {r} selection overlap |" for r in [0] + rounds)
          + " predicates with the largest seed sd of test recall |")  # fmt: skip
    print("|" + "---|" * (3 + len(rounds) + 1))
    for variant, records in variants.items():
        if len(records) < 2:
            continue
        overlaps = []
        for round_index in [0] + rounds:
            sets = [record["added"][round_index] for record in records if round_index in record["added"]]
            overlaps.append(f"{mean_jaccard(sets):.2f}" if len(sets) >= 2 else "")
        per_predicate = pd.DataFrame({record["experiment"]: record["predicate_recall"] for record in records})
        spread = per_predicate.std(axis=1, ddof=1).sort_values(ascending=False).head(top)
        noisy = ", ".join(f"{name} {value:.2f}" for name, value in spread.items())
        print(f"| {variant} | {len(records)} | " + " | ".join(overlaps) + f" | {noisy} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-pipelines", action="store_true", help="also experiments of other pipelines than the workspace's (make compare's choice)")
    parser.add_argument("--dataset", default=None, help="held-in dataset (default: params.yaml held_in)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--top", type=int, default=4, help="predicates listed per variant")
    args = parser.parse_args()
    with open("params.yaml", encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    dataset = args.dataset or str(params["held_in"])
    rounds = sorted(int(key) for key in (params["sampling"].get("rounds") or {}))
    rows = same_pipeline_rows(comparison_rows(show_experiments(), baselines=False), args.all_pipelines)
    variants = {
        variant: [experiment_record(row, dataset, args.k, rounds, args.resamples) for row in sorted(members, key=lambda r: str(r["experiment"]))]
        for variant, members in variant_groups(rows).items()
    }  # fmt: skip
    print_runs([record for records in variants.values() for record in records], args.k, rounds)
    noise = noise_rows(rows, [dataset], dataset)
    if noise:
        print("\n" + markdown_table(noise))
    print_variants(variants, rounds, args.top)


if __name__ == "__main__":
    main()
