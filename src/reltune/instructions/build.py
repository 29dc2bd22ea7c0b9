"""Scene tables -> instruction tables (DESIGN §4, §6; paper §3.1, Fig. 2, Eq. 1, Tab. 2).

One positive per distinct (image, ordered pair, predicate); negatives per
`InstructionOptions` (counter-negatives by default). Everything is columnar:
the relations are exploded with pyarrow, categories and pair masks are numpy
arrays, and the strings are built by vectorised concatenation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from reltune.errors import InputError
from reltune.instructions import templates
from reltune.instructions.categories import CATEGORIES
from reltune.instructions.negatives import NEGATIVE_MODES, NegativeChoice, choose_negative_categories
from reltune.instructions.relations import explode_relations
from reltune.text import normalise_predicate

INSTRUCTION_COLUMNS = (
    "qid",
    "image_id",
    "subj",
    "obj",
    "subj_label",
    "obj_label",
    "subj_box",
    "obj_box",
    "union_box",
    "category",
    "kind",
    "predicate",
    "positive_qid",
    "prompt",
    "target",
)
QID_BYTES = 10  # 80-bit content hash, 20 hex characters
_SEPARATOR = "\x1f"  # ASCII unit separator between the hashed fields, so they cannot run together
BOX_TYPE = pa.list_(pa.float64())
_COLUMN_TYPES = {"subj": pa.int64(), "obj": pa.int64(), "subj_box": BOX_TYPE, "obj_box": BOX_TYPE}
_COLUMN_TYPES["union_box"] = BOX_TYPE
INSTRUCTION_SCHEMA = pa.schema([(name, _COLUMN_TYPES.get(name, pa.string())) for name in INSTRUCTION_COLUMNS])


@dataclass(frozen=True)
class InstructionOptions:
    """How questions are built (Tab. 2 rows are combinations of these).

    categories: ask about the positive's category (Fig. 2) or the naive question.
    negatives: "counter" (Eq. 1), "random" (any category not annotated on the pair) or "none".
    negatives_per_positive: 1 or 2 distinct negative categories per positive, where allowed.
    seed: drives the possessive -> spatial/semantic choice and random negatives.
    """

    categories: bool = True
    negatives: str = "counter"
    negatives_per_positive: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {self.negatives!r}")
        if self.negatives_per_positive not in (1, 2):
            raise ValueError(f"negatives_per_positive must be 1 or 2, got {self.negatives_per_positive}")
        if not self.categories and self.negatives != "none":
            # Without a category in the question, a negative for an annotated pair would be the same
            # question as its positive with the opposite answer (Tab. 2 row 1 has no negatives).
            raise ValueError(
                "categories=false needs negatives=none: the naive question "
                "'Is there a relation between s and o?' cannot be answered 'No' for an annotated pair"
            )


# ---------------------------------------------------------------- qids


def content_qids(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """blake2b content hash of each key: (hex qid strings, first 64 bits as uint64 words)."""
    digests = [hashlib.blake2b(key.encode(), digest_size=QID_BYTES).digest() for key in keys.tolist()]
    raw = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, QID_BYTES)
    words = raw[:, :8].copy().view("<u8").ravel()
    return np.array([digest.hex() for digest in digests], dtype=object), words


def _positive_keys(positives: pd.DataFrame, dataset: str, split: str) -> pd.Series:
    sep = _SEPARATOR
    return (
        f"{dataset}{sep}{split}{sep}"
        + positives["image_id"]
        + sep
        + positives["subj"].astype("str")
        + sep
        + positives["obj"].astype("str")
        + f"{sep}positive{sep}"
        + positives["category"]
        + sep
        + positives["predicate"]
    )


# ---------------------------------------------------------------- assembly


def _box_column(coordinates: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    """(n, 4) floats -> list<double> column without per-row Python objects."""
    count = len(coordinates)
    offsets = pa.array(np.arange(0, 4 * count + 1, 4, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(coordinates, dtype=np.float64).ravel())
    return pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, values, type=BOX_TYPE))


def _category_codes(predicates: pd.Series, categories: Mapping[str, str], file: str) -> np.ndarray:
    """Category index of each (normalised) predicate; InputError naming unmapped predicates."""
    lookup = {normalise_predicate(predicate): category for predicate, category in categories.items()}
    unique = pd.unique(predicates)
    unmapped = sorted(p for p in unique if p not in lookup)
    if unmapped:
        raise InputError(file, f"predicates with no category: {', '.join(map(repr, unmapped))}")
    invalid = sorted({lookup[p] for p in unique} - set(CATEGORIES))
    if invalid:
        raise InputError(file, f"categories {invalid} are not among {CATEGORIES}")
    code_of = {predicate: CATEGORIES.index(lookup[predicate]) for predicate in unique}
    return predicates.map(code_of).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class SplitResult:
    """One split's instruction table and its part of instructions_report.json."""

    table: pd.DataFrame
    report: dict


def pair_category_masks(positives: pd.DataFrame, category_code: np.ndarray) -> np.ndarray:
    """Per positive: bit mask of every category annotated on its ordered pair (image_row, subj, obj)."""
    pair_code = pd.MultiIndex.from_arrays([positives["image_row"], positives["subj"], positives["obj"]]).factorize()[0]
    pair_mask = np.zeros(pair_code.max() + 1 if len(pair_code) else 0, dtype=np.int64)
    np.bitwise_or.at(pair_mask, pair_code, np.left_shift(1, category_code))
    return pair_mask[pair_code]


def _union_boxes(subj_box: np.ndarray, obj_box: np.ndarray) -> np.ndarray:
    """[min x1, min y1, max x2, max y2] of two (n, 4) box arrays."""
    return np.concatenate(
        [np.minimum(subj_box[:, :2], obj_box[:, :2]), np.maximum(subj_box[:, 2:], obj_box[:, 2:])], axis=1
    )


def build_instructions(
    scenes: pd.DataFrame,
    categories: Mapping[str, str],
    options: InstructionOptions = InstructionOptions(),
    dataset: str = "dataset",
    split: str = "train",
    file: str = "scenes",
) -> SplitResult:
    """Instruction table (columns `INSTRUCTION_COLUMNS`) for one split of scene rows.

    categories maps each predicate to spatial | possessive | semantic. qids are
    content hashes of (dataset, split, image_id, subj, obj, kind, category,
    predicate) for positives and (positive qid, kind, category) for negatives,
    so they do not depend on row order. Rows: each positive followed by its
    negatives, positives in input order.
    """
    relations = explode_relations(scenes, file)
    duplicate = relations.duplicated(["image_row", "subj", "obj", "predicate"]).to_numpy()
    positives = relations.loc[~duplicate].reset_index(drop=True)
    category_code = _category_codes(positives["predicate"], categories, file)
    positives["category"] = pd.Series(np.asarray(CATEGORIES, dtype=object)[category_code], dtype="str")

    positive_qid, positive_words = content_qids(_positive_keys(positives, dataset, split))
    choice = choose_negative_categories(
        category_code,
        pair_category_masks(positives, category_code),
        positive_words,
        options.negatives,
        options.negatives_per_positive,
        options.seed,
    )
    plan = question_plan(category_code, choice)
    table = _question_table(positives.iloc[plan.source].reset_index(drop=True), plan, positive_qid, options, file)
    report = _split_report(
        table,
        images=len(scenes),
        images_without_relations=int((np.bincount(relations["image_row"], minlength=len(scenes)) == 0).sum()),
        relations=len(relations),
        duplicates=int(duplicate.sum()),
        positives=positives,
        choice=choice,
        options=options,
    )
    return SplitResult(table=table, report=report)


@dataclass(frozen=True)
class QuestionPlan:
    """The output rows: every positive, each followed by its negatives by rank."""

    source: np.ndarray  # index of the positive each row comes from
    category: pd.Series  # the category each row asks about
    is_negative: np.ndarray


def question_plan(category_code: np.ndarray, choice: NegativeChoice) -> QuestionPlan:
    """Rows of the positives (rank -1) and of their chosen negatives, ordered by positive, then rank."""
    positive_count = len(category_code)
    source = np.concatenate([np.arange(positive_count), choice.positive_index])
    rank = np.concatenate([np.full(positive_count, -1), choice.rank])
    asked_category = np.concatenate([category_code, choice.category])
    order = np.lexsort((rank, source))
    category = pd.Series(np.asarray(CATEGORIES, dtype=object)[asked_category[order]], dtype="str")
    return QuestionPlan(source=source[order], category=category, is_negative=rank[order] >= 0)


def _question_qids(positive_qid: np.ndarray, plan: QuestionPlan, file: str) -> np.ndarray:
    """A positive keeps its qid; a negative's is the hash of (positive qid, kind, category)."""
    qid = positive_qid[plan.source].copy()
    is_negative = plan.is_negative
    if is_negative.any():
        negative_keys = (
            pd.Series(qid[is_negative], dtype="str")
            + f"{_SEPARATOR}negative{_SEPARATOR}"
            + plan.category[is_negative].reset_index(drop=True)
        )
        qid[is_negative] = content_qids(negative_keys)[0]
    if pd.Series(qid).duplicated().any():
        raise RuntimeError(f"{file}: qid collision in the {QID_BYTES * 8}-bit content hash")
    return qid


def _question_texts(rows: pd.DataFrame, plan: QuestionPlan, options: InstructionOptions) -> tuple[pd.Series, pd.Series]:
    """(prompt, target) of every row: Fig. 2 templates (or the naive question without categories)."""
    category, is_negative = plan.category, plan.is_negative
    if options.categories:
        prompt = templates.category_question(category, rows["subj_label"], rows["obj_label"])
    else:
        prompt = templates.naive_question(rows["subj_label"], rows["obj_label"])
    # Each answer template only over the rows it applies to, then back in row order.
    positive_rows, negative_rows = rows.loc[~is_negative], rows.loc[is_negative]
    target = pd.concat(
        [
            templates.positive_answer(
                positive_rows["subj_label"], positive_rows["predicate"], positive_rows["obj_label"]
            ),
            templates.category_negative_answer(
                category.loc[is_negative], negative_rows["subj_label"], negative_rows["obj_label"]
            ),
        ]
    ).sort_index()
    return prompt, target


def _question_table(
    rows: pd.DataFrame, plan: QuestionPlan, positive_qid: np.ndarray, options: InstructionOptions, file: str
) -> pd.DataFrame:
    """The instruction table of the planned rows (`rows`: the positive behind each)."""
    is_negative = plan.is_negative
    prompt, target = _question_texts(rows, plan, options)
    subj_box = rows[["subj_x1", "subj_y1", "subj_x2", "subj_y2"]].to_numpy()
    obj_box = rows[["obj_x1", "obj_y1", "obj_x2", "obj_y2"]].to_numpy()
    return pd.DataFrame(
        {
            "qid": pd.Series(_question_qids(positive_qid, plan, file), dtype="str"),
            "image_id": rows["image_id"],
            "subj": rows["subj"],
            "obj": rows["obj"],
            "subj_label": rows["subj_label"],
            "obj_label": rows["obj_label"],
            "subj_box": _box_column(subj_box),
            "obj_box": _box_column(obj_box),
            "union_box": _box_column(_union_boxes(subj_box, obj_box)),
            "category": plan.category,
            "kind": pd.Series(np.where(is_negative, "negative", "positive"), dtype="str"),
            "predicate": rows["predicate"].where(~is_negative),
            "positive_qid": pd.Series(positive_qid[plan.source], dtype="str").where(is_negative),
            "prompt": prompt,
            "target": target,
        }
    )


# ---------------------------------------------------------------- report


_LISTED_COLUMNS = ["image_id", "subj", "obj", "subj_label", "obj_label", "predicate", "category"]


def _split_report(
    table: pd.DataFrame,
    images: int,
    images_without_relations: int,
    relations: int,
    duplicates: int,
    positives: pd.DataFrame,
    choice: NegativeChoice,
    options: InstructionOptions,
) -> dict:
    """Counts for instructions_report.json: questions per category x kind, positives per predicate, shortfalls."""
    counts = table.groupby(["category", "kind"]).size()
    questions = {
        category: {kind: int(counts.get((category, kind), 0)) for kind in ("positive", "negative")}
        for category in CATEGORIES
    }
    per_predicate = positives["predicate"].value_counts()
    per_predicate = per_predicate.sort_index().sort_values(ascending=False, kind="stable")
    reasons = pd.Series(choice.reason[choice.shortfall > 0], dtype="str").value_counts().sort_index()
    # shortfall is 0 everywhere with negatives=none, so nothing is listed then.
    without = positives.loc[choice.shortfall >= options.negatives_per_positive, _LISTED_COLUMNS].copy()
    without["reason"] = choice.reason[choice.shortfall >= options.negatives_per_positive]
    negatives = table.loc[table["kind"] == "negative", ["image_id", "subj", "obj", "category"]]
    return {
        "images": images,
        "images_without_relations": images_without_relations,
        "relations": relations,
        "duplicate_relations_merged": duplicates,
        "positives": len(positives),
        "negatives": len(negatives),
        "negatives_requested": 0 if options.negatives == "none" else len(positives) * options.negatives_per_positive,
        # Two positives of one pair (e.g. `on` and `riding`) each get their own counter-negative,
        # which can be the same question; counted so the duplication is visible.
        "negatives_repeating_a_question": int(negatives.duplicated().sum()),
        "questions": questions,
        "positives_per_predicate": {str(k): int(v) for k, v in per_predicate.items()},
        "missing_negatives_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "positives_without_negative": without.to_dict("records"),
    }


def options_report(options: InstructionOptions) -> dict:
    """The options as plain JSON values."""
    return asdict(options)
