"""Replay during relation tuning: the pretraining's relative-where questions asked beside the relations.

Relation tuning alone undoes what a binding pretraining taught: after it, the model answers the
direction predicates by prior (README "Pretraining that binds both axes, then relation tuning").
Replay keeps asking "Where is the {a} relative to the {b}?" (answers left, right, top, bottom: the
dominant axis of the two centres, as in pretraining) about objects of the same held-in training
scenes, so the position of two named objects stays something the model must read from the crop.
No validation, test or held-out image is read. The side answers name no predicate; `train.replay_answer:
direction` answers with the English direction phrase computed from the boxes ("cup above plate"),
which may be a predicate name of the dataset (README "Replaying where things are": it did not help).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.models.pretrain import pair_sides, relative_where_prompt, union_box
from reltune.models.schedule import REPLAY_ANSWERS, replay_count

REPLAY_KIND = "replay"
# train.replay_answer "direction": the English phrase of each side, the words relation answers use
DIRECTION_PHRASES = {"left": "left of", "right": "right of", "top": "above", "bottom": "below"}


def _nameable_pairs(labels: list[str]) -> list[tuple[int, int]]:
    """Ordered pairs of objects that their names single out: two different classes, each once in the image."""
    single = [index for index, label in enumerate(labels) if labels.count(label) == 1]
    return [(first, second) for first in single for second in single if first != second]


def replay_examples(scenes: pd.DataFrame, count: int, seed: int, source: str = "scenes", answer: str = "side") -> pd.DataFrame:
    """`count` relative-where questions, each about a distinct (image, ordered pair of objects its names single out).

    A seeded draw without replacement over every such pair of `scenes` (columns image_id, image_path,
    boxes, labels); the rows have the relation examples' columns, `kind` "replay" and the two names
    as subject and object labels (so name substitution may replace them too). `answer` (REPLAY_ANSWERS):
    "side" answers "top", "direction" answers "{a} above {b}" (DIRECTION_PHRASES: geometry, not annotation).
    """
    if answer not in REPLAY_ANSWERS:
        raise InputError("--replay-answer", f"{answer!r} is not one of {REPLAY_ANSWERS}")
    columns = ["qid", "kind", "image_id", "union_box", "prompt", "target", "subj_label", "obj_label", "image_path"]
    if count <= 0:
        return pd.DataFrame(columns=columns)
    candidates = [
        (position, first, second)
        for position, labels in enumerate(scenes["labels"])
        for first, second in _nameable_pairs([str(label) for label in labels])
    ]
    if count > len(candidates):
        raise InputError(
            source, f"train.replay asks for {count} relative-where questions; the scenes have {len(candidates)} "
            "ordered pairs of objects their names single out (lower train.replay)",
        )  # fmt: skip
    chosen = np.sort(np.random.default_rng(seed).choice(len(candidates), size=count, replace=False))
    rows = []
    for number, index in enumerate(chosen):
        position, first, second = candidates[index]
        scene = scenes.iloc[position]
        boxes, labels = [list(map(float, box)) for box in scene["boxes"]], [str(label) for label in scene["labels"]]
        rows.append(
            {
                "qid": f"replay-{number}",
                "kind": REPLAY_KIND,
                "image_id": scene["image_id"],
                "union_box": union_box(boxes[first], boxes[second]),
                "prompt": relative_where_prompt(labels[first], labels[second]),
                "target": _answer(pair_sides(boxes[first], boxes[second])[0], labels[first], labels[second], answer),
                "subj_label": labels[first],
                "obj_label": labels[second],
                "image_path": scene["image_path"],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _answer(side: str, first_label: str, second_label: str, answer: str) -> str:
    return side if answer == "side" else f"{first_label} {DIRECTION_PHRASES[side]} {second_label}"


def with_replay(
    examples: pd.DataFrame, scenes: pd.DataFrame, replay: float, seed: int, source: str = "scenes", answer: str = "side"
) -> pd.DataFrame:
    """The relation examples followed by their replay questions (`examples` unchanged when `replay` is 0)."""
    count = replay_count(len(examples), replay)
    if count == 0:
        return examples
    return pd.concat([examples, replay_examples(scenes, count, seed, source, answer)], ignore_index=True)
