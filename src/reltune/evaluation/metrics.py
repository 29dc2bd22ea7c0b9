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
from reltune.evaluation.matching import RememberedSimilarity, SimilarityFunction, best_ranks
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
    """Flat metrics (DESIGN §4), per-predicate recalls, and per-GT-relation best ranks.

    `ground_truth` has the graph-constrained ranks (`exact_rank`,
    `generalised_rank`) and the unconstrained ones (`ng_exact_rank`, `ng_generalised_rank`).
    """

    metrics: dict[str, float | int | bool]
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


def vocabulary_mean_recall(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray, vocabulary: Sequence[str]) -> float:
    """Scene-Graph-Benchmark's mean recall: over every vocabulary predicate, absent ones counting 0, in percent."""
    recalls = predicate_recalls(hit, image, predicate).reindex(list(vocabulary), fill_value=0.0)
    return float(recalls.mean() * 100.0)


# (key name, rank column, aggregate) of each recall family, in the order the metrics files list them
RECALL_FAMILIES = (
    ("R", "exact_rank", "image"),
    ("mR", "exact_rank", "predicate"),
    ("mR_vocab", "exact_rank", "vocabulary"),
    ("gR", "generalised_rank", "image"),
    ("mgR", "generalised_rank", "predicate"),
)
UNCONSTRAINED_PREFIX = "ng"  # Scene-Graph-Benchmark's name for recall without the graph constraint
# What `evaluate --out` (the DVC metric) keeps: the keys runs are compared on (issue 14 §5);
# `--details` has every key
COMPARED_FAMILIES = ("R", "mR", "gR", "mgR")  # graph-constrained only
COMPARED_COUNTS = ("unique_predicates", "unseen_predicates")


def compared_metrics(metrics: dict[str, float | int | bool]) -> dict[str, float | int | bool]:
    """The compared keys of a metrics dict, in its order: constrained R/mR/gR/mgR at every K, unique/unseen."""

    def compared(key: str) -> bool:
        family, at, k = key.partition("@")
        return (family in COMPARED_FAMILIES and at == "@" and k.isdigit()) or key in COMPARED_COUNTS

    return {key: value for key, value in metrics.items() if compared(key)}


def recall_metrics(ranked: pd.DataFrame, ks: Sequence[int], prefix: str = "", vocabulary: Sequence[str] | None = None) -> dict[str, float]:
    """R, mR, mR_vocab (with a vocabulary), gR, mgR at every K of one ranked GT table, keys prefixed."""
    image = ranked["image"].to_numpy()
    predicate = ranked["predicate"].to_numpy()
    metrics: dict[str, float] = {}
    for name, column, aggregate in RECALL_FAMILIES:
        if aggregate == "vocabulary" and vocabulary is None:
            continue
        for k in ks:
            hit = ranked[column].to_numpy() < k
            if aggregate == "image":
                value = image_recall(hit, image)
            elif aggregate == "predicate":
                value = mean_recall(hit, image, predicate)
            else:
                value = vocabulary_mean_recall(hit, image, predicate, vocabulary)
            metrics[f"{prefix}{name}@{k}"] = value
    return metrics


def default_similarity() -> SimilarityFunction:
    """The default DESIGN §6 similarity (`embedding.similarity_from_settings()`), loaded on first use."""
    from reltune.embedding import similarity_from_settings

    return similarity_from_settings()


def _lazy_default_similarity(*arguments: Sequence[str]) -> np.ndarray:
    return default_similarity()(*arguments)


def normalised_vocabulary(vocabulary: Iterable[str] | None, ground_truth: pd.DataFrame, vocab_file: str) -> list[str] | None:
    """The evaluated dataset's predicates, normalised; a GT predicate outside them is an error."""
    if vocabulary is None:
        return None
    predicates = list(dict.fromkeys(normalise_predicate(predicate) for predicate in vocabulary))
    outside = ~ground_truth["predicate"].isin(predicates).to_numpy()
    if outside.any():
        first = ground_truth.iloc[int(np.flatnonzero(outside)[0])]
        raise InputError(
            vocab_file,
            f"GT predicate {first['predicate']!r} is not in the vocabulary ({int(outside.sum())} GT relations outside it)",
            where=f"image {first['image_id']!r}",
        )
    return predicates


def evaluated_tables(
    scenes: pd.DataFrame, predictions: pd.DataFrame, scenes_file: str, predictions_file: str
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Validated GT table, the predictions on images with GT relations, and whether boxes are detected."""
    image_index = scene_image_index(scenes, scenes_file)
    boxes_per_image = object_counts(scenes, scenes_file)
    detected = is_detected_mode(predictions, predictions_file)
    ground_truth = ground_truth_table(scenes, scenes_file, with_boxes=detected)
    if ground_truth.empty:
        raise InputError(scenes_file, "no image has a GT relation: nothing to evaluate")
    table = prediction_table(predictions, image_index, boxes_per_image, predictions_file, scenes_file)
    on_evaluated = np.isin(table["image"].to_numpy(), np.unique(ground_truth["image"].to_numpy()))
    if not on_evaluated.all():
        skipped_images = len(np.unique(table["image"].to_numpy()[~on_evaluated]))
        log(f"evaluate: {int((~on_evaluated).sum())} predictions on {skipped_images} images without GT relations are not evaluated")
    return ground_truth, table[on_evaluated], detected


def evaluate_predictions(
    scenes: pd.DataFrame,
    predictions: pd.DataFrame,
    train_predicates: Iterable[str],
    ks: Sequence[int] = DEFAULT_KS,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    similarity: SimilarityFunction | None = None,
    scenes_file: str = "scenes",
    predictions_file: str = "predictions",
    graph_constraint: bool = True,
    vocabulary: Iterable[str] | None = None,
    vocab_file: str = "vocab",
) -> EvaluationResult:
    """Evaluate a predictions table against a scenes table (DESIGN §7).

    Recalls are computed both with the graph constraint (plain keys) and
    without it (`ng` keys); `graph_constraint` picks the ranking behind what
    has one value only: unique/unseen predicates and the predicted-predicate
    table. `vocabulary` (the evaluated dataset's predicates) adds `mR_vocab@K`.
    Images with at least one GT relation are evaluated; one with GT but no
    prediction recalls nothing. `similarity` defaults to `embedding.similarity_from_settings()`
    and is only called for inexact (labels, predicted, GT) combinations.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] <= 0:
        raise InputError(predictions_file, f"K values must be positive integers, got {list(ks)}")
    ground_truth, table, detected = evaluated_tables(scenes, predictions, scenes_file, predictions_file)
    predicates = normalised_vocabulary(vocabulary, ground_truth, vocab_file)
    remembered = RememberedSimilarity(similarity or _lazy_default_similarity)
    depth = max(max(ks), UNIQUE_TOP_K)
    kept = {constrained: rank_predictions(table, depth, detected, graph_constraint=constrained) for constrained in (True, False)}
    ranked = {
        constrained: best_ranks(ground_truth, kept[constrained][kept[constrained]["rank"] < max(ks)], detected, remembered, similarity_threshold)
        for constrained in (True, False)
    }
    metrics: dict[str, float | int | bool] = {
        **recall_metrics(ranked[True], ks, "", predicates),
        **recall_metrics(ranked[False], ks, UNCONSTRAINED_PREFIX, predicates),
    }
    predicted = predicted_predicate_counts(kept[graph_constraint][kept[graph_constraint]["rank"] < UNIQUE_TOP_K], train_predicates)
    metrics["unique_predicates"] = int(len(predicted))
    metrics["unseen_predicates"] = int((~predicted["seen_in_training"]).sum())
    metrics["images"] = int(ground_truth["image"].nunique())
    metrics["gt_relations"] = int(len(ground_truth))
    metrics["graph_constraint"] = bool(graph_constraint)
    both = ranked[True].assign(
        **{f"{UNCONSTRAINED_PREFIX}_{column}": ranked[False][column].to_numpy() for column in ("exact_rank", "generalised_rank")}
    )
    return EvaluationResult(metrics, per_predicate_table(both, ks, train_predicates), both, predicted)


def chance_metrics(
    scenes: pd.DataFrame,
    train_predicates: Iterable[str],
    ks: Sequence[int] = DEFAULT_KS,
    scenes_file: str = "scenes",
    vocabulary: Iterable[str] | None = None,
    vocab_file: str = "vocab",
) -> dict[str, float]:
    """Expected recalls of a model answering one uniformly random training predicate per annotated pair.

    The protocol of `evaluate_predictions`: one answer per (subj, obj) pair
    with GT relations, so the graph constraint changes nothing and the `ng`
    keys equal the plain ones. The answers are ranked in random order, so a
    pair's answer is among an image's top K with probability min(1, K / pairs
    in the image), and a GT relation is hit with probability 1/|P| when its
    predicate is a training predicate, never otherwise. Recalls are linear in
    the hits, so feeding those probabilities to the recall functions gives the
    expectation. gR/mgR count exact labels only: similarity matches between
    distinct predicates would add slightly to them.
    """
    training = training_predicate_set(train_predicates)
    if not training:
        raise InputError(scenes_file, "no training predicates: the chance level is undefined")
    ground_truth = ground_truth_table(scenes, scenes_file)
    if ground_truth.empty:
        raise InputError(scenes_file, "no image has a GT relation: nothing to evaluate")
    predicates = normalised_vocabulary(vocabulary, ground_truth, vocab_file)
    pairs_per_image = ground_truth.drop_duplicates(["image", "subj", "obj"]).groupby("image").size()
    pairs = pairs_per_image.reindex(ground_truth["image"]).to_numpy(dtype=np.float64)
    answer_right = np.isin(ground_truth["predicate"].to_numpy(), sorted(training)).astype(np.float64) / len(training)
    metrics: dict[str, float] = {}
    for prefix in ("", UNCONSTRAINED_PREFIX):
        for k in ks:
            expected_hit = answer_right * np.minimum(1.0, k / pairs)
            metrics.update(_expected_recalls(ground_truth, expected_hit, k, prefix, predicates))
    return {key: metrics[key] for key in _family_order(metrics)}


def _expected_recalls(ground_truth: pd.DataFrame, expected_hit: np.ndarray, k: int, prefix: str, vocabulary: list[str] | None) -> dict[str, float]:
    image = ground_truth["image"].to_numpy()
    predicate = ground_truth["predicate"].to_numpy()
    recall, mean = image_recall(expected_hit, image), mean_recall(expected_hit, image, predicate)
    values = {"R": recall, "mR": mean, "gR": recall, "mgR": mean}
    if vocabulary is not None:
        values["mR_vocab"] = vocabulary_mean_recall(expected_hit, image, predicate, vocabulary)
    return {f"{prefix}{name}@{k}": value for name, value in values.items()}


def _family_order(metrics: dict[str, float]) -> list[str]:
    """Keys in the metrics files' order: constrained before `ng`, families as RECALL_FAMILIES, then K."""
    names = [name for name, _, _ in RECALL_FAMILIES]

    def position(key: str) -> tuple[int, int, int]:
        name, _, k = key.partition("@")
        unconstrained = name.startswith(UNCONSTRAINED_PREFIX) and name[len(UNCONSTRAINED_PREFIX) :] in names
        base = name[len(UNCONSTRAINED_PREFIX) :] if unconstrained else name
        return (int(unconstrained), names.index(base), int(k))

    return sorted(metrics, key=position)


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
    """One row per GT predicate: counts and the per-predicate recalls behind mR / mgR and ngmR / ngmgR (percent)."""
    image = ranked["image"].to_numpy()
    predicate = ranked["predicate"].to_numpy()
    grouped = ranked.groupby("predicate")
    table = pd.DataFrame({"gt_relations": grouped.size(), "images": grouped["image"].nunique()})
    columns = [("R", "exact_rank"), ("gR", "generalised_rank")]
    columns += [(f"{UNCONSTRAINED_PREFIX}{name}", f"{UNCONSTRAINED_PREFIX}_{column}") for name, column in columns if f"{UNCONSTRAINED_PREFIX}_{column}" in ranked]
    for prefix, column in columns:
        for k in ks:
            table[f"{prefix}@{k}"] = predicate_recalls(ranked[column].to_numpy() < k, image, predicate) * 100.0
    seen = training_predicate_set(train_predicates)
    table.insert(2, "seen_in_training", table.index.isin(seen))
    table.index.name = "predicate"
    return table.reset_index().sort_values(["gt_relations", "predicate"], ascending=[False, True], kind="stable").reset_index(drop=True)
