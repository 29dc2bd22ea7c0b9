"""Defaults of the selection parameters, in one place: the paper's values.

`reltune select` (and `reltune score`, for its pool subset) take their
command-line defaults from `SamplingSettings`; the pipeline passes
params.yaml's `sampling` values instead, which may differ (the embedded
default selects more per round and caps the scored pool, for CPU runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from reltune.sampling.art import COMPONENTS, Z_INIT, Z_STEP
from reltune.sampling.strategies import DEFAULT_FIXED_THRESHOLDS


@dataclass(frozen=True)
class SamplingSettings:
    """Selection parameters (params.yaml `sampling`) with the paper's defaults."""

    seed: int = 0
    seed_strategy: str = "balanced"  # Alg. 2
    strategy: str = "art"  # Alg. 1
    budget_fraction: float = 0.02  # per round, of all training positives (paper §4: seed + 5 rounds = 12%)
    components: tuple[str, ...] = COMPONENTS  # Tab. 3: all four
    z_init: float = Z_INIT
    z_step: float = Z_STEP
    fixed_thresholds: tuple[tuple[str, float], ...] = tuple(DEFAULT_FIXED_THRESHOLDS.items())  # Tab. 7
    pool_cap_factor: float = 0.0  # 0: score the whole pool, as the paper does

    def components_text(self) -> str:
        """`components` as the command line writes it (h_tp,h_fn,...)."""
        return ",".join(self.components)

    def fixed_thresholds_text(self) -> str:
        """`fixed_thresholds` as the command line writes it (t_fp=0.95,...)."""
        return ",".join(f"{name}={value}" for name, value in self.fixed_thresholds)
