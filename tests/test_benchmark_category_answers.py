"""benchmarks/category_answers.py: the per-category "Yes" shares and top answers it prints."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "category_answers.py"


@pytest.fixture(scope="module")
def category_answers():
    spec = importlib.util.spec_from_file_location("category_answers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scenes(tmp_path: Path) -> Path:
    relations = [
        [{"subj": 0, "obj": 1, "predicate": "above"}, {"subj": 1, "obj": 2, "predicate": "has"}],
        [{"subj": 0, "obj": 1, "predicate": "above"}],
        [],
    ]
    path = tmp_path / "test.parquet"
    pd.DataFrame({"image_id": ["1", "2", "3"], "relations": relations}).to_parquet(path)
    return path


def test_yes_shares_and_top_answers_count_each_pair_once(tmp_path, category_answers):
    pairs = category_answers.annotated_pairs(_scenes(tmp_path))
    assert pairs["truth"].tolist() == ["above", "has", "above"]
    assert pairs["truth_category"].tolist() == ["spatial", "possessive", "spatial"]
    predictions = pd.DataFrame(
        {
            "image_id": ["1", "1", "1", "2", "9"],
            "subj": [0, 0, 1, 0, 0],
            "obj": [1, 1, 2, 1, 1],
            "predicate": ["above", "riding", "has", "below", "on"],
            "score": [0.6, 0.9, 0.8, 0.7, 0.99],
        }
    )
    shares = {row["annotated category"]: row for row in category_answers.yes_shares(pairs, predictions)}
    spatial = shares["spatial (2)"]
    # image 1's above pair has a spatial and a semantic "Yes", image 2's a spatial one only
    assert (spatial['spatial "Yes"'], spatial['possessive "Yes"'], spatial['semantic "Yes"']) == ("1.000", "0.000", "0.500")
    assert shares["possessive (1)"]['possessive "Yes"'] == "1.000"
    top = category_answers.top_answers(pairs, predictions, ["above", "has", "left of"])
    assert top[0] == {"annotated": "above (2)", "top-ranked answers": "riding 1, below 1"}
    assert top[1]["top-ranked answers"] == "has 1"
    assert top[2] == {"annotated": "left of (0)", "top-ranked answers": ""}
