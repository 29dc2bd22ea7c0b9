"""Issue 16's parts 3 and 4 on `full` runs made by `dvc repro` in their own workspaces.

`issue16_targets.py` reads the experiments of `make compare` from git. A run
made instead with a plain `dvc repro` in a git worktree (one per seed, sharing
a DVC cache; docs/RESULTS.md "Replaying the copy questions") leaves its results in that
worktree's `metrics/`. This script reads them there and prints, per run:

- held-in and held-out R / mR / mgR @20, mR@20's bootstrap standard error over
  test images, and the held-out blind control's mgR@20;
- the held-in predicates below part 3's 80 and the two lowest, each with a 95%
  percentile bootstrap interval over its test images (a test split with ~20
  relations of a predicate cannot tell 0.7 from 0.85);
- part 3's and part 4's checks, the same `Check`s as `issue16_targets.py`;
- per axis of the direction predicates, how many held-in test pairs get a
  top-scored predicate on their axis and, of those, the share naming the
  true end (always `above` gives 0.68 on the synthetic world, a coin 0.5);
- per predicate that part 4 carries over, the held-out test relations whose
  pair's top-scored predicate is theirs, apart for pairs of two classes the
  held-in vocabulary has and pairs with an unseen class: whether transfer
  is lost on the relation or on the unseen name.

With `--against`, one baseline workspace per run (the same seed, in the same
order): the paired mR@20 difference run - baseline, bootstrapped over test
images, per pair and over all pairs (`paired_difference`), held in and held out.
A single pair's interval holds its two models fixed, so its verdict is about
the test images only: another training seed moves one run by more (2-5
points on the candidate, docs/RESULTS.md "Art's spread is its training"); read the
line over all pairs, which resamples the pairs too.

Usage (from the repository root):
    .venv/bin/python benchmarks/full_runs.py /work/wt_s3 /work/wt_s4 [--against /work/wt_b3 /work/wt_b4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from issue16_targets import Check, predicate_checks, print_summary, transfer_checks, transfer_ratios  # benchmarks/ is on sys.path when run
from reltune.errors import InputError
from reltune.evaluation.compare import PAIRED_K
from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.report_data import dataset_chance_levels
from reltune.evaluation.statistics import (
    AlignedRecalls,
    align_per_image,
    paired_difference,
    predicate_recall_interval,
    test_image_standard_errors,
)
from reltune.instructions.relations import explode_relations

KEYS = ("R@20", "mR@20", "mgR@20")
# the direction predicates by axis: which end of it each names
DIRECTION_AXES = {"above": "vertical", "below": "vertical", "left of": "horizontal", "right of": "horizontal"}
PAIR = ["image_id", "subj", "obj"]


def run_datasets(run: Path) -> tuple[str, str, str]:
    """(held-in dataset, held-out dataset, evaluated split) from the run's own params.yaml."""
    params = yaml.safe_load((run / "params.yaml").read_text())
    held_in = str(params["held_in"])
    held_out = next((name for name in params["scenes"]["datasets"] if name != held_in), None)
    if held_out is None:
        raise InputError(str(run / "params.yaml"), "no held-out dataset besides held_in")
    return held_in, held_out, str((params.get("evaluate") or {}).get("split", "test"))


def required(path: Path) -> Path:
    """`path`, or a one-line error naming it when the run has not written it."""
    if not path.is_file():
        raise InputError(str(path), "missing: has `dvc repro` finished in this workspace?")
    return path


def read_json(path: Path) -> dict:
    return json.loads(required(path).read_text())


def per_image(run: Path, dataset: str) -> AlignedRecalls:
    return stacked([run], dataset)


def per_predicate(run: Path, dataset: str) -> pd.DataFrame:
    return pd.read_csv(required(run / "metrics" / "per_predicate" / f"{dataset}.csv"))


def summary_line(run: Path, held_in: str, held_out: str, recalls: dict[str, AlignedRecalls]) -> str:
    """Held-in and held-out R / mR / mgR @20 with mR's standard error over test images, and blind mgR@20."""
    parts = []
    for dataset in (held_in, held_out):
        metrics = read_json(run / "metrics" / f"{dataset}.json")
        standard_error = float(test_image_standard_errors(recalls[dataset])[0])
        values = " / ".join(f"{float(metrics[key]):.2f}" for key in KEYS)
        parts.append(f"{dataset} R / mR / mgR @20 {values} (mR SE {standard_error:.2f})")
    blind = read_json(run / "metrics" / f"{held_out}_blind.json")
    return f"{run}: " + "; ".join(parts) + f"; {held_out} blind mgR@20 {float(blind['mgR@20']):.2f}"


def run_checks(run: Path) -> tuple[str, list[Check]]:
    held_in, held_out, split = run_datasets(run)
    held_in_table = per_predicate(run, held_in)
    lowest = held_in_table.sort_values("R@20").head(2)
    levels, problems = dataset_chance_levels(run / "data" / "scenes", held_in, split, [held_out], [20])
    if held_out not in levels:
        raise InputError(str(run / "data" / "scenes"), "; ".join(problems) or f"no chance level of {held_out}")
    name = str(run)
    recalls = {dataset: per_image(run, dataset) for dataset in (held_in, held_out)}  # read once: SE and intervals
    source = str(run / "metrics" / "per_image" / f"{held_in}.json")
    held_in_mean_recall = float(read_json(run / "metrics" / f"{held_in}.json")["mR@20"])
    checks = predicate_checks(name, held_in_table, held_in_mean_recall, recalls[held_in], source)
    ratios = transfer_ratios(held_in_table, per_predicate(run, held_out))
    held_out_mgr = float(read_json(run / "metrics" / f"{held_out}.json")["mgR@20"])
    blind_mgr = float(read_json(run / "metrics" / f"{held_out}_blind.json")["mgR@20"])
    checks += transfer_checks(name, ratios, held_out_mgr, blind_mgr, float(levels[held_out]["mgR@20"]))
    lowest_text = ", ".join(
        "{} {:.1f} (95% [{:.1f}, {:.1f}])".format(predicate, recall, *predicate_recall_interval(recalls[held_in], predicate, source)[1:])
        for predicate, recall in zip(lowest["predicate"], lowest["R@20"])
    )
    ratio_text = ", ".join(f"{predicate} {ratio:.2f}" for predicate, ratio in ratios.items())
    return f"{summary_line(run, held_in, held_out, recalls)}\n  lowest held-in: {lowest_text}; ratios: {ratio_text}", checks


def top_answers(run: Path, dataset: str, split: str) -> pd.DataFrame:
    """The dataset's annotated test relations (with their class names) and each pair's top-scored predicate
    (`answer`; ties in file order, NaN where the pair has none) from `data/predictions/<dataset>.parquet`."""
    scenes_path = required(run / "data" / "scenes" / dataset / f"{split}.parquet")
    truth = explode_relations(pd.read_parquet(scenes_path), str(scenes_path))[PAIR + ["predicate", "subj_label", "obj_label"]]
    predictions = pd.read_parquet(required(run / "data" / "predictions" / f"{dataset}.parquet"), columns=PAIR + ["predicate", "score"])
    top = predictions.sort_values("score", ascending=False, kind="stable").drop_duplicates(PAIR)
    return truth.merge(top.rename(columns={"predicate": "answer"}), on=PAIR, how="left")


def on_axis_answers(answered: pd.DataFrame) -> pd.DataFrame:
    """The direction relations of `top_answers` whose top answer names a direction on their own axis (`axis` added)."""
    axis = answered["predicate"].map(DIRECTION_AXES)
    on_axis = axis.notna() & (answered["answer"].map(DIRECTION_AXES) == axis)
    return answered[on_axis].assign(axis=axis[on_axis])


def direction_right_ends(run: Path) -> str:
    """Per axis: held-in test direction pairs whose top-scored predicate (ties in file order) is on their axis,
    and the share of those naming the true end, from `data/predictions/<held_in>.parquet`."""
    held_in, _, split = run_datasets(run)
    answered = top_answers(run, held_in, split)
    on_axis_all = on_axis_answers(answered)
    parts = []
    for axis in ("vertical", "horizontal"):
        on_axis = on_axis_all[on_axis_all["axis"] == axis]
        of_axis = int((answered["predicate"].map(DIRECTION_AXES) == axis).sum())
        right_end = f"{(on_axis['answer'] == on_axis['predicate']).mean():.2f}" if len(on_axis) else "-"
        parts.append(f"{axis} {len(on_axis)} of {of_axis} answered on the axis, right end {right_end}")
    return "directions: " + "; ".join(parts)


def held_in_classes(run: Path, held_in: str) -> set[str]:
    """The classes training saw: the `objects` of `data/scenes/<held_in>/vocab.json`."""
    vocab_path = required(run / "data" / "scenes" / held_in / "vocab.json")
    seen_classes = set(read_json(vocab_path).get("objects") or [])
    if not seen_classes:
        raise InputError(str(vocab_path), "no `objects` list: which classes are seen is unknown")
    return seen_classes


def unseen_class_answers(run: Path) -> str:
    """Held-out test relations of each predicate part 4 carries over: how many get it as their pair's top
    answer, apart for pairs of two classes the held-in vocabulary has and pairs with a class it lacks
    (does transfer fail on the relation or on the unseen name?)."""
    held_in, held_out, split = run_datasets(run)
    predicates = list(transfer_ratios(per_predicate(run, held_in), per_predicate(run, held_out)).index)
    seen_classes = held_in_classes(run, held_in)
    answered = top_answers(run, held_out, split)
    answered = answered[answered["predicate"].isin(predicates)]
    both_seen = answered["subj_label"].isin(seen_classes) & answered["obj_label"].isin(seen_classes)
    right = answered["answer"] == answered["predicate"]
    parts = []
    for predicate in predicates:
        of_predicate = answered["predicate"] == predicate
        counts = [f"{int((right & of_predicate & group).sum())}/{int((of_predicate & group).sum())}" for group in (both_seen, ~both_seen)]
        parts.append(f"{predicate} {counts[0]} of two seen classes, {counts[1]} with an unseen class")
    return "held-out top answers right: " + "; ".join(parts)


def stacked(runs: list[Path], dataset: str) -> AlignedRecalls:
    """Per-image recalls of the runs on one dataset, one row per run (they must share the test set)."""
    paths = [run / "metrics" / "per_image" / f"{dataset}.json" for run in runs]
    return align_per_image([read_per_image(read_json(path), str(path), PAIRED_K) for path in paths], [str(path) for path in paths])


def paired_lines(runs: list[Path], baselines: list[Path], datasets: tuple[str, str]) -> list[str]:
    """mR@20 run - baseline per pair and over all pairs, with 95% bootstrap intervals over test images."""
    lines = []
    for dataset in datasets:
        first, second = stacked(runs, dataset), stacked(baselines, dataset)
        if first.image_ids != second.image_ids or first.predicates != second.predicates:
            path = baselines[0] / "metrics" / "per_image" / f"{dataset}.json"
            raise InputError(str(path), f"other test images or predicates than {runs[0]}'s: a paired difference needs one test set")
        for index, (run, baseline) in enumerate(zip(runs, baselines)):
            one = paired_difference(select(first, index), select(second, index))
            lines.append(f"{dataset} mR@20 {run} - {baseline}: {one.mean:+.2f} [{one.low:+.2f}, {one.high:+.2f}] {one.verdict()} (test images only)")
        if len(runs) > 1:
            pooled = paired_difference(first, second)
            lines.append(f"{dataset} mR@20 over {len(runs)} pairs: {pooled.mean:+.2f} [{pooled.low:+.2f}, {pooled.high:+.2f}] {pooled.verdict()}")
    return lines


def select(recalls: AlignedRecalls, index: int) -> AlignedRecalls:
    return AlignedRecalls(recalls.fractions[index : index + 1], recalls.present, recalls.image_ids, recalls.predicates)


def main() -> None:
    try:
        report()
    except InputError as error:  # one line naming the file, not a traceback
        raise SystemExit(f"full_runs.py: {error}") from None


def report() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="workspaces of finished `full` runs (their metrics/)")
    parser.add_argument("--against", nargs="*", type=Path, default=[], help="one baseline workspace per run, same order: paired mR@20 differences")
    args = parser.parse_args()
    if args.against and len(args.against) != len(args.runs):
        parser.error(f"--against needs one workspace per run ({len(args.runs)}), got {len(args.against)}")
    checks: list[Check] = []
    for run in args.runs:
        text, run_checks_list = run_checks(run)
        print(text)
        print(f"  {direction_right_ends(run)}")
        print(f"  {unseen_class_answers(run)}")
        checks += run_checks_list
    print("\n| part | run | check | value | target | |\n|---|---|---|---|---|---|")
    for check in checks:
        print("| " + check.line() + " |")
    print_summary(checks)
    if args.against:
        held_in, held_out, _ = run_datasets(args.runs[0])
        print()
        print("\n".join(paired_lines(args.runs, args.against, (held_in, held_out))))


if __name__ == "__main__":
    main()
