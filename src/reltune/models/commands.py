"""`reltune build-tiny | pretrain-tiny | train | convert-lavis` (thin wrappers over reltune.models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dataclasses import asdict

from reltune.errors import InputError
from reltune.argtypes import (
    below_one,
    boolean,
    device,
    float_in,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
    unit_interval,
)
from reltune.arguments import Setting, add_settings, settings_from_args
from reltune.models.backbone import PRESETS, TinyInit, TinySizes, check_tiny_sizes
from reltune.models.names import training_pool
from reltune.models.schedule import (
    COPY_PHRASES, NAME_SUBSTITUTION_LENGTHS, NAME_SUBSTITUTION_MODES, REPLAY_ANSWERS, SCHEDULES, TrainSettings,
)  # fmt: skip
from reltune.models.token_prior import TOKEN_PRIORS

# Stage defaults (= the params.yaml proposal) come from TrainSettings; pretraining overrides a few
# (its long run of tiny epochs is capped by max_steps, so the per-epoch LAVIS schedules do not fit it).
TRAIN_DEFAULTS = asdict(TrainSettings())
PRETRAIN_DEFAULTS = {**TRAIN_DEFAULTS, "epochs": 1000, "max_steps": 2000, "train_all": True, "schedule": "warmup-cosine",
                     "warmup_steps": 100, "cpu_threads": 2, "name_substitution": 0.0, "min_steps": 0}


def converse_spec(text: str) -> str:
    """`--converse-predicates` "a:b,c:d" checked before any work (reltune.models.converses.converse_pairs)."""
    from reltune.models.converses import converse_pairs

    try:
        converse_pairs(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(error.problem) from None
    return text


# One line per TrainSettings field: its flag's checked type and help (defaults come from the settings).
TRAIN_ARGUMENTS = {
    "epochs": Setting(positive_int),
    "batch_size": Setting(positive_int, "examples per process per micro-batch"),
    "grad_accum": Setting(positive_int, "micro-batches per optimizer step"),
    "lr": Setting(positive_float, "peak learning rate"),
    "warmup_steps": Setting(non_negative_int, "linear warm-up, in optimizer steps (lavis-*: at most the first epoch)"),
    "schedule": Setting(choices=SCHEDULES, help="warmup-cosine: warm-up then cosine over steps; lavis-step / lavis-cosine: "
                        "first-epoch warm-up, then per-epoch decay (x--decay-rate, or cosine by epoch) as LAVIS"),
    "decay_rate": Setting(fraction, "lavis-step: learning-rate factor per epoch after the first"),
    "allow_long_warmup": Setting(boolean, "accept a warm-up longer than the round's optimizer steps (refused otherwise)"),
    "weight_decay": Setting(non_negative_float),
    "betas": Setting(below_one, "Adam betas, each in [0, 1)", nargs=2, metavar=("BETA1", "BETA2")),
    "max_steps": Setting(non_negative_int, "cap on optimizer steps (0: none)"),
    "min_steps": Setting(non_negative_int, "more epochs until a round has this many optimizer steps (0: --epochs as given)"),
    "clip_norm": Setting(non_negative_float, "gradient clipping (0: off)"),
    "checkpoint_every": Setting(non_negative_int, "steps between checkpoints in <out>.ckpt/ (0: none)"),
    "log_every": Setting(positive_int, "steps between dvclive points"),
    "seed": Setting(seed),
    "train_all": Setting(boolean, "train every weight (tiny preset); default: Q-Former, queries, projection only"),
    "lora_r": Setting(non_negative_int, "LoRA rank on the language model (0: no LoRA)"),
    "lora_alpha": Setting(positive_int),
    "lora_dropout": Setting(below_one),
    "flip_probability": Setting(unit_interval, "mirror the crop (left/right words swapped with it)"),
    "box_jitter": Setting(unit_interval, "max outward growth of the union box per side, as a fraction of its size"),
    "name_substitution": Setting(unit_interval, "train: chance per object name of a question to be replaced by a word "
                                 "naming nothing (prompt and answer alike; reltune.models.names)"),
    "name_substitution_mode": Setting(choices=NAME_SUBSTITUTION_MODES, help="add: the altered question is asked besides the "
                                      "question as written; replace: instead of it (docs/RESULTS.md 'Names copied from the question')"),
    "name_substitution_lengths": Setting(choices=NAME_SUBSTITUTION_LENGTHS, help="pool: substitutes drawn uniformly from the "
                                         "pool; even: words of one tokenizer piece, of two and of more a third of the draws each "
                                         "(docs/RESULTS.md 'Art's held-out deficit is unseen names misspelt')"),
    "replay": Setting(non_negative_float, "train: pretraining's 'where is the {a} relative to the {b}' questions asked "
                      "besides, as a fraction of the relation examples (reltune.models.replay; 0: off)"),
    "replay_answer": Setting(choices=REPLAY_ANSWERS, help="side: replayed questions answer 'top' as pretraining "
                             "does; direction: '{a} above {b}' (left of, right of, above, below, from the boxes)"),
    "copy_replay": Setting(non_negative_float, "train: pretraining's language-only 'Repeat the words: a b.' questions over "
                           "every dataset's names (--exclude-names-of), a fraction of the relation examples (0: off)"),
    "copy_phrase": Setting(choices=COPY_PHRASES, help="pair: copy phrases of two names; triplet: '{object} {predicate} "
                           "{object}' drawn from every dataset's names; triplet-no-converse: triplets without the "
                           "--converse-predicates (reltune.models.replay)"),
    "repeat_threshold": Setting(non_negative_float, "train: LVIS repeat-factor threshold t: a predicate with share f of "
                                "the positives is asked max(1, sqrt(t/f)) times as often (reltune.models.repeats; 0: off)"),
    "converse_predicates": Setting(converse_spec, "train: 'a:b,c:d', predicates each the converse of the other: a question of one "
                                   "is asked again with subject and object swapped (reltune.models.converses; '': off)"),
    "converse_batches": Setting(boolean, "train: each converse question in the same batch as its source question "
                                "(needs --converse-predicates; reltune.models.converses)"),
    "image_cache_mb": Setting(non_negative_int),
    "device": Setting(device, "cpu, cuda or cuda:N ('' = cuda when available)"),
    "cpu_threads": Setting(non_negative_int, "torch threads per process on CPU (0: torch default)"),
    "stop_after_steps": Setting(non_negative_int, hidden=True),  # test hook: hard crash after that many steps
}
# `train` only: keep the best epoch by validation recall.
BEST_EPOCH_ARGUMENTS = {
    "select_best": Setting(boolean, "save the epoch with the best validation mean recall instead of the last (needs --val)"),
    "val_questions": Setting(non_negative_int, "validation positives answered per epoch, a seeded draw (0: all)"),
}
QUESTION_ARGUMENTS = {
    "objects_per_image": Setting(non_negative_int),
    "pairs_per_image": Setting(non_negative_int, "object pairs per image asked which side, where and side colour (and relative where)"),
    "holdout_fraction": Setting(float_in(0.0, 1.0, low_open=True, high_open=True), "images held out for the accuracy check"),
    "eval_questions": Setting(positive_int, "held-out questions answered"),
    "seed": Setting(seed, flag="--question-seed"),
    "cue_questions": Setting(boolean, "also ask what is drawn between each related pair (link glyph, contact); "
                             "answers never name a predicate"),
    "copy_questions": Setting(non_negative_int, "language-only 'repeat the words' questions per image over the world vocabulary"),
    "relative_where": Setting(boolean, "also ask where each asked pair's first object is relative to the second, both "
                              "named (answers: left, right, top, bottom; never a predicate)"),
}
SIZE_ARGUMENTS = {name: Setting(positive_int) for name in TinySizes.__dataclass_fields__}
INIT_ARGUMENTS = {
    "position_amplitude": Setting(float_in(0.0), "vision position table: 2-D sine/cosine times this (0: transformers' random init)"),
    "cross_attention_std": Setting(float_in(0.0), "init std of the Q-Former cross-attention query/key weights (0: transformers' 0.02)"),
    "token_prior": Setting(choices=TOKEN_PRIORS, help="sentence: word embeddings start from the sentence model's embedding of "
                           "each token's text (PCA to the width); sentence-frozen: and stay frozen; none: random"),
}


def _add_train_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    group = parser.add_argument_group("training (AdamW; learning-rate schedule: --schedule)")
    add_settings(group, TRAIN_ARGUMENTS, defaults)
    group.add_argument("--live-dir", default="", help="dvclive directory ('' = <out>/dvclive)")


def _train_settings(args: argparse.Namespace) -> TrainSettings:
    return settings_from_args(TrainSettings, args, {**TRAIN_ARGUMENTS, **BEST_EPOCH_ARGUMENTS})


def _question_defaults():
    from reltune.models.pretrain import QuestionSettings

    return QuestionSettings()


def _question_settings(args: argparse.Namespace):
    from reltune.models.pretrain import QuestionSettings

    return settings_from_args(QuestionSettings, args, QUESTION_ARGUMENTS)


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    """The tiny model sizes, checked together before any work (heads divide widths, patches tile the image)."""
    sizes = settings_from_args(TinySizes, args, SIZE_ARGUMENTS)
    check_tiny_sizes(sizes)
    return asdict(sizes)


def _init(args: argparse.Namespace) -> TinyInit:
    return settings_from_args(TinyInit, args, INIT_ARGUMENTS)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    build = subparsers.add_parser("build-tiny", help="random-init tiny InstructBLIP-T5 + BPE tokenizer (no training)")
    build.add_argument("--scenes", required=True, type=Path, help="held-in scene directory (train split)")
    build.add_argument("--world", required=True, type=Path, help="world_spec.json of the synthetic world")
    build.add_argument("--instructions", type=Path, default=None, help="train instruction table (tokenizer corpus)")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--seed", type=seed, default=TRAIN_DEFAULTS["seed"])
    add_settings(build.add_argument_group("tiny model sizes"), SIZE_ARGUMENTS, TinySizes())
    add_settings(build.add_argument_group("tiny model init"), INIT_ARGUMENTS, TinyInit())
    build.set_defaults(func=run_build_tiny)

    pretrain = subparsers.add_parser("pretrain-tiny", help="build the tiny backbone and pretrain it on generic questions")
    pretrain.add_argument("--scenes", required=True, type=Path, help="held-in scene directory (train split)")
    pretrain.add_argument("--world", required=True, type=Path, help="world_spec.json of the synthetic world")
    pretrain.add_argument("--instructions", type=Path, default=None, help="train instruction table (tokenizer corpus)")
    pretrain.add_argument("--out", required=True, type=Path, help="backbone directory to write")
    pretrain.add_argument("--metrics", required=True, type=Path, help="held-out generic-question accuracy (JSON)")
    _add_train_arguments(pretrain, PRETRAIN_DEFAULTS)
    add_settings(pretrain.add_argument_group("generic questions"), QUESTION_ARGUMENTS, _question_defaults())
    add_settings(pretrain.add_argument_group("tiny model sizes"), SIZE_ARGUMENTS, TinySizes())
    add_settings(pretrain.add_argument_group("tiny model init"), INIT_ARGUMENTS, TinyInit())
    pretrain.set_defaults(func=run_pretrain_tiny)

    train = subparsers.add_parser("train", help="relation-tune a backbone on a selection (or on all training rows)")
    train.add_argument("--backbone", required=True, help="backbone directory (or preset hub id / local weights)")
    train.add_argument("--instructions", required=True, type=Path, help="data/instructions/<dataset>/train.parquet")
    train.add_argument("--scenes", required=True, type=Path, help="data/scenes/<dataset> (image paths, image_root)")
    train.add_argument("--selection", type=Path, default=None, help="selection.parquet; omitted = all training rows")
    train.add_argument("--out", required=True, type=Path, help="models/round_<k>")
    train.add_argument("--scene-split", default="train", help="scene split the instructions come from")
    train.add_argument(
        "--exclude-names-of", type=Path, default=None,
        help="every dataset's names, which no substitute may be (--name-substitution) and copy replay repeats: the names "
             "file of stage `names` (data/names.json) or a scene root whose */vocab.json are read (default: the parent of --scenes)",
    )  # fmt: skip
    _add_train_arguments(train, TRAIN_DEFAULTS)
    best = train.add_argument_group("best epoch (validation recall after every epoch)")
    add_settings(best, BEST_EPOCH_ARGUMENTS, TRAIN_DEFAULTS)
    best.add_argument("--val", type=Path, default=None, help="data/instructions/<dataset>/val.parquet (--select-best)")
    train.set_defaults(func=run_train)

    _add_convert_lavis_command(subparsers)


def _add_convert_lavis_command(subparsers: argparse._SubParsersAction) -> None:
    from reltune.models.lavis import DTYPES, PRESET_DTYPES, ConvertSettings

    defaults = ConvertSettings()
    convert = subparsers.add_parser("convert-lavis", help="LAVIS InstructBLIP .pth -> transformers backbone directory")
    convert.add_argument("--checkpoint", required=True, type=Path, help="LAVIS / ART checkpoint (*.pth)")
    convert.add_argument("--preset", required=True, choices=PRESETS)
    convert.add_argument("--base", required=True, help="transformers weights of the preset (local dir or hub id)")
    convert.add_argument("--out", required=True, type=Path, help="backbone directory (with conversion_report.json)")
    convert.add_argument("--dtype", default=defaults.dtype, choices=["", *DTYPES],
                         help=f"dtype of the converted model ('' = the preset's: {PRESET_DTYPES})")
    convert.add_argument("--language-model-trained", type=boolean, nargs="?", const=True, default=defaults.language_model_trained,
                         metavar="true|false",
                         help="LoRA or full training: the language model must be in the checkpoint")
    convert.add_argument("--allow-missing", type=boolean, nargs="?", const=True, default=defaults.allow_missing,
                         metavar="true|false",
                         help="convert even when expected names are missing (the base weights stay for them)")
    convert.set_defaults(func=run_convert_lavis)


def run_build_tiny(args: argparse.Namespace) -> int:
    from reltune.data.scenes import read_scenes
    from reltune.io import read_json, read_parquet
    from reltune.models.backbone import build_tiny
    from reltune.models.pretrain import QuestionSettings, class_attributes, generic_questions, tokenizer_corpus, world_cues

    sizes = _sizes(args)  # checked before anything is read
    scenes, vocab = read_scenes(args.scenes, "train")
    world_spec = read_json(args.world)
    attributes, cues = class_attributes(world_spec, str(args.world)), world_cues(world_spec, str(args.world))
    questions = generic_questions(scenes, attributes, QuestionSettings(), cues=cues)
    texts: list[str] = []
    if args.instructions:
        instructions = read_parquet(args.instructions, ["prompt", "target"])
        texts = list(instructions["prompt"].astype(str)) + list(instructions["target"].astype(str))
    build_tiny(tokenizer_corpus(questions, world_spec, vocab, texts), args.out, seed=args.seed, init=_init(args), **sizes)
    return 0


def run_pretrain_tiny(args: argparse.Namespace) -> int:
    from reltune.models.pretrain import pretrain_tiny
    from reltune.progress import log

    metrics = pretrain_tiny(
        args.scenes, args.world, args.instructions, args.out, args.metrics,
        _train_settings(args), _question_settings(args), _sizes(args), live_dir=args.live_dir or None, init=_init(args),
    )  # fmt: skip
    log(f"generic-question accuracy {metrics['accuracy']:.3f} (text-only baseline {metrics['text_only_baseline']:.3f})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from reltune.data.scenes import read_scenes
    from reltune.io import read_parquet
    from reltune.models.converses import CONVERSE_COLUMNS, with_converses
    from reltune.models.repeats import with_repeats
    from reltune.models.replay import copy_vocabulary, with_copy_replay, with_replay
    from reltune.models.training import relation_training_examples, train_backbone
    from reltune.progress import log

    if args.select_best and args.val is None:  # checked before anything is read
        raise InputError("--val", "--select-best true needs the validation instructions (--val)")
    settings = _train_settings(args)
    names_source = args.exclude_names_of or args.scenes.parent
    # the copy phrases' words, checked before the instructions are read (triplet-no-converse needs converses)
    names, predicates = ([], None)
    if settings.copy_replay > 0:
        names, predicates = copy_vocabulary(names_source, settings.copy_phrase, settings.converse_predicates)
    labels = ["subj_label", "obj_label"] if settings.name_substitution > 0 else []
    predicate = ["predicate"] if settings.repeat_threshold > 0 else []
    converse = CONVERSE_COLUMNS + ["subj_label", "obj_label"] if settings.converse_predicates else []
    columns = ["qid", "image_id", "union_box", "kind", "positive_qid", "prompt", "target", *labels, *predicate, *converse]
    instructions = read_parquet(args.instructions, list(dict.fromkeys(columns)))
    scenes, vocab = read_scenes(args.scenes, args.scene_split)
    selection = read_parquet(args.selection, ["qid"]) if args.selection else None
    examples = relation_training_examples(
        instructions, scenes, selection, str(args.instructions), str(args.selection) if args.selection else "selection"
    )
    distinct_examples = len(examples)
    # rare predicates' questions repeated first, so replay keeps its share of the questions asked
    examples = with_repeats(examples, instructions, settings.repeat_threshold, settings.seed, str(args.instructions))
    repeated_examples = len(examples)
    if repeated_examples > distinct_examples:
        log(f"repeats: {repeated_examples} relation questions asked of {distinct_examples} (threshold {settings.repeat_threshold})")
    # every copy of a repeated direction question gets its converse: both answers asked equally often
    examples, skipped = with_converses(examples, instructions, settings.converse_predicates, str(args.instructions))
    relation_examples = len(examples)
    if settings.converse_predicates:
        log(f"converses: {relation_examples - repeated_examples} questions with subject and object swapped "
            f"({skipped} positives without one: the swapped pair is asked already)")
    examples = with_replay(examples, scenes, settings.replay, settings.seed, str(args.scenes), settings.replay_answer)
    if len(examples) > relation_examples:
        log(f"replay: {len(examples) - relation_examples} relative-where questions besides {relation_examples} relation examples")
    replayed_examples = len(examples)
    if settings.copy_replay > 0:
        # triplet phrases: object names around a predicate name; pairs: any two names
        examples = with_copy_replay(
            examples, relation_examples, scenes, names, settings.copy_replay, settings.seed, str(names_source), predicates
        )
        log(f"copy replay: {len(examples) - replayed_examples} 'Repeat the words' questions ({settings.copy_phrase} phrases) "
            f"over {len(names) + len(predicates or [])} dataset names")
    validation = _validation_set(args, settings) if settings.select_best else None
    pool: tuple[str, ...] = ()
    if settings.name_substitution > 0:
        # no substitute may be a word of any question asked, the replayed ones ("top", "relative", "repeat") included
        asked = pd.concat([instructions[["prompt", "target"]], examples.iloc[relation_examples:][["prompt", "target"]]])
        pool = training_pool(asked, names_source)
    train_backbone(
        args.backbone, examples, vocab["image_root"], args.out, settings,
        live_dir=args.live_dir or None, source=str(args.instructions),
        extra_metadata={
            "selection": str(args.selection) if args.selection else "full", "instructions": str(args.instructions),
            "replay_questions": replayed_examples - relation_examples,
            "copy_questions": len(examples) - replayed_examples,
            "repeated_questions": repeated_examples - distinct_examples,
            "converse_questions": relation_examples - repeated_examples,
        },
        validation=validation, name_pool=pool,
    )  # fmt: skip
    return 0


def _validation_set(args: argparse.Namespace, settings: TrainSettings):
    from reltune.data.scenes import read_scenes
    from reltune.io import read_parquet
    from reltune.inference.scoring import QUESTION_COLUMNS
    from reltune.models.training import validation_set

    if args.val is None:
        raise InputError("--val", "--select-best true needs the validation instructions (--val)")
    val_scenes, vocab = read_scenes(args.scenes, "val")
    instructions = read_parquet(args.val, QUESTION_COLUMNS)
    return validation_set(instructions, val_scenes, vocab["image_root"], settings.val_questions, settings.seed, str(args.val))


def run_convert_lavis(args: argparse.Namespace) -> int:
    from reltune.models.lavis import REPORT_FILE, ConvertSettings, convert_lavis
    from reltune.progress import log

    settings = ConvertSettings(
        dtype=args.dtype, language_model_trained=args.language_model_trained, allow_missing=args.allow_missing
    )
    report = convert_lavis(args.checkpoint, args.preset, args.base, args.out, settings)
    counts = report["counts"]
    log(
        f"converted {counts['loaded']} tensors from {args.checkpoint} into {args.out} ({report['dtype']}); "
        f"skipped {counts['skipped']}, missing {counts['missing']}: see {args.out / REPORT_FILE}"
    )
    return 0
