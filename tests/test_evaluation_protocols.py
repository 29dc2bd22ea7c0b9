"""Graph-constrained vs unconstrained recall and mR_vocab (DESIGN §7) against a literal transcription.

`reference_metrics` below is DESIGN §7 read sentence by sentence, one image at
a time with plain loops; the vectorised evaluator must agree with it on
random scenes and predictions (hypothesis), ties in score and repeated
triplets included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reltune.errors import InputError
from reltune.evaluation.matching import RememberedSimilarity
from reltune.evaluation.metrics import evaluate_predictions
from reltune.text import normalise_predicate

PREDICATES = ("on", "near", "has", "with", "wears", "wearing")
SIMILAR = ({"wears", "wearing"}, {"has", "with"})
THRESHOLD = 0.95


def toy_similarity(subjects, predicted, truth, objects) -> np.ndarray:
    """0.97 for the two synonym pairs, exactly the threshold for 'near'/'on' on a 'dog', far below otherwise."""
    values = []
    for subject, p, g, _ in zip(subjects, predicted, truth, objects):
        if {p, g} in SIMILAR:
            values.append(0.97)
        elif {p, g} == {"near", "on"} and subject == "dog":
            values.append(THRESHOLD)
        else:
            values.append(0.3)
    return np.array(values)


def ranked_for_image(predictions: list[tuple], constrained: bool, k: int) -> list[tuple]:
    """Sort by score (stable), keep each pair's first if constrained, drop repeated triplets, keep the top K."""
    ordered = sorted(predictions, key=lambda row: -row[3])
    kept, pairs, triplets = [], set(), set()
    for subj, obj, predicate, _ in ordered:
        if constrained and (subj, obj) in pairs:
            continue
        if (subj, obj, predicate) in triplets:
            continue
        pairs.add((subj, obj))
        triplets.add((subj, obj, predicate))
        kept.append((subj, obj, predicate))
    return kept[:k]


def reference_metrics(scenes: list[dict], rows: list[tuple], k: int, vocabulary: list[str], constrained: bool) -> dict[str, float]:
    per_image = []  # (predicate, exact hit, generalised hit) per GT relation, per image
    for image in scenes:
        if not image["relations"]:
            continue
        labels = image["labels"]
        predictions = [(s, o, normalise_predicate(p), score) for image_id, s, o, p, score in rows if image_id == image["image_id"]]
        kept = ranked_for_image(predictions, constrained, k)
        hits = []
        for relation in image["relations"]:
            s, o, p = relation["subj"], relation["obj"], normalise_predicate(relation["predicate"])
            on_pair = [q for (ks, ko, q) in kept if (ks, ko) == (s, o)]
            exact = p in on_pair
            similar = any(toy_similarity([labels[s]], [q], [p], [labels[o]])[0] >= THRESHOLD for q in on_pair if q != p)
            hits.append((p, exact, exact or similar))
        per_image.append(hits)
    metrics = {}
    for name, column in (("R", 1), ("gR", 2)):
        metrics[f"{name}@{k}"] = 100 * float(np.mean([np.mean([hit[column] for hit in hits]) for hits in per_image]))
    for name, column in (("mR", 1), ("mgR", 2)):
        by_predicate = {}
        for hits in per_image:
            for predicate in {hit[0] for hit in hits}:
                mine = [hit[column] for hit in hits if hit[0] == predicate]
                by_predicate.setdefault(predicate, []).append(sum(mine) / len(mine))
        means = {predicate: float(np.mean(values)) for predicate, values in by_predicate.items()}
        metrics[f"{name}@{k}"] = 100 * float(np.mean(list(means.values())))
        if name == "mR":
            metrics[f"mR_vocab@{k}"] = 100 * sum(means.get(predicate, 0.0) for predicate in vocabulary) / len(vocabulary)
    return metrics


@st.composite
def scenes_and_predictions(draw):
    scenes, rows = [], []
    for index in range(draw(st.integers(1, 4))):
        objects = draw(st.integers(2, 4))
        labels = draw(st.lists(st.sampled_from(["man", "dog", "hat", "table"]), min_size=objects, max_size=objects))
        object_index = st.integers(0, objects - 1)
        relations = draw(st.lists(st.tuples(object_index, object_index, st.sampled_from(PREDICATES)), max_size=4))
        boxes = [[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(objects)]
        scenes.append(
            {
                "image_id": f"i{index}",
                "image_path": f"i{index}.png",
                "width": 100,
                "height": 100,
                "boxes": boxes,
                "labels": labels,
                "relations": [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations],
            }
        )
        spelling = st.sampled_from(PREDICATES + ("Near", "wears_", "ON"))  # repeats once normalised
        scores = st.sampled_from([0.1, 0.5, 0.5, 0.9])  # ties are common
        for s, o, p, score in draw(st.lists(st.tuples(object_index, object_index, spelling, scores), max_size=8)):
            rows.append((f"i{index}", s, o, p, score))
    if not any(scene["relations"] for scene in scenes):
        scenes[0]["relations"] = [{"subj": 0, "obj": 1, "predicate": "on"}]
    return scenes, rows


@settings(max_examples=40, deadline=None)
@given(data=scenes_and_predictions(), k=st.sampled_from([1, 2, 3, 5]))
def test_evaluator_equals_the_literal_reading_of_design_7(data, k):
    scenes, rows = data
    vocabulary = [*PREDICATES, "under"]  # "under" never occurs: counts 0 in mR_vocab
    table = pd.DataFrame(rows, columns=["image_id", "subj", "obj", "predicate", "score"])
    metrics = evaluate_predictions(
        pd.DataFrame(scenes), table, PREDICATES, ks=(k,), similarity=toy_similarity, similarity_threshold=THRESHOLD, vocabulary=vocabulary
    ).metrics
    for constrained, prefix in ((True, ""), (False, "ng")):
        expected = reference_metrics(scenes, rows, k, vocabulary, constrained)
        assert {key: metrics[f"{prefix}{key}"] for key in expected} == pytest.approx(expected)


def scene(image_id: str, labels: list[str], relations: list[tuple[int, int, str]]) -> dict:
    boxes = [[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(len(labels))]
    return {"image_id": image_id, "image_path": "x", "width": 9, "height": 9, "boxes": boxes, "labels": labels,
            "relations": [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations]}  # fmt: skip


def test_constraint_keeps_the_best_scored_predicate_of_each_pair():
    # the GT "on" is the pair's second-best answer: recalled only without the constraint
    scenes = pd.DataFrame([scene("a", ["cup", "table", "man"], [(0, 1, "on"), (2, 1, "near")])])
    rows = pd.DataFrame(
        [("a", 0, 1, "under", 0.9), ("a", 0, 1, "on", 0.8), ("a", 2, 1, "near", 0.7)], columns=["image_id", "subj", "obj", "predicate", "score"]
    )
    metrics = evaluate_predictions(scenes, rows, ["on", "near"], ks=(2, 3), similarity=toy_similarity).metrics
    # constrained ranking: under (0.9), near (0.7) -> only "near" of 2 GT relations, already at K=2
    assert (metrics["R@2"], metrics["R@3"]) == (50.0, 50.0)
    # unconstrained: under, on, near -> "on" at rank 1, "near" at rank 2
    assert (metrics["ngR@2"], metrics["ngR@3"]) == (50.0, 100.0)
    assert (metrics["mR@3"], metrics["ngmR@3"]) == (50.0, 100.0)


def test_mean_recall_over_the_vocabulary_counts_absent_predicates_as_zero():
    scenes = pd.DataFrame([scene("a", ["cup", "table"], [(0, 1, "on")]), scene("b", ["man", "hat"], [(0, 1, "wearing")])])
    rows = pd.DataFrame([("a", 0, 1, "on", 0.9)], columns=["image_id", "subj", "obj", "predicate", "score"])
    vocabulary = ["On", "wearing", "parked_on", "under"]  # normalised like every predicate
    metrics = evaluate_predictions(scenes, rows, ["on"], ks=(1,), similarity=toy_similarity, vocabulary=vocabulary).metrics
    assert metrics["mR@1"] == 50.0  # over the 2 predicates present: on 1, wearing 0
    assert metrics["mR_vocab@1"] == 25.0  # over the 4 of the vocabulary
    assert metrics["ngmR_vocab@1"] == 25.0


def test_a_gt_predicate_outside_the_vocabulary_is_an_error_naming_it():
    scenes = pd.DataFrame([scene("a", ["cup", "table"], [(0, 1, "on")]), scene("b", ["man", "hat"], [(0, 1, "wearing")])])
    rows = pd.DataFrame([("a", 0, 1, "on", 0.9)], columns=["image_id", "subj", "obj", "predicate", "score"])
    with pytest.raises(InputError, match=r"^vocab.json \[image 'b'\]: GT predicate 'wearing' is not in the vocabulary"):
        evaluate_predictions(scenes, rows, ["on"], similarity=toy_similarity, vocabulary=["on"], vocab_file="vocab.json")


def test_remembered_similarity_asks_each_combination_once():
    asked = []

    def similarity(subjects, predicted, truth, objects):
        asked.extend(predicted)
        return np.array([len(p) / 10 for p in predicted])

    remembered = RememberedSimilarity(similarity)
    first = remembered(["a", "a"], ["on", "near"], ["x", "x"], ["b", "b"])
    second = remembered(["a", "a", "a"], ["near", "under", "near"], ["x", "x", "x"], ["b", "b", "b"])
    assert first.tolist() == [0.2, 0.4] and second.tolist() == [0.4, 0.5, 0.4]
    assert asked == ["on", "near", "under"]
