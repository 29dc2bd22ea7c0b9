"""benchmarks/step_phases.py: a workspace's training examples and the timed phases of real training steps."""

import pandas as pd
import pytest
import torch
import yaml

from benchmark_helpers import load_benchmark
from reltune.errors import InputError
from test_models_answers_helpers import single_torch_thread, tiny_backbone, write_tiny_instructions, write_tiny_scenes  # noqa: F401


@pytest.fixture(scope="module")
def phases():
    return load_benchmark("step_phases")


def make_workspace(root):
    """The layout `dvc repro` leaves: params.yaml, data/scenes/<held_in>, data/instructions/<held_in>."""
    (root / "params.yaml").write_text(yaml.safe_dump({"held_in": "tiny"}))
    built = write_tiny_scenes(root / "build")
    (root / "data" / "scenes").mkdir(parents=True)
    scene_dir = built.rename(root / "data" / "scenes" / "tiny")
    write_tiny_instructions(scene_dir, root / "data" / "instructions" / "tiny")
    return root


def test_workspace_inputs_are_every_training_question_with_its_image(phases, tmp_path):
    workspace = make_workspace(tmp_path)
    examples, image_root = phases.workspace_inputs(workspace)
    instructions = pd.read_parquet(workspace / "data" / "instructions" / "tiny" / "train.parquet")
    assert len(examples) == len(instructions) > 0
    assert set(examples["image_path"]) == {"img0.png", "img1.png", "img2.png"}
    assert all((image_root / path).is_file() for path in examples["image_path"])


def test_a_workspace_without_its_tables_is_refused_naming_the_file(phases, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"held_in": "tiny"}))
    with pytest.raises(InputError, match=r"data/scenes/tiny: missing \(run `dvc repro`"):
        phases.workspace_inputs(tmp_path)


@pytest.mark.parametrize("bf16", [False, True])
def test_every_phase_is_timed_and_the_steps_train_the_model(phases, tmp_path, bf16):
    workspace = make_workspace(tmp_path)
    examples, image_root = phases.workspace_inputs(workspace)
    backbone = tiny_backbone(tmp_path / "tiny")
    for parameter in backbone.model.parameters():
        parameter.requires_grad_(True)
    before = {name: value.detach().clone() for name, value in backbone.model.named_parameters()}
    times = phases.phase_times(backbone, examples, image_root, batch_size=4, steps=2, bf16=bf16)
    assert tuple(times) == phases.PHASES
    assert all(value > 0 for value in times.values())
    changed = [name for name, value in backbone.model.named_parameters() if not torch.equal(value, before[name])]
    # the optimizer stepped: the vision encoder, the Q-Former and the language model all moved
    assert any(name.startswith("vision_model.") for name in changed)
    assert any(name.startswith("qformer.") for name in changed)
    assert any(name.startswith("language_model.") for name in changed)
