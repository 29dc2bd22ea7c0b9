"""Does a tuned backbone miss held-out pairs for the relation or for the names? (issue 16, part 4)

An answer parses only when it opens with the asked subject name and closes with the asked object
name (DESIGN §6). On the held-out dataset the tiny model answers "Yes, ball on cake." about a fox
on a cake: the relation is read, the unseen name is not written, and the pair gets no prediction.
This asks every annotated test pair of `--scenes` its category questions (greedy answers, the
question set `predict` asks) and prints:

- the answers by kind (yes / no / malformed), all questions and the pair's own category only;
- of the malformed answers, how many write a held-in object name where an asked name belongs,
  and the most frequent such swaps (asked -> written); how many start an asked name and run on
  into more letters ("Yes, gemmon on cake." for a gem: misspelt), and the most frequent; how
  many end right after the asked subject's name ("Yes, fox."), and for which subjects;
- per object class, the share of the questions naming it that get a malformed answer (highest first);
- for own-category questions of pairs whose predicate the held-in data has: the share answered
  with that predicate and the asked names (parsed, right), with that predicate between other
  names (relation right, names not written), "No", or anything else;
- a copy probe: "Repeat the words: ..." over every dataset's names (pretraining's language-only
  question, `train.copy_replay`) in the phrase form the backbone was trained on (its
  `train.copy_phrase`: "a b" for `pair`, "a predicate b" for `triplet`, the same less its
  `train.converse_predicates` for `triplet-no-converse`; `--copy-phrase` picks another), exact
  answers, for phrases with a held-out name and for the others.

    .venv/bin/python benchmarks/heldout_names.py [--backbone models/round_final] [--scenes data/scenes/synthetic-ood]
        [--held-in data/scenes/synthetic] [--copy-phrase trained|pair|triplet|triplet-no-converse] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("RELTUNE_NO_PROGRESS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from reltune.data.scenes import read_scenes  # noqa: E402
from reltune.inference.answers import malformed_form, parse_answer  # noqa: E402
from reltune.inference.predict import candidate_pairs, categories_to_ask, pair_questions  # noqa: E402
from reltune.io import read_json  # noqa: E402
from reltune.models.backbone import BACKBONE_FILE, load_backbone  # noqa: E402
from reltune.models.pretrain import answer_questions  # noqa: E402
from reltune.models.replay import copy_examples, copy_vocabulary  # noqa: E402
from reltune.models.schedule import COPY_PHRASES  # noqa: E402
from reltune.text import normalise_predicate  # noqa: E402


def asked_questions(scenes: pd.DataFrame, vocab: dict) -> pd.DataFrame:
    """Every category question `predict` asks of the annotated pairs, with each pair's ground-truth predicates."""
    pairs = candidate_pairs(scenes, "annotated")
    truth: dict[tuple[str, int, int], set[str]] = {}
    for image_id, relations in zip(scenes["image_id"], scenes["relations"]):
        for relation in relations:
            truth.setdefault((str(image_id), int(relation["subj"]), int(relation["obj"])), set()).add(str(relation["predicate"]))
    questions = pair_questions(pairs, categories_to_ask(vocab, "vocab"))
    questions["truth"] = [truth[key] for key in zip(questions["image_id"], questions["subj"], questions["obj"])]
    paths = dict(zip(scenes["image_id"].astype(str), scenes["image_path"]))
    return questions.assign(image_path=questions["image_id"].map(paths))


def written_name(words: list[str], names: set[str], from_start: bool) -> str | None:
    """The longest of `names` that opens (or closes) the answer's words."""
    for length in (3, 2, 1):
        part = words[:length] if from_start else words[-length:]
        if len(part) == length and " ".join(part) in names:
            return " ".join(part)
    return None


def misspelt_name(words: list[str], asked: str, from_start: bool) -> str | None:
    """The answer's word where the asked name's first (last) word belongs, when it starts with that word
    and runs on into more letters ("gemmon" for "gem"); None otherwise."""
    asked_words = normalise_predicate(asked).split()
    if not words or not asked_words:
        return None
    written, expected = (words[0], asked_words[0]) if from_start else (words[-1], asked_words[-1])
    return written if written != expected and written.startswith(expected) else None


def classify(questions: pd.DataFrame, answers: list[str], categories: dict[str, str], seen_objects: set[str]) -> pd.DataFrame:
    """One row per question: answer kind, own category, held-in names written instead of asked ones, outcome."""
    rows = []
    for row, answer in zip(questions.itertuples(), answers):
        parsed = parse_answer(answer, row.subj_label, row.obj_label)
        words = parsed.remainder.split()
        own = {predicate for predicate in row.truth if categories.get(predicate) == row.category}
        swaps, misspellings = [], []
        if parsed.kind == "malformed" and words[:1] != ["no"]:
            for asked, from_start in ((row.subj_label, True), (row.obj_label, False)):
                written = written_name(words, seen_objects, from_start)
                if written is not None and written != normalise_predicate(asked):
                    swaps.append(f"{asked} -> {written}")
                misspelt = misspelt_name(words, asked, from_start)
                if misspelt is not None:
                    misspellings.append(f"{asked} -> {misspelt}")
        said = f" {parsed.remainder} "
        relation_inside = any(f" {normalise_predicate(predicate)} " in said for predicate in own)
        if parsed.kind == "yes" and parsed.predicate in {normalise_predicate(p) for p in own}:
            outcome = "right"
        elif parsed.kind == "malformed" and relation_inside:
            outcome = "relation right, names not written"
        elif parsed.kind == "no":
            outcome = "no"
        else:
            outcome = "other"
        rows.append(
            {
                "kind": parsed.kind, "own": bool(own), "own_predicates": own, "swaps": swaps, "misspellings": misspellings,
                "stopped": parsed.kind == "malformed"
                and malformed_form(parsed, row.subj_label, row.obj_label) == "stopped after subject",
                "outcome": outcome,
            }  # fmt: skip
        )
    return pd.DataFrame(rows)


def malformed_by_class(questions: pd.DataFrame, table: pd.DataFrame) -> dict[str, str]:
    """Per object class asked about (as subject or object), the share of its questions answered malformed, highest first."""
    is_malformed = (table["kind"] == "malformed").to_numpy()
    shares = {}
    for name in sorted(set(questions["subj_label"]) | set(questions["obj_label"])):
        naming = ((questions["subj_label"] == name) | (questions["obj_label"] == name)).to_numpy()
        shares[name] = (float(is_malformed[naming].mean()), int(naming.sum()))
    ranked = sorted(shares.items(), key=lambda item: (-item[1][0], item[0]))
    return {name: f"{share:.3f} of {count}" for name, (share, count) in ranked}


def trained_copy_settings(backbone_dir: str | Path) -> tuple[str, str]:
    """The `train.copy_phrase` and `train.converse_predicates` a tuned backbone's copy replay used
    ("pair" and "" when its metadata names none)."""
    metadata_file = Path(backbone_dir) / BACKBONE_FILE
    metadata = read_json(metadata_file) if metadata_file.is_file() else {}
    settings = (metadata.get("training") or {}).get("settings") or {}
    return str(settings.get("copy_phrase", "pair")), str(settings.get("converse_predicates", ""))


def copy_probe_questions(
    scenes: pd.DataFrame, names_source: str | Path, phrase: str, count: int, converse_predicates: str = ""
) -> pd.DataFrame:
    """`count` copy questions drawn as training draws them (`replay.copy_examples`, seed 0) in the `phrase` form,
    with `phrase_names`: the names each phrase is made of."""
    names, predicates = copy_vocabulary(names_source, phrase, converse_predicates)
    asked = copy_examples(scenes, names, count, seed=0, source=str(names_source), predicates=predicates)
    # the predicate of a triplet sits between the two object names of its target
    labels = list(zip(asked["target"], asked["subj_label"], asked["obj_label"]))
    asked["phrase_names"] = [{subj, obj, target[len(subj) + 1 : len(target) - len(obj) - 1]} - {""} for target, subj, obj in labels]
    return asked


def copy_probe(backbone, asked: pd.DataFrame, image_root: Path, held_out: set[str]) -> dict[str, float]:
    """Exact-answer share of the copy questions `asked`; by whether a held-out name is in the phrase."""
    answers = answer_questions(backbone, asked, image_root)
    right = [normalise_predicate(answer) == normalise_predicate(target) for answer, target in zip(answers, asked["target"])]
    unseen = [bool({normalise_predicate(name) for name in names} & held_out) for names in asked["phrase_names"]]
    share = lambda chosen: sum(r for r, c in zip(right, chosen) if c) / max(1, sum(chosen))  # noqa: E731
    return {"all": share([True] * len(right)), "with a held-out name": share(unseen), "held-in names only": share([not u for u in unseen])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="models/round_final")
    parser.add_argument("--scenes", default="data/scenes/synthetic-ood", help="the held-out scene directory")
    parser.add_argument("--held-in", default="data/scenes/synthetic", help="the held-in scene directory (seen names)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--copy-questions", type=int, default=400)
    parser.add_argument("--copy-phrase", choices=("trained", *COPY_PHRASES), default="trained",
                        help="the copy probe's phrase form (trained: the backbone's train.copy_phrase)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scenes, vocab = read_scenes(args.scenes, args.split)
    _, held_in_vocab = read_scenes(args.held_in, "train")
    seen_objects = {normalise_predicate(name) for name in held_in_vocab["objects"]}
    seen_predicates = set(held_in_vocab["predicates"])
    backbone = load_backbone(args.backbone)
    questions = asked_questions(scenes, vocab)
    answers = answer_questions(backbone, questions, Path(vocab["image_root"]))
    table = classify(questions, answers, vocab.get("categories", {}), seen_objects)

    print(f"{args.backbone} on {args.scenes} ({args.split}): {len(questions)} questions, greedy answers")
    print("answers by kind (all questions):", table["kind"].value_counts().to_dict())
    print("answers by kind (own category):", table.loc[table["own"], "kind"].value_counts().to_dict())
    malformed = table[table["kind"] == "malformed"]
    swapped = malformed["swaps"].map(bool)
    print(f"malformed answers writing a held-in object name where an asked name belongs: {int(swapped.sum())} of {len(malformed)}")
    print("  most frequent:", Counter(swap for swaps in malformed["swaps"] for swap in swaps).most_common(6))
    misspelt = malformed["misspellings"].map(bool)
    print(f"malformed answers starting an asked name and running on into more letters (misspelt): {int(misspelt.sum())} of {len(malformed)}")
    print("  most frequent:", Counter(item for items in malformed["misspellings"] for item in items).most_common(6))
    stopped = malformed[malformed["stopped"]]
    print(f"malformed answers ending right after the asked subject's name: {len(stopped)} of {len(malformed)}")
    print("  most frequent:", Counter(questions["subj_label"].iloc[stopped.index]).most_common(6))
    print("malformed share of the questions naming each class:", malformed_by_class(questions, table))
    seen = table["own"] & table["own_predicates"].map(lambda own: bool(own & seen_predicates))
    outcomes = table.loc[seen, "outcome"].value_counts()
    print(f"own-category questions of pairs with a seen predicate ({int(seen.sum())}):",
          {name: f"{count} ({count / seen.sum():.3f})" for name, count in outcomes.items()})  # fmt: skip
    held_out = {normalise_predicate(name) for name in vocab["objects"] + vocab["predicates"]} - seen_objects - {
        normalise_predicate(name) for name in seen_predicates
    }
    held_in_scenes, _ = read_scenes(args.held_in, "val")
    trained_phrase, converse_predicates = trained_copy_settings(args.backbone)
    phrase = trained_phrase if args.copy_phrase == "trained" else args.copy_phrase
    asked = copy_probe_questions(held_in_scenes, Path(args.scenes).parent, phrase, args.copy_questions, converse_predicates)
    probe = copy_probe(backbone, asked, Path(held_in_vocab["image_root"]), held_out)
    print(f"copy probe ('Repeat the words: ...', {phrase} phrases, exact):", {key: round(value, 3) for key, value in probe.items()})


if __name__ == "__main__":
    main()
