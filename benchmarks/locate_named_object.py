"""Can the tiny backbone learn where a named object is? (issue 16, part 3: direction predicates)

The direction predicates (above, below, left of, right of) need the model to
find the object a question names and say where it is. Pretraining asks that
("Where is the frog in the image?", "Which object is on the left?") and the
pretrained tiny model stays near chance on it. This trains a copy of a
backbone on those two question kinds alone (the held-in train images'
pretraining questions, `reltune.models.pretrain.generic_questions`) for
`--steps` steps and prints the greedy accuracy on held-out images' questions
and on a sample of its own training questions, and where-answer confusion.
`--position-scale` multiplies the vision position embeddings first: at
initialisation they are about 9x smaller than the patch embeddings (std 0.067
vs 0.57 in the default pretrained model), so position may be what is lost.

    .venv/bin/python benchmarks/locate_named_object.py [--backbone models/tiny-pretrained]
        [--steps 300] [--position-scale 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from reltune.data.scenes import read_scenes  # noqa: E402
from reltune.io import read_json  # noqa: E402
from reltune.models.backbone import load_backbone  # noqa: E402
from reltune.models.pretrain import (  # noqa: E402
    QuestionSettings,
    answer_questions,
    class_attributes,
    generic_questions,
    world_cues,
    world_vocabulary,
)
from reltune.models.schedule import TrainSettings  # noqa: E402
from reltune.models.training import train_backbone  # noqa: E402

KINDS = ("where", "which_side")
POSITION_KEY = "vision_model.embeddings.position_embedding"


def scaled_copy(backbone: Path, destination: Path, scale: float) -> Path:
    """A copy of the backbone directory with its vision position embeddings multiplied by `scale`."""
    shutil.copytree(backbone, destination)
    weights = load_file(destination / "model.safetensors")
    weights[POSITION_KEY] = weights[POSITION_KEY] * scale
    save_file(weights, destination / "model.safetensors", metadata={"format": "pt"})
    return destination


def accuracy(backbone_dir: Path, questions: pd.DataFrame, image_root: str) -> pd.DataFrame:
    """The questions with the backbone's greedy answer and whether it equals the target."""
    answers = answer_questions(load_backbone(str(backbone_dir)), questions, Path(image_root))
    answered = questions.assign(answer=[answer.strip().rstrip(".").lower() for answer in answers])
    return answered.assign(correct=answered["answer"] == answered["target"].str.lower().str.rstrip("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=Path, default=Path("models/tiny-pretrained"))
    parser.add_argument("--scenes", default="data/scenes/synthetic")
    parser.add_argument("--world-spec", default="data/raw/synthetic/world_spec.json")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--position-scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-questions", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenes, vocab = read_scenes(args.scenes, "train")
    spec = read_json(args.world_spec)
    questions = generic_questions(
        scenes, class_attributes(spec, args.world_spec), QuestionSettings(), file=args.scenes,
        cues=world_cues(spec, args.world_spec), words=world_vocabulary(spec),
    )  # fmt: skip
    questions = questions[questions["kind"].isin(KINDS)]
    train = questions[questions["split"] == "train"].reset_index(drop=True)
    heldout = questions[questions["split"] == "heldout"].sample(n=args.eval_questions, random_state=0)
    seen = train.sample(n=args.eval_questions, random_state=0)
    with tempfile.TemporaryDirectory() as work:
        start = scaled_copy(args.backbone, Path(work) / "start", args.position_scale)
        before = accuracy(start, heldout, vocab["image_root"])
        settings = TrainSettings(
            epochs=10_000, max_steps=args.steps, warmup_steps=20, schedule="warmup-cosine", cpu_threads=args.threads, train_all=True,
            name_substitution=0.0,  # generic questions name no subject / object pair
        )
        result = train_backbone(start, train, vocab["image_root"], Path(work) / "trained", settings, source="where questions")
        after = accuracy(Path(work) / "trained", heldout, vocab["image_root"])
        on_train = accuracy(Path(work) / "trained", seen, vocab["image_root"])
    print(f"{len(train)} train questions, {args.steps} steps, position scale {args.position_scale}, loss {result.final_loss:.3f}")
    table = pd.DataFrame(
        {
            "held-out before": before.groupby("kind")["correct"].mean(),
            "held-out after": after.groupby("kind")["correct"].mean(),
            "own train questions after": on_train.groupby("kind")["correct"].mean(),
        }
    )
    print(table.round(3).to_string())
    where = after[after["kind"] == "where"]
    print("\nwhere, held-out after (rows: truth, columns: answer)")
    print(pd.crosstab(where["target"], where["answer"]).to_string())


if __name__ == "__main__":
    main()
