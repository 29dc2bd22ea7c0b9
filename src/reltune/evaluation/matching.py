"""Which kept prediction recalls which GT relation (DESIGN §7).

For every GT relation we compute the best (lowest) rank of a kept prediction
that recalls it exactly, and of one that recalls it in the generalised sense
(exact, or similarity >= threshold); `recalled@K` is then `rank < K`, so all
K are answered by one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from reltune.evaluation.tables import OBJECT_BOX, SUBJECT_BOX, normalise_values
from reltune.progress import track

# (subject labels, predicted predicates, GT predicates, object labels) -> similarities,
# the signature of reltune.embedding.SentenceEmbedder.relation_similarity.
SimilarityFunction = Callable[[Sequence[str], Sequence[str], Sequence[str], Sequence[str]], np.ndarray]

IOU_THRESHOLD = 0.5
SIMILARITY_CHUNK = 8192  # combinations per similarity call, so the progress bar moves


class RememberedSimilarity:
    """A SimilarityFunction that asks the wrapped one only about combinations it has not seen.

    Evaluation ranks the same predictions twice (with and without the graph
    constraint); this keeps the second pass from embedding anything again.
    """

    def __init__(self, similarity: SimilarityFunction) -> None:
        self.similarity = similarity
        self.known: dict[tuple[str, str, str, str], float] = {}

    def __call__(self, subjects: Sequence[str], predicted: Sequence[str], truth: Sequence[str], objects: Sequence[str]) -> np.ndarray:
        combinations = list(zip(subjects, predicted, truth, objects))
        new = list(dict.fromkeys(combination for combination in combinations if combination not in self.known))
        if new:
            values = np.asarray(self.similarity(*(list(column) for column in zip(*new))), dtype=np.float64)
            self.known.update(zip(new, values.tolist()))
        return np.array([self.known[combination] for combination in combinations], dtype=np.float64)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of aligned (n, 4) x1,y1,x2,y2 boxes; 0 where the union is empty."""
    inter_w = np.clip(np.minimum(boxes_a[:, 2], boxes_b[:, 2]) - np.maximum(boxes_a[:, 0], boxes_b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(boxes_a[:, 3], boxes_b[:, 3]) - np.maximum(boxes_a[:, 1], boxes_b[:, 1]), 0, None)
    intersection = inter_w * inter_h
    area_a = np.clip(boxes_a[:, 2] - boxes_a[:, 0], 0, None) * np.clip(boxes_a[:, 3] - boxes_a[:, 1], 0, None)
    area_b = np.clip(boxes_b[:, 2] - boxes_b[:, 0], 0, None) * np.clip(boxes_b[:, 3] - boxes_b[:, 1], 0, None)
    union = area_a + area_b - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def candidate_pairs(ground_truth: pd.DataFrame, kept: pd.DataFrame, detected: bool) -> pd.DataFrame:
    """(GT relation, kept prediction) pairs that address the same subject and object.

    GT boxes: same image, subj and obj index. Detected boxes: same image,
    labels agree (normalised), and both boxes overlap with IoU >= 0.5.
    Columns: gt_row, rank, predicted, predicate, subj_label, obj_label.
    """
    gt = ground_truth.assign(gt_row=np.arange(len(ground_truth)))
    if not detected:
        columns = ["image", "subj", "obj", "predicate", "rank"]
        pairs = gt[["gt_row", "image", "subj", "obj", "predicate", "subj_label", "obj_label"]].merge(
            kept[columns].rename(columns={"predicate": "predicted"}), on=["image", "subj", "obj"], how="inner"
        )
    else:
        gt = gt.assign(subj_match=normalise_values(gt["subj_label"]), obj_match=normalise_values(gt["obj_label"]))
        prediction_columns = kept[["image", "subj_label", "obj_label", "predicate", "rank", *SUBJECT_BOX, *OBJECT_BOX]].rename(
            columns={
                "predicate": "predicted",
                "subj_label": "subj_match",
                "obj_label": "obj_match",
                **{name: f"pred_{name}" for name in (*SUBJECT_BOX, *OBJECT_BOX)},
            }
        )
        pairs = gt[["gt_row", "image", "predicate", "subj_label", "obj_label", "subj_match", "obj_match", *SUBJECT_BOX, *OBJECT_BOX]].merge(
            prediction_columns, on=["image", "subj_match", "obj_match"], how="inner"
        )
        subject_iou = box_iou(pairs[list(SUBJECT_BOX)].to_numpy(), pairs[[f"pred_{n}" for n in SUBJECT_BOX]].to_numpy())
        object_iou = box_iou(pairs[list(OBJECT_BOX)].to_numpy(), pairs[[f"pred_{n}" for n in OBJECT_BOX]].to_numpy())
        pairs = pairs[(subject_iou >= IOU_THRESHOLD) & (object_iou >= IOU_THRESHOLD)]
    return pairs[["gt_row", "rank", "predicted", "predicate", "subj_label", "obj_label"]].reset_index(drop=True)


def pair_similarities(pairs: pd.DataFrame, similarity: SimilarityFunction) -> np.ndarray:
    """Similarity of each pair's predicted vs GT predicate on its labels.

    Computed once per distinct (subject label, object label, predicted, GT)
    combination; exact matches are 1 without a call.
    """
    similarities = np.ones(len(pairs), dtype=np.float64)
    inexact = (pairs["predicted"] != pairs["predicate"]).to_numpy()
    if not inexact.any():
        return similarities
    combination_keys = ["subj_label", "obj_label", "predicted", "predicate"]
    needed = pairs.loc[inexact, combination_keys]
    combination = needed.groupby(combination_keys, sort=False).ngroup().to_numpy()
    distinct = needed.iloc[np.unique(combination, return_index=True)[1]]
    values = np.empty(len(distinct), dtype=np.float64)
    chunks = range(0, len(distinct), SIMILARITY_CHUNK)
    for start in track(chunks, "similarity", total=len(chunks)):
        part = distinct.iloc[start : start + SIMILARITY_CHUNK]
        values[start : start + len(part)] = np.asarray(
            similarity(part["subj_label"].tolist(), part["predicted"].tolist(), part["predicate"].tolist(), part["obj_label"].tolist()),
            dtype=np.float64,
        )
    similarities[inexact] = values[combination]
    return similarities


def best_ranks(
    ground_truth: pd.DataFrame,
    kept: pd.DataFrame,
    detected: bool,
    similarity: SimilarityFunction,
    similarity_threshold: float,
) -> pd.DataFrame:
    """`ground_truth` plus `exact_rank` and `generalised_rank` (inf = never recalled)."""
    pairs = candidate_pairs(ground_truth, kept, detected)
    exact = (pairs["predicted"] == pairs["predicate"]).to_numpy()
    ranks = pairs["rank"].to_numpy(dtype=np.float64)
    rows = pairs["gt_row"].to_numpy()
    exact_rank = np.full(len(ground_truth), np.inf)
    np.minimum.at(exact_rank, rows[exact], ranks[exact])
    # A similar prediction only matters when it ranks above the best exact one,
    # so only those pairs need a similarity (the embedding is the slow part).
    useful = ~exact & (ranks < exact_rank[rows])
    similar = np.zeros(len(pairs), dtype=bool)
    similar[useful] = pair_similarities(pairs[useful], similarity) >= similarity_threshold
    generalised_rank = exact_rank.copy()
    np.minimum.at(generalised_rank, rows[similar], ranks[similar])
    return ground_truth.assign(exact_rank=exact_rank, generalised_rank=generalised_rank)
