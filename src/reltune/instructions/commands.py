"""`reltune instructions`: the instructions@<dataset> stage (thin wrapper over reltune.instructions.stage)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reltune.instructions.build import InstructionOptions
from reltune.instructions.categories import available_category_maps
from reltune.instructions.negatives import NEGATIVE_MODES
from reltune.instructions.stage import build_instruction_dataset
from reltune.argtypes import boolean, non_negative_int, positive_int

DEFAULTS = InstructionOptions()


def dataset_name(text: str) -> str:
    """A dataset that has a predicate category map (the name also never names a path)."""
    if text not in available_category_maps():
        raise argparse.ArgumentTypeError(f"no predicate category map for {text!r} (have: {', '.join(available_category_maps())})")
    return text


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "instructions",
        help="scene tables -> instruction tables (questions, positives, counter-negatives)",
        description="Build {train,val,test}.parquet instruction tables and instructions_report.json "
        "from a scene directory ({train,val,test}.parquet + vocab.json).",
    )
    parser.add_argument("--scenes", required=True, type=Path, help="scene directory, e.g. data/scenes/vg150")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. data/instructions/vg150")
    parser.add_argument(
        "--dataset", default=None, type=dataset_name, help="category map name (vg150, gqa200, oiv4, oiv6, synthetic, ...); "
        "default: the scene directory's name",
    )
    parser.add_argument("--categories", type=boolean, default=DEFAULTS.categories, metavar="true|false",
                        help="ask about the high-level category (Fig. 2) or the naive question")
    parser.add_argument("--negatives", choices=NEGATIVE_MODES, default=DEFAULTS.negatives,
                        help="counter (Eq. 1), random (any category not annotated on the pair) or none")
    parser.add_argument("--negatives-per-positive", type=positive_int, choices=(1, 2), default=DEFAULTS.negatives_per_positive)
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULTS.seed)
    parser.set_defaults(func=run_instructions, _parser=parser)


def run_instructions(args: argparse.Namespace) -> int:
    try:
        options = InstructionOptions(
            categories=args.categories,
            negatives=args.negatives,
            negatives_per_positive=args.negatives_per_positive,
            seed=args.seed,
        )
    except ValueError as error:
        args._parser.error(str(error))
    dataset = args.dataset or args.scenes.resolve().name
    build_instruction_dataset(args.scenes, args.out, dataset, options)
    return 0
