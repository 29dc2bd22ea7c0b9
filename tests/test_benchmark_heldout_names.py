"""benchmarks/heldout_names.py: which held-out misses are names not written rather than relations not read."""

import json

import pandas as pd
import pytest

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def names():
    return load_benchmark("heldout_names")


def test_written_name_takes_the_longest_known_name_at_either_end(names):
    known = {"ball", "traffic light", "box"}
    assert names.written_name("traffic light on box".split(), known, from_start=True) == "traffic light"
    assert names.written_name("fox on traffic light".split(), known, from_start=False) == "traffic light"
    assert names.written_name("fox on moon".split(), known, from_start=True) is None


def test_classify_tells_a_relation_read_under_other_names_from_a_wrong_relation(names):
    questions = pd.DataFrame(
        {
            "subj_label": ["fox"] * 5,
            "obj_label": ["cake"] * 5,
            "category": ["spatial", "spatial", "spatial", "spatial", "semantic"],
            "truth": [{"on"}] * 5,
        }
    )
    answers = [
        "Yes, fox on cake.",  # parsed, the pair's predicate
        "Yes, ball on cake.",  # the relation, a held-in name written for the unseen one
        "Yes, ball under cake.",  # another relation, also under the held-in name
        "No, there is no prominent spatial relation between fox and cake.",
        "Yes, fox eating cake.",  # not the pair's own category
    ]
    table = names.classify(questions, answers, {"on": "spatial", "under": "spatial", "eating": "semantic"}, {"ball", "cake"})
    assert list(table["kind"]) == ["yes", "malformed", "malformed", "no", "yes"]
    assert list(table["outcome"]) == ["right", "relation right, names not written", "other", "no", "other"]
    assert list(table["own"]) == [True, True, True, True, False]
    assert list(table["swaps"]) == [[], ["fox -> ball"], ["fox -> ball"], [], []]
    assert list(table["misspellings"]) == [[], [], [], [], []]
    assert not table["stopped"].any()


def test_an_answer_ending_after_the_subject_name_is_counted_as_stopped(names):
    questions = pd.DataFrame(
        {
            "subj_label": ["fox", "fox", "traffic light", "fox"],
            "obj_label": ["kite", "kite", "box", "kite"],
            "category": ["spatial"] * 4,
            "truth": [{"on"}] * 4,
        }
    )
    answers = ["Yes, fox.", "Yes, kite.", "Yes, traffic light.", "Yes, fox on kite."]
    table = names.classify(questions, answers, {"on": "spatial"}, {"kite", "box"})
    assert list(table["kind"]) == ["malformed", "malformed", "malformed", "yes"]
    # the object's name alone is not the subject's; a parsed answer is never stopped
    assert list(table["stopped"]) == [True, False, True, False]


def test_a_name_started_and_run_on_is_misspelt_and_counted_per_class(names):
    assert names.misspelt_name("gemmon on cake".split(), "gem", from_start=True) == "gemmon"
    assert names.misspelt_name("robot holding gem gemas".split(), "gem", from_start=False) == "gemas"
    assert names.misspelt_name("gem on cake".split(), "gem", from_start=True) is None  # written as asked
    assert names.misspelt_name("ball on cake".split(), "gem", from_start=True) is None  # another name, a swap
    assert names.misspelt_name("trafficx on box".split(), "traffic light", from_start=True) == "trafficx"
    questions = pd.DataFrame(
        {
            "subj_label": ["gem", "gem", "fox", "robot"],
            "obj_label": ["cake", "cake", "cake", "gem"],
            "category": ["spatial"] * 4,
            "truth": [{"on"}, {"on"}, {"near"}, {"holding"}],
        }
    )
    answers = ["Yes, gemmon on cake.", "Yes, gem on cake.", "Yes, fox near cake.", "Yes, robot holding gem gemas."]
    table = names.classify(questions, answers, {"on": "spatial", "near": "spatial", "holding": "semantic"}, {"robot", "cake"})
    assert list(table["kind"]) == ["malformed", "yes", "yes", "malformed"]
    assert list(table["misspellings"]) == [["gem -> gemmon"], [], [], ["gem -> gemas"]]
    # gem is named by all 4 questions but the fox one: 2 of 3 malformed; cake 1 of 3; robot 1 of 1; fox 0 of 1
    assert names.malformed_by_class(questions, table) == {"robot": "1.000 of 1", "gem": "0.667 of 3", "cake": "0.333 of 3", "fox": "0.000 of 1"}


def test_the_copy_probe_asks_in_the_phrase_form_the_backbone_was_trained_on(names, tmp_path):
    for dataset, objects, predicates in (("held-in", ["bear", "tennis racket"], ["on", "left of"]), ("held-out", ["fox"], ["hug"])):
        (tmp_path / "scenes" / dataset).mkdir(parents=True)
        (tmp_path / "scenes" / dataset / "vocab.json").write_text(json.dumps({"objects": objects, "predicates": predicates}))
    scenes = pd.DataFrame({"image_id": ["a", "b"], "image_path": ["a.png", "b.png"], "width": [64, 48], "height": [32, 64]})
    triplets = names.copy_probe_questions(scenes, tmp_path / "scenes", "triplet", 60)
    assert len(triplets) == 60 and all(prompt.startswith("Repeat the words") for prompt in triplets["prompt"])
    for target, subj, obj, phrase_names in zip(triplets["target"], triplets["subj_label"], triplets["obj_label"], triplets["phrase_names"]):
        middle = target[len(subj) + 1 : len(target) - len(obj) - 1]
        assert {subj, obj} <= {"bear", "tennis racket", "fox"} and middle in {"on", "left of", "hug"}
        assert target == f"{subj} {middle} {obj}" and phrase_names == {subj, obj, middle}
    assert set(triplets["target"].map(lambda target: "left of" in target)) == {True, False}  # multi-word predicates whole
    pairs = names.copy_probe_questions(scenes, tmp_path / "scenes", "pair", 60)
    assert all(target == f"{subj} {obj}" for target, subj, obj in zip(pairs["target"], pairs["subj_label"], pairs["obj_label"]))
    assert set(pairs["phrase_names"].map(len)) == {2}
    assert {"hug", "left of"} & (set(pairs["subj_label"]) | set(pairs["obj_label"]))  # pairs draw predicate names too
    # without the converse predicates: 'left of' is never asked, 'on' and 'hug' are
    directionless = names.copy_probe_questions(scenes, tmp_path / "scenes", "triplet-no-converse", 60, "left of:right of")
    middles = {frozenset(phrase_names & {"on", "hug", "left of"}) for phrase_names in directionless["phrase_names"]}
    assert middles == {frozenset({"on"}), frozenset({"hug"})}
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    assert names.trained_copy_settings(backbone) == ("pair", "")  # no metadata: the defaults
    settings = {"copy_phrase": "triplet-no-converse", "converse_predicates": "left of:right of"}
    (backbone / "reltune_backbone.json").write_text(json.dumps({"training": {"settings": settings}}))
    assert names.trained_copy_settings(backbone) == ("triplet-no-converse", "left of:right of")
    (backbone / "reltune_backbone.json").write_text(json.dumps({"training": {"settings": {"replay": 0.5}}}))
    assert names.trained_copy_settings(backbone) == ("pair", "")  # trained before train.copy_phrase existed
