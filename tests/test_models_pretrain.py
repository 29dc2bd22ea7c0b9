"""Generic pretraining questions: content, held-out split, accuracy, end-to-end stage."""

import json
import os
import random
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from reltune.errors import InputError
from reltune.models.pretrain import (
    QuestionSettings,
    class_attributes,
    contact_answer,
    generic_questions,
    image_questions,
    pair_sides,
    pretrain_tiny,
    question_accuracy,
    world_cues,
    world_vocabulary,
)
from toy_scenes import make_toy_scenes, toy_world_spec
from reltune.models.checkpoints import checkpoint_dir_for
from reltune.models.training import TrainSettings

ATTRIBUTES = {"apple": {"colour": "red", "shape": "circle"}, "box": {"colour": "blue", "shape": "square"}}


def test_pair_sides_use_the_dominant_axis():
    assert pair_sides([0, 0, 10, 10], [20, 2, 30, 12]) == ("left", "right")
    assert pair_sides([20, 2, 30, 12], [0, 0, 10, 10]) == ("right", "left")
    assert pair_sides([0, 0, 10, 10], [3, 30, 13, 40]) == ("top", "bottom")
    assert pair_sides([3, 30, 13, 40], [0, 0, 10, 10]) == ("bottom", "top")


def test_image_questions_answer_from_boxes_labels_and_attributes():
    settings = QuestionSettings(objects_per_image=2, pairs_per_image=1)
    rows = image_questions(
        "img1", "img1.png", 40, 20, [[0, 0, 10, 10], [20, 2, 30, 12]], ["apple", "box"], ATTRIBUTES, settings, random.Random(0)
    )
    table = pd.DataFrame(rows)
    assert len(table) == 2 * 4 + 3 + 1
    by_prompt = {(prompt, tuple(box)): target for prompt, box, target in zip(table["prompt"], table["union_box"], table["target"])}
    # Single objects: the crop is the box grown by 10% per side, clipped to the image.
    assert by_prompt[("What object is this?", (0.0, 0.0, 11.0, 11.0))] == "apple"
    assert by_prompt[("What colour is this object?", (19.0, 1.0, 31.0, 13.0))] == "blue"
    assert by_prompt[("What shape is this object?", (0.0, 0.0, 11.0, 11.0))] == "circle"
    union = (0.0, 0.0, 30.0, 12.0)
    where = table[table["kind"] == "where"].iloc[0]
    assert tuple(where["union_box"]) == union
    assert where["target"] == {"Where is the apple in the image?": "left", "Where is the box in the image?": "right"}[where["prompt"]]
    which = table[table["kind"] == "which_side"].iloc[0]
    assert which["target"] == {"Which object is on the left?": "apple", "Which object is on the right?": "box"}[which["prompt"]]
    side_colour = table[table["kind"] == "side_colour"].iloc[0]
    assert side_colour["target"] == {"What colour is the object on the left?": "red", "What colour is the object on the right?": "blue"}[side_colour["prompt"]]
    count = table[table["kind"] == "count"].iloc[0]
    assert (count["prompt"], count["target"], tuple(count["union_box"])) == ("How many objects are there?", "two", (0.0, 0.0, 40.0, 20.0))
    for _, row in table[table["kind"] == "yes_no"].iterrows():
        asked = row["prompt"].removeprefix("Is there a ").removesuffix(" in the image?")
        own = "apple" if row["union_box"][0] == 0.0 else "box"
        assert row["target"] == (f"Yes, there is a {own}." if asked == own else f"No, there is no {asked}.")


def test_relative_where_names_both_objects_and_leaves_the_other_questions_alone():
    boxes, labels = [[0, 0, 10, 10], [3, 30, 13, 40]], ["apple", "box"]  # apple on top of box

    def questions(relative_where: bool) -> pd.DataFrame:
        settings = QuestionSettings(objects_per_image=2, pairs_per_image=1, relative_where=relative_where)
        return pd.DataFrame(image_questions("img1", "img1.png", 20, 40, boxes, labels, ATTRIBUTES, settings, random.Random(3)))

    without, with_relative = questions(False), questions(True)
    relative = with_relative[with_relative["kind"] == "relative_where"]
    assert len(relative) == 1 and tuple(relative.iloc[0]["union_box"]) == (0.0, 0.0, 13.0, 40.0)
    expected = {"Where is the apple relative to the box?": "top", "Where is the box relative to the apple?": "bottom"}
    assert relative.iloc[0]["target"] == expected[relative.iloc[0]["prompt"]]
    # the switch draws nothing from the image's rng: every other question is the same
    rest = with_relative[with_relative["kind"] != "relative_where"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, without)


def test_generic_questions_without_cues_never_read_relations_and_hold_out_whole_images(tmp_path):
    from reltune.data.scenes import read_scenes

    scenes, _ = read_scenes(make_toy_scenes(tmp_path / "s", images=20, seed=3, image_size=48), "train")
    attributes = class_attributes(toy_world_spec(), "spec")
    settings = QuestionSettings(holdout_fraction=0.3, seed=5, cue_questions=False)
    cues = world_cues(toy_world_spec(), "spec")
    questions = generic_questions(scenes, attributes, settings, cues=cues)
    without_relations = generic_questions(scenes.assign(relations=[[] for _ in range(len(scenes))]), attributes, settings, cues=cues)
    pd.testing.assert_frame_equal(questions, without_relations)
    assert not questions["kind"].isin(["cue", "contact"]).any()
    assert (questions.groupby("image_id")["split"].nunique() == 1).all()
    heldout_images = questions.loc[questions["split"] == "heldout", "image_id"].nunique()
    assert 0 < heldout_images < 20
    with pytest.raises(InputError, match="missing from the world spec: \\['box'\\]"):
        generic_questions(scenes, {k: v for k, v in attributes.items() if k != "box"}, settings)


CUES = {"holding": ("triangle", "black"), "on": (None, None)}


def test_cue_questions_describe_the_drawing_and_never_name_the_predicate():
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [10, 0, 20, 10], [5, 5, 15, 15]]
    labels = ["bear", "ball", "box", "kite"]
    relations = [{"subj": 0, "obj": 1, "predicate": "holding"}, {"subj": 0, "obj": 2, "predicate": "on"},
                 {"subj": 3, "obj": 0, "predicate": "on"}]
    attributes = {**ATTRIBUTES, **{name: {"colour": "red", "shape": "circle"} for name in labels}}
    rows = pd.DataFrame(image_questions("i", "i.png", 40, 20, boxes, labels, attributes, QuestionSettings(), random.Random(1),
                                        relations=relations, cues=CUES))
    cue, contact = rows[rows["kind"] == "cue"], rows[rows["kind"] == "contact"]
    assert len(cue) == len(contact) == 3
    by_pair = {frozenset(w for w in labels if f"the {w}" in prompt): target for prompt, target in zip(cue["prompt"], cue["target"])}
    assert by_pair == {frozenset({"bear", "ball"}): "a black triangle", frozenset({"bear", "box"}): "no link",
                       frozenset({"kite", "bear"}): "no link"}
    contact_by_pair = {frozenset(w for w in labels if f"the {w}" in p): t for p, t in zip(contact["prompt"], contact["target"])}
    assert contact_by_pair == {frozenset({"bear", "ball"}): "apart", frozenset({"bear", "box"}): "touch",
                               frozenset({"kite", "bear"}): "overlap"}
    assert tuple(cue[cue["target"] == "a black triangle"].iloc[0]["union_box"]) == (0.0, 0.0, 30.0, 10.0)
    assert not any("holding" in text for text in list(rows["prompt"]) + list(rows["target"]))
    assert set(rows.loc[rows["kind"].isin(["cue", "contact"]), "target"]) == {"a black triangle", "no link", "apart", "touch", "overlap"}
    with pytest.raises(InputError, match="'riding' of a scene relation"):
        image_questions("i", "i.png", 40, 20, boxes, labels, attributes, QuestionSettings(), random.Random(1),
                        relations=[{"subj": 0, "obj": 1, "predicate": "riding"}], cues=CUES)


def test_contact_answer_tolerates_a_pixel():
    assert contact_answer([0, 0, 10, 10], [11.4, 0, 20, 10]) == "touch"
    assert contact_answer([0, 0, 10, 10], [11.6, 0, 20, 10]) == "apart"
    assert contact_answer([0, 0, 10, 10], [8.6, 0, 20, 10]) == "touch"
    assert contact_answer([0, 0, 10, 10], [8.4, 0, 20, 10]) == "overlap"


def test_world_spec_reading():
    spec = {"classes": [{"name": "fox", "colour": "orange", "shape": "pentagon"}], "predicates": {"ood": [{"name": "Looking_at"}]}}
    assert class_attributes(spec, "w.json") == {"fox": {"colour": "orange", "shape": "pentagon"}}
    assert world_vocabulary(spec) == ["fox", "looking at", "orange", "pentagon"]
    assert world_cues({"predicates": {"a": [{"name": "Looking_at", "glyph": "dot", "glyph_colour": "white"}]}}, "w") == {
        "looking at": ("dot", "white")}
    with pytest.raises(InputError, match="w.json \\[predicates.a\\[0\\]\\]"):
        world_cues({"predicates": {"a": [{"glyph": "dot"}]}}, "w.json")
    with pytest.raises(InputError, match="w.json \\[predicates.a\\]: must be a list"):
        world_cues({"predicates": {"a": {"name": "on"}}}, "w.json")
    with pytest.raises(InputError, match="w.json \\[classes\\[0\\]\\]"):
        class_attributes({"classes": [{"name": "fox"}]}, "w.json")


def test_question_accuracy_and_text_only_baseline():
    train = pd.DataFrame({"prompt": ["Q1", "Q1", "Q1", "Q2"], "target": ["red", "red", "blue", "two"]})
    heldout = pd.DataFrame({"prompt": ["Q1", "Q1", "Q2", "Q3"], "target": ["Red.", "blue", "three", "x"], "kind": ["a", "a", "b", "b"]})
    result = question_accuracy(heldout, ["red", "red", "three", "y"], train)
    assert result["accuracy"] == pytest.approx(2 / 4)
    assert result["text_only_baseline"] == pytest.approx(1 / 4)  # Q1 -> red (right once), Q2 -> two, Q3 unseen
    assert result["per_kind"]["a"] == {"accuracy": 0.5, "text_only_baseline": 0.5, "questions": 2}
    assert result["per_kind"]["b"] == {"accuracy": 0.5, "text_only_baseline": 0.0, "questions": 2}


SIZES = dict(vocab_size=350, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One uninterrupted pretraining run (3 steps) in this process: (root, metrics)."""
    tmp_path = tmp_path_factory.mktemp("pretrain")
    scenes_dir = make_toy_scenes(tmp_path / "scenes", images=12, seed=1, image_size=48)
    (tmp_path / "world_spec.json").write_text(json.dumps(toy_world_spec()))
    metrics = pretrain_tiny(
        scenes_dir, tmp_path / "world_spec.json", None, tmp_path / "pretrained", tmp_path / "metrics" / "pretrain.json",
        # schedule as `pretrain-tiny`'s default (PRETRAIN_DEFAULTS), which the resume test runs
        TrainSettings(epochs=50, max_steps=3, batch_size=8, warmup_steps=1, checkpoint_every=0, seed=0, schedule="warmup-cosine",
                      name_substitution=0.0),
        QuestionSettings(holdout_fraction=0.25, eval_questions=6, seed=1), sizes=SIZES,
    )  # fmt: skip
    return tmp_path, metrics


def test_pretrain_stage_writes_backbone_and_metrics(pretrained):
    tmp_path, metrics = pretrained
    written = json.loads((tmp_path / "metrics" / "pretrain.json").read_text())
    assert written == metrics and written["questions"] == 6 and written["steps"] == 3
    assert 0.0 <= written["accuracy"] <= 1.0 and set(written["per_kind"]) <= {
        "object", "colour", "shape", "yes_no", "which_side", "where", "side_colour", "count", "cue", "contact", "copy"}  # fmt: skip
    backbone_file = json.loads((tmp_path / "pretrained" / "reltune_backbone.json").read_text())
    assert backbone_file["trainable"] == ["all"] and backbone_file["preset"] == "tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics", "pretrained", "scenes", "world_spec.json"]


def test_pretrain_resumes_in_a_fresh_process_with_identical_weights(pretrained, tmp_path):
    """Killed after step 2 (checkpoint at 2), rerun as a new process: the same model as the uninterrupted run."""
    reference_root, reference_metrics = pretrained
    out = tmp_path / "pretrained"
    command = [
        sys.executable, "-m", "reltune.cli", "pretrain-tiny", "--scenes", str(reference_root / "scenes"),
        "--world", str(reference_root / "world_spec.json"), "--out", str(out), "--metrics", str(tmp_path / "m.json"),
        "--epochs", "50", "--max-steps", "3", "--batch-size", "8", "--warmup-steps", "1", "--checkpoint-every", "2",
        "--seed", "0", "--holdout-fraction", "0.25", "--eval-questions", "6", "--question-seed", "1",
        "--cpu-threads", "1",  # as the in-process reference: another thread count sums in another order
        *[f"--{name.replace('_', '-')}={value}" for name, value in SIZES.items()],
    ]  # fmt: skip
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1"}
    crashed = subprocess.run([*command, "--stop-after-steps", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert not out.exists() and json.loads((checkpoint_dir_for(out) / "checkpoint.json").read_text())["step"] == 2
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint step 2 of 3" in resumed.stderr
    expected = load_file(str(reference_root / "pretrained" / "model.safetensors"))
    actual = load_file(str(out / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert (out / "tokenizer.json").read_text() == (reference_root / "pretrained" / "tokenizer.json").read_text()
    assert json.loads((tmp_path / "m.json").read_text())["final_loss"] == reference_metrics["final_loss"]
    assert not checkpoint_dir_for(out).exists() and not (tmp_path / "pretrained.init").exists()


def test_pretrain_tiny_takes_relative_where_off_by_default():
    from reltune.cli import build_parser
    from reltune.models.commands import _question_settings

    required = ["pretrain-tiny", "--scenes", "s", "--world", "w.json", "--out", "o", "--metrics", "m.json"]
    assert _question_settings(build_parser().parse_args([*required, "--relative-where", "true"])).relative_where is True
    assert _question_settings(build_parser().parse_args(required)).relative_where is False


@pytest.mark.parametrize("setting", [{"name_substitution": 0.25}, {"replay": 0.2}, {"copy_replay": 0.2}, {"repeat_threshold": 0.1},
                                     {"converse_predicates": "above:below"}, {"converse_batches": True}])
def test_pretraining_refuses_relation_tuning_settings_before_reading(setting, tmp_path):
    settings = TrainSettings(**{"name_substitution": 0.0, **setting})
    flag = "--" + next(iter(setting)).replace("_", "-")
    with pytest.raises(InputError, match=f"^{flag}: applies to relation tuning"):
        pretrain_tiny(tmp_path / "no-scenes", tmp_path / "no-world.json", None, tmp_path / "out", tmp_path / "m.json",
                      settings, QuestionSettings())  # fmt: skip
    assert not (tmp_path / "out").exists()
