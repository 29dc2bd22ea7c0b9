"""Stage `world`: generate the synthetic world in the real raw layouts.

    <out>/synthetic/        VG150 layout (held-in): VG-SGG-with-attri.h5, VG-SGG-dicts-with-attri.json,
                            image_data.json, VG_100K/<image_id>.jpg  (h5 split 0 = train, 2 = test)
    <out>/synthetic-ood/    Open Images PySGG layout (held-out, test only): annotations/vrd-{train,val,test}-anno.json,
                            annotations/categories_dict.json, images/<img_fn>.jpg
    <out>/world_spec.json   classes (shape, colour), predicates (category, arrangement, cue): no split sizes,
                            so pretraining (which reads it) is unchanged by a larger test split
    <out>/world_counts.json images per split, per-split predicate and object counts

The real importers read these (`scenes@synthetic`, `scenes@synthetic-ood`).
Deterministic for a seed: image i of a split draws from its own generator
seeded by (seed, split, i).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from reltune.data import openimages, vg150
from reltune.data.world_layout import box_to_vg_scale, sample_scene
from reltune.data.world_render import jpeg_bytes, render_scene
from reltune.data.world_spec import (
    CLASSES,
    HELD_IN_PREDICATES,
    OOD_PREDICATES,
    PredicateSpec,
    WorldScene,
    WorldSize,
    exact_counts,
    held_in_classes,
    vg_shaped_weights,
    world_counts_json,
    world_spec_json,
)
from reltune.io import atomic_directory
from reltune.progress import log, track

HELD_IN_DIR = "synthetic"
OOD_DIR = "synthetic-ood"
SPEC_NAME = "world_spec.json"
COUNTS_NAME = "world_counts.json"
SPLIT_CODES = {"train": 0, "test": 2, "ood": 7}


def predicate_plan(
    rng: np.random.Generator, n_images: int, pair_probabilities, predicates: tuple[PredicateSpec, ...]
) -> list[list[PredicateSpec]]:
    """Predicates of each image: 1-4 pairs per image; totals exactly VG-shaped, order shuffled."""
    pairs = rng.choice(np.arange(1, 5), size=n_images, p=np.asarray(pair_probabilities, dtype=float))
    counts = exact_counts(int(pairs.sum()), vg_shaped_weights(len(predicates)))
    slots = rng.permutation(np.repeat(np.arange(len(predicates)), counts))
    offsets = np.concatenate([[0], np.cumsum(pairs)])
    return [[predicates[i] for i in slots[offsets[k] : offsets[k + 1]]] for k in range(n_images)]


def generate_scenes(split: str, n_images: int, seed: int, size: WorldSize) -> list[WorldScene]:
    code = SPLIT_CODES[split]
    predicates = OOD_PREDICATES if split == "ood" else HELD_IN_PREDICATES
    plan = predicate_plan(np.random.default_rng([seed, code]), n_images, size.pair_probabilities, predicates)
    unseen = [c for c in CLASSES if not c.held_in] if split == "ood" else []
    return [
        sample_scene(
            np.random.default_rng([seed, code, index]),
            size.image_size,
            plan[index],
            held_in_classes(),
            size.distractor_probability,
            unseen_classes=unseen,
            unseen_probability=size.ood_unseen_object_probability if split == "ood" else 0.0,
        )
        for index in range(n_images)
    ]


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def write_vg150_layout(directory: Path, train: list[WorldScene], test: list[WorldScene], image_size: int, quality: int) -> dict:
    """The held-in world as VG150 files; returns per-split predicate / object counts."""
    classes = held_in_classes()
    label_index = {c.name: i + 1 for i, c in enumerate(classes)}
    predicate_index = {p.name: i + 1 for i, p in enumerate(HELD_IN_PREDICATES)}
    scenes = train + test
    split = np.array([vg150.TRAIN_SPLIT] * len(train) + [vg150.TEST_SPLIT] * len(test), dtype=np.int64)
    labels, boxes, relationships, predicates = [], [], [], []
    first_box, last_box, first_rel, last_rel = [], [], [], []
    image_data = []
    image_dir = directory / vg150.IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for index, scene in enumerate(track(scenes, "world: held-in images")):
        image_id = index + 1
        image_data.append(
            {"image_id": image_id, "width": image_size, "height": image_size, "url": "", "coco_id": None, "flickr_id": None}
        )
        offset = len(labels)
        first_box.append(offset)
        last_box.append(offset + len(scene.objects) - 1)
        for world_object in scene.objects:
            labels.append(label_index[world_object.class_name])
            boxes.append(box_to_vg_scale(world_object.box, image_size))
        first_rel.append(len(relationships))
        last_rel.append(len(relationships) + len(scene.relations) - 1)
        for relation in scene.relations:
            relationships.append((offset + relation.subj, offset + relation.obj))
            predicates.append(predicate_index[relation.predicate.name])
        (image_dir / f"{image_id}.jpg").write_bytes(jpeg_bytes(render_scene(scene, image_size), quality))

    boxes_1024 = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    with h5py.File(directory / vg150.H5_NAME, "w", track_order=False) as h5:
        def put(name: str, array: np.ndarray) -> None:
            h5.create_dataset(name, data=array, track_times=False)

        put("labels", np.array(labels, dtype=np.int64).reshape(-1, 1))
        put("boxes_1024", boxes_1024)
        put("boxes_512", np.rint(boxes_1024 / 2).astype(np.int32))
        put("img_to_first_box", np.array(first_box, dtype=np.int64))
        put("img_to_last_box", np.array(last_box, dtype=np.int64))
        put("relationships", np.array(relationships, dtype=np.int64).reshape(-1, 2))
        put("predicates", np.array(predicates, dtype=np.int64).reshape(-1, 1))
        put("img_to_first_rel", np.array(first_rel, dtype=np.int64))
        put("img_to_last_rel", np.array(last_rel, dtype=np.int64))
        put("split", split)
        put("active_object_mask", np.ones((len(labels), 1), dtype=bool))
        put("attributes", np.zeros((len(labels), 10), dtype=np.int64))

    predicate_count = Counter(relation.predicate.name for scene in scenes for relation in scene.relations)
    object_count = Counter(o.class_name for scene in scenes for o in scene.objects)
    _write_json(
        directory / vg150.DICTS_NAME,
        {
            "idx_to_label": {str(i): name for name, i in label_index.items()},
            "label_to_idx": label_index,
            "idx_to_predicate": {str(i): name for name, i in predicate_index.items()},
            "predicate_to_idx": predicate_index,
            "predicate_count": {p.name: predicate_count.get(p.name, 0) for p in HELD_IN_PREDICATES},
            "object_count": {c.name: object_count.get(c.name, 0) for c in classes},
        },
    )
    _write_json(directory / vg150.IMAGE_DATA_NAME, image_data)
    return {split_name: _counts(split_scenes) for split_name, split_scenes in (("train", train), ("test", test))}


def write_openimages_layout(directory: Path, scenes: list[WorldScene], image_size: int, quality: int) -> dict:
    """The held-out world as Open Images (PySGG) files, all images in the test split."""
    object_names = [c.name for c in CLASSES]
    predicate_names = [p.name for p in OOD_PREDICATES]
    image_dir = directory / openimages.IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for index, scene in enumerate(track(scenes, "world: held-out images")):
        image_name = f"ood_{index + 1:06d}"
        records.append(
            {
                "img_fn": image_name,
                "img_size": [image_size, image_size],
                "bbox": [[float(v) for v in o.box] for o in scene.objects],
                "det_labels": [object_names.index(o.class_name) for o in scene.objects],
                "rel": [[r.subj, r.obj, predicate_names.index(r.predicate.name)] for r in scene.relations],
            }
        )
        (image_dir / f"{image_name}.jpg").write_bytes(jpeg_bytes(render_scene(scene, image_size), quality))
    annotations = directory / openimages.ANNOTATION_DIR
    _write_json(annotations / openimages.CATEGORIES_NAME, {"obj": object_names, "rel": predicate_names})
    for split, split_records in (("train", []), ("val", []), ("test", records)):
        _write_json(openimages.annotation_file(directory, split), split_records)
    return {"test": _counts(scenes)}


def _counts(scenes: list[WorldScene]) -> dict:
    predicates = Counter(relation.predicate.normalised for scene in scenes for relation in scene.relations)
    objects = Counter(o.class_name for scene in scenes for o in scene.objects)
    return {
        "images": len(scenes),
        "objects": sum(objects.values()),
        "relations": sum(predicates.values()),
        "predicate_counts": dict(predicates.most_common()),
        "object_counts": dict(objects.most_common()),
    }


def generate_world(out: str | os.PathLike, seed: int, size: WorldSize = WorldSize()) -> dict:
    """Generate both world datasets, world_spec.json and world_counts.json under `out`; returns the spec.

    Written to a temporary sibling directory and renamed into place, so a crash
    never leaves a half-written world.
    """
    size.check()
    out = Path(out)
    with atomic_directory(out) as temporary:
        train = generate_scenes("train", size.train_images, seed, size)
        test = generate_scenes("test", size.test_images, seed, size)
        ood = generate_scenes("ood", size.ood_images, seed, size)
        counts = {
            HELD_IN_DIR: write_vg150_layout(temporary / HELD_IN_DIR, train, test, size.image_size, size.jpeg_quality),
            OOD_DIR: write_openimages_layout(temporary / OOD_DIR, ood, size.image_size, size.jpeg_quality),
        }
        spec = world_spec_json(seed, size)
        _write_json(temporary / SPEC_NAME, spec)
        _write_json(temporary / COUNTS_NAME, world_counts_json(size, counts))
    log(
        f"world -> {out}: held-in train {size.train_images}, test {size.test_images} images; "
        f"held-out {size.ood_images} images"
    )
    return spec
