"""Per-image recall counts of one evaluation: what `make compare` bootstraps over.

`evaluate --per-image PATH` writes, from the evaluator's own ranked GT table
(`EvaluationResult.ground_truth`, the ranks behind the plain, graph-constrained
keys), one row per (image, predicate): the GT count and how many of those GT
relations are recalled at each K. That is all `mR@K` needs (DESIGN §7), so
`mean_recall_from_counts` recomputes the evaluator's `mR@K` from the file, and
the comparison can resample test images without the predictions.

The file is columnar JSON (a few tens of kB for hundreds of test images), small
enough to be committed with each experiment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.io import atomic_path

FORMAT = "reltune-per-image/1"
RANK_COLUMN = "exact_rank"  # the rank behind the plain (graph-constrained) R@K / mR@K keys


def recalled_column(k: int) -> str:
    return f"recalled@{k}"


def per_image_counts(ground_truth: pd.DataFrame, ks: Sequence[int]) -> pd.DataFrame:
    """One row per (image, predicate) of the ranked GT table: image_id, predicate, gt, recalled@K per K.

    Rows follow the evaluator's image order (`image` = scene row), then predicate.
    """
    for column in ("image", "image_id", "predicate", RANK_COLUMN):
        if column not in ground_truth.columns:
            raise InputError("evaluation result", f"the ranked GT table has no {column!r} column")
    ranks = ground_truth[RANK_COLUMN].to_numpy(dtype=np.float64)
    hits = {recalled_column(k): (ranks < k).astype(np.int64) for k in sorted({int(k) for k in ks})}
    table = ground_truth[["image", "image_id", "predicate"]].assign(gt=1, **hits)
    grouped = table.groupby(["image", "image_id", "predicate"], sort=True)
    counts = grouped[["gt", *hits]].sum().reset_index()
    return counts.drop(columns="image")


def per_image_document(ground_truth: pd.DataFrame, ks: Sequence[int]) -> dict[str, Any]:
    """The JSON document of `evaluate --per-image`."""
    counts = per_image_counts(ground_truth, ks)
    document: dict[str, Any] = {"format": FORMAT, "ks": sorted({int(k) for k in ks})}
    document["image_id"] = [str(value) for value in counts["image_id"]]
    document["predicate"] = [str(value) for value in counts["predicate"]]
    for column in counts.columns.drop(["image_id", "predicate"]):
        document[column] = [int(value) for value in counts[column]]
    return document


def write_per_image(ground_truth: pd.DataFrame, path: str, ks: Sequence[int]) -> None:
    """The document atomically, one column per line (a third of the pretty-printed size; it is committed per experiment)."""
    document = per_image_document(ground_truth, ks)
    lines = (f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'), ensure_ascii=False)}" for key, value in document.items())
    with atomic_path(path) as temporary:
        temporary.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def read_per_image(document: object, file: str, k: int) -> pd.DataFrame:
    """Validated table (image_id, predicate, gt, recalled) at K from a per-image document."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(file, f"not a per-image file (expected format {FORMAT!r})")
    column = recalled_column(k)
    if column not in document:
        raise InputError(file, f"no {column!r} column (K values: {document.get('ks')})")
    lengths = {len(document.get(name) or []) for name in ("image_id", "predicate", "gt", column)}
    if len(lengths) != 1:
        raise InputError(file, "columns image_id, predicate, gt and recalled differ in length")
    table = pd.DataFrame(
        {
            "image_id": document["image_id"],
            "predicate": document["predicate"],
            "gt": np.asarray(document["gt"], dtype=np.int64),
            "recalled": np.asarray(document[column], dtype=np.int64),
        }
    )
    bad = (table["gt"] <= 0) | (table["recalled"] < 0) | (table["recalled"] > table["gt"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(file, "gt must be positive and 0 <= recalled <= gt", where=f"row {row}")
    if table.duplicated(["image_id", "predicate"]).any():
        row = int(np.flatnonzero(table.duplicated(["image_id", "predicate"]).to_numpy())[0])
        raise InputError(file, "an (image_id, predicate) pair appears twice", where=f"row {row}")
    return table


def mean_recall_from_counts(table: pd.DataFrame) -> float:
    """`mR@K` (percent, DESIGN §7) from per-(image, predicate) counts, in the evaluator's arithmetic."""
    fraction = table["recalled"].to_numpy(dtype=np.float64) / table["gt"].to_numpy(dtype=np.float64)
    per_predicate = pd.Series(fraction).groupby(table["predicate"].to_numpy()).mean()
    return float(per_predicate.mean() * 100.0)
