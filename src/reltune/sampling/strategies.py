"""Selection strategies: small objects with one `select` method over pool tables.

Every strategy takes the pool (training positives not yet selected; columns
qid, predicate, plus outcome/entropy/similarity for strategies that need pool
scores), the round's total budget B, the validation recall per predicate
(used by the recall-weighted strategies) and a seed, and returns a
`Selection`: the chosen rows (qid, predicate, reason) and a per-predicate
account (budget, z met, taken per reason, pool size before and after).

Budgets: `balanced` deals B with Alg. 2 (`balanced_allocation`); `art`,
`art-entropy` and `fixed` split B with Alg. 1 step 1 (`allocate_budget`);
`random` draws B from the whole pool; `full` takes the whole pool.
Random draws: rows in qid order get keys from numpy's default_rng(seed);
the smallest keys win, so results depend on the seed and the pool's content,
never on its row order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from reltune.sampling.allocation import allocate_budget, balanced_allocation
from reltune.sampling.art import COMPONENTS, FILL, REASONS, Z_INIT, Z_STEP, art_select, check_components, top_per_group

STRATEGY_NAMES = ("art", "art-entropy", "fixed", "balanced", "random", "full")
SEED_STRATEGY_NAMES = ("balanced", "random", "full")
# Tab. 7 "mid point": 0.95 for the FP similarity threshold, 0.5 for the entropy thresholds.
DEFAULT_FIXED_THRESHOLDS = {"t_fp": 0.95, "t_fn": 0.5, "h_fn": 0.5, "h_tp": 0.5}


@dataclass
class Selection:
    """Rows chosen by a strategy and the per-predicate account of how."""

    table: pd.DataFrame  # qid, predicate, reason
    per_predicate: dict[str, dict[str, Any]] = field(default_factory=dict)


class Strategy(Protocol):
    name: str
    needs_scores: bool
    needs_recall: bool

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        """Pick `budget` rows of `pool`; `available` (per-predicate pool sizes) overrides the
        counts of `pool` when `pool` is a scored subset of the real pool."""
        ...


def canonical_pool(pool: pd.DataFrame) -> pd.DataFrame:
    """The pool in qid order (the order random keys and ties refer to)."""
    ordered = pool.iloc[pool["qid"].argsort(kind="stable").to_numpy()].reset_index(drop=True)
    if ordered["qid"].duplicated().any():
        raise ValueError("pool has duplicate qids")
    return ordered


def pool_counts(pool: pd.DataFrame) -> dict[str, int]:
    """Pool size per predicate, sorted by name."""
    return {str(name): int(count) for name, count in pool["predicate"].value_counts().sort_index().items()}


def draw_per_predicate(pool: pd.DataFrame, budgets: Mapping[str, int], seed: Any) -> np.ndarray:
    """Positions (in the qid-ordered `pool`) of budgets[p] rows drawn uniformly per predicate."""
    codes, names = pd.factorize(pool["predicate"], sort=True)
    budget_array = np.array([int(budgets.get(name, 0)) for name in names], dtype=np.int64)
    keys = np.random.default_rng(seed).random(len(pool))
    return top_per_group(codes, -keys, budget_array)


def _account(
    pool: pd.DataFrame,
    chosen: pd.DataFrame,
    budgets: Mapping[str, int],
    z_met: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    before = pool_counts(pool)
    taken = chosen.groupby(["predicate", "reason"]).size()
    account: dict[str, dict[str, Any]] = {}
    for predicate, size in before.items():
        per_reason = {str(reason): int(count) for (name, reason), count in taken.items() if name == predicate}
        z_value = None if z_met is None else z_met.get(predicate)
        account[predicate] = {
            "budget": int(budgets.get(predicate, 0)),
            # Rounded for reading (z_init - k * z_step carries float noise); exact values in art_select's attrs.
            "z_met": None if z_value is None or math.isnan(z_value) else round(float(z_value), 10),
            "taken": per_reason,
            "pool_size": size,
            "pool_left": size - sum(per_reason.values()),
        }
    return account


def _table(pool: pd.DataFrame, positions: np.ndarray, reasons: Iterable[str] | str) -> pd.DataFrame:
    chosen = pool.iloc[positions]
    reason_values = [reasons] * len(chosen) if isinstance(reasons, str) else list(reasons)
    return pd.DataFrame(
        {"qid": chosen["qid"].to_numpy(), "predicate": chosen["predicate"].to_numpy(), "reason": reason_values},
        columns=["qid", "predicate", "reason"],
    )


class FullSelection:
    """Take the whole pool (Tab. 3 'full train data')."""

    name = "full"
    needs_scores = False
    needs_recall = False

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        pool = canonical_pool(pool)
        table = _table(pool, np.arange(len(pool)), "full")
        return Selection(table, _account(pool, table, pool_counts(pool)))


class RandomSelection:
    """B rows drawn uniformly from the whole pool (Naive-RT random)."""

    name = "random"
    needs_scores = False
    needs_recall = False

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        pool = canonical_pool(pool)
        keys = np.random.default_rng(seed).random(len(pool))
        positions = np.sort(np.argsort(keys, kind="stable")[: min(budget, len(pool))])
        table = _table(pool, positions, "random")
        return Selection(table, _account(pool, table, {p: int(n) for p, n in table["predicate"].value_counts().items()}))


class BalancedSelection:
    """Alg. 2: B dealt round-robin over predicates, then uniform draws within each."""

    name = "balanced"
    needs_scores = False
    needs_recall = False

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        pool = canonical_pool(pool)
        budgets = balanced_allocation(pool_counts(pool), budget)
        table = _table(pool, draw_per_predicate(pool, budgets, seed), "balanced")
        return Selection(table, _account(pool, table, budgets))


class ArtSelection:
    """Alg. 1: recall-weighted budgets, then adaptive z-score thresholds per predicate."""

    needs_scores = True
    needs_recall = True

    def __init__(self, components: Iterable[str] = COMPONENTS, z_init: float = Z_INIT, z_step: float = Z_STEP) -> None:
        self.components = check_components(components)
        if not self.components:
            raise ValueError("art needs at least one component")
        self.z_init = z_init
        self.z_step = z_step
        self.name = "art"

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        # budgets follow the whole pool's availability even when only a capped subset was scored
        budgets = allocate_budget(recall or {}, available or pool_counts(pool), budget)
        chosen = art_select(pool, budgets, self.components, self.z_init, self.z_step, seed)
        table = chosen[["qid", "predicate", "reason"]]
        return Selection(table, _account(pool, table, budgets, chosen.attrs["z_met"]))


class EntropySelection:
    """Tab. 3 'ART: entropy': per predicate the highest-entropy rows, whatever the outcome."""

    name = "art-entropy"
    needs_scores = True
    needs_recall = True

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        pool = canonical_pool(pool)
        if pool["entropy"].isna().any():
            raise ValueError("pool has NaN entropy")
        # budgets follow the whole pool's availability even when only a capped subset was scored
        budgets = allocate_budget(recall or {}, available or pool_counts(pool), budget)
        codes, names = pd.factorize(pool["predicate"], sort=True)
        budget_array = np.array([budgets.get(name, 0) for name in names], dtype=np.int64)
        positions = top_per_group(codes, pool["entropy"].to_numpy(dtype=float), budget_array)
        table = _table(pool, positions, "high_entropy")
        return Selection(table, _account(pool, table, budgets))


class FixedThresholdSelection:
    """Tab. 7: absolute thresholds, no adaptation, then random fill.

    A row qualifies by the first enabled criterion it meets, in Alg. 1's line
    order: TP with H > h_tp, FN with H > h_fn, FN with H < t_fn, FP with
    S < t_fp. Per predicate, B'_p rows are drawn uniformly from the qualifying
    ones; a shortfall is drawn uniformly from the rest (reason `fill`).
    """

    name = "fixed"
    needs_scores = True
    needs_recall = True

    def __init__(self, thresholds: Mapping[str, float] | None = None, components: Iterable[str] = COMPONENTS) -> None:
        self.thresholds = {**DEFAULT_FIXED_THRESHOLDS, **(thresholds or {})}
        unknown = set(self.thresholds) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown fixed thresholds {sorted(unknown)}")
        self.components = check_components(components)

    def select(
        self,
        pool: pd.DataFrame,
        budget: int,
        recall: Mapping[str, float] | None = None,
        seed: Any = 0,
        available: Mapping[str, int] | None = None,
    ) -> Selection:
        pool = canonical_pool(pool)
        # budgets follow the whole pool's availability even when only a capped subset was scored
        budgets = allocate_budget(recall or {}, available or pool_counts(pool), budget)
        outcome = pool["outcome"].to_numpy()
        entropy = pool["entropy"].to_numpy(dtype=float)
        similarity = pool["similarity"].to_numpy(dtype=float)
        criteria = {
            "h_tp": (outcome == "TP") & (entropy > self.thresholds["h_tp"]),
            "h_fn": (outcome == "FN") & (entropy > self.thresholds["h_fn"]),
            "t_fn": (outcome == "FN") & (entropy < self.thresholds["t_fn"]),
            "t_fp": (outcome == "FP") & (similarity < self.thresholds["t_fp"]),
        }
        reason = np.full(len(pool), FILL, dtype=object)
        for component in reversed(self.components):  # earlier lines overwrite later ones
            reason[criteria[component]] = REASONS[component]
        qualifies = reason != FILL

        codes, names = pd.factorize(pool["predicate"], sort=True)
        budget_array = np.array([budgets.get(name, 0) for name in names], dtype=np.int64)
        keys = np.random.default_rng(seed).random(len(pool))
        # Qualifying rows rank before all others (key + 1 for the rest), uniform within each tier.
        positions = top_per_group(codes, -(keys + (~qualifies)), budget_array)
        table = _table(pool, positions, reason[positions])
        return Selection(table, _account(pool, table, budgets))


def make_strategy(
    name: str,
    components: Iterable[str] = COMPONENTS,
    z_init: float = Z_INIT,
    z_step: float = Z_STEP,
    fixed_thresholds: Mapping[str, float] | None = None,
) -> Strategy:
    """The strategy called `name` with its parameters (components apply to art and fixed)."""
    if name == "art":
        return ArtSelection(components, z_init, z_step)
    if name == "art-entropy":
        return EntropySelection()
    if name == "fixed":
        return FixedThresholdSelection(fixed_thresholds, components)
    if name == "balanced":
        return BalancedSelection()
    if name == "random":
        return RandomSelection()
    if name == "full":
        return FullSelection()
    raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGY_NAMES)}")
