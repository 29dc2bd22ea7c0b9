"""Hostile inputs to the data and instructions stages: one test per class of issue 13 (2, 3, 5, 6, 7).

Each test fails without its fix: wrong types that numpy would convert, inputs
that used to raise a traceback, paths that escape the image root, outputs
that could be left half-written, archives without limits.
"""

import io
import json
import os
import tarfile
import zipfile

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from reltune.data.download import ArchiveLimits, extract_archive, file_name_of
from reltune.data.importer import import_scenes, write_import
from reltune.errors import InputError
from reltune.instructions.build import INSTRUCTION_SCHEMA
from reltune.instructions.stage import build_instruction_dataset
from reltune.io import atomic_directory
from test_data_gqa_oi import OI_RECORDS, write_gqa, write_oi
from test_data_helpers import data_cli
from test_data_vg150 import IMAGES, LABEL_IDS, PREDICATE_IDS, RELATIONSHIPS, write_vg150

H5 = "VG-SGG-with-attri.h5"


def one_line_error(call):
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    message.encode("utf-8")  # printable: no lone surrogate left in the message
    return message


def oi_records(split, index, **changes):
    records = json.loads(json.dumps(OI_RECORDS))
    records[split][index].update(changes)
    return records


def write_oi_json(root, records):
    """Like write_oi, but with images only for file names that are plain (the test's bad names get none)."""
    root = write_oi(root, records={split: [] for split in records})
    for split, split_records in records.items():
        text = json.dumps(split_records)  # escapes lone surrogates as \ud800, as a real file would
        (root / "annotations" / f"vrd-{split}-anno.json").write_text(text)
        for record in split_records:
            name = record["img_fn"]
            if isinstance(name, str) and name.isalnum():
                (root / "images" / f"{name}.jpg").write_bytes(b"jpeg")
    return root


# ------------------------------------------------------------ class 2: types and integrality


@pytest.mark.parametrize(
    "dataset,row,value",
    [("labels", 2, 2.999), ("predicates", 1, 1.9), ("relationships", 3, 2.5), ("split", 4, 0.4), ("img_to_first_box", 1, 2.5)],
)
def test_vg150_float_ids_are_refused_naming_dataset_and_row(tmp_path, dataset, row, value):
    arrays = {
        "labels": np.array(LABEL_IDS, dtype=np.float64).reshape(-1, 1),
        "predicates": np.array(PREDICATE_IDS, dtype=np.float64).reshape(-1, 1),
        "relationships": np.array(RELATIONSHIPS, dtype=np.float64),
        "split": np.array([split for *_, split in IMAGES], dtype=np.float64),
        "img_to_first_box": np.array([0, 2, 5, 6, -1, 8], dtype=np.float64),
    }
    integral = write_vg150(tmp_path / "integral", changes={dataset: arrays[dataset]})
    assert len(import_scenes("vg150", integral, val_size=1).splits["train"]) == 2  # integral floats are integers
    arrays[dataset].reshape(len(arrays[dataset]), -1)[row, 0] = value
    src = write_vg150(tmp_path / "vg", changes={dataset: arrays[dataset]})
    message = one_line_error(lambda: import_scenes("vg150", src, skip_bad=True))
    assert H5 in message and f"[row {row}]" in message and f"dataset {dataset}" in message and "not an integer" in message


def test_vg150_bool_and_text_datasets_are_not_integers(tmp_path):
    src = write_vg150(tmp_path / "bool", changes={"split": np.zeros(len(IMAGES), dtype=bool)})
    assert "dataset split must hold integers" in one_line_error(lambda: import_scenes("vg150", src))
    src = write_vg150(tmp_path / "text", changes={"labels": np.array([b"1"] * len(LABEL_IDS))})
    assert "dataset labels must hold integers" in one_line_error(lambda: import_scenes("vg150", src))


def test_vg150_image_size_as_text_is_a_bad_image_of_image_data(tmp_path):
    entries = [{"image_id": i, "width": w, "height": h} for i, w, h, _ in IMAGES]
    entries[1]["width"] = "500"
    src = write_vg150(tmp_path / "vg", image_data=entries)
    message = one_line_error(lambda: import_scenes("vg150", src, val_size=1))
    assert "image_data.json [train image 11 (row 1)]" in message and "'500' is not a number" in message
    result = import_scenes("vg150", src, val_size=1, skip_bad=True)
    assert [entry["image_id"] for entry in result.report["skipped_bad"]["images"]] == ["11"]


@pytest.mark.parametrize(
    "field,value,piece",
    [
        ("img_size", "64", "img_size: image size '64' is not [width, height] integers"),
        ("img_size", [640, 480.5], "img_size: image size [640, 480.5]"),
        ("det_labels", [True, 0], "det_labels: labels are not one integer per box (2 boxes) (value 0: True is not a number)"),
        ("det_labels", [1.5, 0], "det_labels: labels are not one integer per box (2 boxes) (value 0: 1.5 is not an integer)"),
        ("rel", [[0, 1, 2.5]], "rel: relations are not a list of integer [subj, obj, predicate] (value 0: 2.5 is not an integer)"),
        ("bbox", [["1", 1, 2, 3], [3, 3, 4, 4]], "bbox: boxes are not a list of [x1, y1, x2, y2] (value 0: '1' is not a number)"),
    ],
)
def test_open_images_values_of_the_wrong_type_are_bad_images(tmp_path, field, value, piece):
    src = write_oi(tmp_path / "oi", records=oi_records("val", 1, **{field: value}))
    message = one_line_error(lambda: import_scenes("oi", src, dataset="oiv4", val_size=5))
    assert "vrd-val-anno.json [val image b2 (row 1)]" in message and piece in message
    result = import_scenes("oi", src, dataset="oiv4", val_size=5, skip_bad=True)
    assert [entry["image_id"] for entry in result.report["skipped_bad"]["images"]] == ["b2"]
    assert [row["image_id"] for row in result.splits["val"].to_pylist()] == ["b1"]


def test_gqa200_non_integral_class_is_a_bad_image(tmp_path):
    from test_data_gqa_oi import GQA_TRAIN

    train = [GQA_TRAIN[0][:4] + ([1, 2.5], [[0, 1, 1]])] + GQA_TRAIN[1:]
    src = write_gqa(tmp_path / "gqa", train=train)
    message = one_line_error(lambda: import_scenes("gqa200", src, val_size=1))
    assert "GQA_200_Train.json [train image 2001 (row 0)]: gt_classes_all" in message and "2.5 is not an integer" in message


# ------------------------------------------------------------ class 3: tracebacks become one line


def test_h5_dataset_stored_as_a_group(tmp_path):
    src = write_vg150(tmp_path / "vg", drop_dataset="split")
    with h5py.File(src / H5, "a") as h5:
        h5.create_group("split")
    assert "split must be datasets, not groups" in one_line_error(lambda: import_scenes("vg150", src))


def test_json_nested_100000_levels(tmp_path):
    src = write_oi(tmp_path / "oi")
    (src / "annotations" / "vrd-test-anno.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in one_line_error(lambda: import_scenes("oi", src, dataset="oiv4"))


def test_lone_surrogate_in_a_vocabulary_name(tmp_path):
    src = write_oi(tmp_path / "oi", categories={"obj": ["Man", "Gui\ud800tar", "Chair"], "rel": ["plays", "holds", "inside_of", "interacts_with"]})
    message = one_line_error(lambda: import_scenes("oi", src, dataset="oiv4"))
    assert "categories_dict.json" in message and "lone surrogate" in message


def test_lone_surrogate_in_img_fn_is_a_bad_image_and_the_report_is_writable(tmp_path, monkeypatch, capsys):
    src = write_oi_json(tmp_path / "oi", oi_records("test", 0, img_fn="c\ud8001"))
    out = tmp_path / "scenes"
    args = ["data", "import", "--format", "oi", "--dataset", "oiv4", "--src", str(src), "--out", str(out)]
    assert data_cli(args, monkeypatch) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "vrd-test-anno.json" in error and "img_fn" in error and not out.exists()
    assert data_cli(args + ["--skip-bad"], monkeypatch) == 0
    report = json.loads((out / "import_report.json").read_text())
    assert report["skipped_bad"]["images"][0]["image_id"] == "c\\ud8001"


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.LNKTYPE])
def test_tar_member_that_is_not_a_file_is_refused(tmp_path, kind):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("data/a.txt")
        info.size = 1
        bundle.addfile(info, io.BytesIO(b"a"))
        special = tarfile.TarInfo("data/special")
        special.type = kind
        special.linkname = "data/a.txt" if kind == tarfile.LNKTYPE else ""
        bundle.addfile(special)
    out = tmp_path / "raw"
    out.mkdir()
    message = one_line_error(lambda: extract_archive(archive, out))
    assert "'data/special' is a" in message and "refusing to extract" in message
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("url", ["http://h/..", "http://h/a/%2e%2e", "http://h/", "http://h/a%00b", "http://h/.reltune-download.json"])
def test_url_without_a_usable_file_name(url):
    message = one_line_error(lambda: file_name_of(url))
    assert url in message


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "import", "--format", "vg150", "--src", "S", "--out", "OUT", "--val-size", "-1"],
        ["data", "import", "--format", "vg150", "--src", "S", "--out", "OUT", "--box-tolerance", "nan"],
        ["data", "world", "--out", "OUT", "--image-size", "8"],
        ["data", "world", "--out", "OUT", "--distractor-probability", "1.5"],
        ["data", "download", "--dataset", "d", "--out", "OUT", "--url", "http://h/a.zip", "--sha256", "0", "--max-ratio", "0"],
        ["data", "download", "--dataset", "d", "--out", "OUT", "--path", "P", "--retries", "-2"],
        ["instructions", "--scenes", "S", "--out", "OUT", "--seed", "-1"],
        ["instructions", "--scenes", "S", "--out", "OUT", "--negatives-per-positive", "3"],
    ],
)
def test_arguments_out_of_domain_fail_before_any_work(tmp_path, monkeypatch, capsys, argv):
    import reltune.cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        reltune.cli.main(argv)
    error = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and len(error.splitlines()) == 1 and "error: argument" in error
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ class 5: paths that escape the image root


@pytest.mark.parametrize("name", ["../c1", "/etc/c1", "x/../../c1", "", "..\\c1"])
def test_open_images_img_fn_escaping_or_empty(tmp_path, name):
    src = write_oi_json(tmp_path / "oi", oi_records("test", 0, img_fn=name))
    message = one_line_error(lambda: import_scenes("oi", src, dataset="oiv4"))
    assert "vrd-test-anno.json [test image" in message and "(row 0)]: img_fn" in message  # the source, not an output
    result = import_scenes("oi", src, dataset="oiv4", val_size=1, skip_bad=True)
    skipped = result.report["skipped_bad"]["images"]
    assert len(skipped) == 1 and skipped[0]["field"] == "img_fn" and skipped[0]["file"].endswith("vrd-test-anno.json")
    assert len(result.splits["test"]) == 0


@pytest.mark.parametrize("image_id", ["../../outside", "/abs", "", 2.5, True])
def test_vg150_image_id_escaping_empty_or_not_an_id(tmp_path, image_id):
    entries = [{"image_id": i, "width": w, "height": h} for i, w, h, _ in IMAGES]
    entries[3]["image_id"] = image_id
    src = write_vg150(tmp_path / "vg", image_data=entries, images=False)
    message = one_line_error(lambda: import_scenes("vg150", src, val_size=1, check_images=False))
    assert "image_data.json [test image" in message and "(row 3)]: image_id" in message
    result = import_scenes("vg150", src, val_size=1, check_images=False, skip_bad=True)
    assert [entry["row"] for entry in result.report["skipped_bad"]["images"]] == [3]
    assert len(result.splits["test"]) == 0


def test_gqa200_file_name_escaping(tmp_path):
    from test_data_gqa_oi import GQA_TEST

    src = write_gqa(tmp_path / "gqa")
    data = json.loads((src / "GQA_200_Test.json").read_text())
    data["filenames_all"][0] = "../../3001.jpg"
    (src / "GQA_200_Test.json").write_text(json.dumps(data))
    message = one_line_error(lambda: import_scenes("gqa200", src, val_size=1))
    assert "GQA_200_Test.json [test image" in message and "filenames_all: file name '../../3001.jpg' leaves" in message
    result = import_scenes("gqa200", src, val_size=1, skip_bad=True)
    assert [row["image_id"] for row in result.splits["test"].to_pylist()] == [GQA_TEST[2][0][:-4]]


# ------------------------------------------------------------ class 6: whole outputs


def files_of(directory):
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_failed_import_leaves_the_previous_output_whole(tmp_path, monkeypatch):
    out = tmp_path / "scenes"
    write_import(import_scenes("vg150", write_vg150(tmp_path / "vg"), val_size=1), out)
    before = files_of(out)
    result = import_scenes("vg150", write_vg150(tmp_path / "vg2"), val_size=0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("reltune.data.importer.write_json", crash)  # after the parquet files are written
    with pytest.raises(OSError):
        write_import(result, out)
    assert files_of(out) == before  # no new tables beside the old report
    assert sorted(os.listdir(tmp_path)) == ["scenes", "vg", "vg2"]  # and no temporary sibling left


def test_stale_temporary_siblings_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "scenes"
    dead = tmp_path / ".scenes.999999999.abc.tmp"  # no such process: a killed run
    dead.mkdir()
    (dead / "train.parquet").write_bytes(b"half")
    (tmp_path / ".scenes.999999999.def.old").mkdir()
    alive = tmp_path / f".scenes.{os.getpid()}.ghi.tmp"  # a run still in progress is left alone
    alive.mkdir()
    write_import(import_scenes("vg150", write_vg150(tmp_path / "vg"), val_size=1), out)
    assert sorted(os.listdir(tmp_path)) == sorted(["scenes", "vg", alive.name])
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as temporary:
            (temporary / "x").write_text("partial")
            raise RuntimeError("crash")
    assert sorted(os.listdir(tmp_path)) == sorted(["scenes", "vg", alive.name])


def test_val_size_zero_gives_typed_empty_tables_through_instructions(tmp_path, monkeypatch):
    scenes = tmp_path / "scenes" / "vg150"
    assert data_cli(["data", "import", "--format", "vg150", "--src", str(write_vg150(tmp_path / "vg")), "--out", str(scenes),
                     "--val-size", "0"], monkeypatch) == 0
    assert pq.read_table(scenes / "val.parquet").num_rows == 0
    out = tmp_path / "instructions"
    report = build_instruction_dataset(scenes, out, "vg150")
    assert sorted(os.listdir(out)) == ["instructions_report.json", "test.parquet", "train.parquet", "val.parquet"]
    val = pq.read_table(out / "val.parquet")
    assert val.num_rows == 0 and val.schema.equals(INSTRUCTION_SCHEMA)
    assert report["splits"]["val"]["positives"] == 0 and report["splits"]["train"]["positives"] == 4


def test_failed_instructions_leave_the_previous_output_whole(tmp_path):
    scenes = tmp_path / "scenes" / "vg150"
    write_import(import_scenes("vg150", write_vg150(tmp_path / "vg"), val_size=1), scenes)
    out = tmp_path / "instructions"
    build_instruction_dataset(scenes, out, "vg150")
    before = files_of(out)
    (scenes / "test.parquet").write_bytes(b"not parquet")  # the last split fails after train and val are built
    assert "test.parquet: not a readable parquet file" in one_line_error(lambda: build_instruction_dataset(scenes, out, "vg150"))
    assert files_of(out) == before
    assert sorted(os.listdir(tmp_path)) == ["instructions", "scenes", "vg"]


# ------------------------------------------------------------ class 7: archive limits and bookkeeping


def tar_of(tmp_path, files, name="a.tar.gz"):
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as bundle:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.parametrize(
    "limits,piece",
    [
        (ArchiveLimits(max_members=3), "4 members exceed the limit max-members=3"),
        (ArchiveLimits(max_bytes=30_000), "40000 uncompressed bytes exceed the limit max-bytes=30000"),
        (ArchiveLimits(max_ratio=5), "beyond the limit max-ratio=5"),
    ],
)
def test_archive_beyond_a_limit_is_refused_before_anything_is_written(tmp_path, limits, piece):
    archive = tar_of(tmp_path, {f"d/{i}.bin": bytes(10_000) for i in range(4)})  # zeros: compresses > 100-fold
    out = tmp_path / "raw"
    out.mkdir()
    assert extract_archive(archive, out, limits=ArchiveLimits(max_ratio=1e6)) == ["d"]
    assert piece in one_line_error(lambda: extract_archive(archive, tmp_path / "raw", limits=limits))
    # the default ratio stops this archive bomb in miniature
    assert "max-ratio=100" in one_line_error(lambda: extract_archive(archive, out))


def test_zip_limits_apply_too(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for i in range(5):
            bundle.writestr(f"d/{i}.txt", b"x")
    out = tmp_path / "raw"
    out.mkdir()
    assert "max-members=4" in one_line_error(lambda: extract_archive(archive, out, limits=ArchiveLimits(max_members=4)))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("member", [".reltune-download.json", ".downloads/x.zip", ".downloads"])
def test_members_colliding_with_the_download_bookkeeping_are_refused(tmp_path, member):
    archive = tar_of(tmp_path, {"ok.txt": b"a", member: b"{}"})
    out = tmp_path / "raw"
    out.mkdir()
    assert "collides with the download bookkeeping" in one_line_error(lambda: extract_archive(archive, out))
    assert list(out.iterdir()) == []


def test_dataset_name_cannot_name_a_path(tmp_path, monkeypatch, capsys):
    src = write_oi(tmp_path / "oi")
    assert "no predicate category map for dataset '../../oi'" in one_line_error(
        lambda: import_scenes("oi", src, dataset="../../oi")
    )
    with pytest.raises(SystemExit) as caught:
        data_cli(["data", "import", "--format", "oi", "--src", str(src), "--out", str(tmp_path / "o"), "--dataset", "../x"], monkeypatch)
    assert caught.value.code == 2 and "argument --dataset: no predicate category map for '../x'" in capsys.readouterr().err


def test_vg150_dict_keys_must_be_exactly_one_to_n(tmp_path):
    src = write_vg150(tmp_path / "vg", dicts_changes={"idx_to_label": {"01": "man", "2": "horse", "3": "hat"}})
    assert 'idx_to_label keys must be "1".."3"' in one_line_error(lambda: import_scenes("vg150", src))


def test_failed_world_leaves_the_previous_world_whole(tmp_path, monkeypatch):
    from reltune.data import world
    from reltune.data.world_spec import WorldSize

    out = tmp_path / "raw"
    size = WorldSize(train_images=3, test_images=2, ood_images=2, image_size=64)
    world.generate_world(out, seed=1, size=size)
    before = sorted(str(path.relative_to(out)) for path in out.rglob("*"))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(world, "write_openimages_layout", crash)  # after the held-in files are written
    with pytest.raises(OSError):
        world.generate_world(out, seed=2, size=size)
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*")) == before
    assert json.loads((out / "world_spec.json").read_text())["seed"] == 1
    assert os.listdir(tmp_path) == ["raw"]


def test_archive_member_name_that_is_not_utf8_is_refused(tmp_path):
    archive = tar_of(tmp_path, {"ok.txt": b"a", "bad\udcff.txt": b"b"})  # raw byte 0xff in the tar header
    out = tmp_path / "raw"
    out.mkdir()
    assert "is not valid UTF-8" in one_line_error(lambda: extract_archive(archive, out))
    assert list(out.iterdir()) == []
