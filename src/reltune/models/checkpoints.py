"""Training checkpoints that cannot run code when they are read back.

A checkpoint is two files in `<out>.ckpt/`:

- `checkpoint.json`: the run identity, the step, the python and numpy RNG
  states of every process (as plain lists) and the name and SHA-256 of the
  tensor file;
- `checkpoint-<step>.pt`: tensors and plain containers only (the state keys
  in TENSOR_KEYS: trainable weights, optimizer and scheduler state, best-epoch
  weights; and the torch RNG states), read with
  `torch.load(..., weights_only=True)`, which refuses any pickled object.

Every other key of the saved state (e.g. validation records) must be JSON; it
goes to the header's `state`.

The tensor file is written first under a new name, then the JSON is replaced
atomically, then older tensor files are removed: a crash at any point leaves a
JSON that names a complete tensor file. Anything that does not fit this
format (an old pickled `checkpoint.pt`, a tampered file, a mismatch with the
model) is refused with a one-line InputError rather than silently restarting.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reltune.errors import InputError
from reltune.io import atomic_path, write_json

CHECKPOINT_FILE = "checkpoint.json"
FORMAT_VERSION = 1
# Only names of this shape are read: the JSON cannot point outside the checkpoint directory.
_WEIGHTS_NAME = re.compile(r"^checkpoint-\d{8}\.pt$")
# The pickled single-file checkpoint of earlier versions: never unpickled.
LEGACY_FILE = "checkpoint.pt"
# State keys that hold tensors (to the .pt file); every other key but identity/step/rng goes to the JSON.
TENSOR_KEYS = ("trainable", "optimizer", "scheduler", "best")
_REQUIRED_TENSOR_KEYS = {"trainable", "optimizer", "scheduler", "rng"}
# Keys the header itself uses.
_HEADER_KEYS = ("format", "identity", "step", "weights", "weights_sha256", "rng", "state")


def checkpoint_dir_for(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.ckpt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """This process's RNG states: python and numpy as JSON-safe values, torch (and CUDA) as tensors."""
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "keys": [int(key) for key in keys],
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], source: str | Path) -> None:
    """Restore what `rng_state` returned (after a JSON round trip); a malformed state is an InputError."""
    try:
        python, numpy_state = state["python"], state["numpy"]
        random.setstate((int(python["version"]), tuple(int(value) for value in python["state"]), python["gauss_next"]))
        keys = np.asarray(numpy_state["keys"], dtype=np.uint32)
        if keys.shape != (624,):
            raise ValueError(f"numpy RNG needs 624 keys, got {keys.shape}")
        np.random.set_state(
            (
                str(numpy_state["bit_generator"]),
                keys,
                int(numpy_state["pos"]),
                int(numpy_state["has_gauss"]),
                float(numpy_state["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise InputError(source, f"malformed RNG state in checkpoint ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------- save / load


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_rng(states: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(JSON part, tensor part) of each process's RNG state."""
    as_json = [{key: state[key] for key in ("python", "numpy")} for state in states]
    as_tensors = [{key: value for key, value in state.items() if key not in ("python", "numpy")} for state in states]
    return as_json, as_tensors


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state`: identity, step, rng (one `rng_state()` per process), TENSOR_KEYS, and JSON-safe rest.

    `path` is the checkpoint's JSON file; the tensor file goes beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    rng_json, rng_tensors = _split_rng(list(state["rng"]))
    weights = path.parent / f"checkpoint-{step:08d}.pt"
    for leftover in path.parent.glob(".checkpoint*.tmp"):  # of a save killed half-way (one writer per run)
        leftover.unlink(missing_ok=True)
    with atomic_path(weights) as temporary:
        torch.save({key: state[key] for key in TENSOR_KEYS if key in state} | {"rng": rng_tensors}, temporary)
    header = {
        "format": FORMAT_VERSION,
        "identity": state["identity"],
        "step": step,
        "weights": weights.name,
        "weights_sha256": _sha256(weights),
        "rng": rng_json,
        "state": {key: value for key, value in state.items() if key not in TENSOR_KEYS and key not in _HEADER_KEYS},
    }
    write_json(header, path)
    for old in path.parent.glob("checkpoint-*.pt"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)


def _read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(path, f"unreadable checkpoint ({type(error).__name__}); delete it to restart") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise InputError(path, f"not a checkpoint of format {FORMAT_VERSION}; delete {path.parent} to restart")
    step, weights, rng = header.get("step"), header.get("weights"), header.get("rng")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise InputError(path, f"checkpoint step must be a positive integer, got {step!r}")
    if not isinstance(weights, str) or not _WEIGHTS_NAME.match(weights):
        raise InputError(path, f"checkpoint weights must be named checkpoint-<8 digits>.pt, got {weights!r}")
    if not isinstance(rng, list) or not all(isinstance(item, dict) for item in rng):
        raise InputError(path, "checkpoint rng must be a list of per-process states")
    if not isinstance(header.get("identity"), dict) or not isinstance(header.get("state"), dict):
        raise InputError(path, "checkpoint identity and state must be mappings")
    return header


def _load_tensors(weights: Path, expected_sha256: object) -> dict[str, Any]:
    if not weights.is_file():
        raise InputError(weights, "checkpoint weights file missing; delete the checkpoint directory to restart")
    if _sha256(weights) != expected_sha256:
        raise InputError(weights, f"checkpoint weights do not match the SHA-256 in {CHECKPOINT_FILE}")
    try:
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # refused pickled objects and corrupt archives both end here
        problem = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise InputError(weights, f"refused checkpoint: not a plain tensor file ({problem})") from None
    if not isinstance(tensors, dict) or not _REQUIRED_TENSOR_KEYS <= set(tensors):
        raise InputError(weights, f"checkpoint tensor file lacks one of {sorted(_REQUIRED_TENSOR_KEYS)}")
    return tensors


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state `save_checkpoint` wrote (None when there is none); anything else is an InputError."""
    path = Path(path)
    legacy = path.parent / LEGACY_FILE
    if legacy.exists():
        # Earlier versions pickled arbitrary objects here; reading it could run code.
        raise InputError(legacy, f"checkpoint in the old pickled format is not read; delete {path.parent} to restart")
    if not path.is_file():
        return None
    header = _read_header(path)
    tensors = _load_tensors(path.parent / header["weights"], header.get("weights_sha256"))
    if not isinstance(tensors["rng"], list) or len(tensors["rng"]) != len(header["rng"]):
        raise InputError(path, "checkpoint RNG states of the JSON and the tensor file differ in number")
    rng = [{**json_part, **tensor_part} for json_part, tensor_part in zip(header["rng"], tensors["rng"])]
    extra = {key: value for key, value in header["state"].items() if key not in TENSOR_KEYS and key not in _HEADER_KEYS}
    return {**extra, **tensors, "identity": header["identity"], "step": header["step"], "rng": rng}


def _check_weights(stored: Any, expected: dict[str, torch.Size], what: str, source: str | Path) -> None:
    if not isinstance(stored, dict) or set(stored) != set(expected):
        raise InputError(source, f"checkpoint {what} are not the trainable parameters of this model")
    wrong = [name for name, tensor in stored.items() if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name]]
    if wrong:
        raise InputError(source, f"checkpoint {what} of the wrong shape, e.g. {wrong[0]}")


def _check_validation_records(records: Any, source: str | Path) -> None:
    """Best-epoch records (JSON): a list of {"epoch": int, "mean_recall": number, ...}."""
    if records is None:
        return
    if not isinstance(records, list):
        raise InputError(source, "checkpoint validation records must be a list")
    for index, record in enumerate(records):
        epoch = record.get("epoch") if isinstance(record, dict) else None
        recall = record.get("mean_recall") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(recall, (int, float)) or isinstance(recall, bool):
            raise InputError(source, "checkpoint validation record needs an integer epoch and a numeric mean_recall", f"validation[{index}]")


def restore_checkpoint(
    checkpoint: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    process_index: int,
    total_steps: int,
    source: str | Path,
) -> int:
    """Load weights, optimizer, scheduler and this process's RNG; return the step to continue from."""
    step = int(checkpoint["step"])
    if step >= total_steps:
        raise InputError(source, f"checkpoint step {step} is not before the last step {total_steps}")
    expected = {name: parameter.shape for name, parameter in model.named_parameters() if parameter.requires_grad}
    _check_weights(checkpoint["trainable"], expected, "weights", source)
    if checkpoint.get("best") is not None:
        _check_weights(checkpoint["best"], expected, "best-epoch weights", source)
    if process_index >= len(checkpoint["rng"]):
        raise InputError(source, f"checkpoint has no RNG state for process {process_index}")
    _check_validation_records(checkpoint.get("validation", []), source)
    try:
        model.load_state_dict(checkpoint["trainable"], strict=False)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        message = f"checkpoint does not fit this run ({type(error).__name__}: {error})"
        raise InputError(source, message.splitlines()[0]) from None
    set_rng_state(checkpoint["rng"][process_index], source)
    return step


# Files of a backbone directory that decide what its weights mean (the weights themselves can be
# gigabytes; their shapes follow config.json). The tokenizer matters: other token ids, other run.
_BACKBONE_IDENTITY_FILES = ("config.json", "tokenizer.json", "qformer_tokenizer/tokenizer.json", "processor_config.json")


def backbone_fingerprint(backbone_dir: str | Path) -> str:
    """`<dir>:<hash of its config and tokenizer files>` (a hub id without local files hashes to the empty text)."""
    digest = hashlib.sha256()
    for name in _BACKBONE_IDENTITY_FILES:
        file = Path(backbone_dir) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return f"{backbone_dir}:{digest.hexdigest()[:16]}"
