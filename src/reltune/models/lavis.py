"""LAVIS InstructBLIP checkpoints (`*.pth`) -> transformers layout (DESIGN §8).

LAVIS names (facts of its `blip2_t5_instruct` / `blip2_vicuna_instruct` models):
`visual_encoder.*` (EVA ViT: cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1,
norm2, attn.qkv, attn.q_bias, attn.v_bias, attn.proj, mlp.fc1, mlp.fc2}),
`ln_vision` (LayerNorm after the ViT), `query_tokens`, `Qformer.bert.*` (BERT
naming: `attention.self.query`, `embeddings.LayerNorm`, ...), `t5_proj` /
`llm_proj` (language projection), `t5_model.*` / `llm_model.*` (language model,
already in Hugging Face naming). The ViT's qkv has no key bias:
qkv.bias = [q_bias, 0, v_bias] (as transformers' conversion script).

Checkpoints come in two shapes:
- trimmed (LAVIS's released `instruct_blip_*_trimmed.pth`): only the trained
  parts; everything else comes from the base transformers model of the preset;
- whole model, as LAVIS's and the ART authors' runner save it
  (`{"model", "optimizer", "scaler", "config", "epoch"}`, the trimming to
  trainable parameters commented out in ART): it also holds saved buffers
  (`Qformer.bert.embeddings.position_ids`, Vicuna's `rotary_emb.inv_freq`) and
  ART's sentence-transformer (`st_model.*`). Those have no InstructBLIP
  counterpart and are skipped, each with its reason in `conversion_report.json`.

Names that are neither mapped nor known-skipped stop the conversion. Missing
names among the parts the checkpoint is expected to hold (Q-Former, query
tokens, projection; the language model when it was trained; any part the
checkpoint holds only partly) stop it unless `allow_missing`.

Memory: the checkpoint is memory-mapped (zip format) and copied tensor by
tensor into the base model, which is loaded directly in the target dtype; no
second full copy of the model exists at any time.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reltune.errors import InputError
from reltune.io import write_json
from reltune.models.backbone import Backbone, language_model_family, load_backbone, save_backbone
from reltune.progress import track

REPORT_FILE = "conversion_report.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Target dtype per preset when none is given: bf16 halves a real model's memory; tiny stays exact.
PRESET_DTYPES = {"tiny": "fp32", "flan-t5-xl": "bf16", "vicuna-7b": "bf16"}
# Parts of the transformers model (first component of a parameter name).
ALWAYS_TRAINED = ("qformer", "query_tokens", "language_projection")


@dataclass(frozen=True)
class ConvertSettings:
    """Options of `reltune convert-lavis` (its CLI defaults come from here)."""

    dtype: str = ""  # '' = the preset's PRESET_DTYPES entry
    language_model_trained: bool = False  # LoRA / full training: the LM must be in the checkpoint
    allow_missing: bool = False  # convert even when expected names are missing (base weights stay)


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
# Saved entries with no InstructBLIP counterpart: (pattern, reason); checked before the renames.
_SKIPPED = (
    (r"^Qformer\.bert\.embeddings\.position_ids$",
     "saved buffer: positions 0..n-1, a non-persistent buffer rebuilt by transformers"),
    (r"^(t5_model|llm_model)\..*\.rotary_emb\.inv_freq$",
     "saved buffer: rotary frequencies, recomputed from the config by transformers"),
    (r"^st_model\.", "ART's sentence-transformer (answer similarity), not part of InstructBLIP"),
    (r"^Qformer\.cls\.", "Q-Former masked-LM head, unused by InstructBLIP"),
    (r"^(vision_proj|text_proj|itm_head)\.|^temp$", "BLIP-2 pretraining head, unused by InstructBLIP"),
)  # fmt: skip
# What LAVIS's (and ART's) runner saves next to "model" (runner_base._save_checkpoint).
_WRAPPER_ENTRIES = {
    "optimizer": "optimizer state (training only)",
    "scaler": "AMP loss-scaler state (training only)",
    "config": "LAVIS run configuration",
    "epoch": "epoch counter",
}
_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")


@dataclass
class Conversion:
    """Transformers-named tensors of a checkpoint and what was skipped (reason -> LAVIS names)."""

    tensors: dict[str, torch.Tensor]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)


def skip_reason(key: str) -> str | None:
    """Why a LAVIS key has no InstructBLIP counterpart; None when it has one."""
    return next((reason for pattern, reason in _SKIPPED if re.match(pattern, key)), None)


def lavis_key_to_transformers(key: str) -> str | None:
    """The transformers name of a LAVIS key; None for known keys InstructBLIP does not use."""
    if skip_reason(key) is not None:
        return None
    for pattern, replacement in (*_VISION_RENAMES, *_QFORMER_RENAMES, *_OTHER_RENAMES):
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(key)


def _merge_qv_biases(biases: dict[str, dict[str, torch.Tensor]], file: str) -> dict[str, torch.Tensor]:
    merged = {}
    for layer, parts in biases.items():
        if set(parts) != {"q_bias", "v_bias"}:
            raise InputError(file, f"vision block {layer} has {sorted(parts)} but needs both q_bias and v_bias")
        q_bias, v_bias = parts["q_bias"], parts["v_bias"]
        merged[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
            [q_bias, torch.zeros_like(v_bias), v_bias]
        )
    return merged


def convert_lavis_state_dict(lavis_state: Mapping[str, torch.Tensor], file: str = "checkpoint") -> Conversion:
    """Rename a LAVIS InstructBLIP state dict to transformers names (q/v biases merged into qkv.bias).

    Tensors are not copied (renaming only), so a memory-mapped checkpoint stays mapped.
    """
    conversion = Conversion(tensors={})
    biases: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in lavis_state.items():
        reason = skip_reason(key)
        bias_match = _QV_BIAS.match(key)
        if reason is not None:
            conversion.skip(reason, key)
        elif bias_match:
            biases.setdefault(bias_match.group(1), {})[bias_match.group(2)] = tensor
        else:
            try:
                conversion.tensors[lavis_key_to_transformers(key)] = tensor  # type: ignore[index]
            except KeyError:
                unknown.append(key)
    if unknown:
        raise InputError(file, f"{len(unknown)} keys are not LAVIS InstructBLIP names, e.g. {unknown[:3]}")
    conversion.tensors.update(_merge_qv_biases(biases, file))
    return conversion


def _load_refusing_code(path: Path) -> Any:
    """torch.load with weights_only (no pickled code runs); memory-mapped when the file is a zip checkpoint."""
    try:
        # Only the zip format (torch >= 1.6 default) can be memory-mapped; legacy files load whole.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # torch raises several types for corrupt or pickled-object files
        text = str(error)
        refused = re.search(r"WeightsUnpickler error: (.*?\.)(\s|$)", text)
        if refused:
            raise InputError(path, f"not a plain state dict, refused without running it: {refused.group(1)}") from None
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        raise InputError(path, f"not a readable torch checkpoint ({type(error).__name__}: {first_line})") from None


def read_lavis_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """The state dict of a LAVIS `.pth` and the wrapper entries skipped (reason -> names).

    Accepted: a bare state dict, or the runner's `{"model": state_dict, "optimizer": ...,
    "scaler": ..., "config": ..., "epoch": ...}` (other top-level entries stop the conversion).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    checkpoint = _load_refusing_code(path)
    if not isinstance(checkpoint, dict):
        raise InputError(path, f"expected a state dict or {{'model': state_dict, ...}}, got {type(checkpoint).__name__}")
    skipped: dict[str, list[str]] = {}
    state = checkpoint
    if isinstance(checkpoint.get("model"), dict):
        state = checkpoint["model"]
        unknown = sorted(str(key) for key in checkpoint if key != "model" and key not in _WRAPPER_ENTRIES)
        if unknown:
            raise InputError(path, f"unknown top-level entries {unknown} next to 'model'; expected {sorted(_WRAPPER_ENTRIES)}")
        for key in checkpoint:
            if key != "model":
                skipped.setdefault(f"runner checkpoint entry: {_WRAPPER_ENTRIES[key]}", []).append(key)
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise InputError(path, f"expected a state dict of tensors; {len(not_tensors)} entries are not tensors, e.g. {not_tensors[:3]}")
    return state, skipped


def _check_family(backbone: Backbone, lavis_state: Mapping[str, torch.Tensor], file: str) -> None:
    """A T5 checkpoint (t5_*) may not go into a Vicuna preset and vice versa."""
    own, other = ("t5", "llm") if language_model_family(backbone.model) == "t5" else ("llm", "t5")
    foreign = [key for key in lavis_state if key.startswith((f"{other}_proj.", f"{other}_model."))]
    if foreign:
        raise InputError(
            file, f"checkpoint's language model family does not match preset {backbone.preset} (e.g. {foreign[0]}; expected {own}_*)"
        )


def _check_names_and_shapes(backbone: Backbone, tensors: Mapping[str, torch.Tensor], file: str) -> None:
    own = backbone.model.state_dict()
    for name, tensor in tensors.items():
        if name not in own:
            raise InputError(file, f"{name} has no counterpart in the {backbone.preset} model")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise InputError(file, f"{name} has shape {tuple(tensor.shape)}, the {backbone.preset} model {tuple(own[name].shape)}")


def expected_parts(loaded: list[str], language_model_trained: bool) -> list[str]:
    """Parts the checkpoint must hold whole: the trained ones, and any it holds in part (a truncated save)."""
    parts = set(ALWAYS_TRAINED) | {name.split(".")[0] for name in loaded}
    if language_model_trained:
        parts.add("language_model")
    return sorted(parts)


def missing_names(backbone: Backbone, loaded: list[str], parts: list[str]) -> list[str]:
    """Names of `parts` in the model that the checkpoint did not provide.

    Tied names (T5's shared / embed_tokens) are one tensor: loading any of them loads all.
    """
    tied = getattr(backbone.model, "all_tied_weights_keys", None) or {}  # tied name -> the name it shares
    have = {tied.get(name, name) for name in loaded}
    return sorted(
        name for name in backbone.model.state_dict() if name.split(".")[0] in parts and tied.get(name, name) not in have
    )


def copy_into_model(backbone: Backbone, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy each tensor into the model's own storage (cast to its dtype), one tensor at a time."""
    own = backbone.model.state_dict()
    with torch.no_grad():
        for name in track(sorted(tensors), "copying checkpoint tensors"):
            own[name].copy_(tensors[name])


def target_dtype(preset: str, dtype: str) -> torch.dtype:
    """`dtype` ('fp32' | 'bf16' | 'fp16'), or the preset's default when empty."""
    chosen = dtype or PRESET_DTYPES.get(preset, "fp32")
    if chosen not in DTYPES:
        raise InputError("--dtype", f"unknown dtype {chosen!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[chosen]


def conversion_report(
    checkpoint: str | Path, backbone: Backbone, conversion: Conversion, skipped: dict[str, list[str]],
    parts: list[str], missing: list[str], settings: ConvertSettings,
) -> dict[str, Any]:  # fmt: skip
    """What `conversion_report.json` says: loaded, skipped by reason, missing (and the settings)."""
    skipped_all = {reason: sorted(names) for reason, names in {**conversion.skipped, **skipped}.items()}
    return {
        "checkpoint": str(checkpoint),
        "preset": backbone.preset,
        "dtype": str(backbone.model.dtype).removeprefix("torch."),
        "settings": asdict(settings),
        "expected_parts": parts,
        "counts": {
            "loaded": len(conversion.tensors),
            "skipped": sum(len(names) for names in skipped_all.values()),
            "missing": len(missing),
        },
        "loaded": sorted(conversion.tensors),
        "skipped": skipped_all,
        "missing": missing,
    }


def _refused_report_path(out_dir: Path) -> Path:
    return out_dir.parent / f"{out_dir.name}.{REPORT_FILE}"


def _refuse_missing(report: dict[str, Any], out_dir: Path, file: str) -> None:
    """Write the report beside the (not written) output and stop with one line naming the missing names."""
    refused = _refused_report_path(out_dir)
    write_json(report, refused)
    missing = report["missing"]
    raise InputError(
        file,
        f"{len(missing)} expected names are missing (parts {report['expected_parts']}), e.g. {missing[:3]}; "
        f"the base weights would stay for them. Full list in {refused}; pass --allow-missing to convert anyway",
    )


def convert_lavis(
    checkpoint: str | Path, preset: str, base: str, out_dir: str | Path, settings: ConvertSettings = ConvertSettings()
) -> dict[str, Any]:
    """`reltune convert-lavis`: base transformers model of `preset` + LAVIS weights -> `out_dir`.

    Returns the conversion report, also written to `out_dir/conversion_report.json`.
    """
    out_dir = Path(out_dir)
    state, wrapper_skipped = read_lavis_checkpoint(checkpoint)
    conversion = convert_lavis_state_dict(state, str(checkpoint))
    backbone = load_backbone(base, preset=preset, device="cpu", dtype=target_dtype(preset, settings.dtype))
    _check_family(backbone, state, str(checkpoint))
    _check_names_and_shapes(backbone, conversion.tensors, str(checkpoint))
    parts = expected_parts(list(conversion.tensors), settings.language_model_trained)
    missing = missing_names(backbone, list(conversion.tensors), parts)
    report = conversion_report(checkpoint, backbone, conversion, wrapper_skipped, parts, missing, settings)
    if missing and not settings.allow_missing:
        _refuse_missing(report, out_dir, str(checkpoint))
    copy_into_model(backbone, conversion.tensors)
    del state, conversion  # unmaps the checkpoint before the model is written
    backbone.extra = {"converted_from": str(checkpoint), "conversion": report["counts"]}
    save_backbone(backbone, out_dir)
    # Written after the model directory is in place (save_backbone renames a finished directory).
    write_json(report, out_dir / REPORT_FILE)
    _refused_report_path(out_dir).unlink(missing_ok=True)  # an earlier refusal's list is no longer true
    return report
