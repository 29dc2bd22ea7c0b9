"""Which experiments `make compare` may pool: their dvc.lock signatures (code and settings up to the predictions)."""

from __future__ import annotations

from reltune.evaluation import compare, statistics
from reltune.evaluation.pipelines import pipeline_groups, pipeline_label, pipeline_signature, signature_differences
from test_evaluation_compare import experiment, per_image


def lock(models_md5: str = "m1", epochs: int = 20, seed: int = 0, rounds: bool = True, report_md5: str = "e1",
         final_min_steps: int = 560, older: bool = False) -> dict:
    """A dvc.lock shaped like the pipeline's: round stages unless `full`, per-seed data deps, metric stages."""
    stages = {
        "pretrain-tiny@tiny": {
            "deps": [{"path": "src/reltune/models", "md5": f"{models_md5}.dir"}, {"path": "data/scenes/synthetic", "md5": "d1.dir"}],
            "params": {"params.yaml": {"pretrain_tiny.tiny": {"max_steps": 2000, "seed": 0}}},
        },
        "train@final": {
            "deps": [{"path": "src/reltune/models", "md5": f"{models_md5}.dir"}, {"path": "data/loop/round_2/selection.parquet", "md5": f"sel{seed}"}],
            "params": {"params.yaml": {"train": {"epochs": epochs, "seed": seed}, "train_on.final": {"selection": 2, "min_steps": final_min_steps},
                                       "model": {"lora_r": 0}}},
        },
        "evaluate@synthetic-blind0": {
            "deps": [{"path": "src/reltune/evaluation", "md5": f"{report_md5}.dir"}],
            "params": {"params.yaml": {"evaluate": {"ks": "20,50,100"}}},
        },
        "report": {"deps": [{"path": "src/reltune/evaluation", "md5": f"{report_md5}.dir"}], "params": {"params.yaml": {"report": {"gallery_images": 6}}}},
    }
    if older:  # before train_on held each model's min_steps: one train.min_steps, the final model on a bare round number
        stages["train@final"]["params"]["params.yaml"].update({"train": {"epochs": epochs, "seed": seed, "min_steps": final_min_steps},
                                                              "train_on.final": 2})  # fmt: skip
    if rounds:
        stages["select@1"] = {
            "deps": [{"path": "src/reltune/sampling", "md5": "s1.dir"}],
            "params": {"params.yaml": {"sampling.strategy": "art", "sampling.seed": seed, "sampling.z_init": 1.96}},
        }
    return {"schema": "2.0", "stages": stages}


def test_signature_keeps_code_and_settings_up_to_the_predictions():
    signature = pipeline_signature(lock())
    assert signature == {
        "src/reltune/models": "m1.dir",
        "src/reltune/sampling": "s1.dir",
        "params:pretrain_tiny.tiny.max_steps": "2000",
        "params:pretrain_tiny.tiny.seed": "0",
        "params:train.epochs": "20",
        "params:train_on.final.min_steps": "560",
        "params:model.lora_r": "0",
    }  # no data deps, no metric stages, nothing a variant or seed sets (sampling, train_on's selections, train.seed)
    assert pipeline_signature(lock(older=True)) == signature  # an older lock's train.min_steps is the final model's


def test_seeds_strategies_full_and_metric_code_agree_code_and_settings_do_not():
    base = pipeline_signature(lock())
    assert signature_differences(base, pipeline_signature(lock(seed=3))) == []
    assert signature_differences(base, pipeline_signature(lock(rounds=False))) == []  # full: fewer keys, same values
    assert signature_differences(base, pipeline_signature(lock(report_md5="e2"))) == []  # a metrics-code commit
    assert signature_differences(base, pipeline_signature(lock(models_md5="m2"))) == ["src/reltune/models"]
    assert signature_differences(base, pipeline_signature(lock(epochs=60))) == ["params:train.epochs"]
    longer = ["params:train_on.final.min_steps"]  # the final model's training length is a setting, not a variant
    assert signature_differences(base, pipeline_signature(lock(final_min_steps=2120))) == longer
    assert signature_differences(pipeline_signature(lock(older=True)), pipeline_signature(lock(final_min_steps=2120))) == longer
    signatures = [base, pipeline_signature(lock(epochs=60)), None, pipeline_signature(lock(seed=1)), pipeline_signature(lock(epochs=60, seed=2))]
    assert pipeline_groups(signatures) == [0, 1, None, 0, 1]


def pooled_show() -> tuple[list[dict], dict, dict]:
    """art/balanced seeds 0-1 of the workspace's pipeline, and art/balanced seeds 0-1 trained 60 epochs (another pipeline)."""
    workspace = experiment("workspace", "art", 0, 50.0, 19.0, 60.0)
    head = experiment("main", "art", 0, 50.0, 19.0, 60.0)
    head["experiments"], files, locks = [], {}, {"workspace": lock()}
    # the long runs: art recalls everything, balanced half; the workspace pipeline's runs: both recall half
    for epochs, hits in ((20, {"art": 2, "balanced": 2}), (60, {"art": 1, "balanced": 2})):
        for strategy in ("art", "balanced"):
            for seed in (0, 1):
                name = f"{strategy}-seed{seed}" if epochs == 20 else f"{strategy}-seed{seed}-long"
                run = experiment(name, strategy, seed, 100.0 / hits[strategy], 10.0, 60.0)
                run["name"] = run["data"]["name"] = f"{strategy}-seed{seed}"  # same names, another commit
                head["experiments"].append({"revs": [run], "executor": {"state": "success"}})
                files[(run["rev"], "metrics/per_image/synthetic.json")] = per_image(hits[strategy], offset=seed)
                locks[run["rev"]] = lock(epochs=epochs, seed=seed, rounds=strategy != "full")
    return [workspace, head], files, locks


def test_a_pipeline_is_labelled_by_what_sets_it_apart_whichever_member_comes_first():
    workspace = {"src/reltune/models": "0123456789abcdef", "params:train.epochs": "20", "params:world.seed": "0"}
    art = {**workspace, "params:train.epochs": "40"}
    full = {"src/reltune/models": "0123456789abcdef", "params:train.epochs": "40"}  # fewer keys (no rounds), same values
    assert pipeline_label(workspace, [art, full]) == pipeline_label(workspace, [full, art]) == "train.epochs=40"
    recoded = {**art, "src/reltune/models": "fedcba9876543210", "params:world.seed": "3"}
    assert pipeline_label(workspace, [recoded]) == "train.epochs=40,world.seed=3+1"
    assert pipeline_label(workspace, [recoded], shown=3) == "train.epochs=40,world.seed=3,src/reltune/models:fedcba9"
    # a list or string parameter is shown as its value, not its JSON text
    counter = {**workspace, "params:instructions.negatives": '"counter"'}
    assert pipeline_label(counter, [{**counter, "params:instructions.negatives": '"random"'}]) == "instructions.negatives=random"


def test_compare_pools_only_the_workspace_pipeline_and_keeps_others_apart(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(statistics, "N_RESAMPLES", 999)
    monkeypatch.setattr(compare, "workspace_held_in", lambda: "synthetic")
    monkeypatch.setattr(compare, "workspace_chance_levels", lambda datasets: {})
    entries, files, locks = pooled_show()
    messages = []
    monkeypatch.setattr(compare, "log", messages.append)

    def reader(rev, path):
        return files[(rev, path)]

    tables = compare.comparison_tables(entries, reader=reader, lock_reader=locks.get)
    assert [row["experiment"] for row in tables["experiments"]] == ["workspace", "art-seed0", "art-seed1", "balanced-seed0", "balanced-seed1"]
    assert all(row["synthetic mR@20"] == 50.0 for row in tables["experiments"][1:])  # the 60-epoch runs are not among them
    assert any("4 experiment(s) of another pipeline left out" in message and "art-seed0 (@train.epochs=60)" in message for message in messages)
    (held_in,) = tables["differences"]
    assert held_in["difference"] == "art - balanced" and held_in["mR@20 difference [95% bootstrap interval]"].startswith("+0.00")

    every = compare.comparison_tables(entries, every_pipeline=True, reader=reader, lock_reader=locks.get)
    other = next(row for row in every["experiments"] if row.get("synthetic mR@20") == 100.0)
    label = other["pipeline"]
    assert label == "train.epochs=60" and sorted(row["variant"] for row in every["summary"]) == ["art", f"art @{label}", "balanced", f"balanced @{label}"]
    differences = {row["difference"]: row for row in every["differences"]}
    # strategies are paired within one pipeline; across pipelines only the same strategy, as a labelled setting effect
    assert set(differences) == {"art - balanced", f"art @{label} - balanced @{label}", f"art @{label} - art", f"balanced @{label} - balanced"}
    assert differences[f"art @{label} - balanced @{label}"]["mR@20 difference [95% bootstrap interval]"].startswith("+50.00")
    assert differences[f"art @{label} - art"]["mR@20 difference [95% bootstrap interval]"].startswith("+50.00")


def test_unreadable_locks_are_pooled_with_a_warning(monkeypatch):
    entries, files, locks = pooled_show()
    rows = compare.comparison_rows(entries, baselines=False)
    messages = []
    monkeypatch.setattr(compare, "log", messages.append)
    kept = compare.same_pipeline_rows(rows, every_pipeline=False, lock_reader=lambda rev: None)
    assert len(kept) == len(rows) and any("without a pipeline check" in message for message in messages)


def test_experiment_baselines_are_head_and_the_commits_named_in_refs_exps(git_here):
    git = git_here
    git("commit", "-q", "--allow-empty", "-m", "first")
    first = git("rev-parse", "HEAD")
    git("commit", "-q", "--allow-empty", "-m", "second")
    git("update-ref", f"refs/exps/{first[:2]}/{first[2:]}/art-seed0", "HEAD")
    git("update-ref", "refs/exps/celery/stash", "HEAD")  # queue bookkeeping, not a baseline
    assert compare.experiment_baselines() == ["HEAD", first]


def test_read_revision_lock_reads_the_commit_and_the_workspace(git_here, tmp_path):
    git = git_here
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    git("add", "dvc.lock"), git("commit", "-q", "-m", "lock")
    rev = git("rev-parse", "HEAD")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {world: {}}\n")
    assert compare.read_revision_lock(rev) == {"schema": "2.0", "stages": {}}
    assert compare.read_revision_lock("workspace") == {"schema": "2.0", "stages": {"world": {}}}
    assert compare.read_revision_lock("0" * 40) is None  # no such commit


def test_read_revision_params_reads_the_commit_and_the_workspace_apart_from_the_lock(git_here, tmp_path):
    git = git_here
    (tmp_path / "params.yaml").write_text("held_in: synthetic\ntrain_on: {final: 2}\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    git("add", "params.yaml", "dvc.lock"), git("commit", "-q", "-m", "params")
    rev = git("rev-parse", "HEAD")
    (tmp_path / "params.yaml").write_text("held_in: other\n")
    assert compare.read_revision_params(rev) == {"held_in": "synthetic", "train_on": {"final": 2}}
    assert compare.read_revision_lock(rev) == {"schema": "2.0", "stages": {}}  # one cache, two files of a commit
    assert compare.read_revision_params("workspace") == {"held_in": "other"}
    assert compare.read_revision_params("0" * 40) is None
