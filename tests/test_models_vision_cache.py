"""Vision-feature cache: hits equal a fresh encoder pass (fp16), invalidation, eviction, atomic concurrent writes."""

from __future__ import annotations

import io
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_models_answers_helpers import (  # noqa: F401 (single_torch_thread: autouse fixture)
    TINY_SIZES,
    single_torch_thread,
    tiny_corpus,
    write_tiny_scenes,
)

from reltune.inference.crops import CropLoader
from reltune.inference.generation import GenerationSettings, answer_questions, encode_prompts, generate_batch
from reltune.inference.vision_cache import (
    VisionFeatureStore,
    crop_identity,
    encode_crops,
    open_vision_cache,
    vision_fingerprint,
)


def in_memory_tiny_backbone():
    """The helpers' tiny backbone without saving it (saving costs seconds; nothing here reloads it)."""
    from reltune.models.backbone import Backbone, TinySizes, build_tiny_model, build_tiny_processor, set_trainable
    from reltune.models.tokenizer import IMAGE_TOKEN

    sizes = TinySizes(**TINY_SIZES)
    processor = build_tiny_processor(tiny_corpus(), sizes)
    model = build_tiny_model(len(processor.tokenizer), processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), sizes, 0)
    backbone = Backbone(model, processor, sizes.image_size, "tiny", torch.device("cpu"), torch.float32)
    set_trainable(backbone)
    return backbone


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("vision_cache")
    scene_dir = write_tiny_scenes(root)
    backbone = in_memory_tiny_backbone()
    backbone.model.eval()
    scenes = pd.read_parquet(scene_dir / "train.parquet")
    loader = CropLoader(dict(zip(scenes["image_id"], scenes["image_path"])), str(root / "images"), backbone.image_size)
    keys = [("img0", (2.0, 2.0, 44.0, 36.0)), ("img1", (0.0, 10.0, 44.0, 40.0)), ("img2", (2.0, 2.0, 20.0, 30.0))]
    return {"root": root, "backbone": backbone, "loader": loader, "keys": keys}


def entry_bytes(shape: tuple[int, ...]) -> int:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=np.float16))
    return buffer.getbuffer().nbytes


def test_hit_returns_the_fresh_encoder_output_within_fp16(setup: dict, tmp_path: Path) -> None:
    backbone, loader, keys = setup["backbone"], setup["loader"], setup["keys"]
    fresh = encode_crops(backbone, [loader(key) for key in keys])
    cache = open_vision_cache(backbone, str(tmp_path / "cache"), max_megabytes=10)
    cold = cache.features(keys, loader, loader.identity)
    assert cache.store.stats()["misses"] == 3 and cache.store.stats()["writes"] == 3
    # a second process opening the same directory finds every crop
    other = open_vision_cache(backbone, str(tmp_path / "cache"), max_megabytes=10)
    warm = other.features(keys, loader, loader.identity)
    assert other.store.hits == 3 and other.store.misses == 0 and other.store.writes == 0
    assert warm.shape == fresh.shape == (3, (32 // 8) ** 2 + 1, 64)
    # cold and warm give the same (fp16-rounded) features, so a cold cache answers exactly like a warm one
    assert torch.equal(cold, warm)
    assert torch.equal(warm, fresh.half().float())
    # fp16 rounding: relative error at most 2^-11 (plus the subnormal step near 0)
    assert torch.all((warm - fresh).abs() <= fresh.abs() * 2.0**-11 + 2.0**-24)
    assert (warm - fresh).abs().max() > 0  # fp16 really is stored


def test_cached_features_answer_like_the_vision_encoder(setup: dict) -> None:
    """generate_batch with injected features = generate_batch running the vision encoder itself."""
    backbone, loader, keys = setup["backbone"], setup["loader"], setup["keys"]
    crops = [loader(key) for key in keys]
    prompts = ["Is there a prominent spatial relation between man (subject) and horse (object) in the image?"] * 4
    crop_of_question = [0, 2, 1, 0]
    settings = GenerationSettings(num_beams=3, max_new_tokens=8)
    reference = generate_batch(backbone, crops, crop_of_question, prompts, settings)
    injected = generate_batch(
        backbone, None, crop_of_question, prompts, settings, crop_features=encode_crops(backbone, crops)
    )
    assert list(injected["answer"]) == list(reference["answer"])
    np.testing.assert_allclose(injected["entropy"], reference["entropy"], rtol=1e-6)
    np.testing.assert_allclose(injected["sequence_score"], reference["sequence_score"], rtol=1e-6, atol=1e-7)


def test_prompt_encoding_equals_the_processors_text_part(setup: dict) -> None:
    processor = setup["backbone"].processor
    prompts = ["Is there a prominent spatial relation between man (subject) and horse (object) in the image?", "short"]
    images = [Image.new("RGB", (32, 32))] * 2
    expected = processor(images=images, text=prompts, padding=True, truncation=True, return_tensors="pt")
    encoded = encode_prompts(processor, prompts)
    assert set(encoded) == set(expected) - {"pixel_values"}
    for name, value in encoded.items():
        assert torch.equal(value, expected[name]), name


def test_answers_with_a_warm_cache_equal_a_cold_one(setup: dict, tmp_path: Path) -> None:
    backbone, loader = setup["backbone"], setup["loader"]
    questions = pd.DataFrame(
        {
            "image_id": ["img2", "img0", "img0", "img1"],
            "union_box": [[2.0, 2.0, 20.0, 30.0], [2.0, 2.0, 44.0, 36.0], [2.0, 2.0, 44.0, 36.0], [0.0, 10.0, 44.0, 40.0]],
            "prompt": ["Is there a prominent spatial relation between man (subject) and horse (object) in the image?"] * 4,
        }
    )
    settings = GenerationSettings(num_beams=2, max_new_tokens=6, batch_size=2)
    cold_cache = open_vision_cache(backbone, str(tmp_path), 10)
    cold = answer_questions(backbone, questions, loader, settings, vision_cache=cold_cache)
    warm_cache = open_vision_cache(backbone, str(tmp_path), 10)
    warm = answer_questions(backbone, questions, loader, settings, vision_cache=warm_cache)
    assert cold_cache.store.misses == 3 and warm_cache.store.hits == 3 and warm_cache.store.misses == 0
    pd.testing.assert_frame_equal(cold, warm)


def test_changed_vision_weight_invalidates(setup: dict, tmp_path: Path) -> None:
    backbone, loader, keys = setup["backbone"], setup["loader"], setup["keys"]
    vision = backbone.model.vision_model
    before = vision_fingerprint(vision, backbone.processor.image_processor)
    first = open_vision_cache(backbone, str(tmp_path), 10)
    first.features(keys, loader, loader.identity)
    parameter = vision.embeddings.patch_embedding.weight
    original = parameter.detach().clone()
    try:
        with torch.no_grad():
            parameter[0, 0, 0, 0] += 1e-3
        assert vision_fingerprint(vision, backbone.processor.image_processor) != before
        changed = open_vision_cache(backbone, str(tmp_path), 10)
        assert changed.store.directory != first.store.directory
        features = changed.features(keys, loader, loader.identity)
        assert changed.store.hits == 0 and changed.store.misses == 3
        assert torch.equal(features, encode_crops(backbone, [loader(key) for key in keys]).half().float())
    finally:
        with torch.no_grad():
            parameter.copy_(original)
    assert vision_fingerprint(vision, backbone.processor.image_processor) == before
    # a trainable part outside the vision encoder does not touch the fingerprint
    with torch.no_grad():
        backbone.model.query_tokens += 0.0  # same values
        saved = backbone.model.language_projection.weight.detach().clone()
        backbone.model.language_projection.weight += 1.0
    try:
        assert vision_fingerprint(vision, backbone.processor.image_processor) == before
    finally:
        with torch.no_grad():
            backbone.model.language_projection.weight.copy_(saved)


def test_crop_identity_changes_with_file_box_size_and_blind(tmp_path: Path) -> None:
    image_file = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image_file)
    base = crop_identity(image_file, [0, 0, 4, 4], 32, False)
    assert base == crop_identity(str(image_file), (0.0, 0.0, 4.0, 4.0), 32, False)
    variants = {
        crop_identity(image_file, [0, 0, 4, 4.5], 32, False),
        crop_identity(image_file, [0, 0, 4, 4], 64, False),
        crop_identity(image_file, [0, 0, 4, 4], 32, True),
    }
    assert base not in variants and len(variants) == 3
    stat = image_file.stat()
    os.utime(image_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a regenerated file
    assert crop_identity(image_file, [0, 0, 4, 4], 32, False) != base


def test_eviction_keeps_the_most_recently_used_within_the_cap(tmp_path: Path) -> None:
    size = entry_bytes((4, 8))
    # room for 5 entries; eviction goes down to 90% of the cap, i.e. 4 entries
    store = VisionFeatureStore(tmp_path, "current", max_bytes=5 * size + size // 2)
    times = {}

    def put(name: str, moment: int) -> None:
        store.put(name, np.full((4, 8), moment // 10**9, dtype=np.float32))
        os.utime(store.path_of(name), ns=(moment, moment))
        times[name] = moment

    for moment, name in enumerate(["e0", "e1", "e2", "e3", "e4"], start=1):
        put(name, moment * 10**9)
    assert store.total_bytes() == 5 * size and store.evicted == 0
    # e0 used again (newest now), then e5 overflows the cap: the two oldest unused (e1, e2) go
    assert store.get("e0") is not None
    os.utime(store.path_of("e0"), ns=(6 * 10**9, 6 * 10**9))
    put("e5", 7 * 10**9)
    present = {name for name in times if store.path_of(name).exists()}
    assert present == {"e0", "e3", "e4", "e5"}
    assert store.total_bytes() == 4 * size <= store.max_bytes
    assert store.get("e1") is None and store.evicted == 2
    np.testing.assert_array_equal(store.get("e5"), np.full((4, 8), 7, dtype=np.float16))


def test_stale_fingerprints_are_evicted_first(tmp_path: Path) -> None:
    size = entry_bytes((2, 2))
    old = VisionFeatureStore(tmp_path, "old", max_bytes=100 * size)
    for index in range(3):
        old.put(f"o{index}", np.zeros((2, 2)))
        os.utime(old.path_of(f"o{index}"), ns=(10**12, 10**12))  # newer than anything below
    current = VisionFeatureStore(tmp_path, "new", max_bytes=4 * size)
    for index in range(2):
        current.put(f"n{index}", np.zeros((2, 2)))
        os.utime(current.path_of(f"n{index}"), ns=(index + 1, index + 1))
    # 5 entries > cap 4 -> down to 3 (90% of 4): the stale fingerprint's entries go before older current ones
    assert current.path_of("n0").exists() and current.path_of("n1").exists()
    assert sum(old.path_of(f"o{index}").exists() for index in range(3)) == 1


def _write_and_read(arguments: tuple[str, int, int]) -> list[str]:
    """One worker: repeatedly overwrite shared keys with its id and read them back; report bad reads."""
    directory, worker, rounds = arguments
    store = VisionFeatureStore(directory, "shared", max_bytes=1 << 30)
    problems = []
    for step in range(rounds):
        key = f"crop{step % 3}"
        store.put(key, np.full((64, 64), worker, dtype=np.float32))
        value = store.get(f"crop{(step + 1) % 3}")
        if value is not None and (value.shape != (64, 64) or len(np.unique(value)) != 1):
            problems.append(f"worker {worker} step {step}: torn read {value.shape} {np.unique(value)[:4]}")
    return problems


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.map(_write_and_read, [(str(tmp_path), worker, 150) for worker in range(4)])
    assert [problem for result in results for problem in result] == []
    store = VisionFeatureStore(tmp_path, "shared", max_bytes=1 << 30)
    for index in range(3):
        value = store.get(f"crop{index}")
        assert value is not None and len(np.unique(value)) == 1 and int(value[0, 0]) in range(4)
    assert list(Path(tmp_path).rglob("*.tmp")) == []  # no temporary files left behind


def test_store_rejects_a_non_positive_cap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache cap must be positive"):
        VisionFeatureStore(tmp_path, "x", max_bytes=0)
    assert open_vision_cache(None, "", 10) is None  # '' = off, no model needed


def test_features_beyond_fp16_range_are_not_cached(setup: dict, tmp_path: Path) -> None:
    backbone, loader, keys = setup["backbone"], setup["loader"], setup["keys"]
    layer_norm = backbone.model.vision_model.post_layernorm
    saved = layer_norm.weight.detach().clone()
    try:
        with torch.no_grad():
            layer_norm.weight.mul_(1e6)  # last_hidden_state values now far beyond 65504
        exact = encode_crops(backbone, [loader(key) for key in keys])
        assert exact.abs().max() > 65504
        cache = open_vision_cache(backbone, str(tmp_path), 10)
        features = cache.features(keys, loader, loader.identity)
        assert cache.uncacheable == 3 and cache.store.writes == 0
        assert torch.equal(features, exact)
    finally:
        with torch.no_grad():
            layer_norm.weight.copy_(saved)
