"""Repeat-factor sampling of rare predicates in relation tuning (`train.repeat_threshold`, issue 16 part 3)."""

import math

import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.models.repeats import copies_per_positive, repeat_factors, repeated_counts, with_repeats


def lvis_factor(count: int, total: int, threshold: float) -> float:
    """LVIS (arXiv v2+, Appendix B.2) as printed: r(c) = max(1, sqrt(t / f(c))), f(c) the frequency of category c."""
    return max(1.0, math.sqrt(threshold / (count / total)))


def test_repeat_factors_are_lvis_formula():
    counts = {"on": 90, "above": 10}
    # f(above) = 0.1: sqrt(0.4 / 0.1) = 2; f(on) = 0.9 is above the threshold: 1
    assert repeat_factors(counts, 0.4) == pytest.approx({"on": 1.0, "above": 2.0})
    assert repeated_counts(counts, 0.4) == {"on": 90, "above": 20}
    counts = {"on": 1881, "left of": 42, "carrying": 24, "near": 253}
    total = sum(counts.values())
    factors = repeat_factors(counts, 0.1)
    for predicate, count in counts.items():
        assert factors[predicate] == pytest.approx(lvis_factor(count, total, 0.1))
    assert repeat_factors(counts, 0.0) == {predicate: 1.0 for predicate in counts}
    assert repeated_counts(counts, 0.0) == counts


def test_each_predicate_gets_exactly_its_repeated_count_and_the_seed_moves_only_which():
    # 'above': 4 questions of 40, f = 0.1, t = 0.625: r = 2.5, 10 copies: every question twice, two thrice
    predicates = pd.Series(["on"] * 36 + ["above"] * 4, index=[f"q{number}" for number in range(40)])
    draws = []
    for seed in range(6):
        copies = copies_per_positive(predicates, 0.625, seed)
        assert copies[predicates == "on"].tolist() == [1] * 36
        above = copies[predicates == "above"]
        assert above.sum() == 10 and sorted(above.tolist()) == [2, 2, 3, 3]
        draws.append(tuple(above.tolist()))
    assert copies_per_positive(predicates, 0.625, 3).equals(copies_per_positive(predicates, 0.625, 3))
    assert len(set(draws)) > 1


def _instructions() -> pd.DataFrame:
    positives = pd.DataFrame(
        {"qid": ["p1", "p2", "p3", "p4", "p5"], "kind": "positive", "predicate": ["on", "on", "on", "on", "above"],
         "positive_qid": None}
    )  # fmt: skip
    negatives = pd.DataFrame({"qid": ["n1", "n5"], "kind": "negative", "predicate": None, "positive_qid": ["p1", "p5"]})
    return pd.concat([positives, negatives], ignore_index=True)


def test_a_negative_is_repeated_as_its_positive_and_rows_keep_their_order():
    instructions = _instructions()
    examples = instructions[["qid", "kind"]].assign(prompt=lambda frame: "question " + frame["qid"])
    # f(above) = 1/5, t = 0.8: r = 2; 'on' (f = 0.8) stays once
    repeated = with_repeats(examples, instructions, 0.8, seed=0)
    assert repeated["qid"].tolist() == ["p1", "p2", "p3", "p4", "p5", "p5", "n1", "n5", "n5"]
    assert (repeated["prompt"] == "question " + repeated["qid"]).all()
    assert with_repeats(examples, instructions, 0.0, seed=0) is examples


def test_a_positive_without_predicate_is_refused_naming_the_row():
    instructions = _instructions()
    instructions.loc[2, "predicate"] = None
    with pytest.raises(InputError, match=r"^train.parquet \[row 2\]: a positive question names no predicate"):
        with_repeats(instructions[["qid", "kind"]], instructions, 0.5, seed=0, source="train.parquet")
