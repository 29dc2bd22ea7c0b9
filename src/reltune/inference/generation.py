"""Batched beam search with the DESIGN §6 entropy, computed from the same generate call.

`generate_answers` asks the backbone one question per row of a table and
returns the M beams of each question (text, sequence score) together with the
question's entropy. The entropy comes from the raw per-step logits that
`generate(..., output_logits=True)` already returns: each returned beam is
traced back through `beam_indices` to the logits rows it was built from, so no
second forward pass is needed (paper Sec. 3.2).

The vision encoder runs once per distinct crop in a batch and its output is
reused by every question on that crop. Only the vision output can be shared:
InstructBLIP's Q-Former also reads the instruction, so it runs per question.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from reltune.progress import track

if TYPE_CHECKING:
    from PIL import Image

    from reltune.inference.vision_cache import CachedVisionEncoder
    from reltune.models.backbone import Backbone


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding parameters (params.yaml `score`; the CLI's defaults are these).

    `length_penalty` divides a finished beam's summed log-probability by
    length**length_penalty. While the model is weak, length normalisation
    favours the longer "No, ..." answer (DESIGN §9), hence no normalisation by
    default. `repetition_penalty` (the authors' decoding option, issue 14)
    divides a positive logit (multiplies a negative one) of every token
    already generated; the neutral default leaves decoding unchanged. The
    entropy always reads the raw logits, before any penalty.
    """

    num_beams: int = 3
    max_new_tokens: int = 32
    min_new_tokens: int = 1
    length_penalty: float = 0.0
    repetition_penalty: float = 1.0
    batch_size: int = 32

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "num_beams": self.num_beams,
            "num_return_sequences": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "do_sample": False,
            "output_logits": True,
            "output_scores": True,  # without it beam search returns no sequences_scores
            "return_dict_in_generate": True,
        }
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.num_beams > 1:
            # early stopping: done once M beams have finished (exact when length_penalty is 0,
            # since a longer continuation can only lower a summed log-probability)
            kwargs.update(length_penalty=self.length_penalty, early_stopping=True)
        return kwargs


def step_entropies(step_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Entropy (nats) of softmax(raw logits) for every step and logits row: (steps, rows)."""
    logits = torch.stack([step.float() for step in step_logits])
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    # a -inf logit has probability 0 and contributes 0 (avoid 0 * -inf = nan)
    terms = torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs))
    return -terms.sum(dim=-1)


def generated_length(beam_indices: torch.Tensor | None, step_logits: Sequence[torch.Tensor]) -> int:
    """Number of generated columns at the end of `sequences`.

    Beam search crops `sequences` and `beam_indices` to the longest returned
    beam, which can be shorter than the number of steps it ran (and of
    `step_logits`) when a beam that was not returned ran longer.
    """
    return beam_indices.shape[1] if beam_indices is not None else len(step_logits)


def generated_step_mask(
    beam_indices: torch.Tensor | None,
    sequences: torch.Tensor,
    steps: int,
    eos_token_id: int | None,
    pad_token_id: int | None,
) -> torch.Tensor:
    """(returned rows, steps) bool: the steps each returned sequence generated, through its EOS.

    With beam search, `beam_indices` is -1 after a beam ended, which marks the
    steps exactly. Without it (greedy), the generated tokens are the last
    `steps` columns of `sequences`: a row ends at its first EOS, else at the
    end of its non-padding tokens, else it used every step.
    """
    if beam_indices is not None:
        return beam_indices[:, :steps] >= 0
    generated = sequences[:, sequences.shape[1] - steps :]
    positions = torch.arange(steps, device=generated.device).expand_as(generated)
    lengths = torch.full((generated.shape[0],), steps, dtype=torch.long, device=generated.device)
    if eos_token_id is not None:
        is_eos = generated == eos_token_id
        first_eos = torch.where(is_eos, positions, steps).min(dim=1).values
        lengths = torch.where(is_eos.any(dim=1), first_eos + 1, lengths)
    if pad_token_id is not None and pad_token_id != eos_token_id:
        # a row without EOS that stopped early is padded after its last real token
        not_pad = generated != pad_token_id
        last_real = torch.where(not_pad, positions, -1).max(dim=1).values
        lengths = torch.minimum(lengths, last_real + 1)
    # the first column is always generated (padding only follows a finished row), even when the
    # token chosen there is the pad token (an untrained model does that)
    return positions < lengths.clamp(min=1)[:, None]


def per_beam_entropy(
    step_logits: Sequence[torch.Tensor],
    beam_indices: torch.Tensor | None,
    sequences: torch.Tensor,
    eos_token_id: int | None,
    pad_token_id: int | None,
) -> torch.Tensor:
    """Mean over each returned sequence's generated steps of the step entropy: (returned rows,).

    Step t of returned row r used logits row `beam_indices[r, t]` of
    `step_logits[t]` (the row of the beam it extended at that step); without
    beam indices (greedy) row r is its own logits row at every step.
    """
    steps = generated_length(beam_indices, step_logits)
    entropies = step_entropies(step_logits[:steps])  # (steps, logits rows)
    mask = generated_step_mask(beam_indices, sequences, steps, eos_token_id, pad_token_id)
    if beam_indices is not None:
        rows = beam_indices[:, :steps].long().clamp(min=0)
    else:
        rows = torch.arange(sequences.shape[0], device=entropies.device)[:, None].expand(-1, steps)
    step_index = torch.arange(steps, device=entropies.device)[None, :].expand_as(rows)
    traced = entropies[step_index, rows]  # (returned rows, steps)
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("a returned sequence has no generated step; cannot compute its entropy")
    return (traced * mask).sum(dim=1) / lengths


def beam_entropy(
    step_logits: Sequence[torch.Tensor],
    beam_indices: torch.Tensor | None,
    sequences: torch.Tensor,
    eos_token_id: int | None,
    pad_token_id: int | None,
    num_return_sequences: int,
) -> torch.Tensor:
    """DESIGN §6 entropy per question: per-beam mean step entropy, averaged over its M beams: (questions,)."""
    per_beam = per_beam_entropy(step_logits, beam_indices, sequences, eos_token_id, pad_token_id)
    return per_beam.view(-1, num_return_sequences).mean(dim=1)


def greedy_sequence_scores(
    step_logits: Sequence[torch.Tensor], generated: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Greedy decoding's counterpart of beam search's `sequences_scores` (length_penalty 0).

    Sum over each row's generated steps (through EOS) of log-softmax(raw
    logits) at the chosen token, as beam search accumulates it (its logits
    processors only mask tokens that were not chosen): the answer's log-probability.
    """
    log_probs = torch.log_softmax(torch.stack([step.float() for step in step_logits[: generated.shape[1]]]), dim=-1)
    chosen = log_probs.gather(-1, generated.T.unsqueeze(-1)).squeeze(-1).T  # (rows, steps)
    return torch.where(mask, chosen, torch.zeros_like(chosen)).sum(dim=1)


def _generate_with_shared_vision(
    model: Any, crop_features: torch.Tensor, crop_of_question: torch.Tensor, encoding: dict, generate_kwargs: dict
) -> Any:
    """InstructBlipForConditionalGeneration.generate with the vision encoder run once per crop.

    Mirrors `generate` / `get_image_features` of transformers 5.24, except that
    the vision output of the distinct crops (`crop_features`, computed here or
    read from the vision cache) is indexed per question before the
    (instruction-aware) Q-Former.
    """
    image_embeds = crop_features.index_select(0, crop_of_question)
    image_attention_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    query_tokens = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    query_attention_mask = torch.ones(query_tokens.shape[:-1], dtype=torch.long, device=image_embeds.device)
    qformer_attention_mask = torch.cat([query_attention_mask, encoding["qformer_attention_mask"]], dim=1)
    qformer_output = model.qformer(
        input_ids=encoding["qformer_input_ids"],
        attention_mask=qformer_attention_mask,
        query_embeds=query_tokens,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_attention_mask,
        return_dict=True,
    )
    query_output = qformer_output.last_hidden_state[:, : query_tokens.shape[1], :]
    language_model_inputs = model.language_projection(query_output)

    input_ids = encoding["input_ids"]
    inputs_embeds = model.get_input_embeddings()(input_ids)
    language_model_inputs = language_model_inputs.to(inputs_embeds.device, inputs_embeds.dtype)
    image_token_mask = model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
    inputs_embeds = inputs_embeds.masked_scatter(image_token_mask, language_model_inputs)
    inputs = {"inputs_embeds": inputs_embeds, "attention_mask": encoding["attention_mask"]}
    if not model.language_model.config.is_encoder_decoder:
        inputs["input_ids"] = input_ids
    return model.language_model.generate(**inputs, **generate_kwargs)


def encode_prompts(processor: Any, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The processor's text encoding of `prompts` with its image tokens, without any image.

    Equals the text part of `processor(images=..., text=prompts, padding=True,
    truncation=True)`: the prompts are padded / truncated first, then the
    num_query_tokens image tokens are prepended to every row (as the processor does).
    """
    encoding = processor(text=list(prompts), padding=True, truncation=True, return_tensors="pt")
    image_tokens = processor.tokenizer(
        processor.image_token.content * processor.num_query_tokens,
        add_special_tokens=False,
        padding=False,
        truncation=False,
    )
    rows = len(prompts)
    for name in ("input_ids", "attention_mask"):
        prefix = torch.as_tensor(image_tokens[name], dtype=encoding[name].dtype).expand(rows, -1)
        encoding[name] = torch.cat([prefix, encoding[name]], dim=1)
    return dict(encoding)


def _token_id(tokenizer: Any, name: str) -> int | None:
    value = getattr(tokenizer, name, None)
    return int(value) if value is not None else None


@torch.no_grad()
def generate_batch(
    backbone: Backbone,
    crops: Sequence[Image.Image] | None,
    crop_of_question: Sequence[int],
    prompts: Sequence[str],
    settings: GenerationSettings,
    share_vision: bool = True,
    crop_features: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Answer one batch of questions; question i is asked about `crops[crop_of_question[i]]`.

    `crop_features` (distinct crops, tokens, hidden), when given, replaces the
    vision encoder pass over `crops` (the vision cache); `crops` may then be None.
    Returns one row per (question, beam): `question` (position in `prompts`),
    `beam` (rank, 0 = best), `answer`, `sequence_score`, `beam_entropy` (that
    beam's mean step entropy) and `entropy` (the question's DESIGN §6 entropy).
    """
    model, processor = backbone.model, backbone.processor
    generate_kwargs = settings.generate_kwargs()
    if crop_features is not None:
        # truncation as in training (reltune.models.training): the Q-Former has a fixed position budget
        encoding = {key: value.to(backbone.device) for key, value in encode_prompts(processor, prompts).items()}
        crop_index = torch.as_tensor(list(crop_of_question), dtype=torch.long, device=backbone.device)
        output = _generate_with_shared_vision(model, crop_features, crop_index, encoding, generate_kwargs)
    else:
        if crops is None:
            raise ValueError("generate_batch needs crops or crop_features")
        # shared: each distinct crop once (the processor inserts the image tokens into every prompt
        # whatever the image count); reference path: one image per question through the stock generate
        images = list(crops) if share_vision else [crops[index] for index in crop_of_question]
        encoding = processor(images=images, text=list(prompts), padding=True, truncation=True, return_tensors="pt")
        encoding = {key: value.to(backbone.device) for key, value in encoding.items()}
        encoding["pixel_values"] = encoding["pixel_values"].to(backbone.dtype)
        if share_vision:
            crop_index = torch.as_tensor(list(crop_of_question), dtype=torch.long, device=backbone.device)
            vision_output = model.vision_model(pixel_values=encoding["pixel_values"], return_dict=True)
            output = _generate_with_shared_vision(
                model, vision_output.last_hidden_state, crop_index, encoding, generate_kwargs
            )
        else:
            output = model.generate(**encoding, **generate_kwargs)

    return beam_table(output, processor.tokenizer, settings.num_beams)


def beam_table(output: Any, tokenizer: Any, num_beams: int) -> pd.DataFrame:
    """One row per returned (question, beam) of a generate output: texts, sequence scores, entropies."""
    eos_token_id = _token_id(tokenizer, "eos_token_id")
    pad_token_id = _token_id(tokenizer, "pad_token_id")
    beam_indices = getattr(output, "beam_indices", None)  # absent with num_beams=1 (greedy)
    steps = generated_length(beam_indices, output.logits)
    beams = per_beam_entropy(output.logits, beam_indices, output.sequences, eos_token_id, pad_token_id)
    question_entropy = beams.view(-1, num_beams).mean(dim=1)
    generated = output.sequences[:, output.sequences.shape[1] - steps :]
    sequence_scores = getattr(output, "sequences_scores", None)
    if sequence_scores is None:
        mask = generated_step_mask(None, output.sequences, steps, eos_token_id, pad_token_id)
        sequence_scores = greedy_sequence_scores(output.logits, generated, mask)
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    returned = len(texts)
    return pd.DataFrame(
        {
            "question": [row // num_beams for row in range(returned)],
            "beam": [row % num_beams for row in range(returned)],
            "answer": [text.strip() for text in texts],
            "sequence_score": sequence_scores.float().cpu().numpy().astype("float64"),
            "beam_entropy": beams.cpu().numpy().astype("float64"),
            "entropy": question_entropy.repeat_interleave(num_beams).cpu().numpy().astype("float64"),
        }
    )


def empty_beams() -> pd.DataFrame:
    """A beam table with no rows (the columns and dtypes of `generate_batch`)."""
    return pd.DataFrame(
        {
            "question": pd.Series(dtype="int64"),
            "beam": pd.Series(dtype="int64"),
            "answer": pd.Series(dtype="object"),
            "sequence_score": pd.Series(dtype="float64"),
            "beam_entropy": pd.Series(dtype="float64"),
            "entropy": pd.Series(dtype="float64"),
        }
    )


def crop_batches(crop_keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Question positions in batches of `batch_size`, in order of each crop's first appearance.

    The stable order keeps one crop's questions together, so they share a
    batch and its vision forward.
    """
    first_seen: dict[Hashable, int] = {}
    for key in crop_keys:
        first_seen.setdefault(key, len(first_seen))
    order = sorted(range(len(crop_keys)), key=lambda position: first_seen[crop_keys[position]])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate_answers(
    backbone: Backbone,
    questions: pd.DataFrame,
    load_crop: Callable[[Hashable], Image.Image],
    settings: GenerationSettings,
    share_vision: bool = True,
    description: str = "answering",
    vision_cache: CachedVisionEncoder | None = None,
    crop_identity: Callable[[Hashable], str] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Answer every row of `questions` (columns `crop`: a hashable crop key, `prompt`).

    Questions are batched in crop order (`crop_batches`); `load_crop(key)`
    makes the image. With `vision_cache` (which needs `crop_identity(key)`,
    the crop's cache identity) the vision features come from the cache, and
    only missing crops are loaded and encoded. `on_batch(questions answered)`
    is called after every batch (the inference runner's progress); without it
    a progress bar named `description` is shown.
    Returns `generate_batch`'s table with `question` = the row position in
    `questions`, sorted by (question, beam).
    """
    if vision_cache is not None and crop_identity is None:
        raise ValueError("a vision cache needs crop_identity")
    if questions.empty:
        return empty_beams()
    crop_keys = list(questions["crop"])
    prompts = list(questions["prompt"])
    batches = crop_batches(crop_keys, settings.batch_size)
    tables = []
    for batch in track(batches, description) if on_batch is None else batches:
        batch_keys = list(dict.fromkeys(crop_keys[position] for position in batch))
        crop_slot = {key: slot for slot, key in enumerate(batch_keys)}
        if vision_cache is not None:
            crops = None
            crop_features = vision_cache.features(batch_keys, load_crop, crop_identity)
        else:
            crops = [load_crop(key) for key in batch_keys]
            crop_features = None
        table = generate_batch(
            backbone,
            crops,
            [crop_slot[crop_keys[position]] for position in batch],
            [prompts[position] for position in batch],
            settings,
            share_vision=share_vision,
            crop_features=crop_features,
        )
        table["question"] = [batch[index] for index in table["question"]]
        tables.append(table)
        if on_batch is not None:
            on_batch(len(batch))
    return pd.concat(tables, ignore_index=True).sort_values(["question", "beam"], kind="stable", ignore_index=True)


def answer_questions(
    backbone: Backbone,
    questions: pd.DataFrame,
    crop_loader: Callable[[Hashable], Image.Image],
    settings: GenerationSettings,
    share_vision: bool = True,
    description: str = "answering",
    vision_cache: CachedVisionEncoder | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """All M beams for every question (columns `image_id`, `union_box`, `prompt`).

    `vision_cache` needs a `CropLoader` (its `identity` names the cached crops).

    Questions are answered in image order (so each image is read once) and the
    result's `question` is the row position in `questions`.
    """
    keyed = pd.DataFrame(
        {
            "crop": [
                (str(image_id), tuple(float(value) for value in box))
                for image_id, box in zip(questions["image_id"], questions["union_box"])
            ],
            "prompt": list(questions["prompt"]),
        }
    )
    order = np.argsort(questions["image_id"].astype(str).to_numpy(), kind="stable")
    answers = generate_answers(
        backbone,
        keyed.iloc[order].reset_index(drop=True),
        crop_loader,
        settings,
        share_vision,
        description,
        vision_cache=vision_cache,
        crop_identity=getattr(crop_loader, "identity", None),
        on_batch=on_batch,
    )
    answers["question"] = order[answers["question"].to_numpy()]
    return answers.sort_values(["question", "beam"], kind="stable", ignore_index=True)
