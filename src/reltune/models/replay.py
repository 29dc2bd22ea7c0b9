"""Replay during relation tuning: pretraining's relative-where and copy questions asked beside the relations.

Relation tuning alone undoes what a binding pretraining taught: after it, the model answers the
direction predicates by prior (docs/RESULTS.md "Pretraining that binds both axes, then relation tuning").
Replay keeps asking "Where is the {a} relative to the {b}?" (answers left, right, top, bottom: the
dominant axis of the two centres, as in pretraining) about objects of the same held-in training
scenes, so the position of two named objects stays something the model must read from the crop.
No validation, test or held-out image is read. The side answers name no predicate; `train.replay_answer:
direction` answers with the English direction phrase computed from the boxes ("cup above plate"),
which may be a predicate name of the dataset (docs/RESULTS.md "Replaying where things are": it did not help).

Copy replay (`train.copy_replay`) asks pretraining's language-only question "Repeat the words: a b."
over the object and predicate names of every dataset, held-out ones included as words (never their
images or relations). Why: after relation tuning the model no longer writes a name that no training
answer has; asked about a fox on a box it answers "Yes, ball on box.", which does not parse. The
image of a copy question is a whole training image and plays no part in its answer.

`train.copy_phrase: triplet` repeats three words in the places a relation answer has them instead,
"{object} {predicate} {object}", each drawn at random from every dataset's names ("fox hug kite"):
in the pairs a held-out name ends half of its answers, and models trained on them stopped after an
unseen subject ("Yes, fox.") or ran on into another word ("foxe"). A drawn phrase states nothing
about any image (its image is a random training image, and the draw pairs names uniformly).
`train.copy_phrase: triplet-no-converse` leaves the predicates of `train.converse_predicates` (the
directions) out of the triplets: a phrase "fox above kite" on an image with no such pair puts a
direction word after names with nothing on the image to back it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.models.converses import converse_pairs
from reltune.models.names import dataset_names
from reltune.models.pretrain import copy_prompt, pair_sides, relative_where_prompt, union_box
from reltune.models.schedule import REPLAY_ANSWERS, replay_count

REPLAY_KIND = "replay"
COPY_KIND = "copy"
EXAMPLE_COLUMNS = ["qid", "kind", "image_id", "union_box", "prompt", "target", "subj_label", "obj_label", "image_path"]
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
    if count <= 0:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
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
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def copy_vocabulary(
    names_source: str | Path, phrase: str, converse_predicates: str = ""
) -> tuple[list[str], list[str] | None]:
    """The words copy phrases of the `phrase` form (`train.copy_phrase`) are drawn from: (every name, None)
    for pairs; (object names, predicate names) for triplets, less the `converse_predicates` ("a:b,c:d") for
    `triplet-no-converse`. `names_source` as for `names.dataset_names`."""
    if phrase == "pair":
        return dataset_names(names_source), None
    predicates = dataset_names(names_source, ("predicates",))
    if phrase == "triplet-no-converse":
        excluded = converse_pairs(converse_predicates, "train.converse_predicates")
        if not excluded:
            raise InputError("train.copy_phrase", "triplet-no-converse needs train.converse_predicates (the predicates it leaves out)")
        predicates = [name for name in predicates if name not in excluded]
        if not predicates:
            raise InputError(names_source, "train.copy_phrase triplet-no-converse: every predicate name is one of train.converse_predicates")
    return dataset_names(names_source, ("objects",)), predicates


def copy_examples(
    scenes: pd.DataFrame, names: list[str], count: int, seed: int, source: str = "names", predicates: list[str] | None = None
) -> pd.DataFrame:
    """`count` copy questions "Repeat the words: {a} {b}." answered "{a} {b}", each on a whole training image.

    A seeded draw: per question an image of `scenes` (columns image_id, image_path, width, height) and two
    different `names`, in drawn order. The rows have the relation examples' columns, `kind` "copy" and the
    two names as subject and object labels (so name substitution may replace them too). With `predicates`
    (`train.copy_phrase: triplet`) the `names` are object names and each phrase is "{a} {predicate} {b}".
    """
    if count <= 0:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    if len(names) < 2:
        raise InputError(source, f"train.copy_replay needs at least two names to copy, found {len(names)}")
    if predicates is not None and not predicates:
        raise InputError(source, "train.copy_phrase triplet needs at least one predicate name, found none")
    rng = np.random.default_rng(seed)
    images = rng.integers(len(scenes), size=count)
    rows = []
    for number, position in enumerate(images):
        scene = scenes.iloc[int(position)]
        first, second = (names[int(index)] for index in rng.choice(len(names), size=2, replace=False))
        middle = [] if predicates is None else [predicates[int(rng.integers(len(predicates)))]]
        phrase = " ".join([first, *middle, second])
        rows.append(
            {
                "qid": f"copy-{number}",
                "kind": COPY_KIND,
                "image_id": scene["image_id"],
                "union_box": [0.0, 0.0, float(scene["width"]), float(scene["height"])],
                "prompt": copy_prompt(phrase),
                "target": phrase,
                "subj_label": first,
                "obj_label": second,
                "image_path": scene["image_path"],
            }
        )
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


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


def with_copy_replay(
    examples: pd.DataFrame,
    relation_examples: int,
    scenes: pd.DataFrame,
    names: list[str],
    copy_replay: float,
    seed: int,
    source: str = "names",
    predicates: list[str] | None = None,
) -> pd.DataFrame:
    """`examples` followed by `copy_replay` times `relation_examples` copy questions (unchanged when that is 0;
    `predicates`: triplet phrases, see `copy_examples`)."""
    count = replay_count(relation_examples, copy_replay)
    if count == 0:
        return examples
    return pd.concat([examples, copy_examples(scenes, names, count, seed, source, predicates)], ignore_index=True)
