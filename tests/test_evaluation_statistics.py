"""Per-image recall file and the statistics of `make compare`, on hand-made data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation_helpers import run_cli
from reltune.errors import InputError
from reltune.evaluation import statistics
from reltune.evaluation.metrics import evaluate_predictions
from reltune.evaluation.per_image import mean_recall_from_counts, per_image_document, read_per_image
from reltune.io import write_json, write_parquet

PREDICATES = ["on", "near", "above", "has", "under"]


def random_world(seed: int, images: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scenes with 1-4 GT relations per image and scored guesses on their pairs (some repeated, some wrong)."""
    rng = np.random.default_rng(seed)
    scenes, rows = [], []
    for index in range(images):
        labels = ["man", "horse", "hat", "tree"]
        pairs = [(0, 1), (1, 2), (2, 3), (3, 0)][: int(rng.integers(1, 5))]
        relations = [{"subj": s, "obj": o, "predicate": str(rng.choice(PREDICATES))} for s, o in pairs]
        boxes = [[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(4)]
        scenes.append({"image_id": f"img{index}", "boxes": boxes, "labels": labels, "relations": relations})
        for s, o in pairs + [(0, 2)]:
            for predicate in rng.choice(PREDICATES, size=2):
                rows.append((f"img{index}", s, o, str(predicate), float(rng.random())))
    predictions = pd.DataFrame(rows, columns=["image_id", "subj", "obj", "predicate", "score"])
    return pd.DataFrame(scenes), predictions


def no_similarity(subjects, predicted, ground_truth, objects) -> np.ndarray:
    return np.zeros(len(predicted))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_recall_from_the_per_image_file_equals_the_evaluators_exactly(seed):
    scenes, predictions = random_world(seed)
    ks = (1, 2, 3)
    result = evaluate_predictions(scenes, predictions, PREDICATES, ks=ks, similarity=no_similarity)
    document = json.loads(json.dumps(per_image_document(result.ground_truth, ks)))  # as written and read back
    for k in ks:
        table = read_per_image(document, "per_image.json", k)
        assert table["gt"].sum() == result.metrics["gt_relations"]
        assert mean_recall_from_counts(table) == result.metrics[f"mR@{k}"]
    # the recall really varies with K here, so the equality is not a coincidence of zeros
    assert result.metrics["mR@1"] < result.metrics["mR@3"]


def test_cli_writes_the_per_image_file(tmp_path):
    scenes = pd.DataFrame(
        {
            "image_id": ["1", "2"],
            "image_path": ["1.jpg", "2.jpg"],
            "width": [100, 100],
            "height": [100, 100],
            "boxes": [[[0.0, 0.0, 5.0, 5.0], [5.0, 5.0, 9.0, 9.0]], [[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 4.0, 4.0]]],
            "labels": [["man", "hat"], ["man", "horse"]],
            "relations": [
                [{"subj": 0, "obj": 1, "predicate": "wearing"}, {"subj": 1, "obj": 0, "predicate": "on"}],
                [{"subj": 0, "obj": 1, "predicate": "on"}],
            ],
        }
    )
    # exact hits only (no other predicate on a GT pair): MiniLM is never asked
    predictions = pd.DataFrame({"image_id": ["1", "2"], "subj": [0, 0], "obj": [1, 1], "predicate": ["wearing", "on"], "score": [0.9, 0.8]})
    write_parquet(scenes, tmp_path / "scenes.parquet")
    write_parquet(predictions, tmp_path / "pred.parquet")
    write_json({"predicates": ["wearing", "on"]}, tmp_path / "vocab.json")
    out, per_image = tmp_path / "metrics.json", tmp_path / "per_image" / "synthetic.json"
    argv = ["evaluate", "--scenes", str(tmp_path / "scenes.parquet"), "--predictions", str(tmp_path / "pred.parquet")]
    argv += ["--train-vocab", str(tmp_path / "vocab.json"), "--out", str(out), "--per-image", str(per_image), "--ks", "1,5"]
    assert run_cli(argv) == 0
    document = json.loads(per_image.read_text())
    assert document["image_id"] == ["1", "1", "2"] and document["predicate"] == ["on", "wearing", "on"]
    assert document["gt"] == [1, 1, 1] and document["recalled@1"] == [0, 1, 1] and document["ks"] == [1, 5]
    # on: image 1 missed, image 2 hit -> 0.5; wearing 1.0 -> mR 75
    assert mean_recall_from_counts(read_per_image(document, str(per_image), 5)) == json.loads(out.read_text())["mR@5"] == 75.0


def test_bad_per_image_rows_fail_naming_the_row():
    document = {"format": "reltune-per-image/1", "ks": [20], "image_id": ["a", "b"], "predicate": ["on", "on"], "gt": [1, 2], "recalled@20": [1, 3]}
    with pytest.raises(InputError, match=r"row 1"):
        read_per_image(document, "x.json", 20)
    with pytest.raises(InputError, match=r"recalled@50"):
        read_per_image(document, "x.json", 50)
    with pytest.raises(InputError, match="not a per-image file"):
        read_per_image({"image_id": []}, "x.json", 20)


def counts(recalled: dict[tuple[str, str], int], gt: dict[tuple[str, str], int]) -> pd.DataFrame:
    keys = sorted(gt)
    return pd.DataFrame(
        {"image_id": [i for i, _ in keys], "predicate": [p for _, p in keys], "gt": [gt[k] for k in keys], "recalled": [recalled.get(k, 0) for k in keys]}
    )


GT = {("a", "on"): 2, ("a", "near"): 1, ("b", "on"): 1, ("c", "near"): 2, ("d", "on"): 1, ("d", "above"): 1}


def test_weighted_mean_recall_is_the_mean_recall_of_the_multiset():
    table = counts({("a", "on"): 1, ("b", "on"): 1, ("c", "near"): 1, ("d", "above"): 1}, GT)
    aligned = statistics.align_per_image([table], ["x"])
    assert statistics.weighted_mean_recalls(aligned, np.ones(4))[0] == pytest.approx(mean_recall_from_counts(table))
    # images a, a, c (d and b not drawn): the duplicated table, renamed, is the same multiset
    weights = np.array([2.0, 0.0, 1.0, 0.0])  # aligned images are sorted: a, b, c, d
    duplicated = pd.concat([table[table.image_id == "a"], table[table.image_id == "a"].assign(image_id="a2"), table[table.image_id == "c"]])
    # on: a 0.5 twice -> 0.5; near: a 0, a 0, c 0.5 -> 1/6; above absent -> mR = (0.5 + 1/6) / 2
    assert mean_recall_from_counts(duplicated) == pytest.approx(100 * (0.5 + 1 / 6) / 2)
    assert statistics.weighted_mean_recalls(aligned, weights)[0] == pytest.approx(mean_recall_from_counts(duplicated))


def experiments(recall_probability: float, seeds: int, seed: int) -> statistics.AlignedRecalls:
    rng = np.random.default_rng(seed)
    gt = {(f"img{i}", p): int(rng.integers(1, 3)) for i in range(60) for p in PREDICATES[: 1 + i % len(PREDICATES)]}
    tables = []
    for _ in range(seeds):
        tables.append(counts({key: int(rng.binomial(value, recall_probability)) for key, value in gt.items()}, gt))
    return statistics.align_per_image(tables, [f"seed{s}" for s in range(seeds)])


def test_identical_experiments_differ_by_zero_and_are_not_separable():
    art = experiments(0.5, seeds=3, seed=0)
    difference = statistics.paired_difference(art, art, n_resamples=999)
    assert (difference.mean, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert difference.verdict() == statistics.NOT_SEPARABLE


def test_a_clearly_better_strategy_is_ahead_and_the_worse_behind():
    better, worse = experiments(0.8, seeds=3, seed=1), experiments(0.3, seeds=3, seed=1)
    ahead = statistics.paired_difference(better, worse, n_resamples=999)
    mean = np.mean([mean_recall(better, s) - mean_recall(worse, s) for s in range(3)])
    assert ahead.mean == pytest.approx(mean) and 35 < ahead.mean < 65
    assert 0 < ahead.low < ahead.mean < ahead.high and ahead.verdict() == statistics.AHEAD
    behind = statistics.paired_difference(worse, better, n_resamples=999)
    assert behind.verdict() == statistics.BEHIND and behind.high < 0
    single = statistics.paired_difference(better.__class__(better.fractions[:1], better.present, better.image_ids, better.predicates),
                                          worse.__class__(worse.fractions[:1], worse.present, worse.image_ids, worse.predicates), n_resamples=999)  # fmt: skip
    assert single.n == 1 and single.verdict() == statistics.AHEAD


def mean_recall(aligned: statistics.AlignedRecalls, seed: int) -> float:
    return float(statistics.weighted_mean_recalls(aligned, np.ones(len(aligned.image_ids)))[seed])


def test_same_strategy_different_seeds_is_not_separable():
    first, second = experiments(0.5, seeds=4, seed=2), experiments(0.5, seeds=4, seed=3)
    difference = statistics.paired_difference(first, second, n_resamples=999)
    assert difference.low < 0 < difference.high and difference.verdict() == statistics.NOT_SEPARABLE


def test_seed_noise_widens_the_interval_beyond_the_image_noise():
    # seed 0 of A is far ahead, seed 1 far behind: resampling images alone would be sure of the mean
    base = experiments(0.5, seeds=1, seed=4)
    high, low = np.clip(base.fractions * 1.6, 0, 1), base.fractions * 0.2
    first = statistics.AlignedRecalls(np.concatenate([high, low]), base.present, base.image_ids, base.predicates)
    second = statistics.AlignedRecalls(np.concatenate([base.fractions, base.fractions]), base.present, base.image_ids, base.predicates)
    difference = statistics.paired_difference(first, second, n_resamples=999)
    assert difference.verdict() == statistics.NOT_SEPARABLE and difference.low < 0 < difference.high


def test_paired_experiments_must_share_the_test_set():
    table = counts({}, GT)
    other = table.assign(gt=table["gt"] + 1)
    with pytest.raises(InputError, match="seed1.*not paired"):
        statistics.align_per_image([table, other], ["seed0", "seed1"])


def test_seed_interval_is_students_t():
    estimate = statistics.seed_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.776445; sem = sqrt(2.5 / 5)
    assert estimate.mean == 3.0 and estimate.high - 3.0 == pytest.approx(2.776445 * np.sqrt(0.5), abs=1e-6)
    assert estimate.low == pytest.approx(6.0 - estimate.high)
    assert statistics.seed_interval([2.0, 2.0]) == statistics.Estimate(2.0, 2.0, 2.0, 2)
    with pytest.raises(ValueError):
        statistics.seed_interval([1.0])


def test_the_verdict_needs_the_t_interval_over_seeds_too():
    # every image recalled 0.9 vs 0.5 on seed 0, 0.52 vs 0.5 on seed 1: +40 and +2, no image noise at all
    base = experiments(0.5, seeds=1, seed=5)
    present = base.present
    first = statistics.AlignedRecalls(np.stack([np.where(present, 0.9, 0.0), np.where(present, 0.52, 0.0)]), present, base.image_ids, base.predicates)
    second = statistics.AlignedRecalls(np.stack([np.where(present, 0.5, 0.0)] * 2), present, base.image_ids, base.predicates)
    np.testing.assert_allclose(statistics.per_seed_differences(first, second), [40.0, 2.0])
    bootstrap = statistics.paired_difference(first, second, n_resamples=999)
    assert bootstrap.mean == pytest.approx(21.0) and bootstrap.low == pytest.approx(2.0) and bootstrap.verdict() == statistics.AHEAD
    over_seeds = statistics.paired_seed_interval(first, second)
    # two seeds: 21 -+ t(0.975, 1) * 19 = 21 -+ 241.4
    assert over_seeds.low == pytest.approx(21.0 - 12.7062047 * 19.0) and over_seeds.verdict() == statistics.NOT_SEPARABLE
    assert statistics.joint_verdict([bootstrap, over_seeds]) == statistics.NOT_SEPARABLE
    assert statistics.joint_verdict([bootstrap]) == statistics.AHEAD
    single = statistics.AlignedRecalls(first.fractions[:1], present, base.image_ids, base.predicates)
    assert statistics.paired_seed_interval(single, single) is None


def per_image_recalls(rows: list[tuple[str, str, int, int]]) -> statistics.AlignedRecalls:
    """(image_id, predicate, gt, recalled@20) rows -> one run's aligned per-image recalls."""
    image_ids, predicates, gt, recalled = (list(column) for column in zip(*rows))
    document = {"format": "reltune-per-image/1", "ks": [20], "image_id": image_ids, "predicate": predicates, "gt": gt, "recalled@20": recalled}
    return statistics.align_per_image([read_per_image(document, "syn.json", 20)], ["syn.json"])


def test_predicate_interval_is_the_mean_over_its_images_and_agrees_with_the_normal_approximation():
    # 400 images of `left of` (300 recalled) and 5 of `on`, all recalled
    recalls = per_image_recalls([(f"i{n}", "left of", 1, int(n < 300)) for n in range(400)] + [(f"o{n}", "on", 1, 1) for n in range(5)])
    point, low, high = statistics.predicate_recall_interval(recalls, "left of")
    assert point == pytest.approx(75.0)
    half_width = 1.96 * (0.75 * 0.25 / 400) ** 0.5 * 100.0  # Wald: 4.24 points
    assert low == pytest.approx(75.0 - half_width, abs=0.6) and high == pytest.approx(75.0 + half_width, abs=0.6)
    assert statistics.predicate_recall_interval(recalls, "on") == (100.0, 100.0, 100.0)  # no resample differs
    with pytest.raises(InputError, match="syn.json.*'near'"):
        statistics.predicate_recall_interval(recalls, "near", "syn.json")


def test_predicate_interval_of_four_images_has_the_hand_counted_lower_end():
    # left of recalled on 1, 1, 1, 0 of four images: a resample's mean is 0 with probability 0.004 and
    # at most 0.25 with 0.051, so the 2.5th percentile is 25; image `x` (another predicate) is not counted
    recalls = per_image_recalls([(f"l{n}", "left of", 1, recalled) for n, recalled in enumerate([1, 1, 1, 0])] + [("x", "on", 2, 0)])
    assert statistics.predicate_recall_interval(recalls, "left of") == (75.0, 25.0, 100.0)
