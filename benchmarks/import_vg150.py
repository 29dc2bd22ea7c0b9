"""Benchmark: import a full-scale VG150-shaped dataset (no image-file checks).

Generates random but valid VG150 files at the real scale (108,073 images,
~1.2M boxes, ~620k relations; h5 + dicts json + image_data.json) in a
temporary directory, then runs `import_scenes` + `write_import` in a fresh
child process and prints its wall time and peak RSS (resource.getrusage of
the child). Targets: under 60 s and under 4 GiB.

    .venv/bin/python benchmarks/import_vg150.py [--images 108073] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

TARGET_SECONDS = 60.0
TARGET_BYTES = 4 * 1024**3


def generate(directory: Path, n_images: int, seed: int) -> dict:
    """Random VG150-shaped files: about 11.1 boxes and 5.7 relations per image."""
    from reltune.instructions.categories import load_category_map

    rng = np.random.default_rng(seed)
    widths = rng.integers(300, 1281, size=n_images)
    heights = rng.integers(300, 1281, size=n_images)
    box_counts = np.where(rng.random(n_images) < 0.02, 0, rng.poisson(11.3, size=n_images))
    has_relations = (rng.random(n_images) > 0.2) & (box_counts >= 2)
    relation_counts = np.where(has_relations, rng.poisson(7.1, size=n_images).clip(1), 0)
    box_offsets = np.concatenate([[0], np.cumsum(box_counts)])
    relation_offsets = np.concatenate([[0], np.cumsum(relation_counts)])
    n_boxes, n_relations = int(box_offsets[-1]), int(relation_offsets[-1])

    # boxes at the 1024 scale inside the scaled image: integer cx, cy, w, h, w and h >= 1
    box_image = np.repeat(np.arange(n_images), box_counts)
    longer = np.maximum(widths, heights)
    scaled_w = np.floor(widths * 1024 / longer)[box_image]
    scaled_h = np.floor(heights * 1024 / longer)[box_image]
    box_w = np.maximum(1, np.floor(rng.random(n_boxes) * scaled_w / 2))
    box_h = np.maximum(1, np.floor(rng.random(n_boxes) * scaled_h / 2))
    centre_x = np.ceil(box_w / 2) + np.floor(rng.random(n_boxes) * (scaled_w - box_w))
    centre_y = np.ceil(box_h / 2) + np.floor(rng.random(n_boxes) * (scaled_h - box_h))
    boxes = np.stack([centre_x, centre_y, box_w, box_h], axis=1).astype(np.int32)

    relation_image = np.repeat(np.arange(n_images), relation_counts)
    first_of_image = box_offsets[:-1][relation_image]
    count_of_image = box_counts[relation_image]
    subj = first_of_image + (rng.random(n_relations) * count_of_image).astype(np.int64)
    obj = first_of_image + (rng.random(n_relations) * count_of_image).astype(np.int64)

    predicates = sorted(load_category_map("vg150"))
    objects = [f"object {i}" for i in range(1, 151)]
    directory.mkdir(parents=True, exist_ok=True)
    with h5py.File(directory / "VG-SGG-with-attri.h5", "w") as h5:
        h5["labels"] = rng.integers(1, 151, size=(n_boxes, 1))
        h5["boxes_1024"] = boxes
        h5["boxes_512"] = boxes // 2
        h5["img_to_first_box"] = np.where(box_counts > 0, box_offsets[:-1], -1)
        h5["img_to_last_box"] = np.where(box_counts > 0, box_offsets[1:] - 1, -1)
        h5["relationships"] = np.stack([subj, obj], axis=1)
        h5["predicates"] = rng.integers(1, len(predicates) + 1, size=(n_relations, 1))
        h5["img_to_first_rel"] = np.where(relation_counts > 0, relation_offsets[:-1], -1)
        h5["img_to_last_rel"] = np.where(relation_counts > 0, relation_offsets[1:] - 1, -1)
        h5["split"] = np.where(rng.random(n_images) < 0.7, 0, 2)
    dicts = {
        "idx_to_label": {str(i + 1): name for i, name in enumerate(objects)},
        "label_to_idx": {name: i + 1 for i, name in enumerate(objects)},
        "idx_to_predicate": {str(i + 1): name for i, name in enumerate(predicates)},
        "predicate_to_idx": {name: i + 1 for i, name in enumerate(predicates)},
    }
    (directory / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(dicts))
    image_data = [
        {"image_id": i + 1, "width": int(w), "height": int(h), "url": "", "coco_id": None, "flickr_id": None}
        for i, (w, h) in enumerate(zip(widths, heights))
    ]
    (directory / "image_data.json").write_text(json.dumps(image_data))
    return {"images": n_images, "boxes": n_boxes, "relations": n_relations}


def run_import(src: str, out: str) -> None:
    """Child process: only the data package is imported."""
    from reltune.data.importer import import_scenes, write_import

    start = time.perf_counter()
    result = import_scenes("vg150", src, dataset="vg150", check_images=False)
    write_import(result, out)
    elapsed = time.perf_counter() - start
    splits = {split: result.report["splits"][split]["images"] for split in ("train", "val", "test")}
    print(json.dumps({"import_seconds": elapsed, "splits": splits}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=108_073)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="generate into this directory and keep it")
    parser.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_import(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="vg150-bench-") as temporary:
        root = Path(args.keep) if args.keep else Path(temporary)
        start = time.perf_counter()
        sizes = generate(root / "raw", args.images, args.seed)
        print(f"generated {sizes} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(root / "raw"), str(root / "scenes")],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        inner = json.loads(child.stdout.strip().splitlines()[-1])
        peak_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
        print(
            f"VG150 import ({sizes['images']} images, {sizes['boxes']} boxes, {sizes['relations']} relations): "
            f"wall {wall:.1f} s (import+write {inner['import_seconds']:.1f} s, target < {TARGET_SECONDS:.0f} s), "
            f"peak RSS {peak_bytes / 1024**3:.2f} GiB (target < {TARGET_BYTES / 1024**3:.0f} GiB); "
            f"splits {inner['splits']}"
        )
        print(f"time ratio to target {wall / TARGET_SECONDS:.2f}, memory ratio to target {peak_bytes / TARGET_BYTES:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
