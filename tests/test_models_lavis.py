"""LAVIS InstructBLIP state dicts -> transformers layout (round trip through LAVIS names)."""

import pytest
import torch
from safetensors.torch import load_file

from reltune.errors import InputError
from reltune.models.backbone import build_tiny, load_backbone
from reltune.models.lavis import convert_lavis, lavis_key_to_transformers

CORPUS = ["Is there a cup on the table?", "Yes, cup on table.", "No."] * 10
SMALL = dict(vocab_size=300, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)


def to_lavis_names(state):
    """Hand-written inverse naming (LAVIS blip2_t5_instruct), independent of the converter's rules."""
    lavis = {}
    for name, tensor in state.items():
        if name.endswith("self_attn.qkv.bias"):
            block = name.split(".")[3]
            third = tensor.shape[0] // 3
            lavis[f"visual_encoder.blocks.{block}.attn.q_bias"] = tensor[:third]
            lavis[f"visual_encoder.blocks.{block}.attn.v_bias"] = tensor[2 * third :]
            continue
        key = (
            name.replace("vision_model.embeddings.class_embedding", "visual_encoder.cls_token")
            .replace("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed")
            .replace("vision_model.embeddings.patch_embedding", "visual_encoder.patch_embed.proj")
            .replace("vision_model.encoder.layers.", "visual_encoder.blocks.")
            .replace(".layer_norm1.", ".norm1.")
            .replace(".layer_norm2.", ".norm2.")
            .replace("self_attn.qkv.weight", "attn.qkv.weight")
            .replace("self_attn.projection", "attn.proj")
            .replace("vision_model.post_layernorm", "ln_vision")
            .replace("qformer.embeddings.layernorm", "Qformer.bert.embeddings.LayerNorm")
            .replace("qformer.", "Qformer.bert.")
            .replace("attention.attention.", "attention.self.")
            .replace("language_projection", "t5_proj")
            .replace("language_model.", "t5_model.")
        )
        lavis[key] = tensor
    return lavis


def test_key_names_of_known_lavis_parameters():
    assert lavis_key_to_transformers("visual_encoder.blocks.12.attn.proj.weight") == "vision_model.encoder.layers.12.self_attn.projection.weight"
    assert lavis_key_to_transformers("Qformer.bert.encoder.layer.3.crossattention.self.key.bias") == "qformer.encoder.layer.3.crossattention.attention.key.bias"
    assert lavis_key_to_transformers("Qformer.bert.encoder.layer.0.output_query.LayerNorm.weight") == "qformer.encoder.layer.0.output_query.LayerNorm.weight"
    assert lavis_key_to_transformers("llm_proj.bias") == "language_projection.bias"
    assert lavis_key_to_transformers("llm_model.model.layers.0.self_attn.q_proj.weight") == "language_model.model.layers.0.self_attn.q_proj.weight"
    assert lavis_key_to_transformers("Qformer.cls.predictions.bias") is None


def test_round_trip_through_lavis_names_gives_identical_tensors(tmp_path):
    build_tiny(CORPUS, tmp_path / "source", seed=1, **SMALL)
    build_tiny(CORPUS, tmp_path / "base", seed=2, **SMALL)
    source = load_file(str(tmp_path / "source" / "model.safetensors"))
    # LAVIS has no key bias in the ViT: make the source's zero so the round trip is exact.
    for name, tensor in source.items():
        if name.endswith("self_attn.qkv.bias"):
            third = tensor.shape[0] // 3
            tensor[third : 2 * third] = 0.0
    lavis = to_lavis_names(source)
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(3)  # unused head, ignored
    torch.save({"model": lavis, "epoch": 3}, tmp_path / "instruct.pth")
    loaded = convert_lavis(tmp_path / "instruct.pth", "tiny", str(tmp_path / "base"), tmp_path / "converted")
    assert len(loaded) == len(source)
    converted = load_file(str(tmp_path / "converted" / "model.safetensors"))
    base = load_file(str(tmp_path / "base" / "model.safetensors"))
    differs = 0
    for name, tensor in source.items():
        assert torch.equal(converted[name], tensor), name
        differs += not torch.equal(base[name], tensor)
    assert differs > len(source) // 2  # the base really was overwritten
    assert load_backbone(str(tmp_path / "converted")).preset == "tiny"


def test_partial_checkpoint_keeps_base_weights_and_bad_input_fails(tmp_path):
    build_tiny(CORPUS, tmp_path / "base", seed=2, **SMALL)
    base = load_file(str(tmp_path / "base" / "model.safetensors"))
    queries = torch.full_like(base["query_tokens"], 0.5)
    torch.save({"query_tokens": queries, "t5_proj.weight": base["language_projection.weight"] * 2}, tmp_path / "trimmed.pth")
    convert_lavis(tmp_path / "trimmed.pth", "tiny", str(tmp_path / "base"), tmp_path / "out")
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(out["query_tokens"], queries)
    assert torch.equal(out["language_projection.weight"], base["language_projection.weight"] * 2)
    assert torch.equal(out["vision_model.post_layernorm.weight"], base["vision_model.post_layernorm.weight"])

    torch.save({"decoder.weird": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(InputError, match="unknown.pth.*not LAVIS InstructBLIP names.*decoder.weird"):
        convert_lavis(tmp_path / "unknown.pth", "tiny", str(tmp_path / "base"), tmp_path / "x")
    torch.save({"query_tokens": torch.zeros(1, 3, 5)}, tmp_path / "shape.pth")
    with pytest.raises(InputError, match=r"query_tokens has shape \(1, 3, 5\)"):
        convert_lavis(tmp_path / "shape.pth", "tiny", str(tmp_path / "base"), tmp_path / "x")
    torch.save({"visual_encoder.blocks.0.attn.q_bias": torch.zeros(64)}, tmp_path / "half.pth")
    with pytest.raises(InputError, match="needs both q_bias and v_bias"):
        convert_lavis(tmp_path / "half.pth", "tiny", str(tmp_path / "base"), tmp_path / "x")
    torch.save({"llm_proj.weight": torch.zeros(1)}, tmp_path / "family.pth")
    with pytest.raises(InputError, match="family does not match"):
        convert_lavis(tmp_path / "family.pth", "tiny", str(tmp_path / "base"), tmp_path / "x")
    with pytest.raises(InputError, match="missing.pth.*not found"):
        convert_lavis(tmp_path / "missing.pth", "tiny", str(tmp_path / "base"), tmp_path / "x")
    assert not (tmp_path / "x").exists()
