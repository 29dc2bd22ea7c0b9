"""Scene-table contract: validation, reading and writing (used by other areas)."""

import json

import pandas as pd
import pytest

from reltune.data.scenes import read_scenes, validate_scene_table, write_scenes
from reltune.errors import InputError

VOCAB = {
    "objects": ["man", "horse"],
    "predicates": ["riding", "near"],
    "categories": {"riding": "semantic", "near": "spatial"},
    "image_root": "images",
}


def table(**overrides):
    rows = {
        "image_id": ["1", "2"],
        "image_path": ["1.jpg", "2.jpg"],
        "width": [100, 200],
        "height": [80, 100],
        "boxes": [[[0.0, 0.0, 50.0, 80.0], [10.0, 10.0, 100.0, 40.0]], [[5.0, 5.0, 6.0, 6.0]]],
        "labels": [["man", "horse"], ["man"]],
        "relations": [[{"subj": 0, "obj": 1, "predicate": "riding"}], []],
    }
    rows.update(overrides)
    return pd.DataFrame(rows)


def test_valid_table_round_trips(tmp_path):
    write_scenes(tmp_path, {"train": table(), "val": table().iloc[:0], "test": table()}, VOCAB)
    train, vocab = read_scenes(tmp_path, "train")
    assert vocab == VOCAB
    assert train["image_id"].tolist() == ["1", "2"]
    assert [list(box) for box in train["boxes"][0]] == [[0.0, 0.0, 50.0, 80.0], [10.0, 10.0, 100.0, 40.0]]
    assert list(train["relations"][0][0].values()) == [0, 1, "riding"]
    assert len(read_scenes(tmp_path, "val")[0]) == 0


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"image_id": ["1", "1"]}, r"\[row 1, image 1\]: duplicate image_id \(also row 0\)"),
        ({"width": [100, 0]}, r"\[row 1, image 2\]: image size 0.0 x 100.0 is not positive"),
        ({"labels": [["man"], ["man"]]}, r"\[row 0, image 1\]: 2 boxes but 1 labels"),
        ({"boxes": [[[0.0, 0.0, 50.0, 80.0], [10.0, 10.0, 10.0, 40.0]], [[5.0, 5.0, 6.0, 6.0]]]}, r"\[row 0, image 1\]: box 1 .* degenerate or outside"),
        ({"boxes": [[[0.0, 0.0, 50.0, 80.0], [10.0, 10.0, 100.0, 40.0]], [[5.0, 5.0, 6.0, 101.0]]]}, r"\[row 1, image 2\]: box 0 .* outside the 200 x 100 image"),
        ({"boxes": [[[0.0, 0.0, 50.0], [10.0, 10.0, 100.0, 40.0]], [[5.0, 5.0, 6.0, 6.0]]]}, r"\[row 0, image 1\]: box 0 does not have 4 numbers"),
        ({"relations": [[{"subj": 0, "obj": 2, "predicate": "riding"}], []]}, r"\[row 0, image 1\]: relation 0 refers to box \(0, 2\)"),
        ({"relations": [[], [{"subj": 0, "obj": 0, "predicate": ""}]]}, r"\[row 1, image 2\]: relation 0 has an empty predicate"),
        ({"labels": [["man", "cow"], ["man"]]}, r"\[row 0, image 1\]: label 'cow' is not in the vocabulary"),
        ({"relations": [[{"subj": 0, "obj": 1, "predicate": "eating"}], []]}, r"\[row 0, image 1\]: predicate 'eating' is not in the vocabulary"),
    ],
    ids=["duplicate-id", "zero-width", "label-count", "degenerate-box", "box-outside", "short-box", "relation-range",
         "empty-predicate", "unknown-label", "unknown-predicate"],
)
def test_validation_names_row_image_and_problem(overrides, message):
    with pytest.raises(InputError, match=r"scenes.parquet " + message):
        validate_scene_table(table(**overrides), "scenes.parquet", VOCAB)


def test_vocab_and_missing_columns_are_checked(tmp_path):
    with pytest.raises(InputError, match=r"missing columns \['relations'\]"):
        validate_scene_table(table().drop(columns=["relations"]), "t.parquet")
    bad_vocab = dict(VOCAB, categories={"riding": "semantic"})
    with pytest.raises(InputError, match=r"vocab.json: predicate 'near' has no category"):
        write_scenes(tmp_path, {"train": table()}, bad_vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    with pytest.raises(InputError, match=r"test.parquet: file not found"):
        read_scenes(tmp_path, "test")
    (tmp_path / "test.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(InputError, match=r"test.parquet: not a readable parquet file"):
        read_scenes(tmp_path, "test")
