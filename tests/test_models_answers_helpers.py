"""Shared fixtures for the answer-area tests: a tiny backbone and a tiny scene set (no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """One torch thread while a module's tests run (restored after).

    Measured: with the 2 cores shared by other test runs, 2 threads made the
    tiny-model tests 3-4x slower than 1 (the threads wait on each other).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_SIZES = {
    "image_size": 32,
    "patch_size": 8,
    "vision_layers": 1,
    "qformer_layers": 1,
    "text_layers": 1,
    "num_query_tokens": 4,
    "vocab_size": 400,
}

LABELS = ("man", "horse", "red car", "tree")
PREDICATES = ("riding", "on", "has", "next to")


def tiny_corpus() -> list[str]:
    """Question / answer strings in the DESIGN §6 format over the tiny labels."""
    texts = []
    for subject in LABELS:
        for obj in LABELS:
            for category in ("spatial", "possessive", "semantic"):
                texts.append(f"Is there a prominent {category} relation between {subject} (subject) and {obj} (object) in the image?")
                texts.append(f"No, there is no prominent {category} relation between {subject} and {obj}.")
            for predicate in PREDICATES:
                texts.append(f"Yes, {subject} {predicate} {obj}.")
    return texts


def tiny_backbone(out_dir: Path, seed: int = 0):
    from reltune.models.backbone import build_tiny

    return build_tiny(tiny_corpus(), out_dir, seed=seed, **TINY_SIZES)


def write_tiny_scenes(root: Path) -> Path:
    """Three images with boxes and relations, written as a DESIGN §4 scene set (train/val/test + vocab)."""
    image_root = root / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    rows = []
    for index, colour in enumerate(colours):
        image = Image.new("RGB", (48, 40), (240, 240, 240))
        draw = ImageDraw.Draw(image)
        draw.rectangle([2, 2, 20, 30], fill=colour)
        draw.ellipse([22, 10, 44, 36], fill=colours[(index + 1) % 3])
        path = f"img{index}.png"
        image.save(image_root / path)
        rows.append(
            {
                "image_id": f"img{index}",
                "image_path": path,
                "width": 48,
                "height": 40,
                "boxes": [[2.0, 2.0, 20.0, 30.0], [22.0, 10.0, 44.0, 36.0], [0.0, 20.0, 30.0, 40.0]],
                "labels": ["man", "horse", "red car"],
                "relations": [
                    {"subj": 0, "obj": 1, "predicate": "riding"},
                    {"subj": 2, "obj": 1, "predicate": "next to"},
                ],
            }
        )
    scene_dir = root / "scenes"
    scene_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    for split in ("train", "val", "test"):
        table.to_parquet(scene_dir / f"{split}.parquet", index=False)
    vocab = {
        "objects": list(LABELS),
        "predicates": list(PREDICATES),
        "categories": {"riding": "semantic", "on": "spatial", "has": "possessive", "next to": "spatial"},
        "image_root": str(image_root),
    }
    (scene_dir / "vocab.json").write_text(json.dumps(vocab))
    return scene_dir


def write_tiny_instructions(scene_dir: Path, out_dir: Path) -> Path:
    """Instruction tables of the tiny scenes, built by the instructions area's own code."""
    from reltune.instructions.build import build_instructions
    from reltune.instructions.stage import write_instruction_table

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((scene_dir / "vocab.json").read_text())
    for split in ("train", "val", "test"):
        scenes = pd.read_parquet(scene_dir / f"{split}.parquet")
        table = build_instructions(scenes, vocab["categories"], dataset="tiny", split=split).table
        write_instruction_table(table, out_dir / f"{split}.parquet")
    return out_dir


def fit_tiny_backbone(backbone, instructions: pd.DataFrame, scene_dir: Path, steps: int = 15, lr: float = 1e-2, seed: int = 0):
    """Teacher-force the tiny model on the given instruction rows so that it answers in the DESIGN format."""
    import torch

    from reltune.models.images import load_image, union_crop

    vocab = json.loads((scene_dir / "vocab.json").read_text())
    scenes = pd.read_parquet(scene_dir / "train.parquet").set_index("image_id")
    crops = [
        union_crop(load_image(vocab["image_root"], scenes.loc[image_id, "image_path"]), box, backbone.image_size)
        for image_id, box in zip(instructions["image_id"], instructions["union_box"])
    ]
    processor, model = backbone.processor, backbone.model
    inputs = processor(images=crops, text=list(instructions["prompt"]), padding=True, return_tensors="pt")
    labels = processor.tokenizer(list(instructions["target"]), padding=True, return_tensors="pt").input_ids
    labels[labels == processor.tokenizer.pad_token_id] = -100
    torch.manual_seed(seed)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return float(loss.detach())


def answering_world(root: Path) -> dict:
    """Scenes, instructions, a briefly tuned tiny backbone and a one-row selection under `root`.

    Forty steps on two positives: enough for "Yes, s p o." answers that differ
    per question, so score and predict have real work. Ten were too few on an
    AMD EPYC CPU (loss 1.59, every answer the two targets run together), where
    other CPUs had passed; twenty then failed on another AMD EPYC (no TP among
    the scores, every predicted score the same), where thirty passed: a fit
    this short must not sit at the edge.
    """
    from reltune.models.backbone import save_backbone

    scene_dir = write_tiny_scenes(root)
    instruction_dir = write_tiny_instructions(scene_dir, root / "instructions")
    backbone = tiny_backbone(root / "untrained")
    train = pd.read_parquet(instruction_dir / "train.parquet")
    fit_tiny_backbone(backbone, train[train["kind"] == "positive"].iloc[:2], scene_dir, steps=40)
    save_backbone(backbone, root / "backbone")
    selection = train.loc[train["kind"] == "positive", ["qid"]].iloc[:1].assign(added_in_round=0, reason="balanced")
    selection.to_parquet(root / "selection.parquet", index=False)
    return {"root": root, "scenes": scene_dir, "instructions": instruction_dir, "backbone": backbone}
