"""How much of a run's mR@K is test-set noise? (issue 16, part 1)

Reads per-image files (`evaluate --per-image`, `metrics/per_image/<dataset>.json`)
and prints, per file, mR@K and the bootstrap standard error and 95% interval
of mR@K over test images (scipy.stats.bootstrap, images resampled with
replacement). That part of the spread between seeds comes from which test
relations the model happens to get right, and it shrinks with the square root
of the test split; the rest (which samples a seed draws, training order) does
not.

Usage:
    .venv/bin/python benchmarks/test_split_noise.py metrics/per_image/synthetic.json [other runs' files] [--k 20]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import scipy.stats

from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.statistics import align_per_image, image_weights, weighted_mean_recalls


def image_bootstrap(path: str, k: int, resamples: int, seed: int) -> dict[str, float]:
    """mR@K of the file, and its bootstrap standard error and 95% percentile interval over test images.

    Resampled image sets are scored by `make compare`'s own arithmetic (image multiplicities as weights).
    """
    with open(path, encoding="utf-8") as handle:
        recalls = align_per_image([read_per_image(json.load(handle), path, k)], [path])
    n_images = len(recalls.image_ids)

    def statistic(image_indices: np.ndarray, axis: int = -1) -> np.ndarray:
        return weighted_mean_recalls(recalls, image_weights(image_indices.astype(np.int64), n_images))[..., 0]

    result = scipy.stats.bootstrap(
        (np.arange(n_images),), statistic, n_resamples=resamples, vectorized=True, method="percentile",
        random_state=np.random.default_rng(seed),
    )  # fmt: skip
    return {
        "images": n_images, "mR": float(weighted_mean_recalls(recalls, np.ones(n_images))[0]),
        "se": float(result.standard_error),
        "low": float(result.confidence_interval.low), "high": float(result.confidence_interval.high),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.files:
        found = image_bootstrap(path, args.k, args.resamples, args.seed)
        print(f"{path}: {found['images']} images, mR@{args.k} {found['mR']:.2f}, bootstrap SE {found['se']:.2f}, "
              f"95% [{found['low']:.2f}, {found['high']:.2f}]")  # fmt: skip


if __name__ == "__main__":
    main()
