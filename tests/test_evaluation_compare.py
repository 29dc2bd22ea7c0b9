"""The `make compare` tables: rows from `dvc exp show --json`, chance row, seed intervals, paired differences, report section."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from evaluation_helpers import run_cli
from reltune.evaluation import compare, statistics
from reltune.errors import InputError
from reltune.io import write_json, write_parquet


def experiment(
    name: str, strategy: str, seed: int, held_in_mr: float, blind_mr: float, wall_s: float, train_seed: int | None = None
) -> dict:
    metrics = {
        "metrics/synthetic.json": {"data": {"R@20": 2 * held_in_mr, "mR@20": held_in_mr, "unique_predicates": 7}},
        "metrics/synthetic_blind.json": {"data": {"R@20": 1.0, "mR@20": blind_mr}},
        "metrics/timing/train-final.json": {"data": {"wall_s": wall_s}},
        "metrics/pretrain_tiny.json": {"data": {"accuracy": 0.7}},
    }
    train_seed = seed if train_seed is None else train_seed
    params = {"params.yaml": {"data": {"sampling": {"strategy": strategy, "seed": seed}, "train": {"seed": train_seed}}}}
    rev = "workspace" if name == "workspace" else hashlib.sha1(name.encode()).hexdigest()
    return {"rev": rev, "name": name, "data": {"rev": rev, "metrics": metrics, "params": params}}


def exp_show(commit_metrics: bool) -> list[dict]:
    workspace = experiment("workspace", "art", 0, 50.0, 19.0, 60.0)
    head = experiment("main", "art", 0, 50.0, 19.0, 60.0)
    if not commit_metrics:
        head["data"]["metrics"] = {}
    head["experiments"] = [
        {"revs": [experiment("art-seed0", "art", 0, 50.0, 19.0, 600.0)]},
        {"revs": [experiment("art-seed1", "art", 1, 40.0, 17.0, 660.0)]},
        {"revs": [experiment("random-seed0", "random", 0, 30.0, 16.0, 540.0)], "executor": {"state": "success"}},
        # still running: `dvc exp show` gives it the workspace's metrics
        {"revs": [experiment("random-seed1", "random", 1, 50.0, 19.0, 60.0)], "executor": {"state": "running"}},
    ]
    return [workspace, head]


def test_rows_blind_columns_and_baselines_filter():
    rows = compare.comparison_rows(exp_show(commit_metrics=True))
    assert [row["experiment"] for row in rows] == ["workspace", "main", "art-seed0", "art-seed1", "random-seed0"]
    art_seed1 = rows[3]
    assert (art_seed1["strategy"], art_seed1["seed"]) == ("art", 1)
    assert art_seed1["synthetic mR@20"] == 40.0 and art_seed1["synthetic blind mR@20"] == 17.0
    assert art_seed1["synthetic unique_predicates"] == 7 and "synthetic blind unique_predicates" not in art_seed1
    assert art_seed1["wall time (min)"] == 11.0
    assert not any(column.startswith("pretrain") for column in art_seed1)
    # every commit: old commits' own runs are left out, the workspace stays
    names = [row["experiment"] for row in compare.comparison_rows(exp_show(commit_metrics=True), baselines=False)]
    assert names == ["workspace", "art-seed0", "art-seed1", "random-seed0"]
    # timing files that are plain outputs (not DVC metrics): no wall-time column rather than a false 0
    untimed = exp_show(commit_metrics=False)
    del untimed[1]["experiments"][0]["revs"][0]["data"]["metrics"]["metrics/timing/train-final.json"]
    assert "wall time (min)" not in compare.comparison_rows(untimed)[1]


def test_seed_summary_gives_mean_and_t_interval_of_variants_with_two_seeds():
    summary = compare.seed_summary_rows(compare.comparison_rows(exp_show(commit_metrics=False)))
    assert len(summary) == 1  # random has one seed: no interval to give
    art = summary[0]
    assert (art["variant"], art["seeds"]) == ("art", "0,1")
    # 50 and 40: mean 45, sem 5, t(0.975, 1 df) = 12.7062 -> 45 -+ 63.53
    assert art["synthetic mR@20"] == "45.00 [-18.53, 108.53]"
    assert art["synthetic mR@20 sd"] == "7.07" and "synthetic blind mR@20 sd" not in art
    assert art["synthetic blind mR@20"] == "18.00 [5.29, 30.71]"
    assert art["wall time (min)"] == "10.50 [4.15, 16.85]"


def test_a_variant_that_fixes_the_sampling_seed_pairs_by_its_run_seed(capsys):
    """`EXP_SUFFIX=-draw0 EXP_ARGS="-S sampling.seed=0"`: one draw, training seeds 1 and 2 (session 18 paired only one)."""
    entries, files = strategy_show()
    for seed, hit_every in ((1, 1), (2, 1)):  # the fixed draw recalls everything: +50 over balanced on seeds 1 and 2
        run = experiment(f"balanced-draw0-seed{seed}", "balanced", 0, 100.0, 10.0, 60.0, train_seed=seed)
        entries[0]["experiments"].append({"revs": [run], "executor": {"state": "success"}})
        files[(run["rev"], "metrics/per_image/synthetic.json")] = per_image(hit_every)
    rows = compare.comparison_rows(entries)
    draw0 = [row for row in rows if row["experiment"].startswith("balanced-draw0")]
    assert [(row["seed"], row["train seed"]) for row in draw0] == [(0, 1), (0, 2)]
    assert sorted(compare.seed_members(draw0)) == [1, 2]
    summary = {row["variant"]: row for row in compare.seed_summary_rows(rows)}
    assert summary["balanced-draw0"]["seeds"] == "1,2" and summary["balanced-draw0"]["synthetic mR@20"].startswith("100.00 [")
    differences = compare.difference_rows(rows, ["synthetic"], "synthetic", lambda rev, path: files[(rev, path)])
    against_default = next(row for row in differences if row["difference"] == "balanced-draw0 - balanced")
    assert against_default["seeds"] == "1,2" and against_default["verdict"] == "ahead"
    assert "appears twice" not in capsys.readouterr().err
    # the same name on two commits is one seed, counted once in the summary too
    twice = [row for row in rows if row["experiment"] in ("art-seed0", "art-seed1")]
    twice.append({**twice[0], "rev": "another-commit", "synthetic mR@20": 0.0})
    (art,) = compare.seed_summary_rows(twice)
    assert art["seeds"] == "0,1" and art["synthetic mR@20"].startswith("100.00 [")
    assert "art-seed0 seed 0 appears twice" in capsys.readouterr().err


def test_main_prints_the_chance_row_from_workspace_scenes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("held_in: synthetic\nevaluate: {split: test}\n")
    write_json({"predicates": ["on", "near", "has", "with"]}, tmp_path / "data/scenes/synthetic/vocab.json")
    scenes = pd.DataFrame(
        {
            "image_id": ["a"],
            "image_path": ["a.png"],
            "width": [10],
            "height": [10],
            "boxes": [[[0.0, 0.0, 2.0, 2.0], [3.0, 3.0, 5.0, 5.0]]],
            "labels": [["man", "horse"]],
            "relations": [[{"subj": 0, "obj": 1, "predicate": "on"}, {"subj": 1, "obj": 0, "predicate": "under"}]],
        }
    )
    write_parquet(scenes, tmp_path / "data/scenes/synthetic/test.parquet")
    shown = tmp_path / "exp_show.json"
    shown.write_text(json.dumps(exp_show(commit_metrics=False)))
    assert compare.main([str(shown)]) == 0
    lines = capsys.readouterr().out.splitlines()
    chance = next(line for line in lines if line.startswith("| chance"))
    header = lines[0].split(" | ")
    cells = chance.split(" | ")
    # one of two GT relations is seen, hit with 1/4: R = 12.5; predicates on 0.25, under 0 -> mR = 12.5
    assert cells[header.index("synthetic R@20")] == "12.50" and cells[header.index("synthetic mR@20")] == "12.50"
    assert cells[header.index("synthetic blind mR@20")] == ""
    assert any(line.startswith("Per variant over seeds") for line in lines)


IMAGES = [f"img{i}" for i in range(30)]


@pytest.fixture(autouse=True)
def fewer_resamples(monkeypatch):
    """The verdicts here are clear-cut: 999 bootstrap resamples decide them as well as 9999, ten times faster."""
    monkeypatch.setattr(statistics, "N_RESAMPLES", 999)


def per_image(hit_every: int, offset: int = 0) -> dict:
    """Per-image file of 30 images with an 'on' (2 GT) and a 'near' (1 GT); every `hit_every`-th image fully recalled."""
    rows = [(image, predicate, gt) for image in IMAGES for predicate, gt in (("near", 1), ("on", 2))]
    recalled = [gt if (i // 2 + offset) % hit_every == 0 else 0 for i, (_, _, gt) in enumerate(rows)]
    return {
        "format": "reltune-per-image/1",
        "ks": [20],
        "image_id": [row[0] for row in rows],
        "predicate": [row[1] for row in rows],
        "gt": [row[2] for row in rows],
        "recalled@20": recalled,
    }


def strategy_show() -> tuple[list[dict], dict]:
    """exp show of art/balanced/random over seeds 0-2 (+ a lone `full`), and the per-image file of each rev."""
    head = experiment("main", "art", 0, 50.0, 19.0, 60.0)
    head["data"]["metrics"] = {}
    head["experiments"], files = [], {}
    hit_every = {"art": 1, "balanced": 2, "random": 2}  # art recalls everything; balanced and random the same half
    for strategy in ("art", "balanced", "random"):
        for seed in range(3):
            run = experiment(f"{strategy}-seed{seed}", strategy, seed, 100.0 / hit_every[strategy], 10.0, 60.0)
            run["data"]["metrics"]["metrics/synthetic-ood.json"] = {"data": {"R@20": 1.0, "mR@20": 5.0}}
            head["experiments"].append({"revs": [run], "executor": {"state": "success"}})
            files[(run["rev"], "metrics/per_image/synthetic.json")] = per_image(hit_every[strategy], offset=seed)
            files[(run["rev"], "metrics/per_image/synthetic-ood.json")] = per_image(3)
    head["experiments"].append({"revs": [experiment("full-seed0", "full", 0, 90.0, 10.0, 60.0)]})
    return [head], files


def test_paired_differences_give_intervals_and_verdicts_per_dataset(monkeypatch):
    monkeypatch.setattr(compare, "workspace_held_in", lambda: "synthetic")
    entries, files = strategy_show()
    rows = compare.comparison_rows(entries)
    differences = compare.difference_rows(rows, ["synthetic", "synthetic-ood"], "synthetic", lambda rev, path: files[(rev, path)])
    table = {(row["difference"], row["dataset"]): row for row in differences}
    assert len(differences) == 6 and all(row["seeds"] == "0,1,2" for row in differences)
    ahead = table[("art - balanced", "synthetic (held-in)")]
    # art 100 on every seed; balanced recalls images 0,2,.. (seeds 0, 2) or 1,3,.. (seed 1): 50 -> +50
    assert ahead["mR@20 difference [95% bootstrap interval]"].startswith("+50.00 [+") and ahead["verdict"] == "ahead"
    assert ahead["[95% t interval over seeds]"] == "+50.00 [+50.00, +50.00]"  # the same +50 on every seed
    assert table[("art - random", "synthetic (held-in)")]["verdict"] == "ahead"
    # balanced and random: identical runs -> exactly 0
    same = table[("balanced - random", "synthetic (held-in)")]
    assert same["mR@20 difference [95% bootstrap interval]"] == "+0.00 [+0.00, +0.00]" and same["verdict"] == "not separable at 95%"
    assert table[("art - balanced", "synthetic-ood (held-out)")]["verdict"] == "not separable at 95%"
    # a missing per-image file is reported in the row, not a crash
    del files[(rows[1]["rev"], "metrics/per_image/synthetic.json")]

    def reader(rev, path):
        if (rev, path) not in files:
            raise InputError(path, f"not readable in experiment {rev[:7]}")
        return files[(rev, path)]

    broken = compare.difference_rows(rows, ["synthetic"], "synthetic", reader)
    assert broken[0]["verdict"].startswith("not compared: metrics/per_image/synthetic.json: not readable")


def test_compared_pairs_pair_strategies_within_a_setting_and_settings_against_the_default():
    variants = ["art", "balanced", "random", "full", "art-neg2", "balanced-neg2", "full-neg2", "art-entropy", "art @1a2b3c4", "random @1a2b3c4"]
    assert compare.compared_pairs(variants) == [
        ("art", "balanced"), ("art", "random"), ("balanced", "random"),
        ("art-neg2", "balanced-neg2"),
        ("art @1a2b3c4", "random @1a2b3c4"),
        ("art-neg2", "art"), ("balanced-neg2", "balanced"), ("full-neg2", "full"), ("art-entropy", "art"),
        ("art @1a2b3c4", "art"), ("random @1a2b3c4", "random"),
    ]  # fmt: skip
    # no default to set a setting against, and a name that only starts like a strategy ("artsy")
    assert compare.compared_pairs(["full-neg2", "artsy", "balanced"]) == []


def test_suffixed_variants_get_paired_differences(monkeypatch):
    entries, files = strategy_show()
    head = entries[0]
    for strategy, hit_every in (("art", 2), ("balanced", 1)):  # with the setting, balanced recalls everything
        for seed in range(3):
            run = experiment(f"{strategy}-neg2-seed{seed}", strategy, seed, 50.0, 10.0, 60.0)
            head["experiments"].append({"revs": [run], "executor": {"state": "success"}})
            files[(run["rev"], "metrics/per_image/synthetic.json")] = per_image(hit_every, offset=seed)
    rows = compare.comparison_rows(entries)
    differences = compare.difference_rows(rows, ["synthetic"], "synthetic", lambda rev, path: files[(rev, path)])
    table = {row["difference"]: row for row in differences}
    assert table["art-neg2 - balanced-neg2"]["verdict"] == "behind"
    assert table["art-neg2 - balanced-neg2"]["mR@20 difference [95% bootstrap interval]"].startswith("-50.00 [")
    assert table["art-neg2 - art"]["verdict"] == "behind" and table["balanced-neg2 - balanced"]["verdict"] == "ahead"
    assert "full-neg2 - full" not in table  # no full-neg2 experiment


def test_main_prints_summary_and_differences_and_the_report_gets_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("held_in: synthetic\n")
    entries, files = strategy_show()
    monkeypatch.setattr(compare, "read_revision_json", lambda rev, path: files[(rev, path)])
    (tmp_path / "show.json").write_text(json.dumps(entries))
    assert compare.main([str(tmp_path / "show.json")]) == 0
    out = capsys.readouterr().out
    assert compare.SUMMARY_TITLE in out and compare.DIFFERENCES_TITLE in out and compare.NOISE_TITLE in out
    assert "| art | synthetic (held-in) | 0,1,2 | 0.00 | 0.00 | 0.00 |" in out  # recalls everything on every seed
    assert "| art - balanced | synthetic (held-in) | 0,1,2 | +50.00 [" in out
    assert "| balanced - random | synthetic-ood (held-out) | 0,1,2 | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] | not separable at 95% |" in out
    section = compare.experiments_html(entries)
    assert "<h2>Experiments (make compare)</h2>" in section and "<td>art - random</td>" in section and "<td>ahead</td>" in section
    monkeypatch.setenv("DVC_EXP_NAME", "art-seed0")  # inside an experiment's own run: no comparison
    assert compare.experiments_html() == ""


def test_outside_a_git_repository_the_report_says_so_and_leaves_the_comparison_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repository above
    assert compare.experiments_html() == ""
    message = capsys.readouterr().err
    assert "report: no experiment comparison (fatal: not a git repository" in message and "exit status" not in message


def test_per_image_files_are_read_from_the_experiments_git_commit(git_here, tmp_path):
    git = git_here
    write_json({"seed": 1}, tmp_path / "metrics/per_image/synthetic.json")
    git("add", "metrics"), git("commit", "-q", "-m", "run")
    rev = git("rev-parse", "HEAD")
    write_json({"seed": 2}, tmp_path / "metrics/per_image/synthetic.json")  # the workspace moved on
    assert compare.read_revision_json(rev, "metrics/per_image/synthetic.json") == {"seed": 1}
    assert compare.read_revision_json("workspace", "metrics/per_image/synthetic.json") == {"seed": 2}
    with pytest.raises(InputError, match="metrics/per_image/other.json: not readable in experiment"):
        compare.read_revision_json(rev, "metrics/per_image/other.json")


def test_cached_output_reads_only_md5_named_cache_files(tmp_path, monkeypatch):
    """A crafted dvc.lock in an experiment's commit must not point the reader outside the DVC cache."""
    monkeypatch.chdir(tmp_path)
    md5 = hashlib.md5(b"{}").hexdigest()
    cache_file = tmp_path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{}")
    (tmp_path / "secret.json").write_text('{"secret": 1}')
    escape = ".." + "../../../secret.json"  # cache / md5[:2] / md5[2:] of this is tmp_path/secret.json
    assert (compare.DVC_CACHE / escape[:2] / escape[2:]).resolve() == (tmp_path / "secret.json").resolve()
    outs = [{"path": "metrics/a.json", "md5": md5}, {"path": "metrics/b.json", "md5": escape}, {"path": "data/d", "md5": md5 + ".dir"}]
    monkeypatch.setattr(compare, "read_revision_lock", lambda rev: {"stages": {"evaluate": {"outs": outs}}})
    assert compare.cached_output("abc", "metrics/a.json") == compare.DVC_CACHE / md5[:2] / md5[2:]
    assert compare.cached_output("abc", "metrics/b.json") is None
    assert compare.cached_output("abc", "data/d") is None
    assert compare.cached_output("abc", "metrics/missing.json") is None


def test_report_shows_the_comparison_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("held_in: synthetic\n")
    entries, files = strategy_show()
    monkeypatch.setattr(compare, "show_experiments", lambda all_commits=False: entries)
    monkeypatch.setattr(compare, "read_revision_json", lambda rev, path: files[(rev, path)])
    argv = ["report", "--loop-dir", "loop", "--metrics-dir", "metrics", "--per-predicate-dir", "per_predicate", "--scenes-dir", "scenes"]
    argv += ["--predictions-dir", "predictions", "--instructions-dir", "instructions", "--gallery-images", "0"]
    assert run_cli([*argv, "--out-dir", "plain"]) == 0
    assert "make compare" not in (tmp_path / "plain/index.html").read_text()
    assert run_cli([*argv, "--out-dir", "compared", "--experiments", "true"]) == 0
    page = (tmp_path / "compared/index.html").read_text()
    assert "<h2>Experiments (make compare)</h2>" in page and "<td>art - balanced</td>" in page and "<td>ahead</td>" in page


def plain_mean_recall(document: dict, images: list[str]) -> float:
    """mR@20 (percent) of a per-image file on a multiset of images, by pandas (independent of `statistics`)."""
    table = pd.DataFrame({key: document[key] for key in ("image_id", "predicate", "gt", "recalled@20")})
    drawn = pd.DataFrame({"image_id": images}).merge(table, on="image_id")
    totals = drawn.groupby("predicate")[["recalled@20", "gt"]].sum()
    return float((totals["recalled@20"] / totals["gt"]).mean() * 100)


def test_noise_rows_set_the_seed_sd_beside_the_test_image_standard_error(monkeypatch):
    files = {}
    head = experiment("main", "art", 0, 50.0, 19.0, 60.0)
    head["data"]["metrics"], head["experiments"] = {}, []
    for seed, (hit_every, offset) in enumerate(((2, 0), (3, 0), (5, 1))):
        run = experiment(f"art-seed{seed}", "art", seed, 50.0, 10.0, 60.0)
        head["experiments"].append({"revs": [run], "executor": {"state": "success"}})
        files[(run["rev"], "metrics/per_image/synthetic.json")] = per_image(hit_every, offset)
    lone = experiment("full-seed0", "full", 0, 90.0, 10.0, 60.0)  # one seed: no spread to explain
    head["experiments"].append({"revs": [lone], "executor": {"state": "success"}})
    rows = compare.comparison_rows([head])
    (row,) = compare.noise_rows(rows, ["synthetic"], "synthetic", lambda rev, path: files[(rev, path)])
    documents = [files[(run["rev"], "metrics/per_image/synthetic.json")] for run in rows if run["experiment"].startswith("art")]
    values = [plain_mean_recall(document, IMAGES) for document in documents]
    assert row["variant"] == "art" and row["dataset"] == "synthetic (held-in)" and row["seeds"] == "0,1,2"
    assert row["mR@20 seed sd"] == pytest.approx(pd.Series(values).std(), abs=1e-9)
    # a plain bootstrap: draw 30 images with replacement, rescore each run from per-image sums, SE over draws
    rng = np.random.default_rng(1)
    draws = rng.integers(0, len(IMAGES), size=(1000, len(IMAGES)))
    standard_errors = []
    for document in documents:
        table = pd.DataFrame({key: document[key] for key in ("image_id", "predicate", "gt", "recalled@20")})
        recalled = table.pivot(index="image_id", columns="predicate", values="recalled@20").loc[IMAGES].to_numpy()
        gt = table.pivot(index="image_id", columns="predicate", values="gt").loc[IMAGES].to_numpy()
        scores = [(recalled[draw].sum(axis=0) / gt[draw].sum(axis=0)).mean() * 100 for draw in draws]
        standard_errors.append(np.std(scores, ddof=1))
    expected_se = float(np.sqrt(np.mean(np.square(standard_errors))))
    assert row["test-image SE"] == pytest.approx(expected_se, rel=0.1)
    assert row["beyond test noise"] == pytest.approx(np.sqrt(max(row["mR@20 seed sd"] ** 2 - row["test-image SE"] ** 2, 0.0)))
    assert row["beyond test noise"] > 0  # these runs differ by more than image luck
