"""GQA200 (SHA-GCL json) and Open Images (PySGG json) importers on exact fixtures."""

import json

import pandas as pd
import pytest

from reltune.cli import main
from reltune.data.importer import import_scenes
from reltune.errors import InputError


def rows_of(table):
    return {
        row["image_id"]: (
            row["image_path"],
            row["width"],
            row["height"],
            row["boxes"],
            row["labels"],
            [(r["subj"], r["obj"], r["predicate"]) for r in row["relations"]],
        )
        for row in table.to_pylist()
    }


GQA_TRAIN = [
    ("2001.jpg", 640, 480, [[10, 20, 110, 220], [50, 60, 90, 100]], [1, 2], [[0, 1, 1]]),
    ("2002.jpg", 500, 400, [[0, 0, 100, 100]], [3], []),
    ("2003.jpg", 300, 200, [[5.5, 6.5, 100.25, 150], [0, 0, 300, 200]], [3, 1], [[1, 0, 3]]),
]
GQA_TEST = [
    ("3001.jpg", 800, 600, [[100, 100, 300, 300], [300, 300, 500, 500]], [1, 3], [[0, 1, 2]]),
    ("3002.jpg", 400, 300, [], [], []),
    ("3003.jpg", 640, 640, [[1, 2, 3, 4], [10, 10, 20, 20]], [2, 1], [[0, 1, 3], [1, 0, 1]]),
]


def write_gqa(root, train=GQA_TRAIN, test=GQA_TEST, drop_key=None):
    root.mkdir(parents=True, exist_ok=True)
    info = {
        "ind_to_classes": ["__background__", "man", "shirt", "table"],
        "ind_to_predicates": ["__background__", "wearing", "on", "near"],
    }
    (root / "GQA_200_ID_Info.json").write_text(json.dumps(info))
    for name, images in (("GQA_200_Train.json", train), ("GQA_200_Test.json", test)):
        data = {
            "filenames_all": [f for f, *_ in images],
            "img_info_all": [{"width": w, "height": h} for _, w, h, *_ in images],
            "gt_boxes_all": [b for *_, b, _, _ in images],
            "gt_classes_all": [c for *_, c, _ in images],
            "relationships_all": [r for *_, r in images],
        }
        data.pop(drop_key, None)
        (root / name).write_text(json.dumps(data))
    (root / "images").mkdir(exist_ok=True)
    for filename, *_ in train + test:
        (root / "images" / filename).write_bytes(b"jpeg")
    return root


def test_gqa200_exact_import_and_val_is_first_of_test(tmp_path):
    src = write_gqa(tmp_path / "gqa")
    result = import_scenes("gqa200", src, val_size=1)
    splits = {name: rows_of(table) for name, table in result.splits.items()}
    assert splits["train"] == {
        "2001": ("images/2001.jpg", 640, 480, [[10.0, 20.0, 110.0, 220.0], [50.0, 60.0, 90.0, 100.0]], ["man", "shirt"], [(0, 1, "wearing")]),
        "2003": ("images/2003.jpg", 300, 200, [[5.5, 6.5, 100.25, 150.0], [0.0, 0.0, 300.0, 200.0]], ["table", "man"], [(1, 0, "near")]),
    }
    assert list(splits["val"]) == ["3001"]
    assert list(splits["test"]) == ["3001", "3003"]  # SHA-GCL: val is a subset of the whole Test file
    assert splits["test"]["3003"][4:] == (["shirt", "man"], [(0, 1, "near"), (1, 0, "wearing")])
    assert result.vocab["objects"] == ["man", "shirt", "table"]
    assert result.vocab["categories"] == {"wearing": "possessive", "on": "spatial", "near": "spatial"}
    dropped = result.report["dropped_by_convention"]
    assert dropped["train"]["no_relations"]["image_ids"] == ["2002"]
    assert dropped["test"]["no_boxes"]["image_ids"] == ["3002"]


def test_gqa200_held_in_takes_val_from_train_never_from_test(tmp_path):
    """As the held-in dataset, GQA200's val (which steers ART) must not be test images."""
    src = write_gqa(tmp_path / "gqa")
    held_out = import_scenes("gqa200", src, val_size=1)
    assert held_out.report["val_uses_test_images"] is True
    out = tmp_path / "scenes"
    assert main(["data", "import", "--format", "gqa200", "--src", str(src), "--out", str(out),
                 "--val-size", "1", "--held-in-dataset", "gqa200", "--check-images", "false"]) == 0
    splits = {name: list(pd.read_parquet(out / f"{name}.parquet")["image_id"]) for name in ("train", "val", "test")}
    assert splits == {"train": ["2003"], "val": ["2001"], "test": ["3001", "3003"]}
    report = json.loads((out / "import_report.json").read_text())
    assert report["held_in"] is True and report["val_uses_test_images"] is False
    assert report["conventions"]["val"].startswith("held-in dataset: the first val_size training images")
    # another held-in dataset leaves GQA200's convention alone
    other = tmp_path / "scenes-held-out"
    assert main(["data", "import", "--format", "gqa200", "--src", str(src), "--out", str(other),
                 "--val-size", "1", "--held-in-dataset", "vg150", "--check-images", "false"]) == 0
    assert list(pd.read_parquet(other / "val.parquet")["image_id"]) == ["3001"]


def test_gqa200_background_class_is_an_unknown_label(tmp_path):
    train = [GQA_TRAIN[0][:4] + ([0, 2], [[0, 1, 1]])] + GQA_TRAIN[1:]
    src = write_gqa(tmp_path / "gqa", train=train)
    with pytest.raises(InputError, match=r"GQA_200_Train.json \[train image 2001 \(row 0\)\]: gt_classes_all: box 0 has unknown label id \(index -1"):
        import_scenes("gqa200", src)


def test_gqa200_missing_list_is_fatal_even_with_skip_bad(tmp_path):
    src = write_gqa(tmp_path / "gqa", drop_key="relationships_all")
    with pytest.raises(InputError, match=r"GQA_200_Train.json: missing key 'relationships_all'"):
        import_scenes("gqa200", src, skip_bad=True)


def test_gqa200_relation_out_of_range_and_truncated_json(tmp_path):
    test = GQA_TEST[:2] + [GQA_TEST[2][:5] + ([[0, 2, 3]],)]
    src = write_gqa(tmp_path / "gqa", test=test)
    with pytest.raises(InputError, match=r"test image 3003 \(row 2\)\]: relationships_all: relation 0 refers to box \(0, 2\) but the image has 2 boxes"):
        import_scenes("gqa200", src)
    text = (src / "GQA_200_Test.json").read_text()
    (src / "GQA_200_Test.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"GQA_200_Test.json: not valid JSON"):
        import_scenes("gqa200", src)


OI_RECORDS = {
    "train": [
        {"img_fn": "a1", "img_size": [1024, 768], "bbox": [[0, 0, 100, 200], [50, 50, 150, 150]], "det_labels": [0, 1], "rel": [[0, 1, 0]]},
        {"img_fn": "a2", "img_size": [1024, 768], "bbox": [[0, 0, 100, 200]], "det_labels": [2], "rel": []},
    ],
    "val": [
        {"img_fn": "b1", "img_size": [640, 480], "bbox": [[1.5, 2.5, 300, 400], [10, 10, 20, 20]], "det_labels": [0, 2], "rel": [[0, 1, 3], [1, 0, 2]]},
        {"img_fn": "b2", "img_size": [640, 480], "bbox": [[1, 1, 2, 2], [3, 3, 4, 4]], "det_labels": [0, 2], "rel": [[0, 1, 3]]},
    ],
    "test": [
        {"img_fn": "c1", "img_size": [800, 600], "bbox": [[100, 100, 200, 200], [150, 150, 400, 500]], "det_labels": [1, 0], "rel": [[1, 0, 1]]},
    ],
}


def write_oi(root, records=None, categories=None):
    records = json.loads(json.dumps(records or OI_RECORDS))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    categories = categories or {"obj": ["Man", "Guitar", "Chair"], "rel": ["plays", "holds", "inside_of", "interacts_with"]}
    (root / "annotations" / "categories_dict.json").write_text(json.dumps(categories))
    for split, split_records in records.items():
        (root / "annotations" / f"vrd-{split}-anno.json").write_text(json.dumps(split_records))
        for record in split_records:
            (root / "images" / f"{record.get('img_fn')}.jpg").write_bytes(b"jpeg")
    return root


def test_open_images_exact_import_with_normalised_names(tmp_path):
    src = write_oi(tmp_path / "oi")
    result = import_scenes("oi", src, dataset="oiv4", val_size=1)
    splits = {name: rows_of(table) for name, table in result.splits.items()}
    assert splits["train"] == {
        "a1": ("images/a1.jpg", 1024, 768, [[0.0, 0.0, 100.0, 200.0], [50.0, 50.0, 150.0, 150.0]], ["man", "guitar"], [(0, 1, "plays")])
    }
    assert splits["val"] == {
        "b1": ("images/b1.jpg", 640, 480, [[1.5, 2.5, 300.0, 400.0], [10.0, 10.0, 20.0, 20.0]], ["man", "chair"],
               [(0, 1, "interacts with"), (1, 0, "inside of")])
    }
    assert splits["test"]["c1"][4:] == (["guitar", "man"], [(1, 0, "holds")])
    assert result.vocab["predicates"] == ["plays", "holds", "inside of", "interacts with"]
    assert result.vocab["categories"]["inside of"] == "spatial"
    assert result.report["dropped_by_convention"]["train"]["no_relations"]["image_ids"] == ["a2"]


def test_open_images_needs_a_dataset_name(tmp_path):
    with pytest.raises(InputError, match="--dataset is required"):
        import_scenes("oi", write_oi(tmp_path / "oi"))


def oi_with(split, index, **changes):
    records = json.loads(json.dumps(OI_RECORDS))
    records[split][index].update(changes)
    for key, value in changes.items():
        if value is None:
            del records[split][index][key]
    return records


OI_BAD_CASES = [
    ("record-missing-key", oi_with("test", 0, bbox=None), "c1", "bbox: record lacks key 'bbox'"),
    ("degenerate-box", oi_with("train", 0, bbox=[[0, 0, 100, 200], [50, 50, 50, 150]]), "a1", "bbox: box 1 is degenerate"),
    ("box-outside-image", oi_with("test", 0, bbox=[[100, 100, 200, 200], [150, 150, 900, 500]]), "c1", "bbox: box 1 [150, 150, 900, 500] lies outside the 800 x 600 image"),
    ("unknown-label", oi_with("train", 0, det_labels=[0, 3]), "a1", "det_labels: box 1 has unknown label id (index 3 of 3 classes)"),
    ("unknown-predicate", oi_with("test", 0, rel=[[1, 0, 4]]), "c1", "rel: relation 0 has unknown predicate id (index 4 of 4 predicates)"),
    ("duplicate-image-across-splits", oi_with("test", 0, img_fn="a1"), "a1", "image id: duplicate image id (also train row 0)"),
    ("non-numeric-boxes", oi_with("test", 0, bbox=[["x", 1, 2, 3]]), "c1", "bbox: boxes are not a list of [x1, y1, x2, y2]"),
]


@pytest.mark.parametrize("case,records,image_id,message", OI_BAD_CASES, ids=[c[0] for c in OI_BAD_CASES])
def test_open_images_bad_record(tmp_path, case, records, image_id, message):
    src = write_oi(tmp_path / "oi", records=records)
    with pytest.raises(InputError) as caught:
        import_scenes("oi", src, dataset="oiv4", val_size=1)
    text = str(caught.value)
    assert "vrd-" in text and f"image {image_id} " in text and message in text
    result = import_scenes("oi", src, dataset="oiv4", val_size=1, skip_bad=True)
    assert [entry["image_id"] for entry in result.report["skipped_bad"]["images"]] == [image_id]
    written = [row["image_id"] for table in result.splits.values() for row in table.to_pylist()]
    assert len(written) == 2 and len(set(written)) == 2


def test_open_images_box_overshoot_within_tolerance_is_clipped(tmp_path):
    src = write_oi(tmp_path / "oi", records=oi_with("test", 0, bbox=[[100, 100, 200, 200], [150, 150, 808, 600.5]]))
    result = import_scenes("oi", src, dataset="oiv4", val_size=1)  # 8 px < 2% of 800
    assert rows_of(result.splits["test"])["c1"][3][1] == [150.0, 150.0, 800.0, 600.0]
    assert result.report["boxes_clipped_to_image"] == 1
    with pytest.raises(InputError, match="outside"):
        import_scenes("oi", src, dataset="oiv4", val_size=1, box_tolerance=0.005)
