"""Shared vision forward vs one vision forward per question (DESIGN §4 scoring / predictions).

Builds the default tiny backbone (random weights: speed does not depend on
them), asks `--questions-per-crop` category questions about each random crop
(3 in `reltune predict`), and times `generate_answers` with and without the
shared vision forward, interleaved, reporting the median ratio. Also checks
that both paths give the same answers and entropies.

    .venv/bin/python benchmarks/score_vision_sharing.py [--crops 64 --repeats 3 --max-new-tokens 16]
        [--backbone DIR | --tiny-size vision_layers=6 --tiny-size image_size=128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from reltune.models.backbone import build_tiny, load_backbone
from reltune.inference.generation import GenerationSettings, generate_answers

LABELS = ["man", "horse", "red car", "tree", "dog", "table", "cup", "shirt"]
CATEGORIES = ["spatial", "possessive", "semantic"]


def corpus() -> list[str]:
    texts = []
    for subject in LABELS:
        for obj in LABELS:
            for category in CATEGORIES:
                texts.append(f"Is there a prominent {category} relation between {subject} (subject) and {obj} (object) in the image?")
                texts.append(f"No, there is no prominent {category} relation between {subject} and {obj}.")
            texts.append(f"Yes, {subject} on {obj}.")
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=64)
    parser.add_argument("--questions-per-crop", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16, help="a tuned model's answers are 6-16 tokens")
    parser.add_argument("--backbone", default=None, help="backbone directory (default: build the default tiny one)")
    parser.add_argument(
        "--tiny-size", action="append", default=[], metavar="NAME=INT",
        help="override a TinySizes field of the built tiny backbone, e.g. vision_layers=6 image_size=128",
    )
    args = parser.parse_args()

    if args.backbone:
        backbone = load_backbone(args.backbone)
    else:
        sizes = {name: int(value) for name, value in (item.split("=", 1) for item in args.tiny_size)}
        backbone = build_tiny(corpus(), Path(tempfile.mkdtemp()) / "tiny", seed=0, **sizes)
    backbone.model.eval()
    generator = np.random.default_rng(0)
    crops = [
        Image.fromarray(generator.integers(0, 255, (backbone.image_size, backbone.image_size, 3), dtype=np.uint8))
        for _ in range(args.crops)
    ]
    rows = []
    for crop in range(args.crops):
        subject, obj = LABELS[crop % len(LABELS)], LABELS[(crop * 3 + 1) % len(LABELS)]
        for category in CATEGORIES[: args.questions_per_crop]:
            prompt = f"Is there a prominent {category} relation between {subject} (subject) and {obj} (object) in the image?"
            rows.append({"crop": crop, "prompt": prompt})
    questions = pd.DataFrame(rows)
    settings = GenerationSettings(num_beams=3, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    def run(share: bool) -> tuple[float, pd.DataFrame]:
        started = time.perf_counter()
        table = generate_answers(backbone, questions, lambda key: crops[key], settings, share_vision=share)
        return time.perf_counter() - started, table

    run(True)  # warm-up
    shared_times, unshared_times = [], []
    for _ in range(args.repeats):
        seconds, shared = run(True)
        shared_times.append(seconds)
        seconds, unshared = run(False)
        unshared_times.append(seconds)
    assert list(shared["answer"]) == list(unshared["answer"]), "shared and unshared answers differ"
    np.testing.assert_allclose(shared["entropy"], unshared["entropy"], rtol=1e-4, atol=1e-6)
    shared_median, unshared_median = statistics.median(shared_times), statistics.median(unshared_times)
    parameters = sum(parameter.numel() for parameter in backbone.model.parameters())
    vision = sum(parameter.numel() for parameter in backbone.model.vision_model.parameters())
    print(f"backbone: {backbone.preset}, {parameters / 1e6:.2f}M parameters ({vision / 1e6:.2f}M vision), {backbone.device}")
    print(f"questions: {len(questions)} on {args.crops} crops ({args.questions_per_crop} per crop), 3 beams, batch {args.batch_size}, {args.max_new_tokens} new tokens")
    print(f"unshared vision forward: median {unshared_median:.3f} s ({len(questions) / unshared_median:.1f} questions/s)")
    print(f"shared vision forward:   median {shared_median:.3f} s ({len(questions) / shared_median:.1f} questions/s)")
    print(f"speed-up (unshared / shared): {unshared_median / shared_median:.3f}")


if __name__ == "__main__":
    main()
