"""The contract every selection strategy keeps, checked for each name `reltune select` accepts.

Like small-text's shared query-strategy tests: one round of `select_round`
over a long-tailed pool with scores, for every strategy in STRATEGY_NAMES,
must take exactly min(budget, pool) rows (`full`: the whole pool), never a
row twice, only rows of the pool (and, for score-based strategies, only
scored ones), the same rows for the same seed whatever the row order, and
keep the previous selection unchanged in front of the new rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reltune.sampling import REASONS, STRATEGY_NAMES, SEED_STRATEGY_NAMES, make_strategy, select_round
from reltune.sampling.art import FILL

# reasons each strategy may give its rows
ALLOWED_REASONS = {
    "art": set(REASONS.values()) | {FILL},
    "fixed": set(REASONS.values()) | {FILL},
    "art-entropy": {"high_entropy"},
    "balanced": {"balanced"},
    "random": {"random"},
    "full": {"full"},
}


def long_tailed_positives(seed: int, count: int = 400) -> pd.DataFrame:
    """Training positives over 8 predicates with VG-like frequencies; one predicate has 2 rows only."""
    rng = np.random.default_rng(seed)
    names = np.array(["on", "has", "near", "wearing", "holding", "behind", "riding", "eating"])
    weights = np.array([40, 20, 12, 10, 8, 6, 3, 1], dtype=float)
    predicates = rng.choice(names[:-1], size=count - 2, p=weights[:-1] / weights[:-1].sum())
    predicates = np.r_[predicates, ["eating", "eating"]]
    qids = [f"q{index:05d}" for index in rng.permutation(count)]
    return pd.DataFrame({"qid": qids, "predicate": predicates})


def pool_scores(pool: pd.DataFrame, seed: int, scored_fraction: float = 1.0) -> pd.DataFrame:
    """Scores (outcome, entropy with ties, similarity for FP) for a share of the pool."""
    rng = np.random.default_rng(seed + 100)
    scored = pool.sample(frac=scored_fraction, random_state=seed).reset_index(drop=True)
    outcome = rng.choice(["TP", "FP", "FN"], size=len(scored), p=[0.5, 0.3, 0.2])
    entropy = np.round(rng.gamma(2.0, 0.3, size=len(scored)), 1)  # rounded: many ties
    similarity = np.where(outcome == "FP", np.round(rng.uniform(0.3, 1.0, size=len(scored)), 2), np.nan)
    return scored.assign(outcome=outcome, entropy=entropy, similarity=similarity)


def run(name, positives, previous, round_index, seed, scores=None, recall=None, fraction=0.1):
    strategy = make_strategy(name)
    return select_round(positives, previous, strategy, round_index, fraction, seed,
                        scores if strategy.needs_scores else None, recall if strategy.needs_recall else None)


RECALL = {"on": 0.9, "has": 0.5, "near": 0.2, "wearing": 0.0, "holding": 0.7, "behind": 0.1}  # riding, eating: unseen


@pytest.fixture(params=[0, 2], ids=["scored", "partly-scored"])
def second_round(request):
    """Positives, the balanced seed selection (round 0) and pool scores for round 1."""
    seed = request.param
    positives = long_tailed_positives(seed)
    seed_selection, _ = run("balanced", positives, None, 0, seed)
    pool = positives.loc[~positives["qid"].isin(seed_selection["qid"])]
    return positives, seed_selection, pool, pool_scores(pool, seed, scored_fraction=0.8 if seed == 2 else 1.0)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_round_keeps_the_contract(name, second_round):
    positives, previous, pool, scores = second_round
    selection, report = run(name, positives, previous, 1, seed=7, scores=scores, recall=RECALL)
    added = selection.iloc[len(previous):]

    # cumulative: the previous selection first, unchanged; new rows belong to this round
    pd.testing.assert_frame_equal(selection.iloc[: len(previous)].reset_index(drop=True), previous.reset_index(drop=True))
    assert (added["added_in_round"] == 1).all()
    # no row twice, only pool rows (only scored rows for strategies that read scores)
    assert not selection["qid"].duplicated().any()
    candidates = scores if make_strategy(name).needs_scores else pool
    assert set(added["qid"]) <= set(candidates["qid"]) and set(candidates["qid"]) <= set(pool["qid"])
    # the budget: never more than B; exactly min(B, pool) when every pool row is scored
    # (budgets follow the whole pool, so unscored rows can leave a predicate short); `full`: the whole pool
    budget = round(0.1 * len(positives))
    assert len(added) == report["selected_this_round"] and len(added) <= max(budget, len(pool) if name == "full" else 0)
    if len(scores) == len(pool) or not make_strategy(name).needs_scores:
        assert len(added) == (len(pool) if name == "full" else min(budget, len(pool)))
    assert report["budget"] == (len(pool) if name == "full" else budget)
    assert set(added["reason"]) <= ALLOWED_REASONS[name]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_same_seed_same_rows_whatever_the_row_order(name, second_round):
    positives, previous, _, scores = second_round
    first, _ = run(name, positives, previous, 1, seed=3, scores=scores, recall=RECALL)
    shuffled_positives = positives.sample(frac=1.0, random_state=11)
    shuffled_scores = scores.sample(frac=1.0, random_state=12)
    again, _ = run(name, shuffled_positives, previous, 1, seed=3, scores=shuffled_scores, recall=RECALL)
    assert sorted(zip(first["qid"], first["reason"])) == sorted(zip(again["qid"], again["reason"]))


@pytest.mark.parametrize("name", ["random", "balanced", "fixed"])
def test_the_seed_matters_for_strategies_that_draw(name, second_round):
    """Proof that the determinism test can fail: another seed draws other rows."""
    positives, previous, _, scores = second_round
    rows = {frozenset(run(name, positives, previous, 1, seed=seed, scores=scores, recall=RECALL)[0]["qid"])
            for seed in range(4)}
    assert len(rows) > 1


@pytest.mark.parametrize("name", SEED_STRATEGY_NAMES)
def test_the_seed_round_keeps_the_contract(name):
    positives = long_tailed_positives(5)
    selection, report = run(name, positives, None, 0, seed=1)
    assert not selection["qid"].duplicated().any() and set(selection["qid"]) <= set(positives["qid"])
    assert (selection["added_in_round"] == 0).all()
    assert len(selection) == (len(positives) if name == "full" else round(0.1 * len(positives)))
    assert set(selection["reason"]) <= ALLOWED_REASONS[name]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_budget_beyond_the_pool_takes_the_pool(name, second_round):
    positives, previous, pool, scores = second_round
    selection, _ = run(name, positives, previous, 1, seed=0, scores=scores, recall=RECALL, fraction=1.0)
    added = selection.iloc[len(previous):]
    candidates = scores if make_strategy(name).needs_scores else pool
    assert sorted(added["qid"]) == sorted(candidates["qid"])


def test_every_registered_strategy_is_covered():
    assert set(ALLOWED_REASONS) == set(STRATEGY_NAMES)
