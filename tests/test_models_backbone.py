"""Tiny backbone: build, save/load, image reaches the LM, freezing, LoRA, preset errors."""

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from reltune.errors import InputError
from reltune.models.backbone import (
    BACKBONE_FILE,
    TinyInit,
    TinySizes,
    build_tiny,
    build_tiny_model,
    load_backbone,
    save_backbone,
    set_trainable,
)
from reltune.models.tokenizer import EOS_ID, IMAGE_ID, PAD_ID

CORPUS = [
    "Is there a prominent spatial relation between cup (subject) and table (object) in the image?",
    "Yes, cup on table.",
    "No, there is no prominent possessive relation between cup and table.",
    "What colour is the circle? red",
    "What shape is the red object? square",
] * 20

SMALL = dict(vocab_size=400, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)


def solid_image(colour, size=64):
    return Image.new("RGB", (size, size), colour)


def encode(backbone, images, prompts, targets):
    processor = backbone.processor
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    labels = processor.tokenizer(targets, return_tensors="pt", padding=True)["input_ids"]
    labels[labels == PAD_ID] = -100
    return inputs, labels


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "backbone"
    build_tiny(CORPUS, out, seed=3, **SMALL)
    return out


def test_build_tiny_saves_a_loadable_directory(tiny_dir):
    metadata = json.loads((tiny_dir / BACKBONE_FILE).read_text())
    assert metadata["preset"] == "tiny"
    assert metadata["image_size"] == 64
    assert metadata["num_query_tokens"] == 8
    assert metadata["trainable"] == ["qformer", "query_tokens", "language_projection"]
    backbone = load_backbone(str(tiny_dir))
    assert backbone.preset == "tiny" and backbone.image_size == 64
    assert backbone.dtype == torch.float32 and backbone.device.type == "cpu"
    assert backbone.model.config.image_token_index == IMAGE_ID


def test_tokenizer_specials_and_unseen_words_round_trip(tiny_dir):
    tokenizer = load_backbone(str(tiny_dir)).processor.tokenizer
    assert tokenizer.pad_token_id == PAD_ID == 0 and tokenizer.eos_token_id == EOS_ID == 1
    assert tokenizer.convert_tokens_to_ids("<image>") == IMAGE_ID
    text = "Yes, xylophone hovering beneath zebra-crossing."  # words the corpus never saw
    ids = tokenizer(text)["input_ids"]
    assert ids[-1] == EOS_ID and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    # Frequent corpus words are single merged tokens, not bytes.
    assert len(tokenizer(" table")["input_ids"]) == 2


def test_processor_prepends_one_image_token_per_query(tiny_dir):
    backbone = load_backbone(str(tiny_dir))
    inputs = backbone.processor(images=[solid_image("red")], text=["cup on table"], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids[:8] == [IMAGE_ID] * 8 and IMAGE_ID not in ids[8:]
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 64, 64)


def test_random_init_is_image_sensitive(tiny_dir):
    backbone = load_backbone(str(tiny_dir))
    model = backbone.model
    assert 0.015 < model.query_tokens.std().item() < 0.025
    inputs, labels = encode(backbone, [solid_image("red"), solid_image("blue")], ["what colour?"] * 2, ["red"] * 2)
    with torch.no_grad():
        logits = model(**inputs, labels=labels).logits
    # With transformers' defaults (vision std 1e-10, zero queries) the two rows are identical to ~1e-6.
    assert (logits[0] - logits[1]).abs().max().item() > 1e-3


def test_save_load_round_trip_gives_identical_outputs(tiny_dir, tmp_path):
    backbone = load_backbone(str(tiny_dir))
    inputs, labels = encode(backbone, [solid_image("green")], ["what colour?"], ["green"])
    with torch.no_grad():
        before = backbone.model(**inputs, labels=labels).logits
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = tmp_path / f".copy.{finished.pid}.killed.tmp"  # a save killed half-way, its process gone
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    save_backbone(backbone, tmp_path / "copy")
    save_backbone(backbone, tmp_path / "copy")  # overwriting an existing directory works
    reloaded = load_backbone(str(tmp_path / "copy"))
    with torch.no_grad():
        after = reloaded.model(**inputs, labels=labels).logits
    assert torch.equal(before, after)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary left behind


def test_default_freezing_one_step_changes_only_trainable_parts(tiny_dir):
    backbone = load_backbone(str(tiny_dir))
    parts = set_trainable(backbone)
    assert parts == ("qformer", "query_tokens", "language_projection")
    model = backbone.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("qformer.", "query_tokens", "language_projection.")) for n in trainable)
    assert any(n.startswith("qformer.") for n in trainable) and "query_tokens" in trainable
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs, labels = encode(backbone, [solid_image("red")], ["what colour?"], ["red"])
    model.train()
    model(**inputs, labels=labels).loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if name.startswith(("vision_model.", "language_model.")):
            assert not changed, name
    assert not torch.equal(before["query_tokens"], model.query_tokens.detach())
    assert not torch.equal(before["language_projection.weight"], model.language_projection.weight.detach())


def test_train_all_makes_everything_trainable(tiny_dir):
    backbone = load_backbone(str(tiny_dir))
    assert set_trainable(backbone, train_all=True) == ("all",)
    assert all(p.requires_grad for p in backbone.model.parameters())


def test_lora_trains_adapters_only_and_is_merged_on_save(tiny_dir, tmp_path):
    backbone = load_backbone(str(tiny_dir))
    parts = set_trainable(backbone, lora_r=2, lora_alpha=4, lora_dropout=0.0)
    assert parts[-1] == "lora"
    model = backbone.model
    lm_trainable = [n for n, p in model.language_model.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    # LoRA B starts at zero: make the adapters non-trivial, then check the merge keeps outputs.
    with torch.no_grad():
        for name, p in model.language_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    inputs, labels = encode(backbone, [solid_image("red")], ["what colour?"], ["red"])
    model.eval()
    with torch.no_grad():
        with_adapters = model(**inputs, labels=labels).logits
    save_backbone(backbone, tmp_path / "lora")
    metadata = json.loads((tmp_path / "lora" / BACKBONE_FILE).read_text())
    assert metadata["lora_merged"] == {"r": 2, "alpha": 4, "dropout": 0.0}
    reloaded = load_backbone(str(tmp_path / "lora"))
    assert not any("lora_" in n for n, _ in reloaded.model.named_parameters())
    with torch.no_grad():
        merged = reloaded.model(**inputs, labels=labels).logits
    plain = load_backbone(str(tiny_dir))
    with torch.no_grad():
        original = plain.model(**inputs, labels=labels).logits
    assert torch.allclose(with_adapters, merged, atol=1e-4)
    assert not torch.allclose(original, merged, atol=1e-3)


def test_missing_real_preset_names_what_to_download(tmp_path):
    with pytest.raises(InputError, match="Salesforce/instructblip-flan-t5-xl"):
        load_backbone(str(tmp_path / "nowhere"), preset="flan-t5-xl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="Salesforce/instructblip-vicuna-7b"):
        load_backbone(str(empty), preset="vicuna-7b")
    with pytest.raises(InputError, match="Salesforce/instructblip-flan-t5-xl"):
        load_backbone("Salesforce/instructblip-flan-t5-xl")  # hub id, offline, not cached
    with pytest.raises(InputError, match="nowhere: backbone directory not found"):
        load_backbone(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="no config.json"):
        load_backbone(str(empty))
    with pytest.raises(InputError, match="unknown backbone preset"):
        load_backbone(str(empty), preset="gpt-9")


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (dict(vision_hidden=63), "--vision-hidden: 63 is not divisible by --vision-heads 4"),
        (dict(text_d_model=32, text_heads=3), "--text-d-model: 32 is not divisible by --text-heads 3"),
        (dict(image_size=60), "--image-size: 60 is not divisible by --patch-size 8"),
        (dict(num_query_tokens=0), "--num-query-tokens: must be a positive integer"),
    ],
)
def test_tiny_sizes_the_model_cannot_take_are_refused_before_building(tmp_path, sizes, message):
    with pytest.raises(InputError, match=message):
        build_tiny(CORPUS, tmp_path / "tiny", seed=0, **{**SMALL, **sizes})
    assert not (tmp_path / "tiny").exists()


def test_vision_position_table_is_the_2d_sine_cosine_of_column_and_row():
    model = build_tiny_model(50, 5, TinySizes(), seed=0, init=TinyInit(position_amplitude=0.5, cross_attention_std=0))
    table = model.vision_model.embeddings.position_embedding.detach()[0].numpy()
    width, grid = TinySizes().vision_hidden, TinySizes().image_size // TinySizes().patch_size
    quarter = width // 4
    assert table.shape == (1 + grid * grid, width)
    assert np.all(table[0] == 0)  # the class token carries no position
    for row, column in ((0, 0), (2, 5), (7, 1)):
        # literal transcription: [sin(col w), cos(col w), sin(row w), cos(row w)], w_j = 10000^(-j/quarter)
        frequencies = np.array([10000.0 ** (-j / quarter) for j in range(quarter)])
        expected = 0.5 * np.concatenate(
            [np.sin(column * frequencies), np.cos(column * frequencies), np.sin(row * frequencies), np.cos(row * frequencies)]
        )
        np.testing.assert_allclose(table[1 + row * grid + column], expected, atol=1e-6)


def cross_attention_entropy(model, image_colours):
    """Mean entropy of the Q-Former's first cross-attention over image tokens, for left/right two-colour images."""
    images = []
    for left, right in image_colours:
        image = Image.new("RGB", (64, 64), "grey")
        image.paste(Image.new("RGB", (24, 24), left), (4, 20))
        image.paste(Image.new("RGB", (24, 24), right), (36, 20))
        images.append(image)
    pixels = torch.tensor(np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1 for image in images])).permute(0, 3, 1, 2)
    model.qformer.config._attn_implementation = "eager"  # sdpa returns no attention weights
    with torch.no_grad():
        image_tokens = model.vision_model(pixel_values=pixels).last_hidden_state
        queries = model.query_tokens.expand(len(images), -1, -1)
        text_ids = torch.tensor([[7, 8, 9]] * len(images))  # any question: the test is about the image side
        output = model.qformer(
            input_ids=text_ids, attention_mask=torch.ones(len(images), queries.shape[1] + 3, dtype=torch.long), query_embeds=queries, encoder_hidden_states=image_tokens,
            encoder_attention_mask=torch.ones(image_tokens.shape[:2], dtype=torch.long), output_attentions=True,
        )  # fmt: skip
    weights = output.cross_attentions[0].clamp_min(1e-12)
    return -(weights * weights.log()).sum(-1).mean().item(), float(np.log(weights.shape[-1]))


def test_cross_attention_init_makes_queries_select_image_tokens_and_zero_restores_transformers_init():
    colours = [("red", "blue"), ("green", "yellow"), ("white", "black")]
    default = build_tiny_model(50, 5, TinySizes(), seed=0)
    plain = build_tiny_model(50, 5, TinySizes(), seed=0, init=TinyInit(position_amplitude=0, cross_attention_std=0))
    layer = default.qformer.encoder.layer[0].crossattention.attention
    assert 0.18 < layer.query.weight.std().item() < 0.22 and 0.18 < layer.key.weight.std().item() < 0.22
    assert 0.015 < layer.value.weight.std().item() < 0.025  # only the attention logits are sharpened
    plain_layer = plain.qformer.encoder.layer[0].crossattention.attention
    assert 0.015 < plain_layer.query.weight.std().item() < 0.025
    assert 0.015 < plain.vision_model.embeddings.position_embedding.std().item() < 0.025
    default_entropy, uniform = cross_attention_entropy(default, colours)
    plain_entropy, _ = cross_attention_entropy(plain, colours)
    # transformers' init: the queries average the image (entropy ~ uniform); ours: each attends to a few tokens
    assert plain_entropy > 0.99 * uniform
    assert default_entropy < 0.8 * uniform


def test_position_amplitude_needs_a_vision_width_divisible_by_four(tmp_path):
    with pytest.raises(InputError, match="--vision-hidden: 66 is not divisible by 4"):
        build_tiny(CORPUS, tmp_path / "tiny", seed=0, **{**SMALL, "vision_hidden": 66, "vision_heads": 6})
    assert not (tmp_path / "tiny").exists()
    build_tiny(CORPUS, tmp_path / "plain", seed=0, init=TinyInit(position_amplitude=0), **{**SMALL, "vision_hidden": 66, "vision_heads": 6})
