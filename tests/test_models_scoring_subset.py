"""Cheaper pool scoring: the capped, stratified, seeded pool subset and the fitted decoding length."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reltune.inference.scoring import SCORE_COLUMNS, answer_token_limit, empty_scores, pool_scoring_candidates

RECALL = {"a": 0.5, "b": 0.75, "c": 1.0, "d": 0.0}


def pool_table(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{name}{index:02d}", name) for name, count in counts.items() for index in range(count)]
    return pd.DataFrame({"qid": [row[0] for row in rows], "predicate": [row[1] for row in rows], "prompt": "q"})


POOL = pool_table({"a": 10, "b": 6, "c": 3, "d": 2})


def test_subset_is_capped_at_c_times_the_round_budget() -> None:
    # allocate_budget by hand, B = 4: w = a .5, b .25, c 0, d 1 (sum 1.75); d's share 2.29 > N_d = 2 -> capped
    # at 2; the remaining 2 over a, b, c (sum w .75): a 1.33, b .67, c 0 -> floors a 1, b 0, d 2; the
    # leftover slot goes to the larger remainder (b .67). B' = a 1, b 1, c 0, d 2. With C = 2: a 2, b 2, d 2.
    subset, report = pool_scoring_candidates(POOL, RECALL, 4, 2, seed=0)
    assert report == {
        "a": {"pool": 10, "budget": 1, "scored": 2},
        "b": {"pool": 6, "budget": 1, "scored": 2},
        "c": {"pool": 3, "budget": 0, "scored": 0},
        "d": {"pool": 2, "budget": 2, "scored": 2},
    }
    assert subset["predicate"].value_counts().sort_index().to_dict() == {"a": 2, "b": 2, "d": 2}
    assert set(subset["qid"]) <= set(POOL["qid"]) and not subset["qid"].duplicated().any()
    # C = 3: a 3, b 3, d min(2, 6) = 2; C = 0: everything (the paper)
    wider, _ = pool_scoring_candidates(POOL, RECALL, 4, 3, seed=0)
    assert wider["predicate"].value_counts().sort_index().to_dict() == {"a": 3, "b": 3, "d": 2}
    everything, report_all = pool_scoring_candidates(POOL, RECALL, 4, 0, seed=0)
    pd.testing.assert_frame_equal(everything, POOL)
    assert report_all["c"] == {"pool": 3, "budget": 0, "scored": 3}


def test_subset_is_seeded_and_independent_of_row_order() -> None:
    first, _ = pool_scoring_candidates(POOL, RECALL, 4, 2, seed=7)
    again, _ = pool_scoring_candidates(POOL, RECALL, 4, 2, seed=7)
    shuffled, _ = pool_scoring_candidates(POOL.sample(frac=1.0, random_state=3), RECALL, 4, 2, seed=7)
    assert list(first["qid"]) == list(again["qid"])
    assert set(first["qid"]) == set(shuffled["qid"])
    draws = {tuple(sorted(pool_scoring_candidates(POOL, RECALL, 4, 2, seed=seed)[0]["qid"])) for seed in range(6)}
    assert len(draws) > 1  # the seed matters (a has 45 possible pairs)
    # the subset keeps the pool's row order
    positions = [list(POOL["qid"]).index(qid) for qid in first["qid"]]
    assert positions == sorted(positions)


def test_every_predicate_with_a_budget_gets_candidates_on_random_pools() -> None:
    from reltune.sampling import allocate_budget

    generator = np.random.default_rng(0)
    for trial in range(25):
        counts = {f"p{index}": int(generator.integers(1, 40)) for index in range(int(generator.integers(2, 9)))}
        recall = {name: float(generator.choice([0.0, 0.2, 0.5, 0.9, 1.0])) for name in counts}
        budget = int(generator.integers(0, 60))
        cap = float(generator.choice([1, 1.5, 2, 10]))
        subset, report = pool_scoring_candidates(pool_table(counts), recall, budget, cap, seed=trial)
        budgets = allocate_budget(recall, counts, budget)
        scored = subset["predicate"].value_counts().to_dict()
        for name, count in counts.items():
            assert scored.get(name, 0) == report[name]["scored"] == min(count, int(np.floor(cap * budgets[name])))
            assert scored.get(name, 0) <= cap * budgets[name]
            assert (scored.get(name, 0) >= budgets[name]) and (budgets[name] == 0 or scored.get(name, 0) > 0)


def test_cap_factor_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="0 \\(score everything\\) or >= 1"):
        pool_scoring_candidates(POOL, RECALL, 4, 0.5, seed=0)


def test_answer_token_limit_fits_the_longest_target_plus_eos() -> None:
    def whitespace_tokenizer(texts, add_special_tokens=True):
        assert add_special_tokens is False  # EOS is counted by hand
        return {"input_ids": [text.split() for text in texts]}

    targets = ["Yes, man riding horse.", "No, there is no prominent spatial relation between man and horse.", "Yes"]
    assert answer_token_limit(targets, whitespace_tokenizer, 32) == 11 + 1  # "No, there ... horse." is 11 words
    assert answer_token_limit(targets, whitespace_tokenizer, 8) == 8
    assert answer_token_limit([], whitespace_tokenizer, 8) == 8


def test_empty_scores_have_the_design_columns() -> None:
    table = empty_scores()
    assert tuple(table.columns) == SCORE_COLUMNS and len(table) == 0
    assert table["entropy"].dtype == np.float64 and table["similarity"].dtype == np.float64
