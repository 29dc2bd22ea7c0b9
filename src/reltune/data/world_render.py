"""Draw a synthetic scene with Pillow: shapes fill their boxes, cues mark relations."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from reltune.data.world_layout import GLYPH_FRACTION, GRID, cue_position
from reltune.data.world_spec import COLOURS, GLYPH_COLOURS, WorldScene, class_by_name


def _regular_polygon(corners: int, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(corners) * 2 * np.pi / corners
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _crescent(samples: int = 48) -> np.ndarray:
    """Outer circle (r=1 at 0,0) minus an inner circle (r=0.8 at 0.45,0): the left part."""
    inner_centre, inner_radius = np.array([0.45, 0.0]), 0.8
    # intersection of the circles, from x^2+y^2=1 and (x-0.45)^2+y^2=0.64
    x = (1 - inner_radius**2 + inner_centre[0] ** 2) / (2 * inner_centre[0])
    y = np.sqrt(1 - x**2)
    outer_start = np.arctan2(y, x)
    outer = np.linspace(outer_start, 2 * np.pi - outer_start, samples)
    inner_start = np.arctan2(y, x - inner_centre[0])
    inner = np.linspace(2 * np.pi - inner_start, inner_start, samples)
    outer_points = np.stack([np.cos(outer), np.sin(outer)], axis=1)
    inner_points = inner_centre + inner_radius * np.stack([np.cos(inner), np.sin(inner)], axis=1)
    return np.concatenate([outer_points, inner_points])


def _cross(arm: float = 1 / 3) -> np.ndarray:
    a, b = 0.5 - arm / 2, 0.5 + arm / 2
    return np.array([[a, 0], [b, 0], [b, a], [1, a], [1, b], [b, b], [b, 1], [a, 1], [a, b], [0, b], [0, a], [a, a]])


def _fill_unit(points: np.ndarray) -> np.ndarray:
    """Scale a polygon so that its bounding box is exactly the unit square."""
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - low) / (high - low)


@cache
def unit_polygon(shape: str) -> np.ndarray | None:
    """Polygon of a shape in [0,1]^2 touching all four sides; None for ellipse shapes."""
    polygons = {
        "square": np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float),
        "triangle": np.array([[0.5, 0], [1, 1], [0, 1]], dtype=float),
        "diamond": np.array([[0.5, 0], [1, 0.5], [0.5, 1], [0, 0.5]], dtype=float),
        "hexagon": _regular_polygon(6, 0.0),
        "pentagon": _regular_polygon(5, -np.pi / 2),
        "star": _star(),
        "cross": _cross(),
        "crescent": _crescent(),
    }
    if shape in ("circle", "ring"):
        return None
    return _fill_unit(polygons[shape])


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: np.ndarray, colour: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    if shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=colour)
        return
    if shape == "ring":
        width = max(2, int(round(0.28 * min(x2 - x1, y2 - y1))))
        draw.ellipse([x1, y1, x2, y2], outline=colour, width=width)
        return
    unit = unit_polygon(shape)
    points = np.column_stack([x1 + unit[:, 0] * (x2 - x1), y1 + unit[:, 1] * (y2 - y1)])
    draw.polygon([tuple(p) for p in points.tolist()], fill=colour)


def draw_glyph(
    draw: ImageDraw.ImageDraw, glyph: str, centre: np.ndarray, size: float, colour: tuple[int, int, int]
) -> None:
    """A cue glyph centred on `centre`, outlined in the opposite tone for contrast."""
    half = size / 2
    cx, cy = float(centre[0]), float(centre[1])
    box = [cx - half, cy - half, cx + half, cy + half]
    outline = (0, 0, 0) if sum(colour) > 384 else (255, 255, 255)
    thick = max(2, int(round(size / 3.5)))
    if glyph == "dot":
        draw.ellipse(box, fill=colour, outline=outline)
    elif glyph == "square":
        draw.rectangle(box, fill=colour, outline=outline)
    elif glyph == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=colour, outline=outline)
    elif glyph == "ring":
        draw.ellipse(box, outline=colour, width=thick)
    elif glyph == "bar":
        draw.rectangle([cx - half, cy - thick / 2, cx + half, cy + thick / 2], fill=colour, outline=outline)
    elif glyph == "x":
        draw.line([(cx - half, cy - half), (cx + half, cy + half)], fill=colour, width=thick)
        draw.line([(cx - half, cy + half), (cx + half, cy - half)], fill=colour, width=thick)
    elif glyph == "plus":
        draw.line([(cx - half, cy), (cx + half, cy)], fill=colour, width=thick)
        draw.line([(cx, cy - half), (cx, cy + half)], fill=colour, width=thick)
    else:
        raise ValueError(f"unknown glyph {glyph!r}")


def render_scene(scene: WorldScene, image_size: int) -> Image.Image:
    """Links first (visible in the gap between the objects), then objects in order, then glyphs."""
    image = Image.new("RGB", (image_size, image_size), scene.background)
    draw = ImageDraw.Draw(image)
    cell = image_size / GRID
    link_width = max(2, int(round(cell / 32)))
    glyph_size = GLYPH_FRACTION * cell

    def centre(index: int) -> tuple[float, float]:
        box = scene.objects[index].box
        return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2

    cued = [relation for relation in scene.relations if relation.predicate.glyph is not None]
    cue_points = [
        tuple(cue_position(scene.objects[r.subj].box, scene.objects[r.obj].box).tolist()) for r in cued
    ]
    for relation, point in zip(cued, cue_points):
        colour = GLYPH_COLOURS[relation.predicate.glyph_colour]
        draw.line([centre(relation.subj), point, centre(relation.obj)], fill=colour, width=link_width, joint="curve")
    for index in scene.draw_order:
        world_object = scene.objects[index]
        object_class = class_by_name(world_object.class_name)
        draw_shape(draw, object_class.shape, world_object.box, COLOURS[object_class.colour])
    for relation, point in zip(cued, cue_points):
        colour = GLYPH_COLOURS[relation.predicate.glyph_colour]
        draw_glyph(draw, relation.predicate.glyph, np.array(point), glyph_size, colour)
    return image


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    """Encode deterministically (no EXIF, fixed subsampling)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buffer.getvalue()
