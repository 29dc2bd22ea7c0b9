"""Object-name substitution in relation tuning (reltune.models.names, issue 16 part 4)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import binomtest

import reltune.cli
from reltune.data.scenes import read_scenes
from reltune.errors import InputError
from reltune.instructions.build import build_instructions
from reltune.instructions.stage import write_instruction_table
from reltune.models.names import (
    check_names_in_prompts,
    copied_rows,
    dataset_names,
    dataset_name_words,
    even_lengths,
    sentence_model_words,
    substitute_names,
    substitute_pool,
    text_words,
    training_pool,
)
from reltune.models.training import ImageCache, TrainSettings, example_views, relation_training_examples, train_backbone
from toy_scenes import TOY_PREDICATES, make_toy_scenes

PROMPT = "Is there a prominent spatial relation between hat (subject) and box (object) in the image?"
TARGET = "Yes, hat on box."


def test_every_occurrence_of_a_chosen_name_changes_in_prompt_and_answer_alike():
    prompt, target = substitute_names(PROMPT, TARGET, ("hat", "box"), random.Random(0), ["zebra"], 1.0)
    assert prompt == "Is there a prominent spatial relation between zebra (subject) and zebra (object) in the image?"
    assert target == "Yes, zebra on zebra."
    prompt, target = substitute_names(PROMPT, TARGET, ("hat", "box"), random.Random(0), ["zebra", "lamp"], 0.0)
    assert (prompt, target) == (PROMPT, TARGET)


def test_only_whole_words_change_and_a_longer_name_wins():
    text = "that hat near the snow man, man and hatter"
    prompt, _ = substitute_names(text, "", ("hat", "man"), random.Random(1), ["cup"], 1.0)
    assert prompt == "that cup near the snow cup, cup and hatter"
    prompt, _ = substitute_names(text, "", ("snow man", "man"), random.Random(1), ["cup"], 1.0)
    assert prompt == "that hat near the cup, cup and hatter"


def test_a_pair_of_one_class_gets_one_word_and_each_name_is_drawn_at_the_given_rate():
    pool = [f"word{index}" for index in range(50)]
    for seed in range(20):  # equal labels: one decision, one word for both places
        prompt, target = substitute_names("bird (subject) and bird (object)", "Yes, bird near bird.", ("bird", "bird"), random.Random(seed), pool, 0.5)
        assert len(set(prompt.replace("(subject)", "").replace("(object)", "").replace("and", "").split())) == 1
        assert target.split()[1] == target.split()[3].rstrip(".")
    draws = 4000
    changed_subjects = sum(
        substitute_names(PROMPT, TARGET, ("hat", "box"), random.Random(seed), pool, 0.25)[1].split()[1] != "hat"
        for seed in range(draws)
    )
    # two-sided exact binomial test of the drawn rate against 0.25 (a wrong rate gives p far below 1e-3)
    assert binomtest(changed_subjects, draws, 0.25).pvalue > 1e-3, changed_subjects / draws


def test_a_copy_replaces_at_least_one_name_with_the_altered_questions_distribution():
    pool = [f"word{index}" for index in range(50)]
    draws = 4000
    outcomes = []
    for seed in range(draws):
        prompt, target = substitute_names(PROMPT, TARGET, ("hat", "box"), random.Random(seed), pool, 0.25, at_least_one=True)
        subject_gone, object_gone = "hat (" not in prompt, "box (" not in prompt
        assert subject_gone or object_gone
        assert (target.split()[1] != "hat") == subject_gone  # the answer follows the question
        outcomes.append((subject_gone, object_gone))
    # conditioned on a change: both names gone with 0.0625 / 0.4375 = 1/7, the subject alone 3/7
    assert binomtest(sum(both == (True, True) for both in outcomes), draws, 1 / 7).pvalue > 1e-3
    assert binomtest(sum(both == (True, False) for both in outcomes), draws, 3 / 7).pvalue > 1e-3
    assert all(any(pair) for pair in outcomes)
    with pytest.raises(ValueError, match="positive probability"):
        substitute_names(PROMPT, TARGET, ("hat", "box"), random.Random(0), pool, 0.0, at_least_one=True)


def test_copied_rows_get_the_share_replace_would_alter_seeded_per_row():
    pairs = [("hat", "box")] * 3000 + [("bird", "bird")] * 3000
    rows = copied_rows(pairs, 0.25, seed=7)
    two_classes = sum(row < 3000 for row in rows)
    assert binomtest(two_classes, 3000, 1 - 0.75**2).pvalue > 1e-3  # 0.4375: either of two names
    assert binomtest(len(rows) - two_classes, 3000, 0.25).pvalue > 1e-3  # one class: one decision
    assert rows == copied_rows(pairs, 0.25, seed=7) and rows != copied_rows(pairs, 0.25, seed=8)
    assert copied_rows(pairs[:100], 0.25, seed=7) == tuple(row for row in rows if row < 100)  # a row's draw is its own


def test_pool_is_whole_short_words_minus_the_exclusions(tmp_path):
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("[PAD]\n##ing\nthe\nfox\nzebra\nab\nverylongword\nCaps\nlamp\n", encoding="utf-8")
    assert sentence_model_words(vocabulary) == ["the", "fox", "zebra", "lamp"]
    assert substitute_pool({"the", "fox"}, vocabulary) == ("lamp", "zebra")
    with pytest.raises(InputError, match="no substitute names left"):
        substitute_pool({"the", "fox", "zebra", "lamp"}, vocabulary)
    with pytest.raises(InputError, match="sentence-model vocabulary not found"):
        sentence_model_words(tmp_path / "missing.txt")


def test_the_real_pool_leaves_out_every_dataset_name_and_every_question_word(tmp_path):
    for dataset, objects, predicates in (("held-in", ["bear", "tennis racket"], ["on", "left of"]), ("held-out", ["fox", "gem"], ["hug"])):
        (tmp_path / dataset).mkdir()
        (tmp_path / dataset / "vocab.json").write_text(json.dumps({"objects": objects, "predicates": predicates}))
    names = dataset_name_words(tmp_path)
    assert names == {"bear", "tennis", "racket", "on", "left", "of", "fox", "gem", "hug"}
    questions = pd.DataFrame({"prompt": [PROMPT], "target": ["No, there is no prominent relation."]})
    pool = training_pool(questions, tmp_path)
    all_words = set(sentence_model_words())  # all-MiniLM-L6-v2's WordPiece vocabulary, shipped offline
    assert {"fox", "gem", "bear", "hug", "tennis", "left", "relation", "between", "prominent"} <= all_words
    assert not (names | text_words([PROMPT, "No, there is no prominent relation."])) & set(pool)
    assert len(pool) > 10_000 and all(word.isalpha() and word.islower() and 3 <= len(word) <= 9 for word in pool)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "vocab.json").write_text(json.dumps({"objects": "fox", "predicates": []}))
    with pytest.raises(InputError, match=r"broken/vocab.json.*'objects' must be a list"):
        dataset_name_words(tmp_path)
    with pytest.raises(InputError, match="no \\*/vocab.json"):
        dataset_name_words(tmp_path / "held-in")


def test_the_names_file_of_stage_names_gives_the_names_the_scene_root_gives(tmp_path, monkeypatch):
    for dataset, objects, predicates in (("held-in", ["bear", "tennis racket"], ["on", "left of"]), ("held-out", ["fox", "bear"], ["hug"])):
        (tmp_path / "scenes" / dataset).mkdir(parents=True)
        (tmp_path / "scenes" / dataset / "vocab.json").write_text(json.dumps({"objects": objects, "predicates": predicates}))
    names_file = tmp_path / "names.json"
    monkeypatch.setattr(reltune.cli, "COMMAND_MODULES", ("reltune.data.commands",))
    assert reltune.cli.main(["data", "names", "--scenes", str(tmp_path / "scenes"), "--out", str(names_file)]) == 0
    assert json.loads(names_file.read_text())["datasets"]["held-out"] == {"objects": ["fox", "bear"], "predicates": ["hug"]}
    assert dataset_names(names_file) == dataset_names(tmp_path / "scenes") == [
        "bear", "fox", "hug", "left of", "on", "tennis racket"]  # fmt: skip
    assert dataset_names(names_file, ("objects",)) == dataset_names(tmp_path / "scenes", ("objects",)) == [
        "bear", "fox", "tennis racket"]  # fmt: skip
    assert dataset_names(names_file, ("predicates",)) == ["hug", "left of", "on"]
    names_file.write_text(json.dumps({"datasets": {"held-in": {"objects": ["bear"], "predicates": "on"}}}))
    with pytest.raises(InputError, match=r"names.json: datasets.held-in: 'predicates' must be a list of names"):
        dataset_names(names_file)
    names_file.write_text(json.dumps({"held-in": {"objects": ["bear"], "predicates": ["on"]}}))
    with pytest.raises(InputError, match=r"names.json: expected \{\"datasets\""):
        dataset_names(names_file)


def test_a_name_missing_from_its_prompt_is_refused_with_its_row():
    examples = pd.DataFrame({"prompt": [PROMPT, PROMPT], "subj_label": ["hat", "cat"], "obj_label": ["box", "box"]})
    with pytest.raises(InputError, match=r"train.parquet.*row 1.*'cat' does not occur in the prompt"):
        check_names_in_prompts(examples, "train.parquet")
    with pytest.raises(InputError, match="needs the columns \\['subj_label', 'obj_label'\\]"):
        check_names_in_prompts(examples[["prompt"]], "train.parquet")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    scenes_dir = make_toy_scenes(root / "scenes", images=4, seed=2, image_size=48)
    scenes, vocab = read_scenes(scenes_dir, "train")
    instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy", split="train").table
    return root, scenes_dir, scenes, vocab, instructions


def test_training_views_copy_the_substitute_into_both_texts_reproducibly(toy):
    _, _, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    assert {"subj_label", "obj_label"} <= set(examples.columns)
    settings = TrainSettings(name_substitution=1.0, name_substitution_mode="replace", flip_probability=0.0, box_jitter=0.0, seed=5)
    images = ImageCache(Path(vocab["image_root"]), 16)
    backbone = SimpleNamespace(image_size=32)
    rows = list(range(len(examples)))
    _, prompts, targets = example_views(examples, rows, 0, backbone, images, settings, ["zebra"])
    for row, prompt, target in zip(rows, prompts, targets):
        record = examples.iloc[row]
        for label in {record["subj_label"], record["obj_label"]}:
            assert f"{label} (" not in prompt and label not in target.replace("zebra", "")
        assert prompt.count("zebra") == 2 and target.count("zebra") == 2, (prompt, target)
    pool = [f"name{index}" for index in range(1000)]
    half = TrainSettings(name_substitution=0.5, name_substitution_mode="replace", seed=5)
    first = example_views(examples, rows, 3, backbone, images, half, pool)[1:]
    assert first == example_views(examples, rows, 3, backbone, images, half, pool)[1:]  # seeded by (seed, epoch, row)
    assert first != example_views(examples, rows, 4, backbone, images, half, pool)[1:]  # a new draw next epoch


def test_mode_add_asks_every_question_as_written_and_the_copies_with_names_replaced(toy):
    _, _, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    settings = TrainSettings(name_substitution=0.25, name_substitution_mode="add", flip_probability=0.0, box_jitter=0.0, seed=5)
    copies = copied_rows(list(zip(examples["subj_label"], examples["obj_label"])), 0.25, 5)
    images = ImageCache(Path(vocab["image_root"]), 16)
    backbone = SimpleNamespace(image_size=32)
    rows = list(range(len(examples) + len(copies)))
    _, prompts, targets = example_views(examples, rows, 0, backbone, images, settings, ["zebra"], copies)
    # the questions as written, unchanged
    assert prompts[: len(examples)] == list(examples["prompt"]) and targets[: len(examples)] == list(examples["target"])
    for index, source in enumerate(copies):  # each copy: its source's question with at least one name replaced
        prompt, target = prompts[len(examples) + index], targets[len(examples) + index]
        assert "zebra" in prompt and "zebra" in target and prompt != examples["prompt"].iloc[source]
        assert prompt.replace("zebra", "") in {
            examples["prompt"].iloc[source].replace(label, "") for label in (examples["subj_label"].iloc[source], examples["obj_label"].iloc[source])
        } | {examples["prompt"].iloc[source].replace(examples["subj_label"].iloc[source], "").replace(examples["obj_label"].iloc[source], "")}


def test_an_unknown_substitution_mode_is_refused_before_any_work(toy, tmp_path):
    root, _, scenes, vocab, instructions = toy
    examples = relation_training_examples(instructions, scenes, None)
    with pytest.raises(InputError, match="--name-substitution-mode.*'swap' is not one of"):
        train_backbone(root / "no-backbone", examples, vocab["image_root"], tmp_path / "out", TrainSettings(name_substitution_mode="swap"))
    with pytest.raises(InputError, match="--name-substitution-lengths.*'odd' is not one of"):
        train_backbone(root / "no-backbone", examples, vocab["image_root"], tmp_path / "out", TrainSettings(name_substitution_lengths="odd"))
    assert not (tmp_path / "out").exists()


def test_even_lengths_gives_one_piece_two_pieces_and_more_a_third_of_the_draws_each():
    one = ["ab", "cd"]  # 2 words of one piece
    two = [f"two{index}" for index in range(5)]
    longer = [f"three{index}" for index in range(12)] + [f"four{index}" for index in range(8)]  # 20 words of 3 pieces or more
    pieces = {**dict.fromkeys(one, 1), **dict.fromkeys(two, 2), **{word: 3 if word.startswith("three") else 4 for word in longer}}
    pool = tuple(sorted(pieces))
    weighted = even_lengths(pool, pieces.__getitem__)
    # each length 20 times: one-piece words 10 times each, two-piece 4 times, the longer once
    assert len(weighted) == 60
    assert {word: weighted.count(word) for word in ("ab", "two3", "three0", "four7")} == {"ab": 10, "two3": 4, "three0": 1, "four7": 1}
    assert weighted == even_lengths(pool, pieces.__getitem__)  # reproducible: the same pool gives the same tuple
    draws = random.Random(0).choices(weighted, k=6000)
    shares = [sum(min(pieces[word], 3) == length for word in draws) / len(draws) for length in (1, 2, 3)]
    assert shares == pytest.approx([1 / 3] * 3, abs=0.03)
    # a length with no word is left out: halves between the two there are
    assert even_lengths(tuple(two + longer), pieces.__getitem__).count("two0") == 4
    assert even_lengths(("only",), lambda word: 2) == ("only",)
    with pytest.raises(ValueError, match="empty"):
        even_lengths((), len)


def test_the_train_command_needs_the_object_names_and_pretraining_refuses_substitution(toy, tmp_path):
    root, scenes_dir, _, _, instructions = toy
    without_labels = tmp_path / "train.parquet"
    write_instruction_table(instructions, tmp_path / "full.parquet")
    pq.write_table(pq.read_table(tmp_path / "full.parquet").drop_columns(["subj_label", "obj_label"]), without_labels)
    command = [sys.executable, "-m", "reltune.cli", "train", "--backbone", str(root / "none"), "--instructions", str(without_labels),
               "--scenes", str(scenes_dir), "--out", str(tmp_path / "out")]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "train.parquet" in refused.stderr and "subj_label" in refused.stderr, refused.stderr[-500:]
    assert not (tmp_path / "out").exists()
    from reltune.models.pretrain import QuestionSettings, pretrain_tiny

    with pytest.raises(InputError, match="--name-substitution.*relation tuning"):
        pretrain_tiny(scenes_dir, tmp_path / "w.json", None, tmp_path / "p", tmp_path / "m.json", TrainSettings(), QuestionSettings())
