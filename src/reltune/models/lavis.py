"""LAVIS InstructBLIP checkpoints (`*.pth`) -> transformers layout (DESIGN §8).

LAVIS names (facts of its `blip2_t5_instruct` / `blip2_vicuna_instruct` models):
`visual_encoder.*` (EVA ViT: cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1,
norm2, attn.qkv, attn.q_bias, attn.v_bias, attn.proj, mlp.fc1, mlp.fc2}),
`ln_vision` (LayerNorm after the ViT), `query_tokens`, `Qformer.bert.*` (BERT
naming: `attention.self.query`, `embeddings.LayerNorm`, ...), `t5_proj` /
`llm_proj` (language projection), `t5_model.*` / `llm_model.*` (language model,
already in Hugging Face naming). The released instruction-tuned checkpoints
hold only the trained parts (Q-Former, queries, projection): everything the
checkpoint lacks comes from a base transformers model of the same preset.
The ViT's qkv has no key bias: qkv.bias = [q_bias, 0, v_bias].
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from reltune.errors import InputError
from reltune.models.backbone import Backbone, load_backbone, save_backbone

# (LAVIS pattern, transformers replacement), applied in order to each key.
_VISION_RENAMES = (
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^ln_vision\.", "vision_model.post_layernorm."),
)
_QFORMER_RENAMES = (
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.embeddings.layernorm."),
    (r"^Qformer\.bert\.embeddings\.", "qformer.embeddings."),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"qformer.encoder.layer.\1.\2.attention."),
    (r"^Qformer\.bert\.encoder\.", "qformer.encoder."),
)
_OTHER_RENAMES = (
    (r"^query_tokens$", "query_tokens"),
    (r"^(t5_proj|llm_proj)\.", "language_projection."),
    (r"^(t5_model|llm_model)\.", "language_model."),
)
# Parts of LAVIS models that InstructBLIP inference does not use.
_IGNORED = (r"^Qformer\.cls\.", r"^vision_proj\.", r"^text_proj\.", r"^itm_head\.", r"^temp$")
_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")


def lavis_key_to_transformers(key: str) -> str | None:
    """The transformers name of a LAVIS key; None for keys InstructBLIP does not use."""
    if any(re.match(pattern, key) for pattern in _IGNORED):
        return None
    for pattern, replacement in (*_VISION_RENAMES, *_QFORMER_RENAMES, *_OTHER_RENAMES):
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(key)


def convert_lavis_state_dict(lavis_state: dict[str, torch.Tensor], file: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a LAVIS InstructBLIP state dict to transformers names (q/v biases merged into qkv.bias)."""
    converted: dict[str, torch.Tensor] = {}
    biases: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in lavis_state.items():
        bias_match = _QV_BIAS.match(key)
        if bias_match:
            biases.setdefault(bias_match.group(1), {})[bias_match.group(2)] = tensor
            continue
        try:
            name = lavis_key_to_transformers(key)
        except KeyError:
            unknown.append(key)
            continue
        if name is not None:
            converted[name] = tensor
    if unknown:
        raise InputError(file, f"{len(unknown)} keys are not LAVIS InstructBLIP names, e.g. {unknown[:3]}")
    for layer, parts in biases.items():
        if set(parts) != {"q_bias", "v_bias"}:
            raise InputError(file, f"vision block {layer} has {sorted(parts)} but needs both q_bias and v_bias")
        q_bias, v_bias = parts["q_bias"], parts["v_bias"]
        converted[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
            [q_bias, torch.zeros_like(v_bias), v_bias]
        )
    return converted


def read_lavis_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a LAVIS `.pth` (either `{"model": state_dict, ...}` or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or pickled-object files
        raise InputError(path, f"not a readable torch state dict ({type(error).__name__}: {error})") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise InputError(path, "expected a state dict of tensors (or {'model': state_dict})")
    return state


def apply_lavis_weights(backbone: Backbone, lavis_state: dict[str, torch.Tensor], file: str = "checkpoint") -> list[str]:
    """Overwrite the backbone's weights with the converted checkpoint; returns the names loaded."""
    family_key = "t5_proj" if not backbone.model.config.use_decoder_only_language_model else "llm_proj"
    if any(key.startswith(("t5_proj.", "llm_proj.")) for key in lavis_state) and not any(
        key.startswith(f"{family_key}.") for key in lavis_state
    ):
        raise InputError(file, f"checkpoint's language model family does not match preset {backbone.preset}")
    converted = convert_lavis_state_dict(lavis_state, file)
    own = backbone.model.state_dict()
    for name, tensor in converted.items():
        if name not in own:
            raise InputError(file, f"{name} has no counterpart in the {backbone.preset} model")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise InputError(file, f"{name} has shape {tuple(tensor.shape)}, the {backbone.preset} model {tuple(own[name].shape)}")
    backbone.model.load_state_dict(converted, strict=False)
    return sorted(converted)


def convert_lavis(checkpoint: str | Path, preset: str, base: str, out_dir: str | Path) -> list[str]:
    """`reltune convert-lavis`: base transformers model of `preset` + LAVIS weights -> `out_dir`."""
    state = read_lavis_checkpoint(checkpoint)
    backbone = load_backbone(base, preset=preset, device="cpu")
    loaded = apply_lavis_weights(backbone, state, str(checkpoint))
    backbone.extra = {"converted_from": str(checkpoint), "converted_tensors": len(loaded)}
    save_backbone(backbone, out_dir)
    return loaded
