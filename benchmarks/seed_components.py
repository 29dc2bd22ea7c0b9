"""How much of a strategy's seed spread is its selection and how much its training? (issue 16, part 1)

A run's seed sets both which questions the strategy selects (`sampling.seed`,
and through the round models `train.seed`) and how the final model trains on
them (`train.seed`). Training the final model again on the same selection
with another training seed separates the two: the runs that share one
selection form a group. A one-way random-effects analysis over the groups
(`scipy.stats.f_oneway` for F and its p) gives

- within groups, the mean square MSW: the variance the training seed alone
  adds (its square root is printed as the training sd);
- between groups, (MSB - MSW) / n0, 0 where negative: the variance of the
  selections' expected values (n0 = (N - sum n_i^2 / N) / (k - 1), the group
  size of unbalanced groups); its square root is the selection sd;
- the root-mean-square test-image standard error of the runs' metric, the
  part of both that a larger test split would remove.

The training sd and the sd over one run per selection carry 95% chi-square
intervals (`issue16_targets.sd_interval`; N - k and k - 1 degrees of freedom).
`training_order.py` asks the same of `make compare` experiments and retrains
them itself; this script reads runs made elsewhere (worktrees,
`larger_test.py` re-tests).

Each run is a workspace as `full_runs.py` reads it (its held-in
`metrics/<dataset>.json` and `metrics/per_image/<dataset>.json`), e.g. a
`benchmarks/larger_test.py` output. docs/RESULTS.md "Art's spread is its training".

Usage (from the repository root; one --group per selection):
    .venv/bin/python benchmarks/seed_components.py --group OUT/art_s0 OUT/art_s0_t10 --group OUT/art_s2 OUT/art_s2_t12
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

from full_runs import read_json, run_datasets, stacked  # benchmarks/ is on sys.path when run
from issue16_targets import sd_interval
from reltune.errors import InputError
from reltune.evaluation.statistics import test_image_standard_errors


@dataclass(frozen=True)
class Components:
    """One-way random-effects split of a metric's variance over groups of runs."""

    f_statistic: float
    p_value: float
    within_variance: float  # MSW: the training seed's variance on one selection
    between_variance: float  # the selections' variance, (MSB - MSW) / n0 clipped at 0
    total_variance: float  # sample variance of the first run of every group: the spread one seed per selection shows


def variance_components(groups: list[list[float]]) -> Components:
    """The split of `groups` (one list of metric values per selection); 2+ groups, one with 2+ runs."""
    arrays = [np.asarray(group, dtype=np.float64) for group in groups]
    sizes = np.array([len(array) for array in arrays])
    total = int(sizes.sum())
    if len(arrays) < 2 or sizes.min() < 1 or total <= len(arrays):
        raise ValueError("needs at least two groups and one group with two or more runs")
    result = scipy.stats.f_oneway(*arrays)
    grand_mean = np.concatenate(arrays).mean()
    within = sum(float(((array - array.mean()) ** 2).sum()) for array in arrays) / (total - len(arrays))
    between_mean_square = sum(len(array) * (array.mean() - grand_mean) ** 2 for array in arrays) / (len(arrays) - 1)
    group_size = (total - float((sizes**2).sum()) / total) / (len(arrays) - 1)
    return Components(
        f_statistic=float(result.statistic),
        p_value=float(result.pvalue),
        within_variance=float(within),
        between_variance=max(0.0, float(between_mean_square - within) / group_size),
        total_variance=float(np.var([array[0] for array in arrays], ddof=1)),
    )


def group_values(groups: list[list[Path]], key: str) -> tuple[list[list[float]], float]:
    """The held-in `key` of every run, by group, and the runs' root-mean-square test-image SE of mR@20."""
    held_in = run_datasets(groups[0][0])[0]
    values = [[float(read_json(run / "metrics" / f"{held_in}.json")[key]) for run in group] for group in groups]
    runs = [run for group in groups for run in group]
    standard_errors = test_image_standard_errors(stacked(runs, held_in))
    return values, float(np.sqrt(np.mean(standard_errors**2)))


def report() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", nargs="+", type=Path, action="append", required=True, help="workspaces of runs on one selection (other training seeds)")
    parser.add_argument("--key", default="mR@20", help="held-in metric of metrics/<dataset>.json (default mR@20)")
    args = parser.parse_args()
    values, test_standard_error = group_values(args.group, args.key)
    try:
        split = variance_components(values)
    except ValueError as error:
        parser.error(f"--group: {error}")
    for group, group_metric in zip(args.group, values):
        print(f"selection of {group[0]}: {args.key} " + ", ".join(f"{value:.2f}" for value in group_metric) + f" (mean {np.mean(group_metric):.2f})")
    runs, groups = sum(len(group) for group in values), len(values)
    within, total = np.sqrt(split.within_variance), np.sqrt(split.total_variance)
    print(f"F {split.f_statistic:.2f}, p {split.p_value:.3f} (do the selections differ beyond the training seed?)")
    print(f"training sd (within a selection) {within:.2f} {interval(within, runs - groups + 1)}; selection sd (between) {np.sqrt(split.between_variance):.2f}")
    print(f"sd over one run per selection {total:.2f} {interval(total, groups)}; root-mean-square test-image SE {test_standard_error:.2f}")


def interval(spread: float, seeds: int) -> str:
    low, high = sd_interval(spread, seeds)
    return f"[95% {low:.2f}, {high:.2f}]"


def main() -> None:
    try:
        report()
    except InputError as error:  # one line naming the file, not a traceback
        raise SystemExit(f"seed_components.py: {error}") from None


if __name__ == "__main__":
    main()
