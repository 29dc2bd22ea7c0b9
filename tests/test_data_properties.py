"""Property tests: random corruptions of valid raw datasets never crash an importer.

For each importer (VG150 h5 + JSON, GQA200 JSON, Open Images JSON) a valid
fixture is corrupted at random (a value of another type or range, a deleted
key, a truncated file, invalid UTF-8, deep nesting, escaping paths, lone
surrogates). Importing it into a directory holding a previous import must end
in one of:
- a correct import (the tables read back and validate; every bad image is
  listed under `skipped_bad`, and none is when `--skip-bad` is off);
- a one-line InputError, the previous output left byte-identical;
never another exception, never a partial or mixed output directory.
The stage commands' numeric arguments are fuzzed the same way: an
out-of-domain value ends in one argparse line (exit 2) before any work.
"""

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reltune.cli
from reltune.data.importer import import_scenes, write_import
from reltune.data.scenes import SPLITS, read_scenes
from reltune.errors import InputError
from test_data_gqa_oi import write_gqa, write_oi
from test_data_vg150 import write_vg150

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
OUTPUT_FILES = sorted([f"{split}.parquet" for split in SPLITS] + ["vocab.json", "import_report.json"])
DEEP = "__deeply_nested__"  # replaced by 100,000 nested lists when the file is written

HOSTILE_TEXT = ["64", "", " ", "..", "../x", "/etc/passwd", "a/../../b", "x\ud800y", "\x00", "..\\x", "1.5", "true"]
VALUES = st.one_of(
    st.integers(-3, 6),
    st.sampled_from([-1, 2**31, 2**63, 2**70, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.4, 1.9, 2.5, 2.999, -0.0, 1e308]),
    st.booleans(),
    st.none(),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=4),
    st.lists(st.integers(-2, 5), max_size=5),
    st.lists(st.lists(st.floats(-10, 2000), min_size=4, max_size=4), max_size=3),
    st.just({}),
    st.just(DEEP),
)


def node_paths(document, prefix=()):
    """Every position in a JSON document (keys and list indices)."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from node_paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from node_paths(value, prefix + (index,))


def mutated(document, path, action, value):
    """A copy of `document` with the node at `path` replaced or deleted."""
    document = json.loads(json.dumps(document))
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def dump(document) -> str:
    text = json.dumps(document)
    return text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)


@st.composite
def json_corruption(draw, files):
    """(relative file, how): a node replaced or deleted, the file truncated, or bytes that are not UTF-8."""
    file = draw(st.sampled_from(sorted(files)))
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "truncate", "encoding"]))
    if kind in ("replace", "delete"):
        paths = list(node_paths(files[file]))
        path = draw(st.sampled_from(paths))
        if kind == "delete" and not path:
            kind = "replace"
        return file, kind, path, draw(VALUES) if kind == "replace" else None
    return file, kind, None, draw(st.floats(0.0, 1.0))


def apply_json_corruption(root: Path, files: dict, corruption) -> None:
    file, kind, path, argument = corruption
    target = root / file
    if kind in ("replace", "delete"):
        target.write_text(dump(mutated(files[file], path, kind, argument)))
    elif kind == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * argument)])
    else:
        data = target.read_bytes()
        cut = int(len(data) * argument)
        target.write_bytes(data[:cut] + b"\xff\xfe\x80" + data[cut:])


def json_files(root: Path, names) -> dict:
    return {name: json.loads((root / name).read_text()) for name in names}


def check_outcome(run, out: Path, skip_bad: bool) -> str:
    """Run an import into `out` (which holds a previous import); check the end state; return which one."""
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    try:
        run()
    except InputError as error:
        message = str(error)
        assert "\n" not in message and message.encode("utf-8")
        assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before  # untouched
        outcome = "error"
    else:
        assert sorted(os.listdir(out)) == OUTPUT_FILES
        report = json.loads((out / "import_report.json").read_text())
        assert report["skipped_bad"]["count"] == len(report["skipped_bad"]["images"])
        assert skip_bad or report["skipped_bad"]["count"] == 0
        for split in SPLITS:
            scenes, _ = read_scenes(out, split)  # validates schema, boxes, relations, vocabulary
            for image_path in scenes["image_path"]:
                assert not image_path.startswith("/") and ".." not in Path(image_path).parts
        outcome = "skipped" if report["skipped_bad"]["count"] else "imported"
    leftovers = [name for name in os.listdir(out.parent) if name.startswith(f".{out.name}.")]
    assert leftovers == []  # no temporary sibling survives
    return outcome


def _integer(value) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())


def _source_images(format: str, src: Path) -> dict:
    """image id -> its raw source values as the (corrupted) files say; the first record of an id wins."""
    images = {}
    if format == "oi":
        for split in ("train", "val", "test"):
            for record in json.loads((src / f"annotations/vrd-{split}-anno.json").read_text()):
                if isinstance(record, dict) and isinstance(record.get("img_fn"), str):
                    images.setdefault(record["img_fn"], record)
        return images
    for name in ("GQA_200_Train.json", "GQA_200_Test.json"):
        data = json.loads((src / name).read_text())
        for filename, *values in zip(*(data[key] for key in GQA_LISTS)):
            if isinstance(filename, str):
                images.setdefault(Path(filename).stem, values)
    return images


def _unpack(format: str, source) -> tuple:
    """(width, height, boxes, 0-based label ids, relations with 0-based predicates) of one source image."""
    if format == "oi":
        return (*source["img_size"], source["bbox"], source["det_labels"], source["rel"])
    info, boxes, classes, relations = source
    # ids and predicates are 1-based in GQA200 (0 = background)
    return info["width"], info["height"], boxes, [c - 1 for c in classes], [[s, o, p - 1] for s, o, p in relations]


def check_against_source(format: str, src: Path, out: Path) -> None:
    """Every written image holds exactly its source values: integer sizes, labels and relations; boxes clipped only."""
    images = _source_images(format, src)
    for split in SPLITS:
        scenes, vocab = read_scenes(out, split)
        for row in scenes.itertuples():
            width, height, boxes, labels, relations = _unpack(format, images[row.image_id])
            assert _integer(width) and _integer(height) and (row.width, row.height) == (width, height)
            assert all(_integer(label) for label in labels)
            assert list(row.labels) == [vocab["objects"][int(label)] for label in labels]
            written = [(r["subj"], r["obj"], r["predicate"]) for r in row.relations]
            assert all(_integer(value) for relation in relations for value in relation)
            assert written == [(s, o, vocab["predicates"][int(p)]) for s, o, p in relations]
            clipped = np.clip(np.asarray(boxes, dtype=float), 0, [width, height, width, height])
            assert np.array_equal(np.stack(row.boxes), clipped)


def import_into(format, src, out, dataset, skip_bad, val_size):
    def run():
        write_import(import_scenes(format, src, dataset=dataset, val_size=val_size, skip_bad=skip_bad), out)

    return run


@contextlib.contextmanager
def workspace():
    with tempfile.TemporaryDirectory(prefix="reltune-prop-") as directory:
        yield Path(directory)


def fresh_fixture(root: Path, writer, format, dataset):
    src = writer(root / "src")
    out = root / "out"
    write_import(import_scenes(format, src, dataset=dataset, val_size=1), out)  # the previous run's output
    return src, out


# ------------------------------------------------------------ importers

GQA_LISTS = ("filenames_all", "img_info_all", "gt_boxes_all", "gt_classes_all", "relationships_all")
GQA_FILES = ("GQA_200_ID_Info.json", "GQA_200_Train.json", "GQA_200_Test.json")
OI_FILES = tuple(f"annotations/{name}" for name in ("categories_dict.json", "vrd-train-anno.json", "vrd-val-anno.json", "vrd-test-anno.json"))
VG_JSON_FILES = ("VG-SGG-dicts-with-attri.json", "image_data.json")

with workspace() as _root:
    GQA_DOCUMENTS = json_files(write_gqa(_root / "gqa"), GQA_FILES)
    OI_DOCUMENTS = json_files(write_oi(_root / "oi"), OI_FILES)
    VG_DOCUMENTS = json_files(write_vg150(_root / "vg"), VG_JSON_FILES)


@SETTINGS
@given(corruption=json_corruption(GQA_DOCUMENTS), skip_bad=st.booleans(), val_size=st.integers(0, 3))
def test_gqa200_corruptions_end_in_an_import_a_listed_skip_or_one_line(corruption, skip_bad, val_size):
    with workspace() as root:
        src, out = fresh_fixture(root, write_gqa, "gqa200", None)
        apply_json_corruption(src, GQA_DOCUMENTS, corruption)
        if check_outcome(import_into("gqa200", src, out, None, skip_bad, val_size), out, skip_bad) != "error":
            check_against_source("gqa200", src, out)


@SETTINGS
@given(corruption=json_corruption(OI_DOCUMENTS), skip_bad=st.booleans(), val_size=st.integers(0, 3))
def test_open_images_corruptions_end_in_an_import_a_listed_skip_or_one_line(corruption, skip_bad, val_size):
    with workspace() as root:
        src, out = fresh_fixture(root, write_oi, "oi", "oiv4")
        apply_json_corruption(src, OI_DOCUMENTS, corruption)
        if check_outcome(import_into("oi", src, out, "oiv4", skip_bad, val_size), out, skip_bad) != "error":
            check_against_source("oi", src, out)


H5_DATASETS = ("labels", "boxes_1024", "img_to_first_box", "img_to_last_box", "relationships", "predicates",
               "img_to_first_rel", "img_to_last_rel", "split")
H5_VALUES = st.sampled_from([2.999, 1.9, 2.5, 0.4, -1.0, 99.0, np.nan, np.inf, 2.0**40, -(2.0**40)])


@st.composite
def h5_corruption(draw):
    """(dataset, how, argument): a value changed (float dtype), bool/text dtype, a group, a new shape, or truncation."""
    name = draw(st.sampled_from(H5_DATASETS))
    kind = draw(st.sampled_from(["value", "value", "int value", "bool", "text", "group", "reshape", "truncate"]))
    argument = draw(H5_VALUES) if kind == "value" else draw(st.integers(-3, 20)) if kind == "int value" else None
    return name, kind, draw(st.integers(0, 100)), argument


def apply_h5_corruption(path: Path, corruption) -> None:
    name, kind, position, argument = corruption
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: max(1, position * len(data) // 101)])
        return
    with h5py.File(path, "a") as h5:
        array = np.asarray(h5[name][()])
        del h5[name]
        if kind in ("value", "int value"):
            array = array.astype(np.float64 if kind == "value" else np.int64)
            array.reshape(-1)[position % array.size] = argument
        elif kind == "bool":
            array = array.astype(bool)
        elif kind == "text":
            array = array.astype("S8")
        elif kind == "reshape":
            array = np.stack([array, array], axis=-1)
        if kind == "group":
            h5.create_group(name)
        else:
            h5.create_dataset(name, data=array)


@SETTINGS
@given(
    corruption=st.one_of(h5_corruption(), json_corruption(VG_DOCUMENTS)),
    skip_bad=st.booleans(),
    val_size=st.integers(0, 3),
)
def test_vg150_corruptions_end_in_an_import_a_listed_skip_or_one_line(corruption, skip_bad, val_size):
    with workspace() as root:
        src, out = fresh_fixture(root, write_vg150, "vg150", None)
        if corruption[0] in H5_DATASETS:
            apply_h5_corruption(src / "VG-SGG-with-attri.h5", corruption)
        else:
            apply_json_corruption(src, VG_DOCUMENTS, corruption)
        check_outcome(import_into("vg150", src, out, None, skip_bad, val_size), out, skip_bad)


# ------------------------------------------------------------ stage arguments

OUT_OF_DOMAIN = {
    ("data", "import"): {"--val-size": ["-1", "1.5", "x", "nan"], "--box-tolerance": ["-0.1", "nan", "inf", "2"],
                         "--skip-bad": ["maybe", "2"], "--check-images": ["yes please"]},
    ("data", "world"): {"--seed": ["-1", "0.5"], "--train-images": ["-1", "1e3"], "--image-size": ["63", "0", "-64"],
                        "--distractor-probability": ["-0.1", "1.01", "nan"], "--jpeg-quality": ["0", "101"],
                        "--pair-probabilities": ["0.5,0.5", "1,0,0,nan", "2,-1,0,0", "a,b,c,d"],
                        "--ood-unseen-object-probability": ["inf"]},
    ("data", "download"): {"--retries": ["-1", "x"], "--timeout": ["0", "-5", "nan"], "--max-members": ["0", "-3"],
                           "--max-bytes": ["0", "1.5"], "--max-ratio": ["0", "-1", "nan"]},
    ("instructions",): {"--seed": ["-1", "x"], "--negatives-per-positive": ["0", "3", "1.5"],
                        "--categories": ["maybe"], "--negatives": ["sometimes"]},
}
REQUIRED = {
    ("data", "import"): ["--format", "vg150", "--src", "SRC", "--out", "OUT"],
    ("data", "world"): ["--out", "OUT"],
    ("data", "download"): ["--dataset", "d", "--out", "OUT", "--path", "SRC"],
    ("instructions",): ["--scenes", "SRC", "--out", "OUT"],
}


@st.composite
def bad_arguments(draw):
    command = draw(st.sampled_from(sorted(OUT_OF_DOMAIN)))
    flag = draw(st.sampled_from(sorted(OUT_OF_DOMAIN[command])))
    return [*command, *REQUIRED[command], flag, draw(st.sampled_from(OUT_OF_DOMAIN[command][flag]))]


@settings(max_examples=40, deadline=None, database=None)
@given(argv=bad_arguments())
def test_out_of_domain_arguments_fail_in_one_line_before_any_work(argv):
    with workspace() as root:
        argv = [str(root / item) if item in ("SRC", "OUT") else item for item in argv]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                reltune.cli.main(argv)
            except SystemExit as stop:
                code = stop.code
            else:
                code = 0
        lines = stderr.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and "error: argument" in lines[0], (argv, lines)
        assert os.listdir(root) == []  # nothing was created
