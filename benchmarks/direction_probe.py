"""Does a tuned backbone know where two named objects are, and does it say so in relation answers? (issue 16, part 3)

Two greedy probes of one backbone directory, run in a workspace after `dvc repro`:

- where: "Where is the {a} relative to the {b}?" on validation crops (the questions
  `reltune.models.replay` asks, drawn over the validation scenes; answers left, right,
  top, bottom). Pretraining with `relative_where` teaches it; relation tuning without
  `train.replay` answers "Yes, ..." to everything instead.
- direction fit: the spatial relation question of every direction pair (above, below,
  left of, right of) of the training and validation instructions; the direction phrase
  of the greedy answer against the annotation. Training pairs fitted no better than
  validation pairs, both near the share of the most frequent direction, mean the model
  learned no direction from them.

`--finetune-steps N` first trains a copy of the backbone on the training direction
pairs alone (batch 32, every weight, no name substitution) and probes the copy: can
the model learn the directions from those pairs when they are all it sees?

    .venv/bin/python benchmarks/direction_probe.py [--backbone models/round_final] [--questions 400] [--threads 1]
        [--finetune-steps 400 --finetune-lr 1e-3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from reltune.data.scenes import read_scenes  # noqa: E402
from reltune.io import read_parquet  # noqa: E402
from reltune.models.backbone import Backbone, load_backbone  # noqa: E402
from reltune.models.pretrain import answer_questions  # noqa: E402
from reltune.models.replay import DIRECTION_PHRASES, replay_examples  # noqa: E402
from reltune.models.schedule import TrainSettings  # noqa: E402
from reltune.models.training import train_backbone  # noqa: E402

DIRECTIONS = tuple(DIRECTION_PHRASES.values())
SIDES = tuple(DIRECTION_PHRASES)


def direction_named(answer: str) -> str:
    """The direction phrase a relation answer names ("Yes, cup left of plate." -> "left of"), else "other"."""
    padded = f" {answer.strip().rstrip('.').lower()} "
    for phrase in sorted(DIRECTIONS, key=len, reverse=True):  # "left of" before a shorter phrase inside it
        if f" {phrase} " in padded:
            return phrase
    return "other"


def side_named(answer: str) -> str:
    """The side a where-answer names: "top" as pretraining answers, or "cup above plate" (`replay_answer: direction`)."""
    word = answer.strip().rstrip(".").lower()
    if word in SIDES:
        return word
    phrase = direction_named(answer)
    return next((side for side, direction in DIRECTION_PHRASES.items() if direction == phrase), "other")


def direction_questions(instructions: pd.DataFrame, scenes: pd.DataFrame) -> pd.DataFrame:
    """The positive questions whose predicate is a direction, with their image paths."""
    chosen = instructions[(instructions["kind"] == "positive") & instructions["predicate"].isin(DIRECTIONS)].copy()
    chosen["image_path"] = chosen["image_id"].map(scenes.drop_duplicates("image_id").set_index("image_id")["image_path"])
    chosen["union_box"] = chosen["union_box"].map(list)
    return chosen.reset_index(drop=True)


def where_probe(backbone: Backbone, scenes_dir: str, questions: int, seed: int) -> pd.DataFrame:
    """Relative-where questions over the validation scenes with the side the greedy answer names (else "other")."""
    scenes, vocab = read_scenes(scenes_dir, "val")
    asked = replay_examples(scenes, questions, seed, scenes_dir)
    answers = answer_questions(backbone, asked, Path(vocab["image_root"]))
    return asked.assign(answer=[side_named(answer) for answer in answers])


def read_direction_questions(instructions_dir: str, scenes_dir: str, split: str) -> tuple[pd.DataFrame, str]:
    """(the split's direction questions, image root)."""
    instructions = read_parquet(
        Path(instructions_dir) / f"{split}.parquet", ["image_id", "union_box", "kind", "predicate", "prompt", "target"]
    )
    scenes, vocab = read_scenes(scenes_dir, split)
    return direction_questions(instructions, scenes), vocab["image_root"]


def finetuned_on_directions(backbone_dir: str, instructions_dir: str, scenes_dir: str, steps: int, lr: float, out: Path) -> Path:
    """A copy of the backbone trained on the training direction pairs alone (batch 32, warm-up 20, cosine)."""
    examples, image_root = read_direction_questions(instructions_dir, scenes_dir, "train")
    settings = TrainSettings(
        epochs=10_000, max_steps=steps, batch_size=32, lr=lr, warmup_steps=20, schedule="warmup-cosine", train_all=True,
        name_substitution=0.0, min_steps=0, checkpoint_every=0,
    )  # fmt: skip
    result = train_backbone(backbone_dir, examples, image_root, out, settings, source="training direction pairs")
    print(f"fine-tuned on {len(examples)} training direction pairs: {steps} steps, lr {lr}, final loss {result.final_loss:.3f}")
    return out


def direction_fit(backbone: Backbone, instructions_dir: str, scenes_dir: str, split: str) -> pd.DataFrame:
    """The split's direction questions with the direction their greedy answer names."""
    asked, image_root = read_direction_questions(instructions_dir, scenes_dir, split)
    answers = answer_questions(backbone, asked, Path(image_root))
    return asked.assign(answer=[direction_named(answer) for answer in answers])


def report(title: str, truth: pd.Series, answer: pd.Series) -> None:
    print(f"\n{title}: {len(truth)} questions, accuracy {(truth == answer).mean():.3f} (rows: truth, columns: answer)")
    print(pd.crosstab(truth, answer).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="models/round_final")
    parser.add_argument("--scenes", default="data/scenes/synthetic")
    parser.add_argument("--instructions", default="data/instructions/synthetic")
    parser.add_argument("--questions", type=int, default=400, help="relative-where questions on validation crops")
    parser.add_argument("--seed", type=int, default=123, help="draw of those questions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune-steps", type=int, default=0, help="first train a copy on the training direction pairs (0: no)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        backbone_dir, name = args.backbone, args.backbone
        if args.finetune_steps > 0:
            backbone_dir = str(finetuned_on_directions(
                args.backbone, args.instructions, args.scenes, args.finetune_steps, args.finetune_lr, Path(work) / "finetuned"
            ))  # fmt: skip
            name = f"{args.backbone} + {args.finetune_steps} steps on training direction pairs"
        probe(load_backbone(backbone_dir), name, args)


def probe(backbone: Backbone, name: str, args: argparse.Namespace) -> None:
    where = where_probe(backbone, args.scenes, args.questions, args.seed)
    report(f"{name}: where is the {{a}} relative to the {{b}}, validation crops", where["target"], where["answer"])
    for split in ("train", "val"):
        fit = direction_fit(backbone, args.instructions, args.scenes, split)
        report(f"{name}: direction fit, {split} direction pairs", fit["predicate"], fit["answer"])


if __name__ == "__main__":
    main()
