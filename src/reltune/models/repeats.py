"""Repeat-factor sampling during relation tuning: the questions of rare predicates are asked more often.

The rule is LVIS's (Gupta, Dollar, Girshick, "LVIS: A Dataset for Large Vocabulary Instance
Segmentation", CVPR 2019; arXiv v2 and later, Appendix B.2; detectron2's RepeatFactorTrainingSampler):
a category of frequency f gets the repeat factor r = max(1, sqrt(t / f)) for a threshold t. Here the
unit is the question, not the image: f is the share of the training positives
whose predicate it is. Why: in relation tuning the direction pairs are 266 of 5018 positives and the
tuned model fits not even its training ones, while the same pairs trained for ~48 epochs are learned
(docs/RESULTS.md "Replaying where things are", `benchmarks/direction_probe.py --finetune-steps`).

LVIS draws each image's repeats anew every epoch; here the copies are fixed before training, and each
predicate gets exactly round(n x r) copies of its n questions (every question floor(r) times, a seeded
draw of questions one more), so the count is known ahead (`reltune plan`) and the seed moves which
questions repeat, not how many. A negative is repeated as its positive: the yes/no balance holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from reltune.errors import InputError


def repeat_factors(counts: Mapping[str, int], threshold: float) -> dict[str, float]:
    """LVIS's r(c) = max(1, sqrt(t / f(c))), f(c) = counts[c] / sum(counts), per predicate with questions."""
    total = sum(counts.values())
    return {predicate: max(1.0, math.sqrt(threshold * total / count)) for predicate, count in counts.items() if count > 0}


def repeated_counts(counts: Mapping[str, int], threshold: float) -> dict[str, int]:
    """Questions of each predicate after repetition: round(n x r) (never fewer than n, as r >= 1)."""
    factors = repeat_factors(counts, threshold)
    return {predicate: round(counts[predicate] * factor) for predicate, factor in factors.items()}


def copies_per_positive(predicates: pd.Series, threshold: float, seed: int) -> pd.Series:
    """How many times each positive (index of `predicates`) is asked; each predicate gets repeated_counts exactly."""
    counts = predicates.value_counts().to_dict()
    targets = repeated_counts(counts, threshold)
    rng = np.random.default_rng(seed)
    copies = pd.Series(1, index=predicates.index, dtype=int)
    for predicate in sorted(counts):  # sorted: the draw does not depend on row order of the counts
        rows = predicates.index[predicates == predicate]
        whole, extra = divmod(targets[predicate], len(rows))
        copies[rows] = whole
        copies[rows[np.sort(rng.choice(len(rows), size=extra, replace=False))]] += 1
    return copies


def with_repeats(
    examples: pd.DataFrame, instructions: pd.DataFrame, threshold: float, seed: int, source: str = "instructions"
) -> pd.DataFrame:
    """`examples` (relation_training_examples' rows) with each positive and its negatives repeated by its predicate.

    `instructions` gives each positive's predicate (column `predicate`) and each negative's positive
    (`positive_qid`). Unchanged when `threshold` is 0. Copies follow their row, so row order is kept.
    """
    if threshold <= 0:
        return examples
    positives = instructions[instructions["kind"] == "positive"]
    unnamed = positives.index[positives["predicate"].isna() | (positives["predicate"].astype(str).str.strip() == "")]
    if len(unnamed):
        raise InputError(source, "a positive question names no predicate (train.repeat_threshold needs it)", f"row {int(unnamed[0])}")
    predicate_of = dict(zip(positives["qid"].astype(str), positives["predicate"].astype(str)))
    positive_of = dict(zip(instructions["qid"].astype(str), instructions["positive_qid"].astype(str)))
    qids = examples["qid"].astype(str)
    is_positive = examples["kind"] == "positive"
    trained = qids[is_positive].values
    copies_of_qid = copies_per_positive(pd.Series([predicate_of[qid] for qid in trained], index=trained), threshold, seed)
    # relation_training_examples brings a negative only with its positive
    copies = [int(copies_of_qid[qid if positive else positive_of[qid]]) for qid, positive in zip(qids, is_positive)]
    return examples.loc[examples.index.repeat(copies)].reset_index(drop=True)
