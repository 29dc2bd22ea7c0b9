"""How many samples each predicate gets: balanced (Alg. 2) and recall-weighted (Alg. 1 step 1).

Both are closed forms of slot-by-slot / iterative procedures in DESIGN §6 and
return a dict over every predicate of `available` (sorted by name), whose
values sum to min(budget, sum(available)) and never exceed availability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction


def _check_inputs(available: Mapping[str, int], budget: int) -> dict[str, int]:
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    counts: dict[str, int] = {}
    for predicate, count in available.items():
        if count < 0 or int(count) != count:
            raise ValueError(f"availability of {predicate!r} must be a non-negative integer, got {count}")
        counts[str(predicate)] = int(count)
    return counts


def balanced_allocation(available: Mapping[str, int], budget: int) -> dict[str, int]:
    """Per-predicate budget B'_p of paper Alg. 2, computed as a water level.

    Alg. 2 deals one slot at a time round-robin over predicates sorted by
    descending availability N_p (ties by name), skipping exhausted ones. After
    L full passes every predicate holds min(N_p, L); the next, partial pass
    gives one more slot to a prefix of the predicates with N_p > L (they come
    first in the descending order). So: find the largest L with
    sum(min(N_p, L)) <= B, then hand the r leftover slots to the first r
    predicates (in Alg. 2's order) with N_p > L.
    """
    counts = _check_inputs(available, budget)
    total = sum(counts.values())
    budget = min(budget, total)  # Alg. 2 would loop forever past the total
    order = sorted(counts, key=lambda predicate: (-counts[predicate], predicate))
    ascending = sorted(counts.values())

    # Largest level L with f(L) = sum(min(N_p, L)) <= budget; f is piecewise
    # linear with breakpoints at the sorted counts.
    level = ascending[-1] if ascending else 0
    filled_below = 0  # sum of counts strictly below the current breakpoint
    for position, count in enumerate(ascending):
        above = len(ascending) - position  # predicates with N_p >= count
        if filled_below + count * above > budget:
            level = (budget - filled_below) // above
            break
        filled_below += count

    allocation = {predicate: min(counts[predicate], level) for predicate in counts}
    leftover = budget - sum(allocation.values())
    for predicate in order:
        if leftover == 0:
            break
        if counts[predicate] > level:
            allocation[predicate] += 1
            leftover -= 1
    return dict(sorted(allocation.items()))


def _exact(value: float) -> Fraction:
    # The shortest decimal that round-trips (0.7, not 0.6999...): remainders that
    # are equal by hand compare equal here, so "ties by name" means what it says.
    return Fraction(repr(float(value)))


def allocate_budget(recall: Mapping[str, float], available: Mapping[str, int], budget: int) -> dict[str, int]:
    """Recall-weighted per-predicate budget (DESIGN §6 Budget allocation).

    w_p = 1 - R_p over predicates with N_p > 0 (R_p = 0 when p is missing from
    `recall`); all weights 1 when every weight is 0. Water-filling: each
    unsaturated predicate gets B_rem * w_p / sum(w), shares above N_p are
    capped and the excess is redistributed among the rest until nothing
    changes. When budget remains but every unsaturated predicate has weight 0
    (all low-recall predicates exhausted), those predicates share it equally
    (the all-zero rule applied to what is left), so the sum is always
    min(B, sum N_p). Integers by largest remainder, ties by predicate name.
    Arithmetic is exact (fractions of the recalls' shortest decimals).
    """
    counts = _check_inputs(available, budget)
    for predicate, value in recall.items():
        if not (0.0 <= float(value) <= 1.0):  # also rejects NaN
            raise ValueError(f"recall of {predicate!r} must be in [0, 1], got {value}")
    budget = min(budget, sum(counts.values()))
    candidates = sorted(predicate for predicate, count in counts.items() if count > 0)
    weights = {predicate: 1 - _exact(recall.get(predicate, 0.0)) for predicate in candidates}
    if all(weight == 0 for weight in weights.values()):
        weights = {predicate: Fraction(1) for predicate in candidates}

    shares: dict[str, Fraction] = {}
    unsaturated = list(candidates)
    remaining = Fraction(budget)
    while unsaturated and remaining > 0:
        active = {predicate: weights[predicate] for predicate in unsaturated}
        weight_sum = sum(active.values())
        if weight_sum == 0:  # only zero-weight predicates left to absorb the rest
            active = {predicate: Fraction(1) for predicate in unsaturated}
            weight_sum = Fraction(len(unsaturated))
        proposed = {predicate: remaining * weight / weight_sum for predicate, weight in active.items()}
        capped = [predicate for predicate in unsaturated if proposed[predicate] > counts[predicate]]
        if not capped:
            shares.update(proposed)
            break
        for predicate in capped:
            shares[predicate] = Fraction(counts[predicate])
            remaining -= counts[predicate]
        unsaturated = [predicate for predicate in unsaturated if predicate not in capped]

    allocation = {predicate: 0 for predicate in counts}
    remainders = []
    for predicate, share in shares.items():
        whole = math.floor(share)
        allocation[predicate] = whole
        if share > whole:
            remainders.append((-(share - whole), predicate))
    leftover = budget - sum(allocation.values())
    for _, predicate in sorted(remainders)[:leftover]:
        allocation[predicate] += 1
    return dict(sorted(allocation.items()))
