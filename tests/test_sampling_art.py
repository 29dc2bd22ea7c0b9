"""ART selection: closed form vs a literal Alg. 1 loop, and hand-computed edge cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reltune.sampling import art_scores, art_select, z_at_budget

ALL = ("h_tp", "h_fn", "t_fn", "t_fp")
REASON = {"h_tp": "tp_high_entropy", "h_fn": "fn_high_entropy", "t_fn": "fn_low_entropy", "t_fp": "fp_low_similarity"}


def stats(values):
    """DESIGN §6: population mean / std + 1e-6 (summed in ascending order); < 2 values: 0, 1."""
    if len(values) < 2:
        return 0.0, 1.0
    ordered = np.sort(np.asarray(values, dtype=float))
    mean = float(np.sum(ordered)) / len(ordered)
    return mean, math.sqrt(float(np.sum((ordered - mean) ** 2)) / len(ordered)) + 1e-6


def literal_algorithm_1(pool: pd.DataFrame, budgets: dict, components=ALL, z_init=1.96, z_step=0.1):
    """Alg. 1 step 2 as printed, per predicate, with the overshoot trimmed by lowest z* (ties: higher qid goes).

    Returns ({qid: reason} of the threshold picks, {predicate: z met or nan},
    {predicate: (shortfall, qids no enabled criterion can take)}).
    """
    picks, z_met, shortfall = {}, {}, {}
    for predicate, budget in budgets.items():
        if budget <= 0:
            continue
        rows = list(pool[pool["predicate"] == predicate].itertuples())
        tp = [(r.qid, r.entropy) for r in rows if r.outcome == "TP"]
        fn = [(r.qid, r.entropy) for r in rows if r.outcome == "FN"]
        fp = [(r.qid, r.similarity) for r in rows if r.outcome == "FP"]
        mu_tp, sd_tp = stats([h for _, h in tp])
        mu_fn, sd_fn = stats([h for _, h in fn])
        mu_fp, sd_fp = stats([s for _, s in fp])
        criteria = []  # (component, group, test at threshold z, z* of a value), in Alg. 1 line order
        if "h_tp" in components:
            criteria.append(("h_tp", tp, lambda v, z: v > mu_tp + z * sd_tp, lambda v: (v - mu_tp) / sd_tp))
        if "h_fn" in components:
            criteria.append(("h_fn", fn, lambda v, z: v > mu_fn + z * sd_fn, lambda v: (v - mu_fn) / sd_fn))
        if "t_fn" in components:
            criteria.append(("t_fn", fn, lambda v, z: v < mu_fn - z * sd_fn, lambda v: (mu_fn - v) / sd_fn))
        if "t_fp" in components:
            criteria.append(("t_fp", fp, lambda v, z: v < mu_fp - z * sd_fp, lambda v: (mu_fp - v) / sd_fp))
        z_star = {}
        for _, group, _, score in criteria:
            for qid, value in group:
                z_star[qid] = max(z_star.get(qid, -math.inf), score(value))
        taken: dict[str, str] = {}  # qid -> component that took it first
        k = 0
        while len(taken) < budget:
            z = z_init - k * z_step
            for component, group, passes, _ in criteria:
                for qid, value in group:
                    if qid not in taken and passes(value, z):
                        taken[qid] = component
            if len(taken) < budget:
                if len(taken) == len(z_star):  # every row an enabled criterion could take is in
                    break
                k += 1
        z_met[predicate] = z if len(taken) >= budget else math.nan
        never = {r.qid for r in rows} - set(z_star)
        shortfall[predicate] = (max(0, budget - len(taken)), never)
        ranked = sorted(taken, key=lambda qid: (-z_star[qid], qid))[:budget]
        picks.update({qid: REASON[taken[qid]] for qid in ranked})
    return picks, z_met, shortfall


@st.composite
def pools(draw):
    predicates = draw(st.lists(st.sampled_from(["on", "has", "near", "of"]), min_size=1, max_size=3, unique=True))
    size = draw(st.integers(1, 40))
    rows = []
    for index in range(size):
        outcome = draw(st.sampled_from(["TP", "FN", "FP"]))
        entropy = draw(st.floats(0, 6, allow_nan=False, allow_infinity=False))
        similarity = draw(st.floats(-1, 1, allow_nan=False)) if outcome == "FP" else np.nan
        rows.append((f"q{draw(st.integers(0, 10**6)):07d}-{index}", draw(st.sampled_from(predicates)), outcome, entropy, similarity))
    pool = pd.DataFrame(rows, columns=["qid", "predicate", "outcome", "entropy", "similarity"])
    budgets = {p: draw(st.integers(0, 45)) for p in pool["predicate"].unique()}
    components = draw(st.sampled_from([c for r in range(1, 5) for c in itertools.combinations(ALL, r)]))
    return pool, budgets, components


@settings(max_examples=250, deadline=None)
@given(pools(), st.integers(0, 3))
def test_art_select_equals_literal_algorithm_1(case, seed):
    pool, budgets, components = case
    result = art_select(pool, budgets, components=components, seed=seed)
    picks, z_met, shortfall = literal_algorithm_1(pool, budgets, components)

    adaptive = result[result["reason"] != "fill"]
    assert dict(zip(adaptive["qid"], adaptive["reason"])) == picks
    assert not result["qid"].duplicated().any()
    assert set(result["qid"]) <= set(pool["qid"])
    for predicate, budget in budgets.items():
        if budget == 0:
            continue
        expected_z = z_met[predicate]
        got_z = result.attrs["z_met"][predicate]
        assert (math.isnan(expected_z) and math.isnan(got_z)) or got_z == expected_z
        fill = result[(result["reason"] == "fill") & (result["predicate"] == predicate)]
        missing, never_taken = shortfall[predicate]
        assert len(fill) == min(missing, len(never_taken))
        assert set(fill["qid"]) <= never_taken
        assert len(result[result["predicate"] == predicate]) == min(budget, int((pool["predicate"] == predicate).sum()))


def pool_table(rows):
    return pd.DataFrame(rows, columns=None if isinstance(rows, dict) else ["qid", "predicate", "outcome", "entropy", "similarity"])


HAND_POOL = pool_table(
    [
        ("q1", "on", "TP", 0.2, np.nan),  # TP: mu .6, sd .3266 -> z* -1.2247
        ("q2", "on", "TP", 0.6, np.nan),  #                       z*  0
        ("q3", "on", "TP", 1.0, np.nan),  #                       z* +1.2247
        ("q4", "on", "FN", 0.5, np.nan),  # FN: mu 1, sd .5 -> t_fn .999998
        ("q5", "on", "FN", 1.5, np.nan),  #                  h_fn .999998 (tie with q4)
        ("q6", "on", "FP", 0.2, 0.9),  # FP group of one: mu 0, sd 1 -> z* -0.9
    ]
)


def test_art_select_by_hand_with_tie_broken_by_qid():
    result = art_select(HAND_POOL, {"on": 3})
    assert list(result["qid"]) == ["q3", "q4", "q5"]
    assert list(result["reason"]) == ["tp_high_entropy", "fn_low_entropy", "fn_high_entropy"]
    assert result["z_star"].tolist() == pytest.approx([0.4 / (math.sqrt(0.32 / 3) + 1e-6), 0.5 / 0.500001, 0.5 / 0.500001], rel=1e-12)
    assert result.attrs["z_met"]["on"] == pytest.approx(0.96)  # first grid z below .999998
    assert result.attrs["taken"]["on"] == {"tp_high_entropy": 1, "fn_low_entropy": 1, "fn_high_entropy": 1}

    deeper = art_select(HAND_POOL, {"on": 5})
    assert list(deeper["qid"]) == ["q3", "q4", "q5", "q2", "q6"]
    assert deeper.attrs["z_met"]["on"] == pytest.approx(-0.94)  # 5th score -0.9; grid 1.96 - 29 * .1


def test_disabled_components_leave_only_random_fill():
    result = art_select(HAND_POOL, {"on": 3}, components=("h_fn",), seed=5)
    assert list(result["qid"][:2]) == ["q5", "q4"]  # h_fn scores +.999998, -.999998
    assert list(result["reason"]) == ["fn_high_entropy", "fn_high_entropy", "fill"]
    assert result["qid"].iloc[2] in {"q1", "q2", "q3", "q6"}
    assert math.isinf(result["z_star"].iloc[2])
    assert math.isnan(result.attrs["z_met"]["on"])
    fills = {art_select(HAND_POOL, {"on": 3}, components=("h_fn",), seed=s)["qid"].iloc[2] for s in range(20)}
    assert len(fills) > 1  # the fill is seeded random, not a fixed rule
    again = art_select(HAND_POOL.iloc[::-1], {"on": 3}, components=("h_fn",), seed=5)
    assert list(again["qid"]) == list(result["qid"])  # row order of the pool does not matter


def test_zero_variance_and_empty_groups():
    # Only FN rows, all equal: sd = 1e-6, every z* = 0 -> ties by qid, z met = -0.04.
    pool = pool_table([("b", "on", "FN", 0.4, np.nan), ("a", "on", "FN", 0.4, np.nan), ("c", "on", "FN", 0.4, np.nan)])
    result = art_select(pool, {"on": 2})
    assert list(result["qid"]) == ["a", "b"]
    assert result["z_star"].abs().max() < 1e-6
    assert result.attrs["z_met"]["on"] == pytest.approx(-0.04)


def test_group_of_one_uses_mu_zero_sigma_one():
    pool = pool_table([("a", "on", "TP", 0.7, np.nan), ("b", "on", "FP", 0.1, -0.3), ("c", "has", "FN", 2.5, np.nan)])
    result = art_select(pool, {"on": 2, "has": 1})
    assert list(result["qid"]) == ["c", "a", "b"]  # has first (alphabetical), then on by z*
    assert result["z_star"].tolist() == pytest.approx([2.5, 0.7, 0.3])
    assert result.attrs["z_met"] == {"has": 1.96, "on": pytest.approx(0.26)}


def test_pool_smaller_than_budget_takes_all_and_reports_unmet():
    pool = pool_table([("a", "on", "TP", 0.7, np.nan), ("b", "on", "TP", 0.1, np.nan)])
    result = art_select(pool, {"on": 5})
    assert sorted(result["qid"]) == ["a", "b"]
    assert math.isnan(result.attrs["z_met"]["on"])


def test_zero_budget_and_bad_input():
    assert art_select(HAND_POOL, {"on": 0}).empty
    with pytest.raises(ValueError, match="outcomes"):
        art_select(HAND_POOL.assign(outcome=["TP", "TP", "XX", "FN", "FN", "FP"]), {"on": 1})
    with pytest.raises(ValueError, match="duplicate"):
        art_select(pd.concat([HAND_POOL, HAND_POOL.iloc[:1]]), {"on": 1})
    with pytest.raises(ValueError, match="NaN entropy"):
        art_select(HAND_POOL.assign(entropy=[0.1, np.nan, 0.3, 0.4, 0.5, 0.6]), {"on": 1})
    with pytest.raises(ValueError, match="no pool rows"):
        art_select(HAND_POOL, {"has": 1})


@settings(max_examples=200, deadline=None)
@given(st.floats(-50, 50, allow_nan=False), st.sampled_from([1.96, 1.0, 0.5]), st.sampled_from([0.1, 0.05, 0.3]))
def test_z_at_budget_is_the_first_grid_point_below_the_score(score, z_init, z_step):
    z = z_at_budget(score, z_init, z_step)
    k = 0
    while not z_init - k * z_step < score and score <= z_init:
        k += 1
    assert z == (z_init if score > z_init else z_init - k * z_step)


def test_fn_exactly_at_the_mean_counts_as_high_entropy():
    # mu_FN = 0.6 exactly: both FN criteria fire at the same z for "m"; line 27 (h_fn) comes first.
    pool = pool_table([("lo", "on", "FN", 0.2, np.nan), ("m", "on", "FN", 0.6, np.nan), ("hi", "on", "FN", 1.0, np.nan)])
    result = art_select(pool, {"on": 3})
    assert dict(zip(result["qid"], result["reason"])) == {
        "hi": "fn_high_entropy",
        "lo": "fn_low_entropy",
        "m": "fn_high_entropy",
    }
    assert list(result["qid"]) == ["hi", "lo", "m"]  # hi and lo tie at z* 1.2247; qid order


def test_fn_just_below_the_mean_is_taken_by_h_fn_when_both_fire_at_the_same_z():
    # FN mu .4967, sd .4083: "m" has t-score +.0163 and h-score -.0163. With z from
    # 1.96 the first z below .0163 is -.04, where H > mu - .04 sd holds too, and
    # line 27 (h_fn) is tested before line 28 -> fn_high_entropy.
    pool = pool_table([("lo", "on", "FN", 0.0, np.nan), ("m", "on", "FN", 0.49, np.nan), ("hi", "on", "FN", 1.0, np.nan)])
    assert dict(zip(*art_select(pool, {"on": 3})[["qid", "reason"]].T.values))["m"] == "fn_high_entropy"
    # From z_init 1.0 the grid has z = 0, where only t_fn fires -> fn_low_entropy.
    result = art_select(pool, {"on": 3}, z_init=1.0)
    assert dict(zip(result["qid"], result["reason"]))["m"] == "fn_low_entropy"
    assert result.attrs["z_met"]["on"] == 0.0


def test_group_moments_match_group_statistics_bit_for_bit():
    from reltune.sampling.art import group_moments, group_statistics

    rng = np.random.default_rng(3)
    groups = [rng.gamma(2.0, 0.3, size) for size in (0, 1, 2, 7, 130, 1000)]
    means, sigmas = group_moments(np.concatenate(groups), np.array([len(group) for group in groups]))
    for group, mean, sigma in zip(groups, means, sigmas):
        assert (mean, sigma) == group_statistics(group)  # exact: same pairwise sums over the same order
    assert (means[1], sigmas[1]) == (0.0, 1.0)  # one row: mu 0, sigma 1


def brute_force_selection(pool, budgets, components):
    """Per predicate the B highest finite z* by (z* desc, qid), from art_scores over every row."""
    scores = pd.concat([pool.reset_index(drop=True), art_scores(pool, components).reset_index(drop=True)], axis=1)
    scores = scores[np.isfinite(scores["z_star"])]
    scores = scores.assign(negative=-scores["z_star"]).sort_values(["predicate", "negative", "qid"])
    taken = scores.groupby("predicate").head(0)
    for predicate, budget in budgets.items():
        taken = pd.concat([taken, scores[scores["predicate"] == predicate].head(budget)])
    return list(taken["qid"]), [REASON[c] for c in taken["component"]]


@pytest.mark.parametrize(
    "values, components",
    [
        ("quantised", ALL),  # many exact ties at the budget boundary, also just outside the kept windows
        ("continuous", ("h_fn", "t_fn", "t_fp")),
        ("constant", ALL),  # one z* per group: the whole selection is decided by qid
        ("huge", ALL),  # a value past the fast path's bound: every row is scored
    ],
)
def test_art_select_equals_sorting_every_score(values, components):
    rng = np.random.default_rng(11)
    size = 3000
    outcome = rng.choice(["TP", "FN", "FP"], size=size, p=[0.5, 0.3, 0.2])
    entropy = {
        "quantised": np.round(rng.gamma(2.0, 0.3, size), 1),
        "continuous": rng.gamma(2.0, 0.3, size),
        "constant": np.full(size, 0.5),
        "huge": np.r_[1e120, rng.gamma(2.0, 0.3, size - 1)],
    }[values]
    pool = pool_table(
        {
            "qid": [f"q{index:05d}" for index in rng.permutation(size)],
            "predicate": rng.choice(["on", "has", "near"], size=size, p=[0.7, 0.2, 0.1]),
            "outcome": outcome,
            "entropy": entropy,
            "similarity": np.where(outcome == "FP", np.round(rng.uniform(-1, 1, size), 2), np.nan),
        }
    )
    budgets = {"has": 17, "near": 400, "on": 60}
    result = art_select(pool, budgets, components=components)
    expected_qids, expected_reasons = brute_force_selection(pool, budgets, components)
    adaptive = result[result["reason"] != "fill"]
    assert list(adaptive["qid"]) == expected_qids
    assert list(adaptive["reason"]) == expected_reasons
    # Without h_tp, "near" (about 300 rows, budget 400) runs out of scored rows: TP rows fill, all of them.
    fill = result[result["reason"] == "fill"]
    near = pool[pool["predicate"] == "near"]
    expected_fill = 0 if "h_tp" in components else int((near["outcome"] == "TP").sum())
    assert len(fill) == expected_fill and set(fill["predicate"]) <= {"near"}


def test_row_left_out_of_the_value_window_still_wins_a_tie_by_qid():
    # TP mu = 1.5: (1e-20 - 1.5) and (2e-20 - 1.5) round to the same -1.5, so "a"
    # and "b" tie on z* although their entropies differ. The value window for a
    # budget of 3 keeps "b" (2e-20 and up) only; the tie rule must bring "a" back.
    pool = pool_table(
        [("b", "on", "TP", 2e-20, np.nan), ("a", "on", "TP", 1e-20, np.nan), ("c", "on", "TP", 3.0, np.nan), ("d", "on", "TP", 3.0, np.nan)]
    )
    result = art_select(pool, {"on": 3})
    assert list(result["qid"]) == ["c", "d", "a"]
    assert result["z_star"].iloc[2] == -1.5 / (1.5 + 1e-6)
