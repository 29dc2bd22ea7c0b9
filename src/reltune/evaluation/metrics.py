"""Recall metrics R, mR, gR, mgR @K and unique/unseen predicates (DESIGN §7).

Pure functions over tables; `evaluate_predictions` is what the `evaluate`
stage calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.evaluation.matching import SimilarityFunction, best_ranks
from reltune.evaluation.tables import (
    ground_truth_table,
    is_detected_mode,
    object_counts,
    prediction_table,
    rank_predictions,
    scene_image_index,
)
from reltune.progress import log
from reltune.text import normalise_predicate

DEFAULT_KS = (20, 50, 100)
DEFAULT_SIMILARITY_THRESHOLD = 0.95
UNIQUE_TOP_K = 50  # unique/unseen predicates are counted in each image's top-50 (paper Fig. 4)


@dataclass
class EvaluationResult:
    """Flat metrics (DESIGN §4), per-predicate recalls, and per-GT-relation best ranks."""

    metrics: dict[str, float | int]
    per_predicate: pd.DataFrame
    ground_truth: pd.DataFrame
    predicted_predicates: pd.DataFrame


def image_recall(hit: np.ndarray, image: np.ndarray) -> float:
    """Mean over images of recalled / GT count, in percent."""
    per_image = pd.Series(hit, dtype=np.float64).groupby(image).mean()
    return float(per_image.mean() * 100.0)


def predicate_recalls(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray) -> pd.Series:
    """Per predicate: mean over the images containing it of recalled-c / count-c (fraction)."""
    per_image = pd.Series(hit, dtype=np.float64).groupby([predicate, image]).mean()
    return per_image.groupby(level=0).mean()


def mean_recall(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray) -> float:
    """Average over the GT predicates of their per-predicate recall, in percent."""
    return float(predicate_recalls(hit, image, predicate).mean() * 100.0)


def default_similarity() -> SimilarityFunction:
    """MiniLM relation similarity (DESIGN §6), loaded on first use."""
    from reltune.embedding import shared_embedder

    return shared_embedder().relation_similarity


def _lazy_default_similarity(*arguments: Sequence[str]) -> np.ndarray:
    return default_similarity()(*arguments)


def evaluate_predictions(
    scenes: pd.DataFrame,
    predictions: pd.DataFrame,
    train_predicates: Iterable[str],
    ks: Sequence[int] = DEFAULT_KS,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    similarity: SimilarityFunction | None = None,
    scenes_file: str = "scenes",
    predictions_file: str = "predictions",
) -> EvaluationResult:
    """Evaluate a predictions table against a scenes table (DESIGN §7).

    Images with at least one GT relation are evaluated; one with GT but no
    prediction recalls nothing. `similarity` defaults to MiniLM and is only
    called for inexact (labels, predicted, GT) combinations.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] <= 0:
        raise InputError(predictions_file, f"K values must be positive integers, got {list(ks)}")
    image_index = scene_image_index(scenes, scenes_file)
    boxes_per_image = object_counts(scenes, scenes_file)
    detected = is_detected_mode(predictions, predictions_file)
    ground_truth = ground_truth_table(scenes, scenes_file, with_boxes=detected)
    if ground_truth.empty:
        raise InputError(scenes_file, "no image has a GT relation: nothing to evaluate")
    table = prediction_table(predictions, image_index, boxes_per_image, predictions_file, scenes_file)
    evaluated_images = np.unique(ground_truth["image"].to_numpy())
    on_evaluated = np.isin(table["image"].to_numpy(), evaluated_images)
    if not on_evaluated.all():
        skipped_images = len(np.unique(table["image"].to_numpy()[~on_evaluated]))
        log(f"evaluate: {int((~on_evaluated).sum())} predictions on {skipped_images} images without GT relations are not evaluated")
    kept = rank_predictions(table[on_evaluated], max(max(ks), UNIQUE_TOP_K), detected)

    ranked = best_ranks(
        ground_truth, kept[kept["rank"] < max(ks)], detected, similarity or _lazy_default_similarity, similarity_threshold
    )
    image = ranked["image"].to_numpy()
    predicate = ranked["predicate"].to_numpy()
    metrics: dict[str, float | int] = {}
    for prefix, column, aggregate in (
        ("R", "exact_rank", "image"),
        ("mR", "exact_rank", "predicate"),
        ("gR", "generalised_rank", "image"),
        ("mgR", "generalised_rank", "predicate"),
    ):
        for k in ks:
            hit = ranked[column].to_numpy() < k
            metrics[f"{prefix}@{k}"] = image_recall(hit, image) if aggregate == "image" else mean_recall(hit, image, predicate)

    predicted = predicted_predicate_counts(kept[kept["rank"] < UNIQUE_TOP_K], train_predicates)
    metrics["unique_predicates"] = int(len(predicted))
    metrics["unseen_predicates"] = int((~predicted["seen_in_training"]).sum())
    metrics["images"] = int(len(evaluated_images))
    metrics["gt_relations"] = int(len(ground_truth))
    per_predicate = per_predicate_table(ranked, ks, train_predicates)
    return EvaluationResult(metrics, per_predicate, ranked, predicted)


def chance_metrics(
    scenes: pd.DataFrame, train_predicates: Iterable[str], ks: Sequence[int] = DEFAULT_KS, scenes_file: str = "scenes"
) -> dict[str, float]:
    """Expected R/mR/gR/mgR@K of a model answering one uniformly random training predicate per annotated pair.

    A GT relation is hit with probability 1/|P| when its predicate is a
    training predicate and never otherwise; recalls are linear in the hits, so
    feeding those probabilities to the recall functions gives the expectation.
    One answer per pair makes every K alike. gR/mgR count exact labels only:
    similarity matches between distinct predicates would add slightly to them.
    """
    training = training_predicate_set(train_predicates)
    if not training:
        raise InputError(scenes_file, "no training predicates: the chance level is undefined")
    ground_truth = ground_truth_table(scenes, scenes_file)
    if ground_truth.empty:
        raise InputError(scenes_file, "no image has a GT relation: nothing to evaluate")
    predicate = ground_truth["predicate"].to_numpy()
    image = ground_truth["image"].to_numpy()
    expected_hit = np.isin(predicate, sorted(training)).astype(np.float64) / len(training)
    recall, mean = image_recall(expected_hit, image), mean_recall(expected_hit, image, predicate)
    return {f"{prefix}@{k}": value for prefix, value in (("R", recall), ("mR", mean), ("gR", recall), ("mgR", mean)) for k in ks}


def training_predicate_set(train_predicates: Iterable[str]) -> set[str]:
    return {normalise_predicate(predicate) for predicate in train_predicates}


def predicted_predicate_counts(kept: pd.DataFrame, train_predicates: Iterable[str]) -> pd.DataFrame:
    """Distinct predicted predicates with their count and whether training saw them."""
    counts = kept["predicate"].value_counts()
    seen = training_predicate_set(train_predicates)
    table = pd.DataFrame({"predicate": counts.index.astype(object), "predictions": counts.to_numpy(dtype=np.int64)})
    table["seen_in_training"] = table["predicate"].isin(seen)
    return table.sort_values(["predictions", "predicate"], ascending=[False, True], kind="stable").reset_index(drop=True)


def per_predicate_table(ranked: pd.DataFrame, ks: Sequence[int], train_predicates: Iterable[str]) -> pd.DataFrame:
    """One row per GT predicate: counts and the per-predicate recalls behind mR / mgR (percent)."""
    image = ranked["image"].to_numpy()
    predicate = ranked["predicate"].to_numpy()
    grouped = ranked.groupby("predicate")
    table = pd.DataFrame({"gt_relations": grouped.size(), "images": grouped["image"].nunique()})
    for prefix, column in (("R", "exact_rank"), ("gR", "generalised_rank")):
        for k in ks:
            table[f"{prefix}@{k}"] = predicate_recalls(ranked[column].to_numpy() < k, image, predicate) * 100.0
    seen = training_predicate_set(train_predicates)
    table.insert(2, "seen_in_training", table.index.isin(seen))
    table.index.name = "predicate"
    return table.reset_index().sort_values(["gt_relations", "predicate"], ascending=[False, True], kind="stable").reset_index(drop=True)
