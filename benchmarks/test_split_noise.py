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

from reltune.evaluation.per_image import mean_recall_from_counts, read_per_image


def image_bootstrap(path: str, k: int, resamples: int, seed: int) -> dict[str, float]:
    """mR@K of the file, and its bootstrap standard error and 95% percentile interval over test images."""
    with open(path, encoding="utf-8") as handle:
        table = read_per_image(json.load(handle), path, k)
    images = table["image_id"].unique()
    rows_of = {image: rows for image, rows in table.groupby("image_id").indices.items()}

    def statistic(image_indices: np.ndarray) -> float:
        rows = np.concatenate([rows_of[images[int(index)]] for index in image_indices])
        return mean_recall_from_counts(table.iloc[rows])

    result = scipy.stats.bootstrap(
        (np.arange(len(images)),), statistic, n_resamples=resamples, vectorized=False, method="percentile",
        random_state=np.random.default_rng(seed),
    )  # fmt: skip
    return {
        "images": int(len(images)), "mR": mean_recall_from_counts(table), "se": float(result.standard_error),
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
