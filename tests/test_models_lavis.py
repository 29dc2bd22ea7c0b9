"""LAVIS / ART InstructBLIP checkpoints -> transformers layout, for the T5 and the Vicuna variant.

Checkpoints are built from LAVIS's module names (test_models_lavis_helpers);
where each value must land comes from the renaming of transformers' own
conversion script, re-done independently of reltune's rules.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_models_lavis_helpers import (
    art_checkpoint,
    build_tiny_t5,
    build_tiny_vicuna,
    lavis_state_dict,
    transformers_script_names,
)

from reltune.cli import main
from reltune.errors import InputError
from reltune.models.backbone import load_backbone
from reltune.models.lavis import REPORT_FILE, ConvertSettings, convert_lavis, lavis_key_to_transformers

FP32 = ConvertSettings(dtype="fp32")
PRESETS = {"t5": "tiny", "llama": "vicuna-7b"}
BUFFER_REASON = "saved buffer"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Tiny base models of both families: {family: (directory, backbone)}."""
    root = tmp_path_factory.mktemp("bases")
    t5 = build_tiny_t5(root / "t5")
    return {"t5": (root / "t5", t5), "llama": (root / "llama", build_tiny_vicuna(root / "t5", root / "llama"))}


def convert(bases, family, checkpoint, out, settings=FP32):
    return convert_lavis(checkpoint, PRESETS[family], str(bases[family][0]), out, settings)


def test_key_names_of_known_lavis_parameters():
    assert lavis_key_to_transformers("visual_encoder.blocks.12.attn.proj.weight") == "vision_model.encoder.layers.12.self_attn.projection.weight"
    assert lavis_key_to_transformers("Qformer.bert.encoder.layer.3.crossattention.self.key.bias") == "qformer.encoder.layer.3.crossattention.attention.key.bias"
    assert lavis_key_to_transformers("Qformer.bert.encoder.layer.0.output_query.LayerNorm.weight") == "qformer.encoder.layer.0.output_query.LayerNorm.weight"
    assert lavis_key_to_transformers("llm_proj.bias") == "language_projection.bias"
    assert lavis_key_to_transformers("llm_model.model.layers.0.self_attn.q_proj.weight") == "language_model.model.layers.0.self_attn.q_proj.weight"
    assert lavis_key_to_transformers("Qformer.cls.predictions.bias") is None
    assert lavis_key_to_transformers("llm_model.model.layers.5.self_attn.rotary_emb.inv_freq") is None
    assert lavis_key_to_transformers("st_model.0.auto_model.encoder.layer.0.attention.self.query.weight") is None


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_art_checkpoint_round_trip_lands_every_value_where_transformers_puts_it(bases, family, tmp_path):
    base_dir, base = bases[family]
    lavis = lavis_state_dict(base, seed=11)
    torch.save(art_checkpoint(lavis, seed=12), tmp_path / "checkpoint_best.pth")
    report = convert(bases, family, tmp_path / "checkpoint_best.pth", tmp_path / "converted")

    reference = transformers_script_names(lavis, base.model.config.vision_config.num_hidden_layers)
    converted = load_backbone(str(tmp_path / "converted")).model.state_dict()
    base_state = base.model.state_dict()
    buffers = {"qformer.embeddings.position_ids"}
    if family == "llama":
        buffers |= {f"language_model.model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(2)}
    assert set(reference) - set(converted) == buffers  # only the saved buffers have no place
    assert set(converted) <= set(reference)  # every weight of the model came from the checkpoint
    for name, tensor in converted.items():
        assert torch.equal(tensor, reference[name]), name
    assert sum(not torch.equal(base_state[name], converted[name]) for name in converted) > 0.9 * len(converted)

    assert report["missing"] == [] and report["counts"]["loaded"] == len(converted)
    skipped = report["skipped"]
    by_reason = {name: reason for reason, names in skipped.items() for name in names}
    assert by_reason["Qformer.bert.embeddings.position_ids"].startswith(BUFFER_REASON)
    if family == "llama":
        assert by_reason["llm_model.model.layers.1.self_attn.rotary_emb.inv_freq"].startswith(BUFFER_REASON)
    st_names = [name for name in by_reason if name.startswith("st_model.")]
    assert len(st_names) == 9 and len({by_reason[name] for name in st_names}) == 1
    assert {"optimizer", "scaler", "config", "epoch"} <= set(by_reason)
    assert report["counts"]["skipped"] == len(by_reason) == 1 + 9 + 4 + (2 if family == "llama" else 0)
    assert json.loads((tmp_path / "converted" / REPORT_FILE).read_text()) == report


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_truncated_checkpoint_is_refused_unless_allowed(bases, family, tmp_path):
    base_dir, base = bases[family]
    lavis = lavis_state_dict(base, seed=21)
    dropped = "Qformer.bert.encoder.layer.1.output_query.dense.weight"
    torch.save({"model": {k: v for k, v in lavis.items() if k != dropped}}, tmp_path / "cut.pth")
    with pytest.raises(InputError, match=r"cut.pth: 1 expected names are missing .*qformer.encoder.layer.1.output_query.dense.weight.*--allow-missing"):
        convert(bases, family, tmp_path / "cut.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    refused = json.loads((tmp_path / f"out.{REPORT_FILE}").read_text())
    assert refused["missing"] == ["qformer.encoder.layer.1.output_query.dense.weight"]

    report = convert(bases, family, tmp_path / "cut.pth", tmp_path / "out", ConvertSettings(dtype="fp32", allow_missing=True))
    assert report["missing"] == ["qformer.encoder.layer.1.output_query.dense.weight"]
    assert not (tmp_path / f"out.{REPORT_FILE}").exists()  # the refusal's list went with the refusal
    converted = load_backbone(str(tmp_path / "out")).model.state_dict()
    name = "qformer.encoder.layer.1.output_query.dense.weight"
    assert torch.equal(converted[name], base.model.state_dict()[name])  # the base value stayed

    # A whole-model save with one language-model tensor gone is truncated too.
    lm_key = "t5_model.decoder.final_layer_norm.weight" if family == "t5" else "llm_model.model.norm.weight"
    torch.save({k: v for k, v in lavis.items() if k != lm_key}, tmp_path / "lm_cut.pth")
    with pytest.raises(InputError, match=r"1 expected names are missing .*'language_model"):
        convert(bases, family, tmp_path / "lm_cut.pth", tmp_path / "out2")


def test_tied_embeddings_count_as_loaded_through_any_of_their_names(bases, tmp_path):
    """T5 ties embed_tokens (and here lm_head) to shared: a save holding one of the names is whole."""
    base_dir, base = bases["t5"]
    lavis = lavis_state_dict(base, seed=51)
    dropped = ("t5_model.shared.weight", "t5_model.encoder.embed_tokens.weight", "t5_model.lm_head.weight")
    torch.save({k: v for k, v in lavis.items() if k not in dropped}, tmp_path / "dedup.pth")
    report = convert(bases, "t5", tmp_path / "dedup.pth", tmp_path / "out")
    assert report["missing"] == []
    converted = load_backbone(str(tmp_path / "out")).model.state_dict()
    assert torch.equal(converted["language_model.shared.weight"], lavis["t5_model.decoder.embed_tokens.weight"])
    torch.save({k: v for k, v in lavis.items() if "embed_tokens" not in k and k not in dropped}, tmp_path / "none.pth")
    with pytest.raises(InputError, match=r"4 expected names are missing .*'language_model.decoder.embed_tokens.weight'"):
        convert(bases, "t5", tmp_path / "none.pth", tmp_path / "out2")


def test_trimmed_checkpoint_and_trained_language_model(bases, tmp_path):
    """LAVIS's released checkpoints hold only the trained parts: the rest comes from the base."""
    base_dir, base = bases["llama"]
    lavis = lavis_state_dict(base, seed=31)
    trimmed = {k: v for k, v in lavis.items() if k.startswith(("Qformer.", "query_tokens", "llm_proj."))}
    torch.save({"model": trimmed}, tmp_path / "trimmed.pth", _use_new_zipfile_serialization=False)  # legacy: no mmap
    report = convert(bases, "llama", tmp_path / "trimmed.pth", tmp_path / "out", ConvertSettings())  # preset dtype
    assert report["missing"] == [] and report["dtype"] == "bfloat16"
    state = load_file(str(tmp_path / "out" / "model.safetensors"))  # as stored, not as loaded on CPU
    assert state["query_tokens"].dtype == torch.bfloat16
    assert torch.equal(state["query_tokens"].float(), lavis["query_tokens"].bfloat16().float())
    base_state = base.model.state_dict()
    assert torch.equal(state["vision_model.post_layernorm.weight"].float(), base_state["vision_model.post_layernorm.weight"].bfloat16().float())

    with pytest.raises(InputError, match=r"expected names are missing \(parts \[.*'language_model'.*language_model\.lm_head\.weight"):
        convert(bases, "llama", tmp_path / "trimmed.pth", tmp_path / "lm", ConvertSettings(language_model_trained=True))


def test_pickled_code_is_refused_without_running(bases, tmp_path):
    marker = tmp_path / "ran.txt"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"query_tokens": torch.zeros(1)}, "epoch": RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match=r"evil.pth: not a plain state dict, refused without running it: Unsupported global") as error:
        convert(bases, "t5", tmp_path / "evil.pth", tmp_path / "x")
    assert "\n" not in str(error.value)
    assert not marker.exists() and not (tmp_path / "x").exists()


def test_bad_checkpoints_fail_with_one_line(bases, tmp_path):
    base_state = bases["t5"][1].model.state_dict()
    cases = {
        "unknown.pth": ({"decoder.weird": torch.zeros(1)}, "not LAVIS InstructBLIP names.*decoder.weird"),
        "shape.pth": ({"query_tokens": torch.zeros(1, 3, 5)}, r"query_tokens has shape \(1, 3, 5\)"),
        "half.pth": ({"visual_encoder.blocks.0.attn.q_bias": torch.zeros(64)}, "needs both q_bias and v_bias"),
        "family.pth": ({"llm_proj.weight": base_state["language_projection.weight"]}, "family does not match.*llm_proj.weight"),
        "wrapper.pth": ({"model": {}, "ema": torch.zeros(1)}, r"unknown top-level entries \['ema'\]"),
        "values.pth": ({"query_tokens": torch.zeros(1), "note": "hi"}, r"1 entries are not tensors.*'note'"),
    }
    for file, (content, message) in cases.items():
        torch.save(content, tmp_path / file)
        with pytest.raises(InputError, match=f"{file}: .*{message}"):
            convert(bases, "t5", tmp_path / file, tmp_path / "x")
    with pytest.raises(InputError, match="missing.pth.*not found"):
        convert(bases, "t5", tmp_path / "missing.pth", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_command_line(bases, tmp_path, capsys):
    base_dir, base = bases["t5"]
    lavis = lavis_state_dict(base, seed=41)
    torch.save({k: v for k, v in lavis.items() if k != "query_tokens"}, tmp_path / "cut.pth")
    argv = ["convert-lavis", "--checkpoint", str(tmp_path / "cut.pth"), "--preset", "tiny", "--base", str(base_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the loading progress lines
    assert error.startswith("reltune convert-lavis: error:") and "['query_tokens']" in error
    assert main([*argv, "--allow-missing"]) == 0
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert report["missing"] == ["query_tokens"] and report["dtype"] == "float32" and report["settings"]["allow_missing"]
