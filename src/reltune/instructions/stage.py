"""The `instructions@<dataset>` stage: scene directory -> instruction directory.

Reads `{train,val,test}.parquet` + `vocab.json` (DESIGN §4) through
`reltune.data.scenes.read_scenes` (which validates them), builds every
split with the same options (validation and test positives feed recall; their
negatives are kept), writes `{train,val,test}.parquet` and
`instructions_report.json` as one directory, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reltune.data.scenes import SCENE_SCHEMA, SPLITS, read_scenes, read_vocab
from reltune.errors import InputError
from reltune.instructions.build import (
    INSTRUCTION_SCHEMA,
    InstructionOptions,
    build_instructions,
    options_report,
)
from reltune.instructions.categories import available_category_maps, load_category_map, predicate_categories
from reltune.io import atomic_directory, atomic_path, write_json
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


def _typed_when_empty(scenes: pd.DataFrame) -> pd.DataFrame:
    """An empty split (`--val-size 0`) read back from parquet has untyped list columns; give them the schema's types."""
    if len(scenes):
        return scenes
    scenes = scenes.copy()
    for name in ("boxes", "labels", "relations"):
        scenes[name] = pd.Series([], dtype=pd.ArrowDtype(SCENE_SCHEMA.field(name).type))
    return scenes


def _check_scene_directory(scenes_dir: Path, dataset: str) -> tuple[dict, dict[str, str]]:
    """The vocabulary and the dataset's category map; fails before any split is built."""
    if dataset not in available_category_maps():  # also keeps the name from naming a path
        raise InputError(scenes_dir, f"no predicate category map for dataset {dataset!r} "
                         f"(have: {', '.join(available_category_maps())})")
    vocab = read_vocab(scenes_dir)
    for split in SPLITS:
        scene_file = scenes_dir / f"{split}.parquet"
        if not scene_file.is_file():
            raise InputError(scene_file, f"file not found (the {split} split of the scene tables)")
    # Every vocabulary predicate must be mapped (error names the unmapped ones); predicates that
    # occur in the scenes but not in the vocabulary are checked by build_instructions.
    predicate_categories(dataset, vocab["predicates"])
    categories = load_category_map(dataset)
    _check_vocab_categories(vocab, categories, scenes_dir / "vocab.json")
    return vocab, categories


def build_instruction_dataset(
    scenes_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset: str,
    options: InstructionOptions = InstructionOptions(),
) -> dict:
    """Build and write the instruction tables of every split; returns the report written.

    The output directory is built in a temporary sibling and renamed over
    `out_dir` only when every split and the report are written.
    """
    scenes_dir, out_dir = Path(scenes_dir), Path(out_dir)
    _, categories = _check_scene_directory(scenes_dir, dataset)
    reports: dict[str, dict] = {}
    with atomic_directory(out_dir) as temporary:
        for split in track(SPLITS, f"instructions@{dataset}"):
            scenes, _ = read_scenes(scenes_dir, split)
            scene_file = str(scenes_dir / f"{split}.parquet")
            result = build_instructions(
                _typed_when_empty(scenes), categories, options, dataset=dataset, split=split, file=scene_file
            )
            write_instruction_table(result.table, temporary / f"{split}.parquet")
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
        write_json(report, temporary / "instructions_report.json")
    return report
