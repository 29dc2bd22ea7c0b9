"""The same training code path under DDP: 2 CPU processes (gloo) via torchrun."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from reltune.data.scenes import read_scenes
from reltune.instructions.build import build_instructions
from reltune.instructions.stage import write_instruction_table
from reltune.models.backbone import build_tiny
from toy_scenes import TOY_PREDICATES, make_toy_scenes
from reltune.models.training import checkpoint_dir_for

SMALL = dict(vocab_size=400, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)


def test_two_process_gloo_training_runs_and_saves_once(tmp_path):
    scenes_dir = make_toy_scenes(tmp_path / "scenes", images=5, seed=8, image_size=48)
    scenes, _ = read_scenes(scenes_dir, "train")
    instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy", split="train").table
    write_instruction_table(instructions, tmp_path / "train.parquet")
    build_tiny(list(instructions["prompt"]) + list(instructions["target"]), tmp_path / "tiny", seed=0, **SMALL)
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "reltune.cli", "train", "--backbone", str(tmp_path / "tiny"),
        "--instructions", str(tmp_path / "train.parquet"), "--scenes", str(scenes_dir), "--out", str(out),
        "--device", "cpu", "--batch-size", "3", "--grad-accum", "2", "--max-steps", "3", "--warmup-steps", "1",
        "--checkpoint-every", "2", "--log-every", "1",
    ]  # fmt: skip
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "2 process(es)" in finished.stderr.replace("\n", " ")
    metadata = json.loads((out / "reltune_backbone.json").read_text())
    assert metadata["training"]["processes"] == 2 and metadata["training"]["steps"] == 3
    assert not checkpoint_dir_for(out).exists()
    initial, trained = load_file(str(tmp_path / "tiny" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not torch.equal(initial["query_tokens"], trained["query_tokens"])
    assert all(torch.equal(initial[n], trained[n]) for n in initial if n.startswith(("vision_model.", "language_model.")))
