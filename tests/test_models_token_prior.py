"""The tiny model's token prior from the sentence model (issue 16, part 4; reltune.models.token_prior)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from reltune.instructions.build import build_instructions
from reltune.models.backbone import BACKBONE_FILE, TinyInit, build_tiny, load_backbone, set_trainable
from reltune.models.token_prior import TOKEN_EMBEDDINGS, prior_vectors
from reltune.models.tokenizer import SPECIAL_TOKENS
from reltune.models.training import TrainSettings, relation_training_examples, train_backbone
from toy_scenes import TOY_PREDICATES, make_toy_scenes

SMALL = dict(vocab_size=400, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)
# Unseen names as the world's copy questions give them to the tokenizer, beside the seen ones.
NAMES = "Repeat the words: fox bear bird frog moon drum gem ball box cake."


def test_prior_vectors_keep_the_sentence_geometry_at_the_asked_scale():
    generator = np.random.default_rng(0)
    # rank-3 data in 12 dimensions: three principal axes carry every distance
    vectors = generator.normal(size=(40, 3)) @ generator.normal(size=(3, 12)) + 5.0
    projected = prior_vectors(vectors, width=3, std=0.5)
    assert projected.shape == (40, 3) and projected.std() == pytest.approx(0.5, rel=1e-5)
    original = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    kept = np.linalg.norm(projected[:, None] - projected[None], axis=-1)
    ratio = kept[original > 0] / original[original > 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)  # one scale for every distance
    with pytest.raises(InputError, match="width 13 exceeds the 12 principal axes"):
        prior_vectors(vectors, width=13, std=1.0)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    scenes_dir = make_toy_scenes(root / "scenes", images=6, seed=4, image_size=64)
    scenes, vocab = read_scenes(scenes_dir, "train")
    instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy", split="train").table
    corpus = list(instructions["prompt"]) + list(instructions["target"]) + [NAMES] * 3
    build_tiny(corpus, root / "prior", seed=0, init=TinyInit(token_prior="sentence-frozen"), **SMALL)
    build_tiny(corpus, root / "trained", seed=0, init=TinyInit(token_prior="sentence"), **SMALL)
    build_tiny(corpus, root / "random", seed=0, **SMALL)
    return root, scenes, vocab, instructions


def _cosine(weight: torch.Tensor, tokenizer, first: str, second: str) -> float:
    ids = tokenizer.convert_tokens_to_ids([first, second])
    return float(torch.nn.functional.cosine_similarity(weight[ids[0]], weight[ids[1]], dim=0))


def test_an_unseen_name_starts_next_to_the_names_it_means_and_special_tokens_keep_their_init(toy):
    root = toy[0]
    prior, random = load_backbone(str(root / "prior")), load_backbone(str(root / "random"))
    tokenizer = prior.processor.tokenizer
    assert tokenizer.get_vocab() == random.processor.tokenizer.get_vocab()
    for name in TOKEN_EMBEDDINGS:
        weight = prior.model.get_parameter(name).detach()
        # the all-MiniLM-L6-v2 sentence vectors: a fox is an animal like a bear, not a moon
        assert _cosine(weight, tokenizer, "Ġfox", "Ġbear") > _cosine(weight, tokenizer, "Ġfox", "Ġmoon") + 0.15, name
        initial = random.model.get_parameter(name).detach()
        special = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        assert torch.equal(weight[special], initial[special]), name
        assert float(weight.std()) == pytest.approx(float(initial.std()), rel=0.1), name
        assert not torch.allclose(weight[tokenizer.convert_tokens_to_ids("Ġfox")], initial[tokenizer.convert_tokens_to_ids("Ġfox")])
    # the random model's words are unrelated: the same pair is no closer than any other
    assert abs(_cosine(random.model.language_model.shared.weight, tokenizer, "Ġfox", "Ġbear")) < 0.5
    # `sentence` starts from the same vectors and freezes nothing
    trained = load_backbone(str(root / "trained"))
    assert trained.frozen == () and all(
        torch.equal(trained.model.get_parameter(name), prior.model.get_parameter(name)) for name in TOKEN_EMBEDDINGS
    )


def test_a_frozen_prior_stays_through_training_with_every_other_weight(toy, tmp_path):
    root, scenes, vocab, instructions = toy
    metadata = json.loads((root / "prior" / BACKBONE_FILE).read_text())
    assert metadata["frozen_parameters"] == list(TOKEN_EMBEDDINGS)
    backbone = load_backbone(str(root / "prior"))
    set_trainable(backbone, train_all=True)
    trainable = {name for name, parameter in backbone.model.named_parameters() if parameter.requires_grad}
    assert not trainable & set(TOKEN_EMBEDDINGS) and "language_model.encoder.block.0.layer.0.SelfAttention.q.weight" in trainable

    examples = relation_training_examples(instructions, scenes, None)
    settings = TrainSettings(epochs=1, batch_size=4, max_steps=3, warmup_steps=1, seed=0, train_all=True, lr=0.01)
    train_backbone(root / "prior", examples, vocab["image_root"], tmp_path / "tuned", settings)
    before, after = load_file(str(root / "prior" / "model.safetensors")), load_file(str(tmp_path / "tuned" / "model.safetensors"))
    for name in TOKEN_EMBEDDINGS:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["language_model.encoder.block.0.layer.0.SelfAttention.q.weight"],
                           after["language_model.encoder.block.0.layer.0.SelfAttention.q.weight"])
    assert json.loads((tmp_path / "tuned" / BACKBONE_FILE).read_text())["frozen_parameters"] == list(TOKEN_EMBEDDINGS)
    # unfrozen (`sentence`), the same training moves them
    train_backbone(root / "trained", examples, vocab["image_root"], tmp_path / "moved", settings)
    moved = load_file(str(tmp_path / "moved" / "model.safetensors"))
    assert not torch.equal(before["language_model.shared.weight"], moved["language_model.shared.weight"])


def test_a_frozen_list_naming_no_parameter_is_refused_with_the_file(toy, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(toy[0] / "prior", copy)
    metadata = json.loads((copy / BACKBONE_FILE).read_text())
    (copy / BACKBONE_FILE).write_text(json.dumps({**metadata, "frozen_parameters": ["no.such.weight"]}))
    with pytest.raises(InputError, match=f"{BACKBONE_FILE}.*names no parameter of the model: 'no.such.weight'"):
        load_backbone(str(copy))


def test_an_unknown_token_prior_is_refused_before_building(tmp_path):
    with pytest.raises(InputError, match="--token-prior.*'glove' is not one of"):
        build_tiny(["a b c"] * 3, tmp_path / "x", init=TinyInit(token_prior="glove"), **SMALL)
    assert not (tmp_path / "x").exists()
