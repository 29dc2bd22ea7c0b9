"""Pretraining of the tiny backbone on generic questions about the world (DESIGN §9).

Stands in for the pretrained VLM: before relation tuning, the tiny model must
bind object names to shapes, colours and positions, and see what the world
draws between objects. Questions are generated from the held-in TRAIN scenes'
boxes and labels and the world spec; no question or answer names a predicate:

- single-object crops: what object / what colour / what shape is this,
  "Is there a {x} in the image?" (yes: its own class, no: another class);
- crops of object pairs (union box): which object is on the left / right /
  top / bottom (dominant axis of the two centres), where the first object is,
  what colour the object on that side is; with `relative_where`, also where
  the first object is relative to the second, both named;
- crops of related pairs (`cue_questions`): what is drawn on the link between
  them ("a black triangle", "no link") and whether their boxes overlap, touch
  or stand apart. The relation is read only to know which pair the world
  joined; the answer describes the drawing, as a captioned image would;
- language only (`copy_questions`): repeat two words of the world vocabulary,
  held-out names included as words (never their images), so that the answer
  head can write a name it never saw in an image (a real LM's vocabulary);
- whole images: how many objects there are.

A seeded fraction of the images is held out; the accuracy of greedy answers
on their questions is reported next to a text-only baseline (the most
frequent training answer of the same question text).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from reltune.io import read_json, read_parquet, write_json
from reltune.models.backbone import Backbone, TinyInit, build_tiny, load_backbone
from reltune.models.images import load_image, union_crop
from reltune.models.training import TrainSettings, train_backbone
from reltune.progress import log, track
from reltune.text import normalise_predicate

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
QUESTION_COLUMNS = ("image_id", "image_path", "union_box", "prompt", "target", "kind")


@dataclass(frozen=True)
class QuestionSettings:
    """How many generic questions per image, and which images are held out for the accuracy check."""

    objects_per_image: int = 2
    pairs_per_image: int = 2
    holdout_fraction: float = 0.1
    eval_questions: int = 1000
    seed: int = 0
    # questions about what the world drew between a related pair (link glyph, contact): read the
    # relation only to know which pair is joined, never put a predicate name in a question or answer
    cue_questions: bool = True
    # language-only questions per image: repeat words of the world vocabulary (held-out names included,
    # as words only), so the answer head can write a name it never saw in an image
    copy_questions: int = 2
    # also ask where the first object of a pair is relative to the second, both named (no rng drawn when off)
    relative_where: bool = False


def class_attributes(world_spec: dict[str, Any], file: str) -> dict[str, dict[str, str]]:
    """{class name: {"colour", "shape"}} from world_spec.json's `classes` list."""
    classes = world_spec.get("classes") if isinstance(world_spec, dict) else None
    if not isinstance(classes, list) or not classes:
        raise InputError(file, "world spec has no 'classes' list")
    attributes = {}
    for index, entry in enumerate(classes):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("name", "colour", "shape")):
            raise InputError(file, "class entry needs string 'name', 'colour' and 'shape'", where=f"classes[{index}]")
        attributes[entry["name"]] = {"colour": entry["colour"], "shape": entry["shape"]}
    return attributes


def world_vocabulary(world_spec: dict[str, Any]) -> list[str]:
    """Every class, colour, shape and predicate name of the world (held-in and held-out)."""
    words = [entry["name"] for entry in world_spec.get("classes", [])]
    words += [entry["colour"] for entry in world_spec.get("classes", [])]
    words += [entry["shape"] for entry in world_spec.get("classes", [])]
    predicates = world_spec.get("predicates", {})
    if isinstance(predicates, dict):
        for entries in predicates.values():
            words += [normalise_predicate(entry["name"]) for entry in entries if isinstance(entry, dict) and "name" in entry]
    return sorted(set(words))


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def union_box(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """The smallest box holding both boxes (x1, y1, x2, y2)."""
    return [min(first[0], second[0]), min(first[1], second[1]), max(first[2], second[2]), max(first[3], second[3])]


def _padded(box: Sequence[float], width: float, height: float, fraction: float = 0.1) -> list[float]:
    """The box grown by `fraction` of its size per side (context around a single object)."""
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) * fraction, (y2 - y1) * fraction
    return [max(0.0, x1 - pad_x), max(0.0, y1 - pad_y), min(width, x2 + pad_x), min(height, y2 + pad_y)]


def copy_prompt(phrase: str) -> str:
    """The language-only question whose answer is `phrase` itself (pretraining and relation-tuning copy replay)."""
    return f"Repeat the words: {phrase}."


def relative_where_prompt(first_label: str, second_label: str) -> str:
    """The question whose answer is `pair_sides(first, second)[0]` (pretraining and relation-tuning replay)."""
    return f"Where is the {first_label} relative to the {second_label}?"


def pair_sides(first_box: Sequence[float], second_box: Sequence[float]) -> tuple[str, str]:
    """(side of first, side of second) on the dominant axis of their centres: left/right or top/bottom."""
    (x_first, y_first), (x_second, y_second) = _centre(first_box), _centre(second_box)
    dx, dy = x_first - x_second, y_first - y_second
    if abs(dx) >= abs(dy):
        return ("left", "right") if dx < 0 else ("right", "left")
    return ("top", "bottom") if dy < 0 else ("bottom", "top")


CONTACT_TOLERANCE = 1.5  # pixels: boxes this close count as touching (the world draws touching pairs flush)


def box_gap(first: Sequence[float], second: Sequence[float]) -> float:
    """Largest axis gap between two boxes (negative: they overlap on both axes)."""
    return max(second[0] - first[2], first[0] - second[2], second[1] - first[3], first[1] - second[3])


def contact_answer(first: Sequence[float], second: Sequence[float]) -> str:
    """`overlap`, `touch` (boxes within CONTACT_TOLERANCE) or `apart`, from the two boxes alone."""
    gap = box_gap(first, second)
    return "overlap" if gap < -CONTACT_TOLERANCE else "touch" if gap <= CONTACT_TOLERANCE else "apart"


def cue_answer(glyph: str | None, glyph_colour: str | None) -> str:
    """What is drawn on the link between a pair: `a white dot`, or `no link` (plain geometry)."""
    return f"a {glyph_colour} {glyph}" if glyph else "no link"


def pair_cue_questions(
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    relations: Sequence[dict[str, Any]],
    cues: dict[str, tuple[str | None, str | None]],
    rng: random.Random,
) -> list[tuple[list[float], str, str, str]]:
    """(union box, prompt, target, kind) of each related pair's drawing: the glyph on its link, their contact.

    The answers describe what was drawn (a glyph, whether the boxes touch), never the predicate:
    the model learns to see the cues, relation tuning then names them.
    """
    rows = []
    for relation in relations:
        subject, obj = int(relation["subj"]), int(relation["obj"])
        if labels[subject] == labels[obj]:
            continue  # names could not say which object is meant
        first, second = (subject, obj) if rng.random() < 0.5 else (obj, subject)
        box = union_box(boxes[first], boxes[second])
        names = f"the {labels[first]} and the {labels[second]}"
        predicate = normalise_predicate(str(relation["predicate"]))
        if predicate not in cues:
            raise InputError("world spec", f"predicate {predicate!r} of a scene relation is not in its 'predicates'")
        glyph, colour = cues[predicate]
        rows.append((box, f"What is drawn on the link between {names}?", cue_answer(glyph, colour), "cue"))
        rows.append((box, f"Do {names} overlap, touch or stand apart?", contact_answer(boxes[first], boxes[second]), "contact"))
    return rows


def world_cues(world_spec: dict[str, Any], file: str) -> dict[str, tuple[str | None, str | None]]:
    """{normalised predicate: (glyph, glyph colour)} of every dataset in world_spec.json's `predicates`."""
    predicates = world_spec.get("predicates") if isinstance(world_spec, dict) else None
    if not isinstance(predicates, dict):
        raise InputError(file, "world spec has no 'predicates' mapping")
    cues = {}
    for dataset, entries in predicates.items():
        if not isinstance(entries, list):  # a dataset's predicates silently skipped would lose their cue questions
            raise InputError(file, "must be a list of predicate entries", where=f"predicates.{dataset}")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InputError(file, "predicate entry needs a string 'name'", where=f"predicates.{dataset}[{index}]")
            cues[normalise_predicate(entry["name"])] = (entry.get("glyph"), entry.get("glyph_colour"))
    return cues


def image_questions(
    image_id: str,
    image_path: str,
    width: float,
    height: float,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    attributes: dict[str, dict[str, str]],
    settings: QuestionSettings,
    rng: random.Random,
    relations: Sequence[dict[str, Any]] = (),
    cues: dict[str, tuple[str | None, str | None]] | None = None,
    words: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The generic questions of one image (see module docstring); cue questions when `cues` is given,
    `settings.copy_questions` language-only questions over `words` when given."""
    rows: list[dict[str, Any]] = []

    def add(box: Sequence[float], prompt: str, target: str, kind: str) -> None:
        rows.append(
            {"image_id": image_id, "image_path": image_path, "union_box": [float(v) for v in box], "prompt": prompt, "target": target, "kind": kind}
        )

    object_indices = list(range(len(boxes)))
    class_names = sorted(attributes)
    for index in rng.sample(object_indices, min(settings.objects_per_image, len(object_indices))):
        label, box = labels[index], _padded(boxes[index], width, height)
        add(box, "What object is this?", label, "object")
        add(box, "What colour is this object?", attributes[label]["colour"], "colour")
        add(box, "What shape is this object?", attributes[label]["shape"], "shape")
        if rng.random() < 0.5:
            add(box, f"Is there a {label} in the image?", f"Yes, there is a {label}.", "yes_no")
        else:
            other = rng.choice([name for name in class_names if name != label])
            add(box, f"Is there a {other} in the image?", f"No, there is no {other}.", "yes_no")

    pairs = [(a, b) for a in object_indices for b in object_indices if a < b and labels[a] != labels[b]]
    for first, second in rng.sample(pairs, min(settings.pairs_per_image, len(pairs))):
        if rng.random() < 0.5:
            first, second = second, first
        box = union_box(boxes[first], boxes[second])
        side_first, side_second = pair_sides(boxes[first], boxes[second])
        asked_side = rng.choice([side_first, side_second])
        named = labels[first] if asked_side == side_first else labels[second]
        add(box, f"Which object is on the {asked_side}?", named, "which_side")
        add(box, f"Where is the {labels[first]} in the image?", side_first, "where")
        if settings.relative_where:
            add(box, relative_where_prompt(labels[first], labels[second]), side_first, "relative_where")
        add(box, f"What colour is the object on the {asked_side}?", attributes[named]["colour"], "side_colour")

    if cues is not None:
        for box, prompt, target, kind in pair_cue_questions(boxes, labels, relations, cues, rng):
            add(box, prompt, target, kind)

    whole_image = [0.0, 0.0, float(width), float(height)]
    for _ in range(settings.copy_questions if len(words) >= 2 else 0):
        phrase = " ".join(rng.sample(list(words), 2))
        add(whole_image, copy_prompt(phrase), phrase, "copy")

    count = len(boxes)
    add(whole_image, "How many objects are there?", NUMBER_WORDS[min(count, 10)], "count")
    return rows


def generic_questions(
    scenes: pd.DataFrame,
    attributes: dict[str, dict[str, str]],
    settings: QuestionSettings,
    file: str = "scenes",
    cues: dict[str, tuple[str | None, str | None]] | None = None,
    words: Sequence[str] = (),
) -> pd.DataFrame:
    """All generic questions of the scene rows; the `split` column says train or heldout (by image).

    Relations are read only with `cues` (and `settings.cue_questions`): to know which pairs are joined by a drawing.
    """
    unknown = sorted({label for labels in scenes["labels"] for label in labels} - set(attributes))
    if unknown:
        raise InputError(file, f"object classes missing from the world spec: {unknown}")
    image_rng = np.random.default_rng(settings.seed)
    heldout = image_rng.random(len(scenes)) < settings.holdout_fraction
    rows = []
    for position, scene in enumerate(scenes.itertuples(index=False)):
        rng = random.Random(f"{settings.seed}:{scene.image_id}")
        questions = image_questions(
            str(scene.image_id),
            str(scene.image_path),
            float(scene.width),
            float(scene.height),
            [list(box) for box in scene.boxes],
            list(scene.labels),
            attributes,
            settings,
            rng,
            relations=list(scene.relations) if settings.cue_questions and cues is not None else (),
            cues=cues if settings.cue_questions else None,
            words=words,
        )
        for question in questions:
            question["split"] = "heldout" if heldout[position] else "train"
        rows.extend(questions)
    return pd.DataFrame(rows, columns=[*QUESTION_COLUMNS, "split"])


def answer_questions(backbone: Backbone, questions: pd.DataFrame, image_root: Path, batch_size: int = 64) -> list[str]:
    """Greedy answers (no length bias: DESIGN §9) to each question on its un-augmented crop."""
    model, processor = backbone.model, backbone.processor
    model.eval()
    answers: list[str] = []
    starts = range(0, len(questions), batch_size)
    for start in track(starts, "answer generic questions"):
        chunk = questions.iloc[start : start + batch_size]
        crops = [
            union_crop(load_image(image_root, path), list(box), backbone.image_size, source=str(path))
            for path, box in zip(chunk["image_path"], chunk["union_box"])
        ]
        inputs = processor(images=crops, text=list(chunk["prompt"]), return_tensors="pt", padding=True, truncation=True)
        inputs = inputs.to(backbone.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(backbone.dtype)
        with torch.no_grad():
            generated = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=16)
        answers.extend(text.strip() for text in processor.batch_decode(generated, skip_special_tokens=True))
    return answers


def question_accuracy(questions: pd.DataFrame, answers: Sequence[str], train_questions: pd.DataFrame) -> dict[str, Any]:
    """Exact-match accuracy (normalised text) overall and per kind, with the text-only baseline."""
    expected = [normalise_predicate(target) for target in questions["target"]]
    correct = np.array([normalise_predicate(answer) == target for answer, target in zip(answers, expected)])
    majority = (
        train_questions.assign(normalised=train_questions["target"].map(normalise_predicate))
        .groupby("prompt")["normalised"]
        .agg(lambda values: Counter(values).most_common(1)[0][0])
    )
    baseline = np.array([majority.get(prompt) == target for prompt, target in zip(questions["prompt"], expected)])
    kinds = questions["kind"].to_numpy()
    return {
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "text_only_baseline": float(baseline.mean()) if len(baseline) else 0.0,
        "questions": int(len(correct)),
        "per_kind": {
            kind: {
                "accuracy": float(correct[kinds == kind].mean()),
                "text_only_baseline": float(baseline[kinds == kind].mean()),
                "questions": int((kinds == kind).sum()),
            }
            for kind in sorted(set(kinds))
        },
    }


def tokenizer_corpus(
    questions: pd.DataFrame, world_spec: dict[str, Any], vocab: dict[str, Any], instruction_texts: Iterable[str]
) -> list[str]:
    """Texts the tiny BPE tokenizer is trained on: instructions, world vocabulary, generic questions."""
    corpus = list(dict.fromkeys(instruction_texts))
    corpus += list(dict.fromkeys(list(questions["prompt"]) + list(questions["target"])))
    corpus += world_vocabulary(world_spec) + [str(word) for word in vocab.get("objects", []) + vocab.get("predicates", [])]
    return corpus


def pretrain_tiny(
    scenes_dir: str | Path,
    world_spec_path: str | Path,
    instructions_path: str | Path | None,
    out_dir: str | Path,
    metrics_path: str | Path,
    train_settings: TrainSettings,
    question_settings: QuestionSettings,
    sizes: dict[str, int] | None = None,
    live_dir: str | Path | None = None,
    init: TinyInit = TinyInit(),
) -> dict[str, Any]:
    """Build the tiny backbone, pretrain it on generic questions, report held-out accuracy."""
    if train_settings.name_substitution > 0:  # generic questions name no subject / object pair
        raise InputError("--name-substitution", "applies to relation tuning (`reltune train`) only; pretraining takes 0")
    if train_settings.replay > 0:  # pretraining asks the replayed questions itself (relative_where)
        raise InputError("--replay", "applies to relation tuning (`reltune train`) only; pretraining takes 0")
    if train_settings.copy_replay > 0:  # pretraining asks its copy questions itself (copy_questions)
        raise InputError("--copy-replay", "applies to relation tuning (`reltune train`) only; pretraining takes 0")
    if train_settings.repeat_threshold > 0:  # generic questions have no predicate
        raise InputError("--repeat-threshold", "applies to relation tuning (`reltune train`) only; pretraining takes 0")
    if train_settings.converse_predicates:  # generic questions have no predicate
        raise InputError("--converse-predicates", "applies to relation tuning (`reltune train`) only; pretraining takes ''")
    if train_settings.converse_batches:  # no converse questions in pretraining
        raise InputError("--converse-batches", "applies to relation tuning (`reltune train`) only; pretraining takes false")
    scenes, vocab = read_scenes(scenes_dir, "train")
    spec_file = str(world_spec_path)
    world_spec = read_json(world_spec_path)
    attributes = class_attributes(world_spec, spec_file)
    cues = world_cues(world_spec, spec_file) if question_settings.cue_questions else None
    questions = generic_questions(
        scenes, attributes, question_settings, file=str(Path(scenes_dir) / "train.parquet"), cues=cues,
        words=world_vocabulary(world_spec),
    )
    train_questions = questions[questions["split"] == "train"].reset_index(drop=True)
    heldout = questions[questions["split"] == "heldout"]
    heldout = heldout.sample(n=min(len(heldout), question_settings.eval_questions), random_state=question_settings.seed)
    if train_questions.empty or heldout.empty:
        raise InputError(scenes_dir, "too few train images to hold out generic questions (need both splits non-empty)")
    instruction_texts: list[str] = []
    if instructions_path:
        instructions = read_parquet(instructions_path, ["prompt", "target"])
        instruction_texts = list(instructions["prompt"].astype(str)) + list(instructions["target"].astype(str))
    corpus = tokenizer_corpus(train_questions, world_spec, vocab, instruction_texts)

    out_dir = Path(out_dir)
    init_dir = out_dir.parent / f"{out_dir.name}.init"
    # Deterministic (seeded init, deterministic BPE), so a resumed run rebuilds the same start.
    build_tiny(corpus, init_dir, seed=train_settings.seed, init=init, **(sizes or {}))
    settings = dataclasses.replace(train_settings, train_all=True)  # pretraining trains every weight
    log(f"pretraining on {len(train_questions)} generic questions from {train_questions['image_id'].nunique()} train images")
    result = train_backbone(
        init_dir,
        train_questions,
        vocab["image_root"],
        out_dir,
        settings,
        live_dir=live_dir,
        source="generic questions",
        extra_metadata={"pretraining": "generic questions (DESIGN §9)"},
    )
    shutil.rmtree(init_dir, ignore_errors=True)

    backbone = load_backbone(str(out_dir))
    answers = answer_questions(backbone, heldout, Path(vocab["image_root"]))
    metrics = {
        **question_accuracy(heldout, answers, train_questions),
        "train_questions": int(len(train_questions)),
        "train_images": int(train_questions["image_id"].nunique()),
        "heldout_images": int(questions.loc[questions["split"] == "heldout", "image_id"].nunique()),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 2),
    }
    write_json(metrics, metrics_path)
    return metrics
