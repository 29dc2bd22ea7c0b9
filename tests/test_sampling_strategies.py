"""Selection strategies over pool tables, without a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reltune.sampling import (
    ArtSelection,
    BalancedSelection,
    EntropySelection,
    FixedThresholdSelection,
    FullSelection,
    RandomSelection,
    balanced_allocation,
    make_strategy,
)


def plain_pool(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{predicate}-{index}", predicate) for predicate, count in counts.items() for index in range(count)]
    return pd.DataFrame(rows, columns=["qid", "predicate"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["on", "has", "near", "of", "in"]), st.integers(0, 25), min_size=1),
       st.integers(0, 120), st.integers(0, 5))
def test_balanced_selection_follows_allocation_without_duplicates(counts, budget, seed):
    pool = plain_pool(counts)
    selection = BalancedSelection().select(pool, budget, seed=seed)
    table = selection.table
    assert not table["qid"].duplicated().any()
    assert set(table["qid"]) <= set(pool["qid"])
    assert (table["reason"] == "balanced").all()
    allocation = balanced_allocation(counts, budget)
    per_predicate = table["predicate"].value_counts().to_dict()
    assert {p: per_predicate.get(p, 0) for p in allocation} == allocation
    assert len(table) == min(budget, sum(counts.values()))


def test_balanced_selection_is_seeded_and_order_independent():
    pool = plain_pool({"on": 30, "has": 4})
    first = BalancedSelection().select(pool, 10, seed=1).table
    assert sorted(first["qid"]) == sorted(BalancedSelection().select(pool.iloc[::-1], 10, seed=1).table["qid"])
    others = {tuple(sorted(BalancedSelection().select(pool, 10, seed=s).table["qid"])) for s in range(2, 8)}
    assert len(others | {tuple(sorted(first["qid"]))}) > 1
    account = BalancedSelection().select(pool, 10, seed=1).per_predicate
    assert account["has"] == {"budget": 4, "z_met": None, "taken": {"balanced": 4}, "pool_size": 4, "pool_left": 0}
    assert account["on"]["budget"] == 6 and account["on"]["pool_left"] == 24


def test_random_and_full_selection():
    pool = plain_pool({"on": 8, "has": 2})
    chosen = RandomSelection().select(pool, 4, seed=3).table
    assert len(chosen) == 4 and not chosen["qid"].duplicated().any() and (chosen["reason"] == "random").all()
    assert sorted(chosen["qid"]) == sorted(RandomSelection().select(pool.sample(frac=1, random_state=0), 4, seed=3).table["qid"])
    assert len(RandomSelection().select(pool, 50, seed=3).table) == 10
    full = FullSelection().select(pool, 0)
    assert sorted(full.table["qid"]) == sorted(pool["qid"]) and full.per_predicate["on"]["pool_left"] == 0


def scored_pool() -> pd.DataFrame:
    rows = [
        ("a1", "on", "TP", 0.9, np.nan),
        ("a2", "on", "TP", 0.1, np.nan),
        ("a3", "on", "FN", 0.3, np.nan),
        ("a4", "on", "FP", 0.8, 0.99),
        ("a5", "on", "FP", 0.2, 0.50),
        ("b1", "has", "TP", 0.7, np.nan),
        ("b2", "has", "FN", 0.6, np.nan),
        ("b3", "has", "FN", 0.05, np.nan),
    ]
    return pd.DataFrame(rows, columns=["qid", "predicate", "outcome", "entropy", "similarity"])


def test_entropy_strategy_takes_highest_entropy_per_predicate_with_recall_weighted_budget():
    # Recall on .5, has 0 -> w .5 / 1; B 3: on 1, has 2.
    selection = EntropySelection().select(scored_pool(), 3, recall={"on": 0.5, "has": 0.0})
    assert sorted(selection.table["qid"]) == ["a1", "b1", "b2"]
    assert (selection.table["reason"] == "high_entropy").all()
    assert selection.per_predicate["on"]["budget"] == 1 and selection.per_predicate["has"]["budget"] == 2


def test_fixed_thresholds_of_table_7_mid_point():
    # Mid point: t_fp .95, t_fn .5, h_fn .5, h_tp .5. Qualify: a1 (TP .9 > .5), a3 (FN .3 < .5),
    # a5 (FP .50 < .95), b1 (TP .7), b2 (FN .6 > .5), b3 (FN .05 < .5); a2 and a4 do not.
    selection = FixedThresholdSelection().select(scored_pool(), 6, recall={"on": 0.0, "has": 0.0}, seed=0)
    reasons = dict(zip(selection.table["qid"], selection.table["reason"]))
    # Budgets: 6 over w 1, 1 -> on 3, has 3; on has exactly 3 qualifying, has 3.
    assert reasons == {
        "a1": "tp_high_entropy",
        "a3": "fn_low_entropy",
        "a5": "fp_low_similarity",
        "b1": "tp_high_entropy",
        "b2": "fn_high_entropy",
        "b3": "fn_low_entropy",
    }
    # Budget above the qualifying rows: the rest is random fill.
    wide = FixedThresholdSelection({"h_tp": 0.95}).select(scored_pool(), 8, recall={}, seed=0)
    assert sorted(wide.table.loc[wide.table["reason"] == "fill", "qid"]) == ["a1", "a2", "a4", "b1"]


def test_art_strategy_uses_recall_weighted_budgets_and_reports_z():
    selection = ArtSelection().select(scored_pool(), 4, recall={"on": 0.0, "has": 1.0})
    # w on 1, has 0 -> on 4 of its 5 rows, has 0.
    assert set(selection.table["predicate"]) == {"on"} and len(selection.table) == 4
    assert selection.per_predicate["on"]["budget"] == 4
    assert isinstance(selection.per_predicate["on"]["z_met"], float)
    assert selection.per_predicate["has"] == {"budget": 0, "z_met": None, "taken": {}, "pool_size": 3, "pool_left": 3}


def test_make_strategy_names_and_errors():
    assert make_strategy("art", components=["t_fp", "h_fn"]).components == ("h_fn", "t_fp")
    assert make_strategy("balanced").name == "balanced"
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("greedy")
    with pytest.raises(ValueError, match="unknown ART components"):
        make_strategy("art", components=["h_xx"])



def test_budgets_of_a_scored_subset_follow_the_whole_pool():
    """A capped, partly scored pool (C = 2) keeps the budgets of the whole pool."""
    from reltune.sampling.strategies import ArtSelection

    recall = {"a": 0.9, "b": 0.9, "c": 0.0}
    whole = {"a": 5, "b": 11, "c": 9}  # allocate_budget -> a 1, b 0, c 3 for a budget of 4
    scored_counts = {"a": 2, "c": 6}  # C x B'_p; from these alone the split would be a 0, c 4
    rows = [
        {"qid": f"{predicate}{index}", "predicate": predicate, "outcome": "TP", "entropy": float(index),
         "similarity": np.nan}
        for predicate, count in scored_counts.items()
        for index in range(count)
    ]
    selection = ArtSelection().select(pd.DataFrame(rows), 4, recall=recall, seed=0, available=whole)
    assert selection.table["predicate"].value_counts().sort_index().to_dict() == {"a": 1, "c": 3}
    unaware = ArtSelection().select(pd.DataFrame(rows), 4, recall=recall, seed=0)
    assert unaware.table["predicate"].value_counts().to_dict() == {"c": 4}


def rounds_then_one_draw(strategy_name: str, counts: dict[str, int], fraction: float, rounds: int, seed: int):
    """Per-predicate totals of `rounds` selections at `fraction` each (the loop) and of one at rounds x fraction."""
    from reltune.sampling import select_round

    positives = plain_pool(counts)
    strategy = make_strategy(strategy_name)
    cumulative = None
    for round_index in range(rounds):
        cumulative, _ = select_round(positives, cumulative, strategy, round_index, fraction, seed)
    one_draw, _ = select_round(positives, None, strategy, 0, fraction * rounds, seed)
    totals = (positives.set_index("qid").loc[table["qid"], "predicate"].value_counts() for table in (cumulative, one_draw))
    return tuple(series.reindex(sorted(counts), fill_value=0) for series in totals)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["on", "has", "near", "of", "in", "riding", "carrying"]), st.integers(1, 300), min_size=2),
       st.integers(0, 3))
def test_balanced_in_one_draw_takes_per_predicate_what_the_rounds_take_up_to_one_leftover_slot(counts, seed):
    """`make compare` (ONE_SHOT=1) runs balanced and random as one selection of the seed's and every round's budget."""
    total = sum(counts.values())
    if 3 * round(0.04 * total) != round(0.12 * total):  # the rounded budgets must add up for the totals to match
        return
    in_rounds, in_one_draw = rounds_then_one_draw("balanced", counts, 0.04, 3, seed)
    assert in_rounds.sum() == in_one_draw.sum() == round(0.12 * total)
    # water levels add up; only the leftover slots of each round's last pass (one per predicate) may land
    # elsewhere, and the one draw has its own: the rounds' 12, 9, 9 of {near: 226, has: 10, on: 10} against 10 each
    assert (in_rounds - in_one_draw).abs().max() <= 2
    in_rounds, in_one_draw = rounds_then_one_draw("random", counts, 0.04, 3, seed)
    assert in_rounds.sum() == in_one_draw.sum()
