"""benchmarks/direction_probe.py: which direction an answer names, which questions it asks."""

import pandas as pd
import pytest

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("direction_probe")


@pytest.mark.parametrize(
    "answer, named",
    [
        ("Yes, cup left of plate.", "left of"),
        ("yes, cup right of plate", "right of"),
        ("Yes, lamp above table.", "above"),
        ("Yes, ball below box.", "below"),
        ("Yes, leftover near plate.", "other"),  # a word that starts like a phrase is not one
        ("No, there is no prominent spatial relation between cup and plate.", "other"),
        ("Yes, cup on plate.", "other"),
    ],
)
def test_direction_named_reads_the_whole_phrase(probe, answer, named):
    assert probe.direction_named(answer) == named


def test_direction_questions_are_the_positive_direction_pairs_with_their_images(probe):
    instructions = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b"],
            "union_box": [[0, 0, 1, 1]] * 4,
            "kind": ["positive", "negative", "positive", "positive"],
            "predicate": ["above", "left of", "on", "right of"],
            "prompt": ["p"] * 4,
            "target": ["t"] * 4,
        }
    )
    scenes = pd.DataFrame({"image_id": ["a", "b", "b"], "image_path": ["a.jpg", "b.jpg", "b.jpg"]})
    asked = probe.direction_questions(instructions, scenes)
    assert list(asked["predicate"]) == ["above", "right of"] and list(asked["image_path"]) == ["a.jpg", "b.jpg"]
    assert asked["union_box"].map(type).eq(list).all()


@pytest.mark.parametrize(
    "answer, side",
    [("top", "top"), ("Left.", "left"), ("cup above plate", "top"), ("cup right of plate", "right"), ("Yes, cup on plate.", "other")],
)
def test_side_named_reads_both_replay_answers(probe, answer, side):
    assert probe.side_named(answer) == side
