"""Predicate -> category maps (spatial | possessive | semantic), one file per dataset.

The paper does not publish its mapping; these files are ours (DESIGN §6):
spatial = arrangement (above, in, near, on, under, ...), possessive =
ownership, part or attire (has, wearing, of, with, part of, made of, ...),
semantic = an activity (holding, riding, eating, sitting on, looking at, ...).
Every predicate of a dataset is mapped explicitly; an unmapped one is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from reltune.errors import InputError
from reltune.text import normalise_predicate

CATEGORIES = ("spatial", "possessive", "semantic")
CATEGORY_DIR = Path(__file__).with_name("categories")


def available_category_maps() -> list[str]:
    """Dataset names that have a category map (file stems in categories/)."""
    return sorted(path.stem for path in CATEGORY_DIR.glob("*.json"))


@cache
def load_category_map(dataset: str) -> dict[str, str]:
    """The full map of one dataset, keys normalised; checks every value."""
    path = CATEGORY_DIR / f"{dataset}.json"
    if not path.is_file():
        raise InputError(
            path, f"no predicate category map for dataset {dataset!r} (have: {', '.join(available_category_maps())})"
        )
    raw = json.loads(path.read_text())
    mapping: dict[str, str] = {}
    for predicate, category in raw.items():
        if category not in CATEGORIES:
            raise InputError(path, f"category {category!r} is not one of {CATEGORIES}", where=predicate)
        mapping[normalise_predicate(predicate)] = category
    return mapping


def predicate_categories(dataset: str, predicates: Iterable[str]) -> dict[str, str]:
    """Category of each predicate (keys as given); InputError naming unmapped ones."""
    mapping = load_category_map(dataset)
    predicates = list(predicates)
    unmapped = [p for p in predicates if normalise_predicate(p) not in mapping]
    if unmapped:
        raise InputError(
            CATEGORY_DIR / f"{dataset}.json",
            f"predicates with no category in dataset {dataset!r}: {', '.join(map(repr, unmapped))}",
        )
    return {p: mapping[normalise_predicate(p)] for p in predicates}
