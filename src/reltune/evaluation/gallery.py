"""Qualitative examples (paper Fig. 9-14): test images with their boxes drawn,
GT relations next to the top predicted ones; predictions that hit a GT
relation and predicates unseen in training are marked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from reltune.evaluation.matching import candidate_pairs
from reltune.evaluation.metrics import training_predicate_set
from reltune.evaluation.tables import (
    OBJECT_BOX,
    SUBJECT_BOX,
    flat_boxes,
    flat_labels,
    ground_truth_table,
    is_detected_mode,
    object_counts,
    prediction_table,
    rank_predictions,
    scene_image_index,
)
from reltune.io import atomic_path
from reltune.progress import log

GALLERY_WIDTH = 480  # pixels; images are scaled to this width for the page
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))
DETECTION_COLOUR = (255, 165, 0)


@dataclass
class GalleryPrediction:
    rank: int
    text: str
    score: float
    hit: bool  # equals a GT relation of the image (same pair, same normalised predicate)
    unseen: bool  # predicate not in the training vocabulary


@dataclass
class GalleryEntry:
    dataset: str
    image_id: str
    image_file: str  # relative to the report directory
    note: str = ""
    ground_truth: list[str] = field(default_factory=list)
    predictions: list[GalleryPrediction] = field(default_factory=list)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def load_scene_image(image_root: str | os.PathLike, image_path: str, width: int, height: int) -> tuple[Image.Image, str]:
    """The RGB image, or a grey canvas of the annotated size with a note saying why."""
    path = Path(image_root) / image_path
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), ""
    except (OSError, ValueError) as error:
        note = f"image not available ({path}: {type(error).__name__}); boxes drawn on a blank canvas"
        log(f"report: {note}")
        return Image.new("RGB", (max(int(width), 1), max(int(height), 1)), (200, 200, 200)), note


def draw_boxes(image: Image.Image, boxes: list[tuple[str, list[float], tuple[int, int, int]]]) -> Image.Image:
    """Scale to GALLERY_WIDTH and draw labelled boxes (caption, x1y1x2y2 in original pixels, colour)."""
    scale = GALLERY_WIDTH / image.width
    canvas = image.resize((GALLERY_WIDTH, max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    for caption, box, colour in boxes:
        x1, y1, x2, y2 = (coordinate * scale for coordinate in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text_box = draw.textbbox((x1 + 2, y1 + 1), caption, font=font)
        draw.rectangle(text_box, fill=colour)
        draw.text((x1 + 2, y1 + 1), caption, fill=(255, 255, 255), font=font)
    return canvas


def choose_images(candidates: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` scene positions drawn without replacement (seeded), in scene order."""
    if count >= len(candidates):
        return np.sort(candidates)
    return np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False))


def gallery_entries(
    dataset: str,
    scenes: pd.DataFrame,
    predictions: pd.DataFrame,
    image_root: str | os.PathLike,
    train_predicates: list[str],
    out_dir: str | os.PathLike,
    images: int,
    top_k: int,
    seed: int,
    scenes_file: str = "scenes",
    predictions_file: str = "predictions",
) -> list[GalleryEntry]:
    """Draw `images` examples of `dataset` into `out_dir/gallery/` and describe them."""
    image_index = scene_image_index(scenes, scenes_file)
    boxes_per_image = object_counts(scenes, scenes_file)
    detected = is_detected_mode(predictions, predictions_file)
    ground_truth = ground_truth_table(scenes, scenes_file, with_boxes=detected)
    kept = rank_predictions(prediction_table(predictions, image_index, boxes_per_image, predictions_file, scenes_file), top_k, detected)
    pairs = candidate_pairs(ground_truth, kept, detected)
    exact_hits = pairs[pairs["predicted"] == pairs["predicate"]]
    # (image, rank) names one kept prediction
    hit_keys = set(zip(ground_truth["image"].to_numpy()[exact_hits["gt_row"].to_numpy()].tolist(), exact_hits["rank"].tolist()))
    seen = training_predicate_set(train_predicates)
    labels, offsets = flat_labels(scenes)
    boxes = flat_boxes(scenes, scenes_file)
    candidates = np.intersect1d(ground_truth["image"].unique(), kept["image"].unique())
    truth_by_image = dict(tuple(ground_truth.groupby("image", sort=False)))
    kept_by_image = dict(tuple(kept.groupby("image", sort=False)))

    entries = []
    for number, position in enumerate(choose_images(candidates, images, seed)):
        row = scenes.iloc[position]
        image, note = load_scene_image(image_root, str(row.get("image_path", "")), row.get("width", 1), row.get("height", 1))
        truth, shown = truth_by_image[position], kept_by_image[position]
        objects = sorted(set(truth["subj"]) | set(truth["obj"]) | (set() if detected else set(shown["subj"]) | set(shown["obj"])))
        drawn = [
            (f"{index} {labels[offsets[position] + index]}", boxes[offsets[position] + index].tolist(), PALETTE[index % len(PALETTE)])
            for index in objects
        ]
        if detected:
            for box_columns, label_column in ((SUBJECT_BOX, "subj_label"), (OBJECT_BOX, "obj_label")):
                for label, box in zip(shown[label_column], shown[list(box_columns)].to_numpy()):
                    drawn.append((f"det {label}", box.tolist(), DETECTION_COLOUR))
        file_name = f"gallery/{dataset}_{number}.png"
        with atomic_path(Path(out_dir) / file_name) as temporary:
            draw_boxes(image, drawn).save(temporary, format="PNG")

        def name(index: int) -> str:
            return f"{labels[offsets[position] + index]} ({index})"

        entry = GalleryEntry(dataset=dataset, image_id=str(image_index[position]), image_file=file_name, note=note)
        entry.ground_truth = [f"{name(s)} {p} {name(o)}" for s, o, p in zip(truth["subj"], truth["obj"], truth["predicate"])]
        for rank, s, o, predicate, score, subj_label, obj_label in zip(
            shown["rank"], shown["subj"], shown["obj"], shown["predicate"], shown["score"],
            shown["subj_label"] if detected else shown["subj"], shown["obj_label"] if detected else shown["obj"],
        ):
            text = f"{subj_label} {predicate} {obj_label}" if detected else f"{name(s)} {predicate} {name(o)}"
            entry.predictions.append(
                GalleryPrediction(
                    rank=int(rank) + 1,
                    text=text,
                    score=float(score),
                    hit=(int(position), int(rank)) in hit_keys,
                    unseen=predicate not in seen,
                )
            )
        entries.append(entry)
    return entries
