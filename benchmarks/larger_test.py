"""Re-test finished runs on larger synthetic test splits, without training again (issue 16, parts 3 and 4).

Part 3 asks every held-in predicate's test recall to reach 0.8 on every seed; the
1000-image test split has about 20 relations of `left of` and `right of`, so one
relation moves their recall by 5 points and a 95% interval spans 40 (`full_runs.py`
prints it). The world draws every split from its own seed (`[seed, split]`), so a
world with more test and held-out images has the same training and validation
images: the runs' models stay valid and only prediction and evaluation are redone.
In a workspace of this pipeline (since the `names` stage), `dvc exp run -S
world.synthetic.test_images=5000` does the same inside DVC; this script re-tests
runs of older commits, whose pretraining and training depended on the test split.

For each run workspace (a finished `dvc repro` with the synthetic world), the
script writes `OUT/<run name>/` as `full_runs.py` reads it: the run's
`params.yaml`, links to the run's `models/` and to the shared larger world
(`OUT/world/data/raw`, `OUT/world/data/scenes`), and the predictions and metrics
of the three evaluations part 3 and 4 read (held in; held out; held out blind),
each made with the run's own `predict` / `evaluate` parameters. The larger world
is built once, from the first run's `world` and `scenes` parameters, and refused
when its training or validation scenes differ from a run's.

Usage (from the repository root; then read with full_runs.py):
    .venv/bin/python benchmarks/larger_test.py --test-images 5000 --ood-images 2000 --out /tmp/larger /work/wt_s0 /work/wt_s1
    .venv/bin/python benchmarks/full_runs.py /tmp/larger/wt_s0 /tmp/larger/wt_s1
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from full_runs import required  # a sibling script: benchmarks/ is on sys.path when run
from reltune.data.world import COUNTS_NAME
from reltune.errors import InputError

# this interpreter's reltune, whatever PATH says (the stages' `python -m reltune.cli` form)
RELTUNE = [sys.executable, "-m", "reltune.cli"]
# the scene files a trained model depends on: the same in the larger world, or its models do not apply
TRAINING_SCENE_FILES = ("train.parquet", "val.parquet", "vocab.json")


def run_params(run: Path) -> dict:
    path = run / "params.yaml"
    if not path.is_file():
        raise InputError(str(path), "missing: is this a run workspace?")
    return yaml.safe_load(path.read_text())


def world_commands(params: dict, test_images: int, ood_images: int) -> list[list[str]]:
    """`reltune data world` and one `data import` per scenes dataset, as dvc.yaml's world / scenes stages.

    Paths are relative, as in a workspace (the scene tables keep image paths relative to it)."""
    (name, world), = params["world"].items()
    commands = [[
        *RELTUNE, "data", "world", "--out", f"data/raw/{name}", "--seed", str(world["seed"]),
        "--train-images", str(world["train_images"]), "--test-images", str(test_images), "--ood-images", str(ood_images),
        "--image-size", str(world["image_size"]), "--pair-probabilities", str(world["pair_probabilities"]),
        "--distractor-probability", str(world["distractor_probability"]),
        "--ood-unseen-object-probability", str(world["ood_unseen_object_probability"]), "--jpeg-quality", str(world["jpeg_quality"]),
    ]]
    scenes = params["scenes"]
    for dataset, item in scenes["datasets"].items():
        commands.append([
            *RELTUNE, "data", "import", "--format", str(item["format"]), "--src", str(item["src"]), "--dataset", dataset,
            "--out", f"data/scenes/{dataset}", "--val-size", str(item["val_size"]), "--held-in-dataset", str(params["held_in"]),
            "--skip-bad", str(scenes["skip_bad"]).lower(), "--check-images", str(scenes["check_images"]).lower(),
            "--box-tolerance", str(scenes["box_tolerance"]),
        ])
    return commands


def evaluation_commands(params: dict) -> list[list[str]]:
    """predict + evaluate of the held-in dataset, the held-out one and the held-out blind control, as dvc.yaml's stages."""
    held_in = str(params["held_in"])
    held_out = next(name for name in params["scenes"]["datasets"] if name != held_in)
    score, evaluate, similarity = params["score"], params["evaluate"], params["similarity"]
    split = str(evaluate["split"])
    commands = []
    for dataset, blind in ((held_in, False), (held_out, False), (held_out, True)):
        name = dataset + ("_blind" if blind else "")
        commands.append([
            *RELTUNE, "predict", "--backbone", "models/round_final", "--scenes", f"data/scenes/{dataset}",
            "--split", split, "--out", f"data/predictions/{name}.parquet", "--pairs", str(evaluate["pairs"]),
            "--blind", str(blind).lower(), "--answers-per-question", str(params["predict"]["answers_per_question"]),
            "--num-beams", str(score["num_beams"]), "--max-new-tokens", str(score["max_new_tokens"]),
            "--min-new-tokens", str(score["min_new_tokens"]), "--length-penalty", str(score["length_penalty"]),
            "--repetition-penalty", str(score["repetition_penalty"]), "--batch-size", str(score["batch_size"]),
            "--shard-size", str(score["shard_size"]), "--vision-cache", "", "--vision-cache-mb", str(score["vision_cache_mb"]),
        ])
        commands.append([
            *RELTUNE, "evaluate", "--scenes", f"data/scenes/{dataset}/{split}.parquet", "--predictions", f"data/predictions/{name}.parquet",
            "--train-vocab", f"data/scenes/{held_in}/vocab.json", "--vocab", f"data/scenes/{dataset}/vocab.json",
            "--out", f"metrics/{name}.json", "--details", f"metrics/details/{name}.json",
            "--per-predicate", f"metrics/per_predicate/{name}.csv", "--per-image", f"metrics/per_image/{name}.json",
            "--ks", str(evaluate["ks"]), "--similarity-threshold", str(evaluate["similarity_threshold"]),
            "--graph-constraint", str(evaluate["graph_constraint"]).lower(),
            "--similarity-model", str(similarity["model"]), "--similarity-sentence", str(similarity["sentence"]),
        ])
    return commands


def check_same_training_scenes(run: Path, world_root: Path, held_in: str) -> None:
    for name in TRAINING_SCENE_FILES:
        theirs, ours = run / "data" / "scenes" / held_in / name, world_root / "data" / "scenes" / held_in / name
        if not filecmp.cmp(required(theirs), ours, shallow=False):
            raise InputError(str(theirs), f"differs from the larger world's {ours}: the run's model was trained on other scenes")


def check_world_size(world_root: Path, test_images: int, ood_images: int) -> None:
    """An existing OUT/world must be the one asked for, not a world of other sizes built before."""
    count_files = sorted((world_root / "data" / "raw").glob(f"*/{COUNTS_NAME}"))
    if len(count_files) != 1:
        raise InputError(str(world_root), f"not a world built by this script (no single data/raw/*/{COUNTS_NAME})")
    images = json.loads(count_files[0].read_text())["images"]
    if (images["test_images"], images["ood_images"]) != (test_images, ood_images):
        raise InputError(str(count_files[0]), f"has {images['test_images']} test / {images['ood_images']} held-out images, not "
                         f"{test_images} / {ood_images}: choose another --out")


def run_commands(commands: list[list[str]], cwd: Path, threads: int) -> None:
    # torch's threads pinned: beside a training run, two threads each made prediction 20x slower here
    environment = {**os.environ, "RELTUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for command in commands:
        print("+ " + shlex.join(command), flush=True)
        finished = subprocess.run(command, cwd=cwd, env=environment)
        if finished.returncode:  # its own one-line error is above; no traceback of this script
            raise SystemExit(f"larger_test.py: reltune {' '.join(command[3:5])} in {cwd} failed with exit status {finished.returncode}")


def retest(run: Path, out: Path, world_root: Path, threads: int) -> Path:
    params = run_params(run)
    check_same_training_scenes(run, world_root, str(params["held_in"]))
    workspace = out / run.resolve().name
    if workspace.exists():
        raise InputError(str(workspace), "exists: remove it or choose another --out")
    partial = workspace.with_name(workspace.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed earlier attempt
    (partial / "data").mkdir(parents=True)
    shutil.copyfile(run / "params.yaml", partial / "params.yaml")
    for link, target in (("models", run.resolve() / "models"), ("data/raw", world_root.resolve() / "data" / "raw"),
                         ("data/scenes", world_root.resolve() / "data" / "scenes")):
        (partial / link).symlink_to(target, target_is_directory=True)
    run_commands(evaluation_commands(params), partial, threads)
    partial.rename(workspace)  # only a finished re-test has the run's name
    return workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run workspaces of the synthetic world")
    parser.add_argument("--test-images", type=int, default=5000)
    parser.add_argument("--ood-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each step (OMP_NUM_THREADS; 1: runs at once share the cores)")
    parser.add_argument("--out", type=Path, required=True, help="OUT/world (built once) and OUT/<run name> per run")
    args = parser.parse_args()
    if min(args.test_images, args.ood_images, args.threads) <= 0:
        parser.error("--test-images, --ood-images and --threads must be positive")
    try:
        world_root = args.out / "world"
        if world_root.is_dir():
            check_world_size(world_root, args.test_images, args.ood_images)
        else:
            commands = world_commands(run_params(args.runs[0]), args.test_images, args.ood_images)  # before any directory
            partial = args.out / "world.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            run_commands(commands, partial, args.threads)
            partial.rename(world_root)
        for run in args.runs:
            print(f"re-tested {run} -> {retest(run, args.out, world_root, args.threads)}", flush=True)
    except InputError as error:
        raise SystemExit(f"larger_test.py: {error}") from None


if __name__ == "__main__":
    main()
