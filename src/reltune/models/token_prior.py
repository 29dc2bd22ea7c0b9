"""A language prior for the tiny model's words: token embeddings from the sentence model (issue 16, part 4).

A real InstructBLIP meets an unseen object name ("fox") with a pretrained
language model that already places it near the names it was tuned on. The
random tiny model has no such prior: an unseen name is a token whose embedding
only the copy questions ever trained, and measured, answers about a pair with
one collapse (docs/RESULTS.md "Where held-out transfer is lost: the unseen names").

Here each token of the tiny BPE vocabulary starts from the sentence model's
embedding of its text (all-MiniLM-L6-v2, shipped offline), reduced to the
model's width by PCA (scikit-learn) and scaled to the std of transformers'
init (fox next to bear and bird). `sentence` then trains them as any weight;
`sentence-frozen` keeps them frozen in pretraining and tuning, so the geometry
is not lost for the names training sees. transformers ties T5's output head to
its input embeddings, so frozen ones are the output head too; measured, that
pretraining answers yes/no questions at chance, while `sentence` keeps the
geometry anyway (docs/RESULTS.md "A language prior for unseen names"). Only language
is used: token texts, never an image or a relation answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from reltune.errors import InputError

TOKEN_PRIORS = ("none", "sentence", "sentence-frozen")
# The tiny model's word-embedding matrices: the LM's (tied to its output head) and the Q-Former's.
TOKEN_EMBEDDINGS = ("language_model.shared.weight", "qformer.embeddings.word_embeddings.weight")


def token_texts(tokenizer, special_tokens: Sequence[str]) -> list[str]:
    """Each token id's text as it reads in a sentence ('' for special tokens and pieces that decode to space only)."""
    texts = []
    for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        texts.append("" if token in special_tokens else tokenizer.convert_tokens_to_string([token]).strip())
    return texts


def prior_vectors(vectors: np.ndarray, width: int, std: float) -> np.ndarray:
    """(n, width): `vectors` projected on their first `width` principal axes, scaled to an overall std of `std`."""
    from sklearn.decomposition import PCA

    if width > min(vectors.shape):
        raise InputError("--token-prior", f"model width {width} exceeds the {min(vectors.shape)} principal axes of the token vectors")
    projected = PCA(n_components=width, svd_solver="full").fit_transform(vectors.astype(np.float64))
    return (projected * (std / projected.std())).astype(np.float32)


def apply_sentence_prior(model: torch.nn.Module, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> None:
    """Set the word embeddings (TOKEN_EMBEDDINGS) of tokens with text from `embed(texts)`.

    Special and blank tokens keep their random init (at the same scale), the rest share one projection per matrix.
    """
    with_text = [index for index, text in enumerate(texts) if text]
    vectors = embed([texts[index] for index in with_text])
    with torch.no_grad():
        for name in TOKEN_EMBEDDINGS:
            weight = model.get_parameter(name)
            if weight.shape[0] != len(texts):
                raise InputError(name, f"{weight.shape[0]} rows for a vocabulary of {len(texts)} tokens")
            prior = prior_vectors(vectors, weight.shape[1], float(weight.std()))
            weight[with_text] = torch.from_numpy(prior).to(weight.dtype)
