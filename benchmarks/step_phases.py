"""Where one training step's time goes: crops, batch, forward, backward, optimizer (issue 16, cost).

A `full` run of the candidate miniature is ~5360 optimizer steps of batch 128; halving the epochs
or the batch costs parts 3 and 4 (docs/RESULTS.md "Half the training"), so a cheaper run needs cheaper
steps. This times the phases of the training loop's step on a workspace's held-in training
questions and backbone: the augmented crops and texts (`example_views`), the processor batch
(`collate_batch`), the forward pass, the backward pass and the clipped AdamW step; in float32,
and with `--bf16` also under CPU bfloat16 autocast. Prints milliseconds per step and phase.

    .venv/bin/python benchmarks/step_phases.py [--workspace .] [--backbone models/tiny-pretrained]
        [--steps 10] [--batch-size 128] [--threads 1] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from reltune.data.scenes import read_scenes  # noqa: E402
from reltune.errors import InputError  # noqa: E402
from reltune.io import read_parquet  # noqa: E402
from reltune.models.backbone import Backbone  # noqa: E402
from reltune.models.training import (  # noqa: E402
    ImageCache,
    TrainSettings,
    _load_trainable_backbone,
    _optimizer,
    collate_batch,
    example_views,
    relation_training_examples,
)

PHASES = ("views", "collate", "forward", "backward", "optimizer")


def phase_times(
    backbone: Backbone, examples: pd.DataFrame, image_root: Path, batch_size: int, steps: int, bf16: bool, seed: int = 0
) -> dict[str, float]:
    """Mean milliseconds per phase over `steps` training steps, after one untimed step (caches, allocator)."""
    settings = TrainSettings(batch_size=batch_size, device="cpu", name_substitution=0.0, train_all=True)
    images = ImageCache(image_root, settings.image_cache_mb)
    model = backbone.model
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = _optimizer(model, settings)  # the training loop's AdamW (no decay on biases and norms)
    totals = dict.fromkeys(PHASES, 0.0)
    rng = random.Random(seed)
    for step in range(steps + 1):
        rows = rng.sample(range(len(examples)), min(batch_size, len(examples)))
        marks = [time.perf_counter()]
        crops, prompts, targets = example_views(examples, rows, 0, backbone, images, settings)
        marks.append(time.perf_counter())
        batch = collate_batch(backbone, crops, prompts, targets)
        marks.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(trainable, settings.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if not torch.isfinite(loss):
            raise RuntimeError(f"step {step}: loss {loss.item()}")
        if step > 0:  # the first step fills the image cache and the allocator
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                totals[phase] += (end - start) * 1000
    return {phase: total / steps for phase, total in totals.items()}


def workspace_inputs(workspace: Path) -> tuple[pd.DataFrame, Path]:
    """The held-in training examples of a workspace made by `dvc repro`, and their image root."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    held_in = params["held_in"]
    scenes_dir = workspace / "data" / "scenes" / held_in
    instructions_file = workspace / "data" / "instructions" / held_in / "train.parquet"
    for path in (scenes_dir, instructions_file):
        if not path.exists():
            raise InputError(path, f"missing (run `dvc repro` in {workspace} first)")
    scenes, vocab = read_scenes(scenes_dir, "train")
    instructions = read_parquet(instructions_file, ["prompt", "target"])
    return relation_training_examples(instructions, scenes, None), workspace / vocab["image_root"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--backbone", default="models/tiny-pretrained", help="relative to the workspace")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a make compare job has 1)")
    parser.add_argument("--bf16", action="store_true", help="also time under CPU bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples, image_root = workspace_inputs(args.workspace)
    for bf16 in (False, True) if args.bf16 else (False,):
        # the tiny default trains every weight (model.train_all), as the training stage loads it
        backbone, _ = _load_trainable_backbone(args.workspace / args.backbone, TrainSettings(train_all=True), "cpu")
        times = phase_times(backbone, examples, image_root, args.batch_size, args.steps, bf16)
        total = sum(times.values())
        label = "bf16 autocast" if bf16 else "float32"
        shares = ", ".join(f"{phase} {ms:.1f} ({ms / total:.0%})" for phase, ms in times.items())
        print(f"{label}: {total:.1f} ms per step of {args.batch_size} ({args.threads} thread(s)): {shares}")


if __name__ == "__main__":
    main()
