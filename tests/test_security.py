"""Nothing the project reads back may run code (issue 13, class 1).

- a crafted checkpoint (a pickle whose `__reduce__` would create a marker
  file) is refused with one line and nothing runs: as the tensor file named by
  checkpoint.json, as the old single-file `checkpoint.pt`, and through the real
  `reltune train` command;
- checkpoints round-trip every piece of state exactly (python/numpy RNG via
  JSON);
- `src/` contains no unsafe loader (a source scan, itself tested on a snippet).
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from reltune.cli import main
from reltune.errors import InputError
from reltune.models.checkpoints import (
    CHECKPOINT_FILE,
    checkpoint_dir_for,
    load_checkpoint,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

SRC = Path(__file__).resolve().parents[1] / "src"


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file appears only if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _fake_state(step: int = 2) -> dict:
    weights = {"layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    return {
        "identity": {"settings": "abc", "processes": 1},
        "step": step,
        "trainable": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": [rng_state()],
        "validation": [{"epoch": 1, "mean_recall": 0.25}],
        "best": None,
    }


def _write_header_for(weights: Path, step: int = 2) -> Path:
    """A well-formed checkpoint.json naming `weights` with its true SHA-256 (what an attacker can write)."""
    header = {
        "format": 1,
        "identity": {"settings": "abc"},
        "step": step,
        "weights": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "rng": [],
        "state": {},
    }
    path = weights.parent / CHECKPOINT_FILE
    path.write_text(json.dumps(header))
    return path


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    # Guard for the tests below: the marker appears when the payload is unpickled the unsafe way.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(CreatesMarker(control)))
    assert control.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_tensor_file_is_refused_and_nothing_runs(tmp_path, writer):
    marker = tmp_path / "marker"
    directory = tmp_path / "out.ckpt"
    directory.mkdir()
    weights = directory / "checkpoint-00000002.pt"
    payload = {"trainable": CreatesMarker(marker), "optimizer": {}, "scheduler": {}, "rng": []}
    if writer == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    header = _write_header_for(weights)
    with pytest.raises(InputError, match="refused checkpoint: not a plain tensor file") as error:
        load_checkpoint(header)
    assert "\n" not in str(error.value) and str(weights) in str(error.value)
    assert not marker.exists()


def test_old_pickled_checkpoint_is_refused_unread(tmp_path):
    marker = tmp_path / "marker"
    directory = tmp_path / "out.ckpt"
    directory.mkdir()
    torch.save({"step": 2, "x": CreatesMarker(marker)}, directory / "checkpoint.pt")
    with pytest.raises(InputError, match="old pickled format is not read"):
        load_checkpoint(directory / CHECKPOINT_FILE)
    assert not marker.exists()


def test_checkpoint_json_cannot_point_elsewhere_or_mismatch(tmp_path):
    directory = tmp_path / "out.ckpt"
    save_checkpoint(directory / CHECKPOINT_FILE, _fake_state())
    header_path = directory / CHECKPOINT_FILE
    header = json.loads(header_path.read_text())
    for bad_name in ("../evil.pt", "/etc/passwd", "checkpoint-1.pt"):
        header_path.write_text(json.dumps({**header, "weights": bad_name}))
        with pytest.raises(InputError, match="must be named checkpoint-<8 digits>.pt"):
            load_checkpoint(header_path)
    header_path.write_text(json.dumps({**header, "weights_sha256": "0" * 64}))
    with pytest.raises(InputError, match="do not match the SHA-256"):
        load_checkpoint(header_path)
    header_path.write_text(json.dumps({**header, "step": 0}))
    with pytest.raises(InputError, match="step must be a positive integer"):
        load_checkpoint(header_path)
    header_path.write_text("[" * 100_000)
    with pytest.raises(InputError, match="unreadable checkpoint"):
        load_checkpoint(header_path)


def test_checkpoint_round_trip_keeps_every_state_exactly(tmp_path):
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    np.random.standard_normal()  # numpy keeps a cached gaussian: it must survive too
    state = _fake_state(step=3)
    expected = (random.random(), np.random.standard_normal(), np.random.random(), torch.rand(3))
    path = tmp_path / "run.ckpt" / CHECKPOINT_FILE
    save_checkpoint(path, state)
    save_checkpoint(path, {**state, "step": 4})  # the older tensor file is removed
    assert {p.name for p in path.parent.iterdir()} == {CHECKPOINT_FILE, "checkpoint-00000004.pt"}
    loaded = load_checkpoint(path)
    assert loaded["step"] == 4 and loaded["identity"] == state["identity"]
    assert loaded["validation"] == state["validation"] and loaded["best"] is None
    assert torch.equal(loaded["trainable"]["layer.weight"], state["trainable"]["layer.weight"])
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(loaded["rng"][0], path)
    again = (random.random(), np.random.standard_normal(), np.random.random(), torch.rand(3))
    assert again[:3] == expected[:3] and torch.equal(again[3], expected[3])
    with pytest.raises(InputError, match="malformed RNG state"):
        set_rng_state({**loaded["rng"][0], "numpy": {**loaded["rng"][0]["numpy"], "keys": [1, 2]}}, path)


def test_restore_refuses_a_checkpoint_that_does_not_fit_the_model(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    good = {
        "step": 2, "trainable": {name: p.detach().clone() for name, p in model.named_parameters()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": [rng_state()],
        "validation": [{"epoch": 1, "mean_recall": 0.5}],
    }  # fmt: skip
    assert restore_checkpoint(good, model, optimizer, scheduler, 0, 5, "ckpt") == 2
    bad_cases = [
        ({"trainable": {"weight": torch.zeros(2, 3)}}, "not the trainable parameters"),
        ({"trainable": {**good["trainable"], "bias": torch.zeros(5)}}, "wrong shape, e.g. bias"),
        ({"step": 5}, "step 5 is not before the last step 5"),
        ({"rng": []}, "no RNG state for process 0"),
        ({"validation": [{"epoch": "1", "mean_recall": 0.5}]}, r"\[validation\[0\]\]"),
        ({"optimizer": {"state": {}, "param_groups": []}}, "does not fit this run"),
    ]
    for change, message in bad_cases:
        with pytest.raises(InputError, match=message):
            restore_checkpoint({**good, **change}, model, optimizer, scheduler, 0, 5, "ckpt")


# ---------------------------------------------------------------- through the real command


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from reltune.instructions.build import build_instructions
    from reltune.instructions.stage import write_instruction_table
    from reltune.data.scenes import read_scenes
    from reltune.models.backbone import build_tiny
    from toy_scenes import TOY_PREDICATES, make_toy_scenes

    root = tmp_path_factory.mktemp("security")
    scenes_dir = make_toy_scenes(root / "scenes", images=3, seed=2, image_size=48)
    scenes, _ = read_scenes(scenes_dir, "train")
    instructions = build_instructions(scenes, TOY_PREDICATES, dataset="toy", split="train").table
    write_instruction_table(instructions, root / "train.parquet")
    sizes = dict(vocab_size=300, text_d_model=32, text_d_ff=64, vision_intermediate=64, qformer_intermediate=64)
    build_tiny(list(instructions["prompt"]) + list(instructions["target"]), root / "tiny", seed=0, **sizes)
    return root, scenes_dir


def test_train_command_refuses_a_malicious_checkpoint_in_one_line(toy_run, tmp_path, capsys):
    root, scenes_dir = toy_run
    out, marker = tmp_path / "round_1", tmp_path / "marker"
    directory = checkpoint_dir_for(out)
    directory.mkdir()
    weights = directory / "checkpoint-00000001.pt"
    torch.save({"trainable": CreatesMarker(marker), "optimizer": {}, "scheduler": {}, "rng": []}, weights)
    _write_header_for(weights, step=1)
    code = main([
        "train", "--backbone", str(root / "tiny"), "--instructions", str(root / "train.parquet"),
        "--scenes", str(scenes_dir), "--out", str(out), "--epochs", "2", "--batch-size", "4",
        "--warmup-steps", "0", "--checkpoint-every", "1", "--device", "cpu",
    ])  # fmt: skip
    stderr_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(stderr_lines) == 1, stderr_lines
    assert "refused checkpoint" in stderr_lines[0] and str(weights) in stderr_lines[0]
    assert not marker.exists() and not out.exists()


# ---------------------------------------------------------------- source scan


# (module alias, function) calls that unpickle or evaluate whatever they read
_ALWAYS_UNSAFE = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("cPickle", "loads"),
    ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("marshal", "load"), ("marshal", "loads"),
    ("shelve", "open"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("yaml", "unsafe_load"),
    ("yaml", "full_load"), ("jsonpickle", "decode"), ("torch", "jit"),
}
_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _is_constant(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _call_problem(call: ast.Call) -> str | None:
    name = _dotted(call.func)
    if isinstance(call.func, ast.Name) and call.func.id in ("eval", "exec", "compile", "__import__"):
        return f"bare {call.func.id}()"
    if len(name) >= 2 and name[-2:] in _ALWAYS_UNSAFE or name[:2] in _ALWAYS_UNSAFE:
        return f"{'.'.join(name)}() can run code"
    if name[-2:] == ("torch", "load") and not _is_constant(_keyword(call, "weights_only"), True):
        return "torch.load without weights_only=True"
    if name[-2:] in (("np", "load"), ("numpy", "load")) and not (
        _keyword(call, "allow_pickle") is None or _is_constant(_keyword(call, "allow_pickle"), False)
    ):
        return "np.load with allow_pickle"
    if name[-2:] == ("yaml", "load"):
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        if loader is None or _dotted(loader)[-1:] not in {(safe,) for safe in _SAFE_YAML_LOADERS}:
            return "yaml.load without a safe loader"
    if _is_constant(_keyword(call, "weights_only"), False):
        return "weights_only=False"
    if _is_constant(_keyword(call, "trust_remote_code"), True):
        return "trust_remote_code=True"
    return None


def unsafe_loaders(source: str, filename: str) -> list[str]:
    """`file:line: problem` for every call in `source` that could run code from what it reads."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            problem = _call_problem(node)
            if problem:
                problems.append(f"{filename}:{node.lineno}: {problem}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(name and name.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve") for name in names):
                problems.append(f"{filename}:{node.lineno}: imports an unpickler")
    return problems


def test_scanner_finds_every_unsafe_loader_and_spares_safe_code():
    bad = """
import pickle
import torch, yaml, numpy as np
torch.load(path)
torch.load(path, weights_only=False)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
eval("1 + 1")
AutoModel.from_pretrained(name, trust_remote_code=True)
np.load(file, allow_pickle=True)
pickle.loads(data)
pd.read_pickle(file)
"""
    found = unsafe_loaders(bad, "bad.py")
    assert [line.split(":")[1] for line in found] == [str(n) for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)], found
    good = """
import torch, yaml, numpy as np
model.eval()
torch.load(path, map_location="cpu", weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load(buffer, allow_pickle=False)
np.load(buffer)
AutoModel.from_pretrained(name)
"""
    assert unsafe_loaders(good, "good.py") == []


def test_no_unsafe_loader_in_src():
    problems = []
    for file in sorted(SRC.rglob("*.py")):
        problems += unsafe_loaders(file.read_text(), str(file.relative_to(SRC.parent)))
    assert problems == [], "\n".join(problems)
