"""Relation predictions for evaluation (DESIGN §4 "Predictions"; PredCls with GT boxes).

For every candidate pair of boxes (the annotated pairs, or all ordered
pairs) the model is asked the three category questions of DESIGN §6. The
first `answers_per_question` beams of each question count (DESIGN §7: the
top beam only, as the authors rank one answer per question; None = every
returned beam): each that answers "Yes, {s} {predicate} {o}" becomes a
candidate triplet. Its score is exp(sequence score): without length
normalisation (`length_penalty` 0) that is the probability of the whole answer
under beam search's log-probabilities, so higher = more confident. A triplet
proposed by several beams or questions keeps its highest score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reltune.instructions.categories import CATEGORIES
from reltune.instructions.templates import category_question
from reltune.inference.answers import MALFORMED_FORMS, malformed_forms, parse_answer
from reltune.inference.generation import GenerationSettings, answer_questions

if TYPE_CHECKING:
    from reltune.inference.crops import CropLoader
    from reltune.inference.vision_cache import CachedVisionEncoder
    from reltune.models.backbone import Backbone

PREDICTION_COLUMNS = ("image_id", "subj", "obj", "predicate", "score")
PREDICTION_DTYPES = {"image_id": object, "subj": "int64", "obj": "int64", "predicate": object, "score": "float64"}
PAIR_MODES = ("annotated", "all")


def candidate_pairs(scenes: pd.DataFrame, mode: str) -> pd.DataFrame:
    """One row per ordered (subj, obj) box pair to ask about: image_id, subj, obj, labels, union_box.

    `annotated`: the distinct pairs that have a GT relation (PredCls);
    `all`: every ordered pair of distinct boxes.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"pairs must be one of {PAIR_MODES}, got {mode!r}")
    rows = []
    columns = (scenes["image_id"], scenes["boxes"], scenes["labels"], scenes["relations"])
    for image_id, boxes, labels, relations in zip(*columns):
        if mode == "annotated":
            pairs = list(dict.fromkeys((int(rel["subj"]), int(rel["obj"])) for rel in relations))
        else:
            count = len(boxes)
            pairs = [(subj, obj) for subj in range(count) for obj in range(count) if subj != obj]
        for subj, obj in pairs:
            subj_box, obj_box = np.asarray(boxes[subj], dtype=float), np.asarray(boxes[obj], dtype=float)
            union_box = np.concatenate([np.minimum(subj_box[:2], obj_box[:2]), np.maximum(subj_box[2:], obj_box[2:])])
            rows.append(
                {
                    "image_id": str(image_id),
                    "subj": subj,
                    "obj": obj,
                    "subj_label": str(labels[subj]),
                    "obj_label": str(labels[obj]),
                    "union_box": union_box.tolist(),
                }
            )
    columns = ["image_id", "subj", "obj", "subj_label", "obj_label", "union_box"]
    return pd.DataFrame(rows, columns=columns)


def categories_to_ask(vocab: dict, source: str) -> list[str]:
    """`all`: the three categories; `vocab`: those the dataset's predicates fall into (DESIGN order)."""
    if source == "all":
        return list(CATEGORIES)
    if source == "vocab":
        present = set(vocab.get("categories", {}).values())
        return [category for category in CATEGORIES if category in present]
    raise ValueError(f"categories-from must be 'vocab' or 'all', got {source!r}")


def pair_questions(pairs: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """The category questions (DESIGN §6 template) for every pair: pair columns + category + prompt."""
    if pairs.empty or not categories:
        return pairs.assign(category=pd.Series(dtype=str), prompt=pd.Series(dtype=str)).iloc[0:0]
    repeated = pairs.loc[pairs.index.repeat(len(categories))].reset_index(drop=True)
    repeated["category"] = list(categories) * len(pairs)
    repeated["prompt"] = category_question(repeated["category"], repeated["subj_label"], repeated["obj_label"])
    return repeated


def kept_beams(beams: pd.DataFrame, answers_per_question: int | None) -> pd.DataFrame:
    """The first `answers_per_question` beams of every question (None: all of them)."""
    if answers_per_question is None:
        return beams
    if answers_per_question < 1:
        raise ValueError(f"answers per question must be at least 1, got {answers_per_question}")
    return beams[beams["beam"].to_numpy() < answers_per_question]


MALFORMED_COLUMNS = ("subj_label", "obj_label", "malformed_form")
# the subject names a predict report lists beside the forms of its malformed answers (most frequent first)
REPORTED_MALFORMED_SUBJECTS = 5


def candidate_triplets(questions: pd.DataFrame, beams: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """One candidate (PREDICTION_COLUMNS) per "Yes" beam, the counts of beams by kind (yes / no / malformed),
    and one row (MALFORMED_COLUMNS) per malformed beam: the asked names and where it left the form."""
    question = beams["question"].to_numpy()
    subjects = questions["subj_label"].to_numpy()[question]
    objects = questions["obj_label"].to_numpy()[question]
    parsed = [parse_answer(answer, subject, obj) for answer, subject, obj in zip(beams["answer"], subjects, objects)]
    kinds = np.array([item.kind for item in parsed], dtype=object)
    counts = {kind: int((kinds == kind).sum()) for kind in ("yes", "no", "malformed")}
    is_yes = kinds == "yes"
    candidates = pd.DataFrame(
        {
            "image_id": questions["image_id"].to_numpy()[question][is_yes],
            "subj": questions["subj"].to_numpy()[question][is_yes].astype(np.int64),
            "obj": questions["obj"].to_numpy()[question][is_yes].astype(np.int64),
            "predicate": [item.predicate for item, yes in zip(parsed, is_yes) if yes],
            "score": np.exp(beams["sequence_score"].to_numpy(dtype=float)[is_yes]),
        }
    )
    is_malformed = kinds == "malformed"
    forms = [form for form in malformed_forms(parsed, subjects, objects) if form is not None]
    malformed = pd.DataFrame(
        {"subj_label": subjects[is_malformed], "obj_label": objects[is_malformed], "malformed_form": forms},
        columns=list(MALFORMED_COLUMNS),
    )
    return candidates[list(PREDICTION_COLUMNS)], counts, malformed


def malformed_summary(malformed: pd.DataFrame) -> dict:
    """A report's view of the malformed answers: how many of each form (MALFORMED_FORMS, all listed), and the
    subject names asked most often in them (so a model that cannot write some names shows which)."""
    forms = malformed["malformed_form"].value_counts()
    subjects = malformed["subj_label"].value_counts().head(REPORTED_MALFORMED_SUBJECTS)
    return {
        "forms": {form: int(forms.get(form, 0)) for form in MALFORMED_FORMS},
        "most_frequent_subjects": {str(label): int(count) for label, count in subjects.items()},
    }


def malformed_line(count: int, summary: dict) -> str:
    """One log line's account of `count` malformed answers from their `malformed_summary`."""
    forms = ", ".join(f"{form} {number}" for form, number in summary["forms"].items() if number)
    subjects = ", ".join(f"{label} {number}" for label, number in summary["most_frequent_subjects"].items())
    return f"{count} malformed answers ({forms}); most often asked about: {subjects}"


def best_triplets(candidates: pd.DataFrame) -> pd.DataFrame:
    """Distinct per (image, subj, obj, predicate), best score kept; by image, then descending score."""
    return (
        candidates.sort_values("score", ascending=False, kind="stable")
        .drop_duplicates(["image_id", "subj", "obj", "predicate"], keep="first")
        .sort_values(["image_id", "score"], ascending=[True, False], kind="stable", ignore_index=True)
    )[list(PREDICTION_COLUMNS)]


def predictions_from_beams(
    questions: pd.DataFrame, beams: pd.DataFrame, answers_per_question: int | None = None
) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """Triplets from the kept "Yes" beams (`best_triplets`), the counts of kept beams by kind, the kept malformed beams."""
    candidates, counts, malformed = candidate_triplets(questions, kept_beams(beams, answers_per_question))
    return best_triplets(candidates), counts, malformed


def predictions_from_chunks(answered, answers_per_question: int | None) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """`predictions_from_beams` over the runner's answered (questions, beams) chunks."""
    parts, counts, malformed_parts = [], {"yes": 0, "no": 0, "malformed": 0}, []
    for questions, beams in answered:
        candidates, chunk_counts, malformed = candidate_triplets(questions, kept_beams(beams, answers_per_question))
        parts.append(candidates)
        malformed_parts.append(malformed)
        counts = {kind: counts[kind] + chunk_counts[kind] for kind in counts}
    empty = pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in PREDICTION_DTYPES.items()})
    no_malformed = pd.DataFrame(columns=list(MALFORMED_COLUMNS))
    return (
        best_triplets(pd.concat([empty, *parts], ignore_index=True)),
        counts,
        pd.concat([no_malformed, *malformed_parts], ignore_index=True),
    )


def predict_relations(
    backbone: Backbone,
    scenes: pd.DataFrame,
    vocab: dict,
    crop_loader: CropLoader,
    settings: GenerationSettings,
    pairs: str = "annotated",
    categories_from: str = "vocab",
    vision_cache: CachedVisionEncoder | None = None,
    answers_per_question: int | None = 1,
) -> tuple[pd.DataFrame, dict]:
    """Predictions table and a report (pairs, questions, beam kinds, triplets) for one scene split, in memory.

    The `predict` command runs the same through the inference runner (shards, processes).
    """
    pair_table = candidate_pairs(scenes, pairs)
    questions = pair_questions(pair_table, categories_to_ask(vocab, categories_from))
    beams = answer_questions(
        backbone, questions, crop_loader, settings, description="predicting", vision_cache=vision_cache
    )
    predictions, beam_kinds, malformed = predictions_from_beams(questions, beams, answers_per_question)
    report = {
        "images": int(len(scenes)),
        "pairs": int(len(pair_table)),
        "questions": int(len(questions)),
        "answers_per_question": answers_per_question or "all",
        "beams": beam_kinds,
        "malformed": malformed_summary(malformed),
        "predictions": int(len(predictions)),
    }
    return predictions, report
