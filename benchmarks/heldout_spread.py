"""How much of a held-out mR@20 (and its seed spread) is recall on pairs with an unseen class? (issue 16, parts 4 and 6)

The held-out test split mixes pairs of two classes the held-in data has and
pairs with a class it lacks (three quarters of the synthetic world's
held-out relations). Only predicates seen in training can be recalled, and
on a pair of seen classes a tuned model answers them about as well as held
in; on a pair with an unseen class it has to read the relation from the
image alone. This script splits each run's held-out mR@20 along that line:

- the held-out predictions re-ranked as `evaluate` ranks them
  (`metrics.evaluate_predictions`, graph-constrained), mR@20 checked
  against `metrics/<held_out>.json`;
- mR@20 split exactly into the part recalled on pairs of two seen classes
  and the part recalled on pairs with an unseen class (mean recall is a
  mean over predicates of means over images of hits / relations, so it is
  linear in the hits: the two parts add up to mR@20);
- per kind of pair, the mean over the predicates seen in training of their
  recall on that kind of pair alone (how well the relation carries over);
- the held-out answers `predict` counted malformed (a "Yes" whose words do
  not open with the asked subject name and close with the asked object
  name, so the pair gets no prediction from it: on the synthetic world
  mostly an unseen name misspelt, "gemmon on cake" for a gem on a cake,
  `benchmarks/heldout_names.py`), from `predict`'s report;

per group of runs (one strategy's seeds) the seed sd of mR@20 and of both
parts with 95% chi-square intervals (`issue16_targets.sd_interval`); over
all runs, from three on, the Pearson correlation of mR@20 with each part
and with the malformed answers (`scipy.stats.pearsonr`); and with exactly
two groups of the same size, run by run in the order given (one seed per
position), the first group minus the second in mR@20, in each part and in
malformed answers, then the 95% t interval of the malformed difference over
the positions (`statistics.seed_interval`).

Each run is a workspace as `dvc repro` (or a per-seed script from
`reltune profile-commands`) leaves it: `metrics/<held_out>.json`,
`data/predictions/<held_out>.parquet` and `.report.json`, `data/scenes/<held_out>/<split>.parquet`
and `data/scenes/<held_in>/vocab.json` (its `objects` are the seen classes,
its `predicates` the training predicates).
docs/RESULTS.md "Random at 3180 steps; the held-out split is unseen-class transfer",
docs/RESULTS.md "Art's held-out deficit is unseen names misspelt".

Usage (from the repository root; one --group per strategy):
    .venv/bin/python benchmarks/heldout_spread.py --group art RUN0 RUN1 --group balanced RUN2 RUN3
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402

from direction_spread import add_group_argument, run_groups, spread_text  # benchmarks/ is on sys.path when run  # noqa: E402
from full_runs import held_in_classes, read_json, required  # noqa: E402
from reltune.errors import InputError  # noqa: E402
from reltune.evaluation.commands import read_predicates  # noqa: E402
from reltune.evaluation.metrics import evaluate_predictions, mean_recall, predicate_recalls, training_predicate_set  # noqa: E402
from reltune.evaluation.statistics import seed_interval  # noqa: E402

K = 20
# the re-ranked mR@20 and `evaluate`'s are the same computation: any gap is another ranking or another file
MEAN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class HeldOutSplit:
    run: str
    mean_recall: float  # held-out mR@20, percent
    seen_part: float  # the part of it recalled on pairs of two seen classes
    unseen_part: float  # the part recalled on pairs with an unseen class
    seen_recall: float  # mean recall of the training predicates on pairs of two seen classes alone, percent
    unseen_recall: float  # the same on pairs with an unseen class alone
    unseen_share: float  # share of the held-out relations whose pair has an unseen class
    malformed: int  # held-out answers that said "Yes" without writing the asked names (predict's report)

    def line(self) -> str:
        return (
            f"{self.run}: mR@20 {self.mean_recall:.2f} = {self.seen_part:.2f} on pairs of seen classes "
            f"+ {self.unseen_part:.2f} on pairs with an unseen class ({self.unseen_share:.0%} of the relations); "
            f"recall of the training predicates: seen classes {self.seen_recall:.1f}, an unseen class {self.unseen_recall:.1f}; "
            f"{self.malformed} malformed answers"
        )


def kind_recall(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray, kind: np.ndarray, trained: set[str]) -> float:
    """Mean over the training predicates present on this kind of pair of their recall there, percent (NaN if none)."""
    recalls = predicate_recalls(hit[kind], image[kind], predicate[kind])
    recalls = recalls[recalls.index.isin(trained)]
    return float(recalls.mean() * 100.0) if len(recalls) else math.nan


def malformed_answers(run: Path, held_out: str) -> int:
    """The held-out answers `predict` counted malformed, from `data/predictions/<held_out>.report.json`."""
    report_path = required(run / "data" / "predictions" / f"{held_out}.report.json")
    count = read_json(report_path).get("beams", {}).get("malformed")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InputError(str(report_path), f"beams.malformed is {count!r}, not a count of answers")
    return count


def split_run(run: Path, held_in: str, held_out: str, split: str) -> HeldOutSplit:
    """One run's held-out mR@20 split into its parts on pairs of seen classes and pairs with an unseen class."""
    seen_classes = held_in_classes(run, held_in)
    # the training predicates as `evaluate --train-vocab` reads and normalises them
    trained = training_predicate_set(read_predicates(str(run / "data" / "scenes" / held_in / "vocab.json")))
    scenes_path = required(run / "data" / "scenes" / held_out / f"{split}.parquet")
    predictions_path = required(run / "data" / "predictions" / f"{held_out}.parquet")
    result = evaluate_predictions(
        pd.read_parquet(scenes_path), pd.read_parquet(predictions_path), trained, ks=(K,),
        scenes_file=str(scenes_path), predictions_file=str(predictions_path),
    )
    truth = result.ground_truth
    image, predicate = truth["image"].to_numpy(), truth["predicate"].to_numpy()
    hit = truth["exact_rank"].to_numpy() < K
    seen_pair = (truth["subj_label"].isin(seen_classes) & truth["obj_label"].isin(seen_classes)).to_numpy()
    mean = float(result.metrics[f"mR@{K}"])
    metrics_path = run / "metrics" / f"{held_out}.json"
    reported = float(read_json(required(metrics_path))[f"mR@{K}"])
    if abs(mean - reported) > MEAN_TOLERANCE:
        raise InputError(str(metrics_path), f"mR@{K} {reported} is not the re-ranked predictions' {mean}: another ranking or stale predictions")
    return HeldOutSplit(
        run=str(run),
        mean_recall=mean,
        seen_part=mean_recall(hit & seen_pair, image, predicate),
        unseen_part=mean_recall(hit & ~seen_pair, image, predicate),
        seen_recall=kind_recall(hit, image, predicate, seen_pair, trained),
        unseen_recall=kind_recall(hit, image, predicate, ~seen_pair, trained),
        unseen_share=float((~seen_pair).mean()),
        malformed=malformed_answers(run, held_out),
    )


def group_lines(label: str, splits: list[HeldOutSplit]) -> list[str]:
    """Per-run lines, then the group's seed sd of mR@20 and of its two parts."""
    lines = [f"{label}: {split.line()}" for split in splits]
    if len(splits) < 2:
        return lines + [f"{label}: one run, no seed spread"]
    lines.append(
        f"{label} over {len(splits)} runs: seed sd of mR@20 {spread_text([split.mean_recall for split in splits])}; "
        f"of the part on pairs of seen classes {spread_text([split.seen_part for split in splits])}; "
        f"on pairs with an unseen class {spread_text([split.unseen_part for split in splits])} (95% chi-square)"
    )
    return lines


def correlation_lines(splits: list[HeldOutSplit]) -> list[str]:
    """Pearson r of mR@20 with each part and with the malformed answers over all runs (from three runs, where both vary)."""
    means = [split.mean_recall for split in splits]
    lines = []
    parts = (
        ("the part on pairs of seen classes", [split.seen_part for split in splits]),
        ("the part on pairs with an unseen class", [split.unseen_part for split in splits]),
        ("the malformed answers", [split.malformed for split in splits]),
    )
    for name, values in parts:
        if len(splits) >= 3 and np.ptp(means) > 0 and np.ptp(values) > 0:
            result = scipy.stats.pearsonr(means, values)
            lines.append(f"all {len(splits)} runs: Pearson r of mR@20 and {name} {result.statistic:+.2f} (p {result.pvalue:.3f})")
    return lines


def difference_lines(first: tuple[str, list[HeldOutSplit]], second: tuple[str, list[HeldOutSplit]]) -> list[str]:
    """Run by run (same position, same seed): first - second in mR@20, in each part and in malformed answers;
    then, from two positions, the 95% t interval of the malformed difference over them."""
    (first_label, first_runs), (second_label, second_runs) = first, second
    lines = []
    for position, (first_run, second_run) in enumerate(zip(first_runs, second_runs)):
        lines.append(
            f"{first_label} - {second_label}, run {position}: mR@20 {first_run.mean_recall - second_run.mean_recall:+.2f}: "
            f"{first_run.seen_part - second_run.seen_part:+.2f} on pairs of seen classes, "
            f"{first_run.unseen_part - second_run.unseen_part:+.2f} on pairs with an unseen class; "
            f"malformed answers {first_run.malformed - second_run.malformed:+d}"
        )
    differences = [first_run.malformed - second_run.malformed for first_run, second_run in zip(first_runs, second_runs)]
    if len(differences) >= 2:
        interval = seed_interval(differences)
        lines.append(
            f"{first_label} - {second_label} over {len(differences)} runs: malformed answers {interval.mean:+.1f} "
            f"[{interval.low:+.1f}, {interval.high:+.1f}] (95% t)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_group_argument(parser)
    parser.add_argument("--held-in", default="synthetic", help="the held-in dataset, whose vocab says what is seen (default: synthetic)")
    parser.add_argument("--held-out", default="synthetic-ood", help="the held-out dataset (default: synthetic-ood)")
    parser.add_argument("--split", default="test", help="the evaluated split (default: test)")
    args = parser.parse_args()
    run_lists = run_groups(parser, args)
    try:
        groups = [(label, [split_run(run, args.held_in, args.held_out, args.split) for run in runs]) for label, runs in run_lists]
    except InputError as error:  # one line naming the file, not a traceback
        raise SystemExit(f"heldout_spread.py: {error}") from None
    lines = [line for label, splits in groups for line in group_lines(label, splits)]
    lines += correlation_lines([split for _, splits in groups for split in splits])
    if len(groups) == 2 and len(groups[0][1]) == len(groups[1][1]):
        lines += difference_lines(*groups)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
