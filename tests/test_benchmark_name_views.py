"""benchmarks/name_views.py: the `extra` variant's substituted copies (share, at least one name, both texts)."""

import re

import pandas as pd
import pytest
from scipy.stats import binomtest

from benchmark_helpers import load_benchmark

POOL = ("alpha", "bravo", "charlie", "delta")


@pytest.fixture(scope="module")
def name_views():
    return load_benchmark("name_views")


def questions(count: int) -> pd.DataFrame:
    """Pairs of two classes (2/3 of rows) and of one class (1/3: one name, replaced together)."""
    pairs = [("man", "horse"), ("dog", "dog"), ("kite", "man")]
    rows = []
    for index in range(count):
        subject, obj = pairs[index % 3]
        rows.append({"qid": f"q{index}", "kind": "positive", "subj_label": subject, "obj_label": obj,
                     "prompt": f"Is there a relation between {subject} (subject) and {obj} (object)?",
                     "target": f"Yes, {subject} near {obj}."})  # fmt: skip
    return pd.DataFrame(rows)


def test_copies_replace_at_least_one_name_in_both_texts_at_the_replace_share(name_views):
    chosen = questions(3000)
    copies = name_views.substituted_copies(chosen, POOL, 0.25, seed=0)
    assert copies["qid"].str.endswith("#names").all() and copies["qid"].is_unique
    sources = chosen.set_index("qid").loc[copies["qid"].str.removesuffix("#names")]
    for copy, (_, source) in zip(copies.itertuples(), sources.iterrows()):
        kept = [label for label in dict.fromkeys((source["subj_label"], source["obj_label"])) if re.search(rf"\b{label}\b", copy.prompt)]
        assert len(kept) < len(set((source["subj_label"], source["obj_label"])))  # at least one name gone
        new_words = set(re.findall(r"[a-z]+", copy.prompt)) - set(re.findall(r"[a-z]+", source["prompt"]))
        assert new_words and new_words <= set(POOL) and new_words <= set(re.findall(r"[a-z]+", copy.target))
    # the share `replace` alters: 1 - 0.75^2 for two classes, 0.25 for one
    two_classes = chosen["subj_label"] != chosen["obj_label"]
    copied = chosen["qid"].isin(sources.index)
    assert binomtest(int(copied[two_classes].sum()), int(two_classes.sum()), 1 - 0.75**2).pvalue > 0.001
    assert binomtest(int(copied[~two_classes].sum()), int((~two_classes).sum()), 0.25).pvalue > 0.001
    # seeded: the same copies again, other ones with another seed
    assert name_views.substituted_copies(chosen, POOL, 0.25, seed=0).equals(copies)
    assert not name_views.substituted_copies(chosen, POOL, 0.25, seed=1).equals(copies)
