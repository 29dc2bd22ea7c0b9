"""Training-sample selection: balanced seed (Alg. 2), budgets and ART (Alg. 1), baselines.

Strategies are small objects with one `select(pool, budget, recall, seed)`
method over pool tables; `make_strategy(name, ...)` builds them by name.
"""

from reltune.sampling.allocation import allocate_budget, balanced_allocation
from reltune.sampling.art import COMPONENTS, REASONS, art_scores, art_select, z_at_budget
from reltune.sampling.loop import round_budget, select_round, training_positives
from reltune.sampling.settings import SamplingSettings
from reltune.sampling.strategies import (
    SEED_STRATEGY_NAMES,
    STRATEGY_NAMES,
    ArtSelection,
    BalancedSelection,
    EntropySelection,
    FixedThresholdSelection,
    FullSelection,
    RandomSelection,
    Selection,
    Strategy,
    make_strategy,
)

__all__ = [
    "COMPONENTS",
    "REASONS",
    "SEED_STRATEGY_NAMES",
    "STRATEGY_NAMES",
    "SamplingSettings",
    "ArtSelection",
    "BalancedSelection",
    "EntropySelection",
    "FixedThresholdSelection",
    "FullSelection",
    "RandomSelection",
    "Selection",
    "Strategy",
    "allocate_budget",
    "art_scores",
    "art_select",
    "balanced_allocation",
    "make_strategy",
    "round_budget",
    "select_round",
    "training_positives",
    "z_at_budget",
]
