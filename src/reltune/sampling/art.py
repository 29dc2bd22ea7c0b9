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

Speed (a 100,000-row pool in a few ms, see benchmarks/select_pool.py): the
pool is read as numpy arrays once (string columns through their Arrow
buffers, see string_keys), the statistics need one radix sort by group and
a sort per group, and only rows that can be among a predicate's B'_p highest
z* are scored and ranked (`top_candidates`); qid strings are compared only
to break ties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reltune.sampling.string_keys import has_duplicates, short_string_keys

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
# Alg. 1's z schedule: start at the 97.5% normal quantile, lower by 0.1 until the budget is met.
Z_INIT = 1.96
Z_STEP = 0.1
# Scored values within this bound cannot overflow mu, sigma or z*, so every scored z* is finite.
FAST_PATH_LARGEST_VALUE = 1e100


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
    steps = (z_init - scores) / z_step
    if (np.isnan(steps) | (steps > 2.0**62)).any():
        # The loop would never get there (and k would overflow int64): values far out of range.
        raise ValueError(f"z* too far below z_init={z_init} for the loop to reach (entropy or similarity out of range?)")
    k = np.maximum(0, np.floor(steps)).astype(np.int64)
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


def group_moments(grouped_values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) per group: `group_statistics` of each; sorts each group's slice of `grouped_values` in place.

    `grouped_values` holds group 0's values, then group 1's, ... (counts[g]
    each). Each sum is numpy's over the group's contiguous ascending slice:
    the same pairwise summation as np.sum on the group alone, so the results
    are bit-identical (np.add.reduceat sums sequentially and would not be).
    """
    means = np.zeros(len(counts))
    sigmas = np.ones(len(counts))
    ends = np.cumsum(counts)
    # Plain ints for the loops (numpy scalars index more slowly); groups of < 2 keep mu 0, sigma 1.
    spans = [(group, int(ends[group] - counts[group]), int(ends[group])) for group in np.flatnonzero(counts >= 2).tolist()]
    for group, start, end in spans:
        segment = grouped_values[start:end]
        segment.sort()
        means[group] = float(np.add.reduce(segment)) / (end - start)
    squared = (grouped_values - np.repeat(means, counts)) ** 2
    for group, start, end in spans:
        sigmas[group] = math.sqrt(float(np.add.reduce(squared[start:end])) / (end - start)) + SIGMA_EPSILON
    return means, sigmas


@dataclass(frozen=True)
class PoolStatistics:
    """The DESIGN §6 statistics of a pool, per group g = predicate code * 3 + outcome code.

    Per row: `groups` and `values` (entropy; similarity for FP). Per group:
    `means`, `sigmas`, and its values in ascending order,
    `sorted_values[group_bounds[g] : group_bounds[g + 1]]`.
    """

    groups: np.ndarray
    values: np.ndarray
    sorted_values: np.ndarray
    group_bounds: np.ndarray
    means: np.ndarray
    sigmas: np.ndarray


def pool_statistics(
    predicate_codes: np.ndarray, outcome_codes: np.ndarray, entropy: np.ndarray, similarity: np.ndarray
) -> PoolStatistics:
    """mu and sigma of every (predicate, outcome) group, its rows gathered by one (radix) sort."""
    values = np.where(outcome_codes == OUTCOMES.index("FP"), similarity, entropy)
    groups = predicate_codes.astype(np.int64) * len(OUTCOMES) + outcome_codes
    group_count = (int(predicate_codes.max()) + 1) * len(OUTCOMES) if len(groups) else 0
    sorted_values = values[np.argsort(groups.astype(np.min_scalar_type(group_count)), kind="stable")]
    counts = np.bincount(groups, minlength=group_count)
    means, sigmas = group_moments(sorted_values, counts)
    return PoolStatistics(groups, values, sorted_values, np.r_[0, np.cumsum(counts)], means, sigmas)


def scored_outcomes(enabled: tuple[str, ...]) -> np.ndarray:
    """Per outcome code (OUTCOMES order): whether an enabled component scores it."""
    return np.array(["h_tp" in enabled, "t_fp" in enabled, "h_fn" in enabled or "t_fn" in enabled])


def value_scores(
    values: np.ndarray, groups: np.ndarray, statistics: PoolStatistics, enabled: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z* of values in their groups, with the h_fn and t_fn scores (FN entries; -inf where disabled).

    Elementwise, so a row gets the same z* whichever other rows are scored with it.
    """
    mean, sigma = statistics.means[groups], statistics.sigmas[groups]
    high = (values - mean) / sigma  # h_tp, h_fn
    low = (mean - values) / sigma  # t_fn, t_fp
    outcome = groups % len(OUTCOMES)
    # TP and FN take `high`, FP `low`; FN rows then take the larger of their two enabled scores.
    z_star = np.where(outcome == OUTCOMES.index("FP"), low, high)
    is_fn = outcome == OUTCOMES.index("FN")
    fn_high = np.where(is_fn, high if "h_fn" in enabled else -np.inf, -np.inf)
    fn_low = np.where(is_fn, low if "t_fn" in enabled else -np.inf, -np.inf)
    z_star = np.where(is_fn, np.maximum(fn_high, fn_low), z_star)
    unscored = ~scored_outcomes(enabled)
    if unscored.any():
        z_star[unscored[outcome]] = -np.inf
    return z_star, fn_high, fn_low


def row_scores(
    rows: np.ndarray, statistics: PoolStatistics, enabled: tuple[str, ...], z_init: float, z_step: float
) -> tuple[np.ndarray, np.ndarray]:
    """z* and component index (-1: none) of the given rows."""
    groups = statistics.groups[rows]
    z_star, fn_high, fn_low = value_scores(statistics.values[rows], groups, statistics, enabled)
    outcome = groups % len(OUTCOMES)
    component_of = np.full(len(OUTCOMES), -1, dtype=np.int8)
    for outcome_name, name in (("TP", "h_tp"), ("FP", "t_fp"), ("FN", "t_fn")):
        component_of[OUTCOMES.index(outcome_name)] = COMPONENTS.index(name) if name in enabled else -1
    if "h_fn" in enabled:
        component_of[OUTCOMES.index("FN")] = COMPONENTS.index("t_fn")
    component = component_of[outcome]
    if "h_fn" in enabled:
        # The loop takes the row at the first grid z below its z*; if h_fn also
        # fires at that z (possible for rows near the mean once z < 0), h_fn
        # took it, being tested first (Alg. 1 line 27 before 28). Where the
        # h_fn score is the larger (always, for non-FN entries) it is z* itself.
        h_fn_takes = outcome == OUTCOMES.index("FN")
        low_wins = np.flatnonzero(h_fn_takes & (fn_high < fn_low))
        h_fn_takes[low_wins] = fn_high[low_wins] > first_grid_below(fn_low[low_wins], z_init, z_step)
        component[h_fn_takes] = COMPONENTS.index("h_fn")
    return z_star, component


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

    outcome_codes index OUTCOMES (0 TP, 1 FP, 2 FN); rows of an outcome no
    enabled component scores get -inf.
    """
    enabled = check_components(components)
    statistics = pool_statistics(predicate_codes, outcome_codes, entropy, similarity)
    return row_scores(np.arange(len(outcome_codes)), statistics, enabled, z_init, z_step)


def outcome_codes_of(outcome: pd.Series) -> np.ndarray:
    """Index into OUTCOMES per row (ValueError naming values outside TP/FP/FN)."""
    codes = short_string_keys(outcome, OUTCOMES)
    if codes is not None and (codes >= 0).all():
        return codes
    # Other storage, or a bad value to name: the general path.
    codes, values = pd.factorize(outcome)
    unknown = sorted(str(value) for value in values if value not in OUTCOMES)
    if unknown or (codes < 0).any():
        raise ValueError(f"pool outcomes must be TP, FP or FN, got {unknown or ['missing']}")
    mapping = np.array([OUTCOMES.index(value) for value in values], dtype=np.int8)
    return mapping[codes] if len(codes) else codes.astype(np.int8)


def predicate_codes_of(predicate: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes into the sorted predicate names (ValueError on a missing predicate)."""
    codes, names = pd.factorize(predicate, sort=True)
    if (codes < 0).any():
        raise ValueError(f"pool row {int(np.flatnonzero(codes < 0)[0])} has no predicate")
    return codes, names


def art_scores(
    pool: pd.DataFrame, components: Iterable[str] = COMPONENTS, z_init: float = Z_INIT, z_step: float = Z_STEP
) -> pd.DataFrame:
    """z* and the component that takes each pool row (same row order as `pool`).

    Returns columns `z_star` (float, -inf when no enabled component applies)
    and `component` (one of COMPONENTS, or None).
    """
    predicate_codes, _ = predicate_codes_of(pool["predicate"])
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


def top_per_group(group_codes: np.ndarray, keys: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Positions of the budgets[g] rows with the highest `keys` in each group g (codes 0..G-1).

    Equal keys at a group's budget boundary are decided by the earlier
    position. Result ordered by group code; within a group the order is
    unspecified.
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
        chosen.append(rows[above])
        chosen.append(rows[level[: budget - int(above.sum())]])
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def qid_order(qids: pd.Series, positions: np.ndarray) -> np.ndarray:
    """Indices that sort qids[positions] (qids are unique, so the order is total)."""
    return qids.iloc[positions].argsort(kind="stable").to_numpy()


def ranked_per_group(
    rows: np.ndarray, group_codes: np.ndarray, scores: np.ndarray, budgets: np.ndarray, qids: pd.Series
) -> np.ndarray:
    """Of `rows`, the budgets[g] with the highest `scores` per group g, ordered by (g, score desc, qid).

    One sort by score, then a stable radix sort by group; only runs of equal
    (group, score) that reach into a group's budget are then ordered by qid,
    so qid strings are read for ties alone.
    """
    order = rows[np.argsort(-scores[rows])]
    order = order[np.argsort(group_codes[order].astype(np.min_scalar_type(len(budgets))), kind="stable")]
    ordered_groups, ordered_scores = group_codes[order], scores[order]
    group_starts = np.r_[0, np.cumsum(np.bincount(ordered_groups, minlength=len(budgets)))[:-1]]
    rank_in_group = np.arange(len(order)) - group_starts[ordered_groups]
    ties_previous = np.r_[False, (ordered_groups[1:] == ordered_groups[:-1]) & (ordered_scores[1:] == ordered_scores[:-1])]
    if ties_previous.any():
        run_of = np.cumsum(~ties_previous) - 1
        run_starts = np.flatnonzero(~ties_previous)
        run_lengths = np.diff(np.r_[run_starts, len(order)])
        run_matters = (run_lengths > 1) & (rank_in_group[run_starts] < budgets[ordered_groups[run_starts]])
        tied = np.flatnonzero(run_matters[run_of])
        if len(tied):
            # Sorting by (run, qid) keeps each run in place and orders it by qid.
            qid_rank = np.empty(len(tied), dtype=np.int64)
            qid_rank[qid_order(qids, order[tied])] = np.arange(len(tied))
            order[tied] = order[tied][np.lexsort((qid_rank, run_of[tied]))]
    return order[rank_in_group < budgets[ordered_groups]]


def top_candidates(
    statistics: PoolStatistics, predicate_codes: np.ndarray, budgets: np.ndarray, enabled: tuple[str, ...]
) -> np.ndarray:
    """Rows that may be among the budgets[p] highest z* of their predicate p: a small superset.

    Needs finite z* on every scored row. Within a (predicate, outcome) group
    z* rises with the value for TP, falls for FP, and for FN is the larger of
    a rising and a falling score (rounding keeps each monotone). So a row
    below the group's B-th highest value (TP), above its B-th lowest (FP) or
    between the two (FN) has B rows of the group kept at or above its z*: it
    can only be taken in a tie at the predicate's B-th highest kept z*. The
    highest z* a dropped row can have is that of the values next to the
    cuts; where it reaches that boundary, the predicate's rows with the
    boundary z* are added.
    """
    group_starts, group_ends = statistics.group_bounds[:-1], statistics.group_bounds[1:]
    group_ids = np.arange(len(group_starts))
    outcome_of_group = group_ids % len(OUTCOMES)
    predicate_of_group = group_ids // len(OUTCOMES)
    # Groups of an unscored outcome or a predicate without budget keep nothing.
    widths = np.minimum(budgets[predicate_of_group], group_ends - group_starts)
    widths[~scored_outcomes(enabled)[outcome_of_group]] = 0
    takes_low = (widths > 0) & (outcome_of_group != OUTCOMES.index("TP"))  # FP, FN: the lowest values
    takes_high = (widths > 0) & (outcome_of_group != OUTCOMES.index("FP"))  # TP, FN: the highest values
    # NaN cuts compare False, so groups that keep nothing pass no row, whatever its value.
    low_cut = np.full(len(group_ids), np.nan)
    high_cut = np.full(len(group_ids), np.nan)
    low_cut[takes_low] = statistics.sorted_values[(group_starts + widths - 1)[takes_low]]
    high_cut[takes_high] = statistics.sorted_values[(group_ends - widths)[takes_high]]
    values, groups = statistics.values, statistics.groups
    kept = (values <= low_cut[groups]) | (values >= high_cut[groups])
    candidates = np.flatnonzero(kept)

    # The predicate's B-th highest kept z* (NaN: fewer kept than B, so every scored row is kept).
    candidate_scores, _, _ = value_scores(values[candidates], groups[candidates], statistics, enabled)
    order = np.argsort(-candidate_scores)
    order = order[np.argsort(predicate_codes[candidates[order]], kind="stable")]
    ordered_codes = predicate_codes[candidates[order]]
    rank_in_group = np.arange(len(order)) - np.searchsorted(ordered_codes, ordered_codes)
    at_boundary = rank_in_group == budgets[ordered_codes] - 1
    boundary = np.full(len(budgets), np.nan)
    boundary[ordered_codes[at_boundary]] = candidate_scores[order[at_boundary]]

    # The values just inside the cuts, where the group has rows left out.
    below_high = takes_high & (group_ends - widths - 1 >= group_starts + np.where(takes_low, widths, 0))
    above_low = takes_low & (group_starts + widths <= group_ends - np.where(takes_high, widths, 0) - 1)
    next_groups = np.r_[group_ids[below_high], group_ids[above_low]]
    next_values = statistics.sorted_values[np.r_[(group_ends - widths - 1)[below_high], (group_starts + widths)[above_low]]]
    next_scores, _, _ = value_scores(next_values, next_groups, statistics, enabled)
    reach = np.full(len(budgets), -np.inf)
    np.maximum.at(reach, predicate_of_group[next_groups], next_scores)
    tied_predicates = np.flatnonzero(reach >= boundary)  # NaN boundaries compare False
    if len(tied_predicates):
        # Rare: a dropped row may tie the boundary; add every row of the predicate that does.
        rows = np.flatnonzero(np.isin(predicate_codes, tied_predicates) & ~kept)
        scores, _, _ = value_scores(values[rows], groups[rows], statistics, enabled)
        candidates = np.union1d(candidates, rows[scores == boundary[predicate_codes[rows]]])
    return candidates


def art_select(
    pool: pd.DataFrame,
    budgets: Mapping[str, int],
    components: Iterable[str] = COMPONENTS,
    z_init: float = Z_INIT,
    z_step: float = Z_STEP,
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
    enabled = check_components(components)
    arrays = art_pool(pool, enabled)
    budget_array = budget_per_code(budgets, arrays.predicate_names)
    z_star, component, chosen_finite, infinite_rows = adaptive_rows(arrays, budget_array, enabled, z_init, z_step)
    chosen = with_fill(arrays, chosen_finite, infinite_rows, budget_array, seed)
    reason_index = np.where(np.isfinite(z_star[chosen]), component[chosen], len(COMPONENTS)).astype(np.int64)
    result = selection_table(arrays, chosen, reason_index, z_star[chosen])
    result.attrs["z_met"] = z_met_per_predicate(arrays, chosen_finite, z_star, budget_array, z_init, z_step)
    result.attrs["taken"] = taken_per_predicate(arrays, chosen, reason_index)
    return result


@dataclass(frozen=True)
class ArtPool:
    """A pool's columns as arrays (art_select's input, validated)."""

    qids: pd.Series
    predicate_codes: np.ndarray  # index into predicate_names (sorted)
    predicate_index: pd.Index
    predicate_names: list  # plain Python values: cheap to index one by one
    outcome: np.ndarray  # index into OUTCOMES
    entropy: np.ndarray
    similarity: np.ndarray


def art_pool(pool: pd.DataFrame, enabled: tuple[str, ...]) -> ArtPool:
    """The pool's arrays; ValueError on a missing column, NaN entropy, FP without similarity or a duplicate qid."""
    missing = [column for column in POOL_COLUMNS if column not in pool.columns]
    if missing:
        raise ValueError(f"pool lacks columns {missing}")
    outcome = outcome_codes_of(pool["outcome"])
    entropy = pool["entropy"].to_numpy(dtype=float)
    similarity = pool["similarity"].to_numpy(dtype=float)
    if np.isnan(entropy).any():
        raise ValueError("pool has NaN entropy")
    if "t_fp" in enabled and (np.isnan(similarity) & (outcome == OUTCOMES.index("FP"))).any():
        raise ValueError("pool has FP rows with NaN similarity")
    qids = pool["qid"].reset_index(drop=True)
    if has_duplicates(qids):
        raise ValueError("pool has duplicate qids")
    predicate_codes, predicate_index = predicate_codes_of(pool["predicate"])
    return ArtPool(qids, predicate_codes, predicate_index, predicate_index.tolist(), outcome, entropy, similarity)


def budget_per_code(budgets: Mapping[str, int], predicate_names: list) -> np.ndarray:
    """B'_p per predicate code; ValueError on a negative budget or one for a predicate without pool rows."""
    budget_array = np.array([int(budgets.get(name, 0)) for name in predicate_names], dtype=np.int64)
    if (budget_array < 0).any():
        raise ValueError("budgets must be >= 0")
    pool_predicates = set(predicate_names)
    unknown_budgets = sorted(name for name, value in budgets.items() if value > 0 and name not in pool_predicates)
    if unknown_budgets:
        raise ValueError(f"budget given for predicates with no pool rows: {unknown_budgets}")
    return budget_array


def adaptive_rows(
    arrays: ArtPool, budget_array: np.ndarray, enabled: tuple[str, ...], z_init: float, z_step: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z* per row, component per row, rows taken by z* in output order, rows only the fill can take)."""
    statistics = pool_statistics(arrays.predicate_codes, arrays.outcome, arrays.entropy, arrays.similarity)
    scored_rows = scored_outcomes(enabled)[arrays.outcome]
    fast = bool(((np.abs(statistics.values) <= FAST_PATH_LARGEST_VALUE) | ~scored_rows).all())
    # Every scored z* is finite on the fast path: score only the rows that can be taken.
    candidates = (
        top_candidates(statistics, arrays.predicate_codes, budget_array, enabled) if fast else np.arange(len(arrays.outcome))
    )
    z_star = np.full(len(arrays.outcome), -np.inf)
    component = np.full(len(arrays.outcome), -1, dtype=np.int8)
    z_star[candidates], component[candidates] = row_scores(candidates, statistics, enabled, z_init, z_step)
    candidates = candidates[np.isfinite(z_star[candidates]) & (budget_array[arrays.predicate_codes[candidates]] > 0)]
    # Already in output order: predicate, z* descending, qid.
    chosen_finite = ranked_per_group(candidates, arrays.predicate_codes, z_star, budget_array, arrays.qids)
    infinite_rows = np.flatnonzero(~scored_rows if fast else ~np.isfinite(z_star))
    return z_star, component, chosen_finite, infinite_rows


def with_fill(
    arrays: ArtPool, chosen_finite: np.ndarray, infinite_rows: np.ndarray, budget_array: np.ndarray, seed: int | list[int]
) -> np.ndarray:
    """The adaptive rows plus a predicate's shortfall drawn uniformly from its -inf rows (random keys in qid order)."""
    taken_finite = np.bincount(arrays.predicate_codes[chosen_finite], minlength=len(arrays.predicate_names))
    shortfall = np.maximum(budget_array - taken_finite, 0)
    if not (shortfall.any() and len(infinite_rows)):
        return chosen_finite
    infinite_rows = infinite_rows[qid_order(arrays.qids, infinite_rows)]
    random_keys = np.random.default_rng(seed).random(len(infinite_rows))
    chosen_fill = infinite_rows[top_per_group(arrays.predicate_codes[infinite_rows], -random_keys, shortfall)]
    # Fill rows go after their predicate's adaptive rows, in qid order.
    chosen = np.r_[chosen_finite, chosen_fill[qid_order(arrays.qids, chosen_fill)]]
    return chosen[np.argsort(arrays.predicate_codes[chosen], kind="stable")]


REASON_NAMES = np.array([REASONS[name] for name in COMPONENTS] + [FILL], dtype=object)  # by reason index


def selection_table(arrays: ArtPool, chosen: np.ndarray, reason_index: np.ndarray, z_star: np.ndarray) -> pd.DataFrame:
    """Columns qid, predicate, reason, z_star of the chosen rows."""
    chosen_codes = arrays.predicate_codes[chosen]
    qids, predicate_index = arrays.qids, arrays.predicate_index
    # Columns of pandas' str dtype stay in Arrow; built from Python strings, the
    # constructor would infer that same dtype (for a non-empty table) at more cost.
    in_arrow = len(chosen) > 0
    return pd.DataFrame(
        {
            "qid": qids.array.take(chosen) if in_arrow and qids.dtype == "str" else qids.iloc[chosen].to_numpy(),
            "predicate": predicate_index.array.take(chosen_codes)
            if in_arrow and predicate_index.dtype == "str"
            else np.asarray(arrays.predicate_names, dtype=object)[chosen_codes],
            "reason": pd.array(REASON_NAMES, dtype="str").take(reason_index) if in_arrow else REASON_NAMES[reason_index],
            "z_star": z_star,
        }
    )


def z_met_per_predicate(
    arrays: ArtPool, chosen_finite: np.ndarray, z_star: np.ndarray, budget_array: np.ndarray, z_init: float, z_step: float
) -> dict[str, float]:
    """Per predicate with a budget: the first grid z below its lowest taken z* (NaN: fill was needed)."""
    names = arrays.predicate_names
    codes = arrays.predicate_codes[chosen_finite]
    lowest_taken = np.full(len(names), np.inf)
    np.minimum.at(lowest_taken, codes, z_star[chosen_finite])
    met = (budget_array > 0) & (np.bincount(codes, minlength=len(names)) >= budget_array)
    z_values = np.full(len(names), np.nan)
    if met.any():
        z_values[met] = first_grid_below(lowest_taken[met], z_init, z_step)
    return dict(sorted({str(names[code]): float(z_values[code]) for code in np.flatnonzero(budget_array > 0)}.items()))


def taken_per_predicate(arrays: ArtPool, chosen: np.ndarray, reason_index: np.ndarray) -> dict[str, dict[str, int]]:
    """{predicate: {reason: count}} of the chosen rows."""
    names, width = arrays.predicate_names, len(COMPONENTS) + 1
    counts = np.bincount(arrays.predicate_codes[chosen] * width + reason_index, minlength=len(names) * width)
    counts = counts.reshape(len(names), width)
    taken = {
        str(names[code]): {str(REASON_NAMES[index]): int(counts[code, index]) for index in np.flatnonzero(counts[code])}
        for code in np.flatnonzero(counts.sum(axis=1))
    }
    return dict(sorted(taken.items()))
