"""Answer parsing (DESIGN §6) and the pool outcome of an answer (DESIGN §6, ART selection).

An answer is lowercased and stripped of punctuation and of a leading `Yes,`;
the known subject label must then open it and the object label close it
(multi-word labels included, matched word by word); what lies between is the
predicate. An answer that starts with "No" is a negative answer. Anything
else is `malformed`: it is kept and counted, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from reltune.text import normalise_predicate

AnswerKind = Literal["yes", "no", "malformed"]
Outcome = Literal["TP", "FP", "FN"]
# where a malformed answer leaves the form "{s} {predicate} {o}", in reading order (`malformed_form`)
MALFORMED_FORMS = ("empty", "subject not written", "stopped after subject", "object not written", "no predicate")


@dataclass(frozen=True)
class ParsedAnswer:
    """`kind`: yes | no | malformed; `predicate`: the parsed predicate (yes only);
    `remainder`: the normalised answer without its leading "yes" (what a
    malformed answer said, used as its predicate for similarity)."""

    kind: AnswerKind
    predicate: str | None
    remainder: str


def parse_answer(answer: str, subject_label: str, object_label: str) -> ParsedAnswer:
    """Parse one generated answer about the pair (subject_label, object_label)."""
    words = normalise_predicate(answer).split()
    if words[:1] == ["no"]:
        return ParsedAnswer("no", None, " ".join(words))
    if words[:1] == ["yes"]:
        words = words[1:]
    remainder = " ".join(words)
    subject_words = normalise_predicate(subject_label).split()
    object_words = normalise_predicate(object_label).split()
    predicate_words = words[len(subject_words) : len(words) - len(object_words)]
    if (
        subject_words
        and object_words
        and predicate_words
        and words[: len(subject_words)] == subject_words
        and words[len(words) - len(object_words) :] == object_words
    ):
        return ParsedAnswer("yes", " ".join(predicate_words), remainder)
    return ParsedAnswer("malformed", None, remainder)


def malformed_form(parsed: ParsedAnswer, subject_label: str, object_label: str) -> str:
    """The first place where a malformed answer leaves the form `{s} {predicate} {o}` (one of MALFORMED_FORMS).

    "subject not written": the answer does not open with the asked subject (another or a misspelt name,
    "Yes, gemmon on cake." for a gem); "stopped after subject": it ends right after it ("Yes, fox."
    for a fox on a kite); "object not written": something follows the subject but the asked object does
    not close it; "no predicate": subject and object with nothing between.
    """
    if parsed.kind != "malformed":
        raise ValueError(f"only a malformed answer has a malformed form, got a {parsed.kind!r} answer")
    words = parsed.remainder.split()
    subject_words = normalise_predicate(subject_label).split()
    object_words = normalise_predicate(object_label).split()
    if not words:
        return "empty"
    if words[: len(subject_words)] != subject_words:
        return "subject not written"
    rest = words[len(subject_words) :]
    if not rest:
        return "stopped after subject"
    if rest[-len(object_words) :] != object_words:
        return "object not written"
    return "no predicate"


def malformed_forms(
    parsed: Sequence[ParsedAnswer], subject_labels: Iterable[str], object_labels: Iterable[str]
) -> list[str | None]:
    """`malformed_form` of each malformed answer about its (subject, object) labels; None for the others."""
    return [
        malformed_form(item, subject, obj) if item.kind == "malformed" else None
        for item, subject, obj in zip(parsed, subject_labels, object_labels)
    ]


def answer_outcome(parsed: ParsedAnswer, ground_truth_predicate: str) -> Outcome:
    """TP = parsed predicate equals the GT; FN = a "No" answer; FP = anything else (malformed included)."""
    if parsed.kind == "no":
        return "FN"
    if parsed.kind == "yes" and parsed.predicate == normalise_predicate(ground_truth_predicate):
        return "TP"
    return "FP"
