"""Synthetic world: determinism, real-layout round trip, held-out novelty, VG-shaped frequencies, visible cues."""

import json
from pathlib import Path

import numpy as np
import pytest

from reltune.data.importer import import_scenes
from reltune.data.world import generate_scenes, generate_world
from reltune.data.world_layout import ARRANGEMENTS, cue_position
from reltune.data.world_render import render_scene
from reltune.data.world_spec import (
    CLASSES,
    GLYPH_COLOURS,
    HELD_IN_PREDICATES,
    OOD_PREDICATES,
    VG150_PREDICATE_COUNTS_SORTED,
    WorldSize,
    exact_counts,
    vg_shaped_weights,
)
from reltune.instructions.categories import load_category_map
from test_data_helpers import data_cli

SMALL = WorldSize(train_images=40, test_images=12, ood_images=30, image_size=96)
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vg150_dicts_no_attributes.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "raw"
    generate_world(out, seed=3, size=SMALL)
    return out


def all_files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(world, tmp_path, monkeypatch):
    again = tmp_path / "again"
    args = ["data", "world", "--out", str(again), "--seed", "3", "--train-images", "40", "--test-images", "12",
            "--ood-images", "30", "--image-size", "96"]
    assert data_cli(args, monkeypatch) == 0
    first, second = all_files(world), all_files(again)
    assert first.keys() == second.keys()
    assert len([name for name in first if name.endswith(".jpg")]) == 40 + 12 + 30
    assert all(first[name] == second[name] for name in first)  # h5, json and JPEG bytes
    other = tmp_path / "other"
    generate_world(other, seed=4, size=SMALL)
    third = all_files(other)
    assert third["synthetic/VG_100K/1.jpg"] != first["synthetic/VG_100K/1.jpg"]


def test_larger_test_splits_keep_the_training_and_validation_scenes(world, tmp_path):
    """benchmarks/larger_test.py re-tests trained models on a world with more test images: each split is
    drawn from its own seed, so the training and validation images a model learned from stay the same."""
    larger = tmp_path / "larger"
    generate_world(larger, seed=3, size=WorldSize(train_images=40, test_images=30, ood_images=50, image_size=96))
    before = import_scenes("vg150", world / "synthetic", dataset="synthetic", val_size=5)
    after = import_scenes("vg150", larger / "synthetic", dataset="synthetic", val_size=5)
    for split in ("train", "val"):
        assert after.splits[split].to_pylist() == before.splits[split].to_pylist()
    assert len(after.splits["test"]) == 30 and len(before.splits["test"]) == 12
    train_images = [f"synthetic/VG_100K/{number}.jpg" for number in range(1, 41)]  # the test images follow them
    assert all((larger / name).read_bytes() == (world / name).read_bytes() for name in train_images)
    assert (larger / "synthetic/VG_100K/41.jpg").read_bytes() != (world / "synthetic/VG_100K/41.jpg").read_bytes()
    # the spec pretraining reads is the same file, so DVC keeps the pretraining; the split sizes are apart
    assert (larger / "world_spec.json").read_bytes() == (world / "world_spec.json").read_bytes()
    counts = json.loads((larger / "world_counts.json").read_text())
    assert counts["images"] == {"train_images": 40, "test_images": 30, "ood_images": 50}
    assert counts["counts"]["synthetic"]["test"]["images"] == 30 and counts["counts"]["synthetic-ood"]["test"]["images"] == 50


def test_importers_read_back_the_drawn_boxes_exactly(world):
    held_in = import_scenes("vg150", world / "synthetic", dataset="synthetic", val_size=5)
    scenes = generate_scenes("train", SMALL.train_images, 3, SMALL) + generate_scenes("test", SMALL.test_images, 3, SMALL)
    rows = {row["image_id"]: row for split in ("train", "val", "test") for row in held_in.splits[split].to_pylist()}
    assert len(rows) == 52 and len(held_in.splits["val"]) == 5 and len(held_in.splits["test"]) == 12
    for index, scene in enumerate(scenes):
        row = rows[str(index + 1)]
        assert row["boxes"] == [o.box.tolist() for o in scene.objects]  # exact floats
        assert row["labels"] == [o.class_name for o in scene.objects]
        assert [(r["subj"], r["obj"], r["predicate"]) for r in row["relations"]] == [
            (r.subj, r.obj, r.predicate.normalised) for r in scene.relations
        ]
    assert held_in.report["skipped_bad"]["count"] == 0 and held_in.report["boxes_clipped_to_image"] == 0

    held_out = import_scenes("oi", world / "synthetic-ood", dataset="synthetic-ood", val_size=5)
    assert len(held_out.splits["test"]) == 30 and len(held_out.splits["train"]) == 0
    ood_scenes = generate_scenes("ood", SMALL.ood_images, 3, SMALL)
    first = held_out.splits["test"].to_pylist()[0]
    assert first["boxes"] == [o.box.tolist() for o in ood_scenes[0].objects]


def test_held_out_has_unseen_classes_and_predicates(world):
    held_in = import_scenes("vg150", world / "synthetic", dataset="synthetic", val_size=5)
    held_out = import_scenes("oi", world / "synthetic-ood", dataset="synthetic-ood", val_size=5)
    seen_labels = {label for split in held_in.splits.values() for row in split.to_pylist() for label in row["labels"]}
    ood_rows = held_out.splits["test"].to_pylist()
    ood_labels = {label for row in ood_rows for label in row["labels"]}
    ood_predicates = {r["predicate"] for row in ood_rows for r in row["relations"]}
    assert seen_labels <= set(held_in.vocab["objects"])
    assert len(ood_labels - set(held_in.vocab["objects"])) >= 3
    unseen_predicates = set(held_out.vocab["predicates"]) - set(held_in.vocab["predicates"])
    assert unseen_predicates == {"holds", "inside of", "wears", "under", "throw", "hug"}
    assert len(ood_predicates & unseen_predicates) >= 3
    spec = json.loads((world / "world_spec.json").read_text())
    assert [c["name"] for c in spec["classes"] if not c["held_in"]] == ["fox", "moon", "drum", "gem"]


def test_world_design_facts():
    held_in = [c for c in CLASSES if c.held_in]
    assert len(held_in) == 12 and len({(c.shape, c.colour) for c in CLASSES}) == len(CLASSES)
    assert len(HELD_IN_PREDICATES) == 20
    assert {p.category for p in HELD_IN_PREDICATES} == {"spatial", "possessive", "semantic"}
    # cues: each possessive/semantic predicate has its own glyph, spatial ones none
    cues = [(p.glyph, p.glyph_colour) for p in HELD_IN_PREDICATES if p.category != "spatial"]
    assert None not in {g for g, _ in cues} and len(set(cues)) == len(cues)
    assert all(p.glyph is None for p in HELD_IN_PREDICATES + OOD_PREDICATES if p.category == "spatial")
    new_cues = {(p.glyph, p.glyph_colour) for p in OOD_PREDICATES} - {(p.glyph, p.glyph_colour) for p in HELD_IN_PREDICATES}
    assert new_cues == {("plus", "white"), ("plus", "black")}
    assert all(p.arrangement in ARRANGEMENTS for p in HELD_IN_PREDICATES + OOD_PREDICATES)
    # the category map files agree with the world's definition
    assert load_category_map("synthetic") == {p.normalised: p.category for p in HELD_IN_PREDICATES}
    assert load_category_map("synthetic-ood") == {p.normalised: p.category for p in OOD_PREDICATES}


def test_frequencies_follow_vg150_shape():
    assert exact_counts(10, np.array([0.5, 0.3, 0.2])).tolist() == [5, 3, 2]
    assert exact_counts(7, np.array([0.5, 0.3, 0.2])).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4 -> remainder to 3.5
    weights = vg_shaped_weights(3)
    assert weights == pytest.approx(np.array([712409, 277936, 251756]) / 1242101)
    if REFERENCE.is_file():
        counts = json.loads(REFERENCE.read_text())["predicate_count"].values()
        assert tuple(sorted(counts, reverse=True)) == VG150_PREDICATE_COUNTS_SORTED
    size = WorldSize(train_images=300, image_size=96)
    scenes = generate_scenes("train", 300, 0, size)
    observed = {p.name: 0 for p in HELD_IN_PREDICATES}
    for scene in scenes:
        for relation in scene.relations:
            observed[relation.predicate.name] += 1
    total = sum(observed.values())
    expected = exact_counts(total, vg_shaped_weights(20))
    assert [observed[p.name] for p in HELD_IN_PREDICATES] == expected.tolist()
    assert observed["on"] > 0.35 * total and observed["eating"] >= 1


def _boxes(scene, relation):
    return scene.objects[relation.subj].box, scene.objects[relation.obj].box


GEOMETRY = {  # spatial predicate -> what must hold for (subject box s, object box o)
    "on": lambda s, o: abs(s[3] - o[1]) < 0.2 and s[0] < o[2] and o[0] < s[2],
    "above": lambda s, o: s[3] < o[1] - 1,
    "below": lambda s, o: s[1] > o[3] + 1,
    "under": lambda s, o: s[1] > o[3] + 1,
    "left of": lambda s, o: s[2] < o[0] - 1 and s[1] < o[3] and o[1] < s[3],
    "right of": lambda s, o: s[0] > o[2] + 1 and s[1] < o[3] and o[1] < s[3],
    "in": lambda s, o: s[0] > o[0] and s[1] > o[1] and s[2] < o[2] and s[3] < o[3],
    "inside of": lambda s, o: s[0] > o[0] and s[1] > o[1] and s[2] < o[2] and s[3] < o[3],
    "near": lambda s, o: (s[2] < o[0] or o[2] < s[0]) and (s[3] < o[1] or o[3] < s[1]),
    "behind": lambda s, o: s[0] < o[2] and o[0] < s[2] and s[1] < o[3] and o[1] < s[3],
}


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def _beside(s, o):
    return s[2] < o[0] or o[2] < s[0]


CUED_GEOMETRY = {  # cued predicate -> the arrangement that suits it
    "has": lambda s, o: _beside(s, o) and _area(o) < _area(s),
    "holding": lambda s, o: _beside(s, o) and _area(o) < _area(s),
    "holds": lambda s, o: _beside(s, o) and _area(o) < _area(s),
    "eating": lambda s, o: _beside(s, o) and _area(o) < _area(s),
    "of": lambda s, o: _beside(s, o) and _area(s) < _area(o),
    "part of": lambda s, o: _beside(s, o) and _area(s) < _area(o),
    "wearing": lambda s, o: o[3] < s[1] and _area(o) < _area(s),
    "wears": lambda s, o: o[3] < s[1] and _area(o) < _area(s),
    "with": _beside,
    "hug": _beside,
    "sitting on": lambda s, o: s[3] < o[1],
    "standing on": lambda s, o: s[3] < o[1],
    "riding": lambda s, o: s[3] < o[1],
    "hanging from": lambda s, o: o[3] < s[1],
    "carrying": lambda s, o: o[3] < s[1],
    "throw": lambda s, o: o[3] < s[1] and _beside(s, o),
}


def test_predicates_are_drawn_as_specified_in_the_union_crop():
    size = WorldSize(train_images=120, ood_images=60, image_size=128)
    scenes = generate_scenes("train", 120, 1, size) + generate_scenes("ood", 60, 1, size)
    checked_spatial = checked_cued = 0
    for scene in scenes[:80] + scenes[120:150]:
        pixels = np.asarray(render_scene(scene, size.image_size)).astype(int)
        for relation in scene.relations:
            s, o = _boxes(scene, relation)
            union = np.floor(np.minimum(s, o)[:2]).astype(int), np.ceil(np.maximum(s, o)[2:]).astype(int)
            crop = pixels[union[0][1] : union[1][1], union[0][0] : union[1][0]]
            cue_pixels = {
                name: int(np.sum(np.abs(crop - np.array(rgb)).max(axis=2) <= 2)) for name, rgb in GLYPH_COLOURS.items()
            }
            predicate = relation.predicate
            if predicate.glyph is None:
                assert GEOMETRY[predicate.normalised](s, o), (predicate.name, s, o)
                assert cue_pixels == {"black": 0, "white": 0}  # nothing but geometry tells a spatial predicate
                checked_spatial += 1
            else:
                assert CUED_GEOMETRY[predicate.normalised](s, o), (predicate.name, s, o)
                # the glyph sits in the gap between the boxes, inside the union crop, and is big
                x, y = cue_position(s, o)
                assert not (s[0] < x < s[2] and s[1] < y < s[3]) and not (o[0] < x < o[2] and o[1] < y < o[3])
                assert cue_pixels[predicate.glyph_colour] >= 12, (predicate.name, cue_pixels)
                checked_cued += 1
    assert checked_spatial > 50 and checked_cued > 50
