"""Relation-tuning loop: schedule, batch plan, examples, collation, freezing, crash + resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from reltune.instructions.build import build_instructions
from reltune.instructions.stage import write_instruction_table
from reltune.models.backbone import build_tiny, load_backbone
from reltune.models.images import union_crop
from toy_scenes import TOY_PREDICATES, make_toy_scenes
from reltune.models.training import (
    BatchPlan,
    TrainSettings,
    checkpoint_dir_for,
    collate_batch,
    learning_rate_factor,
    relation_training_examples,
    train_backbone,
)

SMALL = dict(vocab_size=400, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)


def test_learning_rate_warmup_then_cosine():
    # warmup 4, total 10: (s+1)/4 during warm-up, then 0.5 (1 + cos(pi (s-4)/6)).
    assert learning_rate_factor(0, 4, 10) == pytest.approx(0.25)
    assert learning_rate_factor(3, 4, 10) == pytest.approx(1.0)
    assert learning_rate_factor(4, 4, 10) == pytest.approx(1.0)
    assert learning_rate_factor(7, 4, 10) == pytest.approx(0.5)
    assert learning_rate_factor(10, 4, 10) == pytest.approx(0.0)
    assert learning_rate_factor(5, 0, 10) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 0.5)).item()))


def test_batch_plan_covers_every_row_once_per_epoch_across_processes():
    plan = BatchPlan(examples=10, batch_size=3, grad_accum=2, processes=2, epochs=2, seed=1)
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (2, 1, 2)
    for step in range(2):
        epoch, first = plan.micro_batches(step, 0)
        _, second = plan.micro_batches(step, 1)
        assert epoch == step
        assert [len(rows) for rows in first] == [3, 2] and [len(rows) for rows in second] == [3, 2]
        rows = [row for batch in first + second for row in batch]
        assert sorted(rows) == list(range(10))
    assert plan.micro_batches(0, 0) != plan.micro_batches(1, 0)  # reshuffled per epoch
    odd = BatchPlan(examples=7, batch_size=4, grad_accum=1, processes=2, epochs=1, seed=0, max_steps=0)
    _, first = odd.micro_batches(0, 0)
    _, second = odd.micro_batches(0, 1)
    rows = first[0] + second[0]
    assert len(rows) == 8 and set(rows) == set(range(7))  # one row repeated so both processes get 4
    assert BatchPlan(examples=100, batch_size=8, grad_accum=3, processes=1, epochs=5, seed=0, max_steps=7).total_steps == 7


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toytrain")
    scenes_dir = make_toy_scenes(root / "scenes", images=6, seed=4, image_size=64)
    scenes, vocab = read_scenes(scenes_dir, "train")
    instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy", split="train").table
    write_instruction_table(instructions, root / "train.parquet")
    texts = list(instructions["prompt"]) + list(instructions["target"])
    build_tiny(texts, root / "tiny", seed=0, **SMALL)
    return root, scenes_dir, scenes, vocab, instructions


def test_selection_brings_counter_negatives_and_checks_qids(toy):
    _, _, scenes, _, instructions = toy
    positives = instructions[instructions["kind"] == "positive"]
    chosen = positives["qid"].iloc[:2].tolist()
    examples = relation_training_examples(instructions, scenes, pd.DataFrame({"qid": chosen}))
    negatives = instructions[(instructions["kind"] == "negative") & instructions["positive_qid"].isin(chosen)]
    assert set(examples["qid"]) == set(chosen) | set(negatives["qid"]) and len(negatives) == 2
    expected_path = dict(zip(scenes["image_id"], scenes["image_path"]))
    assert all(path == expected_path[image] for image, path in zip(examples["image_id"], examples["image_path"]))
    assert len(relation_training_examples(instructions, scenes, None)) == len(instructions)
    with pytest.raises(InputError, match="sel.parquet.*not training positives"):
        relation_training_examples(instructions, scenes, pd.DataFrame({"qid": ["nope"]}), selection_file="sel.parquet")
    with pytest.raises(InputError, match="image_id not in the scene table"):
        relation_training_examples(instructions, scenes.iloc[1:], None)


def test_collate_masks_padding_and_prompt(toy):
    root = toy[0]
    backbone = load_backbone(str(root / "tiny"))
    crops = [union_crop(Image.new("RGB", (8, 8)), [0, 0, 8, 8], 64)] * 2
    batch = collate_batch(backbone, crops, ["a b", "a"], ["Yes, apple left of box.", "No."])
    tokenizer = backbone.processor.tokenizer
    long_ids = tokenizer("Yes, apple left of box.")["input_ids"]
    short_ids = tokenizer("No.")["input_ids"]
    assert batch["labels"][0].tolist() == long_ids
    assert batch["labels"][1].tolist() == short_ids + [-100] * (len(long_ids) - len(short_ids))
    # Decoder-only LMs read prompt + target; only the target (and its EOS) carries loss.
    backbone.model.config.use_decoder_only_language_model = True
    batch = collate_batch(backbone, crops, ["a b", "a"], ["No.", "Yes, apple left of box."])
    prompt_ids = backbone.processor(images=crops[:1], text=["a"])["input_ids"][0]
    answer = tokenizer("Yes, apple left of box.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    row = batch["input_ids"][1].tolist()
    assert row[: len(prompt_ids) + len(answer)] == list(prompt_ids) + answer
    assert batch["labels"][1].tolist()[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert batch["labels"][1].tolist()[len(prompt_ids) : len(prompt_ids) + len(answer)] == answer
    assert int(batch["attention_mask"][1].sum()) == len(prompt_ids) + len(answer)


def _weights(directory):
    return load_file(str(Path(directory) / "model.safetensors"))


def test_crash_resume_equals_uninterrupted_run_and_freezing_holds(toy, tmp_path):
    root, scenes_dir, scenes, vocab, instructions = toy
    settings = dict(epochs=3, batch_size=4, grad_accum=2, warmup_steps=2, max_steps=4, checkpoint_every=2, seed=7, log_every=1)
    examples = relation_training_examples(instructions, scenes, None)
    reference = train_backbone(root / "tiny", examples, vocab["image_root"], tmp_path / "reference", TrainSettings(**settings))
    assert reference.steps == 4 and reference.resumed_from_step == 0

    out = tmp_path / "crashed"
    command = [
        sys.executable, "-m", "reltune.cli", "train", "--backbone", str(root / "tiny"),
        "--instructions", str(root / "train.parquet"), "--scenes", str(scenes_dir), "--out", str(out),
        "--epochs", "3", "--batch-size", "4", "--grad-accum", "2", "--warmup-steps", "2", "--max-steps", "4",
        "--checkpoint-every", "2", "--seed", "7", "--log-every", "1", "--stop-after-steps", "3",
    ]  # fmt: skip
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1"}
    crashed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILL after step 3
    assert not out.exists()
    assert json.loads((checkpoint_dir_for(out) / "checkpoint.json").read_text())["step"] == 2

    resumed = train_backbone(root / "tiny", examples, vocab["image_root"], out, TrainSettings(**settings))
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert not checkpoint_dir_for(out).exists()
    expected, actual = _weights(tmp_path / "reference"), _weights(out)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(expected[name], actual[name], atol=1e-6), name
    assert resumed.losses == pytest.approx(reference.losses[2:], abs=1e-5)

    initial = _weights(root / "tiny")
    for name, tensor in expected.items():
        if name.startswith(("vision_model.", "language_model.")):
            assert torch.equal(tensor, initial[name]), name
    assert not torch.equal(expected["query_tokens"], initial["query_tokens"])
    assert not torch.equal(expected["language_projection.weight"], initial["language_projection.weight"])
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    assert metadata["training"]["steps"] == 4 and metadata["trainable"] == ["qformer", "query_tokens", "language_projection"]
    logged = (out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().split("\n")
    assert len([line for line in logged[1:] if line.strip()]) == 4  # steps 1..4 once each, despite the crash
