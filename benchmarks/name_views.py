"""Does object-name substitution cost a small training set its data, or its attention? (issue 16, parts 4 and 1)

With all training positives, replacing each object name of a question by a
word naming nothing (chance 0.25 per name, `train.name_substitution`) makes
held-out transfer real at no separable held-in cost; at ART's budget (12 %
of the positives) the same replacement costs the final model 16 points of
held-in mR@20. Two readings: the replaced questions are *lost* as evidence
for the class-predicate prior (44 % of the questions lose a name in every
epoch), or they *confuse* a model that has seen too little to copy names.

This trains three models on one fixed training set (the `balanced` seed
strategy at `--budget-fraction`, default 0.12 = ART's three rounds; each
selected positive with its counter-negative) from the pipeline's backbone,
with the train params of params.yaml, and evaluates each as `predict` +
`evaluate` do, on the held-in and the held-out test split:
- `none`: no substitution;
- `replace`: the pipeline's substitution (`--name-substitution P`, drawn anew
  every epoch);
- `extra`: every question as asked, plus, for a share 1 - (1 - P)^2 of them
  (the share `replace` alters), one more copy whose names are replaced
  (drawn once, with at least one name replaced, as `replace` draws them):
  nothing is taken away, the copies only add. It trains that share longer.
Then the paired mR@20 differences (bootstrap over test images,
`reltune.evaluation.statistics`) of replace - none, extra - none and
extra - replace.

Usage (after `make repro`, which builds the backbone, instructions and scenes):
    .venv/bin/python benchmarks/name_views.py [--seed 0] [--budget-fraction 0.12] [--substitution 0.25] \
        [--variants none replace extra] [--out benchmarks/results/name_views.json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from reltune.data.scenes import read_scenes
from reltune.evaluation.per_image import read_per_image
from reltune.evaluation.statistics import align_per_image, paired_difference
from reltune.io import read_parquet, write_parquet
from reltune.models.names import copied_rows, substitute_names, training_pool
from reltune.models.training import relation_training_examples

VARIANTS = ("none", "replace", "extra")
SHOWN_KEYS = ("R@20", "mR@20", "mgR@20")
PAIRED_K = 20


def reltune(*arguments: str) -> None:
    """Run one reltune command as the pipeline does; stop with its stderr tail on failure."""
    done = subprocess.run([sys.executable, "-m", "reltune.cli", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reltune {arguments[0]} failed:\n{done.stderr[-2000:]}")


def flags(values: dict) -> list[str]:
    return [str(item) for pair in values.items() for item in pair]


def train_flags(params: dict, substitution: float) -> list[str]:
    """The `train` flags of params.yaml (as the train@<k> stage passes them), with this substitution."""
    train, model = params["train"], params["model"]
    return flags({
        "--train-all": str(model["train_all"]).lower(), "--lora-r": model["lora_r"], "--epochs": train["epochs"],
        "--batch-size": train["batch_size"], "--grad-accum": train["grad_accum"], "--lr": train["lr"],
        "--warmup-steps": train["warmup_steps"], "--schedule": train["schedule"], "--decay-rate": train["decay_rate"],
        "--weight-decay": train["weight_decay"], "--max-steps": train["max_steps"], "--clip-norm": train["clip_norm"],
        "--checkpoint-every": 0, "--seed": train["seed"], "--name-substitution": substitution,
        "--exclude-names-of": "data/scenes",
    })  # fmt: skip


def predict_flags(params: dict) -> list[str]:
    """The `predict` flags of params.yaml (as predict@<dataset>-blind0 passes them)."""
    score = params["score"]
    return flags({
        "--split": params["evaluate"]["split"], "--pairs": params["evaluate"]["pairs"], "--blind": "false",
        "--answers-per-question": params["predict"]["answers_per_question"], "--num-beams": score["num_beams"],
        "--max-new-tokens": score["max_new_tokens"], "--min-new-tokens": score["min_new_tokens"],
        "--length-penalty": score["length_penalty"], "--repetition-penalty": score["repetition_penalty"],
        "--batch-size": score["batch_size"], "--shard-size": score["shard_size"], "--vision-cache": "",
    })  # fmt: skip


def substituted_copies(chosen: pd.DataFrame, pool: tuple[str, ...], probability: float, seed: int) -> pd.DataFrame:
    """Mode `add`'s rows and draw (`names.copied_rows`, `substitute_names(at_least_one=True)`), made once into fixed copies."""
    label_pairs = list(zip(chosen["subj_label"].astype(str), chosen["obj_label"].astype(str)))
    rng = random.Random(f"name-views:{seed}")
    copies = []
    for row in copied_rows(label_pairs, probability, seed):
        record = chosen.iloc[row].to_dict()
        prompt, target = substitute_names(record["prompt"], record["target"], label_pairs[row], rng, pool, probability, at_least_one=True)
        copies.append({**record, "qid": f"{record['qid']}#names", "prompt": prompt, "target": target})
    return pd.DataFrame(copies, columns=chosen.columns)


def training_tables(params: dict, work: Path, seed: int, budget_fraction: float, probability: float) -> dict[str, Path]:
    """Instruction tables holding exactly each variant's training rows (trained without --selection)."""
    held_in = params["held_in"]
    instructions_file = f"data/instructions/{held_in}/train.parquet"
    reltune("select", "--instructions", instructions_file, "--round", "0", "--strategy", "balanced",
            "--budget-fraction", str(budget_fraction), "--seed", str(seed), "--out", str(work / "selection"))  # fmt: skip
    instructions = read_parquet(instructions_file)
    scenes, _ = read_scenes(f"data/scenes/{held_in}", "train")
    selection = read_parquet(work / "selection/selection.parquet", ["qid"])
    chosen_ids = set(relation_training_examples(instructions, scenes, selection)["qid"])
    chosen = instructions[instructions["qid"].isin(chosen_ids)].reset_index(drop=True)
    copies = substituted_copies(chosen, training_pool(instructions, "data/scenes"), probability, seed)
    tables = {"plain": work / "plain.parquet", "extra": work / "extra.parquet"}
    write_parquet(chosen, tables["plain"])
    write_parquet(pd.concat([chosen, copies], ignore_index=True), tables["extra"])
    print(f"{len(chosen)} training questions ({int((chosen['kind'] == 'positive').sum())} positives), "
          f"{len(copies)} substituted copies for `extra`", flush=True)  # fmt: skip
    return tables


def run_variant(params: dict, work: Path, variant: str, tables: dict[str, Path], probability: float) -> dict:
    """Train one variant, predict and evaluate it on every dataset; returns its metrics and per-image files."""
    held_in = params["held_in"]
    model = work / f"model-{variant}"
    started = time.perf_counter()
    table = tables["extra" if variant == "extra" else "plain"]
    reltune("train", "--backbone", params["model"]["backbone"], "--instructions", str(table), "--scenes", f"data/scenes/{held_in}",
            "--out", str(model), *train_flags(params, probability if variant == "replace" else 0.0))  # fmt: skip
    trained = time.perf_counter() - started
    result = {"train_seconds": round(trained, 1), "datasets": {}}
    evaluation = params["evaluate"]
    for dataset in params["scenes"]["datasets"]:
        predictions = work / f"{variant}-{dataset}.parquet"
        reltune("predict", "--backbone", str(model), "--scenes", f"data/scenes/{dataset}", "--out", str(predictions), *predict_flags(params))
        out = work / f"{variant}-{dataset}"
        reltune("evaluate", "--scenes", f"data/scenes/{dataset}/{evaluation['split']}.parquet", "--predictions", str(predictions),
                "--train-vocab", f"data/scenes/{held_in}/vocab.json", "--vocab", f"data/scenes/{dataset}/vocab.json",
                "--out", f"{out}.json", "--per-image", f"{out}.per_image.json", "--ks", evaluation["ks"],
                "--similarity-threshold", str(evaluation["similarity_threshold"]),
                "--graph-constraint", str(evaluation["graph_constraint"]).lower(),
                "--similarity-model", params["similarity"]["model"], "--similarity-sentence", params["similarity"]["sentence"])  # fmt: skip
        metrics = json.loads(Path(f"{out}.json").read_text())
        result["datasets"][dataset] = {key: metrics[key] for key in SHOWN_KEYS} | {"per_image": f"{out}.per_image.json"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{variant}: trained {trained:.0f} s, " + "; ".join(
        f"{dataset} " + " / ".join(f"{values[key]:.2f}" for key in SHOWN_KEYS) for dataset, values in result["datasets"].items()
    ), flush=True)  # fmt: skip
    return result


def differences(results: dict[str, dict], datasets: list[str]) -> list[dict]:
    """Paired mR@20 differences (bootstrap over test images) of every variant pair that ran."""
    rows = []
    pairs = [("replace", "none"), ("extra", "none"), ("extra", "replace")]
    for dataset in datasets:
        for first, second in pairs:
            if first not in results or second not in results:
                continue
            recalls = []
            for variant in (first, second):
                path = results[variant]["datasets"][dataset]["per_image"]
                table = read_per_image(json.loads(Path(path).read_text()), path, PAIRED_K)
                recalls.append(align_per_image([table], [path]))
            estimate = paired_difference(*recalls)
            rows.append({"dataset": dataset, "difference": f"{first} - {second}", "mean": round(estimate.mean, 2),
                         "low": round(estimate.low, 2), "high": round(estimate.high, 2), "verdict": estimate.verdict()})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the balanced selection (training seed: params.yaml)")
    parser.add_argument("--budget-fraction", type=float, default=0.12, help="share of training positives (ART's three rounds: 0.12)")
    parser.add_argument("--substitution", type=float, default=0.25, help="chance per name (replace; extra's copy share 1-(1-p)^2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--work", type=Path, default=None, help="keep models and predictions here (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/name_views.json"))
    args = parser.parse_args()
    params = yaml.safe_load(Path("params.yaml").read_text())
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        tables = training_tables(params, work, args.seed, args.budget_fraction, args.substitution)
        results = {variant: run_variant(params, work, variant, tables, args.substitution) for variant in args.variants}
        rows = differences(results, list(params["scenes"]["datasets"]))
    for row in rows:
        print(f"{row['dataset']}: {row['difference']} mR@{PAIRED_K} {row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] {row['verdict']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"seed": args.seed, "budget_fraction": args.budget_fraction, "substitution": args.substitution,
               "results": results, "differences": rows}  # fmt: skip
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
