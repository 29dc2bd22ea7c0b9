"""Converse questions during relation tuning: a direction question asked again with its objects swapped.

Every training question "cup above plate" also holds read the other way: "plate below cup". With
`train.converse_predicates: "above:below,left of:right of"` each selected positive of such a
predicate is asked a second time about the same crop with subject and object swapped, answered with
the converse predicate, and its negative likewise. Why: the training split's direction pairs are
lopsided (128 above, 60 below, 42 left of, 36 right of) and the tuned model answers them by that
prior, one axis leaning onto one answer (docs/RESULTS.md "Repeating rare predicates"). With every direction
question beside its converse, each answer is asked exactly as often as its opposite on the same
crops, so neither can be learned without the other and only the image tells them apart.

With `train.converse_batches` each converse is put in the same batch as its source question
(`converse_groups`): every step then sees both readings of a pair, so a model that leans towards one
answer of an axis loses on one of the two in the same step instead of one step after the other.

A converse is skipped when the instructions already ask about the swapped pair in that category (a
second, possibly different answer to the same question would contradict it); the skipped count is
reported. Nothing outside the training instructions is read.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence

import pandas as pd

from reltune.errors import InputError
from reltune.instructions.templates import category_negative_answer, category_question, naive_question, positive_answer

# the columns the converse of an instruction row needs (besides relation_training_examples' own)
CONVERSE_COLUMNS = ["subj", "obj", "category", "predicate"]
CONVERSE_SUFFIX = "-converse"  # a converse question's qid: its source's qid and this
_SWAPPED = {"subj": "obj", "obj": "subj", "subj_label": "obj_label", "obj_label": "subj_label"}


def converse_pairs(spec: str, option: str = "--converse-predicates") -> dict[str, str]:
    """"above:below,left of:right of" -> each predicate's converse, both ways ('' -> {})."""
    converses: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        names = [name.strip() for name in item.split(":")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise InputError(option, f"{item!r} is not two different predicates 'a:b'")
        for name, converse in (names, names[::-1]):
            if name in converses:
                raise InputError(option, f"predicate {name!r} is named twice")
            converses[name] = converse
    return converses


def _question_keys(rows: pd.DataFrame, swapped: bool = False) -> list[tuple[str, int, int, str]]:
    """(image, subject, object, category) of each row's question, or of its question with the objects swapped."""
    first, second = ("obj", "subj") if swapped else ("subj", "obj")
    return list(zip(rows["image_id"].astype(str), rows[first], rows[second], rows["category"]))


def converse_instructions(instructions: pd.DataFrame, converses: dict[str, str], source: str = "instructions") -> tuple[pd.DataFrame, int]:
    """(the converse of every positive of a `converses` predicate and of its negatives, indexed by the source qid; skipped).

    The rows keep the instruction columns with subject and object swapped; the prompt and answer are
    rebuilt with the instruction templates (the category question when the source has one).
    """
    positives = instructions[instructions["kind"] == "positive"]
    named = set(positives["predicate"].dropna().astype(str))
    unknown = sorted(set(converses) - named)
    if unknown:
        raise InputError(source, f"train.converse_predicates names {unknown}, which no training positive has")
    asked = set(_question_keys(instructions))
    sources = positives[positives["predicate"].astype(str).isin(converses)]
    free = [key not in asked for key in _question_keys(sources, swapped=True)]
    skipped = free.count(False)
    sources = sources[free]
    negatives = instructions[(instructions["kind"] == "negative") & instructions["positive_qid"].astype(str).isin(set(sources["qid"].astype(str)))]
    # a negative's converse asks its category about the swapped pair: only where nothing else asks it
    negatives = negatives[[key not in asked for key in _question_keys(negatives, swapped=True)]]
    rows = pd.concat([sources, negatives]).rename(columns=_SWAPPED)
    rows["source_qid"] = rows["qid"].astype(str)
    rows["qid"] = rows["source_qid"] + CONVERSE_SUFFIX
    is_positive = rows["kind"] == "positive"
    rows.loc[is_positive, "predicate"] = rows.loc[is_positive, "predicate"].astype(str).map(converses)
    subjects, objects, categories = rows["subj_label"].astype(str), rows["obj_label"].astype(str), rows["category"].astype(str)
    rows["prompt"] = _swapped_questions(rows, subjects, objects, categories, source)
    rows["target"] = positive_answer(subjects, rows["predicate"].astype(str), objects).where(
        is_positive, category_negative_answer(categories, subjects, objects)
    )
    return rows.set_index("source_qid"), skipped


def _swapped_questions(rows: pd.DataFrame, subjects: pd.Series, objects: pd.Series, categories: pd.Series, source: str) -> pd.Series:
    """Each swapped row's question in its source's template: the category question where the source asked
    one, the naive question where it asked that; a prompt that is neither is refused, naming its qid."""
    prompts = rows["prompt"].astype(str)
    # the source asked about the swapped row's (object, subject)
    asked_category = prompts == category_question(categories, objects, subjects)
    asked_naive = prompts == naive_question(objects, subjects)
    unknown = ~(asked_category | asked_naive)
    if unknown.any():
        qid = str(rows.loc[unknown, "source_qid"].iloc[0])
        raise InputError(source, "the prompt is neither the category nor the naive question of its pair: no converse can be asked", where=f"qid {qid}")
    return category_question(categories, subjects, objects).where(asked_category, naive_question(subjects, objects))


def with_converses(examples: pd.DataFrame, instructions: pd.DataFrame, spec: str, source: str = "instructions") -> tuple[pd.DataFrame, int]:
    """(`examples` followed by the converse of each row that has one, every copy of a repeated row included; skipped).

    Unchanged when `spec` is ''. `examples` are relation_training_examples' rows (after repeats).
    """
    converses = converse_pairs(spec)
    if not converses:
        return examples, 0
    missing = [column for column in CONVERSE_COLUMNS if column not in instructions.columns]
    if missing:
        raise InputError(source, f"train.converse_predicates needs the instruction columns {missing}")
    rows, skipped = converse_instructions(instructions, converses, source)
    has_converse = examples["qid"].astype(str).isin(rows.index)
    # the converse rows carry every example column but the image path, which the source row has (same crop)
    added = rows.loc[examples.loc[has_converse, "qid"].astype(str), [c for c in examples.columns if c != "image_path"]]
    added = added.assign(image_path=examples.loc[has_converse, "image_path"].to_numpy())[list(examples.columns)]
    return pd.concat([examples, added], ignore_index=True), skipped


def converse_groups(qids: Sequence[str], rows: int) -> tuple[int, ...]:
    """A group id for each of `rows` training rows (the first `len(qids)` are the example rows, by qid).

    A converse question (qid `<source>-converse`) shares its source row's group; a qid asked several
    times (repeats) pairs its k-th converse with its k-th row, as `with_converses` adds them. Every
    other row, and each row past `qids` (the renamed copies), is a group of its own.
    """
    group_of = list(range(rows))
    unpaired: dict[str, deque[int]] = defaultdict(deque)
    for row, qid in enumerate(qids):
        if not qid.endswith(CONVERSE_SUFFIX):
            unpaired[qid].append(row)
    for row, qid in enumerate(qids):
        if qid.endswith(CONVERSE_SUFFIX):
            sources = unpaired.get(qid[: -len(CONVERSE_SUFFIX)])
            if not sources:
                raise ValueError(f"converse question {qid} has no source row left to pair with")
            group_of[row] = group_of[sources.popleft()]
    return tuple(group_of)
