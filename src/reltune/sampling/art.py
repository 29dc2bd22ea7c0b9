"""ART adaptive selection (paper Alg. 1 step 2) in closed form (DESIGN §6).

Alg. 1 lowers a z threshold from z_init in steps of z_step until a predicate's
budget B'_p is met. A sample is taken at z exactly when its score z* > z (the
paper's comparisons are strict), where z* is

    TP: (H - mu_TP) / sigma_TP                                     h_tp
    FN: max((H - mu_FN) / sigma_FN, (mu_FN - H) / sigma_FN)        h_fn / t_fn
    FP: (mu_FP - S) / sigma_FP                                     t_fp

and -inf when no enabled component applies. So the loop followed by trimming
the overshoot by lowest z* is: per predicate the B'_p samples with the
highest z* (ties by qid); -inf samples only fill a shortfall, drawn at random.

The loop's thresholds are z_k = z_init - k * z_step, k = 0, 1, ... (computed
directly, not by repeated subtraction). "z met" is the z_k at which the loop
stops: the first z_k strictly below the B'_p-th highest z*. The reason of a
row is the criterion that takes it first: at the first z_k below its z*, in
Alg. 1's line order, so an FN close to the mean that both FN criteria take at
the same z_k (possible once z_k < 0) counts as h_fn (line 27 before 28).

Statistics are over the predicate's pool rows of each outcome: mu = sum/n,
sigma = population std + 1e-6, both summed (numpy) over the values in
ascending order so the result does not depend on the pool's row order;
groups with fewer than 2 rows: mu 0, sigma 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

COMPONENTS = ("h_tp", "h_fn", "t_fn", "t_fp")
REASONS = {
    "h_tp": "tp_high_entropy",
    "h_fn": "fn_high_entropy",
    "t_fn": "fn_low_entropy",
    "t_fp": "fp_low_similarity",
}
FILL = "fill"
OUTCOMES = ("TP", "FP", "FN")
SIGMA_EPSILON = 1e-6
POOL_COLUMNS = ("qid", "predicate", "outcome", "entropy", "similarity")


def check_components(components: Iterable[str]) -> tuple[str, ...]:
    """Validate a component subset; returns it in Alg. 1's line order."""
    chosen = set(components)
    unknown = chosen - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown ART components {sorted(unknown)}; choose from {list(COMPONENTS)}")
    return tuple(component for component in COMPONENTS if component in chosen)


def group_statistics(values: np.ndarray) -> tuple[float, float]:
    """(mu, sigma) of one outcome group of one predicate, as DESIGN §6 defines them."""
    count = len(values)
    if count < 2:
        return 0.0, 1.0
    ordered = np.sort(values)
    mean = float(np.sum(ordered)) / count
    variance = float(np.sum((ordered - mean) ** 2)) / count
    return mean, math.sqrt(variance) + SIGMA_EPSILON


def z_grid(z_init: float, z_step: float, k: int) -> float:
    """The loop's k-th threshold, z_init - k * z_step (one rounding, no accumulated drift)."""
    return z_init - k * z_step


def first_grid_below(scores: np.ndarray, z_init: float, z_step: float) -> np.ndarray:
    """For finite scores: the first loop threshold z_init - k*z_step (k >= 0) strictly below each."""
    k = np.maximum(0, np.floor((z_init - scores) / z_step)).astype(np.int64)
    # The estimate can be off by one either way through rounding; step to the exact grid point.
    while True:
        lower = (k > 0) & (z_grid(z_init, z_step, k - 1) < scores)
        higher = ~(z_grid(z_init, z_step, k) < scores)
        if not (lower.any() or higher.any()):
            return z_grid(z_init, z_step, k)
        k = k - lower + higher


def z_at_budget(kth_highest_score: float, z_init: float, z_step: float) -> float:
    """The z at which Alg. 1's loop stops for a budget whose B'_p-th highest z* is given.

    The loop stops at the first z = z_init - k*z_step (k = 0, 1, ...) with at
    least B'_p samples of z* > z, i.e. the first grid z below the B'_p-th
    highest score. NaN when that score is -inf (the loop would never stop).
    """
    if not math.isfinite(kth_highest_score):
        return math.nan
    return float(first_grid_below(np.array([kth_highest_score]), z_init, z_step)[0])


def score_rows(
    predicate_codes: np.ndarray,
    outcome_codes: np.ndarray,
    entropy: np.ndarray,
    similarity: np.ndarray,
    components: Iterable[str],
    z_init: float,
    z_step: float,
) -> tuple[np.ndarray, np.ndarray]:
    """z* and the index into COMPONENTS of the criterion that takes each row (-1: none).

    outcome_codes index OUTCOMES (0 TP, 1 FP, 2 FN).
    """
    enabled = check_components(components)
    z_star = np.full(len(outcome_codes), -np.inf)
    component = np.full(len(outcome_codes), -1, dtype=np.int8)
    for outcome_name, values, needed in (
        ("TP", entropy, "h_tp" in enabled),
        ("FN", entropy, "h_fn" in enabled or "t_fn" in enabled),
        ("FP", similarity, "t_fp" in enabled),
    ):
        if not needed:
            continue
        rows = np.flatnonzero(outcome_codes == OUTCOMES.index(outcome_name))
        if len(rows) == 0:
            continue
        # Rows of each (outcome, predicate) group by one sort, not a mask per predicate
        # (small integer codes sort by radix).
        small_codes = predicate_codes[rows].astype(np.min_scalar_type(max(int(predicate_codes.max()), 0)))
        rows = rows[np.argsort(small_codes, kind="stable")]
        codes = predicate_codes[rows]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        means = np.empty(len(rows))
        sigmas = np.empty(len(rows))
        for start, end in zip(starts, ends):
            means[start:end], sigmas[start:end] = group_statistics(values[rows[start:end]])
        group_values = values[rows]
        if outcome_name == "TP":
            z_star[rows] = (group_values - means) / sigmas
            component[rows] = COMPONENTS.index("h_tp")
        elif outcome_name == "FP":
            z_star[rows] = (means - group_values) / sigmas
            component[rows] = COMPONENTS.index("t_fp")
        else:
            high = (group_values - means) / sigmas if "h_fn" in enabled else np.full(len(rows), -np.inf)
            low = (means - group_values) / sigmas if "t_fn" in enabled else np.full(len(rows), -np.inf)
            best = np.maximum(high, low)
            # The loop takes the row at the first grid z below its z*; if h_fn also
            # fires at that z (possible for rows near the mean once z < 0), h_fn
            # took it, being tested first (Alg. 1 line 27 before 28).
            taken_at = first_grid_below(best, z_init, z_step)
            use_high = high > taken_at
            z_star[rows] = best
            component[rows] = np.where(use_high, COMPONENTS.index("h_fn"), COMPONENTS.index("t_fn"))
    return z_star, component


def outcome_codes_of(outcome: pd.Series) -> np.ndarray:
    """Index into OUTCOMES per row (ValueError naming values outside TP/FP/FN)."""
    codes, values = pd.factorize(outcome)
    unknown = sorted(str(value) for value in values if value not in OUTCOMES)
    if unknown or (codes < 0).any():
        raise ValueError(f"pool outcomes must be TP, FP or FN, got {unknown or ['missing']}")
    mapping = np.array([OUTCOMES.index(value) for value in values], dtype=np.int8)
    return mapping[codes] if len(codes) else codes.astype(np.int8)


def art_scores(
    pool: pd.DataFrame, components: Iterable[str] = COMPONENTS, z_init: float = 1.96, z_step: float = 0.1
) -> pd.DataFrame:
    """z* and the component that takes each pool row (same row order as `pool`).

    Returns columns `z_star` (float, -inf when no enabled component applies)
    and `component` (one of COMPONENTS, or None).
    """
    predicate_codes, _ = pd.factorize(pool["predicate"])
    z_star, component = score_rows(
        predicate_codes,
        outcome_codes_of(pool["outcome"]),
        pool["entropy"].to_numpy(dtype=float),
        pool["similarity"].to_numpy(dtype=float),
        components,
        z_init,
        z_step,
    )
    names = np.array([*COMPONENTS, None], dtype=object)
    return pd.DataFrame({"z_star": z_star, "component": names[component]}, index=pool.index)


def top_per_group(
    group_codes: np.ndarray, keys: np.ndarray, budgets: np.ndarray, tie_breaker: pd.Series | None = None
) -> np.ndarray:
    """Positions of the budgets[g] rows with the highest `keys` in each group g (codes 0..G-1).

    Equal keys at a group's budget boundary are decided by the smaller
    `tie_breaker` value (qid); without one, by the earlier position. Result
    ordered by group code; within a group the order is unspecified.
    """
    if len(group_codes) == 0:
        return np.array([], dtype=np.int64)
    # Rows grouped by code with one stable (radix) sort, then a linear-time
    # partition per group instead of sorting every row by key.
    by_group = np.argsort(group_codes.astype(np.min_scalar_type(int(group_codes.max()))), kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(group_codes, minlength=len(budgets)))]
    chosen = []
    for group in np.flatnonzero(budgets[: len(bounds) - 1] > 0):
        rows = by_group[bounds[group] : bounds[group + 1]]
        budget = int(budgets[group])
        if budget >= len(rows):
            chosen.append(rows)
            continue
        group_keys = keys[rows]
        boundary_key = np.partition(group_keys, len(rows) - budget)[len(rows) - budget]
        above = group_keys > boundary_key
        level = np.flatnonzero(group_keys == boundary_key)
        needed = budget - int(above.sum())
        if len(level) > needed and tie_breaker is not None:
            level = level[np.argsort(tie_breaker.iloc[rows[level]].to_numpy(), kind="stable")]
        chosen.append(rows[above])
        chosen.append(rows[np.sort(level[:needed]) if tie_breaker is None else level[:needed]])
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def art_select(
    pool: pd.DataFrame,
    budgets: Mapping[str, int],
    components: Iterable[str] = COMPONENTS,
    z_init: float = 1.96,
    z_step: float = 0.1,
    seed: int | list[int] = 0,
) -> pd.DataFrame:
    """Select per predicate the B'_p pool rows Alg. 1 would take (DESIGN §6, closed form).

    pool: columns qid (unique), predicate, outcome (TP|FP|FN), entropy,
    similarity (used for FP rows only). budgets: B'_p per predicate
    (missing = 0); a budget above the predicate's pool size takes all of it.

    Returns columns qid, predicate, reason, z_star, ordered by predicate, then
    z* descending, then qid (fill rows, z* = -inf, last). Attached:
    `result.attrs["z_met"]`: for each predicate with a positive budget, the z
    of the loop when its budget is met (`z_at_budget` of the B'_p-th highest
    z*; NaN when the enabled components cannot supply B'_p and random fill is
    used); `result.attrs["taken"]`: {predicate: {reason: count}}.
    Reasons follow the loop: the criterion that first takes a row, in Alg. 1's
    line order at equal z. The fill draws -inf rows uniformly: keys from
    numpy default_rng(seed) given to those rows in qid order, smallest first.
    """
    if z_step <= 0:
        raise ValueError(f"z_step must be > 0, got {z_step}")
    missing = [column for column in POOL_COLUMNS if column not in pool.columns]
    if missing:
        raise ValueError(f"pool lacks columns {missing}")
    enabled = check_components(components)
    outcome = outcome_codes_of(pool["outcome"])
    entropy = pool["entropy"].to_numpy(dtype=float)
    similarity = pool["similarity"].to_numpy(dtype=float)
    if np.isnan(entropy).any():
        raise ValueError("pool has NaN entropy")
    if "t_fp" in enabled and np.isnan(similarity[outcome == OUTCOMES.index("FP")]).any():
        raise ValueError("pool has FP rows with NaN similarity")
    if pool["qid"].duplicated().any():
        raise ValueError("pool has duplicate qids")
    predicate_codes, predicate_names = pd.factorize(pool["predicate"], sort=True)
    budget_array = np.array([int(budgets.get(name, 0)) for name in predicate_names], dtype=np.int64)
    if (budget_array < 0).any():
        raise ValueError("budgets must be >= 0")
    pool_predicates = set(predicate_names)
    unknown_budgets = sorted(name for name, value in budgets.items() if value > 0 and name not in pool_predicates)
    if unknown_budgets:
        raise ValueError(f"budget given for predicates with no pool rows: {unknown_budgets}")

    z_star, component = score_rows(predicate_codes, outcome, entropy, similarity, enabled, z_init, z_step)
    qids = pool["qid"].reset_index(drop=True)
    finite_rows = np.flatnonzero(np.isfinite(z_star))
    chosen_finite = finite_rows[
        top_per_group(predicate_codes[finite_rows], z_star[finite_rows], budget_array, qids.iloc[finite_rows])
    ]
    taken_finite = np.bincount(predicate_codes[chosen_finite], minlength=len(predicate_names))

    # Shortfall: -inf rows drawn uniformly (random keys in qid order, smallest first).
    shortfall = np.maximum(budget_array - taken_finite, 0)
    infinite_rows = np.flatnonzero(~np.isfinite(z_star))
    chosen_fill = np.array([], dtype=np.int64)
    if shortfall.any() and len(infinite_rows):
        infinite_rows = infinite_rows[qids.iloc[infinite_rows].argsort(kind="stable").to_numpy()]
        random_keys = np.random.default_rng(seed).random(len(infinite_rows))
        chosen_fill = infinite_rows[top_per_group(predicate_codes[infinite_rows], -random_keys, shortfall)]

    chosen = np.r_[chosen_finite, chosen_fill]
    chosen_codes = predicate_codes[chosen]
    reason_index = np.r_[component[chosen_finite], np.full(len(chosen_fill), len(COMPONENTS))].astype(np.int64)
    chosen_qids = qids.iloc[chosen]
    # Output order: predicate, z* descending, qid (fill rows, z* = -inf, come last).
    qid_rank = np.empty(len(chosen), dtype=np.int64)
    qid_rank[chosen_qids.argsort(kind="stable").to_numpy()] = np.arange(len(chosen))
    order = np.lexsort((qid_rank, -z_star[chosen], chosen_codes))
    reason_names = np.array([REASONS[name] for name in COMPONENTS] + [FILL], dtype=object)
    result = pd.DataFrame(
        {
            "qid": chosen_qids.to_numpy()[order],
            "predicate": np.asarray(predicate_names, dtype=object)[chosen_codes[order]],
            "reason": reason_names[reason_index[order]],
            "z_star": z_star[chosen[order]],
        }
    )

    # z met: the first grid z below each predicate's lowest taken z* (NaN: fill was needed).
    lowest_taken = np.full(len(predicate_names), np.inf)
    np.minimum.at(lowest_taken, predicate_codes[chosen_finite], z_star[chosen_finite])
    met = (budget_array > 0) & (taken_finite >= budget_array)
    z_values = np.full(len(predicate_names), np.nan)
    if met.any():
        z_values[met] = first_grid_below(lowest_taken[met], z_init, z_step)
    z_met = {str(predicate_names[code]): float(z_values[code]) for code in np.flatnonzero(budget_array > 0)}
    counts = np.bincount(chosen_codes * (len(COMPONENTS) + 1) + reason_index,
                         minlength=len(predicate_names) * (len(COMPONENTS) + 1)).reshape(len(predicate_names), len(COMPONENTS) + 1)
    taken = {
        str(predicate_names[code]): {str(reason_names[index]): int(counts[code, index]) for index in np.flatnonzero(counts[code])}
        for code in np.flatnonzero(counts.sum(axis=1))
    }
    result.attrs["z_met"] = dict(sorted(z_met.items()))
    result.attrs["taken"] = dict(sorted(taken.items()))
    return result
