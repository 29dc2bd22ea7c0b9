"""On-disk cache of frozen vision-encoder outputs, one fp16 file per crop.

In relation tuning the vision encoder is frozen (`model.train_all: false`), so
its output for a crop is the same in every round's pool scoring, validation
and evaluation. This cache stores that output (`last_hidden_state`, what the
Q-Former reads) per crop.

Layout: `<dir>/<fingerprint>/<key[:2]>/<key>.npy`. The fingerprint hashes the
vision encoder's state dict (names, dtypes, shapes, bytes) and the image
processor's settings, so changed weights or preprocessing land in a fresh
sub-directory (old ones are evicted first). The key hashes the crop identity
(absolute image path, its size and mtime, union box, crop size, blind flag).

Concurrency: entries are written to a temporary file in the same directory
and renamed into place (atomic on POSIX), so a reader sees a whole entry or
none; an unreadable entry is a miss. Eviction may race with another process's
eviction or read; a vanished file is a miss, never an error.

Bound: after writes push the (estimated) total over `max_bytes`, the least
recently used entries (file mtime, refreshed on every hit) are deleted down to
90% of the cap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image

    from reltune.models.backbone import Backbone

ENTRY_SUFFIX = ".npy"
EVICT_TO_FRACTION = 0.9  # evict below the cap so that each eviction is followed by many writes


def vision_fingerprint(vision_model: torch.nn.Module, image_processor: Any = None) -> str:
    """Hex digest of the vision encoder's weights (and preprocessing): changes iff its features may."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vision_model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    if image_processor is not None:
        settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else vars(image_processor)
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def crop_identity(image_file: str | os.PathLike, union_box: Sequence[float], size: int, blind: bool) -> str:
    """The text that names one crop: absolute image path, its size and mtime, box, crop size, blind flag.

    File size and mtime make a regenerated image (same path, new content) a
    different crop; `repr` of the box floats is exact.
    """
    path = Path(image_file).resolve()
    stat = path.stat()
    box = ",".join(repr(float(value)) for value in union_box)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{box}|{int(size)}|{bool(blind)}"


class VisionFeatureStore:
    """fp16 feature arrays on disk, keyed by crop identity, under one encoder fingerprint."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache cap must be positive, got {max_bytes} bytes")
        self.root = Path(directory)
        self.fingerprint = fingerprint
        self.max_bytes = int(max_bytes)
        self.directory = self.root / fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.evicted = 0
        self._estimated_bytes = self.total_bytes()
        if self._estimated_bytes > self.max_bytes:
            self.evict()

    def path_of(self, identity: str) -> Path:
        key = hashlib.sha256(identity.encode()).hexdigest()
        return self.directory / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def get(self, identity: str) -> np.ndarray | None:
        """The stored fp16 array, or None (absent, vanished, or unreadable)."""
        path = self.path_of(identity)
        try:
            data = path.read_bytes()
            array = np.load(io.BytesIO(data), allow_pickle=False)
            os.utime(path)  # mark as recently used for eviction
        except (OSError, ValueError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, identity: str, features: np.ndarray) -> None:
        """Store one crop's features as fp16 (temporary file + rename: atomic for readers)."""
        path = self.path_of(identity)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(features, dtype=np.float16), allow_pickle=False)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(buffer.getvalue())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        self.writes += 1
        self._estimated_bytes += buffer.getbuffer().nbytes
        if self._estimated_bytes > self.max_bytes:
            self.evict()

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(mtime_ns, bytes, path) of every entry under the cache root, all fingerprints."""
        entries = []
        for path in self.root.rglob(f"*{ENTRY_SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        return entries

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> None:
        """Delete entries of other fingerprints first, then least recently used, to 90% of the cap."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * EVICT_TO_FRACTION)
        # stale fingerprints sort before current ones; within each, oldest first
        entries.sort(key=lambda entry: (entry[2].parent.parent == self.directory, entry[0], str(entry[2])))
        for _, size, path in entries:
            if total <= target:
                break
            try:
                path.unlink()
                self.evicted += 1
            except FileNotFoundError:
                pass
            total -= size
        self._estimated_bytes = total

    def stats(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "hits": self.hits,
            "misses": self.misses,
            "writes": self.writes,
            "evicted": self.evicted,
            "bytes": int(self._estimated_bytes),
            "max_bytes": self.max_bytes,
        }


def encode_crops(backbone: Backbone, crops: Sequence[Image.Image]) -> torch.Tensor:
    """Vision encoder output (last_hidden_state) of `crops`, as the Q-Former reads it: (crops, tokens, hidden)."""
    pixel_values = backbone.processor.image_processor(list(crops), return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(backbone.device, backbone.dtype)
    with torch.no_grad():
        return backbone.model.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state


class CachedVisionEncoder:
    """Vision features of crops through a `VisionFeatureStore`; misses are encoded in one forward.

    Features are always the fp16-rounded ones, also for misses, so a cold and a
    warm cache give identical answers (only cache on vs off differ).
    """

    def __init__(self, backbone: Backbone, store: VisionFeatureStore) -> None:
        self.backbone = backbone
        self.store = store
        self.uncacheable = 0

    def features(
        self,
        crop_keys: Sequence[Hashable],
        load_crop: Callable[[Hashable], Image.Image],
        identity_of: Callable[[Hashable], str],
    ) -> torch.Tensor:
        identities = [identity_of(key) for key in crop_keys]
        arrays: list[np.ndarray | None] = [self.store.get(identity) for identity in identities]
        missing = [position for position, array in enumerate(arrays) if array is None]
        if missing:
            encoded = encode_crops(self.backbone, [load_crop(crop_keys[position]) for position in missing])
            exact = encoded.float().cpu().numpy()
            with np.errstate(over="ignore"):  # overflow is detected per crop below
                rounded = exact.astype(np.float16)
            for row, position in enumerate(missing):
                if np.isfinite(rounded[row]).all():
                    self.store.put(identities[position], rounded[row])
                    arrays[position] = rounded[row]
                else:  # beyond fp16's range (|x| > 65504): not cacheable, use the exact features
                    self.uncacheable += 1
                    arrays[position] = exact[row]
        stacked = torch.from_numpy(np.stack([np.asarray(array, dtype=np.float32) for array in arrays]))
        return stacked.to(self.backbone.device, self.backbone.dtype)


def open_vision_cache(backbone: Backbone, directory: str, max_megabytes: float) -> CachedVisionEncoder | None:
    """The cache for `backbone`'s vision encoder under `directory`; None when `directory` is '' (off)."""
    if not directory:
        return None
    fingerprint = vision_fingerprint(backbone.model.vision_model, backbone.processor.image_processor)
    store = VisionFeatureStore(directory, fingerprint, int(max_megabytes * 1024 * 1024))
    return CachedVisionEncoder(backbone, store)
