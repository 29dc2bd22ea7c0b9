"""How much of a strategy's seed spread is the direction predicates' subject-object order? (issue 16, part 1)

On the synthetic world a tuned model nearly always answers a direction pair
(above, below, left of, right of) on the right axis; what it gets wrong is
the end: "a below b" for "a above b", the order of the two named objects.
Whether a run has learned that order decides four of its twenty held-in
recalls at once. This script splits each run's held-in mR@20 along that line:

- mR@20 over the predicates seen in training (as `evaluate` computes it,
  checked against `metrics/<dataset>.json`), the same mean without the four
  direction predicates, and the four directions' mean R@20;
- the true-end share: of the test direction pairs whose top-scored predicate
  names a direction on their own axis, the share naming the annotated one,
  with a 95% Wilson interval (`scipy.stats.binomtest`); always `above`
  would give 0.68 on the vertical pairs, a coin 0.5;

and per group of runs (one strategy's seeds) the seed sd of both means with
95% chi-square intervals (`issue16_targets.sd_interval`) and, from three
runs on, the Pearson correlation between mR@20 and the true-end share
(`scipy.stats.pearsonr`; left out where either does not vary).
A spread that vanishes without the directions and follows the true end is
the order, not the selection of the other predicates' samples.

Each run is a workspace as `dvc repro` (or a per-seed script from
`reltune profile-commands`) leaves it: `metrics/<dataset>.json`,
`metrics/per_predicate/<dataset>.csv`, `data/predictions/<dataset>.parquet`
and `data/scenes/<dataset>/<split>.parquet`.
docs/RESULTS.md "The spread is the order of the directions".

Usage (from the repository root; one --group per strategy):
    .venv/bin/python benchmarks/direction_spread.py --group art RUN0 RUN1 RUN2 --group balanced RUN3 RUN4 RUN5
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from full_runs import DIRECTION_AXES, on_axis_answers, per_predicate, read_json, top_answers  # benchmarks/ is on sys.path when run
from issue16_targets import sd_interval
from reltune.errors import InputError

KEY = "R@20"
# evaluate's mean recall and the CSV's per-predicate recalls are the same floats: any gap is another definition
MEAN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RunSplit:
    run: str
    mean_recall: float  # held-in mR@20 over the predicates seen in training
    without_directions: float  # the same mean over those that are not a direction
    directions: float  # mean R@20 of the direction predicates seen in training
    right_ends: int  # direction pairs answered on their axis with the annotated end
    on_axis: int  # direction pairs whose top answer is a direction on their axis

    @property
    def true_end(self) -> float:
        return self.right_ends / self.on_axis if self.on_axis else math.nan

    def line(self) -> str:
        if self.on_axis:
            low, high = scipy.stats.binomtest(self.right_ends, self.on_axis).proportion_ci(method="wilson")
            end = f"true end {self.true_end:.3f} [{low:.3f}, {high:.3f}] of {self.on_axis} pairs"
        else:
            end = "no direction pair answered on its axis"
        return (
            f"{self.run}: mR@20 {self.mean_recall:.2f}; without the directions {self.without_directions:.2f}; "
            f"directions {self.directions:.2f}; {end}"
        )


def split_run(run: Path, dataset: str, split: str) -> RunSplit:
    """One run's held-in mR@20 with and without the direction predicates, and its true-end share."""
    table = per_predicate(run, dataset)
    seen = table[table["seen_in_training"].astype(bool)]
    if seen.empty:
        raise InputError(str(run / "metrics" / "per_predicate" / f"{dataset}.csv"), "no predicate seen in training")
    mean_recall = float(seen[KEY].mean())
    reported = float(read_json(run / "metrics" / f"{dataset}.json")[f"m{KEY}"])
    if abs(mean_recall - reported) > MEAN_TOLERANCE:
        raise InputError(
            str(run / "metrics" / f"{dataset}.json"),
            f"m{KEY} {reported} is not the mean of the per-predicate {KEY} of the seen predicates ({mean_recall})",
        )
    is_direction = seen["predicate"].isin(DIRECTION_AXES.keys())
    on_axis = on_axis_answers(top_answers(run, dataset, split))
    return RunSplit(
        run=str(run),
        mean_recall=mean_recall,
        without_directions=float(seen.loc[~is_direction, KEY].mean()) if (~is_direction).any() else math.nan,
        directions=float(seen.loc[is_direction, KEY].mean()) if is_direction.any() else math.nan,
        right_ends=int((on_axis["answer"] == on_axis["predicate"]).sum()),
        on_axis=len(on_axis),
    )


def spread_text(values: list[float]) -> str:
    spread = float(np.std(values, ddof=1))
    low, high = sd_interval(spread, len(values))
    return f"{spread:.2f} [{low:.2f}, {high:.2f}]"


def group_lines(label: str, splits: list[RunSplit]) -> list[str]:
    """Per-run lines, then the group's seed sd with and without the directions and their correlation with the true end."""
    lines = [f"{label}: {split.line()}" for split in splits]
    if len(splits) < 2:
        return lines + [f"{label}: one run, no seed spread"]
    means = [split.mean_recall for split in splits]
    lines.append(
        f"{label} over {len(splits)} runs: seed sd of mR@20 {spread_text(means)}; "
        f"without the directions {spread_text([split.without_directions for split in splits])}; "
        f"of the directions' mean {spread_text([split.directions for split in splits])} (95% chi-square)"
    )
    ends = [split.true_end for split in splits]
    if len(splits) >= 3 and not any(math.isnan(end) for end in ends) and np.ptp(ends) > 0 and np.ptp(means) > 0:
        result = scipy.stats.pearsonr(means, ends)
        lines.append(f"{label}: Pearson r of mR@20 and the true-end share {result.statistic:+.2f} (p {result.pvalue:.3f})")
    return lines


def add_group_argument(parser: argparse.ArgumentParser) -> None:
    """`--group LABEL RUN...`, repeated: one strategy's seeds per group."""
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"),
                        help="a label and the workspaces of its runs (one strategy's seeds)")


def run_groups(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """(label, run workspaces) of each `--group`; a group without a run is a usage error."""
    for group in args.group:
        if len(group) < 2:
            parser.error(f"--group {group[0]}: give a label and at least one run workspace")
    return [(label, [Path(run) for run in runs]) for label, *runs in args.group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_group_argument(parser)
    parser.add_argument("--dataset", default="synthetic", help="the held-in dataset (default: synthetic)")
    parser.add_argument("--split", default="test", help="the evaluated split (default: test)")
    args = parser.parse_args()
    groups = run_groups(parser, args)
    try:
        for label, runs in groups:
            print("\n".join(group_lines(label, [split_run(run, args.dataset, args.split) for run in runs])))
    except InputError as error:  # one line naming the file, not a traceback
        raise SystemExit(f"direction_spread.py: {error}") from None


if __name__ == "__main__":
    main()
