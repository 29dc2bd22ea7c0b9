"""The synthetic scene-graph world (DESIGN §9): its classes, predicates and cues.

Every object class has a distinctive look (shape + colour); a few are
"agents" that can be the subject of activities. Spatial predicates are drawn
as pure geometry (how the two boxes are arranged). Possessive and semantic
predicates add a drawn cue: the pair stands apart by a gap that holds a glyph
(shape + black/white colour, unique per predicate) on a link line joining
the two objects, so the cue covers neither object; the arrangement suits the
relation (e.g. `wearing`: a small object above the subject). Everything that
decides a predicate lies in the union box of the pair, so the union crop
shows it.

Predicate frequencies follow the shape of VG150's `predicate_count`: the
predicate of frequency rank r gets weight = the r-th largest VG150 count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reltune.text import normalise_predicate

# VG150 `predicate_count` (VG-SGG-dicts-with-attri.json), sorted descending.
VG150_PREDICATE_COUNTS_SORTED = (
    712409, 277936, 251756, 146339, 136099, 96589, 66425, 47341, 42722, 41356,
    22596, 18643, 15457, 14185, 13715, 10190, 9903, 9894, 9317, 9145,
    8856, 5213, 4688, 4613, 3810, 3806, 3739, 3624, 3490, 3477,
    3411, 3288, 3095, 3092, 3083, 2945, 2721, 2517, 2380, 2312,
    2253, 2241, 2065, 1996, 1973, 1925, 1914, 1869, 1853, 1740,
)  # fmt: skip

COLOURS = {
    "red": (215, 38, 38),
    "green": (46, 160, 67),
    "blue": (36, 84, 214),
    "yellow": (240, 204, 36),
    "orange": (245, 128, 24),
    "purple": (128, 56, 184),
    "cyan": (28, 196, 208),
    "pink": (240, 110, 180),
    "brown": (128, 78, 36),
}
# cue colours are never object colours, and contrast with the grey background
GLYPH_COLOURS = {"black": (16, 16, 16), "white": (248, 248, 248)}
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "ring", "pentagon", "cross", "crescent")
GLYPHS = ("dot", "square", "triangle", "x", "bar", "ring", "plus")


@dataclass(frozen=True)
class ObjectClass:
    name: str
    shape: str
    colour: str
    agent: bool  # can be the subject of an activity (semantic predicates, wearing)
    held_in: bool  # appears in the held-in (training) set


@dataclass(frozen=True)
class PredicateSpec:
    name: str  # as written in the raw files (Open Images style uses underscores)
    category: str  # spatial | possessive | semantic
    arrangement: str  # geometry of the pair, see world_layout.ARRANGEMENTS
    glyph: str | None  # cue glyph for possessive / semantic predicates
    glyph_colour: str | None
    agent_subject: bool  # the subject must be an agent class
    description: str

    @property
    def normalised(self) -> str:
        return normalise_predicate(self.name)


CLASSES = (
    ObjectClass("robot", "square", "blue", agent=True, held_in=True),
    ObjectClass("frog", "circle", "green", agent=True, held_in=True),
    ObjectClass("bird", "triangle", "yellow", agent=True, held_in=True),
    ObjectClass("bear", "hexagon", "brown", agent=True, held_in=True),
    ObjectClass("ball", "circle", "red", agent=False, held_in=True),
    ObjectClass("box", "square", "orange", agent=False, held_in=True),
    ObjectClass("hat", "triangle", "purple", agent=False, held_in=True),
    ObjectClass("kite", "diamond", "cyan", agent=False, held_in=True),
    ObjectClass("flower", "star", "pink", agent=False, held_in=True),
    ObjectClass("cake", "hexagon", "pink", agent=False, held_in=True),
    ObjectClass("donut", "ring", "orange", agent=False, held_in=True),
    ObjectClass("leaf", "diamond", "green", agent=False, held_in=True),
    # held-out only: two unseen shapes, one unseen shape for an agent, one unseen combination
    ObjectClass("fox", "pentagon", "orange", agent=True, held_in=False),
    ObjectClass("moon", "crescent", "yellow", agent=False, held_in=False),
    ObjectClass("drum", "cross", "blue", agent=False, held_in=False),
    ObjectClass("gem", "diamond", "purple", agent=False, held_in=False),
)


def _spatial(name: str, arrangement: str, description: str) -> PredicateSpec:
    return PredicateSpec(name, "spatial", arrangement, None, None, False, description)


def _cued(
    name: str, category: str, arrangement: str, glyph: str, colour: str, agent: bool, description: str
) -> PredicateSpec:
    return PredicateSpec(name, category, arrangement, glyph, colour, agent, description)


# Held-in predicates in frequency-rank order (rank r gets VG150's r-th largest count).
HELD_IN_PREDICATES = (
    _spatial("on", "touch_subject_top", "the subject rests on top of the object, touching it"),
    _cued("has", "possessive", "linked_small_object", "dot", "white", False,
          "a small object beside the subject, joined by a white link with a white dot"),
    _spatial("in", "inside", "a small subject lies inside the large object"),
    _cued("of", "possessive", "linked_small_subject", "dot", "black", False,
          "a small subject beside the object, joined by a black link with a black dot"),
    _cued("wearing", "possessive", "linked_small_object_top", "square", "white", True,
          "a small object above the (agent) subject, joined by a white link with a white square"),
    _spatial("near", "diagonal", "the two objects are diagonal neighbours with a small gap"),
    _cued("with", "possessive", "linked_side_by_side", "square", "black", False,
          "two objects side by side, joined by a black link with a black square"),
    _spatial("above", "gap_subject_top", "the subject is straight above the object with a clear gap"),
    _cued("holding", "semantic", "linked_small_object", "triangle", "black", True,
          "a small object beside the (agent) subject, joined by a black link with a black triangle"),
    _spatial("behind", "occluded", "the object partly covers the subject"),
    _spatial("below", "gap_subject_bottom", "the subject is straight below the object with a clear gap"),
    _cued("sitting on", "semantic", "linked_subject_top", "x", "white", True,
          "the (agent) subject above the object, joined by a white link with a white X"),
    _spatial("left of", "gap_subject_left", "the subject is left of the object on the same row with a clear gap"),
    _cued("standing on", "semantic", "linked_subject_top", "x", "black", True,
          "the (agent) subject above the object, joined by a black link with a black X"),
    _spatial("right of", "gap_subject_right", "the subject is right of the object on the same row with a clear gap"),
    _cued("part of", "possessive", "linked_small_subject", "triangle", "white", False,
          "a small subject beside the object, joined by a white link with a white triangle"),
    _cued("riding", "semantic", "linked_subject_top", "bar", "white", True,
          "the (agent) subject above the object, joined by a white link with a white bar"),
    _cued("hanging from", "semantic", "linked_subject_bottom", "bar", "black", True,
          "the (agent) subject below the object, joined by a black link with a black bar"),
    _cued("carrying", "semantic", "linked_subject_bottom", "ring", "white", True,
          "the object above the (agent) subject, joined by a white link with a white ring"),
    _cued("eating", "semantic", "linked_small_object", "ring", "black", True,
          "a small object beside the (agent) subject, joined by a black link with a black ring"),
)  # fmt: skip

# Held-out predicates (Open Images style names) in frequency-rank order:
# 3 seen, 4 unseen names drawn like a seen relation, 2 unseen with new cues.
OOD_PREDICATES = (
    _spatial("on", "touch_subject_top", "as held-in `on`"),
    _cued("holds", "semantic", "linked_small_object", "triangle", "black", True, "drawn as held-in `holding`"),
    _spatial("inside_of", "inside", "drawn as held-in `in`"),
    _cued("wears", "possessive", "linked_small_object_top", "square", "white", True, "drawn as held-in `wearing`"),
    _spatial("near", "diagonal", "as held-in `near`"),
    _spatial("under", "gap_subject_bottom", "drawn as held-in `below`"),
    _cued("riding", "semantic", "linked_subject_top", "bar", "white", True, "as held-in `riding`"),
    _cued("throw", "semantic", "linked_diagonal_up", "plus", "white", True,
          "a small object diagonally above the (agent) subject, joined by a white link with a white plus (new cue)"),
    _cued("hug", "semantic", "linked_side_by_side", "plus", "black", True,
          "two objects side by side, joined by a black link with a black plus (new cue)"),
)  # fmt: skip


@dataclass(frozen=True)
class WorldSize:
    """How much world to generate (CLI / params.yaml `world`)."""

    train_images: int = 2800  # 1000 of them validation in params.yaml (ART steers by it, issue 16), 1800 the pool
    test_images: int = 1000  # enough relations per rare predicate for a stable mean recall (issue 16)
    ood_images: int = 400
    image_size: int = 160
    pair_probabilities: tuple[float, float, float, float] = (0.1, 0.25, 0.35, 0.3)  # P(1..4 related pairs)
    distractor_probability: float = 0.5  # chance that an empty grid cell gets a lone object
    ood_unseen_object_probability: float = 0.6  # chance that a held-out pair includes an unseen class
    jpeg_quality: int = 95

    def check(self) -> None:
        from reltune.errors import InputError

        if min(self.train_images, self.test_images, self.ood_images) < 0:
            raise InputError("world", "image counts must be >= 0")
        if self.image_size < 64:
            raise InputError("world", f"image_size must be >= 64 pixels, got {self.image_size}")
        probabilities = np.asarray(self.pair_probabilities, dtype=float)
        if len(probabilities) != 4 or np.any(probabilities < 0) or not np.isclose(probabilities.sum(), 1.0):
            raise InputError("world", f"pair_probabilities must be 4 probabilities summing to 1, got {self.pair_probabilities}")
        for name in ("distractor_probability", "ood_unseen_object_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError("world", f"{name} must be in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError("world", "jpeg_quality must be in 1..100")


def held_in_classes() -> list[ObjectClass]:
    return [c for c in CLASSES if c.held_in]


def class_by_name(name: str) -> ObjectClass:
    return next(c for c in CLASSES if c.name == name)


def vg_shaped_weights(n: int) -> np.ndarray:
    """Relative frequencies of ranks 1..n: VG150's sorted predicate counts, normalised."""
    counts = np.asarray(VG150_PREDICATE_COUNTS_SORTED[:n], dtype=np.float64)
    return counts / counts.sum()


def exact_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, proportional to weights (largest remainder, ties by rank)."""
    ideal = total * weights
    counts = np.floor(ideal).astype(np.int64)
    remainder = total - int(counts.sum())
    order = np.lexsort((np.arange(len(weights)), -(ideal - counts)))
    counts[order[:remainder]] += 1
    return counts


# WorldSize fields that say how many images each split has: world_counts.json, not world_spec.json
SPLIT_SIZE_FIELDS = ("train_images", "test_images", "ood_images")


def world_spec_json(seed: int, size: WorldSize) -> dict:
    """The world's facts for README, pretraining questions and tests (world_spec.json).

    Nothing in it depends on how many images a split has (those are in
    world_counts.json), so a larger test split leaves it, and the pretraining
    stage that reads it, unchanged.
    """
    def predicate_entry(rank: int, spec: PredicateSpec, weights: np.ndarray) -> dict:
        entry = {"name": spec.normalised, "raw_name": spec.name, "rank": rank + 1, "weight": float(weights[rank])}
        entry.update({k: v for k, v in asdict(spec).items() if k != "name"})
        return entry

    held_in_weights = vg_shaped_weights(len(HELD_IN_PREDICATES))
    ood_weights = vg_shaped_weights(len(OOD_PREDICATES))
    held_in_names = {spec.normalised for spec in HELD_IN_PREDICATES}
    return {
        "seed": seed,
        "size": {field: value for field, value in asdict(size).items() if field not in SPLIT_SIZE_FIELDS},
        "image_layout": {
            "grid": "2 x 2 cells; each related pair sits alone in one cell, empty cells may hold one distractor",
            "background": "uniform grey (105..150) with a slight per-image tint",
        },
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "glyph_colours": {name: list(rgb) for name, rgb in GLYPH_COLOURS.items()},
        "shapes": list(SHAPES),
        "glyphs": list(GLYPHS),
        "classes": [asdict(c) for c in CLASSES],
        "predicates": {
            "synthetic": [predicate_entry(rank, spec, held_in_weights) for rank, spec in enumerate(HELD_IN_PREDICATES)],
            "synthetic-ood": [
                {**predicate_entry(rank, spec, ood_weights), "seen_in_held_in": spec.normalised in held_in_names}
                for rank, spec in enumerate(OOD_PREDICATES)
            ],
        },
        "frequency_shape": "rank r has weight proportional to the r-th largest VG150 predicate_count",
    }


def world_counts_json(size: WorldSize, counts: dict[str, dict[str, Any]]) -> dict:
    """How many images each split has and what they hold (world_counts.json): {"images", "counts"}."""
    return {"images": {field: getattr(size, field) for field in SPLIT_SIZE_FIELDS}, "counts": counts}


@dataclass
class WorldObject:
    class_name: str
    box: np.ndarray  # x1, y1, x2, y2 pixels


@dataclass
class WorldRelation:
    subj: int
    obj: int
    predicate: PredicateSpec


@dataclass
class WorldScene:
    """One generated image: objects (in drawing order), relations, background."""

    objects: list[WorldObject] = field(default_factory=list)
    relations: list[WorldRelation] = field(default_factory=list)
    draw_order: list[int] = field(default_factory=list)
    background: tuple[int, int, int] = (128, 128, 128)
