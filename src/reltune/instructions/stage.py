"""The `instructions@<dataset>` stage: scene directory -> instruction directory.

Reads `{train,val,test}.parquet` + `vocab.json` (DESIGN §4) through
`reltune.data.scenes.read_scenes` (which validates them), builds every
split with the same options (validation and test positives feed recall; their
negatives are kept), writes `{train,val,test}.parquet` and
`instructions_report.json` atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reltune.data.scenes import SPLITS, read_scenes, read_vocab
from reltune.errors import InputError
from reltune.instructions.build import (
    INSTRUCTION_SCHEMA,
    InstructionOptions,
    build_instructions,
    options_report,
)
from reltune.instructions.categories import load_category_map, predicate_categories
from reltune.io import atomic_path, write_json
from reltune.progress import log, track
from reltune.text import normalise_predicate

def _check_vocab_categories(vocab: dict, categories: dict[str, str], vocab_file: Path) -> None:
    """vocab.json carries the data stage's category of each predicate; it must agree with the dataset's map."""
    listed = vocab["categories"]
    disagreeing = sorted(
        predicate
        for predicate, category in listed.items()
        if normalise_predicate(predicate) in categories and categories[normalise_predicate(predicate)] != category
    )
    if disagreeing:
        raise InputError(
            vocab_file,
            "categories disagree with the dataset's category map for "
            + ", ".join(f"{p!r} ({listed[p]} vs {categories[normalise_predicate(p)]})" for p in disagreeing),
        )


def write_instruction_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write an instruction table atomically as plain parquet (box columns list<double>).

    The pandas schema metadata is left out: pandas 3.1 writes nested pyarrow
    dtypes there as 'list<item: double>[pyarrow]' and then cannot read them back.
    """
    arrow_table = pa.Table.from_pandas(table, preserve_index=False).select(INSTRUCTION_SCHEMA.names)
    arrow_table = arrow_table.cast(INSTRUCTION_SCHEMA)  # also drops the pandas metadata
    with atomic_path(path) as temporary:
        pq.write_table(arrow_table, temporary)


def build_instruction_dataset(
    scenes_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset: str,
    options: InstructionOptions = InstructionOptions(),
) -> dict:
    """Build and write the instruction tables of every split; returns the report written."""
    scenes_dir, out_dir = Path(scenes_dir), Path(out_dir)
    vocab_file = scenes_dir / "vocab.json"
    vocab = read_vocab(scenes_dir)
    scene_files = {split: scenes_dir / f"{split}.parquet" for split in SPLITS}
    for split, scene_file in scene_files.items():
        if not scene_file.is_file():  # fail before any split is built
            raise InputError(scene_file, f"file not found (the {split} split of the scene tables)")

    # Every vocabulary predicate must be mapped (error names the unmapped ones); predicates that
    # occur in the scenes but not in the vocabulary are checked by build_instructions.
    predicate_categories(dataset, vocab["predicates"])
    categories = load_category_map(dataset)
    _check_vocab_categories(vocab, categories, vocab_file)

    reports: dict[str, dict] = {}
    for split in track(SPLITS, f"instructions@{dataset}"):
        scenes, _ = read_scenes(scenes_dir, split)
        result = build_instructions(
            scenes, categories, options, dataset=dataset, split=split, file=str(scene_files[split])
        )
        write_instruction_table(result.table, out_dir / f"{split}.parquet")
        reports[split] = result.report
        positives, negatives = result.report["positives"], result.report["negatives"]
        log(f"instructions@{dataset} {split}: {positives} positives, {negatives} negatives")
        del scenes, result  # one split's rows in memory at a time

    report = {
        "dataset": dataset,
        "scenes": str(scenes_dir),
        "options": options_report(options),
        "category_map": dict(sorted(categories.items())),
        "splits": reports,
    }
    write_json(report, out_dir / "instructions_report.json")
    return report
