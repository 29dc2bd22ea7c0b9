"""Small byte-level BPE tokenizer for the tiny backbone (DESIGN §9).

Trained offline on a corpus the caller gives (instruction texts, world
vocabulary, generic pretraining questions). The byte-level alphabet is always
part of the vocabulary, so any unseen word (held-out objects and predicates)
still tokenizes into byte pieces and decodes back to the same text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from reltune.errors import InputError

PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
# Ids fixed by order: T5 expects pad = 0 (also its decoder start) and eos = 1.
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN)
PAD_ID, EOS_ID, UNK_ID, IMAGE_ID = range(len(SPECIAL_TOKENS))


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE tokenizer; sequences get `</s>` appended (T5 convention)."""
    texts = [str(text) for text in corpus if str(text).strip()]
    if not texts:
        raise InputError("tokenizer corpus", "is empty: give instruction texts and world vocabulary")
    minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < minimum:
        raise InputError("tokenizer", f"vocab_size {vocab_size} is below the byte alphabet + specials ({minimum})")
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space: a word tokenizes the same at the start of a text and after a space.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, EOS_ID)]
    )
    return tokenizer


def wrap_fast_tokenizer(tokenizer: Tokenizer, model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer (pad right, eos, unk)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )
