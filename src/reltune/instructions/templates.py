"""Question and answer strings of the relation-tuning format (paper Fig. 2, DESIGN §6).

Every function takes whole columns (pandas Series of str) and concatenates
them in one vectorised pass; a single question is the same call on a
one-element Series. The exact wording is part of the data contract: the
answer parser and the tests rely on it character for character.

With categories (the final format, Fig. 2):
  question  Is there a prominent {category} relation between {s} (subject) and {o} (object) in the image?
  positive  Yes, {s} {predicate} {o}.
  negative  No, there is no prominent {category} relation between {s} and {o}.

Without categories (Tab. 2, first row; paper §3.1 "naive" question):
  question  Is there a relation between {s} (subject) and {o} (object) in the image?
  positive  Yes, {s} {predicate} {o}.
  (no negatives: see `reltune.instructions.build.InstructionOptions`)
"""

from __future__ import annotations

import pandas as pd


def category_question(category: pd.Series, subj_label: pd.Series, obj_label: pd.Series) -> pd.Series:
    """`Is there a prominent {category} relation between {s} (subject) and {o} (object) in the image?`"""
    return (
        "Is there a prominent "
        + category
        + " relation between "
        + subj_label
        + " (subject) and "
        + obj_label
        + " (object) in the image?"
    )


def naive_question(subj_label: pd.Series, obj_label: pd.Series) -> pd.Series:
    """`Is there a relation between {s} (subject) and {o} (object) in the image?`"""
    return "Is there a relation between " + subj_label + " (subject) and " + obj_label + " (object) in the image?"


def positive_answer(subj_label: pd.Series, predicate: pd.Series, obj_label: pd.Series) -> pd.Series:
    """`Yes, {s} {predicate} {o}.`"""
    return "Yes, " + subj_label + " " + predicate + " " + obj_label + "."


def category_negative_answer(category: pd.Series, subj_label: pd.Series, obj_label: pd.Series) -> pd.Series:
    """`No, there is no prominent {category} relation between {s} and {o}.`"""
    return "No, there is no prominent " + category + " relation between " + subj_label + " and " + obj_label + "."
