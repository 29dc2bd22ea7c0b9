"""`reltune select`: the seed selection (round 0) and each round's adaptive selection."""

from __future__ import annotations

import argparse
from pathlib import Path

from reltune.argtypes import float_in, fraction, non_negative_float, non_negative_int, seed, unit_interval
from reltune.errors import InputError
from reltune.io import read_json, read_parquet, write_json, write_parquet
from reltune.progress import log
from reltune.sampling.loop import (
    SCORE_COLUMNS,
    SELECTION_COLUMNS,
    select_round,
    training_positives,
    validate_previous_selection,
    validate_recall,
    validate_scores,
)
from reltune.sampling.art import COMPONENTS
from reltune.sampling.settings import SamplingSettings
from reltune.sampling.strategies import SEED_STRATEGY_NAMES, STRATEGY_NAMES, make_strategy

# Command-line defaults: the paper's (SamplingSettings); the pipeline passes params.yaml `sampling`.
DEFAULTS = SamplingSettings()
# ART's z thresholds are z-scores of entropy and similarity (a few units). Beyond these bounds
# the loop's grid z_init - k * z_step would need more than 2**62 steps to reach ordinary scores.
Z_LIMIT = 1e6
Z_STEP_MIN = 1e-9
z_bound = float_in(-Z_LIMIT, Z_LIMIT)
z_step = float_in(Z_STEP_MIN, Z_LIMIT)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="select training positives for a round (round 0 = seed)",
        description="Write the cumulative selection.parquet and selection_report.json of one round.",
    )
    parser.add_argument("--instructions", required=True, help="training instruction table (train.parquet)")
    parser.add_argument("--round", type=non_negative_int, required=True, help="round index; 0 is the seed")
    parser.add_argument("--strategy", required=True, choices=STRATEGY_NAMES,
                        help=f"seed: {'|'.join(SEED_STRATEGY_NAMES)}; later rounds: any")
    parser.add_argument("--budget-fraction", type=fraction, default=DEFAULTS.budget_fraction,
                        help="budget per round as a fraction of all training positives, in (0, 1] (sampling.budget_fraction)")
    parser.add_argument("--seed", type=seed, default=DEFAULTS.seed)
    parser.add_argument("--out", required=True, help="round directory (data/loop/round_<k>)")
    parser.add_argument("--previous", help="selection.parquet of round k-1 (rounds >= 1)")
    parser.add_argument("--scores", help="scores.parquet of this round, from score@<round> (art, art-entropy, fixed)")
    parser.add_argument("--val-recall", help="val_recall.json of this round, from score@<round> (art, art-entropy, fixed)")
    parser.add_argument("--components", type=_components, default=DEFAULTS.components_text(),
                        help="comma-separated subset of h_tp,h_fn,t_fn,t_fp (art and fixed)")
    parser.add_argument("--z-init", type=z_bound, default=DEFAULTS.z_init,
                        help=f"ART's first z threshold, finite, |z| <= {Z_LIMIT:g} (sampling.z_init)")
    parser.add_argument("--z-step", type=z_step, default=DEFAULTS.z_step,
                        help=f"ART's z decrement, in [{Z_STEP_MIN:g}, {Z_LIMIT:g}] (sampling.z_step)")
    parser.add_argument("--fixed-thresholds", type=_thresholds, default=DEFAULTS.fixed_thresholds_text(),
                        help="absolute thresholds for --strategy fixed, e.g. t_fp=0.9,t_fn=0.25,h_fn=0.5,h_tp=0.5 "
                        "(t_fp a similarity in [0, 1]; the entropy thresholds finite and >= 0)")
    parser.set_defaults(func=run_select)


def _components(text: str) -> list[str]:
    """A non-empty, duplicate-free subset of ART's components (comma-separated)."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in COMPONENTS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names from {','.join(COMPONENTS)}, got {text!r}")
    return names


def _thresholds(text: str) -> dict[str, float]:
    """name=value pairs: t_fp a similarity in [0, 1], the entropy thresholds (h_tp, h_fn, t_fn) finite and >= 0."""
    thresholds: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        name, _, value = (part.strip() for part in item.partition("="))
        if name not in COMPONENTS or name in thresholds:
            raise argparse.ArgumentTypeError(f"expected distinct names from {','.join(COMPONENTS)}, got {item!r}")
        thresholds[name] = (unit_interval if name == "t_fp" else non_negative_float)(value)
    return thresholds


def run_select(args: argparse.Namespace) -> int:
    try:
        strategy = make_strategy(
            args.strategy,
            components=args.components,
            z_init=args.z_init,
            z_step=args.z_step,
            fixed_thresholds=args.fixed_thresholds,
        )
    except ValueError as error:
        raise InputError("--strategy", str(error)) from None
    if args.round == 0:
        if args.strategy not in SEED_STRATEGY_NAMES:
            raise InputError("--strategy", f"the seed (round 0) takes {'|'.join(SEED_STRATEGY_NAMES)}, got {args.strategy}")
        if args.previous or args.scores:
            raise InputError("--previous/--scores", "round 0 (the seed) has no previous round")
    elif not args.previous:
        raise InputError("--previous", f"round {args.round} needs the selection of round {args.round - 1}")
    if strategy.needs_scores and not (args.scores and args.val_recall):
        raise InputError("--scores/--val-recall", f"strategy {args.strategy} needs pool scores and validation recall")

    positives = training_positives(read_parquet(args.instructions, ["qid", "kind", "predicate"]), args.instructions)
    previous = None
    if args.previous:
        previous = validate_previous_selection(
            read_parquet(args.previous, SELECTION_COLUMNS), positives, args.round, args.previous
        )
    scores = recall = None
    if strategy.needs_scores:
        selected_qids = previous["qid"] if previous is not None else positives["qid"].iloc[:0]
        scores = validate_scores(read_parquet(args.scores, SCORE_COLUMNS), positives, selected_qids, args.scores)
        pool_size = int((~positives["qid"].isin(selected_qids)).sum())
        if scores.empty and pool_size > 0:
            # an empty pool (everything selected) may have no scores; a non-empty one must have some
            raise InputError(args.scores, f"no score rows, but the pool has {pool_size} positives (did score@{args.round} run?)")
        recall = validate_recall(read_json(args.val_recall), args.val_recall)
    elif args.scores or args.val_recall:
        log(f"select: strategy {args.strategy} does not use --scores/--val-recall; ignoring them")

    try:
        selection, report = select_round(
            positives, previous, strategy, args.round, args.budget_fraction, args.seed, scores, recall
        )
    except InputError:
        raise
    except ValueError as error:  # what the strategies refuse follows from the scores they were given
        raise InputError(args.scores or args.instructions, str(error).splitlines()[0]) from None
    out = Path(args.out)
    write_parquet(selection, out / "selection.parquet")
    write_json(report, out / "selection_report.json")
    log(
        f"select round {args.round} ({args.strategy}): budget {report['budget']}, "
        f"added {report['selected_this_round']}, total {report['selected_total']}, pool left {report['pool_left']}"
    )
    if report["recall_missing"]:
        log(f"select: no validation recall for {report['recall_missing']}; their recall counts as 0")
    if report["pool_unscored"]:
        log(f"select: {report['pool_unscored']} pool positives had no scores and could not be chosen")
    return 0
