"""Relation-tuning loop: schedule, batch plan, examples, collation, freezing, crash + resume, best epoch."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer

from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from reltune.instructions.build import build_instructions
from reltune.instructions.stage import write_instruction_table
from reltune.models.backbone import build_tiny, load_backbone
from reltune.models.images import union_crop
from reltune.models.names import copied_rows, even_lengths, pool_fingerprint, training_pool
from toy_scenes import TOY_PREDICATES, make_toy_scenes
from reltune.models.training import (
    BatchPlan,
    Schedule,
    TrainSettings,
    check_warmup,
    checkpoint_dir_for,
    collate_batch,
    learning_rate_factor,
    relation_training_examples,
    train_backbone,
    validation_set,
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



def test_min_steps_raises_the_epochs_of_a_small_round_only():
    # 596 rows at 128 per step: 5 steps per epoch; 20 epochs = 100 steps < 700, so 140 epochs (700 steps)
    small = BatchPlan.of(TrainSettings(epochs=20, batch_size=128, min_steps=700), examples=596, processes=1)
    assert (small.steps_per_epoch, small.epochs, small.total_steps) == (5, 140, 700)
    # 1757 rows: 14 steps per epoch; ceil(700 / 14) = 50 epochs, 700 steps
    assert BatchPlan.of(TrainSettings(epochs=20, min_steps=700), examples=1757, processes=1).epochs == 50
    # a round that already has enough steps keeps its epochs (14720 rows: 115 steps x 20 = 2300)
    large = BatchPlan.of(TrainSettings(epochs=20, min_steps=700), examples=14720, processes=1)
    assert (large.epochs, large.total_steps) == (20, 2300)
    # 0 keeps epochs as given; max_steps still caps the raised round; steps per epoch count every process
    assert BatchPlan.of(TrainSettings(epochs=0, min_steps=700), examples=596, processes=1).total_steps == 0  # refused later
    assert BatchPlan.of(TrainSettings(epochs=20, min_steps=0), examples=596, processes=1).total_steps == 100
    assert BatchPlan.of(TrainSettings(epochs=20, min_steps=700, max_steps=300), examples=596, processes=1).total_steps == 300
    assert BatchPlan.of(TrainSettings(epochs=20, min_steps=700), examples=596, processes=2).epochs == 234  # 3 steps each
    # the cosine of a raised round runs over its own epochs, so its last epoch still ends near 0
    schedule = Schedule.of(TrainSettings(epochs=20, min_steps=700, schedule="lavis-cosine"), small)
    assert schedule.epochs == 140 and schedule.factor(699) == pytest.approx(0.5 * (1 + math.cos(math.pi * 139 / 140)))

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
    reference = train_backbone(
        root / "tiny", examples, vocab["image_root"], tmp_path / "reference", TrainSettings(**settings),
        name_pool=training_pool(instructions, scenes_dir.parent),
    )  # fmt: skip
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

    # the substitute names `reltune train` draws from (its checkpoint records their fingerprint)
    pool = training_pool(instructions, scenes_dir.parent)
    resumed = train_backbone(root / "tiny", examples, vocab["image_root"], out, TrainSettings(**settings), name_pool=pool)
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


# ---------------------------------------------------------------- schedules (issue 14)


def _schedule(name, warmup, steps_per_epoch=5, epochs=4, max_steps=0, decay=0.9):
    plan = BatchPlan(examples=steps_per_epoch * 8, batch_size=8, grad_accum=1, processes=1, epochs=epochs, seed=0, max_steps=max_steps)
    settings = TrainSettings(schedule=name, warmup_steps=warmup, epochs=epochs, decay_rate=decay)
    return Schedule.of(settings, plan)


def test_lavis_step_warms_up_in_the_first_epoch_then_decays_per_epoch():
    schedule = _schedule("lavis-step", warmup=3)
    factors = [schedule.factor(step) for step in range(20)]
    # epoch 0: (s+1)/3 capped at 1; epoch e >= 1: 0.9 ** e, one value for the whole epoch
    assert factors[:5] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert factors[5:10] == pytest.approx([0.9] * 5)
    assert factors[10:15] == pytest.approx([0.81] * 5) and factors[15:] == pytest.approx([0.729] * 5)
    assert schedule.warmup_length == 3
    # a warm-up longer than the first epoch stops at its end (LAVIS) and counts as that epoch's steps
    long = _schedule("lavis-step", warmup=3000)
    assert long.factor(4) == pytest.approx(5 / 3000) and long.factor(5) == pytest.approx(0.9) and long.warmup_length == 5
    assert _schedule("lavis-step", warmup=3, decay=0.5).factor(12) == pytest.approx(0.25)


def test_lavis_cosine_decays_by_epoch_and_warmup_cosine_by_step():
    schedule = _schedule("lavis-cosine", warmup=2, epochs=4)
    assert [schedule.factor(step) for step in (0, 1, 4)] == pytest.approx([0.5, 1.0, 1.0])
    # LAVIS cosine_lr_schedule with min_lr 0: 0.5 (1 + cos(pi e / max_epoch)) for epoch e
    for epoch in (1, 2, 3):
        expected = 0.5 * (1 + math.cos(math.pi * epoch / 4))
        assert [schedule.factor(epoch * 5 + offset) for offset in range(5)] == pytest.approx([expected] * 5)
    steps = _schedule("warmup-cosine", warmup=4, steps_per_epoch=10, epochs=1)
    assert [steps.factor(step) for step in (0, 3, 7, 10)] == pytest.approx([0.25, 1.0, 0.5, 0.0])
    assert steps.warmup_length == 4


def test_a_warmup_longer_than_the_round_is_refused_unless_allowed():
    # warmup-cosine: 100 warm-up steps against 4 epochs x 5 steps
    with pytest.raises(InputError, match=r"warm-up of 100 optimizer steps is longer than the round's 20") as error:
        check_warmup(_schedule("warmup-cosine", warmup=100), allow_long_warmup=False)
    assert "\n" not in str(error.value)
    check_warmup(_schedule("warmup-cosine", warmup=100), allow_long_warmup=True)
    check_warmup(_schedule("warmup-cosine", warmup=20), allow_long_warmup=False)  # equal length: it ends at the last step
    # lavis-*: the warm-up is capped at the first epoch, so only a round shorter than one epoch can be refused
    check_warmup(_schedule("lavis-step", warmup=3000), allow_long_warmup=False)
    with pytest.raises(InputError, match=r"warm-up of 5 optimizer steps is longer than the round's 3 \(lavis-cosine\)"):
        check_warmup(_schedule("lavis-cosine", warmup=3000, max_steps=3), allow_long_warmup=False)
    check_warmup(_schedule("lavis-cosine", warmup=3, max_steps=3), allow_long_warmup=False)
    with pytest.raises(InputError, match="unknown schedule 'linear'"):
        _schedule("linear", warmup=1)


def test_train_refuses_a_long_warmup_before_loading_anything(toy, tmp_path, capsys):
    from reltune.cli import main

    root, scenes_dir, *_ = toy
    out = tmp_path / "never"
    argv = ["train", "--backbone", str(tmp_path / "no-such-backbone"), "--instructions", str(root / "train.parquet"),
            "--scenes", str(scenes_dir), "--out", str(out), "--epochs", "2", "--batch-size", "1000", "--min-steps", "0",
            "--warmup-steps", "50", "--schedule", "warmup-cosine", "--device", "cpu"]  # fmt: skip
    # the backbone does not exist: reaching the model load would be a different error
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("reltune train: error: --warmup-steps: warm-up of 50 optimizer steps is longer than the round's 2")
    assert "\n" not in message and not out.exists() and not checkpoint_dir_for(out).exists()
    assert main([*argv[:-2], "--select-best", "true"]) == 2  # best-epoch selection without --val
    assert "needs the validation instructions" in capsys.readouterr().err


def test_train_settings_defaults_are_the_params_yaml_train_parameters():
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["train"]
    defaults = dataclasses.asdict(TrainSettings())
    assert set(params) <= set(defaults), set(params) - set(defaults)
    assert {key: defaults[key] for key in params} == params


def test_select_best_saves_the_best_epochs_weights(toy, tmp_path, monkeypatch):
    import reltune.inference.scoring as scoring

    root, _, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    validation = validation_set(instructions, scenes, vocab["image_root"], cap=5, seed=0, file="val.parquet")
    assert len(validation.questions) == 5 and set(validation.questions["kind"]) == {"positive"}
    # scripted validation recall per epoch: epoch 2 is the best, so its weights (not the last) must be saved
    scripted = iter([0.25, 0.75, 0.5])

    def fake_recall(questions, source):
        value = next(scripted)
        return {"per_predicate": {}, "mean_recall": value, "recall": value, "questions": len(questions)}, None

    monkeypatch.setattr(scoring, "validation_recall", fake_recall)
    common = dict(epochs=3, batch_size=8, warmup_steps=2, schedule="lavis-step", checkpoint_every=0, seed=3, log_every=1, min_steps=0)
    best = train_backbone(root / "tiny", examples, vocab["image_root"], tmp_path / "best",
                          TrainSettings(**common, select_best=True), validation=validation)  # fmt: skip
    # the default name substitution (mode add) asks some questions once more with their names replaced
    copies = copied_rows(list(zip(examples["subj_label"], examples["obj_label"])), TrainSettings().name_substitution, 3)
    assert 0 < len(copies) < len(examples)
    steps_per_epoch = math.ceil((len(examples) + len(copies)) / 8)
    assert best.best_epoch == 2 and best.steps == 3 * steps_per_epoch
    metadata = json.loads((tmp_path / "best" / "reltune_backbone.json").read_text())["training"]
    assert metadata["best_epoch"] == 2
    assert [(r["epoch"], r["step"], r["mean_recall"]) for r in metadata["validation"]] == [
        (1, steps_per_epoch, 0.25), (2, 2 * steps_per_epoch, 0.75), (3, 3 * steps_per_epoch, 0.5)]  # fmt: skip
    summary = json.loads((tmp_path / "best" / "dvclive" / "metrics.json").read_text())
    assert summary["best_epoch"] == 2 and summary["best_val_mean_recall"] == 0.75
    # lavis-step does not depend on the round's length: two epochs alone give the same weights
    two = train_backbone(root / "tiny", examples, vocab["image_root"], tmp_path / "two",
                         TrainSettings(**{**common, "max_steps": 2 * steps_per_epoch}))  # fmt: skip
    assert two.best_epoch is None
    saved, reference = _weights(tmp_path / "best"), _weights(tmp_path / "two")
    for name in reference:
        assert torch.allclose(saved[name], reference[name], atol=1e-6), name
    with pytest.raises(InputError, match="needs the validation instructions"):
        train_backbone(root / "tiny", examples, vocab["image_root"], tmp_path / "x", TrainSettings(**common, select_best=True))


def test_best_epoch_survives_a_crash_and_resume(toy, tmp_path, monkeypatch):
    import reltune.inference.scoring as scoring
    import reltune.models.training as training

    root, _, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    validation = validation_set(instructions, scenes, vocab["image_root"], cap=4, seed=0, file="val.parquet")
    # scripted recall by epoch (the answer source is replaced by its description, which names the epoch)
    scripted = {1: 0.25, 2: 0.75, 3: 0.5}
    monkeypatch.setattr(scoring, "model_answer_source", lambda backbone, loader, settings, description, *rest: description)
    monkeypatch.setattr(scoring, "validation_recall", lambda questions, source: (
        {"per_predicate": {}, "mean_recall": scripted[int(source.split()[-1])], "recall": 0.0, "questions": len(questions)}, None))

    class Crash(Exception):
        pass

    def crash(pid, signal_number):
        raise Crash

    steps_per_epoch = math.ceil(len(examples) / 8)
    common = dict(epochs=3, batch_size=8, warmup_steps=2, schedule="lavis-step", seed=5, log_every=1, select_best=True,
                  checkpoint_every=steps_per_epoch, min_steps=0)  # fmt: skip
    image_root = vocab["image_root"]
    reference = train_backbone(root / "tiny", examples, image_root, tmp_path / "reference", TrainSettings(**common), validation=validation)
    out = tmp_path / "crashed"
    monkeypatch.setattr(training.os, "kill", crash)
    with pytest.raises(Crash):  # after epoch 2's validation and checkpoint, one step into epoch 3
        train_backbone(root / "tiny", examples, image_root, out, TrainSettings(**common, stop_after_steps=2 * steps_per_epoch + 1),
                       validation=validation)  # fmt: skip
    resumed = train_backbone(root / "tiny", examples, image_root, out, TrainSettings(**common), validation=validation)
    assert resumed.resumed_from_step == 2 * steps_per_epoch and resumed.best_epoch == reference.best_epoch == 2
    metadata = json.loads((out / "reltune_backbone.json").read_text())["training"]
    assert [record["mean_recall"] for record in metadata["validation"]] == [0.25, 0.75, 0.5]
    expected, actual = _weights(tmp_path / "reference"), _weights(out)
    for name in expected:  # epoch 2's weights, kept in the checkpoint across the crash
        assert torch.allclose(expected[name], actual[name], atol=1e-6), name


def test_resume_equals_an_uninterrupted_run_with_every_relation_tuning_option(toy, tmp_path, monkeypatch, capsys):
    """The default's options (all weights, names replaced as added views, replay, copy replay, repeats, converses),
    killed in the second epoch just after a checkpoint: the resumed model is the uninterrupted one, bit for bit."""
    import reltune.models.training as training
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    replay = round(1.5 / len(instructions), 6)  # the toy scenes single out few pairs by name: ask for one

    def argv(out: Path, *extra: str) -> list[str]:
        # the one-step command, run for two epochs instead (argparse keeps a flag's last value)
        return _one_step_argv(root, root / "train.parquet", scenes_dir, out, "--max-steps", "0", "--epochs", "2", "--warmup-steps", "2",
                              "--seed", "7", "--checkpoint-every", "5", "--train-all", "true", "--name-substitution", "0.25",
                              "--name-substitution-mode", "add", "--replay", str(replay), "--copy-replay", "0.1", "--repeat-threshold",
                              "0.2", "--converse-predicates", "above:below,left of:right of", *extra)  # fmt: skip

    assert main(argv(tmp_path / "reference")) == 0, capsys.readouterr().err
    steps = json.loads((tmp_path / "reference" / "reltune_backbone.json").read_text())["training"]["steps"]
    stop = (steps // 2 // 5 + 1) * 5 + 1  # one step past the first checkpoint of the second epoch

    class Crash(Exception):
        pass

    def crash(pid, signal_number):
        raise Crash

    monkeypatch.setattr(training.os, "kill", crash)
    with pytest.raises(Crash):
        main(argv(tmp_path / "crashed", "--stop-after-steps", str(stop)))
    monkeypatch.undo()
    assert main(argv(tmp_path / "crashed")) == 0
    assert f"resuming from checkpoint step {stop - 1} of {steps}" in capsys.readouterr().err
    expected, actual = _weights(tmp_path / "reference"), _weights(tmp_path / "crashed")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def _one_step_argv(root: Path, instructions: Path, scenes_dir: Path, out: Path, *extra: str) -> list[str]:
    """`reltune train` for one optimizer step of batch 4 on the toy, with `extra` arguments."""
    return ["train", "--backbone", str(root / "tiny"), "--instructions", str(instructions), "--scenes", str(scenes_dir),
            "--out", str(out), "--max-steps", "1", "--min-steps", "0", "--batch-size", "4", "--warmup-steps", "0",
            "--device", "cpu", *extra]  # fmt: skip


def test_train_replays_relative_where_questions_beside_the_relations(toy, tmp_path, capsys):
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    out = tmp_path / "replayed"
    replay = round(1.5 / len(instructions), 6)  # the toy scenes single out few pairs by name: ask for one
    argv = _one_step_argv(root, root / "train.parquet", scenes_dir, out, "--replay", str(replay))
    assert main(argv) == 0, capsys.readouterr().err
    replayed = math.floor(len(instructions) * replay)
    assert replayed == 1
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    # the copies with names replaced are drawn over relations and replayed questions alike
    assert metadata["training"]["replay_questions"] == replayed and metadata["training"]["examples"] == len(instructions) + 1
    assert metadata["training"]["settings"]["replay"] == replay
    assert f"replay: {replayed} relative-where questions besides {len(instructions)} relation examples" in capsys.readouterr().err


@pytest.mark.parametrize("phrase", ["pair", "triplet"])
def test_train_replays_copy_questions_over_every_datasets_names(toy, tmp_path, capsys, phrase):
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    out = tmp_path / "copied"
    argv = _one_step_argv(
        root, root / "train.parquet", scenes_dir, out, "--name-substitution", "0", "--copy-replay", "0.3", "--copy-phrase", phrase
    )
    assert main(argv) == 0, capsys.readouterr().err
    copied = math.floor(len(instructions) * 0.3)
    vocabularies = [json.loads(path.read_text()) for path in sorted(scenes_dir.parent.glob("*/vocab.json"))]
    objects = {name for vocab in vocabularies for name in vocab["objects"]}
    predicates = {name for vocab in vocabularies for name in vocab["predicates"]}
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    assert copied > 0 and metadata["training"]["copy_questions"] == copied and metadata["training"]["replay_questions"] == 0
    assert metadata["training"]["examples"] == len(instructions) + copied
    assert metadata["training"]["settings"]["copy_replay"] == 0.3 and metadata["training"]["settings"]["copy_phrase"] == phrase
    # pairs draw from every name; triplets draw objects and predicates apart
    drawn = len(objects | predicates) if phrase == "pair" else len(objects) + len(predicates)
    assert f"copy replay: {copied} 'Repeat the words' questions ({phrase} phrases) over {drawn} dataset names" in capsys.readouterr().err


def test_triplet_copy_phrases_leave_the_converse_predicates_out_when_asked(toy, tmp_path, capsys):
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    write_instruction_table(_one_order(instructions), tmp_path / "train.parquet")
    vocabularies = {path.parent.name: json.loads(path.read_text()) for path in sorted(scenes_dir.parent.glob("*/vocab.json"))}
    assert {name for vocab in vocabularies.values() for name in vocab["predicates"]} == {"above", "below", "left of", "right of"}
    copy = ("--name-substitution", "0", "--copy-replay", "0.3", "--copy-phrase", "triplet-no-converse")
    converses = ("--converse-predicates", "above:below,left of:right of")
    # the toy's predicates are all directions: nothing is left to put between the names
    argv = _one_step_argv(root, tmp_path / "train.parquet", scenes_dir, tmp_path / "never", *copy, *converses)
    assert main(argv) == 2
    assert "every predicate name is one of train.converse_predicates" in capsys.readouterr().err
    # a names file with two more predicates (as the names stage writes it): triplets over the objects and those two
    names = {dataset: {"objects": vocab["objects"], "predicates": vocab["predicates"]} for dataset, vocab in vocabularies.items()}
    names["held-out"] = {"objects": ["fox"], "predicates": ["hug", "on"]}
    (tmp_path / "names.json").write_text(json.dumps({"datasets": names}))
    objects = {name for lists in names.values() for name in lists["objects"]}
    argv = _one_step_argv(root, tmp_path / "train.parquet", scenes_dir, tmp_path / "out", *copy, *converses,
                          "--exclude-names-of", str(tmp_path / "names.json"))  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert f"'Repeat the words' questions (triplet-no-converse phrases) over {len(objects) + 2} dataset names" in capsys.readouterr().err
    # without converse predicates there is nothing to leave out: one line, before anything is read or written
    argv = _one_step_argv(root, tmp_path / "train.parquet", scenes_dir, tmp_path / "never", *copy)
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message == "reltune train: error: train.copy_phrase: triplet-no-converse needs train.converse_predicates (the predicates it leaves out)"
    assert not (tmp_path / "never").exists()


def test_train_repeats_rare_predicates_questions_with_their_negatives(toy, tmp_path, capsys):
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    out = tmp_path / "repeated"
    argv = _one_step_argv(root, root / "train.parquet", scenes_dir, out, "--name-substitution", "0", "--repeat-threshold", "0.5")
    assert main(argv) == 0, capsys.readouterr().err
    counts = instructions.loc[instructions["kind"] == "positive", "predicate"].value_counts()
    # LVIS: a predicate of share f is asked round(n x max(1, sqrt(0.5 / f))) times; each with its counter-negative
    asked = sum(round(count * max(1.0, math.sqrt(0.5 / (count / counts.sum())))) for count in counts)
    assert asked > counts.sum()  # the toy has rare predicates
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    assert metadata["training"]["examples"] == 2 * asked and metadata["training"]["repeated_questions"] == 2 * (asked - counts.sum())
    assert metadata["training"]["settings"]["repeat_threshold"] == 0.5
    assert f"repeats: {2 * asked} relation questions asked of {len(instructions)}" in capsys.readouterr().err


def _one_order(instructions: pd.DataFrame) -> pd.DataFrame:
    """The toy asks about every ordered pair: keep one order (the other one in train0002, so that each predicate
    stays), and both orders of one pair (whose questions have no converse)."""
    positives = instructions[instructions["kind"] == "positive"]
    one_order = (positives["subj"] < positives["obj"]) != (positives["image_id"] == "train0002")
    kept = set(positives.loc[one_order, "qid"]) | {positives.loc[~one_order, "qid"].iloc[0]}
    return instructions[instructions["qid"].isin(kept) | instructions["positive_qid"].isin(kept)].reset_index(drop=True)


def test_train_asks_direction_questions_again_with_subject_and_object_swapped(toy, tmp_path, capsys):
    from reltune.cli import main

    root, scenes_dir, _, _, instructions = toy
    instructions = _one_order(instructions)
    write_instruction_table(instructions, tmp_path / "train.parquet")
    out = tmp_path / "converse"
    argv = _one_step_argv(root, tmp_path / "train.parquet", scenes_dir, out, "--name-substitution", "0",
                          "--converse-predicates", "above:below,left of:right of")
    assert main(argv) == 0, capsys.readouterr().err
    # expected: every question whose swapped pair is not asked in its category (a negative only with its positive)
    asked = set(zip(instructions["image_id"], instructions["subj"], instructions["obj"], instructions["category"]))
    free = {row.qid for row in instructions.itertuples() if (row.image_id, row.obj, row.subj, row.category) not in asked}
    positives = instructions[(instructions["kind"] == "positive") & instructions["qid"].isin(free)]
    negatives = instructions[(instructions["kind"] == "negative") & instructions["qid"].isin(free)
                             & instructions["positive_qid"].isin(set(positives["qid"]))]  # fmt: skip
    converses = len(positives) + len(negatives)
    assert converses > 0 and len(positives) < (instructions["kind"] == "positive").sum()  # the toy has both cases
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    assert metadata["training"]["converse_questions"] == converses
    assert metadata["training"]["examples"] == len(instructions) + converses
    assert metadata["training"]["settings"]["converse_predicates"] == "above:below,left of:right of"
    assert f"converses: {converses} questions with subject and object swapped" in capsys.readouterr().err


def test_train_puts_each_converse_question_in_its_source_questions_batch(toy, tmp_path, capsys, monkeypatch):
    from reltune.cli import main
    from reltune.models import training

    root, scenes_dir, _, _, instructions = toy
    write_instruction_table(_one_order(instructions), tmp_path / "train.parquet")
    plans = []
    planned = training.BatchPlan.of
    monkeypatch.setattr(training.BatchPlan, "of", lambda *args, **kwargs: plans.append(planned(*args, **kwargs)) or plans[-1])
    argv = _one_step_argv(root, tmp_path / "train.parquet", scenes_dir, tmp_path / "grouped", "--name-substitution", "0.5",
                          "--converse-predicates", "above:below,left of:right of", "--converse-batches", "true")  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    metadata = json.loads((tmp_path / "grouped" / "reltune_backbone.json").read_text())
    converses, examples = metadata["training"]["converse_questions"], metadata["training"]["examples"]
    assert metadata["training"]["settings"]["converse_batches"] is True and converses > 0
    [plan] = plans
    # every converse row (after the examples, before the renamed copies) shares a group with one earlier row
    assert len(plan.group_of) == plan.examples > examples  # renamed copies included, each a group of its own
    sizes = pd.Series(plan.group_of).value_counts()
    assert (sizes == 2).sum() == converses and sizes.max() == 2
    assert all(plan.group_of[row] < examples - converses for row in range(examples - converses, examples))
    order = plan.epoch_order(0).tolist()
    for group, size in sizes.items():
        if size == 2:
            first, second = (index for index, row in enumerate(order) if plan.group_of[row] == group)
            assert second == first + 1
    # without converse questions there is nothing to group: one line, before the backbone is read
    argv = _one_step_argv(tmp_path, root / "train.parquet", scenes_dir, tmp_path / "never", "--converse-batches", "true")
    capsys.readouterr()
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"reltune train: error: {root / 'train.parquet'}: --converse-batches true needs converse questions")
    assert "\n" not in message and not (tmp_path / "never").exists()


def test_even_lengths_weights_the_pool_by_the_backbones_own_pieces_and_records_that_pool(toy, tmp_path):
    root, scenes_dir, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    pool = training_pool(instructions, scenes_dir.parent)
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tiny"))
    pieces = {word: len(tokenizer.tokenize(" " + word)) for word in pool}
    assert len({min(count, 3) for count in pieces.values()}) >= 2  # the toy tokenizer writes words of several lengths
    settings = dict(epochs=1, batch_size=4, warmup_steps=1, max_steps=1, seed=3, name_substitution=0.5)
    records = {}
    for lengths in ("pool", "even"):
        out = tmp_path / lengths
        train_backbone(root / "tiny", examples, vocab["image_root"], out, TrainSettings(**settings, name_substitution_lengths=lengths), name_pool=pool)
        records[lengths] = json.loads((out / "reltune_backbone.json").read_text())["training"]["name_pool"]
    weighted = even_lengths(pool, pieces.__getitem__)
    assert records["pool"] == {"words": len(pool), "sha256_16": pool_fingerprint(pool)}
    assert records["even"] == {"words": len(weighted), "sha256_16": pool_fingerprint(weighted)} and len(weighted) > len(pool)


def test_no_substitute_is_a_word_of_a_replayed_question(toy, tmp_path, monkeypatch):
    from reltune.cli import main
    from reltune.models import training

    root, scenes_dir, _, _, instructions = toy
    pools = []
    # `reltune train` imports train_backbone when it runs: record the pool instead of training
    monkeypatch.setattr(training, "train_backbone", lambda *args, name_pool=(), **kwargs: pools.append(set(name_pool)))
    base = ["train", "--backbone", str(root / "tiny"), "--instructions", str(root / "train.parquet"), "--scenes", str(scenes_dir),
            "--out", str(tmp_path / "never"), "--device", "cpu"]  # fmt: skip
    assert main(base) == 0 and main([*base, "--replay", str(round(1.5 / len(instructions), 6))]) == 0
    without, replayed = pools
    from reltune.models.names import text_words
    from reltune.models.replay import replay_examples

    asked = replay_examples(read_scenes(scenes_dir, "train")[0], 1, seed=0)  # the one question `train --seed 0` replays
    replay_words = text_words(asked["prompt"]) | text_words(asked["target"])
    assert {"relative", "where"} <= without  # the sentence model's words, free without replay
    assert replayed == without - replay_words and {"relative", "where"}.isdisjoint(replayed)
