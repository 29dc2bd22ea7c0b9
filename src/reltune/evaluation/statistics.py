"""Seed intervals and paired strategy differences of `make compare` (scipy underneath).

Two questions, two tools:

- *How large is a variant's metric?* Mean over its seeds with a 95% Student-t
  interval (`scipy.stats.t`): the seeds are independent runs, and the t
  interval is honest about how few there are (2 seeds give a very wide one).
- *Is strategy A ahead of strategy B?* The paired difference of mR@K, A - B,
  averaged over the seeds both ran (seed s of A against seed s of B), with a
  95% percentile bootstrap interval (`scipy.stats.bootstrap`). Every
  experiment is evaluated on the same test images, so seeds and test images
  are crossed factors; each bootstrap replicate resamples the test images
  (one draw shared by every experiment of the replicate, so both members of a
  pair see the same images) and, independently, the seed pairs. That is the
  "pigeonhole" bootstrap for crossed designs (Owen, Ann. Appl. Stat. 2007),
  which scipy runs when the two index samples are passed unpaired.
  Resampling images alone would hold the seeds fixed and call a difference
  "ahead" that a new set of seeds could reverse; the seed spread of the
  miniature was once larger than every strategy effect. With a single common
  seed only the images are resampled.
- With few seeds a bootstrap over seeds is too narrow (a bootstrap of n
  values has variance (n-1)/n of the mean's, and no t quantile), so a second
  interval is the Student-t one of the per-seed differences (`seed_interval`):
  it has the right small-sample width for the seed noise but holds the test
  set fixed. The verdict needs both: "ahead" when both intervals lie above 0,
  "behind" when both lie below, otherwise "not separable at 95%".
  Measured (`benchmarks/compare_calibration.py`, 5 seeds, 400 images, two
  strategies drawn alike, 200 simulations each): false verdicts 0/200 without
  seed noise; with per-predicate seed noise of sd 0.5 / 1.0 (logit) 15 / 22
  from the bootstrap alone, 10 / 9 with both intervals; resampling images
  alone gave 73/200 at sd 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from reltune.errors import InputError

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BATCH = 500  # bootstrap replicates per vectorised call: bounds memory
AHEAD, BEHIND, NOT_SEPARABLE = "ahead", "behind", "not separable at 95%"


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval (low == high == mean when the data cannot vary)."""

    mean: float
    low: float
    high: float
    n: int

    def verdict(self) -> str:
        if self.low > 0:
            return AHEAD
        if self.high < 0:
            return BEHIND
        return NOT_SEPARABLE


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean over seeds and its Student-t interval (2+ values)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        raise ValueError("an interval over seeds needs at least two seeds")
    mean = float(array.mean())
    scale = float(scipy.stats.sem(array))
    if scale == 0.0:  # identical seeds: scipy would answer nan for a zero scale
        return Estimate(mean, mean, mean, len(array))
    low, high = scipy.stats.t.interval(confidence, len(array) - 1, loc=mean, scale=scale)
    return Estimate(mean, float(low), float(high), len(array))


@dataclass(frozen=True)
class AlignedRecalls:
    """Per-image recall fractions of several experiments on one test set.

    `fractions[e, i, c]` = recalled / GT count of predicate c in image i for
    experiment e (0 where image i has no c); `present[i, c]` marks where it has.
    """

    fractions: np.ndarray
    present: np.ndarray
    image_ids: list[str]
    predicates: list[str]


def align_per_image(tables: Sequence[pd.DataFrame], names: Sequence[str]) -> AlignedRecalls:
    """Stack per-image tables (`per_image.read_per_image`) of experiments evaluated on the same GT."""
    if not tables:
        raise ValueError("no per-image tables to align")
    reference = tables[0].set_index(["image_id", "predicate"]).sort_index()
    image_ids = sorted(set(reference.index.get_level_values(0)))
    predicates = sorted(set(reference.index.get_level_values(1)))
    image_position = {image_id: i for i, image_id in enumerate(image_ids)}
    predicate_position = {predicate: c for c, predicate in enumerate(predicates)}
    rows = np.array([image_position[i] for i in reference.index.get_level_values(0)], dtype=np.int64)
    columns = np.array([predicate_position[p] for p in reference.index.get_level_values(1)], dtype=np.int64)
    present = np.zeros((len(image_ids), len(predicates)), dtype=bool)
    present[rows, columns] = True
    fractions = np.zeros((len(tables), len(image_ids), len(predicates)))
    for e, (table, name) in enumerate(zip(tables, names)):
        indexed = table.set_index(["image_id", "predicate"]).sort_index()
        if not indexed.index.equals(reference.index) or not (indexed["gt"] == reference["gt"]).all():
            raise InputError(name, f"evaluated on other test images or GT relations than {names[0]}: not paired")
        fractions[e, rows, columns] = indexed["recalled"].to_numpy() / indexed["gt"].to_numpy()
    return AlignedRecalls(fractions, present, image_ids, predicates)


def joint_verdict(estimates: Sequence[Estimate]) -> str:
    """AHEAD or BEHIND when every interval says so, else NOT_SEPARABLE."""
    verdicts = {estimate.verdict() for estimate in estimates}
    return verdicts.pop() if len(verdicts) == 1 else NOT_SEPARABLE


def image_weights(image_samples: np.ndarray, n_images: int) -> np.ndarray:
    """(..., n) resampled image indices -> (..., n_images) multiplicities."""
    flat = image_samples.reshape(-1, image_samples.shape[-1])
    offsets = np.arange(len(flat))[:, None] * n_images
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * n_images)
    return counts.reshape(*image_samples.shape[:-1], n_images).astype(np.float64)


def weighted_mean_recalls(recalls: AlignedRecalls, weights: np.ndarray) -> np.ndarray:
    """mR (percent) of every experiment on image multisets: (..., images) weights -> (..., experiments).

    As DESIGN §7 on the multiset: per predicate the mean over its images (each
    counted as often as drawn), then the mean over the predicates present.
    """
    n_experiments, n_images, n_predicates = recalls.fractions.shape
    by_image = recalls.fractions.transpose(1, 0, 2).reshape(n_images, n_experiments * n_predicates)
    numerator = (weights @ by_image).reshape(*weights.shape[:-1], n_experiments, n_predicates)
    denominator = (weights @ recalls.present.astype(np.float64))[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_predicate = np.where(denominator > 0, numerator / denominator, np.nan)
    return np.nanmean(per_predicate, axis=-1) * 100.0


def test_image_standard_errors(recalls: AlignedRecalls, n_resamples: int | None = None, seed: int = 0) -> np.ndarray:
    """Bootstrap standard error over test images of every experiment's mR (percent), shape (experiments,).

    Which test relations a run happens to get right: the part of a seed spread
    that a larger test split removes (it shrinks with the square root of the
    number of test images). Each experiment's images are resampled by the same
    draws, scored by `weighted_mean_recalls`.
    """
    n_images = len(recalls.image_ids)

    def statistic(image_samples: np.ndarray, axis: int = -1) -> np.ndarray:
        # (resamples, experiments) -> (experiments, resamples): scipy wants the resamples last
        return np.moveaxis(weighted_mean_recalls(recalls, image_weights(image_samples, n_images)), -1, 0)

    result = scipy.stats.bootstrap(
        (np.arange(n_images),), statistic, n_resamples=n_resamples or N_RESAMPLES, batch=BATCH, vectorized=True,
        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return np.atleast_1d(np.asarray(result.standard_error, dtype=np.float64))


def predicate_recall_interval(recalls: AlignedRecalls, predicate: str, source: str = "per-image recalls") -> tuple[float, float, float]:
    """A predicate's recall (percent) in one run's per-image recalls: the mean over its test images of
    recalled / GT, as the per-predicate CSV, with its 95% percentile bootstrap interval over those images.

    A test split with ~20 relations of a predicate cannot tell 0.7 from 0.85 (issue 16 part 3)."""
    if predicate not in recalls.predicates:
        raise InputError(source, f"no test image annotates {predicate!r}")
    column = recalls.predicates.index(predicate)
    per_image_recall = recalls.fractions[0, recalls.present[:, column], column] * 100.0
    point = float(per_image_recall.mean())
    if np.ptp(per_image_recall) == 0.0:  # every image alike: no resample differs (scipy would warn and give NaN)
        return point, point, point
    result = scipy.stats.bootstrap(
        (per_image_recall,), np.mean, confidence_level=CONFIDENCE, method="percentile", n_resamples=9999, random_state=0
    )
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_difference(
    first: AlignedRecalls, second: AlignedRecalls, n_resamples: int | None = None, seed: int = 0
) -> Estimate:
    """Mean over seed pairs of mR(first_s) - mR(second_s), with its bootstrap interval.

    `first.fractions[s]` and `second.fractions[s]` are the same seed's runs of
    the two strategies on the same test images (see the module docstring);
    `n_resamples` defaults to N_RESAMPLES.
    """
    n_seeds, n_images = first.fractions.shape[0], first.fractions.shape[1]
    if second.fractions.shape != first.fractions.shape or not np.array_equal(first.present, second.present):
        raise ValueError("paired strategies must have the same seeds and test images")
    both = AlignedRecalls(np.concatenate([first.fractions, second.fractions]), first.present, first.image_ids, first.predicates)

    def seed_differences(weights: np.ndarray) -> np.ndarray:
        recalls = weighted_mean_recalls(both, weights)
        return recalls[..., :n_seeds] - recalls[..., n_seeds:]

    point = float(seed_differences(np.ones(n_images)).mean())

    def over_images_and_seeds(seed_samples: np.ndarray, image_samples: np.ndarray, axis: int = -1) -> np.ndarray:
        differences = seed_differences(image_weights(image_samples, n_images))
        return np.take_along_axis(differences, seed_samples, axis=-1).mean(axis=-1)

    def over_images(image_samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return seed_differences(image_weights(image_samples, n_images)).mean(axis=-1)

    images = np.arange(n_images)
    data, statistic = ((np.arange(n_seeds), images), over_images_and_seeds) if n_seeds > 1 else ((images,), over_images)
    result = scipy.stats.bootstrap(
        data, statistic, n_resamples=n_resamples or N_RESAMPLES, batch=BATCH, vectorized=True, paired=False,
        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    interval = result.confidence_interval
    return Estimate(point, float(interval.low), float(interval.high), n_seeds)


def per_seed_differences(first: AlignedRecalls, second: AlignedRecalls) -> np.ndarray:
    """mR(first_s) - mR(second_s) for every seed s, on the whole test set."""
    ones = np.ones(len(first.present))
    return weighted_mean_recalls(first, ones) - weighted_mean_recalls(second, ones)


def paired_seed_interval(first: AlignedRecalls, second: AlignedRecalls) -> Estimate | None:
    """Student-t interval of the per-seed differences (None with one seed)."""
    differences = per_seed_differences(first, second)
    return seed_interval(differences) if len(differences) > 1 else None
