"""Cost of a round's scoring and of prediction: fitted decoding length, vision cache, capped pool subset.

On the default world (data/scenes/synthetic, data/instructions/synthetic) and a
relation-tuned tiny backbone, measures in process:
  1. pool scoring of a seeded sample of pool questions with
     (a) max_new_tokens = the cap, no cache (the paper's / previous behaviour),
     (b) the fitted max_new_tokens, no cache,
     (c) fitted + vision cache cold, (d) fitted + cache warm;
     answers / outcomes / entropies of b vs a, c vs b (fp16 effect), d vs c;
  2. the capped subset: validation recall of the model, then how many pool rows
     `pool_scoring_candidates` keeps with C = --cap-factor vs the whole pool;
  3. prediction on --predict-images test images: no cache vs cache cold vs warm;
  4. cache bytes per crop, distinct crops of the default world, and the VG150 /
     EVA ViT-g estimate.

    .venv/bin/python benchmarks/score_cost.py --backbone models/round_1 [--pool-sample 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from reltune.data.scenes import read_scenes
from reltune.embedding import shared_embedder
from reltune.models.backbone import load_backbone
from reltune.inference.crops import CropLoader
from reltune.inference.generation import GenerationSettings
from reltune.inference.predict import predict_relations
from reltune.inference.scoring import (
    answer_token_limit,
    model_answer_source,
    pool_questions,
    pool_scoring_candidates,
    positive_questions,
    score_questions,
    validation_recall,
)
from reltune.inference.vision_cache import open_vision_cache
from reltune.sampling import round_budget


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    return {
        "identical_answers": float((reference["answer"].to_numpy() == other["answer"].to_numpy()).mean()),
        "identical_outcomes": float((reference["outcome"].to_numpy() == other["outcome"].to_numpy()).mean()),
        "max_entropy_difference": float(np.abs(reference["entropy"].to_numpy() - other["entropy"].to_numpy()).max()),
        "mean_entropy_difference": float(np.abs(reference["entropy"].to_numpy() - other["entropy"].to_numpy()).mean()),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--data", default="data", help="directory holding scenes/synthetic and instructions/synthetic")
    parser.add_argument("--selection", default="data/loop/round_0/selection.parquet")
    parser.add_argument("--pool-sample", type=int, default=400)
    parser.add_argument("--predict-images", type=int, default=60)
    parser.add_argument("--cap-factor", type=float, default=10)
    parser.add_argument("--budget-fraction", type=float, default=0.02)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/out/score_cost.json")
    return parser.parse_args()


def load_world(args: argparse.Namespace) -> SimpleNamespace:
    """Tables, scenes, the backbone, crop loaders per split and the two decoding settings."""
    data = Path(args.data)
    world = SimpleNamespace(
        instructions=pd.read_parquet(data / "instructions/synthetic/train.parquet"),
        val_instructions=pd.read_parquet(data / "instructions/synthetic/val.parquet"),
        selection=pd.read_parquet(args.selection),
        backbone=load_backbone(args.backbone),
        similarity=shared_embedder().relation_similarity,
    )
    world.backbone.model.eval()
    world.scenes = {split: read_scenes(data / "scenes/synthetic", split)[0] for split in ("train", "val", "test")}
    world.vocab = read_scenes(data / "scenes/synthetic", "train")[1]
    paths = {
        name: dict(zip(table["image_id"].astype(str), table["image_path"].astype(str)))
        for name, table in world.scenes.items()
    }
    world.loader = lambda split: CropLoader(paths[split], world.vocab["image_root"], world.backbone.image_size)
    world.pool = pool_questions(world.instructions, world.selection, "train", "selection")
    world.sample = world.pool.sample(n=min(args.pool_sample, len(world.pool)), random_state=0).reset_index(drop=True)
    targets = list(world.instructions["target"].dropna()) + list(world.val_instructions["target"].dropna())
    world.fitted = answer_token_limit(targets, world.backbone.processor.tokenizer, args.max_new_tokens)
    world.capped = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    world.fitted_settings = dataclasses.replace(world.capped, max_new_tokens=world.fitted)
    return world


def measure_pool_variants(world: SimpleNamespace, cache_dir: Path, results: dict) -> None:
    """1. pool scoring variants on the same sample: cap / fitted, no cache / cold / warm."""
    runs = {}
    for name, settings, use_cache in (
        ("cap_no_cache", world.capped, False),
        ("fitted_no_cache", world.fitted_settings, False),
        ("fitted_cache_cold", world.fitted_settings, True),
        ("fitted_cache_warm", world.fitted_settings, True),
    ):
        cache = open_vision_cache(world.backbone, str(cache_dir), 4096) if use_cache else None
        source = model_answer_source(world.backbone, world.loader("train"), settings, name, cache)
        scores, seconds = timed(score_questions, world.sample, source, world.similarity)
        runs[name] = scores
        results[f"pool_seconds_{name}"] = round(seconds, 2)
        if cache is not None:
            results[f"cache_{name}"] = cache.store.stats()
    results["fitted_vs_cap"] = compare(runs["cap_no_cache"], runs["fitted_no_cache"])
    results["cache_vs_no_cache"] = compare(runs["fitted_no_cache"], runs["fitted_cache_cold"])
    results["warm_vs_cold"] = compare(runs["fitted_cache_cold"], runs["fitted_cache_warm"])
    base = results["pool_seconds_cap_no_cache"]
    results["speedup_pool_fitted"] = round(base / results["pool_seconds_fitted_no_cache"], 2)
    results["speedup_pool_cache_warm_vs_off"] = round(
        results["pool_seconds_fitted_no_cache"] / results["pool_seconds_fitted_cache_warm"], 2
    )
    results["speedup_pool_fitted_and_warm"] = round(base / results["pool_seconds_fitted_cache_warm"], 2)


def measure_capped_subset(args, world: SimpleNamespace, cache_dir: Path, results: dict) -> pd.DataFrame:
    """2. capped subset: validation recall first, then the candidates."""
    val_positives = positive_questions(world.val_instructions, "val")
    cache = open_vision_cache(world.backbone, str(cache_dir), 4096)
    source = model_answer_source(world.backbone, world.loader("val"), world.fitted_settings, "val", cache)
    (recall, _), seconds = timed(validation_recall, val_positives, source)
    results["validation_questions"] = len(val_positives)
    results["validation_seconds_cache_cold"] = round(seconds, 2)
    results["validation_mean_recall"] = recall["mean_recall"]
    budget = round_budget(args.budget_fraction, len(positive_questions(world.instructions, "train")))
    subset, per_predicate = pool_scoring_candidates(world.pool, recall["per_predicate"], budget, args.cap_factor, seed=0)
    results["round_budget"] = budget
    results["cap_factor"] = args.cap_factor
    results["pool_scored_with_cap"] = len(subset)
    results["pool_scored_fraction"] = round(len(subset) / len(world.pool), 4)
    results["per_predicate_budget_and_scored"] = {k: [v["budget"], v["scored"], v["pool"]] for k, v in per_predicate.items()}
    return subset


def measure_prediction(args, world: SimpleNamespace, results: dict) -> None:
    """3. prediction on a slice of the test split: no cache, cache cold, cache warm."""
    test = world.scenes["test"].iloc[: args.predict_images].reset_index(drop=True)
    predict_dir = Path(tempfile.mkdtemp(prefix="vision_cache_predict."))
    predictions = {}
    for name, use_cache in (("no_cache", False), ("cache_cold", True), ("cache_warm", True)):
        cache = open_vision_cache(world.backbone, str(predict_dir), 4096) if use_cache else None
        (table, report), seconds = timed(
            predict_relations, world.backbone, test, world.vocab, world.loader("test"), world.fitted_settings,
            vision_cache=cache,
        )  # fmt: skip
        predictions[name] = table
        results[f"predict_seconds_{name}"] = round(seconds, 2)
        results["predict_questions"] = report["questions"]
    results["speedup_predict_cache_warm_vs_off"] = round(
        results["predict_seconds_no_cache"] / results["predict_seconds_cache_warm"], 2
    )
    merged = predictions["no_cache"].merge(
        predictions["cache_warm"], on=["image_id", "subj", "obj", "predicate"], how="outer", suffixes=("_off", "_on")
    )
    results["predict_triplets_off_on_both"] = [
        len(predictions["no_cache"]), len(predictions["cache_warm"]), int(merged.dropna().shape[0])
    ]
    common = merged.dropna()
    results["predict_max_score_difference_common"] = (
        float(np.abs(common["score_off"] - common["score_on"]).max()) if len(common) else None
    )


def measure_disk(world: SimpleNamespace, cache_dir: Path, results: dict) -> None:
    """4. cache bytes per crop, distinct crops of the default world, and the VG150 / EVA ViT-g estimate."""
    entries = list(cache_dir.rglob("*.npy"))
    per_crop = int(np.mean([entry.stat().st_size for entry in entries]))
    crops = set()
    for table in world.scenes.values():
        for image_id, boxes, relations in zip(table["image_id"], table["boxes"], table["relations"]):
            for relation in relations:
                subj, obj = np.asarray(boxes[relation["subj"]]), np.asarray(boxes[relation["obj"]])
                union = tuple(np.concatenate([np.minimum(subj[:2], obj[:2]), np.maximum(subj[2:], obj[2:])]).tolist())
                crops.add((str(image_id), union))
    results["cache_bytes_per_crop"] = per_crop
    results["default_world_distinct_annotated_crops"] = len(crops)
    results["default_world_cache_mib"] = round(per_crop * len(crops) / 2**20, 2)
    vg_bytes = 257 * 1408 * 2 + 128  # tokens x dims x fp16 + npy header
    results["vg150_eva_vitg_bytes_per_crop"] = vg_bytes
    results["vg150_cache_gib_for_600k_crops"] = round(vg_bytes * 600_000 / 2**30, 1)


def main() -> None:
    args = parse_arguments()
    world = load_world(args)
    results: dict = {"pool_size": len(world.pool), "pool_sample": len(world.sample),
                     "fitted_max_new_tokens": world.fitted, "max_new_tokens_cap": args.max_new_tokens}  # fmt: skip
    # warm-up outside the timings: the sentence embedder loads lazily, torch allocates on first use
    world.similarity(["man"], ["on"], ["near"], ["horse"])
    warm_up = model_answer_source(world.backbone, world.loader("train"), world.capped, "warm-up")
    score_questions(world.pool.iloc[:2], warm_up, world.similarity)
    cache_dir = Path(tempfile.mkdtemp(prefix="vision_cache."))
    measure_pool_variants(world, cache_dir, results)
    subset = measure_capped_subset(args, world, cache_dir, results)
    measure_prediction(args, world, results)
    # a round's score stage: balanced answers the validation positives only, art also the capped subset
    seconds_per_question = results["pool_seconds_fitted_cache_warm"] / len(world.sample)
    validation = results["validation_seconds_cache_cold"]
    results["score_stage_seconds_estimate"] = {
        "balanced": round(validation, 1),
        "art_capped": round(validation + seconds_per_question * len(subset), 1),
        "art_whole_pool_paper": round(
            validation + results["pool_seconds_cap_no_cache"] / len(world.sample) * len(world.pool), 1
        ),
    }
    measure_disk(world, cache_dir, results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
