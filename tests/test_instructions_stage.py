"""`reltune instructions` end to end on a small scene directory (vg150 category map)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reltune.cli import main
from reltune.errors import InputError
from reltune.instructions.build import INSTRUCTION_COLUMNS
from reltune.instructions.commands import add_commands
from reltune.io import read_parquet

SPLIT_RELATIONS = {
    "train": [(0, 1, "riding"), (0, 1, "on"), (0, 2, "wearing"), (2, 0, "on")],
    "val": [(0, 2, "wearing"), (0, 2, "has")],  # possessive only: a spatial or semantic negative each
    "test": [(1, 0, "on"), (1, 0, "on")],  # a repeat, merged
}


def parse(argv: list[str]) -> argparse.Namespace:
    """This area's subcommand alone (reltune.cli.main also imports the model stack)."""
    parser = argparse.ArgumentParser(prog="reltune")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    """What reltune.cli.main does with the parsed arguments (tested once through main below)."""
    args = parse(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"reltune {args.command}: error: {error}", file=sys.stderr)
        return 2


def write_scenes(directory: Path, relations: dict[str, list] = SPLIT_RELATIONS, vocab: dict | None = None) -> Path:
    directory.mkdir(parents=True)
    for split, split_relations in relations.items():
        pd.DataFrame(
            {
                "image_id": [f"{split}-1"],
                "image_path": [f"{split}-1.jpg"],
                "width": [640],
                "height": [480],
                "boxes": [[[10.0, 20.0, 50.0, 80.0], [30.0, 5.0, 90.0, 70.0], [12.0, 15.0, 30.0, 25.0]]],
                "labels": [["man", "horse", "hat"]],
                "relations": [[{"subj": s, "obj": o, "predicate": p} for s, o, p in split_relations]],
            }
        ).to_parquet(directory / f"{split}.parquet", index=False)
    vocab = vocab or {
        "objects": ["hat", "horse", "man"],
        "predicates": ["has", "on", "riding", "wearing"],
        "categories": {"has": "possessive", "on": "spatial", "riding": "semantic", "wearing": "possessive"},
        "image_root": "images",
    }
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return directory


def test_stage_writes_three_tables_and_a_report(tmp_path):
    scenes = write_scenes(tmp_path / "scenes" / "vg150")  # dataset name taken from the directory
    out = tmp_path / "instructions" / "vg150"
    assert run(["instructions", "--scenes", str(scenes), "--out", str(out), "--seed", "1"]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "instructions_report.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]
    schema = pq.read_schema(out / "train.parquet")
    assert schema.names == list(INSTRUCTION_COLUMNS)
    assert schema.field("union_box").type == pa.list_(pa.float64())
    assert schema.field("subj").type == pa.int64() and schema.field("qid").type == pa.string()

    train = read_parquet(out / "train.parquet", INSTRUCTION_COLUMNS)
    assert (train["kind"] == "positive").sum() == 4 and (train["kind"] == "negative").sum() == 4
    riding = train[train["predicate"] == "riding"].iloc[0]
    assert riding["prompt"] == (
        "Is there a prominent semantic relation between man (subject) and horse (object) in the image?"
    )
    assert list(riding["union_box"]) == [10.0, 5.0, 90.0, 80.0]
    val = read_parquet(out / "val.parquet")
    val_negatives = val[val["kind"] == "negative"]
    assert len(val_negatives) == 2 and set(val_negatives["category"]) <= {"spatial", "semantic"}
    assert set(val_negatives["positive_qid"]) == set(val.loc[val["kind"] == "positive", "qid"])
    assert len(read_parquet(out / "test.parquet")) == 2

    report = json.loads((out / "instructions_report.json").read_text())
    assert report["dataset"] == "vg150"
    assert report["options"] == {"categories": True, "negatives": "counter", "negatives_per_positive": 1, "seed": 1}
    assert report["category_map"]["wearing"] == "possessive"
    assert report["splits"]["train"]["questions"]["possessive"] == {"positive": 1, "negative": 3}
    assert report["splits"]["test"]["duplicate_relations_merged"] == 1
    assert report["splits"]["val"]["positives_per_predicate"] == {"has": 1, "wearing": 1}

    # Same inputs, same bytes of content: rerunning gives identical tables.
    again = tmp_path / "again"
    assert run(["instructions", "--scenes", str(scenes), "--out", str(again), "--seed", "1"]) == 0
    pd.testing.assert_frame_equal(read_parquet(again / "train.parquet"), train)


def test_cli_defaults_match_the_options_defaults():
    args = parse(["instructions", "--scenes", "s", "--out", "o"])
    assert (args.categories, args.negatives, args.negatives_per_positive, args.seed, args.dataset) == (
        True,
        "counter",
        1,
        0,
        None,
    )


def test_cli_ablation_flags(tmp_path):
    scenes = write_scenes(tmp_path / "vg150")
    naive_flags = ["--categories", "false", "--negatives", "none"]
    assert run(["instructions", "--scenes", str(scenes), "--out", str(tmp_path / "naive"), *naive_flags]) == 0
    naive = read_parquet(tmp_path / "naive" / "train.parquet")
    assert set(naive["kind"]) == {"positive"}
    assert naive["prompt"].str.startswith("Is there a relation between ").all()

    two_flags = ["--negatives-per-positive", "2"]
    assert run(["instructions", "--scenes", str(scenes), "--out", str(tmp_path / "two"), *two_flags]) == 0
    two = read_parquet(tmp_path / "two" / "val.parquet")
    assert sorted(two.loc[two["kind"] == "negative", "category"]) == ["semantic", "semantic", "spatial", "spatial"]

    with pytest.raises(SystemExit) as exit_info:
        run(["instructions", "--scenes", str(scenes), "--out", str(tmp_path / "bad"), "--categories", "false"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "bad").exists()


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    scenes = write_scenes(tmp_path / "vg150")
    (scenes / "val.parquet").unlink()
    assert main(["instructions", "--scenes", str(scenes), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "val.parquet" in error and "file not found" in error and "\n" not in error
    assert not (tmp_path / "out").exists()  # nothing built before every split was found

    # read through reltune.data.scenes: its validation errors come out the same way
    unlisted = write_scenes(tmp_path / "unlisted" / "vg150", {**SPLIT_RELATIONS, "test": [(0, 1, "teleporting")]})
    assert run(["instructions", "--scenes", str(unlisted), "--out", str(tmp_path / "out2")]) == 2
    assert "'teleporting' is not in the vocabulary" in capsys.readouterr().err

    categories = {"on": "spatial", "levitating": "spatial"}
    vocab = {"objects": [], "predicates": ["on", "levitating"], "categories": categories, "image_root": "images"}
    unmapped_vocab = write_scenes(tmp_path / "vocab" / "vg150", vocab=vocab)
    assert run(["instructions", "--scenes", str(unmapped_vocab), "--out", str(tmp_path / "out3")]) == 2
    assert "'levitating'" in capsys.readouterr().err

    vocab = {"objects": [], "predicates": ["on"], "categories": {"on": "possessive"}, "image_root": "images"}
    disagreeing = write_scenes(tmp_path / "disagree" / "vg150", vocab=vocab)
    assert run(["instructions", "--scenes", str(disagreeing), "--out", str(tmp_path / "out4")]) == 2
    assert "'on' (possessive vs spatial)" in capsys.readouterr().err
