"""Converse questions in relation tuning (`train.converse_predicates`, issue 16 part 3)."""

import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.models.converses import converse_pairs, with_converses


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
