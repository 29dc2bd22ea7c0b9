"""Do art's own picks make its final model better and steadier than uniform picks of the same predicates? (issue 16, part 1)

Takes an experiment's final selection (`data/loop/round_<last>/selection.parquet`)
and builds its swapped twin: every pick of a selection round (added_in_round > 0:
art's high-entropy true positives, low-similarity false positives, false
negatives) replaced by a uniform draw of an unselected training positive of the
same predicate; the seed round's picks are kept, so both sets have the same
predicates in the same numbers and differ only in which questions the rounds
chose. Where a predicate's pool is used up the experiment's own pick is kept
(counted in the output). Both sets are retrained with `train.seed` 0..N-1 by the
experiment's own locked commands (`training_order.py`'s machinery: same flags,
paths moved to the work directory), predicted and evaluated on the held-in test
split.

Prints per set: held-in mR@20 per train seed, mean, sd with its 95% chi-square
interval, Levene's p (swapped against own), test-image SE; then own - swapped,
paired by train seed: the bootstrap over seeds and test images
(`paired_difference`, as `make compare`) and Student's t over the per-seed
differences, each with its verdict.

Finished runs are kept in the work directory: a rerun only does what is missing.

Usage (from the repository root, after `make compare` made the experiments):
    .venv/bin/python benchmarks/hard_picks.py --experiment art-seed0 --seeds 5 --jobs 2 \
        [--draw-seed 0] [--work benchmarks/out/hard_picks] [--out benchmarks/out/hard_picks/summary.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.evaluation.compare import SPREAD_KEY, read_revision_lock
from reltune.evaluation.statistics import paired_difference, paired_seed_interval
from training_order import (
    Experiment, Variant, add_run_options, aligned_recalls, flag_value, one_run, prepare_experiment, run_errors, spread_row, threads_per_job,
)  # fmt: skip

LOCKED = Variant("locked", {})  # the experiment's train flags as they are: only the selection and the seed change
SWAPPED_REASON = "random"  # a uniform draw of the pool: the selection contract's name for it


def swap_round_picks(selection: pd.DataFrame, positives: pd.DataFrame, draw_seed: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """`selection` with each pick of a selection round (added_in_round > 0) replaced by a uniform draw of a training
    positive of the same predicate that neither set holds; and, per predicate, how many picks were kept because its
    pool was used up. `positives`: qid and predicate of every training positive."""
    predicate_of = positives.set_index("qid")["predicate"]
    unknown = selection.loc[~selection["qid"].isin(predicate_of.index), "qid"]
    if len(unknown):
        raise ValueError(f"selection qid {unknown.iloc[0]!r} (row {unknown.index[0]}) is not a training positive")
    # the pool of each predicate in a fixed order, so that the draw depends on draw_seed alone
    pools = {predicate: sorted(qids) for predicate, qids in positives.groupby("predicate")["qid"]}
    taken = set(selection["qid"])
    rng = np.random.default_rng(draw_seed)
    rows, kept = [], {}
    for row in selection.itertuples(index=False):
        predicate = predicate_of[row.qid]
        candidates = [qid for qid in pools[predicate] if qid not in taken] if row.added_in_round > 0 else []
        if row.added_in_round > 0 and not candidates:
            kept[predicate] = kept.get(predicate, 0) + 1
        if not candidates:  # a seed-round pick, or nothing left to draw from
            rows.append((row.qid, row.added_in_round, row.reason))
            continue
        drawn = candidates[int(rng.integers(len(candidates)))]
        taken.add(drawn)
        rows.append((drawn, row.added_in_round, SWAPPED_REASON))
    return pd.DataFrame(rows, columns=["qid", "added_in_round", "reason"]), dict(sorted(kept.items()))


def training_positives(instructions: Path) -> pd.DataFrame:
    """qid and predicate of the positive questions of a training instructions file."""
    table = pd.read_parquet(instructions, columns=["qid", "kind", "predicate"])
    return table.loc[table["kind"] == "positive", ["qid", "predicate"]].reset_index(drop=True)


def swapped_experiment(experiment: Experiment, work: Path, draw_seed: int) -> tuple[Experiment, dict]:
    """The experiment's twin trained on its swapped selection (written to `<work>/<name>-swapped/selection.parquet`)."""
    instructions = Path(flag_value(experiment.commands[0], "--instructions", "train@final"))
    selection = pd.read_parquet(experiment.selection)
    try:
        swapped, kept = swap_round_picks(selection, training_positives(instructions), draw_seed)
    except ValueError as error:
        raise InputError(experiment.selection, str(error)) from None
    name = f"{experiment.name}-swapped"
    path = work / name / "selection.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    swapped.to_parquet(path, index=False)
    replaced = int((swapped["qid"] != selection["qid"]).sum())  # a draw is never a qid of the selection
    facts = {"picks": int((selection["added_in_round"] > 0).sum()), "replaced": replaced, "kept_where_pool_used_up": kept}
    return dataclasses.replace(experiment, name=name, selection=path, metric=float("nan")), facts


def summary(own: list[dict], swapped: list[dict], k: int, resamples: int | None) -> dict:
    """Spread rows of both sets (Levene: swapped against own) and own - swapped paired by train seed."""
    recalls = aligned_recalls(own + swapped, k)
    errors = run_errors(own + swapped, recalls, resamples)
    rows = [spread_row("train.seed, own selection", "", own, errors, None)]
    rows.append(spread_row("train.seed, swapped selection", "", swapped, errors, rows[0]["values"]))
    n = len(own)
    first, second = (dataclasses.replace(recalls, fractions=recalls.fractions[i * n : (i + 1) * n]) for i in (0, 1))
    pairs = {"seeds and test images": paired_difference(first, second, resamples)}
    if n > 1:
        pairs["seeds (Student's t)"] = paired_seed_interval(first, second)
    differences = {over: {"mean": e.mean, "low": e.low, "high": e.high, "verdict": e.verdict()} for over, e in pairs.items()}
    return {"rows": rows, "own_minus_swapped": differences}


def print_summary(document: dict) -> None:
    swap = document["swap"]
    kept = ", ".join(f"{predicate} {count}" for predicate, count in swap["kept_where_pool_used_up"].items()) or "none"
    print(f"held-in {SPREAD_KEY}, {document['experiment']}'s final selection against its swapped twin: {swap['replaced']} of "
          f"{swap['picks']} round picks replaced (draw seed {swap['draw_seed']}), kept where the pool was used up: {kept}")
    print("| selection | values by train seed | mean | sd [95%] | Levene p vs own | test-image SE |")
    print("|---|---|---|---|---|---|")
    for row in document["rows"]:
        values = " / ".join(f"{value:.2f}" for value in row["values"])
        levene = "" if row["levene_p_vs_first"] is None else f"{row['levene_p_vs_first']:.3f}"
        print(f"| {row['spread_over'].split(', ')[1]} | {values} | {row['mean']:.2f} | {row['sd']:.2f} [{row['sd_low']:.2f}, {row['sd_high']:.2f}] | {levene} | {row['test_image_se']:.2f} |")  # fmt: skip
    for over, difference in document["own_minus_swapped"].items():
        print(f"own - swapped over {over}: {difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}] ({difference['verdict']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="experiment name (the newest of that name) or git revision")
    parser.add_argument("--seeds", type=int, default=5, help="train.seed 0..N-1 for each set")
    parser.add_argument("--draw-seed", type=int, default=0, help="seed of the uniform draws that replace the round picks")
    add_run_options(parser, Path("benchmarks/out/hard_picks"))
    args = parser.parse_args()
    if args.seeds < 2:
        raise SystemExit("a spread needs --seeds 2 or more")

    own = prepare_experiment(args.experiment, args.work, read_revision_lock("workspace") or {})
    swapped, facts = swapped_experiment(own, args.work, args.draw_seed)
    jobs = [(experiment, seed) for seed in range(args.seeds) for experiment in (own, swapped)]  # pairs finish together
    threads = threads_per_job(args.jobs)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda job: one_run(args.work, job[0], LOCKED, job[1], threads), jobs))
    by_set = [sorted((run for run in runs if run["experiment"] == e.name), key=lambda run: run["seed"]) for e in (own, swapped)]
    document = {"experiment": own.name, "rev": own.rev, "swap": facts | {"draw_seed": args.draw_seed}}
    document |= summary(*by_set, int(SPREAD_KEY.partition("@")[2]), args.resamples)
    print_summary(document)
    out = args.out or args.work / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
