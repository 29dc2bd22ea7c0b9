"""`reltune build-tiny | pretrain-tiny | train | convert-lavis` (thin wrappers over reltune.models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dataclasses import asdict

from reltune.models.backbone import PRESETS, TinySizes
from reltune.models.training import TrainSettings
from reltune.argtypes import boolean

# Stage defaults (= the params.yaml proposal) come from TrainSettings; pretraining overrides a few.
TRAIN_DEFAULTS = asdict(TrainSettings())
PRETRAIN_DEFAULTS = {**TRAIN_DEFAULTS, "epochs": 1000, "max_steps": 1500, "train_all": True}


def _add_train_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    group = parser.add_argument_group("training (AdamW, linear warm-up then cosine to 0)")
    group.add_argument("--epochs", type=int, default=defaults["epochs"])
    group.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="examples per process per micro-batch")
    group.add_argument("--grad-accum", type=int, default=defaults["grad_accum"], help="micro-batches per optimizer step")
    group.add_argument("--lr", type=float, default=defaults["lr"])
    group.add_argument("--warmup-steps", type=int, default=defaults["warmup_steps"])
    group.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    group.add_argument("--betas", type=float, nargs=2, default=list(defaults["betas"]), metavar=("BETA1", "BETA2"))
    group.add_argument("--max-steps", type=int, default=defaults["max_steps"], help="cap on optimizer steps (0: none)")
    group.add_argument("--clip-norm", type=float, default=defaults["clip_norm"], help="gradient clipping (0: off)")
    group.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"], help="steps between checkpoints in <out>.ckpt/")
    group.add_argument("--log-every", type=int, default=defaults["log_every"], help="steps between dvclive points")
    group.add_argument("--seed", type=int, default=defaults["seed"])
    group.add_argument("--train-all", type=boolean, default=defaults["train_all"], metavar="true|false",
                       help="train every weight (tiny preset); default: Q-Former, queries, projection only")
    group.add_argument("--lora-r", type=int, default=defaults["lora_r"], help="LoRA rank on the language model (0: no LoRA)")
    group.add_argument("--lora-alpha", type=int, default=defaults["lora_alpha"])
    group.add_argument("--lora-dropout", type=float, default=defaults["lora_dropout"])
    group.add_argument("--flip-probability", type=float, default=defaults["flip_probability"],
                       help="mirror the crop (left/right words swapped with it)")
    group.add_argument("--box-jitter", type=float, default=defaults["box_jitter"], help="max outward growth of the union box per side")
    group.add_argument("--image-cache-mb", type=int, default=defaults["image_cache_mb"])
    group.add_argument("--device", default=defaults["device"], help="cpu or cuda ('' = cuda when available)")
    group.add_argument("--cpu-threads", type=int, default=defaults["cpu_threads"], help="torch threads per process on CPU (0: torch default)")
    group.add_argument("--live-dir", default="", help="dvclive directory ('' = <out>/dvclive)")
    group.add_argument("--stop-after-steps", type=int, default=0, help=argparse.SUPPRESS)  # test hook: hard crash


def _train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, betas=tuple(args.betas),
        max_steps=args.max_steps, clip_norm=args.clip_norm, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, seed=args.seed, train_all=args.train_all, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, flip_probability=args.flip_probability,
        box_jitter=args.box_jitter, image_cache_mb=args.image_cache_mb, device=args.device, cpu_threads=args.cpu_threads,
        stop_after_steps=args.stop_after_steps,
    )  # fmt: skip


def _add_question_arguments(parser: argparse.ArgumentParser) -> None:
    from reltune.models.pretrain import QuestionSettings

    defaults = QuestionSettings()
    group = parser.add_argument_group("generic questions")
    group.add_argument("--objects-per-image", type=int, default=defaults.objects_per_image)
    group.add_argument("--pairs-per-image", type=int, default=defaults.pairs_per_image)
    group.add_argument("--holdout-fraction", type=float, default=defaults.holdout_fraction, help="images held out for the accuracy check")
    group.add_argument("--eval-questions", type=int, default=defaults.eval_questions, help="held-out questions answered")
    group.add_argument("--question-seed", type=int, default=defaults.seed)


def _question_settings(args: argparse.Namespace):
    from reltune.models.pretrain import QuestionSettings

    return QuestionSettings(
        objects_per_image=args.objects_per_image,
        pairs_per_image=args.pairs_per_image,
        holdout_fraction=args.holdout_fraction,
        eval_questions=args.eval_questions,
        seed=args.question_seed,
    )


def _add_size_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tiny model sizes")
    for name, value in TinySizes().__dict__.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    return {name: getattr(args, name) for name in TinySizes.__dataclass_fields__}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    build = subparsers.add_parser("build-tiny", help="random-init tiny InstructBLIP-T5 + BPE tokenizer (no training)")
    build.add_argument("--scenes", required=True, type=Path, help="held-in scene directory (train split)")
    build.add_argument("--world", required=True, type=Path, help="world_spec.json of the synthetic world")
    build.add_argument("--instructions", type=Path, default=None, help="train instruction table (tokenizer corpus)")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--seed", type=int, default=TRAIN_DEFAULTS["seed"])
    _add_size_arguments(build)
    build.set_defaults(func=run_build_tiny)

    pretrain = subparsers.add_parser("pretrain-tiny", help="build the tiny backbone and pretrain it on generic questions")
    pretrain.add_argument("--scenes", required=True, type=Path, help="held-in scene directory (train split)")
    pretrain.add_argument("--world", required=True, type=Path, help="world_spec.json of the synthetic world")
    pretrain.add_argument("--instructions", type=Path, default=None, help="train instruction table (tokenizer corpus)")
    pretrain.add_argument("--out", required=True, type=Path, help="backbone directory to write")
    pretrain.add_argument("--metrics", required=True, type=Path, help="held-out generic-question accuracy (JSON)")
    _add_train_arguments(pretrain, PRETRAIN_DEFAULTS)
    _add_question_arguments(pretrain)
    _add_size_arguments(pretrain)
    pretrain.set_defaults(func=run_pretrain_tiny)

    train = subparsers.add_parser("train", help="relation-tune a backbone on a selection (or on all training rows)")
    train.add_argument("--backbone", required=True, help="backbone directory (or preset hub id / local weights)")
    train.add_argument("--instructions", required=True, type=Path, help="data/instructions/<dataset>/train.parquet")
    train.add_argument("--scenes", required=True, type=Path, help="data/scenes/<dataset> (image paths, image_root)")
    train.add_argument("--selection", type=Path, default=None, help="selection.parquet; omitted = all training rows")
    train.add_argument("--out", required=True, type=Path, help="models/round_<k>")
    train.add_argument("--scene-split", default="train", help="scene split the instructions come from")
    _add_train_arguments(train, TRAIN_DEFAULTS)
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
    from reltune.models.pretrain import QuestionSettings, class_attributes, generic_questions, tokenizer_corpus

    scenes, vocab = read_scenes(args.scenes, "train")
    world_spec = read_json(args.world)
    questions = generic_questions(scenes, class_attributes(world_spec, str(args.world)), QuestionSettings())
    texts: list[str] = []
    if args.instructions:
        instructions = read_parquet(args.instructions, ["prompt", "target"])
        texts = list(instructions["prompt"].astype(str)) + list(instructions["target"].astype(str))
    build_tiny(tokenizer_corpus(questions, world_spec, vocab, texts), args.out, seed=args.seed, **_sizes(args))
    return 0


def run_pretrain_tiny(args: argparse.Namespace) -> int:
    from reltune.models.pretrain import pretrain_tiny
    from reltune.progress import log

    metrics = pretrain_tiny(
        args.scenes, args.world, args.instructions, args.out, args.metrics,
        _train_settings(args), _question_settings(args), _sizes(args), live_dir=args.live_dir or None,
    )  # fmt: skip
    log(f"generic-question accuracy {metrics['accuracy']:.3f} (text-only baseline {metrics['text_only_baseline']:.3f})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from reltune.data.scenes import read_scenes
    from reltune.io import read_parquet
    from reltune.models.training import relation_training_examples, train_backbone

    instructions = read_parquet(
        args.instructions, ["qid", "image_id", "union_box", "kind", "positive_qid", "prompt", "target"]
    )
    scenes, vocab = read_scenes(args.scenes, args.scene_split)
    selection = read_parquet(args.selection, ["qid"]) if args.selection else None
    examples = relation_training_examples(
        instructions, scenes, selection, str(args.instructions), str(args.selection) if args.selection else "selection"
    )
    train_backbone(
        args.backbone, examples, vocab["image_root"], args.out, _train_settings(args),
        live_dir=args.live_dir or None, source=str(args.instructions),
        extra_metadata={"selection": str(args.selection) if args.selection else "full", "instructions": str(args.instructions)},
    )  # fmt: skip
    return 0


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
