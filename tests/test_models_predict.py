"""Predictions: candidate pairs, questions, triplets from beams; end-to-end score + predict on a tiny model."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
from test_models_answers_helpers import (  # noqa: F401 (single_torch_thread: autouse fixture)
    answering_world,
    single_torch_thread,
)

from reltune.cli import main
from reltune.data.scenes import read_scenes
from reltune.inference.predict import (
    PREDICTION_COLUMNS,
    candidate_pairs,
    categories_to_ask,
    malformed_summary,
    pair_questions,
    predictions_from_beams,
)


def scene_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "boxes": [[[0, 0, 10, 10], [5, 2, 20, 8], [1, 1, 2, 2]], [[0, 0, 4, 4], [2, 2, 6, 6]]],
            "labels": [["man", "horse", "hat"], ["cat", "traffic light"]],
            "relations": [
                [{"subj": 0, "obj": 1, "predicate": "riding"}, {"subj": 0, "obj": 1, "predicate": "on"},
                 {"subj": 2, "obj": 0, "predicate": "on"}],
                [{"subj": 1, "obj": 0, "predicate": "near"}],
            ],
        }
    )


def test_annotated_pairs_are_distinct_with_union_boxes() -> None:
    pairs = candidate_pairs(scene_rows(), "annotated")
    assert list(zip(pairs["image_id"], pairs["subj"], pairs["obj"])) == [("a", 0, 1), ("a", 2, 0), ("b", 1, 0)]
    assert pairs["union_box"].tolist() == [[0, 0, 20, 10], [0, 0, 10, 10], [0, 0, 6, 6]]
    assert list(pairs["subj_label"]) == ["man", "hat", "traffic light"]
    assert list(pairs["obj_label"]) == ["horse", "man", "cat"]


def test_all_pairs_are_every_ordered_pair() -> None:
    pairs = candidate_pairs(scene_rows(), "all")
    assert list(zip(pairs["image_id"], pairs["subj"], pairs["obj"])) == [
        ("a", 0, 1), ("a", 0, 2), ("a", 1, 0), ("a", 1, 2), ("a", 2, 0), ("a", 2, 1), ("b", 0, 1), ("b", 1, 0),
    ]


def test_category_questions_use_the_design_template() -> None:
    pairs = candidate_pairs(scene_rows(), "annotated").iloc[:1]
    questions = pair_questions(pairs, ["spatial", "possessive", "semantic"])
    assert list(questions["prompt"]) == [
        f"Is there a prominent {category} relation between man (subject) and horse (object) in the image?"
        for category in ("spatial", "possessive", "semantic")
    ]
    assert categories_to_ask({"categories": {"on": "spatial", "riding": "semantic"}}, "vocab") == ["spatial", "semantic"]
    assert categories_to_ask({"categories": {"on": "spatial"}}, "all") == ["spatial", "possessive", "semantic"]


def test_triplets_from_yes_beams_keep_the_best_score() -> None:
    questions = pd.DataFrame(
        {
            "image_id": ["a", "a", "b"],
            "subj": [0, 0, 1],
            "obj": [1, 1, 0],
            "subj_label": ["man", "man", "traffic light"],
            "obj_label": ["horse", "horse", "cat"],
        }
    )
    beams = pd.DataFrame(
        {
            "question": [0, 0, 0, 1, 1, 1, 2, 2, 2],
            "beam": [0, 1, 2] * 3,
            "answer": [
                "Yes, man riding horse.",  # a: riding, log p -0.1
                "Yes, man on horse.",  # a: on, -1.0
                "No, there is no prominent spatial relation between man and horse.",
                "Yes, man riding horse.",  # a: riding again, better score -0.05 (second question)
                "Yes, horse riding man.",  # malformed
                "Yes, man on horse.",  # a: on, worse -3.0
                "Yes, traffic light near cat.",  # b: near -0.5
                "Yes, traffic light near cat",  # same triplet, worse
                "Yes, traffic light above cat.",  # b: above -2.0
            ],
            "sequence_score": [-0.1, -1.0, -0.2, -0.05, -0.3, -3.0, -0.5, -0.6, -2.0],
        }
    )
    predictions, kinds, malformed = predictions_from_beams(questions, beams)
    assert tuple(predictions.columns) == PREDICTION_COLUMNS
    assert kinds == {"yes": 7, "no": 1, "malformed": 1}
    assert malformed.to_dict("records") == [
        {"subj_label": "man", "obj_label": "horse", "malformed_form": "subject not written"}
    ]
    assert list(zip(predictions["image_id"], predictions["subj"], predictions["obj"], predictions["predicate"])) == [
        ("a", 0, 1, "riding"), ("a", 0, 1, "on"), ("b", 1, 0, "near"), ("b", 1, 0, "above"),
    ]
    np.testing.assert_allclose(predictions["score"], np.exp([-0.05, -1.0, -0.5, -2.0]))


def test_malformed_answers_are_summarised_by_form_and_subject() -> None:
    questions = pd.DataFrame(
        {"image_id": ["a", "a", "b"], "subj": [0, 1, 0], "obj": [1, 0, 1],
         "subj_label": ["fox", "kite", "traffic light"], "obj_label": ["kite", "fox", "cat"]}
    )  # fmt: skip
    answers = [
        ("Yes, fox.", 0), ("Yes, fox", 0), ("Yes, foxes on kite.", 0), ("Yes, fox kite.", 0),
        ("Yes, kite above.", 1), ("Yes, kite fox.", 1), ("Yes, fox on kite.", 0), ("Yes.", 2),
        ("Yes, traffic light.", 2), ("Yes, traffic.", 2), ("No, there is no prominent spatial relation between kite and fox.", 1),
    ]  # fmt: skip
    beams = pd.DataFrame(
        {"question": [question for _, question in answers], "beam": 0, "answer": [answer for answer, _ in answers],
         "sequence_score": -1.0}
    )  # fmt: skip
    # every beam counts: several answers per question here (answers_per_question None)
    _, kinds, malformed = predictions_from_beams(questions, beams)
    assert kinds == {"yes": 1, "no": 1, "malformed": 9}
    assert list(malformed["malformed_form"]) == [
        "stopped after subject", "stopped after subject", "subject not written", "no predicate",
        "object not written", "no predicate", "empty", "stopped after subject", "subject not written",
    ]  # fmt: skip
    summary = malformed_summary(malformed)
    assert summary["forms"] == {
        "empty": 1, "subject not written": 2, "stopped after subject": 3, "object not written": 1, "no predicate": 2,
    }  # fmt: skip
    assert summary["most_frequent_subjects"] == {"fox": 4, "traffic light": 3, "kite": 2}
    assert malformed_summary(malformed.iloc[:0]) == {
        "forms": {"empty": 0, "subject not written": 0, "stopped after subject": 0, "object not written": 0, "no predicate": 0},
        "most_frequent_subjects": {},
    }  # fmt: skip


# ------------------------------------------------------------------ end to end on a tiny model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return answering_world(tmp_path_factory.mktemp("answers_world"))


def generation_flags() -> list[str]:
    return ["--num-beams", "3", "--max-new-tokens", "24", "--batch-size", "8"]


def test_score_end_to_end_and_after_save_load(world: dict) -> None:
    from reltune.embedding import shared_embedder
    from reltune.inference.crops import CropLoader
    from reltune.inference.generation import GenerationSettings
    from reltune.inference.scoring import SCORE_COLUMNS, model_answer_source, pool_questions, score_questions

    root, out = world["root"], world["root"] / "round_0"
    code = main(
        ["score", "--backbone", str(root / "backbone"), "--instructions", str(world["instructions"] / "train.parquet"),
         "--scenes", str(world["scenes"]), "--selection", str(root / "selection.parquet"),
         "--val-instructions", str(world["instructions"] / "val.parquet"), "--out", str(out), *generation_flags(),
         # the paper's behaviour: whole pool, fixed decoding length, no vision cache (compared in memory below)
         "--strategy", "art", "--pool-cap-factor", "0", "--fit-max-new-tokens", "false", "--vision-cache", ""]
    )
    assert code == 0
    scores = pd.read_parquet(out / "scores.parquet")
    train = pd.read_parquet(world["instructions"] / "train.parquet")
    selected = set(pd.read_parquet(root / "selection.parquet")["qid"])
    assert tuple(scores.columns) == SCORE_COLUMNS
    assert set(scores["qid"]) == set(train.loc[train["kind"] == "positive", "qid"]) - selected
    assert set(scores["outcome"]) <= {"TP", "FP", "FN"}
    assert (scores["outcome"] == "TP").any()
    assert scores["entropy"].gt(0).all() and np.isfinite(scores["entropy"]).all()
    fp = scores["outcome"] == "FP"
    assert scores.loc[fp, "similarity"].notna().all() and scores.loc[~fp, "similarity"].isna().all()
    report = json.loads((out / "score_report.json").read_text())
    assert report["pool"]["TP"] + report["pool"]["FP"] + report["pool"]["FN"] == len(scores)
    assert report["pool"]["malformed"] == int((scores["answer_kind"] == "malformed").sum())
    assert sum(report["validation"]["malformed_answers"]["forms"].values()) == report["validation"]["malformed"]
    recall = json.loads((out / "val_recall.json").read_text())
    val = pd.read_parquet(world["instructions"] / "val.parquet")
    assert set(recall["per_predicate"]) == set(val.loc[val["kind"] == "positive", "predicate"])
    assert recall["questions"] == int((val["kind"] == "positive").sum())

    # the in-memory model (before save) gives the same scores as the one the CLI loaded from disk
    scenes, vocab = read_scenes(world["scenes"], "train")
    backbone = world["backbone"]
    loader = CropLoader(dict(zip(scenes["image_id"], scenes["image_path"])), vocab["image_root"], backbone.image_size)
    settings = GenerationSettings(num_beams=3, max_new_tokens=24, batch_size=8)
    pool = pool_questions(train, pd.read_parquet(root / "selection.parquet"), "train", "selection")
    in_memory = score_questions(pool, model_answer_source(backbone, loader, settings, "pool"), shared_embedder().relation_similarity)
    assert list(in_memory["answer"]) == list(scores["answer"])
    np.testing.assert_allclose(in_memory["entropy"], scores["entropy"], rtol=1e-6)
    np.testing.assert_allclose(in_memory["sequence_score"], scores["sequence_score"], rtol=1e-6)


def test_predict_end_to_end_and_blind_control(world: dict) -> None:
    root = world["root"]
    outputs = {}
    for blind in ("false", "true"):
        out = root / f"predictions_{blind}.parquet"
        code = main(
            ["predict", "--backbone", str(root / "backbone"), "--scenes", str(world["scenes"]), "--split", "test",
             "--out", str(out), "--blind", blind, *generation_flags(), "--vision-cache", ""]
        )
        assert code == 0
        outputs[blind] = pd.read_parquet(out)
        report = json.loads((root / f"predictions_{blind}.report.json").read_text())
        assert report["pairs"] == 6 and report["questions"] == 18  # 3 images x 2 annotated pairs x 3 categories
        assert sum(report["beams"].values()) == 18  # the top beam of every question (DESIGN §7)
        assert sum(report["malformed"]["forms"].values()) == report["beams"]["malformed"]
        assert report["predictions"] == len(outputs[blind])
    seen = outputs["false"]
    assert tuple(seen.columns) == PREDICTION_COLUMNS and len(seen) > 0
    assert seen["score"].between(0, 1).all()
    assert not seen.duplicated(["image_id", "subj", "obj", "predicate"]).any()
    assert set(zip(seen["subj"], seen["obj"])) <= {(0, 1), (2, 1)}
    # the blind control sees the same grey crop everywhere: a triplet's score no longer depends on the
    # image, while with the real images it does (and differs from the blind one)
    blind = outputs["true"]
    assert blind.groupby(["subj", "obj", "predicate"])["score"].std().max() < 1e-6
    assert seen.groupby(["subj", "obj", "predicate"])["score"].std().max() > 1e-6
    merged = seen.merge(blind, on=["image_id", "subj", "obj", "predicate"], how="outer", suffixes=("_seen", "_blind"))
    assert np.abs(merged["score_seen"].fillna(-1) - merged["score_blind"].fillna(-1)).max() > 1e-6


# ------------------------------------------------------------------ cheaper scoring (issue 9)


def score_arguments(world: dict, out, *extra: str) -> list[str]:
    root = world["root"]
    return [
        "score", "--backbone", str(root / "backbone"), "--instructions", str(world["instructions"] / "train.parquet"),
        "--scenes", str(world["scenes"]), "--selection", str(root / "selection.parquet"),
        "--val-instructions", str(world["instructions"] / "val.parquet"), "--out", str(out), *generation_flags(), *extra,
    ]


def test_balanced_round_skips_pool_scoring_but_not_validation_recall(world: dict) -> None:
    from reltune.inference.crops import CropLoader
    from reltune.inference.generation import GenerationSettings
    from reltune.inference.scoring import SCORE_COLUMNS, model_answer_source, positive_questions, validation_recall

    out = world["root"] / "balanced"
    arguments = score_arguments(world, out, "--strategy", "balanced", "--fit-max-new-tokens", "false", "--vision-cache", "")
    assert main(arguments) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    assert tuple(scores.columns) == SCORE_COLUMNS and len(scores) == 0
    report = json.loads((out / "score_report.json").read_text())
    assert report["pool"]["size"] == 5 and report["pool"]["questions"] == 0 and report["pool"]["scored"] is False
    # validation recall is what the model gives on the validation positives
    scenes, vocab = read_scenes(world["scenes"], "val")
    backbone = world["backbone"]
    loader = CropLoader(dict(zip(scenes["image_id"], scenes["image_path"])), vocab["image_root"], backbone.image_size)
    val = positive_questions(pd.read_parquet(world["instructions"] / "val.parquet"), "val")
    expected, _ = validation_recall(
        val, model_answer_source(backbone, loader, GenerationSettings(num_beams=3, max_new_tokens=24, batch_size=8), "val")
    )
    assert json.loads((out / "val_recall.json").read_text()) == expected
    assert main(score_arguments(world, world["root"] / "nonsense", "--strategy", "nonsense", "--vision-cache", "")) == 2


def test_art_round_scores_a_capped_subset_with_fitted_decoding(world: dict, tmp_path) -> None:
    from reltune.inference.scoring import answer_token_limit

    out = tmp_path / "art"
    cache = tmp_path / "cache"
    # 6 training positives: B = round(0.34 * 6) = 2; C = 1 scores exactly B'_p per predicate
    arguments = score_arguments(
        world, out, "--strategy", "art", "--budget-fraction", "0.34", "--pool-cap-factor", "1", "--seed", "3",
        "--vision-cache", str(cache), "--vision-cache-mb", "5", "--fit-max-new-tokens", "true",
    )
    assert main(arguments) == 0
    report = json.loads((out / "score_report.json").read_text())
    scores = pd.read_parquet(out / "scores.parquet")
    assert report["pool"]["round_budget"] == 2 and report["pool"]["size"] == 5
    per_predicate = report["pool"]["per_predicate"]
    assert sum(item["budget"] for item in per_predicate.values()) == 2
    assert {name: item["scored"] for name, item in per_predicate.items() if item["scored"]} == {
        name: item["budget"] for name, item in per_predicate.items() if item["budget"]
    }
    assert scores["predicate"].value_counts().to_dict() == {
        name: item["scored"] for name, item in per_predicate.items() if item["scored"]
    }
    # decoding length fitted to the instruction targets (+ EOS), below the 24 cap
    targets = pd.concat([pd.read_parquet(world["instructions"] / f"{split}.parquet")["target"] for split in ("train", "val")])
    fitted = answer_token_limit(list(targets), world["backbone"].processor.tokenizer, 24)
    assert report["generation"]["max_new_tokens"] == fitted < 24
    # validation (6 questions on 6 distinct crops) ran first and filled the cache; the tiny world's
    # train and val splits share images and boxes, so the pool's crops are all hits
    assert report["vision_cache"]["misses"] == 6 and report["vision_cache"]["writes"] == 6
    assert report["vision_cache"]["hits"] == len(scores)
    # same seed, warm cache: the same subset and identical answers
    again_out = tmp_path / "again2"
    assert main([*arguments[: arguments.index("--out") + 1], str(again_out), *arguments[arguments.index("--out") + 2 :]]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(again_out / "scores.parquet"), scores)
    assert json.loads((again_out / "score_report.json").read_text())["vision_cache"]["writes"] == 0


def test_predict_with_a_warm_vision_cache_equals_a_cold_one(world: dict, tmp_path) -> None:
    root = world["root"]
    runs = []
    for name in ("cold", "warm"):
        out = tmp_path / f"{name}.parquet"
        code = main(
            ["predict", "--backbone", str(root / "backbone"), "--scenes", str(world["scenes"]), "--split", "test",
             "--out", str(out), *generation_flags(), "--vision-cache", str(tmp_path / "cache")]
        )
        assert code == 0
        runs.append((pd.read_parquet(out), json.loads((tmp_path / f"{name}.report.json").read_text())["vision_cache"]))
    (cold, cold_cache), (warm, warm_cache) = runs
    # 3 images x 2 annotated pairs = 6 distinct crops, 3 questions each; batches of 8 questions in crop
    # order look crops up as {0, 1, 2}, {2, 3, 4, 5}, {5}: 8 lookups, of which 6 first sightings
    assert cold_cache["misses"] == 6 and cold_cache["writes"] == 6 and cold_cache["hits"] == 2
    assert warm_cache["hits"] == 8 and warm_cache["misses"] == 0 and warm_cache["writes"] == 0
    pd.testing.assert_frame_equal(cold, warm)
