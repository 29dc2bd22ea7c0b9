"""InstructBLIP backbones: the real presets and the embedded tiny one (DESIGN §8, §9).

A backbone directory is a `save_pretrained` directory of an
`InstructBlipForConditionalGeneration` model and its `InstructBlipProcessor`,
plus `reltune_backbone.json` (preset, image size, trainable parts).

Trainable by default (DESIGN §8): Q-Former, query tokens and language
projection; the vision encoder and the language model are frozen. Optional
LoRA adapters on the language model (peft) are merged into the weights when
the model is saved, so every saved directory loads as a plain InstructBLIP.
The tiny preset may also train everything (`train_all`), which is what its
pretraining stage does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    T5Config,
)

from reltune.errors import InputError
from reltune.io import atomic_directory, read_json, write_json
from reltune.models.token_prior import TOKEN_EMBEDDINGS, TOKEN_PRIORS, apply_sentence_prior, token_texts
from reltune.models.tokenizer import EOS_ID, IMAGE_TOKEN, PAD_ID, SPECIAL_TOKENS, train_bpe_tokenizer, wrap_fast_tokenizer

BACKBONE_FILE = "reltune_backbone.json"
# Hub ids of the real presets: what a user downloads for `model.path`.
PRESET_HUB_IDS = {
    "flan-t5-xl": "Salesforce/instructblip-flan-t5-xl",
    "vicuna-7b": "Salesforce/instructblip-vicuna-7b",
}
PRESETS = ("tiny", *PRESET_HUB_IDS)
DEFAULT_TRAINABLE = ("qformer", "query_tokens", "language_projection")
# Attention projections that get LoRA adapters, per language model family.
LORA_TARGETS = {"t5": ["q", "v"], "llama": ["q_proj", "v_proj"]}


@dataclass
class Backbone:
    """A loaded model + processor and the facts the rest of the package needs."""

    model: InstructBlipForConditionalGeneration
    processor: InstructBlipProcessor
    image_size: int
    preset: str
    device: torch.device
    dtype: torch.dtype
    trainable: tuple[str, ...] = DEFAULT_TRAINABLE
    lora: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # parameters kept frozen whatever `set_trainable` is asked (the tiny model's token prior)
    frozen: tuple[str, ...] = ()


@dataclass(frozen=True)
class TinySizes:
    """Dimensions of the tiny InstructBLIP-T5 (DESIGN §9: 64 px, 8 px patches, 8 queries)."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 256
    qformer_hidden: int = 64
    qformer_layers: int = 2
    qformer_heads: int = 4
    qformer_intermediate: int = 256
    qformer_max_positions: int = 128
    num_query_tokens: int = 8
    text_d_model: int = 128
    text_d_ff: int = 256
    text_layers: int = 2
    text_heads: int = 4
    vocab_size: int = 2000


@dataclass(frozen=True)
class TinyInit:
    """How the tiny model's attention starts (issue 16, part 3; README "The embedded default world").

    Under transformers' init the vision position table is N(0, 0.02), ~10x weaker than the patch
    embeddings, and the Q-Former's cross-attention logits are ~0, so the queries average the image:
    measured, the pretrained model could not say which object is on the left (chance), and neither
    change alone fixed it. Both together did (README).
    """

    # vision position table = 2-D sine/cosine of the patch column and row, times this (0: transformers' init)
    position_amplitude: float = 1.0
    # std of the Q-Former cross-attention query/key weights (0: transformers' 0.02); 0.2 gives logits of std ~2.5
    cross_attention_std: float = 0.2
    # sentence: word embeddings start from the sentence model's embedding of each token (sentence-frozen: and stay
    # there); reltune.models.token_prior
    token_prior: str = "none"


def sincos_position_table(grid: int, width: int, amplitude: float) -> torch.Tensor:
    """(1, 1 + grid*grid, width): a zero row for the class token, then sin/cos of each patch's column and row.

    Half the channels encode the column, half the row, at geometric frequencies (as MAE's 2-D table).
    """
    if width % 4:
        raise InputError("--vision-hidden", f"{width} is not divisible by 4 (2-D sine/cosine position table)")
    quarter = width // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows, columns = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    parts = []
    for coordinate in (columns.flatten(), rows.flatten()):
        angles = coordinate[:, None] * frequencies[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    table = torch.cat(parts, dim=1) * amplitude
    return torch.cat([torch.zeros(1, width), table])[None]


def check_tiny_sizes(sizes: TinySizes) -> None:
    """Refuse sizes the model cannot be built with (one line naming the flags), before any work."""
    for width, heads in (("vision_hidden", "vision_heads"), ("qformer_hidden", "qformer_heads"), ("text_d_model", "text_heads")):
        if getattr(sizes, width) % getattr(sizes, heads):
            raise InputError(
                f"--{width.replace('_', '-')}",
                f"{getattr(sizes, width)} is not divisible by --{heads.replace('_', '-')} {getattr(sizes, heads)}",
            )
    if sizes.image_size % sizes.patch_size:
        raise InputError("--image-size", f"{sizes.image_size} is not divisible by --patch-size {sizes.patch_size}")
    nonpositive = [name for name, value in vars(sizes).items() if not isinstance(value, int) or value < 1]
    if nonpositive:
        raise InputError(f"--{nonpositive[0].replace('_', '-')}", "must be a positive integer")


def default_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU (DESIGN §8)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def language_model_family(model: InstructBlipForConditionalGeneration) -> str:
    return "t5" if not model.config.use_decoder_only_language_model else "llama"


def build_tiny_model(
    vocab_size: int, image_token_id: int, sizes: TinySizes, seed: int, init: TinyInit = TinyInit()
) -> InstructBlipForConditionalGeneration:
    """Random-init tiny InstructBLIP-T5 whose image actually reaches the language model.

    transformers initialises the vision tower with std 1e-10 and the query
    tokens at zero, which makes a random model ignore its image (DESIGN §9):
    the vision init is 0.02 and the query tokens are drawn from N(0, 0.02).
    `init` makes position visible and the Q-Former's attention selective (TinyInit).
    """
    vision = InstructBlipVisionConfig(
        hidden_size=sizes.vision_hidden,
        intermediate_size=sizes.vision_intermediate,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        initializer_range=0.02,
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=vocab_size,
        hidden_size=sizes.qformer_hidden,
        num_hidden_layers=sizes.qformer_layers,
        num_attention_heads=sizes.qformer_heads,
        intermediate_size=sizes.qformer_intermediate,
        max_position_embeddings=sizes.qformer_max_positions,
        cross_attention_frequency=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD_ID,
    )
    text = T5Config(
        vocab_size=vocab_size,
        d_model=sizes.text_d_model,
        d_kv=sizes.text_d_model // sizes.text_heads,
        d_ff=sizes.text_d_ff,
        num_layers=sizes.text_layers,
        num_decoder_layers=sizes.text_layers,
        num_heads=sizes.text_heads,
        dropout_rate=0.0,  # measured: dropout slows the tiny model down without helping
        feed_forward_proj="gated-gelu",  # as Flan-T5
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    config = InstructBlipConfig(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=sizes.num_query_tokens,
        image_token_index=image_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(config)
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 0.02)
            if init.position_amplitude:
                embeddings = model.vision_model.embeddings
                grid = sizes.image_size // sizes.patch_size
                embeddings.position_embedding.copy_(sincos_position_table(grid, sizes.vision_hidden, init.position_amplitude))
            if init.cross_attention_std:
                for layer in model.qformer.encoder.layer:
                    if getattr(layer, "has_cross_attention", False):
                        layer.crossattention.attention.query.weight.normal_(0.0, init.cross_attention_std)
                        layer.crossattention.attention.key.weight.normal_(0.0, init.cross_attention_std)
    return model


def build_tiny_processor(corpus: Iterable[str], sizes: TinySizes) -> InstructBlipProcessor:
    """Processor with a BPE tokenizer trained on `corpus`, used by both the LM and the Q-Former."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    bpe = train_bpe_tokenizer(corpus, vocab_size=sizes.vocab_size)
    language_tokenizer = wrap_fast_tokenizer(bpe)
    qformer_tokenizer = wrap_fast_tokenizer(bpe, model_max_length=sizes.qformer_max_positions)
    image_processor = BlipImageProcessorPil(size={"height": sizes.image_size, "width": sizes.image_size})
    # The processor registers `<image>`; it is already a special token of the BPE vocabulary.
    return InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=language_tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=sizes.num_query_tokens,
    )


def build_tiny(corpus: Iterable[str], out_dir: str | Path, seed: int = 0, init: TinyInit = TinyInit(), **sizes: int) -> Backbone:
    """Train the tokenizer on `corpus`, build the random tiny model (`init`: TinyInit), save it to `out_dir`."""
    unknown = sorted(set(sizes) - set(TinySizes.__dataclass_fields__))
    if unknown:
        raise InputError("build_tiny", f"unknown size arguments {unknown}")
    tiny_sizes = TinySizes(**sizes)
    check_tiny_sizes(tiny_sizes)
    if init.position_amplitude and tiny_sizes.vision_hidden % 4:
        raise InputError("--vision-hidden", f"{tiny_sizes.vision_hidden} is not divisible by 4 (needed by --position-amplitude)")
    if init.token_prior not in TOKEN_PRIORS:
        raise InputError("--token-prior", f"{init.token_prior!r} is not one of {list(TOKEN_PRIORS)}")
    processor = build_tiny_processor(corpus, tiny_sizes)
    tokenizer = processor.tokenizer
    model = build_tiny_model(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tiny_sizes, seed, init)
    frozen: tuple[str, ...] = ()
    if init.token_prior != "none":
        from reltune.embedding import shared_embedder

        apply_sentence_prior(model, token_texts(tokenizer, SPECIAL_TOKENS), shared_embedder().embed)
        frozen = TOKEN_EMBEDDINGS if init.token_prior == "sentence-frozen" else ()
    device = torch.device("cpu")
    backbone = Backbone(
        model=model,
        processor=processor,
        image_size=tiny_sizes.image_size,
        preset="tiny",
        device=device,
        dtype=dtype_for(device),
        frozen=frozen,
    )
    set_trainable(backbone)
    save_backbone(backbone, out_dir)
    return backbone


def set_trainable(
    backbone: Backbone,
    train_all: bool = False,
    lora_r: int = 0,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
) -> tuple[str, ...]:
    """Freeze per DESIGN §8 (or train everything) and optionally add LoRA to the LM.

    The backbone's `frozen` parameters stay frozen either way. Returns the trainable part names, also stored on the backbone.
    """
    model = backbone.model
    if train_all:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        parts: tuple[str, ...] = ("all",)
    else:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in model.qformer.parameters():
            parameter.requires_grad_(True)
        for parameter in model.language_projection.parameters():
            parameter.requires_grad_(True)
        model.query_tokens.requires_grad_(True)
        parts = DEFAULT_TRAINABLE
    if lora_r > 0:
        add_lora(model, lora_r, lora_alpha, lora_dropout)
        backbone.lora = {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout}
        parts = (*parts, "lora")
    for name in backbone.frozen:
        model.get_parameter(name).requires_grad_(False)
    backbone.trainable = parts
    return parts


def add_lora(model: InstructBlipForConditionalGeneration, r: int, alpha: int, dropout: float) -> None:
    """Inject LoRA adapters into the language model in place (only they train there)."""
    from peft import LoraConfig, inject_adapter_in_model

    family = language_model_family(model)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS[family])
    inject_adapter_in_model(config, model.language_model)
    for name, parameter in model.language_model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(True)


def merge_lora(model: InstructBlipForConditionalGeneration) -> bool:
    """Fold LoRA adapters into their base weights and remove them; True if any were present."""
    from peft.tuners.lora import LoraLayer

    replaced = False
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, module.get_base_layer())
            replaced = True
    return replaced


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def save_backbone(backbone: Backbone, out_dir: str | Path, extra_dirs: dict[str, Path] | None = None) -> Path:
    """Save model + processor + `reltune_backbone.json` atomically (temp dir, then rename).

    LoRA adapters are merged into the weights first (the saved model is a plain InstructBLIP).
    `extra_dirs` ({name: directory}) are copied in under their names (e.g. training logs).
    """
    target = Path(out_dir)
    merged = merge_lora(backbone.model)
    # A temporary sibling renamed over `out_dir`; a killed save's leftovers are removed first.
    with atomic_directory(target) as temporary:
        backbone.model.save_pretrained(temporary)
        backbone.processor.save_pretrained(temporary)
        write_json(
            {
                "preset": backbone.preset,
                "image_size": backbone.image_size,
                "num_query_tokens": backbone.model.config.num_query_tokens,
                "language_model": language_model_family(backbone.model),
                "trainable": list(backbone.trainable),
                "lora_merged": backbone.lora if merged else None,
                "frozen_parameters": list(backbone.frozen),
                **backbone.extra,
            },
            temporary / BACKBONE_FILE,
        )
        for name, directory in (extra_dirs or {}).items():
            shutil.copytree(directory, temporary / name)
    return target


def _missing_weights_error(path: str, preset: str) -> InputError:
    hub_id = PRESET_HUB_IDS[preset]
    return InputError(
        path,
        f"no {preset} weights here; download {hub_id} (e.g. `hf download {hub_id} --local-dir models/pretrained/{preset}`) "
        f"and set model.path to that directory",
    )


def _infer_preset(path: str, metadata: dict[str, Any] | None, config_model_type: str | None) -> str | None:
    """The preset named by reltune_backbone.json, the path, or the language model type (None if unknown)."""
    if metadata and metadata.get("preset"):
        return str(metadata["preset"])
    for preset, hub_id in PRESET_HUB_IDS.items():
        if path.rstrip("/").endswith(hub_id) or Path(path).name in (preset, hub_id.split("/")[1]):
            return preset
    return {"t5": "flan-t5-xl", "llama": "vicuna-7b"}.get(config_model_type or "")


def load_backbone(path: str, preset: str | None = None, device: str | None = None, dtype: torch.dtype | None = None) -> Backbone:
    """Load a backbone from a save_pretrained directory, or a real preset from a local dir / hub id.

    Nothing is downloaded when HF_HUB_OFFLINE is set: missing weights give a
    one-line error naming what to download and where to put it.
    """
    if preset is not None and preset not in PRESETS:
        raise InputError(path, f"unknown backbone preset {preset!r}; expected one of {list(PRESETS)}")
    directory = Path(path)
    metadata = read_json(directory / BACKBONE_FILE) if (directory / BACKBONE_FILE).is_file() else None
    if metadata is None and preset == "tiny":
        raise InputError(path, f"not a tiny backbone directory (no {BACKBONE_FILE}); run `reltune build-tiny` first")
    if directory.is_dir() and not (directory / "config.json").is_file():
        if preset in PRESET_HUB_IDS:
            raise _missing_weights_error(path, preset)
        raise InputError(path, "not a backbone directory (no config.json)")
    target_device = default_device(device)
    dtype = dtype or dtype_for(target_device)  # an explicit dtype: e.g. convert-lavis loads a real preset in bf16
    try:
        model = InstructBlipForConditionalGeneration.from_pretrained(path, dtype=dtype)
        processor = InstructBlipProcessor.from_pretrained(path)
    except OSError:
        chosen = preset or _infer_preset(path, metadata, None)
        if chosen in PRESET_HUB_IDS:
            raise _missing_weights_error(path, chosen) from None
        if directory.is_dir():
            raise InputError(path, "backbone weights or processor files missing") from None
        raise InputError(path, "backbone directory not found (nor a hub id in the local cache)") from None
    chosen = preset or _infer_preset(path, metadata, model.config.text_config.model_type)
    if chosen is None:
        raise InputError(path, f"cannot tell the backbone preset; pass one of {list(PRESETS)}")
    model.to(target_device)
    size = processor.image_processor.size
    image_size = int(size["height"] if isinstance(size, dict) else size.height)
    backbone = Backbone(
        model=model,
        processor=processor,
        image_size=image_size,
        preset=chosen,
        device=target_device,
        dtype=dtype,
        frozen=_frozen_parameters(path, metadata, model),
    )
    set_trainable(backbone)
    return backbone


def _frozen_parameters(path: str, metadata: dict[str, Any] | None, model: torch.nn.Module) -> tuple[str, ...]:
    """The parameter names `reltune_backbone.json` keeps frozen (checked against the model)."""
    names = (metadata or {}).get("frozen_parameters") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InputError(str(Path(path) / BACKBONE_FILE), "frozen_parameters must be a list of parameter names")
    unknown = sorted(set(names) - {name for name, _ in model.named_parameters()})
    if unknown:
        raise InputError(str(Path(path) / BACKBONE_FILE), f"frozen_parameters names no parameter of the model: {unknown[0]!r}")
    return tuple(names)
