"""`reltune report` on a small fake run directory written by the test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import pandas as pd
from PIL import Image

from evaluation_helpers import run_cli
from reltune.evaluation.metrics import compared_metrics, evaluate_predictions
from reltune.io import write_json, write_parquet


def selection(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["qid", "added_in_round", "reason"])


def make_run(root: Path) -> None:
    loop = root / "data/loop"
    seed = [("q1", 0, "balanced"), ("q2", 0, "balanced"), ("q3", 0, "balanced")]
    round_1 = seed + [("q4", 1, "tp_high_entropy"), ("q5", 1, "fp_low_similarity")]
    round_2 = round_1 + [("q6", 2, "fill")]
    for k, rows in enumerate((seed, round_1, round_2)):
        write_parquet(selection(rows), loop / f"round_{k}/selection.parquet")
        write_json({"round": k, "budget": len(rows)}, loop / f"round_{k}/selection_report.json")
    write_json({"per_predicate": {"on": 0.5, "near": 0.25}, "mean_recall": 0.375, "recall": 0.4}, loop / "round_1/val_recall.json")
    write_json({"per_predicate": {"on": 0.75, "near": 0.5}, "mean_recall": 0.625, "recall": 0.7}, loop / "round_2/val_recall.json")
    instructions = pd.DataFrame(
        {
            "qid": ["q1", "q2", "q3", "q4", "q5", "q6", "q7"],
            "kind": ["positive"] * 6 + ["negative"],
            "predicate": ["on", "on", "near", "near", "on", "near", None],
        }
    )
    write_parquet(instructions, root / "data/instructions/synthetic/train.parquet")
    write_json({"objects": ["man"], "predicates": ["on", "near"], "image_root": str(root / "images")}, root / "data/scenes/synthetic/vocab.json")

    (root / "images_ood").mkdir()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(root / "images_ood/a.png")  # b.png is missing on purpose
    scenes = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "image_path": ["a.png", "b.png"],
            "width": [64, 64],
            "height": [48, 48],
            "boxes": [[[2.0, 2.0, 30.0, 40.0], [20.0, 10.0, 60.0, 44.0]], [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]],
            "labels": [["man", "horse"], ["cup", "table"]],
            "relations": [[{"subj": 0, "obj": 1, "predicate": "riding"}], [{"subj": 0, "obj": 1, "predicate": "on"}]],
        }
    )
    write_parquet(scenes, root / "data/scenes/synthetic-ood/test.parquet")
    write_json({"objects": [], "predicates": ["riding", "on"], "image_root": str(root / "images_ood")}, root / "data/scenes/synthetic-ood/vocab.json")
    predictions = pd.DataFrame(
        {"image_id": ["a", "a", "b"], "subj": [0, 1, 0], "obj": [1, 0, 1], "predicate": ["riding", "on", "near"], "score": [0.9, 0.5, 0.7]}
    )
    write_parquet(predictions, root / "data/predictions/synthetic-ood.parquet")
    result = evaluate_predictions(scenes, predictions, ["on", "near"], similarity=lambda *a: np.zeros(len(a[1])))
    settings = {"similarity_model": "all-MiniLM-L6-v2", "similarity_sentence": "{s} {p} {o}"}
    # as `evaluate` writes them: the compared keys in metrics/, every key in metrics/details/
    for name, details in (("synthetic-ood", {**result.metrics, **settings}), ("synthetic-ood_blind", {**result.metrics, **settings, "R@20": 12.5, "ngR@20": 7.5})):
        write_json(compared_metrics(details), root / f"metrics/{name}.json")
        write_json(details, root / f"metrics/details/{name}.json")
    write_json({"loss": 0.5, "accuracy_yes_no": 0.9}, root / "metrics/pretrain_tiny.json")  # not an evaluation
    (root / "metrics/per_predicate").mkdir(parents=True)
    result.per_predicate.to_csv(root / "metrics/per_predicate/synthetic-ood.csv", index=False)


def test_report_on_a_fake_run(tmp_path):
    make_run(tmp_path)
    out = tmp_path / "report"
    argv = ["report", "--loop-dir", str(tmp_path / "data/loop"), "--metrics-dir", str(tmp_path / "metrics")]
    argv += ["--per-predicate-dir", str(tmp_path / "metrics/per_predicate"), "--scenes-dir", str(tmp_path / "data/scenes")]
    argv += ["--predictions-dir", str(tmp_path / "data/predictions"), "--instructions-dir", str(tmp_path / "data/instructions")]
    argv += ["--held-in", "synthetic", "--out-dir", str(out)]
    assert run_cli(argv) == 0

    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 7  # 2 validation, 2 selection, 1 per-predicate, 2 gallery
    for source in sources:
        assert (out / source).is_file() and (out / source).read_bytes()[:4] == b"\x89PNG"

    per_round = pd.read_csv(out / "plots/selection_per_round.csv").set_index("round")
    assert per_round.loc[0, "balanced"] == 3 and per_round.loc[0, "total"] == 3
    assert (per_round.loc[1, "tp_high_entropy"], per_round.loc[1, "fp_low_similarity"], per_round.loc[1, "total"]) == (1, 1, 2)
    assert (per_round.loc[2, "fill"], per_round.loc[2, "total"]) == (1, 1)
    per_predicate = pd.read_csv(out / "plots/selection_per_predicate.csv")
    assert per_predicate.to_dict("list") == {
        "predicate": ["near", "on"],
        "round_0": [1, 2],
        "round_1": [1, 1],
        "round_2": [1, 0],
        "selected": [3, 3],
    }
    val = pd.read_csv(out / "plots/val_recall.csv")
    assert val.to_dict("list") == {"round": [1, 2], "mean_recall": [0.375, 0.625], "recall": [0.4, 0.7]}

    # results table: the blind control side by side with the real run; only evaluated datasets
    assert "R@20 (blind)" in page and "<td>12.50</td>" in page
    results = pd.read_csv(out / "results.csv")
    assert results[["dataset", "variant"]].values.tolist() == [["synthetic-ood", "real"], ["synthetic-ood", "blind"]]
    assert "pretrain_tiny" not in page
    # constrained keys first: the first table holds R@K and no ng key; the unconstrained one follows
    first_table, rest = page.split("Without graph constraint", 1)
    headers = re.findall(r"<th>([^<]*)</th>", first_table)
    assert headers[:3] == ["dataset", "R@20", "R@20 (blind)"] and not any(h.startswith("ng") for h in headers)
    assert "ngR@20 (blind)" in rest and "<td>7.50</td>" in rest
    assert "<td>{s} {p} {o}</td>" in page.split("Evaluation settings", 1)[1]  # the similarity settings, once per file
    # chance row: 'riding' is unseen (never hit), 'on' is hit with 1/2 -> R = mean(0, 0.5), mR = mean(0, 0.5)
    chance_row = re.search(r"<td>synthetic-ood \(chance\)</td>((?:\s*<td>[^<]*</td>)+)", page)
    assert chance_row is not None
    cells = re.findall(r"<td>([^<]*)</td>", chance_row.group(1))
    assert cells[:4] == ["25.00", "–", "25.00", "–"]  # R@20 then its (blind) column, R@50, ...

    # gallery: the hit on an unseen predicate is marked both ways; the missing image is said so
    assert '<li class="hit unseen">1. man (0) riding horse (1)' in page
    assert '<li class="">2. horse (1) on man (0)' in page
    assert '<li class="">1. cup (0) near table (1)' in page  # near is a training predicate
    assert "image not available" in page and "b.png" in page
    assert "round 2: selection_report.json" in page


def test_metrics_files_flatten_nested_values_and_pair_blind_controls(tmp_path):
    from reltune.evaluation.report_data import metrics_files, results_side_by_side

    write_json({"R@20": 40.0, "mR@20": 10.0}, tmp_path / "gqa.json")
    write_json({"R@20": 5.0, "mR@20": 1.0}, tmp_path / "gqa_blind.json")
    write_json({"ngR@20": 50.0, "extra": {"final": 0.5}, "preset": "tiny"}, tmp_path / "vg.json")
    write_json({"loss": {"final": 0.5}, "preset": "tiny"}, tmp_path / "train.json")  # no recall key: not a dataset
    table = results_side_by_side(metrics_files(tmp_path)).set_index("dataset")
    assert list(table.index) == ["gqa", "vg"]
    # constrained recalls, then the other keys, then the unconstrained recalls
    assert list(table.columns) == [
        "R@20", "R@20 (blind)", "mR@20", "mR@20 (blind)", "extra.final", "extra.final (blind)", "preset", "preset (blind)", "ngR@20", "ngR@20 (blind)"
    ]  # fmt: skip
    assert table.loc["gqa", ["R@20", "R@20 (blind)", "mR@20 (blind)"]].tolist() == [40.0, 5.0, 1.0]
    assert (table.loc["vg", "extra.final"], table.loc["vg", "preset"], table.loc["vg", "ngR@20"]) == (0.5, "tiny", 50.0)


def test_metrics_files_read_the_details_file_beside_the_compact_metric(tmp_path):
    from reltune.evaluation.report_data import metrics_files

    write_json({"R@20": 40.0, "unique_predicates": 3}, tmp_path / "gqa.json")
    write_json({"R@20": 40.0, "unique_predicates": 3, "ngR@20": 55.0, "images": 7, "similarity_sentence": "{s} {p} {o}"}, tmp_path / "details/gqa.json")
    write_json({"R@20": 5.0}, tmp_path / "gqa_blind.json")  # no details file: only its compared keys
    table = metrics_files(tmp_path).set_index("variant")
    assert table.loc["real", ["R@20", "ngR@20", "images", "similarity_sentence"]].tolist() == [40.0, 55.0, 7, "{s} {p} {o}"]
    assert table.loc["blind", "R@20"] == 5.0 and pd.isna(table.loc["blind", "ngR@20"])
    assert list(table.columns[:3]) == ["dataset", "R@20", "images"]  # constrained recalls first, then the other keys by name


def test_seen_predicate_transfer_pairs_held_out_with_held_in_recall():
    from reltune.evaluation.report_data import seen_predicate_transfer

    held_in = pd.DataFrame({"predicate": ["on", "near", "has"], "seen_in_training": [True] * 3, "R@20": [80.0, 0.0, 50.0]})
    held_out = pd.DataFrame(
        {"predicate": ["on", "near", "holds", "riding"], "seen_in_training": [True, True, False, True], "R@20": [60.0, 10.0, 5.0, 7.0]}
    )
    tables = {"world": held_in, "ood": held_out, "ood_blind": held_out.assign(**{"R@20": 0.0})}
    transfer = seen_predicate_transfer(tables, "world", "R@20")
    # holds: unseen; riding: not in the held-in table; the blind table is not a dataset of its own
    assert transfer["predicate"].tolist() == ["on", "near"] and set(transfer["dataset"]) == {"ood"}
    assert transfer["ratio"].iloc[0] == pytest.approx(0.75) and np.isnan(transfer["ratio"].iloc[1])
    assert transfer["held-in R@20"].tolist() == [80.0, 0.0] and transfer["held-out R@20"].tolist() == [60.0, 10.0]
    assert seen_predicate_transfer({"ood": held_out}, "world", "R@20").empty
