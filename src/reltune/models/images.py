"""Image input: load, crop the union box, augment without lying about left/right (DESIGN §6).

The model sees the crop of the union box of subject and object, resized to
the backbone's square input size. Training augmentation may mirror the crop,
but only together with swapping the left/right words of the question and the
answer, so that "cup left of plate" stays true in the mirrored image.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from reltune.errors import InputError


def load_image(image_root: str | Path, image_path: str) -> Image.Image:
    """Open `image_root/image_path` as RGB; InputError if missing or unreadable."""
    full_path = Path(image_root) / image_path
    if not full_path.is_file():
        raise InputError(full_path, "image file not found")
    try:
        with Image.open(full_path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(full_path, f"image is corrupt or unreadable ({error})") from None


def crop_pixels(union_box: Sequence[float], width: int, height: int, source: str = "image") -> tuple[int, int, int, int]:
    """Integer crop rectangle covering `union_box` (x1,y1,x2,y2), clipped to the image.

    The box is widened outward to whole pixels (floor / ceil) so the crop
    always contains both boxes; a box with no area inside the image is an error.
    """
    if len(union_box) != 4 or not all(math.isfinite(float(value)) for value in union_box):
        raise InputError(source, f"union box {list(union_box)} is not 4 finite numbers")
    x1, y1, x2, y2 = (float(value) for value in union_box)
    left = max(0, math.floor(x1))
    top = max(0, math.floor(y1))
    right = min(width, math.ceil(x2))
    bottom = min(height, math.ceil(y2))
    if right <= left or bottom <= top:
        raise InputError(source, f"union box {[x1, y1, x2, y2]} has no area inside the {width}x{height} image")
    return left, top, right, bottom


def union_crop(image: Image.Image, union_box: Sequence[float], size: int, source: str = "image") -> Image.Image:
    """Crop the union box and resize it to `size` x `size` (bicubic, as the BLIP processor)."""
    rectangle = crop_pixels(union_box, image.width, image.height, source)
    return image.crop(rectangle).resize((size, size), Image.Resampling.BICUBIC)


_LEFT_RIGHT = re.compile(r"\b(left|right)(most)?\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap the words left <-> right (and leftmost <-> rightmost), keeping their case.

    'left of' <-> 'right of' and 'to the left' <-> 'to the right' follow from
    the word swap; words that merely contain the letters (e.g. 'bright') are untouched.
    """

    def swap(match: re.Match[str]) -> str:
        word = match.group(1)
        replacement = "right" if word.lower() == "left" else "left"
        if word.isupper():
            replacement = replacement.upper()
        elif word[0].isupper():
            replacement = replacement.capitalize()
        return replacement + (match.group(2) or "")

    return _LEFT_RIGHT.sub(swap, text)


def jitter_box(
    union_box: Sequence[float], width: int, height: int, rng: random.Random, max_fraction: float = 0.05
) -> list[float]:
    """Grow each side of the box outward by up to `max_fraction` of its size (never cuts an object)."""
    x1, y1, x2, y2 = (float(value) for value in union_box)
    box_width, box_height = x2 - x1, y2 - y1
    return [
        max(0.0, x1 - rng.uniform(0, max_fraction) * box_width),
        max(0.0, y1 - rng.uniform(0, max_fraction) * box_height),
        min(float(width), x2 + rng.uniform(0, max_fraction) * box_width),
        min(float(height), y2 + rng.uniform(0, max_fraction) * box_height),
    ]


def augment_example(
    image: Image.Image,
    union_box: Sequence[float],
    size: int,
    prompt: str,
    target: str,
    rng: random.Random,
    flip_probability: float = 0.5,
    box_jitter: float = 0.05,
    source: str = "image",
) -> tuple[Image.Image, str, str]:
    """Training view of one example: jittered union crop, mirrored with swapped left/right words.

    Returns (crop, prompt, target); a mirrored crop always comes with swapped text.
    """
    box = jitter_box(union_box, image.width, image.height, rng, box_jitter) if box_jitter > 0 else list(union_box)
    crop = union_crop(image, box, size, source)
    if rng.random() < flip_probability:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        prompt, target = swap_left_right(prompt), swap_left_right(target)
    return crop, prompt, target
