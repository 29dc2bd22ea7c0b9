"""CLI: `reltune evaluate`, `reltune export-graphs`, `reltune report` (thin wrappers)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from reltune.argtypes import boolean, non_negative_int, positive_int, unit_interval
from reltune.embedding import add_similarity_arguments, similarity_from_arguments
from reltune.errors import InputError
from reltune.evaluation.graphs import DEFAULT_GRAPH_TOP_K, scene_graphs, write_scene_graphs
from reltune.evaluation.metrics import DEFAULT_KS, DEFAULT_SIMILARITY_THRESHOLD, compared_metrics, evaluate_predictions
from reltune.evaluation.per_image import write_per_image
from reltune.evaluation.report_data import ReportConfig
from reltune.evaluation.tables import PREDICTION_COLUMNS, SCENE_COLUMNS
from reltune.io import atomic_path, read_json, read_parquet, write_json
from reltune.progress import log


def parse_ks(text: str) -> list[int]:
    """`"20,50,100"` -> [20, 50, 100]: comma-separated positive integers."""
    try:
        ks = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return ks


def _write_csv(table: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


def read_predicates(path: str) -> list[str]:
    """The `predicates` list of a vocab.json (DESIGN §4)."""
    vocab = read_json(path)
    if not isinstance(vocab, dict) or not isinstance(vocab.get("predicates"), list):
        raise InputError(path, "expected a vocab.json object with a 'predicates' list")
    return [str(predicate) for predicate in vocab["predicates"]]


def run_evaluate(args: argparse.Namespace) -> int:
    scenes = read_parquet(args.scenes, SCENE_COLUMNS)
    predictions = read_parquet(args.predictions, PREDICTION_COLUMNS)
    train_predicates = read_predicates(args.train_vocab)
    vocabulary = read_predicates(args.vocab) if args.vocab else None
    if vocabulary is None:
        log("evaluate: no --vocab, so no mR_vocab@K (Scene-Graph-Benchmark's mean over the dataset's vocabulary)")
    similarity = similarity_from_arguments(args)
    result = evaluate_predictions(
        scenes,
        predictions,
        train_predicates,
        ks=args.ks,
        similarity_threshold=args.similarity_threshold,
        similarity=similarity,
        scenes_file=args.scenes,
        predictions_file=args.predictions,
        graph_constraint=args.graph_constraint,
        vocabulary=vocabulary,
        vocab_file=args.vocab or "vocab",
    )
    metrics = {**result.metrics, **similarity.record()}
    write_json(compared_metrics(metrics), args.out)
    if args.details:
        write_json(metrics, args.details)
    else:
        log("evaluate: no --details, so only the compared keys are written (no ng recalls, mR_vocab, counts or similarity settings)")
    if args.per_predicate:
        _write_csv(result.per_predicate, args.per_predicate)
    if args.per_image:
        write_per_image(result.ground_truth, args.per_image, args.ks)
    if args.predicted_predicates:
        _write_csv(result.predicted_predicates, args.predicted_predicates)
    log(" ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}" for key, value in metrics.items()))
    return 0


def run_export_graphs(args: argparse.Namespace) -> int:
    scenes = read_parquet(args.scenes, SCENE_COLUMNS)
    predictions = read_parquet(args.predictions, PREDICTION_COLUMNS)
    graphs = scene_graphs(scenes, predictions, top_k=args.top_k, scenes_file=args.scenes, predictions_file=args.predictions)
    write_scene_graphs(graphs, args.out)
    log(f"export-graphs: {len(graphs)} scene graphs -> {args.out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    config = ReportConfig(
        loop_dir=Path(args.loop_dir),
        metrics_dir=Path(args.metrics_dir),
        per_predicate_dir=Path(args.per_predicate_dir),
        scenes_dir=Path(args.scenes_dir),
        predictions_dir=Path(args.predictions_dir),
        instructions_dir=Path(args.instructions_dir),
        held_in=args.held_in,
        out_dir=Path(args.out_dir),
        split=args.split,
        plot_k=args.plot_k,
        gallery_images=args.gallery_images,
        gallery_top_k=args.gallery_top_k,
        gallery_seed=args.gallery_seed,
        experiments=args.experiments,
    )
    from reltune.evaluation.report import build_report  # matplotlib loads only for this command

    index = build_report(config)
    log(f"report: {index}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser("evaluate", help="R, mR, gR, mgR @K (with and without graph constraint) and unique/unseen predicates")
    evaluate.add_argument("--scenes", required=True, help="scene table of the evaluated split (parquet)")
    evaluate.add_argument("--predictions", required=True, help="predictions table: image_id, subj, obj, predicate, score [+ boxes/labels]")
    evaluate.add_argument("--train-vocab", required=True, help="vocab.json of the training dataset (for unseen predicates)")
    evaluate.add_argument("--vocab", default=None, help="vocab.json of the evaluated dataset: adds mR_vocab@K (mean over all its predicates)")
    evaluate.add_argument("--out", required=True, help="metrics JSON of the compared keys: constrained R/mR/gR/mgR @K, unique/unseen predicates")
    evaluate.add_argument(
        "--details",
        default=None,
        help="optional JSON of every key: --out's, the ng (unconstrained) recalls, mR_vocab, images, GT relations, the settings",
    )
    evaluate.add_argument("--per-predicate", default=None, help="optional CSV of per-predicate recalls")
    evaluate.add_argument("--per-image", default=None, help="optional JSON of per-image recall counts (what `make compare` bootstraps)")
    evaluate.add_argument("--predicted-predicates", default=None, help="optional CSV of the distinct predicted predicates (top-50)")
    evaluate.add_argument("--ks", type=parse_ks, default=list(DEFAULT_KS), help="comma-separated positive K values")
    evaluate.add_argument("--similarity-threshold", type=unit_interval, default=DEFAULT_SIMILARITY_THRESHOLD, help="gR/mgR similarity threshold in [0, 1]")
    evaluate.add_argument(
        "--graph-constraint",
        type=boolean,
        default=True,
        help="ranking behind unique/unseen predicates and --predicted-predicates: one predicate per pair (true) or all (false); "
        "recalls are written both ways (R@K constrained, ngR@K not: --details)",
    )
    add_similarity_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    defaults = ReportConfig()
    report = subparsers.add_parser("report", help="HTML report with plots and qualitative examples")
    report.add_argument("--loop-dir", default=str(defaults.loop_dir))
    report.add_argument("--metrics-dir", default=str(defaults.metrics_dir), help="every evaluation's *.json here (with details/<name>.json, evaluate --details) goes into the results table")
    report.add_argument("--per-predicate-dir", default=str(defaults.per_predicate_dir), help="<dataset>.csv from evaluate --per-predicate")
    report.add_argument("--scenes-dir", default=str(defaults.scenes_dir))
    report.add_argument("--predictions-dir", default=str(defaults.predictions_dir), help="<dataset>.parquet or <dataset>/<split>.parquet")
    report.add_argument("--instructions-dir", default=str(defaults.instructions_dir), help="<held-in>/train.parquet gives selected predicates")
    report.add_argument("--held-in", default=defaults.held_in, help="training dataset name (its vocab defines unseen predicates)")
    report.add_argument("--out-dir", default=str(defaults.out_dir))
    report.add_argument("--split", default=defaults.split, help="scene split shown in the gallery")
    report.add_argument("--plot-k", type=positive_int, default=defaults.plot_k, help="K of the per-predicate recall bars")
    report.add_argument("--gallery-images", type=non_negative_int, default=defaults.gallery_images, help="examples per dataset (0: no gallery)")
    report.add_argument("--gallery-top-k", type=positive_int, default=defaults.gallery_top_k, help="predictions listed per example")
    report.add_argument("--gallery-seed", type=non_negative_int, default=defaults.gallery_seed)
    report.add_argument(
        "--experiments", type=boolean, default=defaults.experiments, help="add make compare's tables when this repository has experiments"
    )
    report.set_defaults(func=run_report)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_evaluate(subparsers)
    export = subparsers.add_parser("export-graphs", help="per-image scene graphs (objects + scored relations) as JSON")
    export.add_argument("--scenes", required=True)
    export.add_argument("--predictions", required=True)
    export.add_argument("--out", required=True, help="a directory (one JSON per image) or a .jsonl file")
    export.add_argument("--top-k", type=positive_int, default=DEFAULT_GRAPH_TOP_K, help="relations kept per image")
    export.set_defaults(func=run_export_graphs)
    _add_report(subparsers)
