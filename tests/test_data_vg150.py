"""VG150 importer: exact pixel boxes, labels, relations and splits; one test per bad-input case."""

import json

import h5py
import numpy as np
import pytest

from reltune.data.importer import import_scenes, write_import
from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from test_data_helpers import data_cli

LABELS = {"1": "man", "2": "horse", "3": "hat"}
PREDICATES = {"1": "on", "2": "wearing", "3": "riding"}
# rows: image id, width, height, split
IMAGES = [(10, 800, 600, 0), (11, 500, 1000, 0), (12, 640, 480, 0), (13, 1024, 768, 2), (14, 300, 300, 0), (15, 640, 480, 0)]
BOXES_1024 = [  # cx, cy, w, h at the 1024 scale
    [512, 384, 256, 128],  # 0 image 10 -> *800/1024
    [256, 256, 128, 256],  # 1 image 10
    [256, 512, 256, 512],  # 2 image 11 -> *1000/1024
    [128, 128, 64, 64],  # 3 image 11
    [384, 896, 128, 128],  # 4 image 11
    [100, 100, 50, 50],  # 5 image 12 (no relations)
    [100, 100, 40, 60],  # 6 image 13 -> *1
    [600, 400, 200, 100],  # 7 image 13
    [512, 384, 512, 384],  # 8 image 15 -> *640/1024
    [160, 160, 64, 64],  # 9 image 15
]
LABEL_IDS = [1, 2, 1, 3, 2, 1, 1, 2, 2, 3]
RELATIONSHIPS = [[0, 1], [2, 3], [4, 2], [6, 7], [9, 8]]  # global box indices
PREDICATE_IDS = [3, 2, 1, 1, 1]
FIRST_BOX, LAST_BOX = [0, 2, 5, 6, -1, 8], [1, 4, 5, 7, -1, 9]
FIRST_REL, LAST_REL = [0, 1, -1, 3, -1, 4], [0, 2, -1, 3, -1, 4]


def write_vg150(root, changes=None, dicts_changes=None, image_data=None, drop_dataset=None, images=True):
    """Write the fixture in the real VG150 layout; `changes` overrides h5 datasets."""
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "labels": np.array(LABEL_IDS).reshape(-1, 1),
        "boxes_1024": np.array(BOXES_1024, dtype=np.int32),
        "img_to_first_box": np.array(FIRST_BOX),
        "img_to_last_box": np.array(LAST_BOX),
        "relationships": np.array(RELATIONSHIPS),
        "predicates": np.array(PREDICATE_IDS).reshape(-1, 1),
        "img_to_first_rel": np.array(FIRST_REL),
        "img_to_last_rel": np.array(LAST_REL),
        "split": np.array([split for *_, split in IMAGES]),
    }
    data.update(changes or {})
    with h5py.File(root / "VG-SGG-with-attri.h5", "w") as h5:
        for name, array in data.items():
            if name != drop_dataset:
                h5.create_dataset(name, data=array)
    dicts = {
        "idx_to_label": LABELS,
        "idx_to_predicate": PREDICATES,
        "label_to_idx": {v: int(k) for k, v in LABELS.items()},
        "predicate_to_idx": {v: int(k) for k, v in PREDICATES.items()},
    }
    dicts.update(dicts_changes or {})
    (root / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(dicts))
    if image_data is None:
        image_data = [{"image_id": i, "width": w, "height": h, "url": "", "coco_id": None, "flickr_id": None} for i, w, h, _ in IMAGES]
    (root / "image_data.json").write_text(json.dumps(image_data))
    if images:
        (root / "VG_100K").mkdir(exist_ok=True)
        for entry in image_data:
            (root / "VG_100K" / f"{entry['image_id']}.jpg").write_bytes(b"jpeg")
    return root


def as_lists(table):
    rows = table.to_pylist()
    return {
        row["image_id"]: (
            row["width"],
            row["height"],
            row["boxes"],
            row["labels"],
            [(r["subj"], r["obj"], r["predicate"]) for r in row["relations"]],
        )
        for row in rows
    }


def test_import_gives_exact_pixels_labels_relations_and_splits(tmp_path):
    src = write_vg150(tmp_path / "vg")
    result = import_scenes("vg150", src, val_size=1)
    splits = {name: as_lists(table) for name, table in result.splits.items()}
    assert list(splits["val"]) == ["10"]  # the first train image with relations
    assert list(splits["train"]) == ["11", "15"]
    assert list(splits["test"]) == ["13"]
    # image 10: 800 x 600 -> factor 800/1024; [512,384,256,128] -> cx 400, cy 300, w 200, h 100
    assert splits["val"]["10"] == (
        800, 600, [[300.0, 250.0, 500.0, 350.0], [150.0, 100.0, 250.0, 300.0]], ["man", "horse"], [(0, 1, "riding")]
    )
    # image 11: 500 x 1000 -> factor 1000/1024; relations hold global indices 2..4 -> local 0..2
    assert splits["train"]["11"] == (
        500,
        1000,
        [[125.0, 250.0, 375.0, 750.0], [93.75, 93.75, 156.25, 156.25], [312.5, 812.5, 437.5, 937.5]],
        ["man", "hat", "horse"],
        [(0, 1, "wearing"), (2, 0, "on")],
    )
    assert splits["train"]["15"] == (
        640, 480, [[160.0, 120.0, 480.0, 360.0], [80.0, 80.0, 120.0, 120.0]], ["horse", "hat"], [(1, 0, "on")]
    )
    assert splits["test"]["13"] == (
        1024, 768, [[80.0, 70.0, 120.0, 130.0], [500.0, 350.0, 700.0, 450.0]], ["man", "horse"], [(0, 1, "on")]
    )
    assert result.vocab == {
        "objects": ["man", "horse", "hat"],
        "predicates": ["on", "wearing", "riding"],
        "categories": {"on": "spatial", "wearing": "possessive", "riding": "semantic"},
        "image_root": str(src),
    }
    dropped = result.report["dropped_by_convention"]["train"]
    assert dropped["no_relations"] == {"count": 1, "image_ids": ["12"]}
    assert dropped["no_boxes"] == {"count": 1, "image_ids": ["14"]}
    assert result.report["splits"]["train"]["predicate_counts"] == {"on": 2, "wearing": 1, "riding": 0}
    assert result.report["skipped_bad"]["count"] == 0


def test_written_tables_read_back(tmp_path, monkeypatch):
    src = write_vg150(tmp_path / "vg")
    out = tmp_path / "scenes"
    assert data_cli(["data", "import", "--format", "vg150", "--src", str(src), "--out", str(out), "--val-size", "1"], monkeypatch) == 0
    train, vocab = read_scenes(out, "train")
    assert train["image_id"].tolist() == ["11", "15"]
    assert train["image_path"].tolist() == ["VG_100K/11.jpg", "VG_100K/15.jpg"]
    assert [list(map(list, boxes)) for boxes in train["boxes"]][1] == [[160.0, 120.0, 480.0, 360.0], [80.0, 80.0, 120.0, 120.0]]
    assert list(train["relations"][0][1].values()) == [2, 0, "on"]
    assert vocab["categories"]["riding"] == "semantic"
    report = json.loads((out / "import_report.json").read_text())
    assert report["splits"]["val"]["images"] == 1


def test_real_release_image_data_with_four_extra_corrupt_entries_is_aligned(tmp_path):
    entries = [{"image_id": i, "width": w, "height": h} for i, w, h, _ in IMAGES]
    with_corrupt = [{"image_id": 1592, "width": 1, "height": 1}] + entries[:3] + [
        {"image_id": 1722, "width": 1, "height": 1},
        {"image_id": 4616, "width": 1, "height": 1},
        {"image_id": 4617, "width": 1, "height": 1},
    ] + entries[3:]
    src = write_vg150(tmp_path / "vg", image_data=with_corrupt)
    result = import_scenes("vg150", src, val_size=1)
    assert as_lists(result.splits["test"])["13"][2][1] == [500.0, 350.0, 700.0, 450.0]
    assert result.report["image_data_entries_without_h5_row"] == [1592, 1722, 4616, 4617]


def bad_boxes(index, box):
    boxes = np.array(BOXES_1024, dtype=np.int32)
    boxes[index] = box
    return {"boxes_1024": boxes}


def changed(name, index, value):
    arrays = {
        "labels": np.array(LABEL_IDS).reshape(-1, 1),
        "predicates": np.array(PREDICATE_IDS).reshape(-1, 1),
        "relationships": np.array(RELATIONSHIPS),
    }
    arrays[name][index] = value
    return {name: arrays[name]}


# (case id, fixture changes, expected message pieces, bad image id)
BAD_IMAGE_CASES = [
    ("degenerate-box", dict(changes=bad_boxes(3, [128, 128, 0, 64])), ["boxes_1024", "box 1 is degenerate"], "11"),
    ("box-outside-image", dict(changes=bad_boxes(8, [1000, 384, 512, 384])), ["boxes_1024", "box 0", "outside"], "15"),
    ("relation-index-out-of-range", dict(changes=changed("relationships", 4, [9, 5])), ["relationships", "relation 0 refers to box (1, -3)"], "15"),
    ("unknown-label-id", dict(changes=changed("labels", 3, 4)), ["labels", "box 1 has unknown label id"], "11"),
    ("unknown-predicate-id", dict(changes=changed("predicates", 4, 7)), ["predicates", "relation 0 has unknown predicate id"], "15"),
    ("bad-box-range", dict(changes={"img_to_last_box": np.array([1, 4, 5, 7, -1, 99])}), ["img_to_first_box/img_to_last_box", "invalid"], "15"),
    ("bad-split-value", dict(changes={"split": np.array([0, 0, 0, 2, 0, 1])}), ["split value 1"], "15"),
]


@pytest.mark.parametrize("case,fixture,pieces,image_id", BAD_IMAGE_CASES, ids=[c[0] for c in BAD_IMAGE_CASES])
def test_bad_image_fails_with_one_line_naming_file_image_field(tmp_path, case, fixture, pieces, image_id):
    src = write_vg150(tmp_path / "vg", **fixture)
    with pytest.raises(InputError) as caught:
        import_scenes("vg150", src, val_size=1)
    message = str(caught.value)
    assert "\n" not in message
    assert "VG-SGG-with-attri.h5" in message
    assert f"image {image_id} " in message
    for piece in pieces:
        assert piece in message
    # --skip-bad drops exactly that image and lists it
    result = import_scenes("vg150", src, val_size=1, skip_bad=True)
    kept = {row["image_id"] for table in result.splits.values() for row in table.to_pylist()}
    assert kept == {"10", "11", "13", "15"} - {image_id}
    skipped = result.report["skipped_bad"]
    assert skipped["count"] == 1 and skipped["images"][0]["image_id"] == image_id


def test_duplicate_image_id(tmp_path):
    entries = [{"image_id": i, "width": w, "height": h} for i, w, h, _ in IMAGES]
    entries[5]["image_id"] = 11  # image row 5 repeats id 11 (same size is irrelevant)
    entries[5]["width"], entries[5]["height"] = 640, 480
    src = write_vg150(tmp_path / "vg", image_data=entries)
    with pytest.raises(InputError, match=r"image 11 \(row 5\).*duplicate image id \(also train row 1\)"):
        import_scenes("vg150", src, val_size=1)
    result = import_scenes("vg150", src, val_size=1, skip_bad=True)
    assert [row["image_id"] for row in result.splits["train"].to_pylist()] == ["11"]
    assert result.splits["train"].to_pylist()[0]["width"] == 500  # the first one is kept


def test_missing_image_file(tmp_path):
    src = write_vg150(tmp_path / "vg")
    (src / "VG_100K" / "13.jpg").unlink()
    with pytest.raises(InputError, match=r"VG_100K/13.jpg \[test image 13 \(row 3\)\]: image file: .* is missing"):
        import_scenes("vg150", src, val_size=1)
    assert len(import_scenes("vg150", src, val_size=1, check_images=False).splits["test"]) == 1
    result = import_scenes("vg150", src, val_size=1, skip_bad=True)
    assert len(result.splits["test"]) == 0
    assert result.report["skipped_bad"]["images"][0]["field"] == "image file"


def test_truncated_h5(tmp_path):
    src = write_vg150(tmp_path / "vg")
    h5_path = src / "VG-SGG-with-attri.h5"
    h5_path.write_bytes(h5_path.read_bytes()[:700])
    with pytest.raises(InputError, match=r"VG-SGG-with-attri.h5: not a readable HDF5 file"):
        import_scenes("vg150", src, skip_bad=True)  # a broken file cannot be skipped


def test_missing_h5_dataset(tmp_path):
    src = write_vg150(tmp_path / "vg", drop_dataset="img_to_first_rel")
    with pytest.raises(InputError, match=r"VG-SGG-with-attri.h5: missing dataset img_to_first_rel"):
        import_scenes("vg150", src)


def test_corrupt_dicts_json(tmp_path):
    src = write_vg150(tmp_path / "vg")
    (src / "VG-SGG-dicts-with-attri.json").write_text('{"idx_to_label": {"1": "man"')
    with pytest.raises(InputError, match=r"VG-SGG-dicts-with-attri.json: not valid JSON"):
        import_scenes("vg150", src)


def test_missing_dicts_key(tmp_path):
    src = write_vg150(tmp_path / "vg")
    dicts = json.loads((src / "VG-SGG-dicts-with-attri.json").read_text())
    del dicts["idx_to_predicate"]
    (src / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(dicts))
    with pytest.raises(InputError, match=r"VG-SGG-dicts-with-attri.json: missing key 'idx_to_predicate'"):
        import_scenes("vg150", src)


def test_image_data_length_mismatch(tmp_path):
    entries = [{"image_id": i, "width": w, "height": h} for i, w, h, _ in IMAGES][:5]
    src = write_vg150(tmp_path / "vg", image_data=entries)
    with pytest.raises(InputError, match=r"image_data.json: lists 5 images but VG-SGG-with-attri.h5 has 6 rows"):
        import_scenes("vg150", src)


def test_unmapped_predicate_names_the_dataset_map(tmp_path):
    src = write_vg150(tmp_path / "vg", dicts_changes={"idx_to_predicate": {"1": "on", "2": "wearing", "3": "zooming past"}})
    with pytest.raises(InputError, match=r"vg150.json.*'zooming past'"):
        import_scenes("vg150", src)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    src = write_vg150(tmp_path / "vg", changes=bad_boxes(3, [128, 128, 0, 64]))
    out = tmp_path / "scenes"
    code = data_cli(["data", "import", "--format", "vg150", "--src", str(src), "--out", str(out)], monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1 and "image 11" in error and "boxes_1024" in error
    assert not out.exists()  # nothing half-written
    assert data_cli(["data", "import", "--format", "vg150", "--src", str(src), "--out", str(out), "--skip-bad", "false"], monkeypatch) == 2
    args = ["data", "import", "--format", "vg150", "--src", str(src), "--out", str(out), "--val-size", "1"]
    assert data_cli(args + ["--skip-bad", "true", "--check-images", "false"], monkeypatch) == 0
    report = json.loads((out / "import_report.json").read_text())
    assert report["skipped_bad"]["images"][0]["image_id"] == "11"
    assert report["dropped_by_convention"]["train"]["no_relations"]["count"] == 1
