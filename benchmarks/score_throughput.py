"""Throughput of `reltune score` on the default tiny backbone: questions/s (3 beams) and peak RSS.

Writes a synthetic scene set (random-coloured rectangles, `--images` images with
4 boxes and 3 relations each), its instruction tables (the instructions
area's builder), the default tiny backbone (random weights), a seed selection
of the first 10% of positives, then runs the real `reltune score` stage in
process and prints its score_report.json timing.

    .venv/bin/python benchmarks/score_throughput.py [--images 60 --batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from reltune.cli import main as reltune_main
from reltune.data.scenes import write_scenes
from reltune.instructions.build import build_instructions
from reltune.instructions.stage import write_instruction_table
from reltune.models.backbone import build_tiny

LABELS = ["man", "horse", "red car", "tree", "dog", "table", "cup", "shirt"]
PREDICATES = {"on": "spatial", "near": "spatial", "has": "possessive", "wearing": "possessive", "riding": "semantic", "holding": "semantic"}


def scene_table(images: int, image_root: Path, seed: int) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    rows = []
    for index in range(images):
        image = Image.new("RGB", (96, 80), (235, 235, 235))
        draw = ImageDraw.Draw(image)
        boxes = []
        for _ in range(4):
            x1, y1 = generator.integers(0, 60), generator.integers(0, 50)
            box = [float(x1), float(y1), float(x1 + generator.integers(10, 36)), float(y1 + generator.integers(10, 30))]
            draw.rectangle(box, fill=tuple(int(v) for v in generator.integers(0, 255, 3)))
            boxes.append(box)
        path = f"{index}.png"
        image.save(image_root / path)
        predicates = list(PREDICATES)
        rows.append(
            {
                "image_id": f"img{index}",
                "image_path": path,
                "width": 96,
                "height": 80,
                "boxes": boxes,
                "labels": [LABELS[int(v)] for v in generator.integers(0, len(LABELS), 4)],
                "relations": [
                    {"subj": int(s), "obj": int(o), "predicate": predicates[int(p)]}
                    for s, o, p in ((0, 1, generator.integers(0, 6)), (2, 3, generator.integers(0, 6)), (1, 2, generator.integers(0, 6)))
                ],
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="score_throughput."))
    (root / "images").mkdir()
    vocab = {"objects": LABELS, "predicates": list(PREDICATES), "categories": PREDICATES, "image_root": str(root / "images")}
    splits = {"train": scene_table(args.images, root / "images", 0), "val": scene_table(args.images // 3, root / "images", 1)}
    splits["val"]["image_id"] = "val_" + splits["val"]["image_id"]
    splits["test"] = splits["val"]
    write_scenes(root / "scenes", splits, vocab)
    texts = []
    for split in ("train", "val"):
        table = build_instructions(splits[split], PREDICATES, dataset="bench", split=split).table
        write_instruction_table(table, root / "instructions" / f"{split}.parquet")
        texts += list(table["prompt"]) + list(table["target"])
    build_tiny(texts, root / "backbone", seed=0)
    train = pd.read_parquet(root / "instructions" / "train.parquet")
    positives = train.loc[train["kind"] == "positive", "qid"]
    positives.iloc[: len(positives) // 10].to_frame().to_parquet(root / "selection.parquet", index=False)
    code = reltune_main(
        ["score", "--backbone", str(root / "backbone"), "--instructions", str(root / "instructions" / "train.parquet"),
         "--scenes", str(root / "scenes"), "--selection", str(root / "selection.parquet"),
         "--val-instructions", str(root / "instructions" / "val.parquet"), "--out", str(root / "round_0"),
         "--batch-size", str(args.batch_size), "--vision-cache", ""]
    )
    if code:
        raise SystemExit(code)
    report = json.loads((root / "round_0" / "score_report.json").read_text())
    questions = report["pool"]["questions"] + report["validation"]["questions"]
    print(f"questions: {questions} ({report['pool']['questions']} pool + {report['validation']['questions']} validation), 3 beams")
    print(f"seconds: {report['timing']['total_seconds']}, questions/s: {report['timing']['questions_per_second']}")
    print(f"peak RSS: {report['timing']['peak_rss_mib']} MiB (process, including MiniLM)")


if __name__ == "__main__":
    main()
