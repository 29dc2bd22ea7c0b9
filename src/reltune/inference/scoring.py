"""Pool scores and validation recall (DESIGN §4 "Pool scores", §6; paper §3.2).

The pool is every training positive not in the selection. Each pool question
is answered with beam search; the top beam gives the outcome (TP: parsed
predicate equals the GT; FN: a "No" answer; FP: anything else, malformed
answers included), all M beams give the entropy, and FP rows get the
similarity of the predicted and the GT relation sentences.

The answer source is a plain function (questions table -> top-beam answers),
so the outcome and similarity logic runs without a model in tests. The
`score` command feeds it the inference runner's answers shard by shard
(`score_chunks`), so the scores table is written without holding the pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reltune.errors import InputError
from reltune.inference.answers import answer_outcome, malformed_forms, parse_answer
from reltune.inference.generation import GenerationSettings, answer_questions
from reltune.text import normalise_predicate

if TYPE_CHECKING:
    from reltune.inference.crops import CropLoader
    from reltune.inference.vision_cache import CachedVisionEncoder
    from reltune.models.backbone import Backbone

SCORE_COLUMNS = (
    "qid",
    "predicate",
    "answer",
    "predicted_predicate",
    "outcome",
    "entropy",
    "similarity",
    "sequence_score",
    "answer_kind",  # yes | no | malformed (beyond DESIGN §4: lets reports count malformed answers)
)
QUESTION_COLUMNS = ("qid", "image_id", "subj_label", "obj_label", "union_box", "kind", "predicate", "prompt")
# what the checks and the pool choice read of a whole instruction table (the rest is streamed)
INDEX_COLUMNS = ("qid", "image_id", "kind", "predicate")
SELECTION_COLUMNS = ("qid",)

# questions -> one row per question, same order: answer, sequence_score, entropy
AnswerSource = Callable[[pd.DataFrame], pd.DataFrame]
# (subject labels, predicted, ground truth, object labels) -> cosine per row
Similarity = Callable[[Sequence[str], Sequence[str], Sequence[str], Sequence[str]], np.ndarray]


def _first_row(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def positive_questions(instructions: pd.DataFrame, file: str) -> pd.DataFrame:
    """The positive rows of an instruction table, checked (unique qids, a predicate each)."""
    duplicated = instructions["qid"].duplicated()
    if duplicated.any():
        row = _first_row(duplicated)
        raise InputError(file, f"duplicate qid {instructions['qid'].iloc[row]!r}", f"row {row}")
    positives = instructions[instructions["kind"] == "positive"]
    no_predicate = positives["predicate"].isna()
    if no_predicate.any():
        row = _first_row(no_predicate)
        raise InputError(file, f"positive {positives['qid'].iloc[row]!r} has no predicate", f"row {row}")
    return positives.reset_index(drop=True)


def pool_questions(
    instructions: pd.DataFrame, selection: pd.DataFrame, instructions_file: str, selection_file: str
) -> pd.DataFrame:
    """Training positives whose qid is not in the selection; a selected qid must be a training positive."""
    positives = positive_questions(instructions, instructions_file)
    unknown = ~selection["qid"].isin(positives["qid"])
    if unknown.any():
        row = _first_row(unknown)
        raise InputError(
            selection_file, f"qid {selection['qid'].iloc[row]!r} is not a positive of {instructions_file}", f"row {row}"
        )
    return positives[~positives["qid"].isin(selection["qid"])].reset_index(drop=True)


def classify_answers(questions: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    """Parse each top-beam answer against its question's labels and assign TP / FP / FN.

    Returns one row per question: qid, subj_label, obj_label, predicate, answer,
    answer_kind, predicted_predicate (None unless a "yes" answer parsed), outcome,
    remainder (what the answer said after "yes"; a malformed FP's predicate
    for similarity), malformed_form (`malformed_form`; missing unless malformed),
    entropy, sequence_score.
    """
    if len(answers) != len(questions):
        raise ValueError(f"the answer source returned {len(answers)} rows for {len(questions)} questions")
    parsed = [
        parse_answer(answer, subject, obj)
        for answer, subject, obj in zip(answers["answer"], questions["subj_label"], questions["obj_label"])
    ]
    outcomes = [answer_outcome(item, truth) for item, truth in zip(parsed, questions["predicate"])]
    forms = malformed_forms(parsed, questions["subj_label"], questions["obj_label"])
    return pd.DataFrame(
        {
            "qid": questions["qid"].to_numpy(),
            "subj_label": questions["subj_label"].astype(str).to_numpy(),
            "obj_label": questions["obj_label"].astype(str).to_numpy(),
            "predicate": questions["predicate"].astype(str).to_numpy(),
            "answer": answers["answer"].astype(str).to_numpy(),
            "answer_kind": np.array([item.kind for item in parsed], dtype=object),
            "predicted_predicate": pd.array([item.predicate for item in parsed], dtype="string"),
            "outcome": np.array(outcomes, dtype=object),
            "remainder": np.array([item.remainder for item in parsed], dtype=object),
            "malformed_form": pd.array(forms, dtype="string"),
            "entropy": answers["entropy"].to_numpy(dtype=float),
            "sequence_score": answers["sequence_score"].to_numpy(dtype=float),
        }
    )


def fp_similarity(classified: pd.DataFrame, questions: pd.DataFrame, similarity: Similarity) -> np.ndarray:
    """DESIGN §6 similarity for FP rows (NaN elsewhere), one call over the distinct sentence pairs.

    A malformed answer has no parsed predicate; its remainder (the answer
    without "yes") stands in for it, so every FP has a similarity.
    """
    is_fp = (classified["outcome"] == "FP").to_numpy()
    result = np.full(len(classified), np.nan)
    if not is_fp.any():
        return result
    predicted = np.where(
        classified["predicted_predicate"].isna().to_numpy(),
        classified["remainder"].to_numpy(dtype=object),
        classified["predicted_predicate"].to_numpy(dtype=object),
    )
    subjects = questions["subj_label"].astype(str).to_numpy()
    objects = questions["obj_label"].astype(str).to_numpy()
    ground_truth = classified["predicate"].to_numpy(dtype=object)
    pairs = pd.DataFrame(
        {
            "subject": subjects[is_fp],
            "predicted": [normalise_predicate(text) for text in predicted[is_fp]],
            "ground_truth": [normalise_predicate(text) for text in ground_truth[is_fp]],
            "object": objects[is_fp],
        }
    )
    # one embedding comparison per distinct (s, predicted, gt, o); the embedder also caches sentences
    distinct = pairs.drop_duplicates(ignore_index=True)
    columns = [list(distinct[name]) for name in ("subject", "predicted", "ground_truth", "object")]
    values = np.asarray(similarity(*columns), dtype=float)
    lookup = dict(zip(distinct.itertuples(index=False, name=None), values))
    result[is_fp] = [lookup[key] for key in pairs.itertuples(index=False, name=None)]
    return result


def score_questions(questions: pd.DataFrame, answer_source: AnswerSource, similarity: Similarity) -> pd.DataFrame:
    """Pool scores table (SCORE_COLUMNS) for `questions` (instruction positives)."""
    questions = questions.reset_index(drop=True)
    classified = classify_answers(questions, answer_source(questions))
    classified["similarity"] = fp_similarity(classified, questions, similarity)
    return classified[list(SCORE_COLUMNS)]


def validation_recall(questions: pd.DataFrame, answer_source: AnswerSource) -> tuple[dict, pd.DataFrame]:
    """Recall per predicate over validation positives (CONTRACTS `val_recall.json`) and the classified rows.

    recall of p = fraction of p's validation positives whose parsed top-beam
    answer equals p; `mean_recall` averages over the predicates present,
    `recall` is over all validation positives.
    """
    questions = questions.reset_index(drop=True)
    classified = classify_answers(questions, answer_source(questions))
    return recall_summary(classified), classified


def recall_summary(classified: pd.DataFrame) -> dict:
    """`val_recall.json` of classified validation positives (see `validation_recall`)."""
    hit = classified["outcome"] == "TP"
    per_predicate = hit.groupby(classified["predicate"]).mean().sort_index()
    return {
        "per_predicate": {str(predicate): float(value) for predicate, value in per_predicate.items()},
        "mean_recall": float(per_predicate.mean()) if len(per_predicate) else 0.0,
        "recall": float(hit.mean()) if len(hit) else 0.0,
        "questions": int(len(classified)),
    }


def outcome_counts(classified: pd.DataFrame) -> dict[str, int]:
    """Counts of TP / FP / FN and of malformed answers (all of which are FP)."""
    counts = {name: int((classified["outcome"] == name).sum()) for name in ("TP", "FP", "FN")}
    counts["malformed"] = int((classified["answer_kind"] == "malformed").sum())
    return counts


def top_beam_answers(beams: pd.DataFrame, question_count: int) -> pd.DataFrame:
    """The best beam of every question from `answer_questions` output, in question order."""
    top = beams[beams["beam"] == 0].sort_values("question")
    if list(top["question"]) != list(range(question_count)):
        raise ValueError("the generator did not return a best beam for every question")
    return top[["answer", "sequence_score", "entropy"]].reset_index(drop=True)


def model_answer_source(
    backbone: Backbone,
    crop_loader: CropLoader,
    settings: GenerationSettings,
    description: str,
    vision_cache: CachedVisionEncoder | None = None,
) -> AnswerSource:
    """An AnswerSource that asks the backbone (beam search, shared vision forward, optional vision cache)."""

    def answer(questions: pd.DataFrame) -> pd.DataFrame:
        beams = answer_questions(
            backbone, questions, crop_loader, settings, description=description, vision_cache=vision_cache
        )
        return top_beam_answers(beams, len(questions))

    return answer


def check_images_known(questions: pd.DataFrame, image_ids: set[str], file: str) -> None:
    """Every question's image must be in the scene split it is answered from."""
    unknown = ~questions["image_id"].astype(str).isin(image_ids)
    if unknown.any():
        row = _first_row(unknown)
        image_id, qid = questions["image_id"].iloc[row], questions["qid"].iloc[row]
        raise InputError(file, f"image {image_id!r} of qid {qid!r} is not in the scenes", f"row {row}")


def empty_scores() -> pd.DataFrame:
    """A scores table with no rows and the SCORE_COLUMNS dtypes (strategies that read no pool scores)."""
    return pd.DataFrame(
        {
            "qid": pd.Series([], dtype=object),
            "predicate": pd.Series([], dtype=object),
            "answer": pd.Series([], dtype=object),
            "predicted_predicate": pd.array([], dtype="string"),
            "outcome": pd.Series([], dtype=object),
            "entropy": pd.Series([], dtype="float64"),
            "similarity": pd.Series([], dtype="float64"),
            "sequence_score": pd.Series([], dtype="float64"),
            "answer_kind": pd.Series([], dtype=object),
        }
    )[list(SCORE_COLUMNS)]


def answer_token_limit(targets: Sequence[str], tokenizer: Callable, cap: int) -> int:
    """Shortest max_new_tokens that fits every target answer: its longest tokenisation + 1 (EOS), at most `cap`."""
    distinct = sorted({str(target) for target in targets})
    if not distinct:
        return cap
    lengths = [len(ids) for ids in tokenizer(distinct, add_special_tokens=False)["input_ids"]]
    return min(cap, max(lengths) + 1)


def pool_scoring_candidates(
    pool: pd.DataFrame,
    recall: Mapping[str, float],
    round_budget: int,
    cap_factor: float,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The pool rows to score: per predicate at most cap_factor * B'_p, drawn uniformly with `seed`.

    B'_p = allocate_budget(recall, pool availability, round_budget), the budget
    the recall-weighted strategies will split this round (DESIGN §6). cap_factor
    0 keeps the whole pool (the paper). A predicate with B'_p = 0 gets no
    candidates; every predicate with a budget gets min(N_p, floor(C * B'_p)) >= B'_p.
    Draws: rows in qid order get keys from default_rng(seed), the smallest keys
    of each predicate win, so the subset depends on the seed and the pool's
    content, never on its row order. Returns the subset (in pool order) and per
    predicate {pool, budget, scored}.
    """
    from reltune.sampling import allocate_budget

    # below 1 the scored subset could not fill the budget
    if not math.isfinite(cap_factor) or not (cap_factor == 0 or cap_factor >= 1):
        raise ValueError(f"pool cap factor must be 0 (score everything) or >= 1, got {cap_factor}")
    pool = pool.reset_index(drop=True)
    predicates = pool["predicate"].astype(str)
    available = {str(name): int(count) for name, count in predicates.value_counts().sort_index().items()}
    budgets = allocate_budget(recall, available, round_budget)
    if cap_factor == 0:  # the whole pool: nothing to draw (and no per-row keys to hold)
        quotas = dict(available)
        subset = pool
    else:
        quotas = {name: min(available[name], math.floor(cap_factor * budgets[name])) for name in available}
        subset = pool[_drawn_rows(pool["qid"], predicates, quotas, seed)].reset_index(drop=True)
    report = {
        name: {"pool": available[name], "budget": int(budgets[name]), "scored": int(quotas[name])} for name in available
    }
    return subset, report


def read_question_index(path: str, file: str | None = None):
    """INDEX_COLUMNS of an instruction table as an arrow table, plus `row` (the file position).

    Arrow, with the repeated columns dictionary-encoded: a million questions take
    about 30 MB here. The checks and the choice of the pool read this; the
    questions themselves are streamed from the file by the inference runner.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reltune.inference.questions import read_parquet_columns

    read_parquet_columns(path, (), file)  # a missing or unreadable file: one line
    present = set(pq.ParquetFile(path).schema_arrow.names)
    missing = [column for column in INDEX_COLUMNS if column not in present]
    if missing:
        raise InputError(file or path, f"missing columns {missing}")
    # batch by batch: reading the whole table at once holds every column's decoded pages too
    parquet = pq.ParquetFile(path, read_dictionary=["image_id", "kind", "predicate"])
    batches = list(parquet.iter_batches(batch_size=65_536, columns=list(INDEX_COLUMNS), use_threads=False))
    table = pa.Table.from_batches(batches, schema=parquet.schema_arrow if not batches else None).combine_chunks()
    return table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _has_duplicates(values) -> bool:
    """Whether a string column repeats a value (sorting: far less memory than a hash set of a million strings)."""
    import pyarrow.compute as pc

    if len(values) < 2:
        return False
    ordered = pc.take(values, pc.array_sort_indices(values))
    return pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py() or False


def _first_true(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def checked_positives(index, file: str):
    """The positive rows of an index table, checked: unique qids, a predicate each (errors name the file row)."""
    import pyarrow.compute as pc

    qids = index["qid"]
    if _has_duplicates(qids):
        duplicated = pd.Series(qids.to_numpy(zero_copy_only=False)).duplicated().to_numpy()  # error path only
        row = _first_row(duplicated)
        raise InputError(file, f"duplicate qid {qids[row].as_py()!r}", f"row {row}")
    positives = index.filter(pc.equal(index["kind"].cast("string"), "positive")).drop_columns(["kind"])
    no_predicate = pc.is_null(positives["predicate"])
    if pc.any(no_predicate).as_py():
        at = _first_true(no_predicate)
        qid, row = positives["qid"][at].as_py(), positives["row"][at].as_py()
        raise InputError(file, f"positive {qid!r} has no predicate", f"row {row}")
    return positives


def pool_of(positives, selected_qids, instructions_file: str, selection_file: str):
    """Positives whose qid is not selected; every selected qid must be a positive."""
    import pyarrow.compute as pc

    unknown = pc.invert(pc.is_in(selected_qids, value_set=positives["qid"]))
    if pc.any(unknown).as_py():
        row = _first_true(unknown)
        raise InputError(
            selection_file, f"qid {selected_qids[row].as_py()!r} is not a positive of {instructions_file}", f"row {row}"
        )
    return positives.filter(pc.invert(pc.is_in(positives["qid"], value_set=selected_qids)))


def check_index_images(index, image_ids: set[str], file: str) -> None:
    """`check_images_known` on an index table (errors name the file row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unknown = pc.invert(pc.is_in(index["image_id"].cast("string"), value_set=pa.array(sorted(image_ids), pa.string())))
    if pc.any(unknown).as_py():
        at = _first_true(unknown)
        image_id, qid, row = index["image_id"][at].as_py(), index["qid"][at].as_py(), index["row"][at].as_py()
        raise InputError(file, f"image {image_id!r} of qid {qid!r} is not in the scenes", f"row {row}")


def row_mask(rows: pd.Series | np.ndarray, total: int) -> np.ndarray:
    """Boolean mask over `total` file rows, True at `rows`."""
    mask = np.zeros(total, dtype=bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


def score_chunks(answered, similarity: Similarity):
    """Pool score rows (SCORE_COLUMNS) per answered (questions, beams) chunk of the runner."""
    for questions, beams in answered:
        yield score_questions(questions, lambda table: top_beam_answers(beams, len(table)), similarity)


def classify_chunks(answered) -> pd.DataFrame:
    """Classified rows (`classify_answers`) of every answered (questions, beams) chunk, concatenated."""
    parts = [
        classify_answers(questions.reset_index(drop=True), top_beam_answers(beams, len(questions)))
        for questions, beams in answered
    ]
    if parts:
        return pd.concat(parts, ignore_index=True)
    no_answers = pd.DataFrame(columns=["answer", "entropy", "sequence_score"])
    return classify_answers(pd.DataFrame(columns=list(QUESTION_COLUMNS)), no_answers)


def _drawn_rows(qids: pd.Series, predicates: pd.Series, quotas: Mapping[str, int], seed: int) -> np.ndarray:
    """Per predicate, the `quotas[p]` rows with the smallest seeded keys (keys in qid order): a mask."""
    # keys follow qid order, so the draw does not depend on the pool's row order
    qid_order = np.argsort(qids.astype(str).to_numpy(), kind="stable")
    keys = np.empty(len(qids))
    keys[qid_order] = np.random.default_rng(seed).random(len(qids))
    # rank of each row's key within its predicate (keys are distinct floats): keep rank < quota
    rank = pd.Series(keys).groupby(predicates.to_numpy()).rank(method="first").to_numpy() - 1
    return rank < predicates.map(quotas).to_numpy()
