"""Pool scoring with an injected answer source: pool membership, outcomes, similarity, validation recall."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.inference.scoring import (
    SCORE_COLUMNS,
    classify_answers,
    outcome_counts,
    pool_questions,
    score_questions,
    validation_recall,
)


def instruction_table() -> pd.DataFrame:
    rows = [
        # qid, subj_label, obj_label, kind, predicate
        ("q1", "man", "horse", "positive", "riding"),
        ("q2", "man", "horse", "negative", None),
        ("q3", "traffic light", "street sign", "positive", "on top of"),
        ("q4", "man", "hat", "positive", "wearing"),
        ("q5", "man", "hat", "positive", "has"),
        ("q6", "dog", "sofa", "positive", "on"),
        ("q7", "cat", "sofa", "positive", "on"),
        ("q8", "man", "horse", "positive", "riding"),
    ]
    return pd.DataFrame(
        {
            "qid": [row[0] for row in rows],
            "image_id": ["i1"] * len(rows),
            "subj_label": [row[1] for row in rows],
            "obj_label": [row[2] for row in rows],
            "union_box": [[0.0, 0.0, 10.0, 10.0]] * len(rows),
            "kind": [row[3] for row in rows],
            "predicate": [row[4] for row in rows],
            "prompt": ["question"] * len(rows),
        }
    )


ANSWERS = {
    "q3": ("Yes, traffic light on top of street sign.", -0.5, 0.7),  # TP, multi-word labels
    "q4": ("Yes, man has hat.", -1.0, 0.4),  # FP, similar predicate
    "q5": ("No, there is no prominent possessive relation between man and hat.", -2.0, 0.9),  # FN
    "q6": ("Yes, sofa on dog.", -3.0, 1.1),  # malformed -> FP
    "q7": ("Yes, cat under sofa", -0.25, 0.2),  # FP
    "q8": ("Yes, man has horse.", -4.0, 0.3),  # FP
}


def injected_source(calls: list[list[str]]):
    def answer(questions: pd.DataFrame) -> pd.DataFrame:
        calls.append(list(questions["qid"]))
        return pd.DataFrame(
            {
                "answer": [ANSWERS[qid][0] for qid in questions["qid"]],
                "sequence_score": [ANSWERS[qid][1] for qid in questions["qid"]],
                "entropy": [ANSWERS[qid][2] for qid in questions["qid"]],
            }
        )

    return answer


def recording_similarity(calls: list[list[tuple[str, str, str, str]]]):
    """Similarity = a deterministic function of the four strings, recording what was asked."""

    def similarity(subjects, predicted, ground_truth, objects) -> np.ndarray:
        asked = list(zip(subjects, predicted, ground_truth, objects))
        calls.append(asked)
        return np.array([len(p) / 100.0 + len(g) / 1000.0 for _, p, g, _ in asked])

    return similarity


def test_pool_is_unselected_training_positives() -> None:
    pool = pool_questions(instruction_table(), pd.DataFrame({"qid": ["q1"]}), "train.parquet", "selection.parquet")
    assert list(pool["qid"]) == ["q3", "q4", "q5", "q6", "q7", "q8"]


def test_selection_must_name_training_positives() -> None:
    with pytest.raises(InputError, match=r"selection.parquet \[row 1\]: qid 'q2' is not a positive"):
        pool_questions(instruction_table(), pd.DataFrame({"qid": ["q1", "q2"]}), "train.parquet", "selection.parquet")


def test_outcomes_similarity_and_columns() -> None:
    source_calls: list[list[str]] = []
    similarity_calls: list = []
    pool = pool_questions(instruction_table(), pd.DataFrame({"qid": ["q1"]}), "train.parquet", "selection.parquet")
    scores = score_questions(pool, injected_source(source_calls), recording_similarity(similarity_calls))
    assert tuple(scores.columns) == SCORE_COLUMNS
    assert source_calls == [["q3", "q4", "q5", "q6", "q7", "q8"]]
    by_qid = scores.set_index("qid")
    assert list(by_qid["outcome"]) == ["TP", "FP", "FN", "FP", "FP", "FP"]
    assert list(by_qid["answer_kind"]) == ["yes", "yes", "no", "malformed", "yes", "yes"]
    assert by_qid.loc["q3", "predicted_predicate"] == "on top of"
    assert pd.isna(by_qid.loc["q5", "predicted_predicate"]) and pd.isna(by_qid.loc["q6", "predicted_predicate"])
    assert by_qid.loc["q7", "predicted_predicate"] == "under"
    assert list(by_qid["entropy"]) == [0.7, 0.4, 0.9, 1.1, 0.2, 0.3]
    assert list(by_qid["sequence_score"]) == [-0.5, -1.0, -2.0, -3.0, -0.25, -4.0]
    assert list(by_qid["predicate"]) == ["on top of", "wearing", "has", "on", "on", "riding"]
    # similarity only for FP rows; a malformed answer's remainder stands in for its predicate
    asked = similarity_calls[0]
    assert len(similarity_calls) == 1
    assert asked == [
        ("man", "has", "wearing", "hat"),
        ("dog", "sofa on dog", "on", "sofa"),
        ("cat", "under", "on", "sofa"),
        ("man", "has", "riding", "horse"),
    ]
    assert by_qid.loc["q4", "similarity"] == pytest.approx(3 / 100 + 7 / 1000)
    assert by_qid.loc["q6", "similarity"] == pytest.approx(11 / 100 + 2 / 1000)
    assert math.isnan(by_qid.loc["q3", "similarity"]) and math.isnan(by_qid.loc["q5", "similarity"])
    assert outcome_counts(scores) == {"TP": 1, "FP": 4, "FN": 1, "malformed": 1}


def test_classified_answers_carry_their_labels_and_malformed_form() -> None:
    questions = instruction_table().iloc[2:7].reset_index(drop=True)  # q3-q7
    classified = classify_answers(questions, injected_source([])(questions))
    assert list(classified["subj_label"]) == ["traffic light", "man", "man", "dog", "cat"]
    assert list(classified["obj_label"]) == ["street sign", "hat", "hat", "sofa", "sofa"]
    # q6 "Yes, sofa on dog." about a dog on a sofa opens with the wrong name
    assert list(classified["malformed_form"].fillna("-")) == ["-", "-", "-", "subject not written", "-"]


def test_similarity_is_computed_once_per_distinct_pair() -> None:
    table = instruction_table()
    pool = table[table["qid"].isin(["q4", "q7"])]
    pool = pd.concat([pool, pool.assign(qid=["q4b", "q7b"])], ignore_index=True)
    answers = {**ANSWERS, "q4b": ANSWERS["q4"], "q7b": ANSWERS["q7"]}

    def source(questions: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "answer": [answers[qid][0] for qid in questions["qid"]],
                "sequence_score": [answers[qid][1] for qid in questions["qid"]],
                "entropy": [answers[qid][2] for qid in questions["qid"]],
            }
        )

    calls: list = []
    scores = score_questions(pool, source, recording_similarity(calls))
    assert len(calls[0]) == 2  # four FP rows, two distinct (s, predicted, gt, o)
    assert list(scores["similarity"]) == pytest.approx([0.037, 0.052, 0.037, 0.052])


def test_similarity_with_minilm_matches_the_shared_embedder() -> None:
    from reltune.embedding import shared_embedder

    pool = instruction_table().iloc[[3, 6]]  # q4 (has vs wearing), q7 (under vs on)
    scores = score_questions(pool, injected_source([]), shared_embedder().relation_similarity)
    direct = shared_embedder().cosine(["man has hat", "cat under sofa"], ["man wearing hat", "cat on sofa"])
    np.testing.assert_allclose(scores["similarity"], direct, rtol=1e-6)
    assert 0.0 < scores["similarity"].min() < 1.0


def test_validation_recall_per_predicate() -> None:
    table = instruction_table()
    questions = table[table["qid"].isin(["q3", "q4", "q5", "q6", "q7"])]
    answers = {
        "q3": ("Yes, traffic light on top of street sign.", 0.0, 0.1),  # on top of: hit
        "q4": ("Yes, man wearing hat.", 0.0, 0.1),  # wearing: hit
        "q5": ("Yes, man wearing hat.", 0.0, 0.1),  # has: miss
        "q6": ("Yes, dog on sofa.", 0.0, 0.1),  # on: hit
        "q7": ("No.", 0.0, 0.1),  # on: miss
    }

    def source(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "answer": [answers[q][0] for q in frame["qid"]],
                "sequence_score": [answers[q][1] for q in frame["qid"]],
                "entropy": [answers[q][2] for q in frame["qid"]],
            }
        )

    summary, classified = validation_recall(questions, source)
    assert summary["per_predicate"] == {"has": 0.0, "on": 0.5, "on top of": 1.0, "wearing": 1.0}
    assert summary["mean_recall"] == pytest.approx((0.0 + 0.5 + 1.0 + 1.0) / 4)
    assert summary["recall"] == pytest.approx(3 / 5)
    assert list(classified["outcome"]) == ["TP", "TP", "FP", "TP", "FN"]


def test_score_command_rejects_bad_inputs_before_loading_a_model(tmp_path, capsys) -> None:
    from test_models_answers_helpers import write_tiny_instructions, write_tiny_scenes

    from reltune.cli import main

    scene_dir = write_tiny_scenes(tmp_path)
    instruction_dir = write_tiny_instructions(scene_dir, tmp_path / "instructions")
    pd.DataFrame({"qid": ["not-a-qid"]}).to_parquet(tmp_path / "selection.parquet", index=False)
    arguments = [
        "score", "--backbone", str(tmp_path / "no-backbone"), "--instructions", str(instruction_dir / "train.parquet"),
        "--scenes", str(scene_dir), "--selection", str(tmp_path / "selection.parquet"),
        "--val-instructions", str(instruction_dir / "val.parquet"), "--out", str(tmp_path / "out"),
    ]
    assert main(arguments) == 2
    assert "selection.parquet [row 0]: qid 'not-a-qid' is not a positive of" in capsys.readouterr().err
    # a validation question whose image is not in the val scenes
    val = pd.read_parquet(instruction_dir / "val.parquet")
    val.loc[0, "image_id"] = "missing-image"
    val.drop(columns=["subj_box", "obj_box", "union_box"]).assign(union_box=[[0.0, 0.0, 5.0, 5.0]] * len(val)).to_parquet(
        tmp_path / "val_bad.parquet", index=False
    )
    pd.DataFrame({"qid": []}, dtype=str).to_parquet(tmp_path / "selection.parquet", index=False)
    arguments[arguments.index("--val-instructions") + 1] = str(tmp_path / "val_bad.parquet")
    assert main(arguments) == 2
    assert "val_bad.parquet [row 0]: image 'missing-image' of qid" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_defaults_come_from_the_settings_dataclasses() -> None:
    from dataclasses import asdict

    from reltune.cli import build_parser
    from reltune.inference.commands import PoolOptions, RunnerOptions
    from reltune.inference.generation import GenerationSettings

    required = ["--backbone", "b", "--instructions", "i", "--scenes", "s", "--selection", "x", "--val-instructions", "v"]
    args = build_parser("score").parse_args(["score", *required, "--out", "o"])
    defaults = {**asdict(GenerationSettings()), **asdict(RunnerOptions()), **asdict(PoolOptions())}
    assert {name: getattr(args, name) for name in defaults} == defaults
    assert GenerationSettings().repetition_penalty == 1.0  # neutral: decoding unchanged unless asked
    predict = build_parser("predict").parse_args(["predict", "--backbone", "b", "--scenes", "s", "--out", "o"])
    assert predict.answers_per_question == 1  # DESIGN §7: the top beam only
    assert build_parser("predict").parse_args(
        ["predict", "--backbone", "b", "--scenes", "s", "--out", "o", "--answers-per-question", "all"]
    ).answers_per_question is None


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--batch-size", "0", "must be at least 1, got 0"),
        ("--num-beams", "-1", "must be at least 1, got -1"),
        ("--length-penalty", "nan", "expected a finite number"),
        ("--repetition-penalty", "0", "must be in (0.0, inf)"),
        ("--shard-size", "x", "expected an integer"),
        ("--pool-cap-factor", "0.5", "must be 0 (score everything) or >= 1"),
        ("--budget-fraction", "1.5", "must be in [0.0, 1.0]"),
    ],
)
def test_score_flags_are_checked_at_the_command_line(flag: str, value: str, reason: str, capsys) -> None:
    from reltune.cli import main

    required = ["--backbone", "b", "--instructions", "i", "--scenes", "s", "--selection", "x", "--val-instructions", "v"]
    with pytest.raises(SystemExit) as exited:
        main(["score", *required, "--out", "o", flag, value])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"argument {flag}: {reason}" in error


def test_question_index_checks_name_the_file_row(tmp_path) -> None:
    from reltune.inference.scoring import check_index_images, checked_positives, pool_of, read_question_index

    table = pd.DataFrame(
        {
            "qid": ["a", "b", "c", "d"],
            "image_id": ["i1", "i1", "i2", "i3"],
            "kind": ["negative", "positive", "positive", "positive"],
            "predicate": [None, "on", "has", None],
        }
    )
    table.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(InputError, match=r"t.parquet \[row 3\]: positive 'd' has no predicate"):
        checked_positives(read_question_index(str(tmp_path / "t.parquet")), "t.parquet")
    table.loc[3, "predicate"] = "near"
    table.loc[2, "qid"] = "b"
    table.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(InputError, match=r"t.parquet \[row \d\]: duplicate qid 'b'"):
        checked_positives(read_question_index(str(tmp_path / "t.parquet")), "t.parquet")
    table.loc[2, "qid"] = "c"
    table.to_parquet(tmp_path / "t.parquet", index=False)
    import pyarrow as pa

    positives = checked_positives(read_question_index(str(tmp_path / "t.parquet")), "t.parquet")
    assert positives["qid"].to_pylist() == ["b", "c", "d"] and positives["row"].to_pylist() == [1, 2, 3]
    pool = pool_of(positives, pa.chunked_array([pa.array(["c"])]), "t.parquet", "s.parquet")
    assert pool["qid"].to_pylist() == ["b", "d"]
    with pytest.raises(InputError, match=r"s.parquet \[row 1\]: qid 'a' is not a positive of t.parquet"):
        pool_of(positives, pa.chunked_array([pa.array(["c", "a"])]), "t.parquet", "s.parquet")
    with pytest.raises(InputError, match=r"t.parquet \[row 3\]: image 'i3' of qid 'd' is not in the scenes"):
        check_index_images(pool, {"i1", "i2"}, "t.parquet")
