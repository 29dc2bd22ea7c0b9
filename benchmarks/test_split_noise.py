"""How much of a run's mR@K is test-set noise? (issue 16, part 1)

Reads per-image files (`evaluate --per-image`, `metrics/per_image/<dataset>.json`)
and prints, per file, mR@K and its bootstrap standard error over test images
(`statistics.test_image_standard_errors`, the same numbers `make compare`
prints per variant). That part of the spread between seeds comes from which
test relations the model happens to get right, and it shrinks with the square
root of the test split; the rest (which samples a seed draws, training order)
does not.

Usage:
    .venv/bin/python benchmarks/test_split_noise.py metrics/per_image/synthetic.json [other runs' files] [--k 20]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.statistics import align_per_image, test_image_standard_errors, weighted_mean_recalls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.files:
        with open(path, encoding="utf-8") as handle:
            recalls = align_per_image([read_per_image(json.load(handle), path, args.k)], [path])
        n_images = len(recalls.image_ids)
        mean_recall = float(weighted_mean_recalls(recalls, np.ones(n_images))[0])
        standard_error = float(test_image_standard_errors(recalls, args.resamples, args.seed)[0])
        print(f"{path}: {n_images} images, mR@{args.k} {mean_recall:.2f}, bootstrap SE over test images {standard_error:.2f}")


if __name__ == "__main__":
    main()
