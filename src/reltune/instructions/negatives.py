"""Which negative categories each positive gets (paper Eq. 1 and the Tab. 2 ablations).

Categories are coded by their index in `CATEGORIES` (spatial, possessive,
semantic). A pair's annotated categories are a bit mask (bit c set = the
ordered pair has a positive of category c); a negative is never asked for a
category whose bit is set (DESIGN §6).

Random choices (which of spatial/semantic counters a possessive positive,
which category a random negative asks about) come from a per-(positive,
category) key derived from the positive's content hash and the seed, so the
result does not depend on the row order of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reltune.instructions.categories import CATEGORIES

NEGATIVE_MODES = ("counter", "random", "none")

_SPATIAL, _POSSESSIVE, _SEMANTIC = (CATEGORIES.index(name) for name in ("spatial", "possessive", "semantic"))


def _candidate_matrix(mode: str) -> np.ndarray:
    """candidates[r, nr] = True when category nr may counter a positive of category r."""
    candidates = np.zeros((len(CATEGORIES), len(CATEGORIES)), dtype=bool)
    if mode == "counter":
        # Eq. 1: spatial -> {possessive}; possessive -> {spatial, semantic}; semantic -> {possessive}.
        candidates[_SPATIAL, _POSSESSIVE] = True
        candidates[_POSSESSIVE, [_SPATIAL, _SEMANTIC]] = True
        candidates[_SEMANTIC, _POSSESSIVE] = True
    elif mode == "random":
        candidates[:] = ~np.eye(len(CATEGORIES), dtype=bool)
    elif mode != "none":
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {mode!r}")
    return candidates


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-mixed 64-bit hash of each uint64 (wrapping arithmetic)."""
    mixed = values.astype(np.uint64, copy=True)
    mixed += np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return mixed ^ (mixed >> np.uint64(31))


def category_random_keys(positive_words: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) key per (positive, category), shape (n, len(CATEGORIES)).

    `positive_words` are 64-bit words of each positive's content hash; the seed
    and the category index are mixed in, so each positive draws independently
    of every other row and of the row order.
    """
    words = np.asarray(positive_words, dtype=np.uint64)
    seed_word = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    category_words = _splitmix64(seed_word ^ np.arange(1, len(CATEGORIES) + 1, dtype=np.uint64))
    keys = _splitmix64(words[:, None] ^ category_words[None, :])
    return (keys >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class NegativeChoice:
    """Negatives chosen for n positives.

    positive_index / category / rank: one entry per negative (which positive it
    counters, the category it asks about, 0 for a positive's first negative).
    shortfall: per positive, how many requested negatives could not be made;
    reason: per positive, why (empty string where nothing is missing).
    """

    positive_index: np.ndarray
    category: np.ndarray
    rank: np.ndarray
    shortfall: np.ndarray
    reason: np.ndarray


def _shortfall_reason(mode: str, positive_category: int, pair_mask: int, per_positive: int) -> str:
    candidates = np.flatnonzero(_candidate_matrix(mode)[positive_category])
    blocked = [CATEGORIES[c] for c in candidates if pair_mask >> c & 1]
    parts = []
    if blocked:
        parts.append(f"{' and '.join(blocked)} blocked: the pair has an annotated positive in that category")
    if len(candidates) < per_positive:
        rule = "Eq. 1" if mode == "counter" else f"{mode} negatives"
        allowed_names = " and ".join(CATEGORIES[c] for c in candidates)
        parts.append(f"{rule} allows only {allowed_names} for a {CATEGORIES[positive_category]} positive")
    return "; ".join(parts)


def choose_negative_categories(
    positive_category: np.ndarray,
    pair_category_mask: np.ndarray,
    positive_words: np.ndarray,
    mode: str,
    per_positive: int,
    seed: int,
) -> NegativeChoice:
    """Pick up to `per_positive` distinct negative categories per positive.

    positive_category: category index of each positive; pair_category_mask:
    bit mask of the categories annotated on that positive's ordered pair;
    positive_words: 64-bit content-hash words (see `category_random_keys`).
    Candidates follow `mode` (counter = Eq. 1, random = any other category),
    minus the pair's annotated categories; among the remaining candidates the
    order is random (seeded), and the first `per_positive` are taken.
    """
    positive_category = np.asarray(positive_category, dtype=np.int64)
    pair_category_mask = np.asarray(pair_category_mask, dtype=np.int64)
    count = len(positive_category)
    if mode == "none" or count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return NegativeChoice(empty, empty, empty, np.zeros(count, dtype=np.int64), np.full(count, "", dtype=object))
    if per_positive < 1:
        raise ValueError(f"negatives_per_positive must be at least 1, got {per_positive}")

    candidates = _candidate_matrix(mode)[positive_category]
    annotated = (pair_category_mask[:, None] >> np.arange(len(CATEGORIES))[None, :]) & 1
    allowed = candidates & (annotated == 0)

    # Allowed categories first, in random order; disallowed ones sort after (key 2 > any uniform).
    keys = np.where(allowed, category_random_keys(positive_words, seed), 2.0)
    order = np.argsort(keys, axis=1, kind="stable")[:, :per_positive]
    taken = np.take_along_axis(allowed, order, axis=1)

    positive_index = np.repeat(np.arange(count), order.shape[1])
    rank = np.tile(np.arange(order.shape[1]), count)
    flat_taken = taken.ravel()
    emitted = taken.sum(axis=1)
    shortfall = per_positive - emitted

    reason = np.full(count, "", dtype=object)
    short = np.flatnonzero(shortfall > 0)
    if len(short):
        # Few distinct (category, mask) combinations: build each reason text once.
        combos = pd.DataFrame({"category": positive_category[short], "mask": pair_category_mask[short]})
        texts = {
            (category, mask): _shortfall_reason(mode, category, mask, per_positive)
            for category, mask in combos.drop_duplicates().itertuples(index=False)
        }
        reason[short] = [texts[combo] for combo in zip(combos["category"], combos["mask"])]

    return NegativeChoice(
        positive_index=positive_index[flat_taken],
        category=order.ravel()[flat_taken].astype(np.int64),
        rank=rank[flat_taken],
        shortfall=shortfall.astype(np.int64),
        reason=reason,
    )
