"""Scale of the inference runner (issue 15): peak memory against pool size, and 2 processes against 1.

Writes a synthetic scene set (40 images of coloured rectangles), an instruction
table of N pool positives built row by row in the DESIGN §4 layout (streamed to
parquet, so the benchmark itself stays small), an empty selection, and a tiny
random-init InstructBLIP-T5 built from its config; then runs the real
`reltune score` command in a subprocess and reads its `--timing` JSON.

    # peak RSS of `reltune score` over pools of 10k, 100k and 1M questions (cheap decoding:
    # greedy, 1 new token); --generate-limit 256: the model generates for 256 questions of every
    # 4096-question shard and the others get copies of those beams (BOUNDED), so that a million
    # questions run on 2 CPU cores in minutes; 0 = generate for every question (hours at 1M)
    .venv/bin/python benchmarks/inference_scale.py memory --questions 10000 100000 1000000 --generate-limit 256

    # questions/s of 1 process against 2 accelerate processes (gloo on CPU, one torch thread each),
    # the same questions, alternated --repeats times (best of each)
    .venv/bin/python benchmarks/inference_scale.py processes --questions 2000 --repeats 2

Both print one JSON object per run and a summary line (the memory ratio
1M / 10k, the throughput ratio 2 / 1); `--json FILE` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

LABELS = ["man", "horse", "red car", "tree", "dog", "table", "cup", "shirt"]
PREDICATES = {"on": "spatial", "near": "spatial", "has": "possessive", "wearing": "possessive", "riding": "semantic"}
IMAGES = 40
BOXES = 4
TINY = {"image_size": 32, "patch_size": 8, "vision_layers": 1, "qformer_layers": 1, "text_layers": 1,
        "num_query_tokens": 4, "vocab_size": 400}  # fmt: skip


def write_scenes(root: Path, seed: int = 0) -> Path:
    """IMAGES images with BOXES boxes each, as train and val scene tables + vocab.json."""
    generator = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(IMAGES):
        image = Image.new("RGB", (96, 80), (235, 235, 235))
        draw = ImageDraw.Draw(image)
        boxes = []
        for _ in range(BOXES):
            x1, y1 = int(generator.integers(0, 60)), int(generator.integers(0, 50))
            box = [float(x1), float(y1), float(x1 + generator.integers(10, 36)), float(y1 + generator.integers(10, 30))]
            draw.rectangle(box, fill=tuple(int(value) for value in generator.integers(0, 255, 3)))
            boxes.append(box)
        image.save(root / "images" / f"{index}.png")
        labels = [LABELS[int(value)] for value in generator.integers(0, len(LABELS), BOXES)]
        relations = [{"subj": 0, "obj": 1, "predicate": "on"}]
        rows.append({"image_id": f"img{index}", "image_path": f"{index}.png", "width": 96, "height": 80,
                     "boxes": boxes, "labels": labels, "relations": relations})  # fmt: skip
    scenes = root / "scenes"
    scenes.mkdir(exist_ok=True)
    for split in ("train", "val"):
        pd.DataFrame(rows).to_parquet(scenes / f"{split}.parquet", index=False)
    vocab = {"objects": LABELS, "predicates": list(PREDICATES), "categories": PREDICATES,
             "image_root": str(root / "images")}  # fmt: skip
    (scenes / "vocab.json").write_text(json.dumps(vocab))
    return scenes


def instruction_rows(start: int, count: int, scenes: pd.DataFrame) -> pd.DataFrame:
    """Pool positives start .. start+count: every (image, ordered box pair, predicate) in turn."""
    index = np.arange(start, start + count)
    image = index % IMAGES
    pair = (index // IMAGES) % (BOXES * (BOXES - 1))
    subj, obj = pair // (BOXES - 1), pair % (BOXES - 1)
    obj = obj + (obj >= subj)
    predicates = np.array(list(PREDICATES))[(index // (IMAGES * BOXES * (BOXES - 1))) % len(PREDICATES)]
    boxes = [np.asarray(scenes["boxes"].iloc[i].tolist(), dtype=float) for i in range(IMAGES)]
    labels = [list(scenes["labels"].iloc[i]) for i in range(IMAGES)]
    union = [np.concatenate([np.minimum(boxes[i][s][:2], boxes[i][o][:2]), np.maximum(boxes[i][s][2:], boxes[i][o][2:])]).tolist()
             for i, s, o in zip(image, subj, obj)]  # fmt: skip
    subj_labels = [labels[i][s] for i, s in zip(image, subj)]
    obj_labels = [labels[i][o] for i, o in zip(image, obj)]
    return pd.DataFrame(
        {
            "qid": [f"q{value:08d}" for value in index],
            "image_id": [f"img{value}" for value in image],
            "subj_label": subj_labels,
            "obj_label": obj_labels,
            "union_box": union,
            "kind": "positive",
            "predicate": predicates,
            "prompt": [f"Is there a prominent {PREDICATES[p]} relation between {s} (subject) and {o} (object) in the image?"
                       for p, s, o in zip(predicates, subj_labels, obj_labels)],  # fmt: skip
            "target": [f"Yes, {s} {p} {o}." for p, s, o in zip(predicates, subj_labels, obj_labels)],
        }
    )


def write_instructions(path: Path, questions: int, scenes_dir: Path, chunk: int = 100_000) -> None:
    scenes = pd.read_parquet(scenes_dir / "train.parquet")
    writer = None
    for start in range(0, questions, chunk):
        table = pa.Table.from_pandas(instruction_rows(start, min(chunk, questions - start), scenes), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def write_world(root: Path, questions: int, val_questions: int) -> dict[str, Path]:
    from reltune.models.backbone import build_tiny

    scenes = write_scenes(root)
    write_instructions(root / f"train_{questions}.parquet", questions, scenes)
    write_instructions(root / "val.parquet", val_questions, scenes)
    pd.DataFrame({"qid": pd.Series([], dtype=str)}).to_parquet(root / "selection.parquet", index=False)
    backbone = root / "backbone"
    if not backbone.exists():
        corpus = list(instruction_rows(0, 2000, pd.read_parquet(scenes / "train.parquet"))[["prompt", "target"]].stack())
        build_tiny(corpus, backbone, seed=0, **TINY)
    return {"scenes": scenes, "train": root / f"train_{questions}.parquet", "val": root / "val.parquet",
            "selection": root / "selection.parquet", "backbone": backbone}  # fmt: skip


def score_command(world: dict[str, Path], out: Path, decoding: list[str]) -> list[str]:
    return ["--timing", str(out / "timing.json"), "score", "--backbone", str(world["backbone"]),
            "--instructions", str(world["train"]), "--scenes", str(world["scenes"]),
            "--selection", str(world["selection"]), "--val-instructions", str(world["val"]), "--out", str(out),
            "--strategy", "art", "--pool-cap-factor", "0", "--device", "cpu", *decoding]  # fmt: skip


# `reltune score` with its answerer bounded: the model generates for the first K questions of every
# shard, and the rest of the shard gets copies of those beams (same table sizes). Everything else
# is the real command: streaming the questions, fingerprints, shards, merge, classification,
# similarity, output. Used where generating for every question would take hours on 2 cores.
BOUNDED = """
import sys
import pandas as pd
import reltune.inference.commands as commands
from reltune.cli import main

limit = int(sys.argv[1])
real_answer_with = commands.answer_with

def bounded_answer_with(model, loader, settings):
    real = real_answer_with(model, loader, settings)

    def answer(questions, on_batch):
        beams = real(questions.iloc[:limit].reset_index(drop=True), lambda count: None)
        source = [position % min(limit, len(questions)) for position in range(len(questions))]
        rows = beams.set_index("question").loc[source].reset_index(drop=True)
        rows.insert(0, "question", [position for position in range(len(questions)) for _ in range(settings.num_beams)])
        on_batch(len(questions))
        return rows

    return answer

commands.answer_with = bounded_answer_with
sys.exit(main(sys.argv[2:]))
"""


def run_score(world: dict[str, Path], out: Path, decoding: list[str], processes: int, generate_limit: int = 0) -> dict:
    """Run `reltune score` in `processes` processes; its timing JSON plus the measured wall time.

    `generate_limit` > 0: generate for that many questions per shard only (BOUNDED).
    """
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    if generate_limit:
        launcher = [sys.executable, "-c", BOUNDED, str(generate_limit)]
    elif processes == 1:
        launcher = [sys.executable, "-m", "reltune.cli"]
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(port), "-m", "reltune.cli"]  # fmt: skip
    started = time.perf_counter()
    finished = subprocess.run([*launcher, *score_command(world, out, decoding)], env=env, capture_output=True, text=True)
    if finished.returncode:
        raise SystemExit(f"reltune score failed:\n{finished.stderr[-3000:]}")
    timing = json.loads((out / "timing.json").read_text())
    report = json.loads((out / "score_report.json").read_text())
    return {"processes": processes, "measured_wall_s": round(time.perf_counter() - started, 1), "timing": timing,
            "pool_seconds": report["timing"]["pool_seconds"], "pool_questions": report["pool"]["questions"]}  # fmt: skip


def memory(args: argparse.Namespace, root: Path) -> list[dict]:
    # greedy, one new token: the cheapest real generate call, so that 1M questions run on 2 cores
    decoding = ["--num-beams", "1", "--max-new-tokens", "1", "--batch-size", str(args.batch_size),
                "--shard-size", str(args.shard_size)]  # fmt: skip
    results = []
    for count in args.questions:
        world = write_world(root, count, val_questions=200)
        result = run_score(world, root / f"out_{count}", decoding, processes=1, generate_limit=args.generate_limit)
        result.update(questions=count, decoding=decoding, peak_rss_mib=result["timing"]["peak_rss_mib"],
                      generated_per_shard=args.generate_limit or "all")  # fmt: skip
        shown = ("questions", "generated_per_shard", "peak_rss_mib", "measured_wall_s", "pool_seconds")
        print(json.dumps({key: result[key] for key in shown}), flush=True)
        results.append(result)
        (world["train"]).unlink()
    peaks = [item["peak_rss_mib"] for item in results]
    print(f"peak RSS {peaks} MiB for {args.questions} questions: largest / smallest pool = {peaks[-1] / peaks[0]:.3f}")
    return results


def processes(args: argparse.Namespace, root: Path) -> list[dict]:
    """1 process, then 2, alternately `--repeats` times; the best pool throughput of each (shared machine)."""
    decoding = ["--num-beams", "3", "--max-new-tokens", "8", "--batch-size", "32", "--shard-size", "256"]
    world = write_world(root, args.questions[0], val_questions=64)
    results = []
    for repeat in range(args.repeats):
        for count in (1, 2):
            result = run_score(world, root / f"out_p{count}", decoding, processes=count)
            result["pool_questions_per_second"] = round(result["pool_questions"] / result["pool_seconds"], 2)
            shown = ("processes", "pool_questions", "pool_seconds", "pool_questions_per_second", "measured_wall_s")
            print(json.dumps({key: result[key] for key in shown}), flush=True)
            results.append(result)
    one, two = pd.read_parquet(root / "out_p1" / "scores.parquet"), pd.read_parquet(root / "out_p2" / "scores.parquet")
    pd.testing.assert_frame_equal(one, two, rtol=1e-6)  # same rows, same order
    best = {count: max(item["pool_questions_per_second"] for item in results if item["processes"] == count) for count in (1, 2)}
    print(f"pool scoring throughput (best of {args.repeats}), 2 processes / 1 process = {best[2] / best[1]:.2f} "
          f"({best[2]} / {best[1]} questions/s; identical scores.parquet)")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("memory", "processes"))
    parser.add_argument("--questions", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument(
        "--generate-limit", type=int, default=0,
        help="memory: generate for this many questions per shard, copy their beams to the rest (0 = generate for all)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="processes: alternate 1 and 2 processes this many times")
    parser.add_argument("--workdir", default=None, help="keep the synthetic data here (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.workdir or temporary)
        root.mkdir(parents=True, exist_ok=True)
        results = memory(args, root) if args.mode == "memory" else processes(args, root)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
