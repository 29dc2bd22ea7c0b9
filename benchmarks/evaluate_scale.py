"""Evaluation at GQA scale: 26,000 images x 100 predictions, ~6 GT relations per image.

Prints the evaluation time without the similarity model and the
similarity/embedding time separately (DESIGN §7; target: < 30 s plus
embedding). Run:

    .venv/bin/python benchmarks/evaluate_scale.py                 # real MiniLM
    .venv/bin/python benchmarks/evaluate_scale.py --similarity hash   # no model: metric code only
"""

from __future__ import annotations

import argparse
import os
import time
import zlib

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reltune.evaluation.metrics import evaluate_predictions  # noqa: E402

UNSEEN_PREDICATES = ["floating on", "reflecting", "petting", "sailing under", "swimming in", "drinking", "paddling", "filled with"]


def zipf_choice(rng: np.random.Generator, size: int, count: int, exponent: float) -> np.ndarray:
    """Long-tailed class ids (VG-like frequencies)."""
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return rng.choice(count, size=size, p=weights / weights.sum())


def generate(images: int, per_image: int, gt_mean: float, predicates: int, objects: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    predicate_names = np.array([f"predicate {i}" for i in range(predicates)] + UNSEEN_PREDICATES, dtype=object)
    label_names = np.array([f"object {i}" for i in range(objects)], dtype=object)
    object_count = rng.integers(6, 17, size=images)
    gt_count = np.clip(rng.poisson(gt_mean, size=images), 1, None)
    image_ids = np.array([str(i) for i in range(images)], dtype=object)

    # GT relations: random ordered pairs of distinct objects, long-tailed predicates
    gt_image = np.repeat(np.arange(images), gt_count)
    gt_subj = rng.integers(0, object_count[gt_image])
    gt_obj = (gt_subj + 1 + rng.integers(0, object_count[gt_image] - 1)) % object_count[gt_image]
    gt_predicate = zipf_choice(rng, len(gt_image), predicates, 1.2)

    # predictions: 20 pairs x 5 predicates; the GT pairs come first, half of them with the GT predicate among the 5
    pairs_per_image, predicates_per_pair = 20, per_image // 20
    pair_image = np.repeat(np.arange(images), pairs_per_image)
    pair_subj = rng.integers(0, object_count[pair_image])
    pair_obj = (pair_subj + 1 + rng.integers(0, object_count[pair_image] - 1)) % object_count[pair_image]
    gt_start = np.concatenate([[0], np.cumsum(gt_count)[:-1]])
    slot = np.tile(np.arange(pairs_per_image), images)
    from_gt = slot < np.minimum(gt_count[pair_image], pairs_per_image)
    gt_row = gt_start[pair_image] + slot
    pair_subj[from_gt] = gt_subj[gt_row[from_gt]]
    pair_obj[from_gt] = gt_obj[gt_row[from_gt]]
    row_pair = np.repeat(np.arange(len(pair_image)), predicates_per_pair)
    row_predicate = zipf_choice(rng, len(row_pair), predicates + len(UNSEEN_PREDICATES), 1.0)
    first_of_pair = np.arange(len(row_pair)) % predicates_per_pair == 0
    use_gt = first_of_pair & from_gt[row_pair] & (rng.random(len(row_pair)) < 0.5)
    row_predicate[use_gt] = gt_predicate[gt_row[row_pair[use_gt]]]
    predictions = pd.DataFrame(
        {
            "image_id": image_ids[pair_image[row_pair]],
            "subj": pair_subj[row_pair],
            "obj": pair_obj[row_pair],
            "predicate": predicate_names[row_predicate],
            "score": rng.random(len(row_pair)),
        }
    )

    labels = label_names[zipf_choice(rng, int(object_count.sum()), objects, 1.1)]
    object_start = np.concatenate([[0], np.cumsum(object_count)[:-1]])
    boxes = rng.uniform(0, 500, size=(int(object_count.sum()), 2))
    boxes = np.hstack([boxes, boxes + rng.uniform(10, 100, size=boxes.shape)])
    relations = [[] for _ in range(images)]
    for image, s, o, p in zip(gt_image.tolist(), gt_subj.tolist(), gt_obj.tolist(), predicate_names[gt_predicate].tolist()):
        relations[image].append({"subj": s, "obj": o, "predicate": p})
    scenes = pd.DataFrame(
        {
            "image_id": image_ids,
            "image_path": [f"{i}.jpg" for i in image_ids],
            "width": 600,
            "height": 600,
            "boxes": [boxes[start : start + count].tolist() for start, count in zip(object_start, object_count)],
            "labels": [labels[start : start + count].tolist() for start, count in zip(object_start, object_count)],
            "relations": relations,
        }
    )
    return scenes, predictions, [str(name) for name in predicate_names[:predicates]]


def hash_similarity(subjects, predicted, ground_truth, objects) -> np.ndarray:
    """A deterministic stand-in with no model: measures the metric code alone."""
    return np.array([zlib.crc32(f"{p}|{g}".encode()) % 1000 / 1000 for p, g in zip(predicted, ground_truth)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=26000)
    parser.add_argument("--predictions-per-image", type=int, default=100)
    parser.add_argument("--gt-per-image", type=float, default=6.0)
    parser.add_argument("--predicates", type=int, default=50)
    parser.add_argument("--objects", type=int, default=150)
    parser.add_argument("--similarity", choices=("minilm", "hash"), default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    scenes, predictions, train_predicates = generate(
        args.images, args.predictions_per_image, args.gt_per_image, args.predicates, args.objects, args.seed
    )
    print(f"generated {len(scenes)} images, {len(predictions)} predictions, "
          f"{sum(len(r) for r in scenes['relations'])} GT relations in {time.perf_counter() - start:.1f} s")

    model_load = 0.0
    if args.similarity == "minilm":
        from reltune.embedding import shared_embedder

        start = time.perf_counter()
        embedder = shared_embedder()
        model_load = time.perf_counter() - start
        base_similarity = embedder.relation_similarity
    else:
        base_similarity = hash_similarity
    similarity_seconds, combinations = 0.0, 0

    def timed_similarity(subjects, predicted, ground_truth, objects):
        nonlocal similarity_seconds, combinations
        begin = time.perf_counter()
        values = base_similarity(subjects, predicted, ground_truth, objects)
        similarity_seconds += time.perf_counter() - begin
        combinations += len(predicted)
        return values

    start = time.perf_counter()
    result = evaluate_predictions(scenes, predictions, train_predicates, similarity=timed_similarity)
    total = time.perf_counter() - start
    print(f"distinct (labels, predicted, GT) combinations: {combinations}")
    if args.similarity == "minilm":
        print(f"distinct sentences embedded: {len(embedder._cache)}")
        print(f"model load: {model_load:.1f} s")
    print(f"similarity ({args.similarity}) time: {similarity_seconds:.1f} s")
    print(f"evaluation time without similarity: {total - similarity_seconds:.1f} s (target < 30 s)")
    print("metrics:", {key: round(value, 2) for key, value in result.metrics.items()})


if __name__ == "__main__":
    main()
