"""Where things go in a synthetic image: pair arrangements and scene sampling.

An image is a 2 x 2 grid of cells. Each related pair occupies one cell alone,
so the union crop of a pair shows the pair and its cue with few distractors;
objects are at least ~20% of the cell, so at least ~1/4 of the union crop.
All geometry is in pixels; boxes are then snapped to the VG150 1024 grid so
that the drawn boxes equal the boxes the importer reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from reltune.data.world_spec import ObjectClass, PredicateSpec, WorldObject, WorldRelation, WorldScene

GRID = 2
MARGIN = 2.0  # pixels kept free at each cell edge
GLYPH_FRACTION = 0.15  # glyph side as a fraction of the cell
BOX_SCALE = 1024  # VG150 h5 box scale

Box = np.ndarray  # x1, y1, x2, y2


def _size(rng: np.random.Generator, cell: float, low: float, high: float) -> tuple[float, float]:
    """Width, height of an object: a side in [low, high] x cell, aspect ratio 0.8..1.25."""
    side = rng.uniform(low, high) * cell
    aspect = np.sqrt(rng.uniform(0.8, 1.25))
    return side * aspect, side / aspect


def _box(x1: float, y1: float, width: float, height: float) -> Box:
    return np.array([x1, y1, x1 + width, y1 + height], dtype=np.float64)


def _stack(rng, cell, top_size, bottom_size, gap, centre_jitter) -> tuple[Box, Box]:
    """A box straight above another; `gap` 0 = touching."""
    (tw, th), (bw, bh) = top_size, bottom_size
    bottom = _box(0.0, th + gap, bw, bh)
    top_centre = bw / 2 + rng.uniform(-centre_jitter, centre_jitter)
    top = _box(top_centre - tw / 2, 0.0, tw, th)
    return top, bottom


def _row(rng, cell, left_size, right_size, gap, vertical_jitter) -> tuple[Box, Box]:
    (lw, lh), (rw, rh) = left_size, right_size
    left = _box(0.0, 0.0, lw, lh)
    right_centre = lh / 2 + rng.uniform(-vertical_jitter, vertical_jitter)
    right = _box(lw + gap, right_centre - rh / 2, rw, rh)
    return left, right


def touch_subject_top(rng, cell):
    subject, obj = _stack(rng, cell, _size(rng, cell, 0.22, 0.30), _size(rng, cell, 0.32, 0.42), 0.0, 0.12 * cell)
    return subject, obj, True


def gap_subject_top(rng, cell):
    gap = rng.uniform(0.12, 0.18) * cell
    subject, obj = _stack(rng, cell, _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32), gap, 0.05 * cell)
    return subject, obj, True


def gap_subject_bottom(rng, cell):
    gap = rng.uniform(0.12, 0.18) * cell
    obj, subject = _stack(rng, cell, _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32), gap, 0.05 * cell)
    return subject, obj, True


def gap_subject_left(rng, cell):
    gap = rng.uniform(0.12, 0.18) * cell
    subject, obj = _row(rng, cell, _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32), gap, 0.05 * cell)
    return subject, obj, True


def gap_subject_right(rng, cell):
    gap = rng.uniform(0.12, 0.18) * cell
    obj, subject = _row(rng, cell, _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32), gap, 0.05 * cell)
    return subject, obj, True


def inside(rng, cell):
    ow, oh = _size(rng, cell, 0.70, 0.85)
    obj = _box(0.0, 0.0, ow, oh)
    fraction = rng.uniform(0.30, 0.36)
    sw, sh = ow * fraction, oh * fraction
    # a little below the centre, so that it is also inside triangles
    centre_x, centre_y = ow / 2, oh * 0.58
    return _box(centre_x - sw / 2, centre_y - sh / 2, sw, sh), obj, True


def diagonal(rng, cell):
    (sw, sh), (ow, oh) = _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32)
    gap_x, gap_y = rng.uniform(0.03, 0.08, size=2) * cell
    sign_x, sign_y = rng.choice([-1.0, 1.0], size=2)
    obj = _box(0.0, 0.0, ow, oh)
    centre_x = ow / 2 + sign_x * ((sw + ow) / 2 + gap_x)
    centre_y = oh / 2 + sign_y * ((sh + oh) / 2 + gap_y)
    return _box(centre_x - sw / 2, centre_y - sh / 2, sw, sh), obj, True


def occluded(rng, cell):
    (sw, sh), (ow, oh) = _size(rng, cell, 0.30, 0.38), _size(rng, cell, 0.30, 0.38)
    obj = _box(0.0, 0.0, ow, oh)
    centre_x = ow / 2 + rng.choice([-1.0, 1.0]) * rng.uniform(0.40, 0.55) * ow
    centre_y = oh / 2 - rng.uniform(0.30, 0.45) * oh
    return _box(centre_x - sw / 2, centre_y - sh / 2, sw, sh), obj, False  # object drawn over the subject


def _cue_gap(rng, cell) -> float:
    """Gap left between a cued pair: the glyph sits in it and covers neither object."""
    return (GLYPH_FRACTION + rng.uniform(0.04, 0.07)) * cell


def _linked_side(rng, cell) -> tuple[Box, Box]:
    """A big box and a small one beside it (left or right) across a cue gap: (big, small)."""
    big_size, small_size = _size(rng, cell, 0.30, 0.38), _size(rng, cell, 0.20, 0.26)
    big, small = _row(rng, cell, big_size, small_size, _cue_gap(rng, cell), 0.08 * cell)
    if rng.random() < 0.5:  # mirror: the small one on the left
        width = small[2]
        big, small = np.array([width - big[2], big[1], width - big[0], big[3]]), np.array(
            [width - small[2], small[1], width - small[0], small[3]]
        )
    return big, small


def linked_small_object(rng, cell):
    subject, obj = _linked_side(rng, cell)
    return subject, obj, True


def linked_small_subject(rng, cell):
    obj, subject = _linked_side(rng, cell)
    return subject, obj, True


def linked_subject_top(rng, cell):
    top, bottom = _stack(
        rng, cell, _size(rng, cell, 0.22, 0.30), _size(rng, cell, 0.30, 0.38), _cue_gap(rng, cell), 0.08 * cell
    )
    return top, bottom, True


def linked_subject_bottom(rng, cell):
    top, bottom = _stack(
        rng, cell, _size(rng, cell, 0.22, 0.30), _size(rng, cell, 0.30, 0.38), _cue_gap(rng, cell), 0.08 * cell
    )
    return bottom, top, True


def linked_small_object_top(rng, cell):
    top, bottom = _stack(
        rng, cell, _size(rng, cell, 0.20, 0.24), _size(rng, cell, 0.32, 0.38), _cue_gap(rng, cell), 0.05 * cell
    )
    return bottom, top, True


def linked_side_by_side(rng, cell):
    left, right = _row(
        rng, cell, _size(rng, cell, 0.24, 0.32), _size(rng, cell, 0.24, 0.32), _cue_gap(rng, cell), 0.08 * cell
    )
    return (left, right, True) if rng.random() < 0.5 else (right, left, True)


def linked_diagonal_up(rng, cell):
    """A small object diagonally above the subject, across a cue gap in both directions."""
    (sw, sh), (ow, oh) = _size(rng, cell, 0.28, 0.34), _size(rng, cell, 0.20, 0.24)
    gap_x, gap_y = _cue_gap(rng, cell), _cue_gap(rng, cell)
    subject = _box(0.0, oh + gap_y, sw, sh)
    x1 = sw + gap_x if rng.random() < 0.5 else -ow - gap_x
    return subject, _box(x1, 0.0, ow, oh), True


def cue_position(subject: Box, obj: Box) -> np.ndarray:
    """Where a pair's glyph goes: the middle of the gap between the boxes.

    Along an axis where the boxes are apart, the middle of the gap; along an
    axis where they overlap, the middle of the shared range.
    """
    position = np.empty(2)
    for axis in (0, 1):
        low_a, high_a = subject[axis], subject[axis + 2]
        low_b, high_b = obj[axis], obj[axis + 2]
        if high_a <= low_b:
            position[axis] = (high_a + low_b) / 2
        elif high_b <= low_a:
            position[axis] = (high_b + low_a) / 2
        else:
            position[axis] = (max(low_a, low_b) + min(high_a, high_b)) / 2
    return position


ARRANGEMENTS: dict[str, Callable[[np.random.Generator, float], tuple[Box, Box, bool]]] = {
    # spatial: geometry only
    "touch_subject_top": touch_subject_top,
    "gap_subject_top": gap_subject_top,
    "gap_subject_bottom": gap_subject_bottom,
    "gap_subject_left": gap_subject_left,
    "gap_subject_right": gap_subject_right,
    "inside": inside,
    "diagonal": diagonal,
    "occluded": occluded,
    # cued: a gap for the link and glyph
    "linked_small_object": linked_small_object,
    "linked_small_subject": linked_small_subject,
    "linked_subject_top": linked_subject_top,
    "linked_subject_bottom": linked_subject_bottom,
    "linked_small_object_top": linked_small_object_top,
    "linked_side_by_side": linked_side_by_side,
    "linked_diagonal_up": linked_diagonal_up,
}


def snap_box(box: Box, image_size: int) -> Box:
    """Round to the VG150 1024 grid (integer cx, cy, w, h) and back to pixels as the importer does."""
    scale = BOX_SCALE / image_size
    centre = np.rint((box[:2] + box[2:]) / 2 * scale)
    size = np.maximum(np.rint((box[2:] - box[:2]) * scale), 1.0)
    pixels_centre = centre / BOX_SCALE * image_size
    pixels_size = size / BOX_SCALE * image_size
    return np.concatenate([pixels_centre - pixels_size / 2, pixels_centre + pixels_size / 2])


def box_to_vg_scale(box: Box, image_size: int) -> np.ndarray:
    """Pixels -> integer cx, cy, w, h at the 1024 scale (exact for snapped boxes)."""
    scale = BOX_SCALE / image_size
    centre = (box[:2] + box[2:]) / 2 * scale
    size = (box[2:] - box[:2]) * scale
    return np.rint(np.concatenate([centre, size])).astype(np.int64)


def place_in_cell(
    boxes: Sequence[Box], rng: np.random.Generator, cell_origin: tuple[float, float], cell: float
) -> list[Box]:
    """Shift (and if needed shrink) a group of boxes to a random spot inside the cell."""
    stacked = np.stack(boxes)
    union_min = stacked[:, :2].min(axis=0)
    union_max = stacked[:, 2:].max(axis=0)
    extent = union_max - union_min
    room = cell - 2 * MARGIN
    shrink = min(1.0, room / float(extent.max()))
    stacked = (stacked - np.tile(union_min, 2)) * shrink
    extent = extent * shrink
    offset = np.array(cell_origin) + MARGIN + rng.uniform(0.0, 1.0, size=2) * (room - extent)
    return list(stacked + np.tile(offset, 2))


def background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = rng.uniform(105, 150)
    tint = rng.uniform(-8, 8, size=3)
    return tuple(int(round(value)) for value in np.clip(grey + tint, 0, 255))


def sample_scene(
    rng: np.random.Generator,
    image_size: int,
    predicates: Sequence[PredicateSpec],
    classes: Sequence[ObjectClass],
    distractor_probability: float,
    unseen_classes: Sequence[ObjectClass] = (),
    unseen_probability: float = 0.0,
) -> WorldScene:
    """One image: a pair per predicate (each alone in a grid cell), optional lone distractors."""
    cell = image_size / GRID
    cells = [(column * cell, row * cell) for row in range(GRID) for column in range(GRID)]
    order = rng.permutation(len(cells))
    scene = WorldScene(background=background_colour(rng))
    agents = [c for c in classes if c.agent]
    pool = list(classes) + list(unseen_classes)
    for pair_index, predicate in enumerate(predicates):
        subject_class, object_class = _pick_classes(rng, predicate, agents, pool, unseen_classes, unseen_probability)
        subject_box, object_box, subject_on_top = ARRANGEMENTS[predicate.arrangement](rng, cell)
        subject_box, object_box = place_in_cell([subject_box, object_box], rng, cells[order[pair_index]], cell)
        subject_index = len(scene.objects)
        scene.objects.append(WorldObject(subject_class.name, snap_box(subject_box, image_size)))
        scene.objects.append(WorldObject(object_class.name, snap_box(object_box, image_size)))
        scene.relations.append(WorldRelation(subject_index, subject_index + 1, predicate))
        first, second = (subject_index + 1, subject_index) if subject_on_top else (subject_index, subject_index + 1)
        scene.draw_order.extend([first, second])
    for cell_index in order[len(predicates):]:
        if rng.random() < distractor_probability:
            distractor_class = pool[rng.integers(len(pool))]
            (box,) = place_in_cell([_box(0.0, 0.0, *_size(rng, cell, 0.26, 0.36))], rng, cells[cell_index], cell)
            scene.draw_order.append(len(scene.objects))
            scene.objects.append(WorldObject(distractor_class.name, snap_box(box, image_size)))
    return scene


def _pick_classes(rng, predicate, agents, pool, unseen_classes, unseen_probability):
    """Subject and object classes: different classes; agents for activities; maybe an unseen class."""
    subject_choices = agents if predicate.agent_subject else pool
    object_choices = pool
    if unseen_classes and rng.random() < unseen_probability:
        unseen_agents = [c for c in unseen_classes if c.agent]
        if rng.random() < 0.5 and (not predicate.agent_subject or unseen_agents):
            subject_choices = unseen_agents if predicate.agent_subject else list(unseen_classes)
        else:
            object_choices = list(unseen_classes)
    subject_class = subject_choices[rng.integers(len(subject_choices))]
    remaining = [c for c in object_choices if c.name != subject_class.name]
    return subject_class, remaining[rng.integers(len(remaining))]
