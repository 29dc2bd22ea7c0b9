"""benchmarks/category_answers.py: the per-category "Yes" shares, top answers and unseen-class split it prints."""

import pandas as pd
import pytest

from benchmark_helpers import load_benchmark

CATEGORIES = {"above": "spatial", "below": "spatial", "has": "possessive", "riding": "semantic", "on": "spatial"}
PREDICTIONS = pd.DataFrame(
    {
        "image_id": ["1", "1", "1", "2"],
        "subj": [0, 0, 1, 0],
        "obj": [1, 1, 2, 1],
        "predicate": ["above", "riding", "has", "below"],
        "score": [0.6, 0.9, 0.8, 0.7],
    }
)


@pytest.fixture(scope="module")
def category_answers():
    return load_benchmark("category_answers")


@pytest.fixture()
def tables(tmp_path, category_answers):
    """Ground truth and "Yes" answers, read the way `evaluate` reads them."""
    relations = [
        [{"subj": 0, "obj": 1, "predicate": "above"}, {"subj": 1, "obj": 2, "predicate": "has"}],
        [{"subj": 0, "obj": 1, "predicate": "above"}],
        [],
    ]
    labels = [["ball", "box", "hat"], ["fox", "moon"], ["ball"]]
    boxes = [[[0.0, 0.0, 1.0, 1.0]] * len(image_labels) for image_labels in labels]
    scenes = tmp_path / "test.parquet"
    pd.DataFrame({"image_id": ["1", "2", "3"], "labels": labels, "boxes": boxes, "relations": relations}).to_parquet(scenes)
    predictions = tmp_path / "predictions.parquet"
    PREDICTIONS.to_parquet(predictions)
    return category_answers.read_tables(scenes, predictions)


@pytest.fixture()
def pairs(tables, category_answers) -> pd.DataFrame:
    return category_answers.annotated_pairs(tables[0], CATEGORIES, seen_objects={"ball", "box", "hat"})


@pytest.fixture()
def answers(tables) -> pd.DataFrame:
    return tables[1]


def test_pairs_carry_category_and_unseen_count(pairs):
    assert pairs["truth"].tolist() == ["above", "has", "above"]
    assert pairs["truth_category"].tolist() == ["spatial", "possessive", "spatial"]
    assert pairs["unseen_objects"].tolist() == [0, 0, 2]


def test_yes_shares_count_each_pair_once(pairs, answers, category_answers):
    shares = {row["annotated category"]: row for row in category_answers.yes_shares(pairs, answers, CATEGORIES)}
    spatial = shares["spatial (2)"]
    # image 1's above pair has a spatial and a semantic "Yes", image 2's a spatial one only
    assert (spatial['spatial "Yes"'], spatial['possessive "Yes"'], spatial['semantic "Yes"']) == ("1.000", "0.000", "0.500")
    assert shares["possessive (1)"]['possessive "Yes"'] == "1.000"


def test_top_answers_take_the_best_scored_answer(pairs, answers, category_answers):
    top = category_answers.top_answers(pairs, answers, ["above", "has", "left of"])
    assert top[0] == {"annotated": "above (2)", "top-ranked answers": "riding 1, below 1"}
    assert top[1]["top-ranked answers"] == "has 1"
    assert top[2] == {"annotated": "left of (0)", "top-ranked answers": ""}


def test_unseen_object_rows_split_yes_and_recall(pairs, answers, category_answers):
    kept = answers[answers["row"].isin([0, 2])]
    rows = category_answers.unseen_object_rows(pairs, kept, seen_predicates={"above", "has"})
    # only prediction rows 0 and 2 kept: image 1's pairs are answered above and has (both right),
    # image 2's pair (two unseen classes) has no answer
    assert rows == [
        {"unseen classes in pair": 0, "pairs": 2, 'any "Yes"': "1.000", "pairs of seen predicates": 2, "their top-1 recall": "1.000"},
        {"unseen classes in pair": 2, "pairs": 1, 'any "Yes"': "0.000", "pairs of seen predicates": 1, "their top-1 recall": "0.000"},
    ]


def test_top_category_row_counts_the_top_ranked_answer_of_each_pair(pairs, answers, category_answers):
    row = category_answers.top_category_row(pairs, answers, CATEGORIES)
    # image 1's above pair: riding 0.9 beats above 0.6 (semantic, not its own); its has pair: has (own);
    # image 2's above pair: below (spatial, its own category, the wrong predicate)
    assert row["top semantic"] == pytest.approx(1 / 3) and row["top possessive"] == pytest.approx(1 / 3)
    assert row["top spatial"] == pytest.approx(1 / 3) and row["top no Yes"] == 0.0
    assert row["own category"] == pytest.approx(2 / 3)
    assert row['spatial pairs: semantic "Yes"'] == 0.5  # one of the two spatial pairs has a semantic "Yes"
    unanswered = category_answers.top_category_row(pairs, answers[answers["row"] == 2], CATEGORIES)
    assert unanswered["top no Yes"] == pytest.approx(2 / 3) and unanswered['spatial pairs: semantic "Yes"'] == 0.0


def test_malformed_predictions_are_refused_naming_the_file(tmp_path, category_answers):
    scenes = tmp_path / "test.parquet"
    pd.DataFrame({"image_id": ["1"], "labels": [["ball", "box"]], "boxes": [[[0.0, 0.0, 1.0, 1.0]] * 2], "relations": [[{"subj": 0, "obj": 1, "predicate": "on"}]]}).to_parquet(scenes)
    predictions = tmp_path / "predictions.parquet"
    PREDICTIONS.iloc[[3]].to_parquet(predictions)  # image 2 is not in the scenes
    with pytest.raises(Exception, match="predictions.parquet.*image_id '2' is not in the scenes"):
        category_answers.read_tables(scenes, predictions)
