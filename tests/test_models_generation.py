"""Beam entropy (DESIGN §6) on fixed tensors and on a real tiny model; shared vision forward."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_models_answers_helpers import single_torch_thread, tiny_backbone  # noqa: F401 (autouse fixture)

from reltune.inference.generation import (
    GenerationSettings,
    beam_entropy,
    generate_answers,
    generate_batch,
    generated_length,
    per_beam_entropy,
    step_entropies,
)

NEG = float("-inf")
UNIFORM4 = [0.0, 0.0, 0.0, 0.0]  # entropy ln 4
UNIFORM2 = [0.0, 0.0, NEG, NEG]  # entropy ln 2
CERTAIN = [0.0, NEG, NEG, NEG]  # entropy 0
SKEWED = [math.log(1), math.log(2), math.log(3), math.log(4)]  # p = .1 .2 .3 .4
H_SKEWED = -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
LN4, LN2 = math.log(4), math.log(2)


def fixed_logits() -> tuple[torch.Tensor, ...]:
    """3 steps x 4 logits rows (2 questions x 2 beams) + a 4th step run by a beam that was not returned."""
    return (
        torch.tensor([UNIFORM4, UNIFORM2, CERTAIN, SKEWED]),
        torch.tensor([UNIFORM2, SKEWED, UNIFORM4, CERTAIN]),
        torch.tensor([SKEWED, UNIFORM4, UNIFORM2, UNIFORM4]),
        torch.tensor([CERTAIN, CERTAIN, CERTAIN, CERTAIN]),
    )


def test_step_entropies_match_hand_values() -> None:
    entropies = step_entropies(fixed_logits())
    assert entropies.shape == (4, 4)
    np.testing.assert_allclose(entropies[0].numpy(), [LN4, LN2, 0.0, H_SKEWED], rtol=1e-6, atol=1e-7)


def test_beam_entropy_follows_beam_indices_through_eos() -> None:
    # returned rows: (q0,b0) full length, (q0,b1) EOS at step 1, (q1,b0) EOS at step 1, (q1,b1) EOS at step 0
    beam_indices = torch.tensor([[0, 1, 1], [0, 0, -1], [3, 2, -1], [2, -1, -1]])
    sequences = torch.tensor([[0, 5, 6, 7], [0, 5, 1, 0], [0, 6, 1, 0], [0, 1, 0, 0]])  # start, tokens, pad
    per_beam = per_beam_entropy(fixed_logits(), beam_indices, sequences, eos_token_id=1, pad_token_id=0)
    expected_beams = [
        (LN4 + H_SKEWED + LN4) / 3,  # rows 0, 1, 1 at steps 0, 1, 2
        (LN4 + LN2) / 2,  # rows 0, 0
        (H_SKEWED + LN4) / 2,  # rows 3, 2 (second question: batch offset 2)
        0.0,  # row 2 at step 0
    ]
    np.testing.assert_allclose(per_beam.numpy(), expected_beams, rtol=1e-6, atol=1e-7)
    per_question = beam_entropy(fixed_logits(), beam_indices, sequences, 1, 0, num_return_sequences=2)
    np.testing.assert_allclose(
        per_question.numpy(),
        [(expected_beams[0] + expected_beams[1]) / 2, (expected_beams[2] + expected_beams[3]) / 2],
        rtol=1e-6,
    )
    assert generated_length(beam_indices, fixed_logits()) == 3


def test_greedy_entropy_stops_at_eos() -> None:
    logits = fixed_logits()[:3]
    # greedy: row r is its own logits row; row 0 ends with EOS at step 1, row 1 runs all steps
    sequences = torch.tensor([[0, 5, 1, 0], [0, 5, 6, 7], [0, 1, 0, 0], [0, 7, 7, 7]])
    per_row = per_beam_entropy(logits, None, sequences, eos_token_id=1, pad_token_id=0)
    np.testing.assert_allclose(
        per_row.numpy(),
        [(LN4 + LN2) / 2, (LN2 + H_SKEWED + LN4) / 3, 0.0, (H_SKEWED + 0.0 + LN4) / 3],
        rtol=1e-6,
        atol=1e-7,
    )


def test_greedy_first_step_counts_even_when_it_chose_the_pad_token() -> None:
    from reltune.inference.generation import generated_step_mask

    # an untrained model may pick the pad token first: that step was generated, the rest is padding
    sequences = torch.tensor([[0, 0, 0], [0, 5, 1]])
    mask = generated_step_mask(None, sequences, steps=2, eos_token_id=1, pad_token_id=0)
    assert mask.tolist() == [[True, False], [True, True]]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory):
    backbone = tiny_backbone(tmp_path_factory.mktemp("tiny") / "backbone", seed=3)
    model = backbone.model
    with torch.no_grad():
        # soften the random model's near-deterministic logits (non-trivial entropies) and make
        # EOS competitive, so that its beams end at different lengths (measured for seed 3)
        lm_head = model.language_model.lm_head.weight
        lm_head.mul_(0.2)
        lm_head[1] += 2.0 * lm_head[0]
    model.eval()
    return backbone


def random_crops(count: int, size: int, seed: int) -> list[Image.Image]:
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


PROMPTS = [
    "Is there a prominent spatial relation between man (subject) and horse (object) in the image?",
    "Is there a prominent semantic relation between man (subject) and horse (object) in the image?",
    "Is there a prominent possessive relation between red car (subject) and tree (object) in the image?",
    "Is there a prominent spatial relation between tree (subject) and man (object) in the image?",
]


@torch.no_grad()
def test_entropy_equals_teacher_forced_recomputation(backbone) -> None:
    """The beams traced through beam_indices see the same logits as a teacher-forced forward of their tokens."""
    settings = GenerationSettings(num_beams=3, max_new_tokens=6, min_new_tokens=1)
    crops = random_crops(len(PROMPTS), backbone.image_size, seed=1)
    encoding = backbone.processor(images=crops, text=PROMPTS, padding=True, return_tensors="pt")
    output = backbone.model.generate(**encoding, **settings.generate_kwargs())
    per_beam = per_beam_entropy(output.logits, output.beam_indices, output.sequences, 1, 0)
    lengths = (output.beam_indices >= 0).sum(dim=1)
    assert len(set(lengths.tolist())) > 1, "the fixture should give beams of different lengths"
    for row in range(output.sequences.shape[0]):
        question = row // settings.num_beams
        length = int(lengths[row])
        decoder_input = output.sequences[row : row + 1, :length]  # start token + tokens before the last
        inputs = {key: value[question : question + 1] for key, value in encoding.items()}
        logits = backbone.model(**inputs, decoder_input_ids=decoder_input).logits[0]
        expected = step_entropies(list(logits)).mean().item()
        assert per_beam[row].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
        # with length_penalty 0 the sequence score is the answer's summed log-probability
        tokens = output.sequences[row, 1 : length + 1]
        log_probability = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).sum().item()
        assert output.sequences_scores[row].item() == pytest.approx(log_probability, rel=1e-4, abs=1e-4)


def test_shared_vision_gives_the_unshared_answers(backbone) -> None:
    settings = GenerationSettings(num_beams=3, max_new_tokens=6, min_new_tokens=1, batch_size=8)
    crops = random_crops(2, backbone.image_size, seed=2)
    # four questions on two crops, interleaved so the crop index really matters
    crop_of_question = [0, 1, 0, 1]
    shared = generate_batch(backbone, crops, crop_of_question, PROMPTS, settings, share_vision=True)
    unshared = generate_batch(backbone, crops, crop_of_question, PROMPTS, settings, share_vision=False)
    assert list(shared["answer"]) == list(unshared["answer"])
    np.testing.assert_allclose(shared["entropy"], unshared["entropy"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shared["sequence_score"], unshared["sequence_score"], rtol=1e-5, atol=1e-5)
    # and the crop matters: the same question on another crop gets other logits
    swapped = generate_batch(backbone, crops, [1, 0, 1, 0], PROMPTS, settings, share_vision=True)
    assert np.abs(swapped["entropy"] - shared["entropy"]).max() > 1e-3


def test_generate_answers_batches_by_crop_and_restores_order(backbone) -> None:
    settings = GenerationSettings(num_beams=2, max_new_tokens=5, min_new_tokens=1, batch_size=3)
    crops = random_crops(3, backbone.image_size, seed=4)
    questions = pd.DataFrame({"crop": ["c", "a", "c", "b", "a"], "prompt": [PROMPTS[i % 4] for i in range(5)]})
    loaded: list[str] = []

    def load_crop(key: str) -> Image.Image:
        loaded.append(key)
        return crops["abc".index(key)]

    table = generate_answers(backbone, questions, load_crop, settings)
    assert list(table["question"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert list(table["beam"]) == [0, 1] * 5
    # batches of 3 in crop order c,c,a | a,b: each crop loaded once per batch that uses it
    assert loaded == ["c", "a", "a", "b"]
    # each question answered alone gives the same result as in its batch
    alone = generate_batch(backbone, [crops[1]], [0], [questions["prompt"][3]], settings)
    assert list(alone["answer"]) == list(table.loc[table["question"] == 3, "answer"])
    np.testing.assert_allclose(alone["entropy"], table.loc[table["question"] == 3, "entropy"], rtol=1e-5)


@torch.no_grad()
def test_greedy_single_beam_scores_and_entropy_match_teacher_forcing(backbone) -> None:
    settings = GenerationSettings(num_beams=1, max_new_tokens=6, min_new_tokens=1)
    crops = random_crops(len(PROMPTS), backbone.image_size, seed=1)
    table = generate_batch(backbone, crops, list(range(len(PROMPTS))), PROMPTS, settings)
    assert list(table["beam"]) == [0, 0, 0, 0]
    encoding = backbone.processor(images=crops, text=PROMPTS, padding=True, return_tensors="pt")
    output = backbone.model.generate(**encoding, **settings.generate_kwargs())
    lengths = []
    for row in range(len(PROMPTS)):
        tokens = output.sequences[row, 1:].tolist()
        length = tokens.index(1) + 1 if 1 in tokens else len(tokens)
        lengths.append(length)
        inputs = {key: value[row : row + 1] for key, value in encoding.items()}
        logits = backbone.model(**inputs, decoder_input_ids=output.sequences[row : row + 1, :length]).logits[0]
        log_probs = torch.log_softmax(logits, dim=-1)
        expected_score = sum(log_probs[step, tokens[step]].item() for step in range(length))
        assert table["entropy"][row] == pytest.approx(step_entropies(list(logits)).mean().item(), rel=1e-4, abs=1e-5)
        assert table["sequence_score"][row] == pytest.approx(expected_score, rel=1e-4, abs=1e-4)
    assert len(set(lengths)) > 1, "the fixture should give answers of different lengths"


def test_repetition_penalty_reaches_generate_only_when_set() -> None:
    from reltune.inference.generation import GenerationSettings

    assert "repetition_penalty" not in GenerationSettings().generate_kwargs()  # neutral: decoding unchanged
    kwargs = GenerationSettings(repetition_penalty=1.5, num_beams=1).generate_kwargs()
    assert kwargs["repetition_penalty"] == 1.5 and "length_penalty" not in kwargs  # greedy: no beam options
