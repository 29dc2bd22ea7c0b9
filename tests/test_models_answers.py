"""DESIGN §6 answer parsing and the TP / FP / FN outcome of an answer."""

from __future__ import annotations

import pytest

from reltune.inference.answers import ParsedAnswer, answer_outcome, malformed_form, parse_answer


@pytest.mark.parametrize(
    ("answer", "subject", "obj", "expected"),
    [
        ("Yes, man riding horse.", "man", "horse", ParsedAnswer("yes", "riding", "man riding horse")),
        # multi-word labels at both ends, multi-word predicate in between
        (
            "Yes, traffic light on top of street sign.",
            "traffic light",
            "street sign",
            ParsedAnswer("yes", "on top of", "traffic light on top of street sign"),
        ),
        # case and punctuation do not matter; underscores in labels are spaces
        ("YES,  Red-Car  parked_on street!", "red car", "street", ParsedAnswer("yes", "parked on", "red car parked on street")),
        ("yes, wine_glass next to wine glass", "wine_glass", "wine glass", ParsedAnswer("yes", "next to", "wine glass next to wine glass")),
        # "Yes," is stripped when present, not required
        ("man has hat", "man", "hat", ParsedAnswer("yes", "has", "man has hat")),
        # same label on both sides
        ("Yes, man near man.", "man", "man", ParsedAnswer("yes", "near", "man near man")),
    ],
)
def test_parse_positive_answers(answer: str, subject: str, obj: str, expected: ParsedAnswer) -> None:
    assert parse_answer(answer, subject, obj) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "No, there is no prominent spatial relation between man and horse.",
        "no",
        "No. man riding horse",
    ],
)
def test_no_answers_are_negative(answer: str) -> None:
    parsed = parse_answer(answer, "man", "horse")
    assert parsed.kind == "no"
    assert parsed.predicate is None


@pytest.mark.parametrize(
    ("answer", "remainder"),
    [
        ("Yes, horse riding man.", "horse riding man"),  # labels swapped
        ("Yes, man riding.", "man riding"),  # object missing
        ("Yes, man horse.", "man horse"),  # no predicate between the labels
        ("Yes, mango riding horse", "mango riding horse"),  # 'man' only as a prefix of a word
        ("Yes, man riding horses", "man riding horses"),  # 'horse' only as a prefix of the last word
        ("Yes.", ""),
        ("", ""),
        ("Nothing, man riding horse", "nothing man riding horse"),  # 'no' must be a whole word
    ],
)
def test_anything_else_is_malformed(answer: str, remainder: str) -> None:
    assert parse_answer(answer, "man", "horse") == ParsedAnswer("malformed", None, remainder)


def test_multi_word_label_must_match_whole_words() -> None:
    # "car" is the end of the subject label "red car" but the answer starts with "car"
    assert parse_answer("Yes, car on street.", "red car", "street").kind == "malformed"
    assert parse_answer("Yes, red car on big street.", "red car", "street").predicate == "on big"


def test_outcomes() -> None:
    assert answer_outcome(parse_answer("Yes, man riding horse.", "man", "horse"), "riding") == "TP"
    # the GT predicate is normalised too (Open Images style underscores)
    assert answer_outcome(parse_answer("Yes, man interacts with horse.", "man", "horse"), "interacts_with") == "TP"
    assert answer_outcome(parse_answer("Yes, man on horse.", "man", "horse"), "riding") == "FP"
    assert answer_outcome(parse_answer("Yes, horse riding man.", "man", "horse"), "riding") == "FP"  # malformed
    assert answer_outcome(parse_answer("No, there is no prominent semantic relation between man and horse.", "man", "horse"), "riding") == "FN"


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        ("Yes, red car.", "stopped after subject"),  # a multi-word subject, then nothing
        ("Yes, red carpet on street.", "subject not written"),  # run on into more letters
        ("Yes, car on street.", "subject not written"),  # half the subject
        ("Yes, red car on road.", "object not written"),
        ("Yes, red car street.", "no predicate"),
    ],
)
def test_malformed_forms_name_where_the_answer_leaves_the_form(answer: str, form: str) -> None:
    assert malformed_form(parse_answer(answer, "red car", "street"), "red car", "street") == form


def test_only_malformed_answers_have_a_malformed_form() -> None:
    with pytest.raises(ValueError, match="'yes' answer"):
        malformed_form(parse_answer("Yes, man on horse.", "man", "horse"), "man", "horse")
