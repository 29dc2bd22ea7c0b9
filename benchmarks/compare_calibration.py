"""How often does `make compare` call a difference that is not there?

Simulates two strategies drawn from the same distribution (so every verdict
other than "not separable at 95%" is false) on a miniature-sized test set:
images with 3 of 20 long-tailed predicates, 1-2 GT relations each, an image
difficulty shared by every experiment (paired data), and per seed a random
per-predicate skill offset of standard deviation `--seed-sd` (what a training
seed changes). Counts false verdicts of the bootstrap of
`statistics.paired_difference` alone (images and seed pairs resampled), of
the verdict of `make compare` (that bootstrap and the t interval over the
per-seed differences must agree), and of a bootstrap that resamples the images
only (seeds held fixed).

Usage:
    .venv/bin/python benchmarks/compare_calibration.py [--seeds 5] [--sims 200] [--images 400]
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.stats

from reltune.evaluation import statistics

PREDICATES = 20


def world(rng: np.random.Generator, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Which predicates each image has (long-tailed), and how hard each (image, predicate) is."""
    frequency = np.r_[np.full(5, 0.12), np.full(PREDICATES - 5, 0.4 / (PREDICATES - 5))]
    present = np.zeros((images, PREDICATES), dtype=bool)
    for image in range(images):
        present[image, rng.choice(PREDICATES, 3, replace=False, p=frequency)] = True
    return present, rng.normal(0.0, 1.0, (images, PREDICATES))


def strategy(rng: np.random.Generator, present: np.ndarray, difficulty: np.ndarray, seeds: int, seed_sd: float) -> np.ndarray:
    """(seeds, images, predicates) recall fractions of one strategy's runs."""
    runs = []
    for _ in range(seeds):
        skill = rng.normal(0.0, seed_sd, PREDICATES)
        probability = 1.0 / (1.0 + np.exp(-(difficulty + skill)))
        runs.append(np.where(present, rng.binomial(2, probability) / 2.0, 0.0))
    return np.array(runs)


def images_only_separates(first: np.ndarray, second: np.ndarray, present: np.ndarray, seed: int) -> bool:
    seeds, images = first.shape[0], first.shape[1]
    both = statistics.AlignedRecalls(np.concatenate([first, second]), present, [], [])

    def difference(image_samples: np.ndarray, axis: int = -1) -> np.ndarray:
        recalls = statistics.weighted_mean_recalls(both, statistics.image_weights(image_samples, images))
        return (recalls[..., :seeds] - recalls[..., seeds:]).mean(axis=-1)

    interval = scipy.stats.bootstrap(
        (np.arange(images),), difference, n_resamples=999, vectorized=True, method="percentile", rng=np.random.default_rng(seed)
    ).confidence_interval
    return not interval.low <= 0.0 <= interval.high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for seed_sd in (0.0, 0.5, 1.0):
        paired = joint = images_only = 0
        for simulation in range(args.sims):
            present, difficulty = world(rng, args.images)
            first = strategy(rng, present, difficulty, args.seeds, seed_sd)
            second = strategy(rng, present, difficulty, args.seeds, seed_sd)
            first_runs, second_runs = statistics.AlignedRecalls(first, present, [], []), statistics.AlignedRecalls(second, present, [], [])
            estimate = statistics.paired_difference(first_runs, second_runs, 999, simulation)
            over_seeds = statistics.paired_seed_interval(first_runs, second_runs)
            paired += estimate.verdict() != statistics.NOT_SEPARABLE
            joint += statistics.joint_verdict([estimate, over_seeds]) != statistics.NOT_SEPARABLE
            images_only += images_only_separates(first, second, present, simulation)
        print(
            f"seeds {args.seeds}, seed sd {seed_sd}: false verdicts {paired}/{args.sims} (bootstrap of images + seed pairs), "
            f"{joint}/{args.sims} (make compare: that bootstrap and the t interval), {images_only}/{args.sims} (images only)"
        )


if __name__ == "__main__":
    main()
