"""`reltune plan`: rounds, examples, optimizer steps, warm-up share, pool rows, GPU hours, refusals (issue 14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reltune.cli import main
from reltune.inference.scoring import pool_scoring_candidates
from reltune.plan import pool_rows
from reltune.sampling import balanced_allocation, round_budget

ROOT = Path(__file__).resolve().parents[1]
VG150_DICTS = ROOT.parent / "shared" / "reference" / "vg150_dicts_no_attributes.json"
PROFILES = sorted((ROOT / "profiles").glob("vg150-*.yaml"))
# training positives of the synthetic world with the 200-image validation split (5018 with 1000);
# the plan is checked against its own arithmetic, so any realistic count serves
DEFAULT_POSITIVES = 5101


def plan_json(capsys, *args: str) -> dict:
    assert main(["plan", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def refusal(capsys, *args: str) -> str:
    assert main(["plan", *args]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("reltune plan: error: ")
    return message


def vg150_counts() -> dict[str, int]:
    if not VG150_DICTS.is_file():
        pytest.skip(f"{VG150_DICTS} not available")
    return json.loads(VG150_DICTS.read_text())["predicate_count"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda path: path.stem)
@pytest.mark.parametrize("processes", [1, 4])
def test_real_profiles_pass_on_vg150_counts_with_a_short_warmup(profile, processes, capsys):
    counts = vg150_counts()
    plan = plan_json(capsys, "--params", str(profile), "--base", str(ROOT / "params.yaml"),
                     "--counts", str(VG150_DICTS), "--processes", str(processes))  # fmt: skip
    merged = yaml.safe_load(profile.read_text())
    train = merged["train"]
    total = sum(counts.values())
    budget = round_budget(merged["sampling"]["budget_fraction"], total)
    assert plan["training_positives"] == total and plan["round_budget"] == budget
    assert [item["round"] for item in plan["rounds"]] == ["1", "2", "3", "4", "5", "final"]
    for index, item in enumerate(plan["rounds"]):
        # model k trains on the cumulative selection of round k-1: the seed plus k-1 rounds of B
        assert item["positives"] == budget * (index + 1)
        assert item["examples"] == 2 * item["positives"]  # one counter-negative each
        micro_batches = math.ceil(math.ceil(item["examples"] / processes) * processes / (train["batch_size"] * processes))
        steps_per_epoch = math.ceil(micro_batches / train["grad_accum"])
        assert item["steps"] == steps_per_epoch * train["epochs"]
        assert item["warmup_steps"] == min(train["warmup_steps"], steps_per_epoch)  # lavis-*: the first epoch at most
        assert item["warmup_steps"] < item["steps"] / 2
    # the paper scores the whole pool (cap 0): round k's pool is everything not yet selected
    assert [item["pool_rows"] for item in plan["rounds"]] == [total - budget * (k + 1) for k in range(5)] + [0]


def test_embedded_default_passes_its_own_plan(capsys):
    plan = plan_json(capsys, "--params", str(ROOT / "params.yaml"), "--positives", str(DEFAULT_POSITIVES))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert [item["round"] for item in plan["rounds"]] == ["1", "2", "final"]
    assert all(item["warmup_steps"] <= item["steps"] for item in plan["rounds"])
    first = plan["rounds"][0]
    assert first["positives"] == round(params["sampling"]["budget_fraction"] * DEFAULT_POSITIVES)
    # one negative per positive, then mode add's renamed copies: each question with chance 1 - (1 - p)^2
    questions = 2 * first["positives"]
    assert params["train"]["name_substitution_mode"] == "add"
    assert first["examples"] == questions + math.floor(questions * (1 - (1 - params["train"]["name_substitution"]) ** 2))
    # small rounds get more epochs until they have their train_on.<model>.min_steps optimizer steps
    min_steps = params["train_on"]["1"]["min_steps"]
    steps_per_epoch = math.ceil(first["examples"] / params["train"]["batch_size"])
    epochs = max(params["train"]["epochs"], math.ceil(min_steps / steps_per_epoch))
    assert (first["epochs"], first["steps"]) == (epochs, steps_per_epoch * epochs)
    assert first["steps"] >= min_steps


def test_a_profile_without_replace_is_planned_over_the_base_with_each_models_min_steps(tmp_path, capsys):
    """The candidate profile changes part of `train` and only the `min_steps` of train_on's seed-round model and
    final model: those two train longer, round 2 keeps the base's floor."""
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({name: 250 for name in ("on", "near", "above", "below", "left of", "right of")}))
    candidate, base = ROOT / "profiles" / "tiny-candidate.yaml", ROOT / "params.yaml"
    assert "replace" not in yaml.safe_load(candidate.read_text())
    plan = plan_json(capsys, "--params", str(candidate), "--base", str(base), "--counts", str(counts))
    floors = {name: item["min_steps"] for name, item in yaml.safe_load(base.read_text())["train_on"].items()}
    base_floors = dict(floors)
    for name, item in yaml.safe_load(candidate.read_text())["train_on"].items():
        assert set(item) == {"min_steps"}, name  # the selections stay the base's
        floors[name] = item["min_steps"]
    assert floors["1"] > base_floors["1"] and floors["final"] > base_floors["final"] and floors["2"] == base_floors["2"]
    # 1500 positives: every model is small, so each trains to its own floor (within its last epoch)
    for item in plan["rounds"]:
        steps_per_epoch = item["steps"] // item["epochs"]
        assert floors[item["round"]] <= item["steps"] < floors[item["round"]] + steps_per_epoch, item["round"]


def test_long_warmup_budget_over_pool_and_open_chains_are_refused(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def write(**changes) -> str:
        data = json.loads(json.dumps(params))
        for dotted, value in changes.items():
            *parents, key = dotted.split(".")
            node = data
            for parent in parents:
                node = node[parent]
            node[key] = value
        path = tmp_path / f"params{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    long = write(**{"train.schedule": "warmup-cosine", "train.warmup_steps": 10_000})
    assert "warm-up of 10000 optimizer steps is longer than the round's" in refusal(capsys, "--params", long, "--positives", "5101")
    allowed = write(**{"train.schedule": "warmup-cosine", "train.warmup_steps": 10_000, "train.allow_long_warmup": True})
    assert plan_json(capsys, "--params", allowed, "--positives", "5101")["rounds"][0]["warmup_steps"] > 0
    greedy = write(**{"sampling.budget_fraction": 0.4})  # seed 40% + round 1 40% leave 20% for round 2's 40%
    assert "round 2: budget 2040 is larger than the 1021 positives left in the pool" in refusal(capsys, "--params", greedy, "--positives", "5101")
    loop = write(**{"sampling.rounds": {"1": {"previous": 2}, "2": {"previous": 1}}})
    assert "does not reach the seed" in refusal(capsys, "--params", loop, "--positives", "5101")
    missing = write(**{"train_on.final.selection": 7})
    assert "model final trains on selection 7, which no round makes" in refusal(capsys, "--params", missing, "--positives", "5101")
    bare = write(**{"train_on.final": 2})  # the form older params had
    assert "[train_on.final]: expected {selection: <round>, min_steps: <steps>}, got 2" in refusal(capsys, "--params", bare, "--positives", "5101")
    negative = write(**{"train_on.2.min_steps": -1})
    assert "min_steps must be a whole number of steps >= 0, got -1" in refusal(capsys, "--params", negative, "--positives", "5101")
    moved = write(**{"train.min_steps": 560})
    assert "[train.min_steps]: train.min_steps is per model now: train_on.<model>.min_steps" in refusal(capsys, "--params", moved, "--positives", "5101")
    typo = write(**{"train.epoch": 3})
    assert "unknown train parameter(s) ['epoch']" in refusal(capsys, "--params", typo, "--positives", "5101")


def test_throughput_gives_gpu_hours_per_stage(tmp_path, capsys):
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"train_samples_per_s": 40.0, "score_questions_per_s": 100.0}))
    plan = plan_json(capsys, "--params", str(ROOT / "params.yaml"), "--positives", "5101", "--val-positives", "300",
                     "--throughput", str(rates))  # fmt: skip
    batch = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["batch_size"]
    for item in plan["rounds"]:
        assert item["train_gpu_hours"] == pytest.approx(item["steps"] * batch / 40.0 / 3600)
        validation = 0 if item["round"] == "final" else 300
        assert item["generate_calls"] == item["pool_rows"] + validation
        assert item["score_gpu_hours"] == pytest.approx(item["generate_calls"] / 100.0 / 3600)
    rates.write_text(json.dumps({"train_samples_per_s": 40.0}))
    assert "score_questions_per_s" in refusal(capsys, "--params", str(ROOT / "params.yaml"), "--positives", "5101", "--throughput", str(rates))


def test_capped_pool_rows_equal_what_the_score_stage_draws():
    rng = np.random.default_rng(0)
    available = {"on": 900, "has": 400, "near": 60, "riding": 12, "says": 3}
    pool = pd.DataFrame({
        "qid": [f"q{index}" for index in range(sum(available.values()))],
        "predicate": [name for name, count in available.items() for _ in range(count)],
    }).sample(frac=1.0, random_state=int(rng.integers(100)))  # fmt: skip
    for budget, cap in ((40, 10), (100, 2), (300, 1)):
        candidates, _ = pool_scoring_candidates(pool, {}, budget, cap, seed=3)
        assert pool_rows(available, budget, {"strategy": "art", "pool_cap_factor": cap}) == len(candidates)
    assert pool_rows(available, 40, {"strategy": "art", "pool_cap_factor": 0}) == sum(available.values())
    assert pool_rows(available, 40, {"strategy": "random", "pool_cap_factor": 0}) == 0  # score-free strategies score nothing


def test_scenes_and_instructions_give_the_same_positives(tmp_path, capsys):
    from reltune.data.scenes import read_scenes
    from reltune.instructions.build import build_instructions
    from reltune.instructions.stage import write_instruction_table
    from toy_scenes import TOY_PREDICATES as predicates
    from toy_scenes import make_toy_scenes

    scenes_dir = make_toy_scenes(tmp_path / "scenes", images=12, seed=1, image_size=32, splits=("train", "val"))
    scenes, _ = read_scenes(scenes_dir, "train")
    table = build_instructions(scenes, predicates, dataset="toy", split="train").table
    write_instruction_table(table, tmp_path / "train.parquet")
    positives = int((table["kind"] == "positive").sum())
    base = ["--params", str(ROOT / "params.yaml")]
    from_scenes = plan_json(capsys, *base, "--scenes", str(scenes_dir))
    from_table = plan_json(capsys, *base, "--instructions", str(tmp_path / "train.parquet"))
    assert from_scenes["training_positives"] == from_table["training_positives"] == positives
    seed = balanced_allocation(table[table["kind"] == "positive"]["predicate"].value_counts().to_dict(), from_table["round_budget"])
    assert from_table["rounds"][0]["positives"] == sum(seed.values())


def test_scenes_whose_validation_is_test_images_are_refused_as_held_in(tmp_path, capsys):
    """GQA200's convention carves val from test: fine held out, refused as the dataset ART steers on."""
    from test_data_gqa_oi import write_gqa

    from reltune.cli import main
    from reltune.plan import validation_source

    src = write_gqa(tmp_path / "gqa")
    for held_in in ("vg150", "gqa200"):
        assert main(["data", "import", "--format", "gqa200", "--src", str(src), "--out", str(tmp_path / held_in),
                     "--val-size", "1", "--held-in-dataset", held_in, "--check-images", "false"]) == 0
    assert validation_source(tmp_path / "gqa200") == "validation from training images"
    capsys.readouterr()
    assert main(["plan", "--params", str(ROOT / "params.yaml"), "--scenes", str(tmp_path / "vg150")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "validation was carved from test images" in error


def test_replayed_where_questions_count_in_every_round(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["replay"] = 0.5
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    plan = plan_json(capsys, "--params", str(path), "--positives", str(DEFAULT_POSITIVES))
    share = 1 - (1 - params["train"]["name_substitution"]) ** 2
    for item in plan["rounds"]:
        # relations, then half as many replayed questions, then renamed copies of both
        questions = 2 * item["positives"] + math.floor(2 * item["positives"] * 0.5)
        assert item["examples"] == questions + math.floor(questions * share)
    params["train"]["copy_replay"] = 0.3
    path.write_text(yaml.safe_dump(params))
    copied = plan_json(capsys, "--params", str(path), "--positives", str(DEFAULT_POSITIVES))
    for item in copied["rounds"]:
        # the copy questions are a share of the relation examples, not of the replayed where-questions
        relations = 2 * item["positives"]
        questions = relations + math.floor(relations * 0.5) + math.floor(relations * 0.3)
        assert item["examples"] == questions + math.floor(questions * share)


def test_converse_questions_count_in_the_plan_after_the_repeats(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sampling"].update(strategy="full", seed_strategy="full", rounds={})
    params["train_on"] = {"final": {"selection": 0, "min_steps": 0}}
    params["train"].update(repeat_threshold=0.4, name_substitution=0.0, replay=0.0, converse_predicates="above:below")
    path, counts = tmp_path / "params.yaml", tmp_path / "counts.json"
    path.write_text(yaml.safe_dump(params))
    counts.write_text(json.dumps({"on": 850, "above": 100, "below": 50}))
    (final,) = plan_json(capsys, "--params", str(path), "--counts", str(counts))["rounds"]
    # LVIS at t = 0.4: above (f = 0.1) x 2 = 200, below (f = 0.05) x sqrt(8) = 141; each asked again swapped; one negative each
    assert final["positives"] == 1000 and final["examples"] == 2 * (850 + 2 * (200 + 141))
    params["train"]["repeat_threshold"] = 0.0
    path.write_text(yaml.safe_dump(params))
    message = refusal(capsys, "--params", str(path), "--positives", "1000")
    assert "train.converse_predicates needs per-predicate counts" in message


def test_repeated_rare_predicates_count_in_the_plan_and_need_per_predicate_counts(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sampling"].update(strategy="full", seed_strategy="full", rounds={})
    params["train_on"] = {"final": {"selection": 0, "min_steps": 0}}
    params["train"].update(repeat_threshold=0.4, name_substitution=0.0, replay=0.0)
    path, counts = tmp_path / "params.yaml", tmp_path / "counts.json"
    path.write_text(yaml.safe_dump(params))
    counts.write_text(json.dumps({"on": 900, "above": 100}))
    (final,) = plan_json(capsys, "--params", str(path), "--counts", str(counts))["rounds"]
    # f(above) = 0.1: LVIS r = sqrt(0.4 / 0.1) = 2, so 200 'above' questions; 'on' once; one negative each
    assert final["positives"] == 1000 and final["examples"] == 2 * (900 + 200)
    message = refusal(capsys, "--params", str(path), "--positives", "1000")
    assert "train.repeat_threshold needs per-predicate counts" in message
