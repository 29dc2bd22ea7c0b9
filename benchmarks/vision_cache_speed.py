"""Vision cache warm vs off: the vision part alone and end to end (pool answers, prediction), min of repeats.

The 2-core machine is shared, so every measurement alternates off / warm and
keeps the minimum of --repeats runs. Default world, a tuned tiny backbone:

    .venv/bin/python benchmarks/vision_cache_speed.py --backbone models/round_1 [--questions 160]
    # on a GPU machine (after `dvc repro train@1`): keep the result with the date and the GPU in it
    .venv/bin/python benchmarks/vision_cache_speed.py --backbone models/round_1 --out benchmarks/results/vision_cache_speed_$(date +%F).json
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from reltune.data.scenes import read_scenes
from reltune.models.backbone import load_backbone
from reltune.inference.crops import CropLoader
from reltune.inference.generation import GenerationSettings, answer_questions
from reltune.inference.predict import predict_relations
from reltune.inference.scoring import pool_questions
from reltune.inference.vision_cache import encode_crops, open_vision_cache


def best_of(repeats: int, functions: dict) -> dict[str, float]:
    """Minimum wall time of each function over `repeats` alternating rounds."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--data", default="data")
    parser.add_argument("--selection", default="data/loop/round_0/selection.parquet")
    parser.add_argument("--questions", type=int, default=160)
    parser.add_argument("--predict-images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/out/vision_cache_speed.json")
    args = parser.parse_args()

    data = Path(args.data)
    instructions = pd.read_parquet(data / "instructions/synthetic/train.parquet")
    train, vocab = read_scenes(data / "scenes/synthetic", "train")
    test, _ = read_scenes(data / "scenes/synthetic", "test")
    backbone = load_backbone(args.backbone)
    backbone.model.eval()
    loader = CropLoader(dict(zip(train["image_id"].astype(str), train["image_path"])), vocab["image_root"], backbone.image_size)
    test_loader = CropLoader(dict(zip(test["image_id"].astype(str), test["image_path"])), vocab["image_root"], backbone.image_size)
    pool = pool_questions(instructions, pd.read_parquet(args.selection), "train", "selection")
    questions = pool.sample(n=args.questions, random_state=0).reset_index(drop=True)
    keys = [(str(image), tuple(float(v) for v in box)) for image, box in zip(questions["image_id"], questions["union_box"])]
    cache = open_vision_cache(backbone, tempfile.mkdtemp(prefix="vision_cache_speed."), 1024)
    settings = GenerationSettings()
    answer_questions(backbone, questions, loader, settings, vision_cache=cache)  # fills the cache (cold)
    test_slice = test.iloc[: args.predict_images].reset_index(drop=True)
    predict_relations(backbone, test_slice, vocab, test_loader, settings, vision_cache=cache)

    batches = [keys[start : start + settings.batch_size] for start in range(0, len(keys), settings.batch_size)]
    vision = best_of(
        args.repeats,
        {
            "off": lambda: [encode_crops(backbone, [loader(key) for key in batch]) for batch in batches],
            "warm": lambda: [cache.features(batch, loader, loader.identity) for batch in batches],
        },
    )
    answers = best_of(
        args.repeats,
        {
            "off": lambda: answer_questions(backbone, questions, loader, settings),
            "warm": lambda: answer_questions(backbone, questions, loader, settings, vision_cache=cache),
        },
    )
    predict = best_of(
        args.repeats,
        {
            "off": lambda: predict_relations(backbone, test_slice, vocab, test_loader, settings),
            "warm": lambda: predict_relations(backbone, test_slice, vocab, test_loader, settings, vision_cache=cache),
        },
    )
    results = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(backbone.device) if backbone.device.type == "cuda" else "cpu",
        "questions": len(questions),
        "distinct_crops": len(set(keys)),
        "vision_seconds": vision,
        "vision_speedup_warm_vs_off": round(vision["off"] / vision["warm"], 2),
        "pool_answer_seconds": answers,
        "pool_speedup_warm_vs_off": round(answers["off"] / answers["warm"], 3),
        "vision_share_of_pool_answering": round((vision["off"] - vision["warm"]) / answers["off"], 3),
        "predict_images": len(test_slice),
        "predict_seconds": predict,
        "predict_speedup_warm_vs_off": round(predict["off"] / predict["warm"], 3),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
