"""benchmarks/heldout_spread.py: a held-out mR@20 split into its parts on pairs of seen classes and pairs with an unseen class."""

import json

import pandas as pd
import pytest
import scipy.stats

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def heldout_spread():
    return load_benchmark("heldout_spread")


# held-in vocabulary: classes cup, table; training predicates on, near
HELD_IN = {"objects": ["cup", "table"], "predicates": ["On", "near "]}  # as a vocab may spell them: `evaluate` normalises
# one relation per image: (subject class, object class, annotated predicate, the run's answer)
PAIRS = [
    ("cup", "table", "on", "on"),  # seen classes, right
    ("fox", "table", "on", "on"),  # an unseen class, right
    ("fox", "cup", "near", "on"),  # an unseen class, wrong
    ("cup", "table", "near", "near"),  # seen classes, right
    ("fox", "table", "hug", "on"),  # an unseen predicate: never right
]
# per predicate, mean over its images of hits: on (1 + 1) / 2, near (0 + 1) / 2, hug 0; mR@20 their mean
MEAN_RECALL = (1.0 + 0.5 + 0.0) / 3 * 100


def make_run(root, name: str, pairs=PAIRS, reported: float = MEAN_RECALL, malformed=3):
    run = root / name
    for folder in ("metrics", "data/predictions", "data/scenes/syn", "data/scenes/ood"):
        (run / folder).mkdir(parents=True)
    (run / "data/scenes/syn/vocab.json").write_text(json.dumps(HELD_IN))
    scenes, answers = [], []
    for index, (subject, object_, truth, answer) in enumerate(pairs):
        image_id = f"i{index}"
        scenes.append({"image_id": image_id, "image_path": f"{image_id}.png", "width": 40, "height": 40,
                       "boxes": [[0.0, 0.0, 8.0, 8.0], [20.0, 0.0, 28.0, 8.0]], "labels": [subject, object_],
                       "relations": [{"subj": 0, "obj": 1, "predicate": truth}]})
        answers.append((image_id, 0, 1, answer, 0.9))
    pd.DataFrame(scenes).to_parquet(run / "data/scenes/ood/test.parquet")
    pd.DataFrame(answers, columns=["image_id", "subj", "obj", "predicate", "score"]).to_parquet(run / "data/predictions/ood.parquet")
    (run / "metrics/ood.json").write_text(json.dumps({"mR@20": reported}))
    report = {"beams": {"yes": len(pairs), "no": 7, "malformed": malformed}}
    (run / "data/predictions/ood.report.json").write_text(json.dumps(report))
    return run


def test_a_held_out_mean_recall_is_split_by_the_classes_of_its_pairs(heldout_spread, tmp_path):
    split = heldout_spread.split_run(make_run(tmp_path, "r0"), "syn", "ood", "test")
    assert split.mean_recall == pytest.approx(MEAN_RECALL)
    # seen classes: on's image i0 (1 of on's 2 images), near's image i3 (1 of 2); hug none
    assert split.seen_part == pytest.approx((0.5 + 0.5 + 0.0) / 3 * 100)
    assert split.unseen_part == pytest.approx((0.5 + 0.0 + 0.0) / 3 * 100)
    assert split.seen_part + split.unseen_part == pytest.approx(split.mean_recall)
    # on pairs of each kind alone, the training predicates: seen on 1, near 1; unseen on 1, near 0 (hug is not trained)
    assert (split.seen_recall, split.unseen_recall) == (pytest.approx(100.0), pytest.approx(50.0))
    assert split.unseen_share == pytest.approx(3 / 5)
    assert "= 33.33 on pairs of seen classes + 16.67 on pairs with an unseen class (60% of the relations)" in split.line()
    assert split.malformed == 3 and split.line().endswith("; 3 malformed answers")


@pytest.mark.parametrize("report", [{"beams": {"yes": 5}}, {"beams": {"malformed": -1}}, {"beams": {"malformed": 2.5}}, {}])
def test_a_predict_report_without_a_count_of_malformed_answers_is_refused(heldout_spread, tmp_path, report):
    run = make_run(tmp_path, "r0")
    (run / "data/predictions/ood.report.json").write_text(json.dumps(report))
    with pytest.raises(Exception, match=r"ood\.report\.json.*beams\.malformed is"):
        heldout_spread.split_run(run, "syn", "ood", "test")


def test_a_reported_mean_recall_the_predictions_do_not_give_is_refused(heldout_spread, tmp_path):
    run = make_run(tmp_path, "r0", reported=MEAN_RECALL + 1.0)
    with pytest.raises(Exception, match=r"ood\.json.*not the re-ranked"):
        heldout_spread.split_run(run, "syn", "ood", "test")


def test_a_vocab_without_classes_is_refused(heldout_spread, tmp_path):
    run = make_run(tmp_path, "r0")
    (run / "data/scenes/syn/vocab.json").write_text(json.dumps({"predicates": ["on"]}))
    with pytest.raises(Exception, match=r"vocab\.json.*objects"):
        heldout_spread.split_run(run, "syn", "ood", "test")


def test_a_spread_made_on_unseen_classes_shows_in_that_part_and_in_the_differences(heldout_spread, tmp_path):
    # three seeds that differ only in the unseen-class `on` pair (i1): right, wrong, right
    wrong_unseen = [PAIRS[0], ("fox", "table", "on", "near"), *PAIRS[2:]]
    low = (0.5 + 0.5 + 0.0) / 3 * 100
    runs = [make_run(tmp_path, "s0", malformed=1), make_run(tmp_path, "s1", wrong_unseen, low, malformed=9), make_run(tmp_path, "s2", malformed=2)]
    splits = [heldout_spread.split_run(run, "syn", "ood", "test") for run in runs]
    lines = heldout_spread.group_lines("art", splits)
    spread = pd.Series([MEAN_RECALL, low, MEAN_RECALL]).std()
    assert f"seed sd of mR@20 {spread:.2f}" in lines[3]
    assert "of the part on pairs of seen classes 0.00 [0.00, 0.00]" in lines[3]
    assert f"on pairs with an unseen class {spread:.2f}" in lines[3]
    # the seen part does not vary: only the unseen part's correlation is printed
    # malformed 1, 9, 2 against mR@20 high, low, high: scipy's r, negative
    malformed_r = scipy.stats.pearsonr([MEAN_RECALL, low, MEAN_RECALL], [1, 9, 2]).statistic
    assert malformed_r < -0.99
    assert heldout_spread.correlation_lines(splits) == [
        "all 3 runs: Pearson r of mR@20 and the part on pairs with an unseen class +1.00 (p 0.000)",
        f"all 3 runs: Pearson r of mR@20 and the malformed answers {malformed_r:+.2f} (p {scipy.stats.pearsonr([MEAN_RECALL, low, MEAN_RECALL], [1, 9, 2]).pvalue:.3f})",
    ]
    differences = heldout_spread.difference_lines(("art", splits[:2]), ("balanced", splits[1:]))
    assert differences[0] == (
        f"art - balanced, run 0: mR@20 {MEAN_RECALL - low:+.2f}: +0.00 on pairs of seen classes, "
        f"{MEAN_RECALL - low:+.2f} on pairs with an unseen class; malformed answers -8"
    )
    assert differences[1].startswith(f"art - balanced, run 1: mR@20 {low - MEAN_RECALL:+.2f}") and differences[1].endswith("malformed answers +7")
    # differences -8 and +7: mean -0.5, t interval with one degree of freedom, half-width 12.706 * 7.5
    assert differences[2] == "art - balanced over 2 runs: malformed answers -0.5 [-95.8, +94.8] (95% t)"


def test_the_command_prints_groups_and_run_by_run_differences(heldout_spread, tmp_path, monkeypatch, capsys):
    wrong_unseen = [PAIRS[0], ("fox", "table", "on", "near"), *PAIRS[2:]]
    low = (0.5 + 0.5 + 0.0) / 3 * 100
    first, second = make_run(tmp_path, "a0"), make_run(tmp_path, "b0", wrong_unseen, low)
    argv = ["heldout_spread.py", "--held-in", "syn", "--held-out", "ood", "--group", "art", str(first), "--group", "balanced", str(second)]
    monkeypatch.setattr("sys.argv", argv)
    heldout_spread.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "art: one run, no seed spread" and lines[3] == "balanced: one run, no seed spread"
    assert lines[-1].startswith(f"art - balanced, run 0: mR@20 {MEAN_RECALL - low:+.2f}: +0.00 on pairs of seen classes")
    assert lines[-1].endswith("malformed answers +0")
