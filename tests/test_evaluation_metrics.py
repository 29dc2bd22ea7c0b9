"""Hand-computed cases for every rule of DESIGN §7 (metrics)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from reltune.evaluation.matching import box_iou
from reltune.evaluation.metrics import chance_metrics, evaluate_predictions


def scene(image_id: str, labels: list[str], relations: list[tuple[int, int, str]], boxes: list[list[float]] | None = None) -> dict:
    if boxes is None:
        boxes = [[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(len(labels))]
    return {
        "image_id": image_id,
        "image_path": f"{image_id}.png",
        "width": 100,
        "height": 100,
        "boxes": boxes,
        "labels": labels,
        "relations": [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations],
    }


def predictions(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "subj", "obj", "predicate", "score"])


def no_similarity(subjects, predicted, ground_truth, objects) -> np.ndarray:
    return np.zeros(len(predicted))


def run(scenes: list[dict], rows: list[tuple], ks=(1, 2, 3), train=("on",), similarity=no_similarity, **kwargs):
    return evaluate_predictions(pd.DataFrame(scenes), predictions(rows), list(train), ks=ks, similarity=similarity, **kwargs)


def test_ranking_is_by_score_not_file_order_and_ties_keep_file_order():
    scenes = [scene("a", ["man", "horse", "hat"], [(0, 1, "on")])]
    rows = [
        ("a", 0, 1, "near", 0.5),  # tie with the next row: file order puts it first
        ("a", 0, 1, "on", 0.5),
        ("a", 0, 2, "has", 0.9),  # last in the file, first by score
    ]
    metrics = run(scenes, rows).metrics
    # without the constraint: has (0.9), near (0.5, earlier row), on (0.5) -> "on" is third
    assert (metrics["ngR@1"], metrics["ngR@2"], metrics["ngR@3"]) == (0.0, 0.0, 100.0)
    # with it, the pair (0, 1) keeps one prediction: the tie goes to the earlier row, "near"
    assert (metrics["R@1"], metrics["R@2"], metrics["R@3"]) == (0.0, 0.0, 0.0)


def test_repeated_predictions_are_dropped_before_top_k():
    scenes = [scene("a", ["man", "horse"], [(0, 1, "on")])]
    rows = [
        ("a", 0, 1, "near", 0.9),
        ("a", 0, 1, "Near", 0.8),  # the same triplet once normalised: dropped
        ("a", 0, 1, "on", 0.7),
    ]
    metrics = run(scenes, rows).metrics
    assert metrics["ngR@1"] == 0.0
    assert metrics["ngR@2"] == 100.0  # without dropping, top-2 would be near, near
    assert metrics["R@2"] == 0.0  # the graph constraint keeps only the pair's best: near


def test_several_gt_relations_on_one_pair_and_one_prediction_recalls_one():
    scenes = [scene("a", ["man", "horse", "hat"], [(0, 1, "on"), (0, 1, "near"), (0, 2, "has")])]
    rows = [("a", 0, 1, "on", 0.9), ("a", 0, 1, "near", 0.8), ("a", 1, 0, "has", 0.7)]
    result = run(scenes, rows, train=("on", "near", "has"))
    assert result.metrics["ngR@1"] == pytest.approx(100 / 3)
    assert result.metrics["ngR@3"] == pytest.approx(200 / 3)  # (1, 0, has) is the reversed pair
    assert result.ground_truth["ng_exact_rank"].tolist() == [0.0, 1.0, np.inf]
    # one predicate per pair: "near" on (0, 1) is never ranked, (1, 0, has) takes rank 1
    assert result.metrics["R@3"] == pytest.approx(100 / 3)
    assert result.ground_truth["exact_rank"].tolist() == [0.0, np.inf, np.inf]


def test_image_with_gt_but_no_predictions_counts_zero_and_gt_denominator_is_all_gt():
    scenes = [
        scene("a", ["man", "horse"], [(0, 1, "on")]),
        scene("b", ["cup", "table", "plate"], [(0, 1, "on"), (2, 1, "on")]),
        scene("c", ["dog", "cat"], []),  # no GT: not evaluated even with predictions
    ]
    rows = [("a", 0, 1, "on", 0.9), ("c", 0, 1, "on", 0.9)]
    metrics = run(scenes, rows).metrics
    assert metrics["images"] == 2 and metrics["gt_relations"] == 3
    assert metrics["R@1"] == 50.0  # mean over images (1 + 0) / 2, not the pooled 1/3
    assert metrics["mR@1"] == 50.0  # "on": per image 1 and 0
    assert (metrics["ngR@1"], metrics["ngmR@1"]) == (50.0, 50.0)  # one prediction per pair: the constraint changes nothing


def test_mean_recall_averages_over_images_then_predicates_not_pooled_counts():
    scenes = [
        scene("a", ["m", "n", "o", "p"], [(0, 1, "on"), (1, 2, "on"), (2, 3, "on")]),
        scene("b", ["m", "n", "o"], [(0, 1, "on"), (1, 2, "near")]),
    ]
    rows = [
        ("a", 0, 1, "on", 0.9),
        ("a", 1, 2, "on", 0.8),
        ("a", 2, 3, "on", 0.7),
        ("b", 1, 2, "near", 0.9),
        ("b", 0, 1, "under", 0.8),
    ]
    result = run(scenes, rows, ks=(3,), train=("on", "near"))
    # on: image a 3/3, image b 0/1 -> mean 0.5 (pooled would be 3/4); near: 1/1
    assert result.metrics["mR@3"] == pytest.approx(75.0)
    assert result.metrics["R@3"] == pytest.approx(75.0)  # images: 1 and 1/2
    per_predicate = result.per_predicate.set_index("predicate")
    assert per_predicate.loc["on", "R@3"] == pytest.approx(50.0)
    assert per_predicate.loc["on", "gt_relations"] == 4 and per_predicate.loc["on", "images"] == 2
    assert per_predicate.loc["near", "R@3"] == pytest.approx(100.0)
    assert result.per_predicate["predicate"].tolist() == ["on", "near"]  # by GT count


def test_predicate_normalisation_underscores_case_and_spaces():
    scenes = [scene("a", ["girl", "dog"], [(0, 1, "interacts_with")])]
    rows = [("a", 0, 1, "Interacts  With", 0.9)]
    result = run(scenes, rows, ks=(1,), train=("interacts_with",))
    assert result.metrics["R@1"] == 100.0
    assert result.metrics["unseen_predicates"] == 0  # training vocab normalised too


def test_similarity_boundary_is_inclusive_and_computed_once_per_combination():
    scenes = [
        scene("a", ["man", "hat", "horse"], [(0, 1, "wearing"), (0, 2, "riding")]),
        scene("b", ["man", "hat"], [(0, 1, "wearing")]),
    ]
    rows = [
        ("a", 0, 1, "wears", 0.9),
        ("a", 0, 2, "on", 0.8),
        ("b", 0, 1, "wears", 0.9),  # same (labels, p', p) as in image a
    ]
    calls: list[tuple] = []

    def injected(subjects, predicted, ground_truth, objects):
        calls.extend(zip(subjects, predicted, ground_truth, objects))
        table = {"wears": 0.95, "on": np.nextafter(0.95, 0.0)}
        return np.array([table[p] for p in predicted])

    result = run(scenes, rows, ks=(2,), train=("wearing", "riding"), similarity=injected)
    assert sorted(calls) == [("man", "on", "riding", "horse"), ("man", "wears", "wearing", "hat")]
    assert result.metrics["R@2"] == 0.0
    # a: wearing recalled (0.95 >= 0.95), riding not (just below) -> 1/2; b: 1/1
    assert result.metrics["gR@2"] == pytest.approx(75.0)
    # wearing: images a and b both 1 -> 1; riding: 0 -> mgR 50
    assert result.metrics["mgR@2"] == pytest.approx(50.0)
    assert result.metrics["mR@2"] == 0.0


def test_generalised_recall_respects_k():
    scenes = [scene("a", ["man", "hat"], [(0, 1, "wearing")])]
    rows = [("a", 0, 1, "on", 0.9), ("a", 0, 1, "wears", 0.8)]
    similar = lambda s, p, g, o: np.array([0.99 if x == "wears" else 0.1 for x in p])  # noqa: E731
    metrics = run(scenes, rows, ks=(1, 2), similarity=similar).metrics
    assert (metrics["nggR@1"], metrics["nggR@2"], metrics["ngR@2"]) == (0.0, 100.0, 0.0)
    assert metrics["gR@2"] == 0.0  # constrained: the pair's only ranked prediction is "on"


def test_unique_and_unseen_predicates_count_only_the_top_50():
    labels = [f"o{i}" for i in range(9)]
    pairs = [(s, o) for s in range(9) for o in range(9) if s != o]
    rows = [("a", s, o, "on", 1.0 - n / 100) for n, (s, o) in enumerate(pairs[:48])]
    rows += [("a", 0, 1, "floating_on", 0.3), ("a", 0, 2, "Floating on", 0.2)]  # ranks 48, 49
    rows += [("a", 0, 3, "never counted", 0.1)]  # rank 50: outside the top-50
    rows += [("b", 0, 1, "other image", 0.9)]  # image without GT: not evaluated
    scenes = [scene("a", labels, [(0, 1, "on")]), scene("b", ["x", "y"], [])]
    constrained = run(scenes, rows, ks=(20,), train=("on", "near")).metrics
    # every later row addresses a pair that already has a better "on": the constraint drops them
    assert (constrained["unique_predicates"], constrained["unseen_predicates"]) == (1, 0)
    result = run(scenes, rows, ks=(20,), train=("on", "near"), graph_constraint=False)
    assert result.metrics["unique_predicates"] == 2  # on, floating on
    assert result.metrics["unseen_predicates"] == 1  # floating on
    assert result.predicted_predicates.to_dict("list") == {
        "predicate": ["on", "floating on"],
        "predictions": [48, 2],
        "seen_in_training": [True, False],
    }


def test_metric_keys_and_units():
    scenes = [scene("a", ["man", "horse"], [(0, 1, "on")])]
    metrics = run(scenes, [("a", 0, 1, "on", 0.5)], ks=(20, 50, 100), vocabulary=["on", "near"]).metrics
    families = ("R", "mR", "mR_vocab", "gR", "mgR")
    assert list(metrics) == [
        *(f"{prefix}@{k}" for prefix in families for k in (20, 50, 100)),
        *(f"ng{prefix}@{k}" for prefix in families for k in (20, 50, 100)),
        "unique_predicates",
        "unseen_predicates",
        "images",
        "gt_relations",
        "graph_constraint",
    ]
    assert metrics["R@20"] == 100.0  # percent, not a fraction
    assert metrics["mR_vocab@20"] == 50.0  # "near" is in the vocabulary but not in the GT: counts 0
    assert metrics["graph_constraint"] is True
    assert "mR_vocab@20" not in run(scenes, [("a", 0, 1, "on", 0.5)], ks=(20,)).metrics  # no vocabulary, no such key


def test_box_iou_values():
    boxes_a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    boxes_b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=float)
    assert box_iou(boxes_a, boxes_b).tolist() == [pytest.approx(50 / 150), 0.0, 0.0]


def detected_predictions(rows: list[tuple]) -> pd.DataFrame:
    columns = ["image_id", "subj", "obj", "predicate", "score", "subj_box", "obj_box", "subj_label", "obj_label"]
    return pd.DataFrame(rows, columns=columns)


def test_detected_boxes_match_at_iou_half_with_agreeing_labels():
    gt_boxes = [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]
    scenes = pd.DataFrame([scene("a", ["man", "horse"], [(0, 1, "on")], boxes=gt_boxes)])
    exactly_half = [0.0, 0.0, 10.0, 20.0]  # IoU with [0,0,10,10] = 100 / 200
    just_below = [0.0, 0.0, 10.0, 20.1]  # 100 / 201
    horse_box = [20.0, 0.0, 30.0, 10.0]

    def recall(subject_box, subject_label="Man"):
        table = detected_predictions([("a", 0, 1, "on", 0.9, subject_box, horse_box, subject_label, "horse")])
        return evaluate_predictions(scenes, table, ["on"], ks=(1,), similarity=no_similarity).metrics["R@1"]

    assert recall(exactly_half) == 100.0  # labels compared normalised: Man == man
    assert recall(just_below) == 0.0
    assert recall(gt_boxes[0], subject_label="woman") == 0.0


def test_detected_mode_drops_repeats_on_the_same_boxes_and_keeps_distinct_boxes():
    gt_boxes = [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]
    scenes = pd.DataFrame([scene("a", ["man", "horse"], [(0, 1, "on")], boxes=gt_boxes)])
    far = [50.0, 50.0, 60.0, 60.0]
    table = detected_predictions(
        [
            ("a", 0, 1, "near", 0.9, gt_boxes[0], gt_boxes[1], "man", "horse"),
            ("a", 0, 1, "near", 0.8, gt_boxes[0], gt_boxes[1], "man", "horse"),  # repeat: dropped
            ("a", 2, 1, "on", 0.7, far, gt_boxes[1], "man", "horse"),  # another detection, no overlap
            ("a", 0, 1, "on", 0.6, gt_boxes[0], gt_boxes[1], "man", "horse"),
        ]
    )
    metrics = evaluate_predictions(scenes, table, ["on"], ks=(2, 3), similarity=no_similarity).metrics
    assert (metrics["ngR@2"], metrics["ngR@3"]) == (0.0, 100.0)
    assert metrics["R@3"] == 0.0  # the pair on those boxes keeps its best prediction only: near


def test_similarity_is_only_asked_for_predictions_ranked_above_the_best_exact_one():
    scenes = [scene("a", ["man", "hat"], [(0, 1, "wearing")])]
    rows = [("a", 0, 1, "wears", 0.9), ("a", 0, 1, "wearing", 0.8), ("a", 0, 1, "has", 0.7)]
    asked: list[str] = []

    def injected(subjects, predicted, ground_truth, objects):
        asked.extend(predicted)
        return np.full(len(predicted), 0.99)

    metrics = run(scenes, rows, ks=(1, 2, 3), similarity=injected).metrics
    assert asked == ["wears"]  # "has" ranks below the exact "wearing": it cannot change any gR@K; asked once for both rankings
    assert (metrics["ngR@1"], metrics["ngR@2"], metrics["nggR@1"]) == (0.0, 100.0, 100.0)
    assert (metrics["R@2"], metrics["gR@1"]) == (0.0, 100.0)  # constrained: only "wears" is ranked


def test_chance_level_is_the_average_over_every_random_answer_and_order():
    # 3 annotated pairs (2 in image a), 4 training predicates; 'under' is unseen, so never hit
    scenes = [scene("a", ["man", "horse", "hat"], [(0, 1, "on"), (2, 0, "near")]), scene("b", ["cup", "table"], [(0, 1, "under")])]
    train = ("on", "near", "has", "wearing")
    chance = chance_metrics(pd.DataFrame(scenes), train, ks=(1, 20), vocabulary=["on", "near", "under", "beside"])
    # K=20: image a recalls 1/4 on average, b nothing -> R = 12.5; predicates on 1/4, near 1/4, under 0 -> mR = 16.67
    assert chance["R@20"] == pytest.approx(12.5) and chance["mR@20"] == pytest.approx(100 / 6)
    # K=1: image a ranks one of its two answers (random order) -> each of its relations is hit with 1/4 * 1/2
    assert chance["R@1"] == pytest.approx(6.25) and chance["mgR@1"] == pytest.approx(100 / 12)
    assert chance["mR_vocab@20"] == pytest.approx(12.5)  # (1/4 + 1/4 + 0 + 0) / 4 vocabulary predicates
    assert all(chance[f"ng{key}"] == chance[key] for key in ("R@1", "mR@20", "mR_vocab@1", "gR@20"))  # one answer per pair
    # exact check through the evaluator: every way of answering one training predicate per pair, in every order of
    # scores, as copies of the two images in one table (every copy weighs the same in R, mR and mR_vocab)
    pairs = [("a", 0, 1), ("a", 2, 0), ("b", 0, 1)]
    copies, rows = [], []
    for n, (answer, order) in enumerate(itertools.product(itertools.product(train, repeat=3), itertools.permutations(range(3)))):
        copies += [{**image, "image_id": f"{n}-{image['image_id']}"} for image in scenes]
        rows += [(f"{n}-{image}", subj, obj, predicate, float(score)) for (image, subj, obj), predicate, score in zip(pairs, answer, order)]
    metrics = run(copies, rows, ks=(1, 20), train=train, vocabulary=["on", "near", "under", "beside"]).metrics
    keys = ("R@1", "R@20", "mR@1", "mR@20", "mR_vocab@1", "ngR@1")
    assert {key: metrics[key] for key in keys} == pytest.approx({key: chance[key] for key in keys})
