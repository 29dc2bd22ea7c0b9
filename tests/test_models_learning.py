"""The tiny model learns from the image: a short training beats the blind control (issue 8).

A tiny world of rendered coloured shapes (`make_toy_scenes`) in which every
object is called "shape" and the relation predicate is `near` / `far from`,
decided by the distance between the two objects' centres. Every question
then has the same prompt, so only the image can answer; in the union crop
the two cases look different (near objects fill the crop, far ones sit in
its corners with background between them).

Why this world, measured on one CPU (200 steps of batch 32, ~6k examples,
the 45 s budget, tiny model trained end to end):
- the toy world's own directions (left of / above ...) with its six names:
  test-positive accuracy 0.25 with real and with grey images alike (the
  text-only guess); DESIGN §9 saw the image matter only after ~30k examples;
- near / far with the six names: mean recall 0.45 real vs 0.44 blind (the
  budget goes into copying the names into the answer);
- near / far with one name: 0.82 real vs 0.50 blind (below).

One short training is a coin, though: another processor (an Intel Xeon
against that AMD EPYC) gave 0.61 for the same seed, and over training seeds
0-4 at 200 steps 0.61, 0.75, 0.69, 0.79 and 0.50 (seed 4 learned nothing).
At 300 steps seeds 0-5 give 0.83, 0.71, 0.80, 0.77, 0.67, 0.80 (blind 0.50
each), so the test trains three seeds of 300 steps and reads their mean.

The run: build the tiny backbone, train every weight for a fixed number of
steps with each seed, then answer the held-out test positives through the
scoring code (`model_answer_source` + `validation_recall`) once with the real
images and once with `CropLoader(blind=True)`. Trained on grey copies of the
images instead (checked by hand, not kept), the same run gives 0.50 / 0.50
and the last test fails.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from statistics import fmean

import pytest
from test_models_answers_helpers import single_torch_thread  # noqa: F401 (autouse fixture: one torch thread)

from reltune.data.scenes import read_scenes, write_scenes
from reltune.instructions.build import build_instructions
from reltune.models.backbone import build_tiny, load_backbone
from reltune.inference.crops import CropLoader
from reltune.inference.generation import GenerationSettings
from reltune.inference.scoring import model_answer_source, validation_recall
from toy_scenes import make_toy_scenes
from reltune.models.training import TrainSettings, relation_training_examples, train_backbone

pytestmark = pytest.mark.slow  # three short trainings (module fixture `learnt`)

DISTANCE_PREDICATES = {"far from": "spatial", "near": "spatial"}
GENERIC_LABEL = "shape"
IMAGE_SIZE = 48  # rendered scenes: a 3x3 grid of 16 px cells
NEAR_DISTANCE = 0.5 * IMAGE_SIZE  # neighbouring cells (~16 or ~23 px apart) are near, the rest (>= 32 px) far
TINY_SIZES = {
    "image_size": 32,
    "patch_size": 8,
    "vision_layers": 1,
    "qformer_layers": 1,
    "text_layers": 1,
    "num_query_tokens": 4,
    "vocab_size": 400,
    "text_d_model": 64,
    "text_d_ff": 128,
    "vision_intermediate": 128,
    "qformer_intermediate": 128,
}
TRAIN = TrainSettings(
    epochs=1000, max_steps=300, batch_size=32, lr=3e-3, warmup_steps=10, checkpoint_every=0, train_all=True,
    flip_probability=0.0, box_jitter=0.0, device="cpu", cpu_threads=1, seed=0,
    name_substitution=0.0,  # one class name ("shape") for every object: nothing to learn from renaming it
    schedule="warmup-cosine",  # a step budget inside one long epoch: per-epoch (lavis-*) decay would never start
)  # fmt: skip
GREEDY = GenerationSettings(num_beams=1, max_new_tokens=16)
TRAINING_SEEDS = (0, 1, 2)  # one short training is a coin (module docstring): three, read by their mean


def distance_predicate(subject_box: list[float], object_box: list[float]) -> str:
    """`near` when the box centres are closer than NEAR_DISTANCE, else `far from`."""
    dx = (subject_box[0] + subject_box[2] - object_box[0] - object_box[2]) / 2
    dy = (subject_box[1] + subject_box[3] - object_box[1] - object_box[3]) / 2
    return "near" if math.hypot(dx, dy) < NEAR_DISTANCE else "far from"


def test_distance_predicate_thresholds_at_half_the_image():
    assert distance_predicate([0, 0, 10, 10], [16, 0, 26, 10]) == "near"  # 16 px
    assert distance_predicate([0, 0, 10, 10], [16, 16, 26, 26]) == "near"  # 22.6 px (diagonal neighbour)
    assert distance_predicate([0, 0, 10, 10], [24, 0, 34, 10]) == "far from"  # exactly 24 px
    assert distance_predicate([0, 0, 10, 10], [32, 32, 42, 42]) == "far from"


def distance_world(root: Path, images: int, seed: int) -> Path:
    """Toy renders (train + test) with every ordered pair's predicate replaced by its distance predicate."""
    toy_dir = make_toy_scenes(root / "toy", images=images, seed=seed, image_size=IMAGE_SIZE, splits=("train", "test"))
    tables = {}
    for split in ("train", "test"):
        scenes, vocab = read_scenes(toy_dir, split)
        scenes = scenes.copy()
        scenes["labels"] = [[GENERIC_LABEL] * len(labels) for labels in scenes["labels"]]
        scenes["relations"] = [
            [{"subj": r["subj"], "obj": r["obj"], "predicate": distance_predicate(boxes[r["subj"]], boxes[r["obj"]])} for r in relations]
            for boxes, relations in zip(scenes["boxes"], scenes["relations"])
        ]
        tables[split] = scenes
    vocab = {**vocab, "objects": [GENERIC_LABEL], "predicates": sorted(DISTANCE_PREDICATES), "categories": dict(DISTANCE_PREDICATES)}
    write_scenes(root / "scenes", tables, vocab)
    return root / "scenes"


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """Train the tiny model on the distance world once per seed; the test positives answered with real and with
    grey images: (positives, one {"real": recall, "blind": recall} per seed)."""
    root = tmp_path_factory.mktemp("learning")
    scene_dir = distance_world(root, images=120, seed=0)
    train_scenes, vocab = read_scenes(scene_dir, "train")
    test_scenes, _ = read_scenes(scene_dir, "test")
    train_questions = build_instructions(train_scenes, DISTANCE_PREDICATES, dataset="toy", split="train").table
    test_questions = build_instructions(test_scenes, DISTANCE_PREDICATES, dataset="toy", split="test").table
    build_tiny(list(train_questions["prompt"]) + list(train_questions["target"]), root / "tiny", seed=0, **TINY_SIZES)
    examples = relation_training_examples(train_questions, train_scenes, None)
    positives = test_questions[test_questions["kind"] == "positive"].reset_index(drop=True)
    image_paths = dict(zip(test_scenes["image_id"], test_scenes["image_path"]))
    per_seed = []
    for seed in TRAINING_SEEDS:
        tuned = root / f"tuned-{seed}"
        train_backbone(root / "tiny", examples, vocab["image_root"], tuned, dataclasses.replace(TRAIN, seed=seed))
        backbone = load_backbone(str(tuned))
        recalls = {}
        for variant, blind in (("real", False), ("blind", True)):
            loader = CropLoader(image_paths, vocab["image_root"], backbone.image_size, blind=blind)
            recalls[variant], _ = validation_recall(positives, model_answer_source(backbone, loader, GREEDY, variant))
        per_seed.append(recalls)
    return positives, per_seed


def test_the_world_needs_the_image(learnt):
    positives, _ = learnt
    # One prompt for every question: the text cannot tell near from far.
    assert positives["prompt"].nunique() == 1
    assert positives["prompt"].iloc[0] == (
        "Is there a prominent spatial relation between shape (subject) and shape (object) in the image?"
    )
    # Both answers are common, so a constant guess stays at 0.5 mean recall.
    shares = positives["predicate"].value_counts(normalize=True)
    assert set(shares.index) == {"near", "far from"} and shares.min() > 0.3


def test_short_training_beats_the_blind_control(learnt):
    _, per_seed = learnt
    real, blind = [recalls["real"] for recalls in per_seed], [recalls["blind"] for recalls in per_seed]
    # Blind: the grey crop and the prompt are the same for every question, hence one answer for all
    # (measured: mean recall 0.50 blind; real 0.71-0.83 per seed, 0.78 over seeds 0-2).
    for key in ("mean_recall", "recall"):
        assert fmean(r[key] for r in real) >= fmean(b[key] for b in blind) + 0.15, per_seed
    # every seed reads the image (lowest measured 0.67), not only their mean
    assert all(r["mean_recall"] >= b["mean_recall"] + 0.1 for r, b in zip(real, blind)), per_seed
    # both answers are given from the image: the constant blind answer has recall 0 on one predicate
    for predicate in DISTANCE_PREDICATES:
        assert fmean(r["per_predicate"][predicate] for r in real) > 0.5, per_seed
