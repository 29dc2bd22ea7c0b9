"""Hand-computed cases for every rule of DESIGN §7 (metrics)."""

from __future__ import annotations

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
    # ranks: has (0.9), near (0.5, earlier row), on (0.5) -> "on" is third
    assert (metrics["R@1"], metrics["R@2"], metrics["R@3"]) == (0.0, 0.0, 100.0)


def test_repeated_predictions_are_dropped_before_top_k():
    scenes = [scene("a", ["man", "horse"], [(0, 1, "on")])]
    rows = [
        ("a", 0, 1, "near", 0.9),
        ("a", 0, 1, "Near", 0.8),  # the same triplet once normalised: dropped
        ("a", 0, 1, "on", 0.7),
    ]
    metrics = run(scenes, rows).metrics
    assert metrics["R@1"] == 0.0
    assert metrics["R@2"] == 100.0  # without dropping, top-2 would be near, near


def test_several_gt_relations_on_one_pair_and_one_prediction_recalls_one():
    scenes = [scene("a", ["man", "horse", "hat"], [(0, 1, "on"), (0, 1, "near"), (0, 2, "has")])]
    rows = [("a", 0, 1, "on", 0.9), ("a", 0, 1, "near", 0.8), ("a", 1, 0, "has", 0.7)]
    result = run(scenes, rows, train=("on", "near", "has"))
    assert result.metrics["R@1"] == pytest.approx(100 / 3)
    assert result.metrics["R@3"] == pytest.approx(200 / 3)  # (1, 0, has) is the reversed pair
    assert result.ground_truth["exact_rank"].tolist() == [0.0, 1.0, np.inf]


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
    assert (metrics["gR@1"], metrics["gR@2"], metrics["R@2"]) == (0.0, 100.0, 0.0)


def test_unique_and_unseen_predicates_count_only_the_top_50():
    labels = [f"o{i}" for i in range(9)]
    pairs = [(s, o) for s in range(9) for o in range(9) if s != o]
    rows = [("a", s, o, "on", 1.0 - n / 100) for n, (s, o) in enumerate(pairs[:48])]
    rows += [("a", 0, 1, "floating_on", 0.3), ("a", 0, 2, "Floating on", 0.2)]  # ranks 48, 49
    rows += [("a", 0, 3, "never counted", 0.1)]  # rank 50: outside the top-50
    rows += [("b", 0, 1, "other image", 0.9)]  # image without GT: not evaluated
    scenes = [scene("a", labels, [(0, 1, "on")]), scene("b", ["x", "y"], [])]
    result = run(scenes, rows, ks=(20,), train=("on", "near"))
    assert result.metrics["unique_predicates"] == 2  # on, floating on
    assert result.metrics["unseen_predicates"] == 1  # floating on
    assert result.predicted_predicates.to_dict("list") == {
        "predicate": ["on", "floating on"],
        "predictions": [48, 2],
        "seen_in_training": [True, False],
    }


def test_metric_keys_and_units():
    scenes = [scene("a", ["man", "horse"], [(0, 1, "on")])]
    metrics = run(scenes, [("a", 0, 1, "on", 0.5)], ks=(20, 50, 100)).metrics
    assert list(metrics) == [
        *(f"{prefix}@{k}" for prefix in ("R", "mR", "gR", "mgR") for k in (20, 50, 100)),
        "unique_predicates",
        "unseen_predicates",
        "images",
        "gt_relations",
    ]
    assert metrics["R@20"] == 100.0  # percent, not a fraction


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
    assert (metrics["R@2"], metrics["R@3"]) == (0.0, 100.0)


def test_similarity_is_only_asked_for_predictions_ranked_above_the_best_exact_one():
    scenes = [scene("a", ["man", "hat"], [(0, 1, "wearing")])]
    rows = [("a", 0, 1, "wears", 0.9), ("a", 0, 1, "wearing", 0.8), ("a", 0, 1, "has", 0.7)]
    asked: list[str] = []

    def injected(subjects, predicted, ground_truth, objects):
        asked.extend(predicted)
        return np.full(len(predicted), 0.99)

    metrics = run(scenes, rows, ks=(1, 2, 3), similarity=injected).metrics
    assert asked == ["wears"]  # "has" ranks below the exact "wearing": it cannot change any gR@K
    assert (metrics["R@1"], metrics["R@2"], metrics["gR@1"]) == (0.0, 100.0, 100.0)


def test_chance_level_is_the_average_over_every_random_answer():
    # 3 annotated pairs, 4 training predicates; 'under' is unseen, so never hit
    scenes = [scene("a", ["man", "horse", "hat"], [(0, 1, "on"), (2, 0, "near")]), scene("b", ["cup", "table"], [(0, 1, "under")])]
    train = ("on", "near", "has", "wearing")
    chance = chance_metrics(pd.DataFrame(scenes), train, ks=(1, 20))
    # hand: image a recalls 1/4 on average, b nothing -> R = 12.5; predicates on 1/4, near 1/4, under 0 -> mR = 16.67
    assert chance["R@1"] == pytest.approx(12.5) and chance["R@20"] == pytest.approx(12.5)
    assert chance["mR@20"] == pytest.approx(100 / 6) and chance["mgR@1"] == pytest.approx(100 / 6)
    # exact check through the evaluator: average over all 4^3 ways of answering one training predicate per pair
    pairs = [("a", 0, 1), ("a", 2, 0), ("b", 0, 1)]
    totals = {"R@20": 0.0, "mR@20": 0.0}
    answers = [(p1, p2, p3) for p1 in train for p2 in train for p3 in train]
    for answer in answers:
        rows = [(image, subj, obj, predicate, 1.0) for (image, subj, obj), predicate in zip(pairs, answer)]
        metrics = run(scenes, rows, ks=(20,), train=train).metrics
        for key in totals:
            totals[key] += metrics[key] / len(answers)
    assert totals["R@20"] == pytest.approx(chance["R@20"]) and totals["mR@20"] == pytest.approx(chance["mR@20"])
