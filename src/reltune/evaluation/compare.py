"""The strategy-comparison tables of `make compare`, from `dvc exp show --json`.

One row per experiment: its strategy and seed, then per evaluated dataset the
recalls of the tuned model next to its blind control (same model, blank
images), the unique/unseen predicate counts, and the summed stage wall time (when
the timing files are DVC metrics).
A last row gives the chance level of each dataset (`metrics.chance_metrics`:
one uniformly random training predicate per annotated pair), computed from
the workspace's scenes tables.

A second table summarises each variant (the experiment name without its
`-seed<N>` suffix) over its seeds: mean and 95% Student-t interval, and the
seed standard deviation of mR@20.

A third gives the paired differences art - balanced, art - random and
balanced - random of mR@20 (the plain, graph-constrained key) on every
dataset, within each setting (`art-neg2` - `balanced-neg2` for experiments
queued with EXP_SUFFIX=-neg2; another pipeline's variants among themselves),
and each setting's variant against the same strategy of the default
(`full-neg2` - `full`), with a 95% bootstrap interval over test images and seed pairs, a 95%
t interval over the per-seed differences and a verdict (`statistics`).

A fourth sets each variant's seed standard deviation of mR@20 beside the
bootstrap standard error of its runs over test images: the part of the spread
a larger test split can remove, and the rest.

Experiments come from every commit that has some (`refs/exps`), but only
those whose predictions were made by the workspace's pipeline (its
`dvc.lock`: the same code and parameters up to `predict`, `pipelines`) are
pooled; `--all-pipelines` lists the others too, each pipeline's variants
apart, labelled by what sets their pipeline apart (`art @train.epochs=40`).
Each experiment's per-image recall counts (`evaluate --per-image`,
`per_image`) are read from its git commit.
`experiments_html` gives the same tables to the HTML report.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reltune.errors import InputError
from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.pipelines import Signature, pipeline_groups, pipeline_label, pipeline_signature
from reltune.evaluation.statistics import (
    AlignedRecalls,
    Estimate,
    align_per_image,
    joint_verdict,
    paired_difference,
    paired_seed_interval,
    seed_interval,
    test_image_standard_errors,
    weighted_mean_recalls,
)
from reltune.progress import log

RECALL_KEYS = ("R@20", "R@50", "mR@20", "mR@50", "gR@20", "mgR@20")
COUNT_KEYS = ("unique_predicates", "unseen_predicates")
PAIRS = (("art", "balanced"), ("art", "random"), ("balanced", "random"))
PAIRED_K = 20  # the differences are of mR@PAIRED_K (plain key: graph-constrained)
SPREAD_KEY = "mR@20"  # whose seed standard deviation the summary shows
NOISE_RESAMPLES = 2000  # standard errors need fewer replicates than interval ends
PER_IMAGE_PATH = "metrics/per_image/{dataset}.json"  # `evaluate --per-image` output of the pipeline
HIDDEN_COLUMNS = ("rev", "variant_suffix")  # kept in the rows for reading per-image files and grouping, not printed
DVC_CACHE = Path(".dvc/cache/files/md5")  # the default local cache (another cache dir: read through dvc.api)
MD5 = re.compile(r"[0-9a-f]{32}")  # a lock's file hash; anything else must not become a path (`../..`)
EXPERIMENT_REFS = re.compile(r"^refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/")  # refs/exps/<baseline sha split 2/38>/<name>

SEED_SUFFIX = re.compile(r"-seed\d+$")

# (rev, path) -> the file's parsed JSON in that commit
RevisionReader = Callable[[str, str], Any]
# rev -> that commit's parsed dvc.lock, None when it has none
LockReader = Callable[[str], Any]


def _experiment_rows(entries: list[dict], baselines: bool = True) -> Iterator[tuple[str, str, dict]]:
    """(name, rev, data) of every experiment in `dvc exp show --json` output.

    Commit (baseline) rows come too when `baselines`; the workspace row always
    does, since it holds the run of `make repro`.
    """
    for entry in entries:
        data = entry.get("data") or {}
        name = entry.get("name") or data.get("name") or entry.get("rev", "?")
        if data.get("metrics") and (baselines or entry.get("rev") == "workspace"):
            yield name, str(data.get("rev") or entry.get("rev") or "workspace"), data
        for experiment in entry.get("experiments") or []:
            # a queued or running experiment shows the workspace's metrics: not its own yet
            state = (experiment.get("executor") or {}).get("state")
            if state not in (None, "success"):
                continue
            for revision in experiment.get("revs") or []:
                revision_data = revision.get("data") or {}
                if revision_data.get("metrics"):
                    rev = str(revision_data.get("rev") or revision.get("rev") or "?")
                    yield revision.get("name") or experiment.get("name") or rev, rev, revision_data


def _unwrap(files: dict) -> dict[str, Any]:
    return {path: (content or {}).get("data") or {} for path, content in (files or {}).items()}


def comparison_rows(entries: list[dict], baselines: bool = True) -> list[dict]:
    """Flat result rows, one per experiment."""
    rows = []
    for name, rev, data in _experiment_rows(entries, baselines):
        params = _unwrap(data.get("params")).get("params.yaml", {})
        metrics = _unwrap(data.get("metrics"))
        sampling = params.get("sampling", {})
        row: dict[str, Any] = {"experiment": name, "strategy": sampling.get("strategy"), "seed": sampling.get("seed")}
        row["train seed"] = (params.get("train") or {}).get("seed")
        wall_seconds: float | None = None  # timing files that are not DVC metrics do not show here
        for path, values in sorted(metrics.items()):
            stem = path.rsplit("/", 1)[-1].removesuffix(".json")
            if "/timing/" in f"/{path}":
                wall_seconds = (wall_seconds or 0.0) + float(values.get("wall_s", 0.0))
                continue
            if stem.startswith("pretrain") or "R@20" not in values:
                continue
            dataset, blind = (stem[: -len("_blind")], True) if stem.endswith("_blind") else (stem, False)
            keys = RECALL_KEYS if blind else RECALL_KEYS + COUNT_KEYS
            for key in keys:
                if key in values:
                    row[f"{dataset}{' blind' if blind else ''} {key}"] = values[key]
        if wall_seconds is not None:
            row["wall time (min)"] = round(wall_seconds / 60, 1)
        row["rev"] = rev
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


def variant_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Experiments named `<variant>-seed<N>`, grouped by variant and pipeline (listing order kept)."""
    variants: dict[str, list[dict]] = {}
    for row in rows:
        if SEED_SUFFIX.search(str(row["experiment"])):
            variant = SEED_SUFFIX.sub("", str(row["experiment"])) + row.get("variant_suffix", "")
            variants.setdefault(variant, []).append(row)
    return variants


def _interval_text(estimate: Estimate, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{estimate.mean:{sign}.2f} [{estimate.low:{sign}.2f}, {estimate.high:{sign}.2f}]"


def seed_summary_rows(rows: list[dict]) -> list[dict]:
    """Per variant with 2+ seeds: 'mean [95% t interval]' of every number, and the seed sd of mR@20."""
    summary = []
    for variant, grouped in variant_groups(rows).items():
        by_seed = seed_members(grouped)
        if len(by_seed) < 2:
            continue
        members = [by_seed[seed] for seed in sorted(by_seed)]
        seeds = [str(seed) for seed in sorted(by_seed)]
        row: dict[str, Any] = {"variant": variant, "seeds": ",".join(seeds)}
        for column in members[0]:
            values = [member.get(column) for member in members]
            if column in ("experiment", "seed", "train seed") or not all(isinstance(v, (int, float)) for v in values):
                continue
            row[column] = _interval_text(seed_interval(values))
            if column.endswith(f" {SPREAD_KEY}") and " blind " not in column:
                row[f"{column} sd"] = f"{np.std(values, ddof=1):.2f}"
        summary.append(row)
    return summary


def cached_output(rev: str, path: str) -> Path | None:
    """The local DVC cache file of a file output of `rev` (its dvc.lock's md5); None if unrecorded or not cached."""
    lock = read_revision_lock(rev) or {}
    hashes = {out.get("path"): out.get("md5") for stage in (lock.get("stages") or {}).values() for out in stage.get("outs") or []}
    md5 = str(hashes.get(path) or "")
    if not MD5.fullmatch(md5):  # unrecorded, a directory's `.dir` hash, or not a hash at all
        return None
    cached = DVC_CACHE / md5[:2] / md5[2:]
    return cached if cached.is_file() else None


def read_revision_json(rev: str, path: str) -> Any:
    """A JSON file as committed in `rev` (git), else from the DVC cache of `rev`; the workspace's from disk."""
    if rev == "workspace":
        return json.loads(Path(path).read_text())
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if shown.returncode == 0:
        return json.loads(shown.stdout)
    cached = cached_output(rev, path)
    if cached is not None:  # much faster than dvc.api, which opens the whole repository at that commit
        return json.loads(cached.read_text())
    try:
        import dvc.api

        return json.loads(dvc.api.read(path, rev=rev))
    except Exception as error:  # dvc raises many kinds (missing cache, path not an output, bad rev)
        raise InputError(path, f"not readable in experiment {rev[:7]} (git: {shown.stderr.strip()[:120]}; dvc: {error})") from None


def read_revision_lock(rev: str) -> Any:
    """The `dvc.lock` of a commit (the workspace's from disk), parsed; None when there is none."""
    return _read_revision_yaml(rev, "dvc.lock")


def read_revision_params(rev: str) -> Any:
    """The `params.yaml` of a commit (the workspace's from disk), parsed; None when there is none."""
    return _read_revision_yaml(rev, "params.yaml")


def _read_revision_yaml(rev: str, name: str) -> Any:
    import yaml

    if rev == "workspace":
        path = Path(name)
        return yaml.safe_load(path.read_text()) if path.exists() else None
    return _commit_yaml(rev, name)


@functools.cache  # a commit never changes; the noise benchmark reads several outputs of each
def _commit_yaml(rev: str, name: str) -> Any:
    import yaml

    shown = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, text=True)
    return yaml.safe_load(shown.stdout) if shown.returncode == 0 else None


def _signature(rev: str, lock_reader: LockReader) -> Signature | None:
    try:
        lock = lock_reader(rev)
    except Exception as error:  # a lock that does not parse counts as unknown (the row is then pooled with a warning)
        log(f"compare: dvc.lock of {rev[:7]} not readable ({error})")
        return None
    return pipeline_signature(lock) if isinstance(lock, dict) else None


def same_pipeline_rows(rows: list[dict], every_pipeline: bool, lock_reader: LockReader | None = None) -> list[dict]:
    """The rows whose predictions came from the workspace's pipeline (all rows, marked, with `every_pipeline`).

    Rows of another pipeline get a `pipeline` column (what its code and
    parameters set apart from the workspace's, `pipeline_label`) and a
    variant suffix ` @<label>` (`art @train.epochs=40`), so that no variant, seed
    summary or paired difference mixes pipelines. A row whose `dvc.lock`
    cannot be read is kept, with a warning.
    """
    lock_reader = lock_reader or read_revision_lock
    signatures = [_signature(str(row.get("rev")), lock_reader) for row in rows]
    groups = pipeline_groups(signatures)
    workspace_group = next((group for row, group in zip(rows, groups) if row["experiment"] == "workspace"), None)
    if workspace_group is None:
        log("compare: the workspace has no readable dvc.lock: experiments are pooled without a pipeline check")
    workspace_signature = signatures[groups.index(workspace_group)] if workspace_group is not None else {}
    members: dict[int, list[Signature]] = {}
    for signature, group in zip(signatures, groups):
        if group is not None and signature is not None:
            members.setdefault(group, []).append(signature)
    labels = {group: pipeline_label(workspace_signature or {}, group_members) for group, group_members in members.items()}
    kept, left_out = [], []
    for row, signature, group in zip(rows, signatures, groups):
        if group is None or workspace_group is None or group == workspace_group:
            if group is None and row["experiment"] != "workspace":
                log(f"compare: {row['experiment']}: no readable dvc.lock, pooled without a pipeline check")
            kept.append(row)
            continue
        label = labels[group]
        if every_pipeline:
            kept.append({**row, "pipeline": label, "variant_suffix": f" @{label}"})
        else:
            left_out.append(f"{row['experiment']} (@{label})")
    if left_out:
        log(f"compare: {len(left_out)} experiment(s) of another pipeline left out (--all-pipelines lists them): {'; '.join(left_out)}")
    return kept


def run_seed(row: dict) -> int | None:
    """The seed a run is paired and counted by: its name's `-seed<N>`, else its sampling seed.

    `make compare-queue` names a run by the seed it gives both sampling and
    training; a variant that fixes one of them (`EXP_ARGS="-S sampling.seed=0"`)
    keeps the name's seed, so its runs stay apart and pair with the same
    training seed of the default.
    """
    match = SEED_SUFFIX.search(str(row.get("experiment")))
    return int(match.group(0).removeprefix("-seed")) if match else row.get("seed")


def seed_members(rows: list[dict]) -> dict[int, dict]:
    """A variant's experiments by run seed (`run_seed`); a repeated seed (same name on several commits) keeps the first listed."""
    members: dict[int, dict] = {}
    for row in rows:
        seed = run_seed(row)
        if isinstance(seed, int) and seed not in members:
            members[seed] = row
        elif isinstance(seed, int):
            log(f"compare: {row['experiment']} seed {seed} appears twice, using {str(members[seed].get('rev'))[:7]}")
    return members


def aligned_variant(members: list[dict], dataset: str, reader: RevisionReader) -> AlignedRecalls:
    """Per-image recalls at PAIRED_K of a variant's experiments (one per seed) on one dataset."""
    path = PER_IMAGE_PATH.format(dataset=dataset)
    tables, names = [], []
    for member in members:
        document = reader(str(member.get("rev")), path)
        tables.append(read_per_image(document, f"{member['experiment']}:{path}", PAIRED_K))
        names.append(f"{member['experiment']}:{path}")
    return align_per_image(tables, names)


def difference_row(first: str, second: str, dataset: str, label: str, variants: dict[str, list[dict]], reader: RevisionReader) -> dict:
    """One paired difference first - second of mR@PAIRED_K on a dataset, with both intervals and the verdict."""
    first_members, second_members = seed_members(variants[first]), seed_members(variants[second])
    seeds = sorted(set(first_members) & set(second_members))
    row: dict[str, Any] = {"difference": f"{first} - {second}", "dataset": label, "seeds": ",".join(map(str, seeds))}
    if not seeds:
        return {**row, "verdict": "no common seeds"}
    try:
        first_recalls = aligned_variant([first_members[seed] for seed in seeds], dataset, reader)
        second_recalls = aligned_variant([second_members[seed] for seed in seeds], dataset, reader)
        if first_recalls.image_ids != second_recalls.image_ids:
            raise InputError(dataset, f"{first} and {second} were evaluated on different test images: not paired")
        estimate = paired_difference(first_recalls, second_recalls)
        over_seeds = paired_seed_interval(first_recalls, second_recalls)
    except (InputError, ValueError) as error:
        return {**row, "verdict": f"not compared: {error}"}
    row[f"mR@{PAIRED_K} difference [95% bootstrap interval]"] = _interval_text(estimate, signed=True)
    row["[95% t interval over seeds]"] = _interval_text(over_seeds, signed=True) if over_seeds else "(one seed)"
    row["verdict"] = joint_verdict([estimate] + ([over_seeds] if over_seeds else []))
    return row


def _setting(variant: str, strategy: str) -> str | None:
    """What follows `strategy` in a variant name (`art-neg2 @1a2b3c4` -> `-neg2 @1a2b3c4`), or None if it is another strategy's."""
    if not variant.startswith(strategy):
        return None
    rest = variant[len(strategy) :]
    return rest if rest == "" or rest.startswith(("-", " @")) else None


def compared_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """The (first, second) variants a difference is computed for.

    Strategies against each other within one setting (PAIRS; `art-neg2` against
    `balanced-neg2`, a variant suffix of EXP_SUFFIX and/or another pipeline being the
    setting), then each variant of a setting against the same strategy of the
    default one (`full-neg2` - `full`: what the setting changed).
    """
    present = set(variants)
    compared = list(dict.fromkeys(name for pair in PAIRS for name in pair))
    settings = list(dict.fromkeys(setting for variant in variants for name in compared if (setting := _setting(variant, name)) is not None))
    pairs = [(first + setting, second + setting) for setting in settings for first, second in PAIRS]
    pairs = [(first, second) for first, second in pairs if first in present and second in present]
    for variant in variants:
        for strategy in [*compared, "full"]:
            setting = _setting(variant, strategy)
            if setting and strategy in present:
                pairs.append((variant, strategy))
    return pairs


def difference_rows(rows: list[dict], datasets: list[str], held_in: str | None, reader: RevisionReader | None = None) -> list[dict]:
    """Paired differences of every pair of `compared_pairs` (variants of one pipeline or set against it), on every dataset."""
    variants = variant_groups(rows)
    pairs = compared_pairs(list(variants))
    reader = reader or read_revision_json
    result = []
    for dataset in datasets:
        label = dataset if held_in is None else f"{dataset} ({'held-in' if dataset == held_in else 'held-out'})"
        for first, second in pairs:
            result.append(difference_row(first, second, dataset, label, variants, reader))
    return result


def noise_row(variant: str, members: list[dict], dataset: str, label: str, reader: RevisionReader) -> dict:
    """A variant's seed sd of mR@PAIRED_K on a dataset beside the test-image bootstrap SE of its runs."""
    by_seed = seed_members(members)
    row: dict[str, Any] = {"variant": variant, "dataset": label, "seeds": ",".join(map(str, sorted(by_seed)))}
    try:
        recalls = aligned_variant([by_seed[seed] for seed in sorted(by_seed)], dataset, reader)
    except (InputError, ValueError) as error:
        return {**row, "note": f"not read: {error}"}
    values = weighted_mean_recalls(recalls, np.ones(len(recalls.image_ids)))
    seed_sd = float(np.std(values, ddof=1))
    # root mean square: the typical run's SE (variances average, standard errors do not)
    test_se = float(np.sqrt(np.mean(test_image_standard_errors(recalls, NOISE_RESAMPLES) ** 2)))
    row[f"mR@{PAIRED_K} seed sd"] = seed_sd
    row["test-image SE"] = test_se
    row["beyond test noise"] = float(np.sqrt(max(seed_sd**2 - test_se**2, 0.0)))
    return row


def noise_rows(rows: list[dict], datasets: list[str], held_in: str | None, reader: RevisionReader | None = None) -> list[dict]:
    """Per variant with 2+ seeds and dataset: how much of the seed spread a larger test split could remove."""
    reader = reader or read_revision_json
    result = []
    for variant, members in variant_groups(rows).items():
        if len(seed_members(members)) < 2:
            continue
        for dataset in datasets:
            label = dataset if held_in is None else f"{dataset} ({'held-in' if dataset == held_in else 'held-out'})"
            result.append(noise_row(variant, members, dataset, label, reader))
    return result


def markdown_table(rows: list[dict]) -> str:
    columns = table_columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(column for column in row if column not in columns and column not in HIDDEN_COLUMNS)
    return columns


def html_table(rows: list[dict]) -> str:
    columns = table_columns(rows)
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = (row.get(column, "") for column in columns)
        body.append("<tr>" + "".join(f"<td>{html.escape(f'{v:.2f}' if isinstance(v, float) else str(v))}</td>" for v in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def evaluated_datasets(rows: list[dict]) -> list[str]:
    columns = table_columns(rows)
    return sorted({column.rpartition(" ")[0] for column in columns if column.endswith(RECALL_KEYS) and " blind " not in column})


def workspace_held_in() -> str | None:
    import yaml

    try:
        with open("params.yaml") as handle:
            return str((yaml.safe_load(handle) or {}).get("held_in"))
    except OSError:
        return None


def experiment_baselines() -> list[str]:
    """HEAD and every commit that experiments were run from (named in `refs/exps`), HEAD first."""
    listed = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True, text=True, check=True)
    baselines = {"".join(match.groups()) for match in map(EXPERIMENT_REFS.match, listed.stdout.split()) if match}
    return ["HEAD", *sorted(baselines)]


def show_experiments(revs: list[str] | None = None) -> list[dict]:
    """`dvc exp show --json` of these baseline commits (default: `experiment_baselines()`) in the working directory.

    Naming the commits that have experiments is much faster than `--all-commits`
    (seconds instead of a minute on a history of ~100 commits).
    """
    revs = experiment_baselines() if revs is None else revs
    # this interpreter's dvc: the report stage may run with another PATH
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(arg for rev in revs for arg in ("--rev", rev))]
    shown = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)


def comparison_tables(
    entries: list[dict], every_pipeline: bool = False, reader: RevisionReader | None = None, lock_reader: LockReader | None = None
) -> dict[str, list[dict]]:
    """The four tables of `make compare`: experiments (+ chance row), per-variant summary, paired differences, noise."""
    # differences and noise read the same experiments' per-image files: read each once
    reader = functools.cache(reader or read_revision_json)
    # the commits' own rows would repeat the workspace's (its metrics files are committed)
    rows = comparison_rows(entries, baselines=False)
    rows.sort(key=lambda row: (row["experiment"] != "workspace", str(row["experiment"])))
    rows = same_pipeline_rows(rows, every_pipeline, lock_reader)
    if not rows:
        return {"experiments": [], "summary": [], "differences": [], "noise": []}
    datasets = evaluated_datasets(rows)
    summary = seed_summary_rows(rows)
    held_in = workspace_held_in()
    differences = difference_rows(rows, datasets, held_in, reader)
    noise = noise_rows(rows, datasets, held_in, reader)
    try:
        levels = workspace_chance_levels(datasets)
    except (OSError, KeyError, ValueError, TypeError):
        levels = {}  # no scenes in the workspace (run `make repro` first)
    if levels:
        rows.append(chance_row(levels, table_columns(rows)))
    else:
        log("compare: no chance row: the workspace has no scenes tables (run `make repro`)")
    return {"experiments": rows, "summary": summary, "differences": differences, "noise": noise}


SUMMARY_TITLE = "Per variant over seeds: mean [95% Student-t interval over seeds]"
DIFFERENCES_TITLE = (
    f"Paired differences of mR@{PAIRED_K} (same seeds; 95% percentile bootstrap over test images and seed pairs, "
    "and Student-t over the per-seed differences; a verdict needs both)"
)

NOISE_TITLE = (
    f"Where the seed spread of mR@{PAIRED_K} comes from: the seed standard deviation beside each run's bootstrap "
    "standard error over test images (root mean square over seeds), about what a larger test split can remove; "
    "beyond test noise = sqrt(sd^2 - SE^2), from the seed's draw, training and round-to-round selection"
)


def experiments_html(entries: list[dict] | None = None) -> str:
    """The comparison as an HTML section for `report/index.html`; "" without experiments.

    Inside an experiment run (DVC sets DVC_EXP_NAME) the report is about that
    one run, so the section is left out; so it is when dvc cannot list experiments.
    """
    if entries is None:
        if os.environ.get("DVC_EXP_NAME"):
            return ""
        try:
            entries = show_experiments()
        except subprocess.CalledProcessError as error:
            # git's or dvc's own last line ("fatal: not a git repository ...") says why, the exit status does not
            reason = (error.stderr or "").strip().splitlines()
            log(f"report: no experiment comparison ({reason[-1] if reason else error})")
            return ""
        except (OSError, json.JSONDecodeError) as error:
            log(f"report: no experiment comparison ({error})")
            return ""
    tables = comparison_tables(entries)
    if not tables["summary"] and not tables["differences"]:
        return ""
    parts = ["<h2>Experiments (make compare)</h2>", html_table(tables["experiments"])]
    if tables["summary"]:
        parts += [f"<h3>{html.escape(SUMMARY_TITLE)}</h3>", html_table(tables["summary"])]
    if tables["differences"]:
        parts += [f"<h3>{html.escape(DIFFERENCES_TITLE)}</h3>", html_table(tables["differences"])]
    if tables["noise"]:
        parts += [f"<h3>{html.escape(NOISE_TITLE)}</h3>", html_table(tables["noise"])]
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """`python -m reltune.evaluation.compare [--all-pipelines] [EXP_SHOW_JSON]`: print the four tables."""
    argv = sys.argv[1:] if argv is None else argv
    every_pipeline = "--all-pipelines" in argv
    paths = [arg for arg in argv if arg != "--all-pipelines"]
    entries = json.loads(Path(paths[0]).read_text()) if paths else show_experiments()
    tables = comparison_tables(entries, every_pipeline)
    if not tables["experiments"]:
        print("no experiments with metrics yet: run `make compare` (or `dvc exp run`) first", file=sys.stderr)
        return 1
    print(markdown_table(tables["experiments"]))
    if tables["summary"]:
        print(f"\n{SUMMARY_TITLE}\n")
        print(markdown_table(tables["summary"]))
    if tables["differences"]:
        print(f"\n{DIFFERENCES_TITLE}\n")
        print(markdown_table(tables["differences"]))
    if tables["noise"]:
        print(f"\n{NOISE_TITLE}\n")
        print(markdown_table(tables["noise"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
