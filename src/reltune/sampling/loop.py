"""One selection round as pure functions over tables: validate inputs, pick, account.

The CLI (`reltune select`) only reads files, calls these and writes results.
Round 0 is the seed (no scores); round k selects from the pool left after
round k-1 with the scores and validation recall of the model tuned on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.sampling.art import OUTCOMES
from reltune.sampling.strategies import Selection, Strategy, pool_counts

INSTRUCTION_COLUMNS = ("qid", "kind", "predicate")
SELECTION_COLUMNS = ("qid", "added_in_round", "reason")
SCORE_COLUMNS = ("qid", "predicate", "outcome", "entropy", "similarity")


def _first_row(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _fail_on_duplicates(table: pd.DataFrame, file: str | Path) -> None:
    duplicated = table["qid"].duplicated()
    if duplicated.any():
        row = _first_row(duplicated)
        raise InputError(file, f"duplicate qid {table['qid'].iloc[row]!r} ({int(duplicated.sum())} duplicates)", f"row {row}")


def training_positives(instructions: pd.DataFrame, file: str | Path) -> pd.DataFrame:
    """The positive rows (qid, predicate) of a training instruction table, validated."""
    missing = [column for column in INSTRUCTION_COLUMNS if column not in instructions.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    _fail_on_duplicates(instructions, file)
    bad_kind = ~instructions["kind"].isin(["positive", "negative"])
    if bad_kind.any():
        row = _first_row(bad_kind)
        raise InputError(file, f"kind must be positive or negative, got {instructions['kind'].iloc[row]!r}", f"row {row}")
    is_positive = (instructions["kind"] == "positive").to_numpy()
    no_predicate = is_positive & instructions["predicate"].isna().to_numpy()
    if no_predicate.any():
        row = _first_row(no_predicate)
        raise InputError(file, f"positive {instructions['qid'].iloc[row]!r} has no predicate", f"row {row}")
    positives = instructions.loc[is_positive, ["qid", "predicate"]].reset_index(drop=True)
    positives["predicate"] = positives["predicate"].astype(str)
    return positives


def validate_previous_selection(
    previous: pd.DataFrame, positives: pd.DataFrame, round_index: int, file: str | Path
) -> pd.DataFrame:
    """Check a cumulative selection against the training positives; returns it unchanged."""
    missing = [column for column in SELECTION_COLUMNS if column not in previous.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    _fail_on_duplicates(previous, file)
    unknown = ~previous["qid"].isin(positives["qid"])
    if unknown.any():
        row = _first_row(unknown)
        raise InputError(file, f"qid {previous['qid'].iloc[row]!r} is not a training positive", f"row {row}")
    late = previous["added_in_round"].isna() | (previous["added_in_round"] >= round_index)
    if late.any():
        row = _first_row(late)
        raise InputError(
            file, f"added_in_round {previous['added_in_round'].iloc[row]} is not before round {round_index}", f"row {row}"
        )
    return previous


def validate_scores(
    scores: pd.DataFrame, positives: pd.DataFrame, selected_qids: pd.Series, file: str | Path
) -> pd.DataFrame:
    """Check pool scores (DESIGN §4) against the pool; returns the score columns."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise InputError(file, f"missing columns {missing}")
    scores = scores.reset_index(drop=True)
    _fail_on_duplicates(scores, file)
    predicate_of = positives.set_index("qid")["predicate"]
    known = scores["qid"].isin(predicate_of.index)
    if not known.all():
        row = _first_row(~known)
        raise InputError(file, f"qid {scores['qid'].iloc[row]!r} is not a training positive", f"row {row}")
    already = scores["qid"].isin(selected_qids)
    if already.any():
        row = _first_row(already)
        raise InputError(file, f"qid {scores['qid'].iloc[row]!r} was already selected, so is not in the pool", f"row {row}")
    mismatch = scores["predicate"].astype(str).to_numpy() != predicate_of.loc[scores["qid"]].to_numpy()
    if mismatch.any():
        row = _first_row(mismatch)
        raise InputError(
            file,
            f"predicate {scores['predicate'].iloc[row]!r} differs from the instruction's "
            f"{predicate_of.loc[scores['qid'].iloc[row]]!r}",
            f"row {row}",
        )
    bad_outcome = ~scores["outcome"].isin(OUTCOMES)
    if bad_outcome.any():
        row = _first_row(bad_outcome)
        raise InputError(file, f"outcome must be TP, FP or FN, got {scores['outcome'].iloc[row]!r}", f"row {row}")
    entropy = pd.to_numeric(scores["entropy"], errors="coerce")
    if entropy.isna().any():
        row = _first_row(entropy.isna())
        raise InputError(file, f"entropy is missing or not a number ({scores['entropy'].iloc[row]!r})", f"row {row}")
    bad_entropy = ~np.isfinite(entropy.to_numpy(dtype=float)) | (entropy.to_numpy(dtype=float) < 0)
    if bad_entropy.any():
        row = int(np.flatnonzero(bad_entropy)[0])
        raise InputError(file, f"entropy must be finite and >= 0, got {entropy.iloc[row]!r}", f"row {row}")
    similarity = pd.to_numeric(scores["similarity"], errors="coerce")
    bad_similarity = similarity.notna().to_numpy() & ~similarity.between(-1.0 - 1e-6, 1.0 + 1e-6).to_numpy()
    if bad_similarity.any():
        row = int(np.flatnonzero(bad_similarity)[0])
        raise InputError(file, f"similarity must lie in [-1, 1], got {similarity.iloc[row]!r}", f"row {row}")
    fp_without_similarity = (scores["outcome"] == "FP") & similarity.isna()
    if fp_without_similarity.any():
        row = _first_row(fp_without_similarity)
        raise InputError(file, "FP row has no similarity", f"row {row}")
    return pd.DataFrame(
        {
            "qid": scores["qid"],
            "predicate": scores["predicate"].astype(str),
            "outcome": scores["outcome"].astype(str),
            "entropy": entropy.astype(float),
            "similarity": similarity.astype(float),
        }
    )


def validate_recall(data: Any, file: str | Path) -> dict[str, float]:
    """Per-predicate validation recall from val_recall.json (CONTRACTS: {"per_predicate": {p: r}})."""
    if not isinstance(data, dict) or not isinstance(data.get("per_predicate"), dict):
        raise InputError(file, 'expected an object with a "per_predicate" mapping')
    recall: dict[str, float] = {}
    for predicate, value in data["per_predicate"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
            raise InputError(file, f"recall must be a number in [0, 1], got {value!r}", f"per_predicate.{predicate}")
        recall[str(predicate)] = float(value)
    return recall


def round_budget(budget_fraction: float, training_positive_count: int) -> int:
    """B = round(b * N_pos) over all training positives (DESIGN §6; Python's round)."""
    if not (0.0 <= budget_fraction <= 1.0) or math.isnan(budget_fraction):
        raise ValueError(f"budget fraction must be in [0, 1], got {budget_fraction}")
    return int(round(budget_fraction * training_positive_count))


def select_round(
    positives: pd.DataFrame,
    previous: pd.DataFrame | None,
    strategy: Strategy,
    round_index: int,
    budget_fraction: float,
    seed: int,
    scores: pd.DataFrame | None = None,
    recall: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run one round: returns the cumulative selection table and the round's report.

    `previous` is the cumulative selection of round k-1 (None for the seed).
    Strategies that need scores pick only among scored pool rows; the number
    of unscored pool rows is reported. Random draws use default_rng([seed, round]).
    """
    if previous is None:
        previous = pd.DataFrame({"qid": pd.Series([], dtype=object), "added_in_round": pd.Series([], dtype="int64"),
                                 "reason": pd.Series([], dtype=object)})
    selected_before = previous["qid"]
    pool = positives.loc[~positives["qid"].isin(selected_before)].reset_index(drop=True)
    budget = round_budget(budget_fraction, len(positives))
    if strategy.name == "full":  # takes the whole pool whatever the fraction says
        budget = len(pool)

    unscored = 0
    if strategy.needs_scores:
        if scores is None:
            raise ValueError(f"strategy {strategy.name!r} needs pool scores")
        unscored = int((~pool["qid"].isin(scores["qid"])).sum())
        candidates = scores
    else:
        candidates = pool
    selection = strategy.select(
        candidates, budget, recall=recall or {}, seed=[seed, round_index], available=pool_counts(pool)
    )

    added = pd.DataFrame(
        {
            "qid": selection.table["qid"].to_numpy(),
            "added_in_round": np.full(len(selection.table), round_index, dtype=np.int64),
            "reason": selection.table["reason"].astype(str).to_numpy(),
        }
    )
    cumulative = pd.concat([previous[list(SELECTION_COLUMNS)], added], ignore_index=True)
    cumulative["added_in_round"] = cumulative["added_in_round"].astype("int64")
    # Predicates of the candidates without a validation recall get R = 0 (DESIGN §6); listed, not silent.
    recall_missing = (
        sorted(set(candidates["predicate"].astype(str)) - set(recall or {})) if strategy.needs_recall else []
    )
    counts = {"training_positives": len(positives), "budget": budget, "pool_size": len(pool), "pool_unscored": unscored}
    report = round_report(strategy, round_index, seed, budget_fraction, counts, recall_missing, added, cumulative, selection)
    return cumulative, report


def round_report(
    strategy: Strategy,
    round_index: int,
    seed: int,
    budget_fraction: float,
    counts: Mapping[str, int],
    recall_missing: list[str],
    added: pd.DataFrame,
    cumulative: pd.DataFrame,
    selection: Selection,
) -> dict[str, Any]:
    """selection_report.json of one round (`counts`: training_positives, budget, pool_size, pool_unscored)."""
    taken_by_reason = {str(reason): int(count) for reason, count in added["reason"].value_counts().sort_index().items()}
    return {
        "round": round_index,
        "strategy": strategy.name,
        "components": list(getattr(strategy, "components", [])),
        "seed": seed,
        "budget_fraction": budget_fraction,
        "training_positives": counts["training_positives"],
        "budget": counts["budget"],
        "pool_size": counts["pool_size"],
        "pool_unscored": counts["pool_unscored"],
        "recall_missing": recall_missing,
        "selected_this_round": len(added),
        "selected_total": len(cumulative),
        "pool_left": counts["pool_size"] - len(added),
        "taken": taken_by_reason,
        "per_predicate": selection.per_predicate,
    }
