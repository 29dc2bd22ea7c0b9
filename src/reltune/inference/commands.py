"""`reltune score` (pool scores + validation recall) and `reltune predict` (evaluation predictions).

Thin wrappers: read files, call the pure functions of `scoring` / `predict`,
write the outputs atomically.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from reltune.errors import InputError
from reltune.io import read_parquet, write_json, write_parquet
from reltune.progress import log
from reltune.argtypes import boolean

DEFAULT_SETTINGS = {
    "num_beams": 3,
    "max_new_tokens": 32,
    "min_new_tokens": 1,
    "length_penalty": 0.0,
    "batch_size": 32,
}
# params.yaml defaults of the cost controls (sampling.strategy, sampling.budget_fraction,
# sampling.pool_cap_factor, sampling.seed, score.fit_max_new_tokens, score.vision_cache[_mb])
DEFAULT_STRATEGY = "art"
DEFAULT_BUDGET_FRACTION = 0.02
DEFAULT_POOL_CAP_FACTOR = 0.0
DEFAULT_SEED = 0
DEFAULT_VISION_CACHE = ""  # off; real profiles (frozen vision encoder) set .cache/vision
DEFAULT_VISION_CACHE_MB = 2048.0
DEFAULT_FIT_MAX_NEW_TOKENS = False  # measured to change a weakly tuned model's answers (benchmarks/score_cost.py)


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone", required=True, help="backbone directory (save_pretrained + reltune_backbone.json)"
    )
    parser.add_argument(
        "--num-beams", type=int, default=DEFAULT_SETTINGS["num_beams"], help="beams M (returned and used for the entropy)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_SETTINGS["max_new_tokens"])
    parser.add_argument("--min-new-tokens", type=int, default=DEFAULT_SETTINGS["min_new_tokens"])
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=DEFAULT_SETTINGS["length_penalty"],
        help="beam score = log-prob / length**penalty; 0 avoids the weak model's bias to long 'No, ...' answers",
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_SETTINGS["batch_size"], help="questions per generate call"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--vision-cache",
        default=DEFAULT_VISION_CACHE,
        help="directory of the on-disk vision-feature cache (fp16, keyed by crop and encoder weights); '' = off",
    )
    parser.add_argument(
        "--vision-cache-mb", type=float, default=DEFAULT_VISION_CACHE_MB, help="disk cap of the vision cache (MiB)"
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    score = subparsers.add_parser(
        "score",
        help="score the pool (TP/FP/FN, entropy, similarity) and validation recall of a tuned model",
        description="Write scores.parquet, val_recall.json and score_report.json into --out.",
    )
    _add_generation_arguments(score)
    score.add_argument("--instructions", required=True, help="training instruction table (train.parquet)")
    score.add_argument(
        "--scenes", required=True, help="scene directory of the dataset (train/val parquet + vocab.json)"
    )
    score.add_argument(
        "--selection", required=True, help="selection.parquet the model was tuned on (its complement is the pool)"
    )
    score.add_argument("--val-instructions", required=True, help="validation instruction table (val.parquet)")
    score.add_argument("--out", required=True, help="round directory (data/loop/round_<k-1>)")
    score.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        help="the round's selection strategy (sampling.strategy): balanced / random / full read no pool scores, "
        "so the pool is not scored (empty scores.parquet); validation recall is always computed",
    )
    score.add_argument(
        "--budget-fraction",
        type=float,
        default=DEFAULT_BUDGET_FRACTION,
        help="per-round budget fraction b (sampling.budget_fraction): B = round(b * training positives)",
    )
    score.add_argument(
        "--pool-cap-factor",
        type=float,
        default=DEFAULT_POOL_CAP_FACTOR,
        help="score at most C * B'_p pool rows per predicate (seeded, stratified); 0 = the whole pool (paper)",
    )
    score.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the scored pool subset")
    score.add_argument(
        "--fit-max-new-tokens",
        type=boolean,
        default=DEFAULT_FIT_MAX_NEW_TOKENS,
        help="true: decode at most (longest instruction target in tokens + 1 EOS) tokens, capped by --max-new-tokens; "
        "faster, but a weak model's truncated degenerate beams can then outrank finished ones (changes results)",
    )
    score.set_defaults(func=run_score)

    predict = subparsers.add_parser(
        "predict",
        help="predict relation triplets for every candidate box pair of a scene split",
        description="Write the DESIGN §4 predictions table (and a report next to it).",
    )
    _add_generation_arguments(predict)
    predict.add_argument("--scenes", required=True, help="scene directory of the dataset")
    predict.add_argument("--split", default="test", help="scene split to predict on")
    predict.add_argument("--out", required=True, help="predictions parquet")
    predict.add_argument("--report", default=None, help="report JSON (default: <out without .parquet>.report.json)")
    predict.add_argument(
        "--pairs", choices=("annotated", "all"), default="annotated", help="annotated pairs (PredCls) or all ordered pairs"
    )
    predict.add_argument(
        "--blind", type=boolean, default=False, help="true: every image replaced by a constant grey one (blind control)"
    )
    predict.add_argument(
        "--categories-from",
        choices=("vocab", "all"),
        default="vocab",
        help="ask the categories the dataset's predicates use (vocab) or all three",
    )
    predict.set_defaults(func=run_predict)


def _settings(args: argparse.Namespace):
    from reltune.inference.generation import GenerationSettings

    for name in ("num_beams", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}", f"must be at least 1, got {getattr(args, name)}")
    if args.min_new_tokens < 0 or args.min_new_tokens > args.max_new_tokens:
        raise InputError("--min-new-tokens", f"must be in [0, --max-new-tokens], got {args.min_new_tokens}")
    return GenerationSettings(
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        length_penalty=args.length_penalty,
        batch_size=args.batch_size,
    )


def _image_paths(scenes) -> dict[str, str]:
    return dict(zip(scenes["image_id"].astype(str), scenes["image_path"].astype(str)))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _strategy_needs_scores(name: str) -> bool:
    from reltune.sampling import make_strategy

    try:
        return bool(make_strategy(name).needs_scores)
    except ValueError as error:
        raise InputError("--strategy", str(error)) from None


def _cache_report(vision_cache) -> dict | None:
    return vision_cache.store.stats() if vision_cache is not None else None


def run_score(args: argparse.Namespace) -> int:
    import dataclasses

    from reltune.data.scenes import read_scenes
    from reltune.embedding import shared_embedder
    from reltune.models.backbone import load_backbone
    from reltune.inference.generation import CropLoader
    from reltune.inference.scoring import (
        QUESTION_COLUMNS,
        answer_token_limit,
        check_images_known,
        empty_scores,
        model_answer_source,
        outcome_counts,
        pool_questions,
        pool_scoring_candidates,
        positive_questions,
        score_questions,
        validation_recall,
    )
    from reltune.inference.vision_cache import open_vision_cache
    from reltune.sampling import round_budget

    settings = _settings(args)
    scores_pool = _strategy_needs_scores(args.strategy)
    if not (0.0 <= args.budget_fraction <= 1.0):
        raise InputError("--budget-fraction", f"must be in [0, 1], got {args.budget_fraction}")
    if not (args.pool_cap_factor == 0 or args.pool_cap_factor >= 1):
        raise InputError("--pool-cap-factor", f"must be 0 (score everything) or >= 1, got {args.pool_cap_factor}")
    if args.vision_cache and args.vision_cache_mb <= 0:
        raise InputError("--vision-cache-mb", f"must be positive, got {args.vision_cache_mb}")
    columns = (*QUESTION_COLUMNS, "target") if args.fit_max_new_tokens else QUESTION_COLUMNS
    instructions = read_parquet(args.instructions, columns)
    selection = read_parquet(args.selection, ["qid"])
    val_instructions = read_parquet(args.val_instructions, columns)
    train_scenes, vocab = read_scenes(args.scenes, "train")
    val_scenes, _ = read_scenes(args.scenes, "val")
    pool = pool_questions(instructions, selection, args.instructions, args.selection)
    training_positive_count = len(positive_questions(instructions, args.instructions))
    val_positives = positive_questions(val_instructions, args.val_instructions)
    train_paths, val_paths = _image_paths(train_scenes), _image_paths(val_scenes)
    check_images_known(pool, set(train_paths), args.instructions)
    check_images_known(val_positives, set(val_paths), args.val_instructions)

    backbone = load_backbone(args.backbone, device=args.device)
    backbone.model.eval()
    if args.fit_max_new_tokens:
        # every answer the model was tuned to give fits; longer beams could only be malformed
        targets = list(instructions["target"].dropna()) + list(val_instructions["target"].dropna())
        fitted = answer_token_limit(targets, backbone.processor.tokenizer, args.max_new_tokens)
        settings = dataclasses.replace(
            settings, max_new_tokens=fitted, min_new_tokens=min(settings.min_new_tokens, fitted)
        )
    vision_cache = open_vision_cache(backbone, args.vision_cache, args.vision_cache_mb)
    started = time.perf_counter()
    # validation recall first: the scored pool subset is drawn from this round's recall-weighted budgets
    val_source = model_answer_source(
        backbone,
        CropLoader(val_paths, vocab["image_root"], backbone.image_size),
        settings,
        "validation recall",
        vision_cache,
    )
    recall, val_classified = validation_recall(val_positives, val_source)
    validation_seconds = time.perf_counter() - started

    budget = round_budget(args.budget_fraction, training_positive_count)
    if scores_pool:
        candidates, per_predicate = pool_scoring_candidates(
            pool, recall["per_predicate"], budget, args.pool_cap_factor, args.seed
        )
        log(f"score: {len(candidates)} of {len(pool)} pool questions to score, {len(val_positives)} validation; {settings}")
        pool_source = model_answer_source(
            backbone,
            CropLoader(train_paths, vocab["image_root"], backbone.image_size),
            settings,
            "scoring pool",
            vision_cache,
        )
        scores = score_questions(candidates, pool_source, shared_embedder().relation_similarity)
    else:
        per_predicate = {}
        log(f"score: strategy {args.strategy!r} reads no pool scores; {len(val_positives)} validation questions only")
        scores = empty_scores()
    total_seconds = time.perf_counter() - started
    pool_seconds = total_seconds - validation_seconds

    out = Path(args.out)
    write_parquet(scores, out / "scores.parquet")
    write_json(recall, out / "val_recall.json")
    questions = len(scores) + len(val_positives)
    report = {
        "strategy": args.strategy,
        "pool": {
            "size": int(len(pool)),
            "questions": int(len(scores)),  # scored
            "scored": bool(scores_pool),
            "cap_factor": float(args.pool_cap_factor),
            "round_budget": int(budget),
            "seed": int(args.seed),
            "per_predicate": per_predicate,
            **outcome_counts(scores),
        },
        "validation": {
            "questions": int(len(val_positives)),
            **outcome_counts(val_classified),
            "recall": recall["recall"],
            "mean_recall": recall["mean_recall"],
        },
        "generation": {
            "num_beams": settings.num_beams,
            "max_new_tokens": settings.max_new_tokens,
            "max_new_tokens_cap": int(args.max_new_tokens),
            "fit_max_new_tokens": bool(args.fit_max_new_tokens),
            "min_new_tokens": settings.min_new_tokens,
            "length_penalty": settings.length_penalty,
            "batch_size": settings.batch_size,
            "device": str(backbone.device),
        },
        "vision_cache": _cache_report(vision_cache),
        "timing": {
            "validation_seconds": round(validation_seconds, 3),
            "pool_seconds": round(pool_seconds, 3),
            "total_seconds": round(total_seconds, 3),
            "questions_per_second": round(questions / total_seconds, 3) if total_seconds > 0 else None,
            "peak_rss_mib": round(_peak_rss_mib(), 1),
        },
    }
    write_json(report, out / "score_report.json")
    log(
        f"score: pool scored {len(scores)} of {len(pool)}: TP {report['pool']['TP']} FP {report['pool']['FP']} "
        f"FN {report['pool']['FN']} (malformed {report['pool']['malformed']}); validation recall "
        f"{recall['recall']:.3f}, mean {recall['mean_recall']:.3f}; {report['timing']['questions_per_second']} questions/s"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from reltune.data.scenes import read_scenes
    from reltune.models.backbone import load_backbone
    from reltune.inference.generation import CropLoader
    from reltune.inference.predict import predict_relations
    from reltune.inference.vision_cache import open_vision_cache

    settings = _settings(args)
    scenes, vocab = read_scenes(args.scenes, args.split)
    if args.vision_cache and args.vision_cache_mb <= 0:
        raise InputError("--vision-cache-mb", f"must be positive, got {args.vision_cache_mb}")
    backbone = load_backbone(args.backbone, device=args.device)
    backbone.model.eval()
    loader = CropLoader(_image_paths(scenes), vocab["image_root"], backbone.image_size, blind=args.blind)
    vision_cache = open_vision_cache(backbone, args.vision_cache, args.vision_cache_mb)
    started = time.perf_counter()
    predictions, report = predict_relations(
        backbone,
        scenes,
        vocab,
        loader,
        settings,
        pairs=args.pairs,
        categories_from=args.categories_from,
        vision_cache=vision_cache,
    )
    seconds = time.perf_counter() - started
    report.update(
        {
            "split": args.split,
            "pairs_mode": args.pairs,
            "blind": bool(args.blind),
            "categories_from": args.categories_from,
            "score": "exp(sequence score): with length_penalty 0 the answer's probability under beam search",
            "seconds": round(seconds, 3),
            "questions_per_second": round(report["questions"] / seconds, 3) if seconds > 0 else None,
            "peak_rss_mib": round(_peak_rss_mib(), 1),
            "vision_cache": _cache_report(vision_cache),
        }
    )
    out = Path(args.out)
    default_report = out.with_name(out.name.removesuffix(".parquet") + ".report.json")
    report_path = Path(args.report) if args.report else default_report
    write_parquet(predictions, out)
    write_json(report, report_path)
    log(f"predict: {report['predictions']} triplets from {report['questions']} questions on {report['pairs']} pairs")
    return 0
