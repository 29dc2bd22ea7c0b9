"""Converse questions in relation tuning (`train.converse_predicates`, issue 16 part 3)."""

import numpy as np
import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.models.converses import converse_groups, converse_pairs, with_converses
from reltune.models.schedule import BatchPlan, TrainSettings


def test_converse_pairs_go_both_ways_and_refuse_malformed_specs():
    assert converse_pairs("above:below, left of : right of") == {
        "above": "below", "below": "above", "left of": "right of", "right of": "left of"
    }  # fmt: skip
    assert converse_pairs("") == {}
    for spec, problem in [("above", "not two different"), ("above:above", "not two different"), ("a:b:c", "not two different"),
                          ("above:below,below:on", "named twice"), (":below", "not two different")]:  # fmt: skip
        with pytest.raises(InputError, match=f"^--converse-predicates: .*{problem}"):
            converse_pairs(spec)


def _question(category: str, subject: str, object_: str) -> str:
    return f"Is there a prominent {category} relation between {subject} (subject) and {object_} (object) in the image?"


def _row(qid, kind, image, subj, obj, labels, category, predicate=None, positive=None):
    subject, object_ = labels[subj], labels[obj]
    target = f"Yes, {subject} {predicate} {object_}." if kind == "positive" else (
        f"No, there is no prominent {category} relation between {subject} and {object_}.")  # fmt: skip
    return {"qid": qid, "image_id": image, "subj": subj, "obj": obj, "subj_label": subject, "obj_label": object_,
            "union_box": [0.0, 0.0, 10.0, 10.0], "category": category, "kind": kind, "predicate": predicate,
            "positive_qid": positive, "prompt": _question(category, subject, object_), "target": target}  # fmt: skip


LABELS = {0: "cup", 1: "plate", 2: "dog", 3: "hat"}


def _instructions() -> pd.DataFrame:
    rows = [
        _row("p1", "positive", "1", 0, 1, LABELS, "spatial", "above"),
        _row("n1", "negative", "1", 0, 1, LABELS, "possessive", positive="p1"),
        _row("p2", "positive", "1", 2, 3, LABELS, "spatial", "left of"),
        _row("n2", "negative", "1", 2, 3, LABELS, "semantic", positive="p2"),
        _row("p3", "positive", "2", 0, 1, LABELS, "semantic", "on"),
        _row("n3", "negative", "2", 0, 1, LABELS, "spatial", positive="p3"),
        # image 3: the swapped pair (hat, dog) is asked already in the spatial category: no converse of p4
        _row("p4", "positive", "3", 2, 3, LABELS, "spatial", "below"),
        _row("n4", "negative", "3", 2, 3, LABELS, "possessive", positive="p4"),
        _row("p5", "positive", "3", 3, 2, LABELS, "spatial", "near"),
        # image 4: the positive has a converse, its negative's swapped question (possessive) is a positive already
        _row("p6", "positive", "4", 0, 1, LABELS, "spatial", "right of"),
        _row("n6", "negative", "4", 0, 1, LABELS, "possessive", positive="p6"),
        _row("p7", "positive", "4", 1, 0, LABELS, "possessive", "has"),
    ]
    return pd.DataFrame(rows)


def _examples(instructions: pd.DataFrame, qids: list[str]) -> pd.DataFrame:
    chosen = instructions.set_index("qid").loc[qids].reset_index()
    return chosen[["qid", "kind", "image_id", "union_box", "prompt", "target", "subj_label", "obj_label"]].assign(
        image_path=lambda frame: "images/" + frame["image_id"] + ".jpg"
    )


def test_each_direction_question_and_its_negative_get_the_swapped_question_with_the_converse_answer():
    instructions = _instructions()
    # p1 twice (a repeated question): each copy gets its converse
    examples = _examples(instructions, ["p1", "p1", "n1", "p2", "n2", "p3", "n3", "p4", "n4", "p5", "p6", "n6", "p7"])
    result, skipped = with_converses(examples, instructions, "above:below,left of:right of")
    assert skipped == 1  # p4: (hat, dog) spatial is p5
    assert result.iloc[: len(examples)].equals(examples)
    added = result.iloc[len(examples) :]
    assert added["qid"].tolist() == ["p1-converse", "p1-converse", "n1-converse", "p2-converse", "n2-converse", "p6-converse"]
    by_qid = added.drop_duplicates("qid").set_index("qid")
    assert by_qid.loc["p1-converse", "prompt"] == _question("spatial", "plate", "cup")
    assert by_qid.loc["p1-converse", "target"] == "Yes, plate below cup."
    assert by_qid.loc["n1-converse", "prompt"] == _question("possessive", "plate", "cup")
    assert by_qid.loc["n1-converse", "target"] == "No, there is no prominent possessive relation between plate and cup."
    assert by_qid.loc["p2-converse", "target"] == "Yes, hat right of dog."
    assert by_qid.loc["p6-converse", "target"] == "Yes, plate left of cup."  # its negative n6 has none (p7 asks it)
    assert (by_qid[["subj_label", "obj_label"]].values.tolist()[0]) == ["plate", "cup"]
    assert by_qid.loc["n2-converse", "kind"] == "negative" and by_qid.loc["p2-converse", "kind"] == "positive"
    # the same crop: union box and image travel unchanged
    assert (added["image_path"].tolist()) == ["images/1.jpg"] * 5 + ["images/4.jpg"]
    assert all(box == [0.0, 0.0, 10.0, 10.0] for box in added["union_box"])
    unchanged, none_skipped = with_converses(examples, instructions, "")
    assert unchanged is examples and none_skipped == 0


def test_a_naive_question_gets_a_naive_converse_and_a_prompt_of_neither_template_is_refused():
    instructions = _instructions()
    naive = "Is there a relation between cup (subject) and plate (object) in the image?"
    instructions.loc[instructions["qid"] == "p1", "prompt"] = naive
    result, _ = with_converses(_examples(instructions, ["p1"]), instructions, "above:below")
    assert result["prompt"].tolist() == [naive, "Is there a relation between plate (subject) and cup (object) in the image?"]
    assert result["target"].tolist()[1] == "Yes, plate below cup."
    # a category question about another pair than its row's (a hand-edited file): which template to swap is unknown
    instructions.loc[instructions["qid"] == "p1", "prompt"] = _question("spatial", "cup", "dog")
    with pytest.raises(InputError, match=r"^train.parquet \[qid p1\]: the prompt is neither the category nor the naive"):
        with_converses(_examples(instructions, ["p1"]), instructions, "above:below", source="train.parquet")


def test_a_converse_predicate_that_no_positive_has_is_refused():
    instructions = _instructions()
    with pytest.raises(InputError, match=r"^train.parquet: train.converse_predicates names \['bellow'\], which no training"):
        with_converses(_examples(instructions, ["p1"]), instructions, "above:bellow", source="train.parquet")


def test_the_train_command_refuses_a_malformed_converse_spec_before_any_work(tmp_path, capsys):
    from reltune.cli import main

    argv = ["train", "--backbone", str(tmp_path / "none"), "--instructions", str(tmp_path / "none.parquet"),
            "--scenes", str(tmp_path), "--out", str(tmp_path / "out"), "--converse-predicates", "above:below,below:on"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "argument --converse-predicates: predicate 'below' is named twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_converse_groups_pair_each_converse_with_its_own_copy_of_the_source():
    instructions = _instructions()
    examples = _examples(instructions, ["p1", "p1", "n1", "p2", "n2", "p3", "n3", "p4", "n4", "p5", "p6", "n6", "p7"])
    result, _ = with_converses(examples, instructions, "above:below,left of:right of")
    qids = result["qid"].tolist()  # 13 examples, then p1-c, p1-c, n1-c, p2-c, n2-c, p6-c (rows 13-18)
    groups = converse_groups(qids, len(qids) + 2)  # two renamed copies after them: groups of their own
    partner = {row: [other for other in range(len(groups)) if groups[other] == groups[row] and other != row] for row in range(len(groups))}
    assert [partner[row] for row in range(13, 19)] == [[0], [1], [2], [3], [4], [10]]  # the k-th converse of p1 with its k-th copy
    assert all(partner[row] == [] for row in (5, 6, 7, 8, 9, 11, 12, 19, 20))
    with pytest.raises(ValueError, match="p9-converse has no source row"):
        converse_groups(["p1", "p9-converse"], 2)


def test_grouped_batches_keep_each_pair_together_and_shuffle_the_groups():
    # rows 0-5 and their converses 6-11, batches of 4: every pair shares a batch, every row comes once per epoch
    group_of = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]
    plan = BatchPlan.of(TrainSettings(epochs=3, batch_size=4, min_steps=0, seed=7), examples=12, processes=1, group_of=group_of)
    orders = [plan.epoch_order(epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(12))
        positions = {row: index for index, row in enumerate(order.tolist())}
        assert all(positions[row + 6] == positions[row] + 1 for row in range(6))  # source, then its converse
    assert len({tuple(order.tolist()) for order in orders}) == 3  # reshuffled per epoch
    for step in range(plan.steps_per_epoch):
        _, [rows] = plan.micro_batches(step, 0)
        assert all((row + 6 if row < 6 else row - 6) in rows for row in rows)
    # without groups the order is the plain permutation it always was (earlier runs stay reproducible)
    plain = BatchPlan.of(TrainSettings(epochs=3, batch_size=4, min_steps=0, seed=7), examples=12, processes=1)
    assert plain.epoch_order(1).tolist() == np.random.default_rng([7, 1]).permutation(12).tolist()
    with pytest.raises(ValueError, match="group_of has 3 entries for 12 example rows"):
        BatchPlan.of(TrainSettings(), examples=12, processes=1, group_of=[0, 1, 2])
    with pytest.raises(ValueError, match="ids outside the 12 row numbers"):
        BatchPlan.of(TrainSettings(), examples=12, processes=1, group_of=[12] * 12)
