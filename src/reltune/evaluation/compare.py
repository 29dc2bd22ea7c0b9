"""The strategy-comparison table of `make compare`, from `dvc exp show --json`.

One row per experiment: its strategy and seed, then per evaluated dataset the
recalls of the tuned model next to its blind control (same model, blank
images), the unique/unseen predicate counts, and the summed stage wall time.
A last row gives the chance level of each dataset (`metrics.chance_metrics`:
one uniformly random training predicate per annotated pair), computed from
the workspace's scenes tables.

A second table summarises each variant (the experiment name without its
`-seed<N>` suffix) over its seeds: mean, and min-max as the seed spread.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

RECALL_KEYS = ("R@20", "R@50", "mR@20", "mR@50", "gR@20", "mgR@20")
COUNT_KEYS = ("unique_predicates", "unseen_predicates")


SEED_SUFFIX = re.compile(r"-seed\d+$")


def _experiment_rows(entries: list[dict], baselines: bool = True) -> Iterator[tuple[str, dict]]:
    """(name, data) of every experiment in `dvc exp show --json` output.

    Commit (baseline) rows come too when `baselines`; the workspace row always
    does, since it holds the run of `make repro`.
    """
    for entry in entries:
        data = entry.get("data") or {}
        name = entry.get("name") or data.get("name") or entry.get("rev", "?")
        if data.get("metrics") and (baselines or entry.get("rev") == "workspace"):
            yield name, data
        for experiment in entry.get("experiments") or []:
            # a queued or running experiment shows the workspace's metrics: not its own yet
            state = (experiment.get("executor") or {}).get("state")
            if state not in (None, "success"):
                continue
            for revision in experiment.get("revs") or []:
                revision_data = revision.get("data") or {}
                if revision_data.get("metrics"):
                    yield revision.get("name") or experiment.get("name") or revision.get("rev", "?"), revision_data


def _unwrap(files: dict) -> dict[str, Any]:
    return {path: (content or {}).get("data") or {} for path, content in (files or {}).items()}


def comparison_rows(entries: list[dict], baselines: bool = True) -> list[dict]:
    """Flat result rows, one per experiment."""
    rows = []
    for name, data in _experiment_rows(entries, baselines):
        params = _unwrap(data.get("params")).get("params.yaml", {})
        metrics = _unwrap(data.get("metrics"))
        sampling = params.get("sampling", {})
        row: dict[str, Any] = {"experiment": name, "strategy": sampling.get("strategy"), "seed": sampling.get("seed")}
        wall_seconds = 0.0
        for path, values in sorted(metrics.items()):
            stem = path.rsplit("/", 1)[-1].removesuffix(".json")
            if "/timing/" in f"/{path}":
                wall_seconds += float(values.get("wall_s", 0.0))
                continue
            if stem.startswith("pretrain") or "R@20" not in values:
                continue
            dataset, blind = (stem[: -len("_blind")], True) if stem.endswith("_blind") else (stem, False)
            keys = RECALL_KEYS if blind else RECALL_KEYS + COUNT_KEYS
            for key in keys:
                if key in values:
                    row[f"{dataset}{' blind' if blind else ''} {key}"] = values[key]
        row["wall time (min)"] = round(wall_seconds / 60, 1)
        rows.append(row)
    return rows


def chance_row(levels: dict[str, dict[str, float]], columns: list[str]) -> dict:
    """Chance level per dataset (`metrics.chance_metrics`) in that dataset's real-metric columns."""
    row: dict[str, Any] = {"experiment": "chance (random training predicate)", "strategy": "", "seed": ""}
    for column in columns:
        dataset, _, key = column.rpartition(" ")
        if dataset in levels and key in levels[dataset]:
            row[column] = levels[dataset][key]
    return row


def workspace_chance_levels(datasets: list[str]) -> dict[str, dict[str, float]]:
    """Chance levels of the datasets whose scenes the workspace holds (params.yaml names held-in and split)."""
    import yaml

    from reltune.evaluation.report_data import dataset_chance_levels

    with open("params.yaml") as handle:
        params = yaml.safe_load(handle)
    split = (params.get("evaluate") or {}).get("split", "test")
    ks = sorted({int(key.partition("@")[2]) for key in RECALL_KEYS})
    levels, _ = dataset_chance_levels("data/scenes", str(params.get("held_in")), split, datasets, ks)
    return levels


def seed_summary_rows(rows: list[dict]) -> list[dict]:
    """Per variant (name without `-seed<N>`) with 2+ seeds: 'mean (min-max)' of every number."""
    variants: dict[str, list[dict]] = {}
    for row in rows:
        if SEED_SUFFIX.search(str(row["experiment"])):
            variants.setdefault(SEED_SUFFIX.sub("", str(row["experiment"])), []).append(row)
    summary = []
    for variant, members in variants.items():
        if len(members) < 2:
            continue
        seeds = sorted(str(member.get("seed")) for member in members)
        row: dict[str, Any] = {"variant": variant, "seeds": ",".join(seeds)}
        for column in members[0]:
            values = [member.get(column) for member in members]
            if column in ("experiment", "seed") or not all(isinstance(v, (int, float)) for v in values):
                continue
            mean = sum(values) / len(values)
            row[column] = f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})"
        summary.append(row)
    return summary


def markdown_table(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(column for column in row if column not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    all_commits = "--all-commits" in argv
    paths = [arg for arg in argv if arg != "--all-commits"]
    if paths:
        entries = json.loads(open(paths[0]).read())
    else:
        command = ["dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
        shown = subprocess.run(command, capture_output=True, text=True, check=True)
        entries = json.loads(shown.stdout)
    # with every commit, old commits' own runs would bury the experiments
    rows = comparison_rows(entries, baselines=not all_commits)
    rows.sort(key=lambda row: (row["experiment"] != "workspace", str(row["experiment"])))
    if not rows:
        print("no experiments with metrics yet: run `make compare` (or `dvc exp run`) first", file=sys.stderr)
        return 1
    columns = [column for row in rows for column in row]
    datasets = sorted({column.rpartition(" ")[0] for column in columns if column.endswith(RECALL_KEYS) and " blind " not in column})
    try:
        levels = workspace_chance_levels(datasets)
    except (OSError, KeyError, ValueError, TypeError):
        levels = {}  # no scenes in the workspace (run `make repro` first)
    if levels:
        rows.append(chance_row(levels, columns))
    else:
        print("no chance row: the workspace has no scenes tables (run `make repro`)", file=sys.stderr)
    print(markdown_table(rows))
    summary = seed_summary_rows(rows)
    if summary:
        print("\nPer variant over seeds: mean (min-max)\n")
        print(markdown_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
