"""`dvc repro` of the whole pipeline on a minimal world (2 rounds), in a copy of the repo."""

import json

import pandas as pd
import pytest

from pipeline_helpers import project_copy, read_params, run_dvc, write_params

pytestmark = pytest.mark.slow


def minimal(params: dict) -> dict:
    world = params["world"]["synthetic"]
    world.update(train_images=48, test_images=12, ood_images=12)
    params["scenes"]["datasets"]["synthetic"]["val_size"] = 8
    params["pretrain_tiny"]["tiny"].update(max_steps=6, batch_size=16, warmup_steps=2, cpu_threads=1)  # one per worker
    params["train"].update(epochs=1, max_steps=4, batch_size=16, warmup_steps=2, checkpoint_every=100)
    params["score"].update(num_beams=2, max_new_tokens=12, batch_size=32)
    params["sampling"].update(budget_fraction=0.1, rounds={"1": {"previous": 0}, "2": {"previous": 1}})
    params["train_on"] = {key: {"selection": selection, "min_steps": 0} for key, selection in (("1", 0), ("2", 1), ("final", 2))}
    params["report"]["gallery_images"] = 2
    return params


def test_whole_pipeline_runs_and_writes_sane_metrics(tmp_path):
    repo = project_copy(tmp_path / "repo")
    write_params(repo, minimal(read_params(repo)))
    run_dvc(repo, "repro", timeout=900)

    instructions = pd.read_parquet(repo / "data/instructions/synthetic/train.parquet")
    positives = int((instructions["kind"] == "positive").sum())
    budget = round(0.1 * positives)
    sizes = [len(pd.read_parquet(repo / f"data/loop/round_{k}/selection.parquet")) for k in (0, 1, 2)]
    assert sizes == [budget, 2 * budget, 3 * budget]

    test_scenes = pd.read_parquet(repo / "data/scenes/synthetic/test.parquet")
    gt_relations = sum(len(relations) for relations in test_scenes["relations"])
    for name in ("synthetic", "synthetic_blind", "synthetic-ood", "synthetic-ood_blind"):
        metrics = json.loads((repo / f"metrics/{name}.json").read_text())
        for key in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "gR@20", "mgR@50"):
            assert 0.0 <= metrics[key] <= 100.0, (name, key, metrics[key])
        assert metrics["R@20"] <= metrics["R@50"] <= metrics["R@100"]
        assert metrics["R@20"] <= metrics["gR@20"]
    # the DVC metric keeps the compared keys; the counts and the rest are in metrics/details/
    assert "gt_relations" not in json.loads((repo / "metrics/synthetic.json").read_text())
    assert json.loads((repo / "metrics/details/synthetic.json").read_text())["gt_relations"] == gt_relations

    timings = {path.stem for path in (repo / "metrics/timing").glob("*.json")}
    assert {"world@synthetic", "pretrain-tiny@tiny", "train@1", "score@2", "select@2", "train@final",
            "predict@synthetic-ood-blind0", "evaluate@synthetic-blind1"} <= timings
    assert (repo / "report/index.html").is_file()

    # a larger test split re-evaluates the same models: nothing that learns reruns (issue 16 part 1)
    params = read_params(repo)
    params["world"]["synthetic"].update(test_images=16, ood_images=15)
    write_params(repo, params)
    # (the two real-image evaluations only: the blind ones and the report would add a minute, no checks)
    rerun = run_dvc(repo, "repro", "evaluate@synthetic-blind0", "evaluate@synthetic-ood-blind0", timeout=900).stdout
    for stage in ("pretrain-tiny@tiny", "seed", "train@1", "score@1", "select@2", "train@final"):
        assert f"Stage '{stage}' didn't change, skipping" in rerun, stage
    for stage in ("world@synthetic", "names", "predict@synthetic-blind0", "evaluate@synthetic-ood-blind0"):
        assert f"Running stage '{stage}'" in rerun, stage
    larger = json.loads((repo / "metrics/details/synthetic.json").read_text())["gt_relations"]
    test_scenes = pd.read_parquet(repo / "data/scenes/synthetic/test.parquet")
    assert len(test_scenes) == 16 and larger == sum(len(relations) for relations in test_scenes["relations"]) > gt_relations
