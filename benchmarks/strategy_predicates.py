"""What each strategy's final model trains on and learns, per predicate (issue 16, part 5).

For the variants of `make compare` (default art, balanced, random) and each of
their seeds: how many positives of each predicate the final model trains on
(the selection of the round its own `train_on.final` names: 2 for art, 0 for
`full` and for balanced and random drawn at once, mapped to predicates by the
held-in instruction table) and that model's held-in test R@20 of the predicate
(`metrics/per_predicate/<held_in>.csv`). Prints the mean over seeds per
predicate, rarest first, beside the predicate's share of all training
positives and its number of test relations, and the correlation between
selected count and test recall per strategy (Spearman, scipy).

Where the seed spread of mR@20 comes from (issue 16, part 1): per variant and
predicate, the seed standard deviation of its R@20 and its share of the seed
variance of mR@20 (`variance_shares`: mR is the mean of the P predicate
recalls, so Var(mR) = sum over p and q of Cov(R_p, R_q) / P^2, and predicate
p's share is its row of that sum; shares add up to 100 and may be negative
when a predicate moves against the others).

Usage (after `make compare`, from the repository root):
    .venv/bin/python benchmarks/strategy_predicates.py [--variants art,balanced,random] [--all-pipelines]
"""

from __future__ import annotations

import argparse

import pandas as pd
import yaml
from scipy.stats import spearmanr

from category_answers import experiment_params  # a sibling script: benchmarks/ is on sys.path when run
from reltune.evaluation.compare import (
    cached_output,
    comparison_rows,
    same_pipeline_rows,
    seed_members,
    show_experiments,
    variant_groups,
)
from reltune.plan import selection_round_of

SELECTION_PATH = "data/loop/round_{round}/selection.parquet"
PER_PREDICATE_PATH = "metrics/per_predicate/{dataset}.csv"


def cached_table(rev: str, path: str) -> pd.DataFrame:
    """A table output (parquet or CSV) of an experiment, from the local DVC cache."""
    cached = cached_output(rev, path)
    if cached is None:
        raise SystemExit(f"{path} of experiment {rev[:7]} is not in the local DVC cache")
    return pd.read_parquet(cached) if path.endswith(".parquet") else pd.read_csv(cached)


def selected_per_predicate(selection: pd.DataFrame, positives: pd.DataFrame) -> pd.Series:
    """Positives per predicate in a selection (qids of the instruction table's positive rows)."""
    unknown = set(selection["qid"]) - set(positives["qid"])
    if unknown:
        raise SystemExit(f"selection names {len(unknown)} qids that are not positives of the instruction table, e.g. {sorted(unknown)[0]}")
    return positives.loc[positives["qid"].isin(set(selection["qid"])), "predicate"].value_counts()


def final_round_of(rev: str) -> int:
    """The round whose selection an experiment's final model trained on (its commit's `train_on.final`)."""
    return selection_round_of(experiment_params(rev)["train_on"]["final"])


def run_table(rev: str, final_round: int, held_in: str, positives: pd.DataFrame) -> pd.DataFrame:
    """One run's selected count and test R@20 per predicate (every training predicate listed)."""
    selected = selected_per_predicate(cached_table(rev, SELECTION_PATH.format(round=final_round)), positives)
    recall = cached_table(rev, PER_PREDICATE_PATH.format(dataset=held_in)).set_index("predicate")["R@20"]
    predicates = sorted(positives["predicate"].unique())
    return pd.DataFrame({"selected": selected.reindex(predicates, fill_value=0), "R@20": recall.reindex(predicates)})


def variance_shares(recalls: pd.DataFrame) -> pd.Series:
    """Each predicate's share (%) of the seed variance of the mean recall; `recalls`: predicates x seeds."""
    covariance = recalls.T.cov()  # pandas: predicates x predicates over the seed columns (ddof 1)
    total = covariance.to_numpy().sum()
    if total == 0:
        return pd.Series(0.0, index=recalls.index)
    return 100 * covariance.sum(axis=1) / total


def strategy_table(runs: dict[str, list[pd.DataFrame]], positives: pd.DataFrame, test_relations: pd.Series | None = None) -> pd.DataFrame:
    """Per predicate: share of training positives, then per variant the seed means of selected count and R@20.

    With two or more seeds also the seed sd of R@20 and the share of mR@20's
    seed variance (`variance_shares`).
    """
    counts = positives["predicate"].value_counts()
    table = pd.DataFrame({"train positives": counts, "share %": (100 * counts / counts.sum()).round(1)})
    if test_relations is not None:
        table["test relations"] = test_relations.reindex(table.index)
    for variant, tables in runs.items():
        stacked = pd.concat(tables)
        means = stacked.groupby(level=0).mean()
        table[f"{variant} selected"] = means["selected"].round(1)
        table[f"{variant} R@20"] = means["R@20"].round(1)
        if len(tables) > 1:
            recalls = pd.concat([run["R@20"] for run in tables], axis=1)
            table[f"{variant} R@20 sd"] = recalls.std(axis=1).round(1)
            table[f"{variant} var %"] = variance_shares(recalls).round(1)
    return table.sort_values("train positives")


def variant_members(variants: dict[str, list[dict]], name: str) -> dict[int, dict]:
    """The seed rows of one variant, by its name alone or with another pipeline's ` @<commit>` label.

    With `--all-pipelines` another pipeline's variants are named `art-ep40 @train.epochs=40`;
    `art-ep40` finds them as long as only one pipeline has a variant of that name.
    """
    if name in variants:
        return seed_members(variants[name])
    labelled = [variant for variant in variants if variant.split(" @", 1)[0] == name]
    if len(labelled) > 1:
        raise SystemExit(f"variant {name} exists in {len(labelled)} pipelines ({', '.join(labelled)}): name one with its @<commit>")
    return seed_members(variants[labelled[0]]) if labelled else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="art,balanced,random")
    parser.add_argument("--all-pipelines", action="store_true", help="also experiments of other pipelines than the workspace's")
    args = parser.parse_args()
    with open("params.yaml", encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    held_in = str(params["held_in"])
    instructions = pd.read_parquet(f"data/instructions/{held_in}/train.parquet", columns=["qid", "kind", "predicate"])
    positives = instructions.loc[instructions["kind"] == "positive"]
    variants = variant_groups(same_pipeline_rows(comparison_rows(show_experiments(), baselines=False), args.all_pipelines))
    runs: dict[str, list[pd.DataFrame]] = {}
    test_relations = None
    for variant in args.variants.split(","):
        members = variant_members(variants, variant)
        if not members:
            scope = "of any pipeline" if args.all_pipelines else "of this pipeline (--all-pipelines: of any)"
            raise SystemExit(f"no experiment named {variant}-seed<N> {scope}: run make compare first")
        runs[variant] = [run_table(str(row["rev"]), final_round_of(str(row["rev"])), held_in, positives) for row in members.values()]
        if test_relations is None:  # every run is evaluated on the same test split
            first = str(next(iter(members.values()))["rev"])
            test_relations = cached_table(first, PER_PREDICATE_PATH.format(dataset=held_in)).set_index("predicate")["gt_relations"]
        print(f"{variant}: seeds {', '.join(map(str, sorted(members)))}")
    table = strategy_table(runs, positives, test_relations)
    print(table.to_markdown())
    for variant in runs:
        rho, p_value = spearmanr(table[f"{variant} selected"], table[f"{variant} R@20"])
        print(f"{variant}: Spearman rho(selected, R@20) over predicates = {rho:.2f} (p = {p_value:.3f})")


if __name__ == "__main__":
    main()
