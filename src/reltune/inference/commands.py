"""`reltune score` (pool scores + validation recall) and `reltune predict` (evaluation predictions).

Each command reads top to bottom: load, build questions, run (the inference
runner: shards, processes, resume), classify, write. Under
`accelerate launch --num_processes N` every process runs the command; the
runner splits the questions, and only the main process writes the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reltune.argtypes import (
    boolean,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from reltune.embedding import add_similarity_arguments
from reltune.errors import InputError
from reltune.inference.generation import GenerationSettings
from reltune.io import write_json, write_parquet
from reltune.progress import log

if TYPE_CHECKING:
    from accelerate import PartialState

    from reltune.inference.runner import InferenceRun

SHARD_DIRECTORY = ".shards"  # under the stage's output; removed once the outputs are written


@dataclass(frozen=True)
class RunnerOptions:
    """Inference-runner and cache options of both commands (defaults of the command line).

    `shard_size`: questions per shard, the most a kill can lose per process
    (also what the runner holds in memory); `vision_cache`: '' = off.
    """

    shard_size: int = 1024
    vision_cache: str = ""
    vision_cache_mb: float = 2048.0


@dataclass(frozen=True)
class PoolOptions:
    """How `score` chooses the pool questions to score: the command line's defaults are the paper's
    (whole pool, fixed decoding length); the pipeline passes params.yaml's `sampling` / `score` values."""

    strategy: str = "art"
    budget_fraction: float = 0.02
    pool_cap_factor: float = 0.0
    seed: int = 0
    fit_max_new_tokens: bool = False


def pool_cap_factor(text: str) -> float:
    """0 (score the whole pool) or a number >= 1 (below 1 the subset could not fill the budget)."""
    value = finite_float(text)
    if value != 0 and value < 1:
        raise argparse.ArgumentTypeError(f"must be 0 (score everything) or >= 1, got {value:g}")
    return value


def answers_per_question(text: str) -> int | None:
    """`all` (None: every returned beam) or a count >= 1."""
    return None if str(text).strip().lower() == "all" else positive_int(text)


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    decoding, runner = GenerationSettings(), RunnerOptions()
    parser.add_argument(
        "--backbone", required=True, help="backbone directory (save_pretrained + reltune_backbone.json)"
    )
    parser.add_argument(
        "--num-beams", type=positive_int, default=decoding.num_beams, help="beams M (returned; the entropy averages them)"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=decoding.max_new_tokens)
    parser.add_argument(
        "--min-new-tokens", type=non_negative_int, default=decoding.min_new_tokens, help="at most --max-new-tokens"
    )
    parser.add_argument(
        "--length-penalty", type=finite_float, default=decoding.length_penalty,
        help="beam score = log-prob / length**penalty; 0 avoids the weak model's bias to long 'No, ...' answers",
    )
    parser.add_argument(
        "--repetition-penalty", type=positive_float, default=decoding.repetition_penalty,
        help="penalty on tokens already generated (1 = none; the authors' decoding option)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=decoding.batch_size, help="questions per generate call"
    )
    parser.add_argument(
        "--device", default=None, help="torch device of a single process (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--shard-size", type=positive_int, default=runner.shard_size,
        help="questions per shard: written atomically, skipped on rerun (a kill loses at most one per process)",
    )
    parser.add_argument(
        "--vision-cache", default=runner.vision_cache,
        help="directory of the on-disk vision-feature cache (fp16, keyed by crop and encoder weights); '' = off",
    )
    parser.add_argument(
        "--vision-cache-mb", type=positive_float, default=runner.vision_cache_mb, help="disk cap of the vision cache (MiB)"
    )
    # test hook: a hard crash after this many shards of this process
    parser.add_argument("--stop-after-shards", type=non_negative_int, default=0, help=argparse.SUPPRESS)


def _add_score_command(subparsers: argparse._SubParsersAction) -> None:
    pool = PoolOptions()
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
        "--strategy", default=pool.strategy,
        help="the round's selection strategy (sampling.strategy): balanced / random / full read no pool scores, "
        "so the pool is not scored (empty scores.parquet); validation recall is always computed",
    )
    score.add_argument(
        "--budget-fraction", type=unit_interval, default=pool.budget_fraction,
        help="per-round budget fraction b (sampling.budget_fraction): B = round(b * training positives)",
    )
    score.add_argument(
        "--pool-cap-factor", type=pool_cap_factor, default=pool.pool_cap_factor,
        help="score at most C * B'_p pool rows per predicate (seeded, stratified); 0 = the whole pool (paper)",
    )
    score.add_argument("--seed", type=non_negative_int, default=pool.seed, help="seed of the scored pool subset")
    score.add_argument(
        "--fit-max-new-tokens", type=boolean, default=pool.fit_max_new_tokens,
        help="true: decode at most (longest instruction target in tokens + 1 EOS) tokens, capped by --max-new-tokens; "
        "faster, but a weak model's truncated degenerate beams can then outrank finished ones (changes results)",
    )
    add_similarity_arguments(score)  # the FP criterion's similarity (params.yaml `similarity`)
    score.set_defaults(func=run_score)


def _add_predict_command(subparsers: argparse._SubParsersAction) -> None:
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
        "--categories-from", choices=("vocab", "all"), default="vocab",
        help="ask the categories the dataset's predicates use (vocab) or all three",
    )
    predict.add_argument(
        "--answers-per-question", type=answers_per_question, default=1,
        help="beams of each question that may become predictions: 1 = the top beam (DESIGN §7), all = every beam",
    )
    predict.set_defaults(func=run_predict)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_score_command(subparsers)
    _add_predict_command(subparsers)


# ------------------------------------------------------------------ shared steps


def _settings(args: argparse.Namespace) -> GenerationSettings:
    if args.min_new_tokens > args.max_new_tokens:
        raise InputError("--min-new-tokens", f"must be in [0, --max-new-tokens], got {args.min_new_tokens}")
    return GenerationSettings(
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty,
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


def inference_state(device: str | None) -> PartialState:
    """accelerate's process state: one process, or N under `accelerate launch` (gloo on CPU)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or (not device and not torch.cuda.is_available()))


@dataclass
class LoadedModel:
    """The backbone, its vision cache and what identifies its answers (the shards' key)."""

    backbone: Any
    vision_cache: Any
    identity: dict[str, Any]


def load_model(args: argparse.Namespace, settings: GenerationSettings, state: PartialState) -> LoadedModel:
    """The backbone on this process's device; the identity (model files' digest, settings) on the main process."""
    from reltune.inference.runner import model_fingerprint
    from reltune.inference.vision_cache import open_vision_cache
    from reltune.models.backbone import load_backbone

    device = args.device if args.device and state.num_processes == 1 else str(state.device)
    backbone = load_backbone(args.backbone, device=device)
    backbone.model.eval()
    vision_cache = open_vision_cache(backbone, args.vision_cache, args.vision_cache_mb)
    identity = {
        # only the main process keys the shards: the others skip reading the weights again
        "model": model_fingerprint(args.backbone) if state.is_main_process else None,
        "settings": asdict(settings),
        "device": backbone.device.type,
        "dtype": str(backbone.dtype),
        "vision_cache": vision_cache is not None,  # cached features are fp16-rounded
        "image_size": backbone.image_size,
    }
    return LoadedModel(backbone, vision_cache, identity)


def answer_with(model: LoadedModel, loader, settings: GenerationSettings):
    """The runner's Answerer for one crop loader: all M beams of a chunk of questions."""
    from reltune.inference.generation import answer_questions

    def answer(questions, on_batch):
        return answer_questions(
            model.backbone, questions, loader, settings, vision_cache=model.vision_cache, on_batch=on_batch
        )

    return answer


def gather_timing(runs: dict[str, InferenceRun], state: PartialState) -> list[dict[str, Any]]:
    """Every process's shards, questions, seconds and peak memory (on the main process)."""
    from accelerate.utils import gather_object

    own = {"process": state.process_index, "peak_rss_mib": round(_peak_rss_mib(), 1)}
    own.update({name: run.timing() for name, run in runs.items()})
    return sorted(gather_object([own]), key=lambda item: item["process"])


def record_timing(args: argparse.Namespace, state: PartialState, processes: list[dict[str, Any]]) -> None:
    """Per-process timing into the command's `--timing` file; only the main process writes it."""
    args.timing_extra = {"processes": processes}
    args.write_timing = state.is_main_process


# ------------------------------------------------------------------ score


@dataclass
class ScoreInputs:
    """What `score` reads before any model: the question sets (streamed later) and their scenes."""

    pool: Any  # qid, predicate, row (file position) of the pool questions
    pool_size: int
    training_positives: int
    val_questions: Any  # QuestionSource
    train_paths: dict[str, str]
    val_paths: dict[str, str]
    image_root: str
    targets: set[str]
    rows: int  # of the training instruction file


def read_score_inputs(args: argparse.Namespace) -> ScoreInputs:
    """Index columns of the instruction tables, checked; questions stay on disk until answered."""
    import pandas as pd
    import pyarrow.parquet as pq

    from reltune.data.scenes import read_scenes
    from reltune.inference.questions import ParquetQuestions, distinct_values, read_parquet_columns
    from reltune.inference.scoring import (
        QUESTION_COLUMNS,
        check_index_images,
        checked_positives,
        pool_of,
        read_question_index,
        row_mask,
    )

    read_parquet_columns(args.selection, ["qid"])  # exists, readable, has the column
    selected = pq.read_table(args.selection, columns=["qid"])["qid"].cast("string")
    index = read_question_index(args.instructions)
    rows = index.num_rows
    positives = checked_positives(index, args.instructions)
    del index  # only the positives' index is kept
    val_index = read_question_index(args.val_instructions)
    val_positives = checked_positives(val_index, args.val_instructions)
    train_scenes, vocab = read_scenes(args.scenes, "train")
    val_scenes, _ = read_scenes(args.scenes, "val")
    pool = pool_of(positives, selected, args.instructions, args.selection)
    train_paths, val_paths = _image_paths(train_scenes), _image_paths(val_scenes)
    check_index_images(pool, set(train_paths), args.instructions)
    check_index_images(val_positives, set(val_paths), args.val_instructions)
    targets: set[str] = set()
    if args.fit_max_new_tokens:
        targets = distinct_values(args.instructions, "target") | distinct_values(args.val_instructions, "target")
    val_rows = row_mask(val_positives["row"].to_numpy(), val_index.num_rows)
    return ScoreInputs(
        pool=pool.select(["qid", "predicate", "row"]).to_pandas(types_mapper=pd.ArrowDtype),
        pool_size=pool.num_rows,
        training_positives=positives.num_rows,
        val_questions=ParquetQuestions(args.val_instructions, QUESTION_COLUMNS, val_rows),
        train_paths=train_paths,
        val_paths=val_paths,
        image_root=vocab["image_root"],
        targets=targets,
        rows=rows,
    )


def fitted_settings(settings: GenerationSettings, targets: set[str], tokenizer, cap: int) -> GenerationSettings:
    """Decoding length fitted to the longest instruction target (+ EOS), at most `cap`."""
    from reltune.inference.scoring import answer_token_limit

    # every answer the model was tuned to give fits; longer beams could only be malformed
    fitted = answer_token_limit(sorted(targets), tokenizer, cap)
    return dataclasses.replace(settings, max_new_tokens=fitted, min_new_tokens=min(settings.min_new_tokens, fitted))


def validation_step(args, inputs: ScoreInputs, model: LoadedModel, settings, state) -> tuple[InferenceRun, dict, Any]:
    """Answer the validation positives; recall (on every process: the pool subset depends on it)."""
    from accelerate.utils import broadcast_object_list

    from reltune.inference.crops import CropLoader
    from reltune.inference.runner import InferenceJob, answered_chunks, run_inference
    from reltune.inference.scoring import classify_chunks, recall_summary

    loader = CropLoader(inputs.val_paths, inputs.image_root, model.backbone.image_size)
    job = InferenceJob(
        "validation", inputs.val_questions, Path(args.out) / SHARD_DIRECTORY,
        {**model.identity, "scenes": "val"}, args.shard_size, args.stop_after_shards,
    )  # fmt: skip
    run = run_inference(job, answer_with(model, loader, settings), state)
    classified = None
    shared: list[Any] = [None]
    if state.is_main_process:
        classified = classify_chunks(answered_chunks(run, inputs.val_questions))
        shared = [recall_summary(classified)]
    (recall,) = broadcast_object_list(shared)
    return run, recall, classified


def pool_step(args, inputs: ScoreInputs, model: LoadedModel, settings, state, recall: dict):
    """Choose the pool questions to score (all, or the capped subset) and answer them."""
    from reltune.inference.crops import CropLoader
    from reltune.inference.questions import ParquetQuestions
    from reltune.inference.runner import InferenceJob, run_inference
    from reltune.inference.scoring import QUESTION_COLUMNS, pool_scoring_candidates, row_mask
    from reltune.sampling import round_budget

    budget = round_budget(args.budget_fraction, inputs.training_positives)
    candidates, per_predicate = pool_scoring_candidates(
        inputs.pool, recall["per_predicate"], budget, args.pool_cap_factor, args.seed
    )
    questions = ParquetQuestions(args.instructions, QUESTION_COLUMNS, row_mask(candidates["row"], inputs.rows))
    if state.is_main_process:
        log(f"score: {len(questions)} of {inputs.pool_size} pool questions to score; {settings}")
    loader = CropLoader(inputs.train_paths, inputs.image_root, model.backbone.image_size)
    job = InferenceJob(
        "pool", questions, Path(args.out) / SHARD_DIRECTORY,
        {**model.identity, "scenes": "train"}, args.shard_size, args.stop_after_shards,
    )  # fmt: skip
    run = run_inference(job, answer_with(model, loader, settings), state)
    return run, questions, {"round_budget": int(budget), "per_predicate": per_predicate}


def write_scores(path: Path, run, questions, similarity) -> dict[str, int]:
    """scores.parquet, streamed shard by shard (atomic); the outcome counts."""
    from reltune.inference.runner import answered_chunks, write_parquet_stream
    from reltune.inference.scoring import empty_scores, outcome_counts, score_chunks

    totals = {"TP": 0, "FP": 0, "FN": 0, "malformed": 0}

    def counted(chunks):
        for chunk in chunks:
            totals.update({name: totals[name] + count for name, count in outcome_counts(chunk).items()})
            yield chunk

    if run is None:  # strategies that read no pool scores
        write_parquet_stream(path, iter(()), empty_scores())
    else:
        chunks = score_chunks(answered_chunks(run, questions), similarity)
        write_parquet_stream(path, counted(chunks), empty_scores())
    return totals


def score_report(args, inputs: ScoreInputs, settings, model, pool: dict, validation: dict, timing: dict) -> dict:
    return {
        "strategy": args.strategy,
        "pool": {
            "size": int(inputs.pool_size), "cap_factor": float(args.pool_cap_factor), "seed": int(args.seed), **pool,
        },  # fmt: skip
        "validation": validation,
        "generation": {
            **asdict(settings),
            "max_new_tokens_cap": int(args.max_new_tokens),
            "fit_max_new_tokens": bool(args.fit_max_new_tokens),
            "device": str(model.backbone.device),
        },
        "vision_cache": _cache_report(model.vision_cache),
        "similarity": {"model": args.similarity_model, "sentence": args.similarity_sentence},
        "timing": timing,
    }


def run_score(args: argparse.Namespace) -> int:
    from reltune.embedding import similarity_from_arguments
    from reltune.inference.predict import malformed_line, malformed_summary
    from reltune.inference.runner import remove_shards
    from reltune.inference.scoring import outcome_counts

    settings = _settings(args)
    scores_pool = _strategy_needs_scores(args.strategy)
    inputs = read_score_inputs(args)
    state = inference_state(args.device)
    model = load_model(args, settings, state)
    if args.fit_max_new_tokens:
        settings = fitted_settings(settings, inputs.targets, model.backbone.processor.tokenizer, args.max_new_tokens)
        model.identity["settings"] = asdict(settings)
    started = time.perf_counter()
    # validation recall first: the scored pool subset is drawn from this round's recall-weighted budgets
    val_run, recall, val_classified = validation_step(args, inputs, model, settings, state)
    runs = {"validation": val_run}
    pool_run, pool_questions, pool = None, None, {"round_budget": 0, "per_predicate": {}}
    if scores_pool:
        pool_run, pool_questions, pool = pool_step(args, inputs, model, settings, state, recall)
        runs["pool"] = pool_run
    processes = gather_timing(runs, state)
    record_timing(args, state, processes)
    if not state.is_main_process:
        return 0
    out = Path(args.out)
    similarity = similarity_from_arguments(args)
    counts = write_scores(out / "scores.parquet", pool_run, pool_questions, similarity)
    write_json(recall, out / "val_recall.json")
    seconds = time.perf_counter() - started
    questions = (len(pool_questions) if pool_questions is not None else 0) + recall["questions"]
    pool.update(questions=len(pool_questions) if pool_questions is not None else 0, scored=bool(scores_pool), **counts)
    # where the round model's malformed validation answers leave the answer form (as predict's report has it)
    val_malformed = val_classified[val_classified["answer_kind"] == "malformed"]
    validation = {
        "questions": recall["questions"], **outcome_counts(val_classified),
        "recall": recall["recall"], "mean_recall": recall["mean_recall"],
        "malformed_answers": malformed_summary(val_malformed),
    }  # fmt: skip
    timing = {
        "validation_seconds": round(val_run.seconds, 3),
        "pool_seconds": round(pool_run.seconds, 3) if pool_run is not None else 0.0,
        "total_seconds": round(seconds, 3),
        "questions_per_second": round(questions / seconds, 3) if seconds > 0 else None,
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "processes": processes,
    }
    report = score_report(args, inputs, settings, model, pool, validation, timing)
    write_json(report, out / "score_report.json")
    remove_shards(out / SHARD_DIRECTORY)
    log(
        f"score: pool scored {pool['questions']} of {inputs.pool_size}: TP {counts['TP']} FP {counts['FP']} "
        f"FN {counts['FN']} (malformed {counts['malformed']}); validation recall {recall['recall']:.3f}, "
        f"mean {recall['mean_recall']:.3f}; {timing['questions_per_second']} questions/s; "
        f"shards skipped (finished before): {sum(run.skipped for run in runs.values())}"
    )
    if len(val_malformed):
        log(f"score: validation: {malformed_line(len(val_malformed), validation['malformed_answers'])}")
    return 0


# ------------------------------------------------------------------ predict


def predict_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The predictions parquet, its report and the shard root (a hidden sibling of the parquet)."""
    out = Path(args.out)
    stem = out.name.removesuffix(".parquet")
    report = Path(args.report) if args.report else out.with_name(stem + ".report.json")
    return out, report, out.with_name(f".{stem}{SHARD_DIRECTORY}")


def run_predict(args: argparse.Namespace) -> int:
    from reltune.data.scenes import read_scenes
    from reltune.inference.crops import CropLoader
    from reltune.inference.predict import (
        candidate_pairs, categories_to_ask, malformed_line, malformed_summary, pair_questions, predictions_from_chunks,
    )  # fmt: skip
    from reltune.inference.questions import FrameQuestions
    from reltune.inference.runner import InferenceJob, answered_chunks, remove_shards, run_inference

    settings = _settings(args)
    out, report_path, shard_root = predict_paths(args)
    scenes, vocab = read_scenes(args.scenes, args.split)
    pairs = candidate_pairs(scenes, args.pairs)
    questions = FrameQuestions(pair_questions(pairs, categories_to_ask(vocab, args.categories_from)))
    state = inference_state(args.device)
    model = load_model(args, settings, state)
    loader = CropLoader(_image_paths(scenes), vocab["image_root"], model.backbone.image_size, blind=args.blind)
    identity = {**model.identity, "blind": bool(args.blind), "split": args.split}
    job = InferenceJob("predict", questions, shard_root, identity, args.shard_size, args.stop_after_shards)
    run = run_inference(job, answer_with(model, loader, settings), state)
    record_timing(args, state, gather_timing({"predict": run}, state))
    if not state.is_main_process:
        return 0
    predictions, beam_kinds, malformed = predictions_from_chunks(answered_chunks(run, questions), args.answers_per_question)
    report = {
        "images": int(len(scenes)), "pairs": int(len(pairs)), "questions": int(len(questions)),
        "answers_per_question": args.answers_per_question or "all", "beams": beam_kinds,
        "malformed": malformed_summary(malformed),
        "predictions": int(len(predictions)), "split": args.split, "pairs_mode": args.pairs,
        "blind": bool(args.blind), "categories_from": args.categories_from,
        "score": "exp(sequence score): with length_penalty 0 the answer's probability under beam search",
        "generation": asdict(settings), "shards": {"count": run.shard_count, "skipped": run.skipped},
        "seconds": round(run.seconds, 3),
        "questions_per_second": round(len(questions) / run.seconds, 3) if run.seconds > 0 else None,
        "peak_rss_mib": round(_peak_rss_mib(), 1), "vision_cache": _cache_report(model.vision_cache),
        "processes": args.timing_extra["processes"],
    }  # fmt: skip
    write_parquet(predictions, out)
    write_json(report, report_path)
    remove_shards(shard_root)
    log(
        f"predict: {report['predictions']} triplets from {report['questions']} questions on {report['pairs']} pairs; "
        f"shards skipped (finished before): {run.skipped} of {run.shard_count}"
    )
    if beam_kinds["malformed"]:
        log(f"predict: {malformed_line(beam_kinds['malformed'], report['malformed'])}")
    return 0
