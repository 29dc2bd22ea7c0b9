"""A few coloured-shape scenes for model tests and benchmarks/train_tiny.py (a test helper, not package code).

Small Pillow images with named objects of fixed colour and shape, written
through `reltune.data.scenes.write_scenes` so they are real scene tables
(DESIGN §4). Relations are geometric (left of / right of / above / below);
the real synthetic world is `reltune data world`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from reltune.data.scenes import write_scenes

TOY_CLASSES = {
    "apple": ("red", "circle"),
    "brick": ("red", "square"),
    "box": ("blue", "square"),
    "ball": ("blue", "circle"),
    "leaf": ("green", "triangle"),
    "lemon": ("yellow", "circle"),
}
COLOUR_RGB = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 40), "yellow": (230, 210, 30)}
TOY_PREDICATES = {"left of": "spatial", "right of": "spatial", "above": "spatial", "below": "spatial"}


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[float], colour: str) -> None:
    fill = COLOUR_RGB[colour]
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)


def geometric_predicate(subject_box: list[float], object_box: list[float]) -> str:
    """Dominant-axis direction of the subject's centre from the object's centre."""
    dx = (subject_box[0] + subject_box[2] - object_box[0] - object_box[2]) / 2
    dy = (subject_box[1] + subject_box[3] - object_box[1] - object_box[3]) / 2
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def make_toy_scenes(
    out_dir: str | Path, images: int, seed: int, image_size: int = 96, splits: tuple[str, ...] = ("train",)
) -> Path:
    """Render `images` scenes per split (2-3 non-overlapping objects each) and write scene tables."""
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels_all = sorted(TOY_CLASSES)
    tables = {}
    for split in splits:
        rows = []
        for index in range(images):
            image = Image.new("RGB", (image_size, image_size), (200, 200, 200))
            draw = ImageDraw.Draw(image)
            boxes: list[list[float]] = []
            labels: list[str] = []
            cells = rng.sample(range(9), rng.choice([2, 3]))  # a 3x3 grid keeps objects apart
            cell = image_size / 3
            for position in cells:
                side = rng.uniform(0.5, 0.9) * cell
                x1 = (position % 3) * cell + rng.uniform(0, cell - side)
                y1 = (position // 3) * cell + rng.uniform(0, cell - side)
                box = [round(x1, 1), round(y1, 1), round(x1 + side, 1), round(y1 + side, 1)]
                label = rng.choice(labels_all)
                colour, shape = TOY_CLASSES[label]
                draw_shape(draw, shape, box, colour)
                boxes.append(box)
                labels.append(label)
            relations = [
                {"subj": s, "obj": o, "predicate": geometric_predicate(boxes[s], boxes[o])}
                for s in range(len(boxes))
                for o in range(len(boxes))
                if s != o
            ]
            image_id = f"{split}{index:04d}"
            image.save(image_dir / f"{image_id}.png")
            rows.append(
                {
                    "image_id": image_id,
                    "image_path": f"{image_id}.png",
                    "width": image_size,
                    "height": image_size,
                    "boxes": boxes,
                    "labels": labels,
                    "relations": relations,
                }
            )
        tables[split] = pd.DataFrame(rows)
    vocab = {
        "objects": labels_all,
        "predicates": sorted(TOY_PREDICATES),
        "categories": dict(sorted(TOY_PREDICATES.items())),
        "image_root": str(image_dir.resolve()),
    }
    write_scenes(out_dir, tables, vocab)
    return out_dir


def toy_world_spec() -> dict:
    """Class attributes of the toy scenes in the world-spec shape pretraining reads."""
    classes = [{"name": name, "colour": colour, "shape": shape} for name, (colour, shape) in TOY_CLASSES.items()]
    # toy relations are plain geometry: nothing is drawn on a link between the pair
    predicates = [{"name": name, "glyph": None, "glyph_colour": None} for name in sorted(TOY_PREDICATES)]
    return {"classes": classes, "predicates": {"toy": predicates}}
