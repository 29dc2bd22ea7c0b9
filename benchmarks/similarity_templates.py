"""Which similarity sentence keeps the paper's 0.95 threshold meaningful (DESIGN §6)?

For each template, embeds VG150 relation sentences with the configured model
and compares, on the same subject/object labels:
- paraphrase pairs of VG150 predicates (should reach the threshold),
- every other pair of distinct VG150 predicates (should stay below it),
- pairs of opposite predicates (should stay below it),
- the paper's own examples (App. B and Sec. 3.2).

Usage:
    .venv/bin/python benchmarks/similarity_templates.py \
        [--dicts ../shared/reference/vg150_dicts_no_attributes.json] [--model DIR] [--label-pairs 30]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from reltune.embedding import similarity_from_settings

TEMPLATES = ("{s} {p} {o}", "Yes, {s} {p} {o}")
# VG150 predicate pairs that say the same thing (the paper's "girl with hair" ~ "girl has hair" included)
PARAPHRASES = (("wearing", "wears"), ("laying on", "lying on"), ("has", "with"), ("looking at", "watching"))
# pairs that contradict each other: the paper's reason for a high threshold ("bag on table" vs "bag under table")
OPPOSITES = (("above", "under"), ("over", "under"), ("on", "under"), ("in front of", "behind"), ("covering", "covered in"))
# the paper's examples: (s, p_predicted, p_gt, o, what the paper says)
PAPER_EXAMPLES = (
    ("girl", "has", "with", "hair", "similar (Fig. 3 A)"),
    ("bag", "under", "on", "table", "dissimilar (Fig. 3 B)"),
    ("man", "under", "in", "canoe", "dissimilar (App. D.3)"),
    ("man", "paddling", "in", "canoe", "similar (App. D.3)"),
    ("girl", "petting", "interacts with", "dog", "similar, 'underrecognised' (App. B)"),
)


def label_pairs(dicts: dict, count: int, seed: int) -> list[tuple[str, str]]:
    """Subject/object label pairs drawn by object frequency (seeded), distinct labels."""
    labels = sorted(dicts["object_count"])
    weights = np.array([dicts["object_count"][label] for label in labels], dtype=np.float64)
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        subject, object_ = rng.choice(len(labels), size=2, replace=False, p=weights / weights.sum())
        pairs.append((labels[subject], labels[object_]))
    return pairs


def measure(template: str, model: str, predicates: list[str], pairs: list[tuple[str, str]], threshold: float) -> dict:
    similarity = similarity_from_settings(model, template)
    predicate_pairs = list(itertools.combinations(predicates, 2))
    subjects, predicted, truth, objects = [], [], [], []
    for (subject, object_), (left, right) in itertools.product(pairs, predicate_pairs):
        subjects.append(subject), predicted.append(left), truth.append(right), objects.append(object_)
    values = similarity(subjects, predicted, truth, objects)
    paraphrase = np.array([frozenset((p, g)) in {frozenset(pair) for pair in PARAPHRASES} for p, g in zip(predicted, truth)])
    opposite = np.array([frozenset((p, g)) in {frozenset(pair) for pair in OPPOSITES} for p, g in zip(predicted, truth)])
    distinct = values[~paraphrase]
    over = pd.Series(values >= threshold)[~paraphrase].groupby([np.array(predicted)[~paraphrase], np.array(truth)[~paraphrase]]).mean()
    examples = similarity(*zip(*[(s, p, g, o) for s, p, g, o, _ in PAPER_EXAMPLES]))
    return {
        "template": template,
        "distinct_pairs": int(len(distinct)),
        "distinct_at_threshold_percent": float((distinct >= threshold).mean() * 100),
        "distinct_median": float(np.median(distinct)),
        "distinct_p99": float(np.quantile(distinct, 0.99)),
        "distinct_most_often_at_threshold": {f"{a} / {b}": round(float(v), 2) for (a, b), v in over.nlargest(8).items()},
        # threshold-free: probability that a paraphrase pair scores above a distinct pair
        "paraphrase_vs_distinct_auc": float(roc_auc_score(paraphrase, values)),
        "opposite_pairs": int(opposite.sum()),
        "opposite_at_threshold_percent": float((values[opposite] >= threshold).mean() * 100),
        "opposite_by_pair_at_threshold_percent": {
            f"{a} / {b}": float((values[np.array([{p, g} == {a, b} for p, g in zip(predicted, truth)])] >= threshold).mean() * 100)
            for a, b in OPPOSITES
        },
        "paraphrase_pairs": int(paraphrase.sum()),
        "paraphrase_at_threshold_percent": float((values[paraphrase] >= threshold).mean() * 100),
        "paraphrase_median": float(np.median(values[paraphrase])),
        "paraphrase_by_pair": {
            f"{a} / {b}": float(np.median(values[np.array([{p, g} == {a, b} for p, g in zip(predicted, truth)])])) for a, b in PARAPHRASES
        },
        "paper_examples": {f"{s} {p} {o} vs {s} {g} {o} ({said})": float(v) for (s, p, g, o, said), v in zip(PAPER_EXAMPLES, examples)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicts", default="../shared/reference/vg150_dicts_no_attributes.json")
    parser.add_argument("--model", default="", help="sentence-transformers directory ('' = the offline all-MiniLM package)")
    parser.add_argument("--label-pairs", type=int, default=30)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.dicts) as handle:
        dicts = json.load(handle)
    predicates = sorted(dicts["predicate_to_idx"])
    pairs = label_pairs(dicts, args.label_pairs, args.seed)
    results = [measure(template, args.model, predicates, pairs, args.threshold) for template in TEMPLATES]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
