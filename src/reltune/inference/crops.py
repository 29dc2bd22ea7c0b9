"""Union-box crops of scene images, the images the questions are asked about (DESIGN §6)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from reltune.errors import InputError
from reltune.inference.vision_cache import crop_identity
from reltune.models.images import load_image, union_crop


class CropLoader:
    """Union-box crops of scene images, keyed by (image_id, union box), resized for the backbone.

    Keeps the last few full images in memory: questions arrive grouped by
    image, so each image file is read about once. `blind=True` replaces every
    image by a constant grey one of the same size (the blind control).
    """

    BLIND_GREY = (128, 128, 128)

    def __init__(
        self, image_paths: dict[str, str], image_root: str, size: int, blind: bool = False, cached_images: int = 4
    ) -> None:
        self.image_paths = image_paths
        self.image_root = image_root
        self.size = size
        self.blind = blind
        self.cached_images = cached_images
        self._images: dict[str, Image.Image] = {}

    def image(self, image_id: str) -> Image.Image:
        if image_id not in self._images:
            if image_id not in self.image_paths:
                raise KeyError(f"image {image_id!r} is not in the scene table")
            image = load_image(self.image_root, self.image_paths[image_id])
            if self.blind:
                image = Image.new("RGB", image.size, self.BLIND_GREY)
            if len(self._images) >= self.cached_images:
                self._images.pop(next(iter(self._images)))
            self._images[image_id] = image
        return self._images[image_id]

    def image_file(self, image_id: str) -> Path:
        if image_id not in self.image_paths:
            raise KeyError(f"image {image_id!r} is not in the scene table")
        return Path(self.image_root) / self.image_paths[image_id]

    def identity(self, key: tuple[str, tuple[float, ...]]) -> str:
        """The vision-cache identity of a crop (image file, union box, crop size, blind flag)."""
        image_id, union_box = key
        image_file = self.image_file(image_id)
        if not image_file.is_file():
            raise InputError(image_file, "image file not found")
        return crop_identity(image_file, union_box, self.size, self.blind)

    def __call__(self, key: tuple[str, tuple[float, ...]]) -> Image.Image:
        image_id, union_box = key
        return union_crop(self.image(image_id), union_box, self.size, source=f"image {image_id}")
