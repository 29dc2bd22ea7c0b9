"""Tables behind the report: loop rounds, selections, metrics files.

Each loader reads files written by other stages (formats in
docs/CONTRACTS.md) and returns a plain DataFrame; the plots and the HTML are
made from these tables, and the tables are also written as CSV so DVC can
declare them as `plots`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.io import read_json, read_parquet
from reltune.progress import log

SELECTION_REASONS = (
    "balanced",
    "random",
    "tp_high_entropy",
    "fn_high_entropy",
    "fn_low_entropy",
    "fp_low_similarity",
    "fill",
)
METRIC_ORDER = ("R", "mR", "mR_vocab", "gR", "mgR")  # recall families as metrics.RECALL_FAMILIES
DETAILS_DIR = "details"  # `evaluate --details` files: <metrics-dir>/details/<name>.json
UNCONSTRAINED_PREFIX = "ng"
BLIND_SUFFIX = "_blind"
_ROUND_DIRECTORY = re.compile(r"^round_(\d+)$")
DEFAULT_PLOT_K = 50


@dataclass
class ReportConfig:
    """Where the report reads from and writes to, and how much it shows."""

    loop_dir: Path = Path("data/loop")
    metrics_dir: Path = Path("metrics")
    per_predicate_dir: Path = Path("metrics/per_predicate")
    scenes_dir: Path = Path("data/scenes")
    predictions_dir: Path = Path("data/predictions")
    instructions_dir: Path = Path("data/instructions")
    held_in: str = "synthetic"
    out_dir: Path = Path("report")
    split: str = "test"
    plot_k: int = DEFAULT_PLOT_K
    gallery_images: int = 6
    gallery_top_k: int = 10
    gallery_seed: int = 0
    # add `make compare`'s tables (dvc exp show of this repository); off unless asked: it reads git and dvc state
    experiments: bool = False


def round_directories(loop_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(k, path)` for every `round_<k>` directory, by k."""
    loop_dir = Path(loop_dir)
    if not loop_dir.is_dir():
        return []
    found = []
    for path in loop_dir.iterdir():
        match = _ROUND_DIRECTORY.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _fraction(value: object, file: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(file, f"{where} must be a finite number, got {value!r}")
    return float(value)


def validation_recall(loop_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per round: (round, mean_recall, recall) and long (round, predicate, recall).

    Rounds without `val_recall.json` (e.g. the seed) are absent.
    """
    summary_rows, predicate_rows = [], []
    for round_number, directory in round_directories(loop_dir):
        path = directory / "val_recall.json"
        if not path.exists():
            continue
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("per_predicate"), dict):
            raise InputError(path, "expected an object with 'per_predicate', 'mean_recall' and 'recall'")
        summary_rows.append(
            {
                "round": round_number,
                "mean_recall": _fraction(data.get("mean_recall"), path, "mean_recall"),
                "recall": _fraction(data.get("recall"), path, "recall"),
            }
        )
        for predicate, value in data["per_predicate"].items():
            recall = _fraction(value, path, f"per_predicate[{predicate!r}]")
            predicate_rows.append({"round": round_number, "predicate": str(predicate), "recall": recall})
    summary = pd.DataFrame(summary_rows, columns=["round", "mean_recall", "recall"])
    per_predicate = pd.DataFrame(predicate_rows, columns=["round", "predicate", "recall"])
    return summary, per_predicate


def selections(loop_dir: str | os.PathLike, instructions: pd.DataFrame | None, instructions_file: str) -> pd.DataFrame:
    """What each round added: (round, qid, reason, predicate).

    Selections are cumulative; round k's additions are the rows of
    `round_<k>/selection.parquet` with `added_in_round == k`. The predicate
    comes from the instruction table (joined on qid); a selected qid missing
    there is an error.
    """
    parts = []
    for round_number, directory in round_directories(loop_dir):
        path = directory / "selection.parquet"
        if not path.exists():
            continue
        table = read_parquet(path, ["qid", "added_in_round", "reason"])
        added = table[table["added_in_round"].to_numpy() == round_number]
        parts.append(
            pd.DataFrame({"round": round_number, "qid": added["qid"].astype(str).to_numpy(), "reason": added["reason"].astype(str).to_numpy()})
        )
    if not parts:
        return pd.DataFrame(columns=["round", "qid", "reason", "predicate"])
    selected = pd.concat(parts, ignore_index=True)
    if instructions is None:
        raise InputError(instructions_file, "file not found (needed for the predicates of the selected qids)")
    predicates = instructions.assign(qid=instructions["qid"].astype(str)).drop_duplicates("qid").set_index("qid")["predicate"]
    found = selected["qid"].isin(predicates.index)
    if not found.all():
        missing = selected.loc[~found.to_numpy()]
        raise InputError(
            instructions_file,
            f"selected qid {missing['qid'].iloc[0]!r} (round {missing['round'].iloc[0]}) is not in the instruction table"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
        )
    selected["predicate"] = predicates.reindex(selected["qid"]).astype(str).to_numpy()
    return selected


def selection_per_round(selected: pd.DataFrame) -> pd.DataFrame:
    """Wide: round, one count column per reason (every DESIGN reason, 0 when absent), total."""
    counts = selected.groupby(["round", "reason"]).size().unstack(fill_value=0) if len(selected) else pd.DataFrame()
    reasons = list(SELECTION_REASONS) + sorted(set(counts.columns) - set(SELECTION_REASONS))
    counts = counts.reindex(columns=reasons, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "round"
    return counts.reset_index().astype({"round": np.int64})


def selection_per_predicate(selected: pd.DataFrame) -> pd.DataFrame:
    """Wide: predicate, one column per round (`round_<k>`: added that round), `selected` (cumulative)."""
    if not len(selected):
        return pd.DataFrame(columns=["predicate", "selected"])
    counts = selected.groupby(["predicate", "round"]).size().unstack(fill_value=0)
    counts.columns = [f"round_{int(k)}" for k in counts.columns]
    counts["selected"] = counts.sum(axis=1)
    counts.index.name = "predicate"
    return counts.reset_index().sort_values(["selected", "predicate"], ascending=[False, True], kind="stable").reset_index(drop=True)


def recall_family(key: str) -> tuple[str, bool, int] | None:
    """`("mR", True, 20)` for `ngmR@20`: family, whether unconstrained, K; None for other keys."""
    name, _, k = key.partition("@")
    unconstrained = name.startswith(UNCONSTRAINED_PREFIX) and name[len(UNCONSTRAINED_PREFIX) :] in METRIC_ORDER
    family = name[len(UNCONSTRAINED_PREFIX) :] if unconstrained else name
    if family in METRIC_ORDER and k.isdigit():
        return family, unconstrained, int(k)
    return None


def metric_sort_key(key: str) -> tuple:
    """Graph-constrained R@.., mR@.., mR_vocab@.., gR@.., mgR@.. (by K), then the rest by name, then the `ng` recalls."""
    parsed = recall_family(key)
    if parsed is None:
        return (1, 0, 0, key)
    family, unconstrained, k = parsed
    return (2 if unconstrained else 0, METRIC_ORDER.index(family), k, "")


def is_evaluation(data: dict) -> bool:
    """A metrics file written by `evaluate` (it has recall keys), not e.g. pretraining metrics."""
    return any(recall_family(str(key)) is not None for key in data)


def flatten_metrics(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested metrics (e.g. other stages' files) as dotted keys; non-numbers kept as text."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _metrics_object(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a flat JSON object of metrics")
    return data


def evaluation_metrics(path: Path) -> dict:
    """One evaluation's keys: `metrics/<name>.json` (the compared keys) with `metrics/details/<name>.json`.

    `evaluate --details` writes every key (ng recalls, mR_vocab, counts,
    settings) there; without it only the compared keys are known.
    """
    data = _metrics_object(path)
    details = path.parent / DETAILS_DIR / path.name
    if details.is_file():
        return {**data, **_metrics_object(details)}
    if is_evaluation(data):
        log(f"report: no {details}: only the compared keys of {path} are shown")
    return data


def metrics_files(metrics_dir: str | os.PathLike) -> pd.DataFrame:
    """Every evaluation's `metrics/*.json` (with its details file): one row per file (dataset, variant real|blind, metric columns).

    Other metrics files there (pretraining, training) are not evaluated
    datasets and are left out, with a log line.
    """
    metrics_dir = Path(metrics_dir)
    rows = []
    for path in sorted(metrics_dir.glob("*.json")) if metrics_dir.is_dir() else []:
        data = evaluation_metrics(path)
        if not is_evaluation(data):
            log(f"report: {path} has no recall keys: not an evaluated dataset, left out of the results")
            continue
        name = path.stem
        blind = name.endswith(BLIND_SUFFIX)
        row: dict[str, object] = {"dataset": name[: -len(BLIND_SUFFIX)] if blind else name, "variant": "blind" if blind else "real"}
        row.update(flatten_metrics(data))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["dataset", "variant"])
    keys = sorted((column for column in table.columns if column not in ("dataset", "variant")), key=metric_sort_key)
    return table[["dataset", "variant", *keys]].sort_values(["dataset", "variant"], ascending=[True, False], kind="stable").reset_index(drop=True)


def text_columns(metrics: pd.DataFrame) -> list[str]:
    """Columns holding settings (text or booleans) rather than numbers: the similarity model, sentence, ..."""
    return [
        column
        for column in metrics.columns
        if column not in ("dataset", "variant")
        and metrics[column].map(lambda value: isinstance(value, (str, bool, np.bool_))).any()
    ]


def results_side_by_side(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset; each metric as `<key>` (real) and, if any blind file exists, `<key> (blind)` next to it."""
    if metrics.empty:
        return pd.DataFrame(columns=["dataset"])
    keys = [column for column in metrics.columns if column not in ("dataset", "variant")]
    real = metrics[metrics["variant"] == "real"].set_index("dataset")[keys]
    blind = metrics[metrics["variant"] == "blind"].set_index("dataset")[keys]
    datasets = sorted(set(real.index) | set(blind.index))
    table = pd.DataFrame(index=pd.Index(datasets, name="dataset"))
    for key in keys:
        table[key] = real[key].reindex(datasets)
        if len(blind):
            table[f"{key} (blind)"] = blind[key].reindex(datasets)
    return table.reset_index()


def per_predicate_files(per_predicate_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """`<dataset>.csv` per-predicate tables written by `evaluate --per-predicate`."""
    per_predicate_dir = Path(per_predicate_dir)
    tables = {}
    for path in sorted(per_predicate_dir.glob("*.csv")) if per_predicate_dir.is_dir() else []:
        try:
            table = pd.read_csv(path)
        except Exception as error:  # pandas raises several types for corrupt CSV
            raise InputError(path, f"not a readable CSV ({type(error).__name__}: {error})") from None
        if "predicate" not in table.columns:
            raise InputError(path, "missing column 'predicate'")
        tables[path.stem] = table
    return tables


def seen_predicate_transfer(tables: dict[str, pd.DataFrame], held_in: str, column: str) -> pd.DataFrame:
    """Held-out recall of each predicate also seen in training next to its held-in recall (issue 16, part 4).

    One row per (held-out dataset, predicate) whose CSV marks it `seen_in_training` and which the held-in
    table has; `ratio` = held-out / held-in recall (NaN where the held-in recall is 0). Blind tables are skipped.
    """
    rows: list[dict[str, Any]] = []
    reference = tables.get(held_in)
    if reference is None or column not in reference.columns:
        return pd.DataFrame(rows)
    held_in_recall = reference.set_index("predicate")[column]
    for dataset, table in tables.items():
        if dataset == held_in or dataset.endswith("_blind") or not {"seen_in_training", column} <= set(table.columns):
            continue
        for record in table[table["seen_in_training"].astype(bool)].to_dict("records"):
            predicate = record["predicate"]
            if predicate not in held_in_recall.index:
                continue
            inside, outside = float(held_in_recall[predicate]), float(record[column])
            rows.append({"dataset": dataset, "predicate": predicate, f"held-in {column}": inside,
                         f"held-out {column}": outside, "ratio": outside / inside if inside > 0 else float("nan")})  # fmt: skip
    return pd.DataFrame(rows)


def dataset_chance_levels(
    scenes_dir: str | os.PathLike, held_in: str, split: str, datasets: list[str], ks: list[int]
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Chance recalls (`metrics.chance_metrics`) of each dataset's `<split>.parquet`, and a line per one that cannot be had.

    With the dataset's own `vocab.json` the levels include `mR_vocab@K`.
    """
    from reltune.evaluation.metrics import chance_metrics

    scenes_dir = Path(scenes_dir)
    vocab_path = scenes_dir / held_in / "vocab.json"
    if not vocab_path.is_file():
        return {}, [f"no chance level: {vocab_path} is missing"]
    train_predicates = [str(predicate) for predicate in read_json(vocab_path).get("predicates", [])]
    levels, missing = {}, []
    for dataset in datasets:
        scenes_path = scenes_dir / dataset / f"{split}.parquet"
        if not scenes_path.is_file():
            missing.append(f"no chance level for {dataset}: {scenes_path} is missing")
            continue
        scenes = read_parquet(scenes_path)
        dataset_vocab = scenes_dir / dataset / "vocab.json"
        vocabulary = [str(p) for p in read_json(dataset_vocab).get("predicates", [])] if dataset_vocab.is_file() else None
        try:
            levels[dataset] = chance_metrics(scenes, train_predicates, ks, str(scenes_path), vocabulary=vocabulary, vocab_file=str(dataset_vocab))
        except InputError as error:
            if vocabulary is None:
                raise
            # a vocabulary that misses GT predicates has no mR_vocab; the other levels stand
            missing.append(f"no mR_vocab chance level for {dataset}: {error}")
            levels[dataset] = chance_metrics(scenes, train_predicates, ks, str(scenes_path))
    return levels, missing
