"""LAVIS / ART checkpoints as their code saves them, on tiny shapes (no tests here).

The names below are spelled as LAVIS's module definitions register them
(lavis/models/eva_vit.py, blip2_models/Qformer.py, blip2_t5_instruct.py,
blip2_vicuna_instruct.py, modeling_t5.py / modeling_llama.py), including the
persistent buffers (`position_ids`, `rotary_emb.inv_freq`); the ART authors'
models add a sentence-transformer (`st_model`) and their runner saves the whole
model in `{"model", "optimizer", "config", "scaler", "epoch"}`. Only the sizes
come from the transformers config of the tiny base model.

`transformers_script_names` re-does what transformers'
convert_instructblip_original_to_pytorch.py does to a LAVIS state dict: it is
the reference for where each value must land.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, LlamaConfig

from reltune.models.backbone import Backbone, build_tiny, load_backbone, save_backbone

CORPUS = ["Is there a cup on the table?", "Yes, cup on table.", "No."] * 10
SMALL = dict(vocab_size=300, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)
Shapes = list[tuple[str, tuple[int, ...]]]


def eva_vit_names(vision) -> Shapes:
    """visual_encoder (EVA ViT, qkv without bias, separate q_bias / v_bias) and ln_vision."""
    d, inner, p = vision.hidden_size, vision.intermediate_size, vision.patch_size
    patches = (vision.image_size // p) ** 2
    names: Shapes = [
        ("visual_encoder.cls_token", (1, 1, d)),
        ("visual_encoder.pos_embed", (1, patches + 1, d)),
        ("visual_encoder.patch_embed.proj.weight", (d, 3, p, p)),
        ("visual_encoder.patch_embed.proj.bias", (d,)),
    ]
    for i in range(vision.num_hidden_layers):
        block = f"visual_encoder.blocks.{i}."
        names += [
            (block + "norm1.weight", (d,)), (block + "norm1.bias", (d,)),
            (block + "attn.q_bias", (d,)), (block + "attn.v_bias", (d,)),
            (block + "attn.qkv.weight", (3 * d, d)),
            (block + "attn.proj.weight", (d, d)), (block + "attn.proj.bias", (d,)),
            (block + "norm2.weight", (d,)), (block + "norm2.bias", (d,)),
            (block + "mlp.fc1.weight", (inner, d)), (block + "mlp.fc1.bias", (inner,)),
            (block + "mlp.fc2.weight", (d, inner)), (block + "mlp.fc2.bias", (d,)),
        ]  # fmt: skip
    return names + [("ln_vision.weight", (d,)), ("ln_vision.bias", (d,))]


def _bert_attention(prefix: str, hidden: int, key_width: int) -> Shapes:
    return [
        (prefix + "self.query.weight", (hidden, hidden)), (prefix + "self.query.bias", (hidden,)),
        (prefix + "self.key.weight", (hidden, key_width)), (prefix + "self.key.bias", (hidden,)),
        (prefix + "self.value.weight", (hidden, key_width)), (prefix + "self.value.bias", (hidden,)),
        (prefix + "output.dense.weight", (hidden, hidden)), (prefix + "output.dense.bias", (hidden,)),
        (prefix + "output.LayerNorm.weight", (hidden,)), (prefix + "output.LayerNorm.bias", (hidden,)),
    ]  # fmt: skip


def _bert_feed_forward(layer: str, suffix: str, hidden: int, inner: int) -> Shapes:
    return [
        (f"{layer}intermediate{suffix}.dense.weight", (inner, hidden)), (f"{layer}intermediate{suffix}.dense.bias", (inner,)),
        (f"{layer}output{suffix}.dense.weight", (hidden, inner)), (f"{layer}output{suffix}.dense.bias", (hidden,)),
        (f"{layer}output{suffix}.LayerNorm.weight", (hidden,)), (f"{layer}output{suffix}.LayerNorm.bias", (hidden,)),
    ]  # fmt: skip


def qformer_names(qformer, num_query_tokens: int) -> Shapes:
    """Qformer.bert (BertModel of Qformer.py; cls = None in InstructBLIP), query_tokens; no buffers."""
    h, inner = qformer.hidden_size, qformer.intermediate_size
    names: Shapes = [
        ("Qformer.bert.embeddings.word_embeddings.weight", (qformer.vocab_size, h)),
        ("Qformer.bert.embeddings.position_embeddings.weight", (qformer.max_position_embeddings, h)),
        ("Qformer.bert.embeddings.LayerNorm.weight", (h,)),
        ("Qformer.bert.embeddings.LayerNorm.bias", (h,)),
    ]
    for i in range(qformer.num_hidden_layers):
        layer = f"Qformer.bert.encoder.layer.{i}."
        names += _bert_attention(layer + "attention.", h, h)
        if i % qformer.cross_attention_frequency == 0:  # BertLayer: add_cross_attention and layer_num % freq == 0
            names += _bert_attention(layer + "crossattention.", h, qformer.encoder_hidden_size)
        names += _bert_feed_forward(layer, "", h, inner) + _bert_feed_forward(layer, "_query", h, inner)
    return names + [("query_tokens", (1, num_query_tokens, h))]


def _t5_attention(prefix: str, text) -> Shapes:
    inner = text.num_heads * text.d_kv
    return [(f"{prefix}{part}.weight", (inner, text.d_model)) for part in "qkv"] + [(f"{prefix}o.weight", (text.d_model, inner))]


def _t5_stack(stack: str, text, layers: int) -> Shapes:
    names: Shapes = []
    for i in range(layers):
        block = f"t5_model.{stack}.block.{i}.layer."
        names += _t5_attention(block + "0.SelfAttention.", text) + [(block + "0.layer_norm.weight", (text.d_model,))]
        if i == 0:  # only the first block holds the relative position buckets
            names.append((block + "0.SelfAttention.relative_attention_bias.weight", (text.relative_attention_num_buckets, text.num_heads)))
        ff = "1"
        if stack == "decoder":
            names += _t5_attention(block + "1.EncDecAttention.", text) + [(block + "1.layer_norm.weight", (text.d_model,))]
            ff = "2"
        names += [
            (f"{block}{ff}.DenseReluDense.wi_0.weight", (text.d_ff, text.d_model)),
            (f"{block}{ff}.DenseReluDense.wi_1.weight", (text.d_ff, text.d_model)),
            (f"{block}{ff}.DenseReluDense.wo.weight", (text.d_model, text.d_ff)),
            (f"{block}{ff}.layer_norm.weight", (text.d_model,)),
        ]
    return names + [(f"t5_model.{stack}.final_layer_norm.weight", (text.d_model,))]


def t5_names(text, qformer_hidden: int) -> Shapes:
    """t5_proj and t5_model (gated-gelu Flan-T5); embed_tokens / lm_head ties are applied by lavis_state_dict."""
    return [
        ("t5_proj.weight", (text.d_model, qformer_hidden)), ("t5_proj.bias", (text.d_model,)),
        ("t5_model.shared.weight", (text.vocab_size, text.d_model)),
        ("t5_model.encoder.embed_tokens.weight", (text.vocab_size, text.d_model)),
        *_t5_stack("encoder", text, text.num_layers),
        ("t5_model.decoder.embed_tokens.weight", (text.vocab_size, text.d_model)),
        *_t5_stack("decoder", text, text.num_decoder_layers),
        ("t5_model.lm_head.weight", (text.vocab_size, text.d_model)),
    ]  # fmt: skip


def llama_names(text, qformer_hidden: int) -> Shapes:
    """llm_proj and llm_model (LAVIS modeling_llama: rotary_emb.inv_freq is a persistent buffer)."""
    h, inner, head = text.hidden_size, text.intermediate_size, text.hidden_size // text.num_attention_heads
    kv = text.num_key_value_heads * head
    names: Shapes = [("llm_proj.weight", (h, qformer_hidden)), ("llm_proj.bias", (h,)), ("llm_model.model.embed_tokens.weight", (text.vocab_size, h))]
    for i in range(text.num_hidden_layers):
        layer = f"llm_model.model.layers.{i}."
        names += [
            (layer + "self_attn.q_proj.weight", (h, h)), (layer + "self_attn.k_proj.weight", (kv, h)),
            (layer + "self_attn.v_proj.weight", (kv, h)), (layer + "self_attn.o_proj.weight", (h, h)),
            (layer + "mlp.gate_proj.weight", (inner, h)), (layer + "mlp.up_proj.weight", (inner, h)),
            (layer + "mlp.down_proj.weight", (h, inner)),
            (layer + "input_layernorm.weight", (h,)), (layer + "post_attention_layernorm.weight", (h,)),
        ]  # fmt: skip
    return names + [("llm_model.model.norm.weight", (h,)), ("llm_model.lm_head.weight", (text.vocab_size, h))]


def _buffers(config, family: str) -> dict[str, torch.Tensor]:
    """The persistent buffers LAVIS's modules save: BertEmbeddings.position_ids, LlamaRotaryEmbedding.inv_freq."""
    positions = config.qformer_config.max_position_embeddings
    buffers = {"Qformer.bert.embeddings.position_ids": torch.arange(positions).expand((1, -1))}
    if family == "llama":
        text = config.text_config
        head = text.hidden_size // text.num_attention_heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
        for i in range(text.num_hidden_layers):
            buffers[f"llm_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    return buffers


def lavis_state_dict(base: Backbone, seed: int) -> dict[str, torch.Tensor]:
    """A whole LAVIS InstructBLIP state dict (parameters + buffers) with random values of the base's sizes."""
    config = base.model.config
    family = "llama" if config.use_decoder_only_language_model else "t5"
    names = eva_vit_names(config.vision_config) + qformer_names(config.qformer_config, config.num_query_tokens)
    language = t5_names if family == "t5" else llama_names
    names += language(config.text_config, config.qformer_config.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) for name, shape in names}
    lm = base.model.language_model
    if family == "t5":  # one Parameter under several names, as T5's state_dict() lists it
        for tied in ("t5_model.encoder.embed_tokens.weight", "t5_model.decoder.embed_tokens.weight"):
            state[tied] = state["t5_model.shared.weight"]
        if lm.lm_head.weight is lm.shared.weight:
            state["t5_model.lm_head.weight"] = state["t5_model.shared.weight"]
    elif lm.lm_head.weight is lm.model.embed_tokens.weight:
        state["llm_model.lm_head.weight"] = state["llm_model.model.embed_tokens.weight"]
    return {**state, **_buffers(config, family)}


def sentence_transformer_state(seed: int, hidden: int = 16) -> dict[str, torch.Tensor]:
    """ART's `st_model` (SentenceTransformer: 0 = Transformer with a BertModel `auto_model`, 1 = Pooling)."""
    generator = torch.Generator().manual_seed(seed)
    bert = "st_model.0.auto_model."
    names = {
        bert + "embeddings.word_embeddings.weight": (50, hidden),
        bert + "embeddings.position_embeddings.weight": (20, hidden),
        bert + "embeddings.token_type_embeddings.weight": (2, hidden),
        bert + "embeddings.LayerNorm.weight": (hidden,),
        bert + "encoder.layer.0.attention.self.query.weight": (hidden, hidden),
        bert + "encoder.layer.0.attention.output.LayerNorm.bias": (hidden,),
        bert + "encoder.layer.0.intermediate.dense.weight": (2 * hidden, hidden),
        bert + "pooler.dense.weight": (hidden, hidden),
    }
    state = {name: torch.randn(shape, generator=generator) for name, shape in names.items()}
    state[bert + "embeddings.position_ids"] = torch.arange(20).expand((1, -1))
    return state


def art_checkpoint(state: dict[str, torch.Tensor], seed: int) -> dict:
    """What ART's runner_base._save_checkpoint writes: the whole model (+ st_model) and the training state."""
    first = next(iter(state.values()))
    optimizer = {
        "state": {0: {"step": torch.tensor(120.0), "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05, "amsgrad": False, "params": [0]}],
    }
    config = {"model": {"arch": "blip2_t5_instruct", "num_query_token": 32, "freeze_vit": True}, "run": {"init_lr": 1e-3, "al": {"al_type": "art"}}}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0}
    return {"model": {**state, **sentence_transformer_state(seed)}, "optimizer": optimizer, "config": config, "scaler": scaler, "epoch": 3}


def transformers_script_names(lavis_state: dict[str, torch.Tensor], vision_layers: int) -> dict[str, torch.Tensor]:
    """The renaming steps of transformers' convert_instructblip_original_to_pytorch.py, in its order."""
    state = dict(lavis_state)
    renames = [
        ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
        ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
        ("visual_encoder.patch_embed.proj.weight", "vision_model.embeddings.patch_embedding.weight"),
        ("visual_encoder.patch_embed.proj.bias", "vision_model.embeddings.patch_embedding.bias"),
        ("ln_vision.weight", "vision_model.post_layernorm.weight"),
        ("ln_vision.bias", "vision_model.post_layernorm.bias"),
    ]
    for i in range(vision_layers):
        for lavis, hf in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("attn.proj", "self_attn.projection"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                renames.append((f"visual_encoder.blocks.{i}.{lavis}.{kind}", f"vision_model.encoder.layers.{i}.{hf}.{kind}"))
        renames.append((f"visual_encoder.blocks.{i}.attn.qkv.weight", f"vision_model.encoder.layers.{i}.self_attn.qkv.weight"))
    renames += [("Qformer.bert.embeddings.LayerNorm.weight", "qformer.embeddings.layernorm.weight"), ("Qformer.bert.embeddings.LayerNorm.bias", "qformer.embeddings.layernorm.bias")]
    for source, target in renames:
        state[target] = state.pop(source)
    renamed = {}
    for key, value in state.items():
        if key.startswith("Qformer.bert"):
            key = key.replace("Qformer.bert", "qformer")
        if "attention.self" in key:
            key = key.replace("self", "attention")
        key = key.replace("llm_proj", "language_projection").replace("t5_proj", "language_projection")
        if key.startswith("llm_model"):
            key = key.replace("llm_model", "language_model")
        if key.startswith("t5"):
            key = key.replace("t5", "language")
        renamed[key] = value
    for i in range(vision_layers):
        q_bias, v_bias = renamed.pop(f"visual_encoder.blocks.{i}.attn.q_bias"), renamed.pop(f"visual_encoder.blocks.{i}.attn.v_bias")
        renamed[f"vision_model.encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
    return renamed


def build_tiny_t5(out_dir: Path, seed: int = 2) -> Backbone:
    return build_tiny(CORPUS, out_dir, seed=seed, **SMALL)


def build_tiny_vicuna(t5_dir: Path, out_dir: Path, seed: int = 3) -> Backbone:
    """A tiny InstructBLIP with a LLaMA language model (vision, Q-Former and processor of the tiny T5 one)."""
    t5 = load_backbone(str(t5_dir))
    config = t5.model.config
    tokenizer = t5.processor.tokenizer
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    llama_config = InstructBlipConfig(
        vision_config=config.vision_config.to_dict(), qformer_config=config.qformer_config.to_dict(),
        text_config=text.to_dict(), num_query_tokens=config.num_query_tokens, image_token_index=config.image_token_index,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(llama_config)
    backbone = Backbone(model=model, processor=t5.processor, image_size=t5.image_size, preset="vicuna-7b", device=t5.device, dtype=t5.dtype)
    save_backbone(backbone, out_dir)
    return backbone
