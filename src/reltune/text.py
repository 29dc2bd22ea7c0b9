"""Text normalisation shared by answer parsing, similarity and metrics."""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalise_predicate(text: str) -> str:
    """Lowercase, `_` -> space, punctuation removed, single spaces (DESIGN §7)."""
    text = str(text).lower().replace("_", " ")
    text = _PUNCTUATION.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def relation_sentence(subject_label: str, predicate: str, object_label: str) -> str:
    """`"{subj_label} {predicate} {obj_label}"` normalised, as embedded for similarity."""
    return normalise_predicate(f"{subject_label} {predicate} {object_label}")
