"""Instruction-table build at VG150 scale: wall time and peak RSS.

Builds synthetic scene tables in the DESIGN §4 schema shaped like VG150
(108k images, ~620k relations, ~12 boxes per image, predicates drawn with
VG150's `predicate_count` frequencies, a few repeated relations), writes them
to a temporary directory, then times `reltune instructions` on them in a
fresh process and prints elapsed seconds and peak RSS (target: < 60 s and
< 4 GiB).

    .venv/bin/python benchmarks/instructions_vg150.py [--images 108000] [--relations 620000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reltune.instructions.categories import load_category_map

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
if not REFERENCE.is_dir():
    REFERENCE = Path("/work/shared/reference")


def synthetic_scene_split(images: int, relations: int, seed: int, image_offset: int = 0) -> pa.Table:
    """A VG150-shaped scene table built column-wise (no per-row Python objects)."""
    rng = np.random.default_rng(seed)
    reference = json.loads((REFERENCE / "vg150_dicts_no_attributes.json").read_text())
    predicate_names = sorted(reference["predicate_count"])
    predicate_weights = np.array([reference["predicate_count"][p] for p in predicate_names], dtype=float)
    object_names = sorted(reference["object_count"])

    box_counts = 2 + rng.poisson(10.0, size=images)
    relation_counts = rng.multinomial(relations, np.full(images, 1.0 / images))
    relation_counts = np.minimum(relation_counts, box_counts * (box_counts - 1))
    total_boxes, total_relations = int(box_counts.sum()), int(relation_counts.sum())

    # Inside the 1024 x 768 images (reltune.data.scenes checks that).
    corners = rng.uniform(0, [700, 450], size=(total_boxes, 2))
    sizes = rng.uniform(5, 300, size=(total_boxes, 2))
    coordinates = np.concatenate([corners, corners + sizes], axis=1).ravel()
    box_offsets = np.concatenate([[0], np.cumsum(box_counts)]).astype(np.int32)
    boxes = pa.ListArray.from_arrays(
        pa.array(box_offsets),
        pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * total_boxes + 1, 4, dtype=np.int32)), pa.array(coordinates)),
    )
    labels = pa.ListArray.from_arrays(
        pa.array(box_offsets),
        pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, len(object_names), total_boxes).astype(np.int32)), pa.array(object_names)
        ).cast(pa.string()),
    )

    owner = np.repeat(np.arange(images), relation_counts)
    owner_boxes = box_counts[owner]
    subj = rng.integers(0, owner_boxes)
    obj = (subj + rng.integers(1, owner_boxes)) % owner_boxes  # never equal to subj
    predicate = rng.choice(len(predicate_names), size=total_relations, p=predicate_weights / predicate_weights.sum())
    # ~1% exact repeats of the previous relation of the same image (VG has duplicates).
    repeat = np.flatnonzero((rng.random(total_relations) < 0.01)[1:] & (owner[1:] == owner[:-1])) + 1
    subj[repeat], obj[repeat], predicate[repeat] = subj[repeat - 1], obj[repeat - 1], predicate[repeat - 1]
    relation_struct = pa.StructArray.from_arrays(
        [
            pa.array(subj.astype(np.int64)),
            pa.array(obj.astype(np.int64)),
            pa.DictionaryArray.from_arrays(pa.array(predicate.astype(np.int32)), pa.array(predicate_names)).cast(
                pa.string()
            ),
        ],
        names=["subj", "obj", "predicate"],
    )
    relation_offsets = np.concatenate([[0], np.cumsum(relation_counts)]).astype(np.int32)
    relation_lists = pa.ListArray.from_arrays(pa.array(relation_offsets), relation_struct)

    image_ids = [str(image_offset + index + 1) for index in range(images)]
    return pa.table(
        {
            "image_id": pa.array(image_ids),
            "image_path": pa.array([f"VG_100K/{image_id}.jpg" for image_id in image_ids]),
            "width": pa.array(np.full(images, 1024, dtype=np.int64)),
            "height": pa.array(np.full(images, 768, dtype=np.int64)),
            "boxes": boxes,
            "labels": labels,
            "relations": relation_lists,
        }
    )


def write_synthetic_scenes(directory: Path, images: int, relations: int, seed: int = 0) -> None:
    """VG150-sized train/val/test scene tables (val = 5000 images, test ~ 30% like VG150) + vocab.json."""
    directory.mkdir(parents=True, exist_ok=True)
    val_images = 5000
    test_images = int(images * 0.24)
    train_images = images - val_images - test_images
    offset = 0
    for split_seed, (split, count) in enumerate((("train", train_images), ("val", val_images), ("test", test_images))):
        table = synthetic_scene_split(count, round(relations * count / images), seed + split_seed, offset)
        pq.write_table(table, directory / f"{split}.parquet")
        offset += count
    reference = json.loads((REFERENCE / "vg150_dicts_no_attributes.json").read_text())
    vocab = {
        "objects": sorted(reference["object_count"]),
        "predicates": sorted(reference["predicate_count"]),
        "categories": load_category_map("vg150"),
        "image_root": "images",
    }
    (directory / "vocab.json").write_text(json.dumps(vocab))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=108_000)
    parser.add_argument("--relations", type=int, default=620_000)
    parser.add_argument("--negatives", default="counter")
    parser.add_argument("--negatives-per-positive", default="1")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        scenes, out = Path(temporary) / "vg150", Path(temporary) / "instructions"
        write_synthetic_scenes(scenes, args.images, args.relations)
        command = [
            sys.executable, "-m", "reltune.cli", "instructions",
            "--scenes", str(scenes), "--out", str(out), "--dataset", "vg150",
            "--negatives", args.negatives, "--negatives-per-positive", args.negatives_per_positive,
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "RELTUNE_NO_PROGRESS": "1"})
        elapsed = time.perf_counter() - start
        peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # Linux: KiB
        report = json.loads((out / "instructions_report.json").read_text())
        splits = report["splits"]
        rows = {split: counts["positives"] + counts["negatives"] for split, counts in splits.items()}
        relations = sum(counts["relations"] for counts in splits.values())
        print(f"scenes: {args.images} images, {relations} relations; instruction rows per split: {rows}")
        # The CLI imports every area's subcommand module (the model stack too) before running the stage.
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from reltune.cli import build_parser; build_parser()"], check=True)
        startup = time.perf_counter() - start
        print(f"elapsed_s: {elapsed:.1f} (target < 60), of which CLI start-up ~{startup:.1f}")
        print(f"peak_rss_gib: {peak_rss_gib:.2f} (target < 4)")


if __name__ == "__main__":
    main()
