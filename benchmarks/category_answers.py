"""Which category questions does a tuned model answer "Yes" to? (issue 16, part 3)

Every test pair is asked one question per relation category (spatial,
possessive, semantic); `predict` keeps the "Yes" answers and the graph
constraint ranks the best-scored one first. Paper Eq. 1 gives a spatial
positive only a possessive counter-negative (and a semantic positive only a
possessive one), so the model is never shown a "No" to a semantic question
about a spatial pair. This prints, per annotated category, the share of test
pairs with a "Yes" from each category's question, and, per chosen predicate,
what the top-ranked answer of its pairs is. On a dataset with object classes
the held-in data lacks (the held-out `synthetic-ood`), it also prints, by how
many of a pair's two objects are unseen, the share of pairs with any "Yes"
and the top-ranked recall of predicates seen in training.

With `--runs` (several experiments, e.g. the seeds of a variant) it prints
instead one row per run: the share of annotated pairs whose top-ranked
answer (graph constraint) comes from each category's question, how often
that is the pair's own category, the semantic "Yes" on spatial pairs, and
the run's mR@20 on the dataset; then, over the runs, the Pearson correlation
(scipy) between mR@20 and the own-category share: whether the seed spread is
the categories' competition for the top rank (issue 16, part 1).

Usage (from the repository root; REV = `workspace`, an experiment or a commit
whose predictions are in the local DVC cache):
    .venv/bin/python benchmarks/category_answers.py [--rev full-seed0] [--predicates above,below,"left of","right of"]
    .venv/bin/python benchmarks/category_answers.py --rev full-seed0 --dataset synthetic-ood --predicates on,near,riding,holds
    .venv/bin/python benchmarks/category_answers.py --runs art-seed0,art-seed1,art-seed2,art-seed3,art-seed4
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pandas as pd
from scipy.stats import pearsonr

from reltune.evaluation.compare import cached_output, markdown_table, read_revision_json, read_revision_params
from reltune.evaluation.metrics import evaluated_tables
from reltune.evaluation.tables import rank_predictions

CATEGORY_NAMES = ("spatial", "possessive", "semantic")
KEYS = ["image", "subj", "obj"]  # image: the scene row, as in the evaluation's tables


def experiment_commit(rev: str, tool: str) -> str:
    """The commit of `rev`: a git revision, or an experiment name (the newest experiment of that name: names repeat across commits)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True, text=True).stdout.strip()
    if commit:
        return commit
    listed = subprocess.run(
        ["git", "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)", "refs/exps"], capture_output=True, text=True
    ).stdout
    matches = [line.split()[0] for line in listed.splitlines() if line.endswith(f"/{rev}")]
    if not matches:
        raise SystemExit(f"{tool}: {rev}: neither a commit nor an experiment name")
    return matches[0]


def experiment_params(rev: str) -> dict:
    """The params.yaml of an experiment's commit (`rev`: a commit); exits with one line when it has none."""
    params = read_revision_params(rev)
    if not isinstance(params, dict):
        raise SystemExit(f"params.yaml of experiment {rev[:7]} is not readable (no such commit, or no such file in it)")
    return params


def resolved_rev(rev: str) -> str:
    """The string "workspace", or the commit of `rev` (resolved once: each lookup lists every experiment ref)."""
    return "workspace" if rev == "workspace" else experiment_commit(rev, "category_answers")


def predictions_file(commit: str, dataset: str, name: str = "") -> Path:
    """The predictions parquet of a `resolved_rev` (the workspace's from disk, an experiment's from the DVC cache)."""
    path = f"data/predictions/{dataset}.parquet"
    if commit == "workspace":
        return Path(path)
    cached = cached_output(commit, path)
    if cached is None:
        raise SystemExit(f"category_answers: {path} of {name or commit} ({commit[:7]}) is not in the local DVC cache")
    return cached


def read_tables(scenes: Path, predictions: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluation's validated GT table and "Yes" answers (`evaluate`'s own reader: same checks, same names)."""
    ground_truth, answers, _ = evaluated_tables(pd.read_parquet(scenes), pd.read_parquet(predictions), str(scenes), str(predictions))
    return ground_truth, answers


def annotated_pairs(ground_truth: pd.DataFrame, categories: dict[str, str], seen_objects: set[str]) -> pd.DataFrame:
    """One row per annotated relation: image, subj, obj, truth, truth_category, unseen_objects.

    unseen_objects: how many of the pair's two object labels are not in `seen_objects`.
    """
    unseen = (~ground_truth["subj_label"].isin(seen_objects)).astype(int) + (~ground_truth["obj_label"].isin(seen_objects)).astype(int)
    return pd.DataFrame(
        {
            **{key: ground_truth[key] for key in KEYS},
            "truth": ground_truth["predicate"],
            "truth_category": ground_truth["predicate"].map(categories),
            "unseen_objects": unseen,
        }
    )


def yes_shares(pairs: pd.DataFrame, answers: pd.DataFrame, categories: dict[str, str]) -> list[dict]:
    """Per annotated category: the share of its pairs with a "Yes" from each category's question."""
    answered = answers.assign(category=answers["predicate"].map(categories))
    yes = answered.groupby(KEYS)["category"].agg(set).rename("yes").reset_index()
    merged = pairs.merge(yes, on=KEYS, how="left")
    merged["yes"] = merged["yes"].apply(lambda value: value if isinstance(value, set) else set())
    rows = []
    for truth_category in CATEGORY_NAMES:
        group = merged[merged["truth_category"] == truth_category]
        row = {"annotated category": f"{truth_category} ({len(group)})"}
        for category in CATEGORY_NAMES:
            row[f'{category} "Yes"'] = f"{group['yes'].apply(lambda value, c=category: c in value).mean():.3f}"
        rows.append(row)
    return rows


def best_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """The best-scored answer of each pair: the evaluation's graph-constrained ranking, nothing cut."""
    ranked = rank_predictions(answers, top_k=len(answers), detected=False, graph_constraint=True)
    return ranked[KEYS + ["predicate"]]


def unseen_object_rows(pairs: pd.DataFrame, answers: pd.DataFrame, seen_predicates: set[str]) -> list[dict]:
    """By number of unseen object classes in a pair: share with any "Yes", top-ranked recall of seen predicates."""
    best = pairs.merge(best_answers(answers), on=KEYS, how="left")
    any_yes = best["predicate"].notna().to_numpy()
    hits = (best["predicate"] == best["truth"]).to_numpy()
    rows = []
    for unseen in sorted(pairs["unseen_objects"].unique()):
        in_group = (pairs["unseen_objects"] == unseen).to_numpy()
        seen_truth = in_group & pairs["truth"].isin(seen_predicates).to_numpy()
        rows.append(
            {
                "unseen classes in pair": int(unseen),
                "pairs": int(in_group.sum()),
                'any "Yes"': f"{any_yes[in_group].mean():.3f}",
                "pairs of seen predicates": int(seen_truth.sum()),
                "their top-1 recall": f"{hits[seen_truth].mean():.3f}" if seen_truth.any() else "-",
            }
        )
    return rows


def top_answers(pairs: pd.DataFrame, answers: pd.DataFrame, predicates: list[str], top: int = 4) -> list[dict]:
    """Per annotated predicate: how often each predicate is the best-scored answer of its pairs."""
    merged = pairs.merge(best_answers(answers), on=KEYS, how="left")
    rows = []
    for predicate in predicates:
        answers = merged.loc[merged["truth"] == predicate, "predicate"].fillna("(no Yes)").value_counts()
        listed = ", ".join(f"{name} {count}" for name, count in answers.head(top).items())
        rows.append({"annotated": f"{predicate} ({int(answers.sum())})", "top-ranked answers": listed})
    return rows


def top_category_row(pairs: pd.DataFrame, answers: pd.DataFrame, categories: dict[str, str]) -> dict:
    """Shares of annotated pairs by the category of their top-ranked answer, and how often it is the pair's own."""
    best = pairs.merge(best_answers(answers), on=KEYS, how="left")
    top_category = best["predicate"].map(categories).fillna("no Yes")
    row = {f"top {category}": float((top_category == category).mean()) for category in (*CATEGORY_NAMES, "no Yes")}
    row["own category"] = float((top_category == best["truth_category"]).mean())
    spatial = pairs["truth_category"] == "spatial"
    yes_semantic = answers.loc[answers["predicate"].map(categories) == "semantic", KEYS].drop_duplicates().assign(semantic_yes=True)
    flagged = pairs.loc[spatial, KEYS].merge(yes_semantic, on=KEYS, how="left")
    row['spatial pairs: semantic "Yes"'] = float(flagged["semantic_yes"].fillna(False).astype(bool).mean()) if spatial.any() else float("nan")
    return row


def runs_table(runs: list[str], dataset: str, categories: dict[str, str], seen_objects: set[str]) -> list[dict]:
    """`top_category_row` of every run, with the run's mR@20 on `dataset` (its own commit's metrics)."""
    rows = []
    for run in runs:
        commit = resolved_rev(run)
        ground_truth, answers = read_tables(Path(f"data/scenes/{dataset}/test.parquet"), predictions_file(commit, dataset, run))
        pairs = annotated_pairs(ground_truth, categories, seen_objects)
        recall = float(read_revision_json(commit, f"metrics/{dataset}.json")["mR@20"])
        rows.append({"run": run, **top_category_row(pairs, answers, categories), "mR@20": recall})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="workspace", help="workspace, an experiment name or a commit")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--held-in", default="synthetic", help="the training dataset: its predicates and objects are the seen ones")
    parser.add_argument("--predicates", default="above,below,left of,right of,part of,carrying")
    parser.add_argument("--runs", default="", help="comma-separated experiments: one row each (top-ranked categories, mR@20)")
    args = parser.parse_args()
    held_in = json.loads(Path(f"data/scenes/{args.held_in}/vocab.json").read_text())
    evaluated = json.loads(Path(f"data/scenes/{args.dataset}/vocab.json").read_text())
    categories = {**evaluated["categories"], **held_in["categories"]}  # answers name held-in predicates
    seen_objects = set(held_in["objects"])
    if args.runs:
        rows = runs_table([run.strip() for run in args.runs.split(",")], args.dataset, categories, seen_objects)
        print(markdown_table(rows))
        if len(rows) > 2:
            result = pearsonr([row["own category"] for row in rows], [row["mR@20"] for row in rows])
            print(f"\nPearson r(own category, mR@20) over {len(rows)} runs = {result.statistic:.2f} (p = {result.pvalue:.3f})")
        return
    ground_truth, answers = read_tables(Path(f"data/scenes/{args.dataset}/test.parquet"), predictions_file(resolved_rev(args.rev), args.dataset, args.rev))
    pairs = annotated_pairs(ground_truth, categories, seen_objects)
    print(f"{args.rev}: {len(pairs)} annotated test pairs of {args.dataset}, {len(answers)} 'Yes' answers\n")
    print(markdown_table(yes_shares(pairs, answers, categories)))
    print()
    print(markdown_table(top_answers(pairs, answers, [name.strip() for name in args.predicates.split(",")])))
    if pairs["unseen_objects"].any():
        print()
        print(markdown_table(unseen_object_rows(pairs, answers, set(held_in["predicates"]))))


if __name__ == "__main__":
    main()
