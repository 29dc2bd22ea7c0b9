"""Budget allocation: closed-form Alg. 2 vs a literal slot-by-slot oracle; water-filling by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reltune.sampling import allocate_budget, balanced_allocation


def literal_algorithm_2(available: dict[str, int], budget: int) -> dict[str, int]:
    """Paper Alg. 2 as printed: one slot at a time, round-robin, skipping exhausted predicates."""
    order = sorted(available, key=lambda predicate: (-available[predicate], predicate))
    left = dict(available)
    allocation = {predicate: 0 for predicate in available}
    remaining = min(budget, sum(available.values()))  # the printed loop never ends past the total
    index = 0
    while remaining > 0:
        predicate = order[index]
        if left[predicate] > 0:
            allocation[predicate] += 1
            left[predicate] -= 1
            remaining -= 1
        index = (index + 1) % len(order)
    return allocation


availability = st.dictionaries(
    st.text(alphabet="abcdefgh ", min_size=1, max_size=4), st.integers(0, 40), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(availability, st.integers(0, 400))
def test_balanced_allocation_equals_slot_by_slot_algorithm_2(available, budget):
    allocation = balanced_allocation(available, budget)
    assert allocation == literal_algorithm_2(available, budget)
    assert sum(allocation.values()) == min(budget, sum(available.values()))
    assert all(allocation[predicate] <= available[predicate] for predicate in available)


def test_balanced_allocation_by_hand():
    # Order by availability: a(5) c(3) e(3) b(1) d(0); passes: a c e b | a c e | a ...
    assert balanced_allocation({"a": 5, "b": 1, "c": 3, "d": 0, "e": 3}, 9) == {"a": 3, "b": 1, "c": 3, "d": 0, "e": 2}
    # Ties in availability go by name: c before e in the partial pass.
    assert balanced_allocation({"e": 3, "c": 3}, 3) == {"c": 2, "e": 1}
    assert balanced_allocation({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    assert balanced_allocation({"a": 2}, 0) == {"a": 0}
    with pytest.raises(ValueError):
        balanced_allocation({"a": 2}, -1)


def test_allocate_budget_redistributes_excess_and_breaks_remainder_ties_by_name():
    # w: a 1, b .5, c .5, d 1 (missing from recall -> R 0); e has no pool rows.
    # First pass: a = 11 * 1/3 = 3.67 > N_a = 1 -> capped at 1.
    # Second pass: 10 left over b, c, d (sum w 2): b 2.5, c 2.5, d 5.
    # Floors 1+2+2+5 = 10, one slot left, remainders b .5 = c .5 -> b (name).
    recall = {"a": 0.0, "b": 0.5, "c": 0.5, "e": 0.2}
    available = {"a": 1, "b": 10, "c": 10, "d": 10, "e": 0}
    assert allocate_budget(recall, available, 11) == {"a": 1, "b": 3, "c": 2, "d": 5, "e": 0}


def test_allocate_budget_ties_are_exact_not_float_noise():
    # w a 1, b .4, c .4 (sum 1.8); B 3: a 5/3, b 2/3, c 2/3 -> floors 1, 0, 0 and
    # three equal remainders 2/3 for two slots -> a, b. Naive floats make b and c
    # 0.66666669 > a's 0.66666667 and would give a 1, b 1, c 1.
    assert allocate_budget({"a": 0.0, "b": 0.6, "c": 0.6}, {"a": 10, "b": 10, "c": 10}, 3) == {"a": 2, "b": 1, "c": 0}


def test_allocate_budget_when_every_weight_is_zero_splits_equally():
    # All recalls 1 -> all weights 1: a 1.5, b 1.5 -> b capped at 1, a takes 2.
    assert allocate_budget({"a": 1.0, "b": 1.0}, {"a": 3, "b": 1}, 3) == {"a": 2, "b": 1}


def test_allocate_budget_zero_weight_predicates_absorb_what_low_recall_ones_cannot():
    # a (R 0) can take only 2 of 6; b, c (R 1) share the remaining 4 equally.
    assert allocate_budget({"a": 0.0, "b": 1.0, "c": 1.0}, {"a": 2, "b": 10, "c": 10}, 6) == {"a": 2, "b": 2, "c": 2}


def test_allocate_budget_budget_above_pool_takes_everything_and_rejects_bad_recall():
    assert allocate_budget({}, {"a": 2, "b": 1}, 50) == {"a": 2, "b": 1}
    assert allocate_budget({"a": 0.3}, {"a": 4}, 0) == {"a": 0}
    with pytest.raises(ValueError, match="recall"):
        allocate_budget({"a": 1.5}, {"a": 4}, 2)
    with pytest.raises(ValueError, match="recall"):
        allocate_budget({"a": float("nan")}, {"a": 4}, 2)


recalls = st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0]))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 30), min_size=1), recalls, st.integers(0, 200))
def test_allocate_budget_invariants(available, recall, budget):
    allocation = allocate_budget(recall, available, budget)
    assert sum(allocation.values()) == min(budget, sum(available.values()))
    assert all(0 <= allocation[p] <= available[p] for p in available)
    # Water level: a predicate below its cap never gets more than one slot over
    # its exact proportional share relative to another uncapped one of larger weight.
    weights = {p: 1 - recall.get(p, 0.0) for p in available if available[p] > 0}
    if weights and any(weights.values()):
        for p in weights:
            for q in weights:
                if weights[p] > weights[q] and allocation[p] < available[p]:
                    assert allocation[p] + 1 >= allocation[q]
