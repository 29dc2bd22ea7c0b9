"""Which category questions does a tuned model answer "Yes" to? (issue 16, part 3)

Every test pair is asked one question per relation category (spatial,
possessive, semantic); `predict` keeps the "Yes" answers and the graph
constraint ranks the best-scored one first. Paper Eq. 1 gives a spatial
positive only a possessive counter-negative (and a semantic positive only a
possessive one), so the model is never shown a "No" to a semantic question
about a spatial pair. This prints, per annotated category, the share of test
pairs with a "Yes" from each category's question, and, per chosen predicate,
what the top-ranked answer of its pairs is.

Usage (from the repository root; REV = `workspace`, an experiment or a commit
whose predictions are in the local DVC cache):
    .venv/bin/python benchmarks/category_answers.py [--rev full-seed0] [--predicates above,below,"left of","right of"]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pandas as pd

from reltune.data.world_spec import HELD_IN_PREDICATES, OOD_PREDICATES
from reltune.evaluation.compare import cached_output, markdown_table

CATEGORY = {spec.normalised: spec.category for spec in HELD_IN_PREDICATES + OOD_PREDICATES}
CATEGORY_NAMES = ("spatial", "possessive", "semantic")


def predictions_file(rev: str, dataset: str) -> Path:
    """The predictions parquet of `rev` (the workspace's from disk, an experiment's from the DVC cache)."""
    path = f"data/predictions/{dataset}.parquet"
    if rev == "workspace":
        return Path(path)
    commit = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True, text=True).stdout.strip()
    if not commit:  # an experiment name: the newest experiment of that name (names repeat across commits)
        listed = subprocess.run(
            ["git", "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)", "refs/exps"], capture_output=True, text=True
        ).stdout
        matches = [line.split()[0] for line in listed.splitlines() if line.endswith(f"/{rev}")]
        if not matches:
            raise SystemExit(f"category_answers: {rev}: neither a commit nor an experiment name")
        commit = matches[0]
    cached = cached_output(commit, path)
    if cached is None:
        raise SystemExit(f"category_answers: {path} of {rev} ({commit[:7]}) is not in the local DVC cache")
    return cached


def annotated_pairs(scenes: Path) -> pd.DataFrame:
    """One row per annotated test relation: image_id, subj, obj, truth, truth_category."""
    table = pd.read_parquet(scenes, columns=["image_id", "relations"]).explode("relations").dropna(subset=["relations"])
    relations = pd.DataFrame(table["relations"].tolist())
    pairs = pd.DataFrame({"image_id": table["image_id"].to_numpy(), "subj": relations["subj"], "obj": relations["obj"], "truth": relations["predicate"]})
    pairs["truth_category"] = pairs["truth"].map(CATEGORY)
    return pairs


def yes_shares(pairs: pd.DataFrame, predictions: pd.DataFrame) -> list[dict]:
    """Per annotated category: the share of its pairs with a "Yes" from each category's question."""
    keys = ["image_id", "subj", "obj"]
    answered = predictions.assign(category=predictions["predicate"].map(CATEGORY))
    yes = answered.groupby(keys)["category"].agg(set).rename("yes").reset_index()
    merged = pairs.merge(yes, on=keys, how="left")
    merged["yes"] = merged["yes"].apply(lambda value: value if isinstance(value, set) else set())
    rows = []
    for truth_category in CATEGORY_NAMES:
        group = merged[merged["truth_category"] == truth_category]
        row = {"annotated category": f"{truth_category} ({len(group)})"}
        for category in CATEGORY_NAMES:
            row[f'{category} "Yes"'] = f"{group['yes'].apply(lambda value, c=category: c in value).mean():.3f}"
        rows.append(row)
    return rows


def top_answers(pairs: pd.DataFrame, predictions: pd.DataFrame, predicates: list[str], top: int = 4) -> list[dict]:
    """Per annotated predicate: how often each predicate is the best-scored answer of its pairs."""
    keys = ["image_id", "subj", "obj"]
    best = predictions.sort_values("score", ascending=False, kind="stable").drop_duplicates(keys)
    merged = pairs.merge(best[keys + ["predicate"]], on=keys, how="left")
    rows = []
    for predicate in predicates:
        answers = merged.loc[merged["truth"] == predicate, "predicate"].fillna("(no Yes)").value_counts()
        listed = ", ".join(f"{name} {count}" for name, count in answers.head(top).items())
        rows.append({"annotated": f"{predicate} ({int(answers.sum())})", "top-ranked answers": listed})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="workspace", help="workspace, an experiment name or a commit")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--predicates", default="above,below,left of,right of,part of,carrying")
    args = parser.parse_args()
    pairs = annotated_pairs(Path(f"data/scenes/{args.dataset}/test.parquet"))
    predictions = pd.read_parquet(predictions_file(args.rev, args.dataset))
    print(f"{args.rev}: {len(pairs)} annotated test pairs of {args.dataset}, {len(predictions)} 'Yes' answers\n")
    print(markdown_table(yes_shares(pairs, predictions)))
    print()
    print(markdown_table(top_answers(pairs, predictions, [name.strip() for name in args.predicates.split(",")])))


if __name__ == "__main__":
    main()
