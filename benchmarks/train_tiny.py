"""Tiny-backbone training speed on this machine: optimizer steps/s, examples/s, peak RSS.

Renders coloured-shape scenes (or uses a given scene directory + instruction
table), builds the default tiny InstructBLIP-T5 (DESIGN §9 sizes) and runs the
real training loop (`reltune.models.training.train_backbone`) for a fixed
number of steps, once with the DESIGN §8 freezing (Q-Former, queries,
projection) and once training every weight. Prints steps/s, examples/s, the
ratio between the two, and the process's peak RSS.

    .venv/bin/python benchmarks/train_tiny.py [--steps 20] [--batch-size 128]
        [--cpu-threads 1] [--scenes data/scenes/synthetic --instructions data/instructions/synthetic/train.parquet]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

from reltune.data.scenes import read_scenes  # noqa: E402
from reltune.instructions.build import build_instructions  # noqa: E402
from reltune.io import read_parquet  # noqa: E402
from reltune.models.backbone import build_tiny  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the toy scenes are a test helper
from toy_scenes import TOY_PREDICATES, make_toy_scenes  # noqa: E402
from reltune.models.training import TrainSettings, relation_training_examples, train_backbone  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads (training default 1; 0 = torch default)")
    parser.add_argument("--scenes", type=Path, default=None, help="scene directory (default: render toy scenes)")
    parser.add_argument("--instructions", type=Path, default=None, help="train instruction table for --scenes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if args.scenes is None:
            scenes_dir = make_toy_scenes(work / "scenes", images=200, seed=0, image_size=160)
            scenes, vocab = read_scenes(scenes_dir, "train")
            instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy").table
        else:
            scenes, vocab = read_scenes(args.scenes, "train")
            instructions = read_parquet(args.instructions, ["prompt", "target"])
        examples = relation_training_examples(instructions, scenes, None)
        build_tiny(list(instructions["prompt"]) + list(instructions["target"]), work / "tiny", seed=0)
        rates = {}
        for label, train_all in (("frozen vision+LM (DESIGN §8)", False), ("everything trainable", True)):
            settings = TrainSettings(
                epochs=1000, max_steps=args.steps, batch_size=args.batch_size, warmup_steps=2,
                checkpoint_every=0, train_all=train_all, device="cpu", cpu_threads=args.cpu_threads,
                name_substitution=0.0,  # step speed only: the same texts in both runs
            )  # fmt: skip
            result = train_backbone(work / "tiny", examples, vocab["image_root"], work / f"out_{train_all}", settings)
            rates[label] = result.steps / result.seconds
            print(
                f"{label:32s} {rates[label]:.3f} steps/s  {rates[label] * args.batch_size:.1f} examples/s "
                f"(batch {args.batch_size}, {result.steps} steps in {result.seconds:.1f} s)"
            )
    frozen, full = rates.values()
    print(f"ratio frozen / everything trainable: {frozen / full:.2f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
