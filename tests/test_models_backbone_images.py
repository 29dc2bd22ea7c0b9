"""Image input: loading, union crops, left/right-consistent augmentation."""

import random

import pytest
from PIL import Image

from reltune.errors import InputError
from reltune.models.images import augment_example, crop_pixels, load_image, swap_left_right, union_crop

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def halves_image():
    """100x50 image: left half red, right half blue, a green square at x 40..60, y 10..30."""
    image = Image.new("RGB", (100, 50), RED)
    image.paste(BLUE, (50, 0, 100, 50))
    image.paste(GREEN, (40, 10, 60, 30))
    return image


def test_load_image_rgb_and_errors(tmp_path):
    Image.new("L", (5, 4), 128).save(tmp_path / "grey.png")
    image = load_image(tmp_path, "grey.png")
    assert image.mode == "RGB" and image.size == (5, 4) and image.getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(InputError, match="missing.jpg.*not found"):
        load_image(tmp_path, "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.jpg.*corrupt"):
        load_image(tmp_path, "bad.jpg")


def test_crop_pixels_widens_to_whole_pixels_and_clips():
    assert crop_pixels([10.4, 20.6, 30.2, 40.0], 100, 50) == (10, 20, 31, 40)
    assert crop_pixels([-5, -3, 120, 60], 100, 50) == (0, 0, 100, 50)
    with pytest.raises(InputError, match="no area"):
        crop_pixels([10, 10, 10, 20], 100, 50)
    with pytest.raises(InputError, match="no area"):
        crop_pixels([200, 10, 250, 20], 100, 50)
    with pytest.raises(InputError, match=r"img7.*4 finite"):
        crop_pixels([1, 2, 3], 100, 50, source="img7")


def test_union_crop_shows_the_box_content_at_the_backbone_size():
    crop = union_crop(halves_image(), [40, 10, 60, 30], 16)
    assert crop.size == (16, 16)
    assert crop.getpixel((8, 8)) == GREEN
    crop = union_crop(halves_image(), [0, 35, 50, 50], 8)  # bottom-left: red only
    assert crop.getpixel((0, 0)) == RED and crop.getpixel((7, 7)) == RED
    crop = union_crop(halves_image(), [30, 35, 70, 50], 8)  # straddles the halves
    assert crop.getpixel((0, 4)) == RED and crop.getpixel((7, 4)) == BLUE


def test_swap_left_right_words():
    assert swap_left_right("Yes, cup left of plate.") == "Yes, cup right of plate."
    assert swap_left_right("Yes, cup right of plate.") == "Yes, cup left of plate."
    assert swap_left_right("Left hand to the right") == "Right hand to the left"
    assert swap_left_right("the leftmost LEFT one") == "the rightmost RIGHT one"
    assert swap_left_right("bright lights, copyright, lefty") == "bright lights, copyright, lefty"
    assert swap_left_right(swap_left_right("a left, b right")) == "a left, b right"


def test_augmentation_mirrors_only_with_swapped_text():
    image = halves_image()
    flips = 0
    for seed in range(40):
        crop, prompt, target = augment_example(
            image, [0, 35, 100, 50], 8, "Is the red left?", "Yes, red left of blue.", random.Random(seed)
        )
        mirrored = crop.getpixel((0, 4)) == BLUE
        assert crop.getpixel((7, 4)) == (RED if mirrored else BLUE)
        if mirrored:
            flips += 1
            assert (prompt, target) == ("Is the red right?", "Yes, red right of blue.")
        else:
            assert (prompt, target) == ("Is the red left?", "Yes, red left of blue.")
    assert 10 < flips < 30  # flip probability 0.5 over 40 seeds


def test_augmentation_is_seeded_and_can_be_disabled():
    image = halves_image()
    first = augment_example(image, [30, 5, 70, 45], 8, "left", "right", random.Random(5))
    again = augment_example(image, [30, 5, 70, 45], 8, "left", "right", random.Random(5))
    assert first[0].tobytes() == again[0].tobytes() and first[1:] == again[1:]
    for seed in range(10):
        crop, prompt, target = augment_example(
            image, [30, 5, 70, 45], 8, "left", "right", random.Random(seed), flip_probability=0.0, box_jitter=0.0
        )
        assert (prompt, target) == ("left", "right")
        assert crop.tobytes() == union_crop(image, [30, 5, 70, 45], 8).tobytes()
