"""Relation-tuning replay of the pretraining's relative-where questions (`train.replay`, issue 16 part 3)
and of its copy questions (`train.copy_replay`, part 4)."""

import json
import math

import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.models.replay import copy_examples, copy_vocabulary, replay_examples, with_copy_replay, with_replay

# image a: cat top-left, dog to its right (a little lower), cup below the cat; image b: two leaves and a
# frog, so only the frog is singled out by its name and image b has no pair to ask about
SCENES = pd.DataFrame(
    {
        "image_id": ["a", "b"],
        "image_path": ["a.jpg", "b.jpg"],
        "boxes": [
            [[0, 0, 10, 10], [30, 2, 40, 12], [2, 40, 12, 50]],
            [[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]],
        ],
        "labels": [["cat", "dog", "cup"], ["leaf", "leaf", "frog"]],
    }
)
# centres: cat (5, 5), dog (35, 7), cup (7, 45); the answer is the first object's side on the dominant axis
EXPECTED = {
    ("cat", "dog"): "left", ("dog", "cat"): "right",
    ("cat", "cup"): "top", ("cup", "cat"): "bottom",
    ("dog", "cup"): "top", ("cup", "dog"): "bottom",
}  # fmt: skip


def test_replay_asks_every_nameable_pair_with_the_first_objects_side():
    rows = replay_examples(SCENES, 6, seed=3)
    assert len(rows) == 6 and set(rows["image_id"]) == {"a"} and set(rows["kind"]) == {"replay"}
    asked = {(subject, obj): target for subject, obj, target in zip(rows["subj_label"], rows["obj_label"], rows["target"])}
    assert asked == EXPECTED
    for prompt, subject, obj in zip(rows["prompt"], rows["subj_label"], rows["obj_label"]):
        assert prompt == f"Where is the {subject} relative to the {obj}?"
    boxes = dict(zip(zip(rows["subj_label"], rows["obj_label"]), rows["union_box"]))
    assert boxes[("cat", "cup")] == [0.0, 0.0, 12.0, 50.0] and boxes[("dog", "cat")] == [0.0, 0.0, 40.0, 12.0]
    assert list(rows["image_path"]) == ["a.jpg"] * 6 and rows["qid"].is_unique


def test_replay_draw_is_seeded_without_repeats_and_refuses_more_than_there_is():
    first, again = replay_examples(SCENES, 4, seed=1), replay_examples(SCENES, 4, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["subj_label", "obj_label"]].duplicated().any()
    draws = {tuple(zip(replay_examples(SCENES, 3, seed=seed)["subj_label"], replay_examples(SCENES, 3, seed=seed)["obj_label"]))
             for seed in range(8)}  # fmt: skip
    assert len(draws) > 1
    assert replay_examples(SCENES, 0, seed=1).empty
    with pytest.raises(InputError, match=r"data/scenes/x: train.replay asks for 7 .* the scenes have 6 ordered pairs"):
        replay_examples(SCENES, 7, seed=1, source="data/scenes/x")


def test_with_replay_adds_a_fraction_of_the_relation_examples_after_them():
    relations = pd.DataFrame({"qid": [f"q{i}" for i in range(9)], "prompt": ["p"] * 9})
    assert with_replay(relations, SCENES, 0.0, seed=0) is relations
    mixed = with_replay(relations, SCENES, 0.5, seed=0)
    assert len(mixed) == 9 + math.floor(9 * 0.5)
    assert list(mixed["qid"][:9]) == list(relations["qid"]) and set(mixed["kind"][9:]) == {"replay"}


def test_direction_answers_say_the_side_with_the_relation_words_and_bad_kinds_are_refused():
    sides = replay_examples(SCENES, 6, seed=3)
    phrases = replay_examples(SCENES, 6, seed=3, answer="direction")
    words = {"left": "left of", "right": "right of", "top": "above", "bottom": "below"}
    expected = [f"{subject} {words[side]} {obj}" for subject, obj, side in zip(sides["subj_label"], sides["obj_label"], sides["target"])]
    assert list(phrases["target"]) == expected and "cat left of dog" in expected and "cup below dog" in expected
    assert list(phrases["prompt"]) == list(sides["prompt"])
    with pytest.raises(InputError, match="--replay-answer: 'sideways' is not one of"):
        replay_examples(SCENES, 2, seed=0, answer="sideways")


SIZED_SCENES = SCENES.assign(width=[64, 80], height=[48, 60])
NAMES = ["fox", "on", "sitting on", "cat"]


def test_copy_questions_repeat_two_different_names_on_a_whole_image():
    asked = copy_examples(SIZED_SCENES, NAMES, 40, seed=0)
    assert list(asked["qid"]) == [f"copy-{number}" for number in range(40)] and set(asked["kind"]) == {"copy"}
    for row in asked.itertuples():
        assert row.subj_label != row.obj_label and {row.subj_label, row.obj_label} <= set(NAMES)
        assert row.prompt == f"Repeat the words: {row.subj_label} {row.obj_label}."  # pretraining's wording
        assert row.target == f"{row.subj_label} {row.obj_label}"
        size = {"a": [0.0, 0.0, 64.0, 48.0], "b": [0.0, 0.0, 80.0, 60.0]}[row.image_id]
        assert list(row.union_box) == size and row.image_path == f"{row.image_id}.jpg"
    # both images and every name are drawn, multi-word names whole
    assert set(asked["image_id"]) == {"a", "b"} and set(asked["subj_label"]) | set(asked["obj_label"]) == set(NAMES)
    pd.testing.assert_frame_equal(asked, copy_examples(SIZED_SCENES, NAMES, 40, seed=0))  # seeded
    assert not asked["prompt"].equals(copy_examples(SIZED_SCENES, NAMES, 40, seed=1)["prompt"])
    assert copy_examples(SIZED_SCENES, NAMES, 0, seed=0).empty
    with pytest.raises(InputError, match="names: train.copy_replay needs at least two names to copy, found 1"):
        copy_examples(SIZED_SCENES, ["fox"], 3, seed=0)


def test_triplet_copy_questions_put_a_predicate_between_two_different_objects():
    objects, predicates = ["fox", "cat", "tennis racket"], ["on", "sitting on"]
    asked = copy_examples(SIZED_SCENES, objects, 60, seed=0, predicates=predicates)
    middles = set()
    for row in asked.itertuples():
        assert row.subj_label != row.obj_label and {row.subj_label, row.obj_label} <= set(objects)
        middle = row.target.removeprefix(f"{row.subj_label} ").removesuffix(f" {row.obj_label}")
        assert middle in predicates and row.target == f"{row.subj_label} {middle} {row.obj_label}"
        assert row.prompt == f"Repeat the words: {row.target}."
        middles.add(middle)
    # every object in both places and every predicate drawn, multi-word names whole
    assert set(asked["subj_label"]) == set(asked["obj_label"]) == set(objects) and middles == set(predicates)
    # the images are the pair form's draw (drawn first)
    assert list(asked["image_id"]) == list(copy_examples(SIZED_SCENES, objects, 60, seed=0)["image_id"])
    with pytest.raises(InputError, match="names: train.copy_phrase triplet needs at least one predicate name"):
        copy_examples(SIZED_SCENES, objects, 3, seed=0, predicates=[])


def test_copy_vocabulary_draws_each_phrase_forms_words(tmp_path):
    names_file = tmp_path / "names.json"
    datasets = {
        "held-in": {"objects": ["cat", "fox"], "predicates": ["on", "above", "below", "left of"]},
        "held-out": {"objects": ["kite"], "predicates": ["hug"]},
    }
    names_file.write_text(json.dumps({"datasets": datasets}))
    assert copy_vocabulary(names_file, "pair") == (["above", "below", "cat", "fox", "hug", "kite", "left of", "on"], None)
    objects = ["cat", "fox", "kite"]
    assert copy_vocabulary(names_file, "triplet") == (objects, ["above", "below", "hug", "left of", "on"])
    # the converse predicates are left out, both sides of each pair ('right of' is no dataset's name)
    no_converse = copy_vocabulary(names_file, "triplet-no-converse", "above:below,left of:right of")
    assert no_converse == (objects, ["hug", "on"])
    assert copy_vocabulary(names_file, "triplet", "above:below") == (objects, ["above", "below", "hug", "left of", "on"])
    with pytest.raises(InputError, match="train.copy_phrase: triplet-no-converse needs train.converse_predicates"):
        copy_vocabulary(names_file, "triplet-no-converse", "")


def test_with_copy_replay_counts_a_fraction_of_the_relation_examples_only():
    relations = pd.DataFrame({"qid": [f"q{i}" for i in range(9)], "prompt": ["p"] * 9})
    replayed = with_replay(relations, SIZED_SCENES, 0.5, seed=0)  # 4 where-questions after the relations
    assert with_copy_replay(replayed, 9, SIZED_SCENES, NAMES, 0.0, seed=0) is replayed
    mixed = with_copy_replay(replayed, 9, SIZED_SCENES, NAMES, 0.7, seed=0)
    assert len(mixed) == 13 + math.floor(9 * 0.7)  # 6: of the 9 relation examples, not of the 13 before
    assert list(mixed["qid"][:13]) == list(replayed["qid"]) and set(mixed["kind"][13:]) == {"copy"}
