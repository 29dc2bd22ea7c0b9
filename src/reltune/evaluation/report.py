"""The `report` stage: one HTML page with plots, tables and a gallery.

Inputs are found under explicit directories (loop, metrics, per-predicate
CSVs, scenes, predictions, instructions); anything absent becomes a visible
note on the page and a log line, never a silent gap. Plot data are written as
CSV under `plots/` (PNGs under `figures/`, examples under `gallery/`) so DVC
can declare the CSVs as `plots` without overlapping the other outputs.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from reltune.errors import InputError
from reltune.evaluation import plots
from reltune.evaluation.gallery import GalleryEntry, gallery_entries
from reltune.evaluation.report_data import (
    ReportConfig,
    dataset_chance_levels,
    metrics_files,
    per_predicate_files,
    seen_predicate_transfer,
    recall_family,
    results_side_by_side,
    round_directories,
    selection_per_predicate,
    selection_per_round,
    selections,
    text_columns,
    validation_recall,
)
from reltune.io import atomic_path, read_json, read_parquet
from reltune.progress import log


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


def _table_html(table: pd.DataFrame) -> str:
    # counts (images, gt_relations, ...) stay integers even where a missing cell made the column float
    counts = [
        column
        for column in table.columns
        if pd.api.types.is_float_dtype(table[column]) and recall_family(column.removesuffix(" (blind)")) is None
        and (table[column].dropna() == table[column].dropna().round()).all()
    ]
    table = table.assign(**{column: table[column].map(lambda value: "–" if pd.isna(value) else str(int(value))) for column in counts})
    return table.to_html(index=False, escape=True, float_format=lambda value: f"{value:.2f}", na_rep="–", border=0, classes="data")


def _note(text: str) -> str:
    log(f"report: {text}")
    return f'<p class="note">{html.escape(text)}</p>'


def predictions_path(predictions_dir: Path, dataset: str, split: str) -> Path | None:
    """`<dir>/<dataset>.parquet` or `<dir>/<dataset>/<split>.parquet`, whichever exists."""
    for candidate in (predictions_dir / f"{dataset}.parquet", predictions_dir / dataset / f"{split}.parquet"):
        if candidate.is_file():
            return candidate
    return None


def _chance_rows(config: ReportConfig, side_by_side: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One '<dataset> (chance)' row per dataset with recalls, in the real-metric columns; notes for what is missing."""
    ks = sorted({parsed[2] for column in side_by_side.columns if (parsed := recall_family(column)) is not None})
    recall_columns = [column for column in side_by_side.columns if recall_family(column) is not None]
    if not recall_columns:
        return pd.DataFrame(), ""
    with_recalls = side_by_side.loc[side_by_side[recall_columns].notna().any(axis=1), "dataset"].tolist()
    levels, missing = dataset_chance_levels(config.scenes_dir, config.held_in, config.split, with_recalls, ks)
    rows = [
        {"dataset": f"{dataset} (chance)", **{key: value for key, value in dataset_levels.items() if key in side_by_side.columns}}
        for dataset, dataset_levels in levels.items()
    ]
    return pd.DataFrame(rows), "".join(_note(line) for line in missing)


def _unconstrained(column: str) -> bool:
    parsed = recall_family(column.removesuffix(" (blind)"))
    return parsed is not None and parsed[1]


def _results_section(config: ReportConfig, metrics: pd.DataFrame) -> str:
    """Tables of the evaluated datasets (`metrics_files`): constrained recalls and counts, the `ng` recalls, the settings."""
    if metrics.empty:
        return "<h2>Results</h2>" + _note(f"no evaluation metrics files in {config.metrics_dir}")
    _write_csv(metrics, config.out_dir / "results.csv")
    settings = text_columns(metrics)
    side_by_side = results_side_by_side(metrics.drop(columns=settings))
    chance, notes = _chance_rows(config, side_by_side)
    table = pd.concat([side_by_side, chance], ignore_index=True) if len(chance) else side_by_side
    constrained = [column for column in table.columns if not _unconstrained(column)]
    unconstrained = ["dataset", *(column for column in table.columns if _unconstrained(column))]
    parts = [
        "<h2>Results</h2><p>Recalls in percent, graph-constrained (one predicate per subject-object pair, as "
        "Scene-Graph-Benchmark's PredCls); <em>mR_vocab</em> averages over every predicate of the dataset's vocabulary. "
        "<em>(blind)</em> columns are the blind controls (same model, blank images); "
        "<em>(chance)</em> rows are the expected recalls of one uniformly random training predicate per annotated pair, "
        "ranked in random order (exact matches only).</p>",
        _table_html(table[constrained]),
    ]
    if len(unconstrained) > 1:
        parts += ["<h3>Without graph constraint (every distinct prediction ranked)</h3>", _table_html(table[unconstrained])]
    if settings:
        parts += ["<h3>Evaluation settings</h3>", _table_html(metrics[["dataset", "variant", *settings]].astype(str))]
    return "".join(parts) + notes


def _rounds_section(config: ReportConfig) -> str:
    parts = ["<h2>Adaptive loop</h2>"]
    if not round_directories(config.loop_dir):
        return parts[0] + _note(f"no round_<k> directories in {config.loop_dir}")
    summary, per_predicate = validation_recall(config.loop_dir)
    if summary.empty:
        parts.append(_note(f"no val_recall.json in any round of {config.loop_dir}"))
    else:
        _write_csv(summary, config.out_dir / "plots/val_recall.csv")
        _write_csv(per_predicate, config.out_dir / "plots/val_recall_per_predicate.csv")
        plots.plot_validation_recall(summary, config.out_dir / "figures/val_recall.png")
        plots.plot_validation_heatmap(per_predicate, config.out_dir / "figures/val_recall_per_predicate.png")
        parts += [
            "<h3>Validation recall per round</h3>",
            '<img src="figures/val_recall.png" alt="validation recall per round">',
            _table_html(summary),
            '<img src="figures/val_recall_per_predicate.png" alt="validation recall per predicate and round">',
        ]
    instructions_file = config.instructions_dir / config.held_in / "train.parquet"
    instructions = read_parquet(instructions_file, ["qid", "predicate"]) if instructions_file.is_file() else None
    selected = selections(config.loop_dir, instructions, str(instructions_file))
    if selected.empty:
        parts.append(_note(f"no selection.parquet in any round of {config.loop_dir}"))
    else:
        per_round = selection_per_round(selected)
        by_predicate = selection_per_predicate(selected)
        _write_csv(per_round, config.out_dir / "plots/selection_per_round.csv")
        _write_csv(by_predicate, config.out_dir / "plots/selection_per_predicate.csv")
        plots.plot_selection_per_round(per_round, config.out_dir / "figures/selection_per_round.png")
        plots.plot_selection_per_predicate(by_predicate, config.out_dir / "figures/selection_per_predicate.png")
        parts += [
            "<h3>What each round selected</h3>",
            '<img src="figures/selection_per_round.png" alt="instances added per round by component">',
            _table_html(per_round),
            '<img src="figures/selection_per_predicate.png" alt="selected instances per predicate">',
        ]
    for round_number, directory in round_directories(config.loop_dir):
        report_file = directory / "selection_report.json"
        if report_file.is_file():
            text = html.escape(json.dumps(read_json(report_file), indent=2, ensure_ascii=False))
            parts.append(f"<details><summary>round {round_number}: selection_report.json</summary><pre>{text}</pre></details>")
    return "\n".join(parts)


def _per_predicate_section(config: ReportConfig) -> str:
    tables = per_predicate_files(config.per_predicate_dir)
    if not tables:
        return "<h2>Per-predicate recall</h2>" + _note(f"no per-predicate CSV files in {config.per_predicate_dir}")
    parts = ["<h2>Per-predicate recall</h2>"]
    for dataset, table in tables.items():
        role = "held-in" if dataset == config.held_in else "held-out"
        columns = [column for column in (f"R@{config.plot_k}", f"gR@{config.plot_k}") if column in table.columns]
        if not columns:
            parts.append(_note(f"{dataset}: no R@{config.plot_k} / gR@{config.plot_k} column in its per-predicate CSV"))
            continue
        file_name = f"figures/per_predicate_{dataset}.png"
        plots.plot_per_predicate_recall(table, columns, f"{dataset} ({role})", config.out_dir / file_name)
        parts.append(f'<h3>{html.escape(dataset)} ({role})</h3><img src="{file_name}" alt="per-predicate recall {html.escape(dataset)}">')
    transfer = seen_predicate_transfer(tables, config.held_in, f"R@{config.plot_k}")
    if not transfer.empty:
        _write_csv(transfer, config.out_dir / "plots/seen_predicate_transfer.csv")
        parts.append(
            "<h3>Seen predicates on held-out data</h3>"
            + '<p class="note">held-out recall of predicates also seen in training, next to their held-in recall '
            "(issue 16 asks for a ratio of at least 0.7 with <code>full</code>)</p>"
            + _table_html(transfer)
        )
    return "\n".join(parts)


def _gallery_html(entries: list[GalleryEntry]) -> str:
    cards = []
    for entry in entries:
        truth = "".join(f"<li>{html.escape(text)}</li>" for text in entry.ground_truth)
        predicted = []
        for prediction in entry.predictions:
            classes = " ".join(name for name, flag in (("hit", prediction.hit), ("unseen", prediction.unseen)) if flag)
            predicted.append(f'<li class="{classes}">{prediction.rank}. {html.escape(prediction.text)} <small>{prediction.score:.3f}</small></li>')
        note = f'<p class="note">{html.escape(entry.note)}</p>' if entry.note else ""
        cards.append(
            f'<div class="card"><img src="{entry.image_file}" alt="{html.escape(entry.image_id)}">'
            f"<p><b>{html.escape(entry.dataset)}</b> image {html.escape(entry.image_id)}</p>{note}"
            f'<div class="lists"><div><h4>Ground truth</h4><ul>{truth}</ul></div>'
            f'<div><h4>Predicted</h4><ol>{"".join(predicted)}</ol></div></div></div>'
        )
    return "".join(cards)


def _gallery_section(config: ReportConfig, datasets: list[str]) -> str:
    parts = [
        "<h2>Examples</h2>",
        '<p><span class="hit">green</span>: prediction equals a GT relation; '
        '<span class="unseen">yellow</span>: predicate unseen in training.</p>',
    ]
    train_predicates: list[str] | None = None
    for dataset in datasets:
        scenes_file = config.scenes_dir / dataset / f"{config.split}.parquet"
        prediction_file = predictions_path(config.predictions_dir, dataset, config.split)
        if not scenes_file.is_file() or prediction_file is None:
            parts.append(_note(f"{dataset}: no gallery (needs {scenes_file} and {config.predictions_dir}/{dataset}.parquet)"))
            continue
        if train_predicates is None:
            vocab = read_json(config.scenes_dir / config.held_in / "vocab.json")
            train_predicates = [str(predicate) for predicate in vocab.get("predicates", [])]
        vocab_file = config.scenes_dir / dataset / "vocab.json"
        image_root = read_json(vocab_file).get("image_root", "") if vocab_file.is_file() else ""
        entries = gallery_entries(
            dataset,
            read_parquet(scenes_file),
            read_parquet(prediction_file),
            image_root,
            train_predicates,
            config.out_dir,
            config.gallery_images,
            config.gallery_top_k,
            config.gallery_seed,
            scenes_file=str(scenes_file),
            predictions_file=str(prediction_file),
        )
        parts.append(f"<h3>{html.escape(dataset)}</h3>" + (_gallery_html(entries) or _note(f"{dataset}: no image with both GT and predictions")))
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
table.data td, table.data th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.note { color: #a33; }
.card { border: 1px solid #ccc; padding: 0.5em; margin: 0.5em 0; display: flex; gap: 1em; flex-wrap: wrap; }
.lists { display: flex; gap: 2em; font-size: 0.85em; }
.hit { background: #c8f7c5; }
.unseen { background: #fff3a0; }
li.hit.unseen { background: linear-gradient(90deg, #c8f7c5 50%, #fff3a0 50%); }
"""


def _experiments_section(config: ReportConfig) -> str:
    """`make compare`'s tables (evaluation.compare), when asked for and experiments exist."""
    if not config.experiments:
        return ""
    from reltune.evaluation.compare import experiments_html

    return experiments_html()


def build_report(config: ReportConfig) -> Path:
    """Write `<out_dir>/index.html` with its PNGs and CSVs; return the HTML path."""
    if config.plot_k <= 0 or config.gallery_images < 0 or config.gallery_top_k <= 0:
        raise InputError("report", "plot-k and gallery-top-k must be positive, gallery-images non-negative")
    config.out_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics_files(config.metrics_dir)
    datasets = sorted(set(metrics.loc[metrics["variant"] == "real", "dataset"])) if not metrics.empty else []
    sections = [
        _results_section(config, metrics),
        _rounds_section(config),
        _per_predicate_section(config),
        _gallery_section(config, datasets) if config.gallery_images else "",
        _experiments_section(config),
    ]
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>reltune report</title>'
        f"<style>{STYLE}</style></head><body><h1>reltune report</h1>"
        f"<p>Held-in dataset: <b>{html.escape(config.held_in)}</b>.</p>{''.join(sections)}</body></html>\n"
    )
    index = config.out_dir / "index.html"
    with atomic_path(index) as temporary:
        temporary.write_text(page)
    return index
