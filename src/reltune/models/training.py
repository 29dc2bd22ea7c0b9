"""Relation tuning (and the tiny model's pretraining): one training loop, DDP-ready.

Examples are a plain table with `image_path` (relative to an image root),
`union_box`, `prompt` and `target`. The loop:

- AdamW (weight decay on matrices only, as LAVIS), learning rate
  `lr * step / warmup_steps` for the first `warmup_steps` optimizer steps, then
  cosine from `lr` to 0 over the remaining steps: `lr * 0.5 * (1 + cos(pi * t))`,
  t = (step - warmup) / (total - warmup).
- an optimizer step = `grad_accum` micro-batches of `batch_size` examples per
  process; the data order of step s is a pure function of (seed, epoch, s), and
  each example's augmentation is seeded by (seed, epoch, row), so a resumed run
  replays exactly what an uninterrupted one would.
- `accelerate.Accelerator` wraps the model (DDP under `accelerate launch` /
  torchrun, gloo on CPU); global batch = batch_size x processes x grad_accum.
- checkpoints every `checkpoint_every` steps in `<out>.ckpt/` (trainable
  weights, optimizer, scheduler, step, RNG; JSON plus a weights-only tensor
  file, see reltune.models.checkpoints); a later run with the same settings
  resumes from it. dvclive metrics are flushed with each checkpoint so the log
  and the checkpoint always agree.
- the final model is saved atomically (temp directory, then rename) and the
  checkpoint directory is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from reltune.errors import InputError
from reltune.models.backbone import Backbone, load_backbone, save_backbone, set_trainable, trainable_parameter_count
from reltune.models.checkpoints import (  # noqa: F401  (checkpoint_dir_for: part of this module's interface)
    CHECKPOINT_FILE,
    checkpoint_dir_for,
    load_checkpoint,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    trainable_state,
)
from reltune.models.images import augment_example, load_image, union_crop
from reltune.progress import log, progress_bar

EXAMPLE_COLUMNS = ("image_path", "union_box", "prompt", "target")


@dataclass
class TrainSettings:
    """Training hyper-parameters (defaults = params.yaml `train`; paper App. B: lr 1e-3, Adam betas, wd 0.05)."""

    epochs: int = 5
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = 0  # 0: no cap, run all epochs
    clip_norm: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    train_all: bool = False
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    flip_probability: float = 0.5
    box_jitter: float = 0.05
    image_cache_mb: int = 1024
    device: str = ""  # "" = CUDA when available, else CPU
    # CPU threads per process (0 = torch's default). Measured on the shared 2-core machine: with 2
    # threads a tiny train-all step took 8.6 s, with 1 thread 0.43 s (OpenMP threads stall under load).
    cpu_threads: int = 1
    stop_after_steps: int = 0  # test hook: SIGKILL this process after that many steps

    def fingerprint(self) -> str:
        """Identity of a run for resuming: everything but the crash hook and the logging cadence."""
        relevant = {k: v for k, v in asdict(self).items() if k not in ("stop_after_steps", "log_every", "checkpoint_every", "cpu_threads")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    steps: int
    resumed_from_step: int
    examples: int
    final_loss: float
    out_dir: Path
    trainable: tuple[str, ...]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the optimizer steps run here (no loading / saving)


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warmup, then cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- examples


def relation_training_examples(
    instructions: pd.DataFrame,
    scene_images: pd.DataFrame,
    selection: pd.DataFrame | None,
    instructions_file: str = "instructions",
    selection_file: str = "selection",
) -> pd.DataFrame:
    """Selected positives plus their counter-negatives (all training rows when `selection` is None)."""
    positives = instructions[instructions["kind"] == "positive"]
    if selection is None:
        chosen = instructions
    else:
        selected = set(selection["qid"].astype(str))
        known = set(positives["qid"].astype(str))
        unknown = sorted(selected - known)
        if unknown:
            raise InputError(selection_file, f"{len(unknown)} selected qids are not training positives, e.g. {unknown[:3]}")
        is_selected_positive = (instructions["kind"] == "positive") & instructions["qid"].astype(str).isin(selected)
        is_counter_negative = (instructions["kind"] == "negative") & instructions["positive_qid"].astype(str).isin(selected)
        chosen = instructions[is_selected_positive | is_counter_negative]
    paths = scene_images.drop_duplicates("image_id").set_index("image_id")["image_path"]
    missing = sorted(set(chosen["image_id"]) - set(paths.index))
    if missing:
        raise InputError(instructions_file, f"image_id not in the scene table, e.g. {missing[:3]}")
    examples = chosen[["qid", "kind", "image_id", "union_box", "prompt", "target"]].copy()
    examples["image_path"] = examples["image_id"].map(paths)
    return examples.reset_index(drop=True)


def check_examples(examples: pd.DataFrame, source: str) -> None:
    missing = [column for column in EXAMPLE_COLUMNS if column not in examples.columns]
    if missing:
        raise InputError(source, f"training examples lack columns {missing}")
    if examples.empty:
        raise InputError(source, "no training examples")
    for column in ("prompt", "target"):
        empty = examples.index[examples[column].isna() | (examples[column].astype(str).str.strip() == "")]
        if len(empty):
            raise InputError(source, f"empty {column}", where=f"row {int(empty[0])}")


class ImageCache:
    """Decoded images kept in memory up to a byte budget (least recently used evicted first)."""

    def __init__(self, image_root: Path, max_megabytes: int) -> None:
        self.image_root = image_root
        self.max_bytes = max_megabytes * 1024 * 1024
        self.images: OrderedDict[str, Image.Image] = OrderedDict()
        self.bytes = 0

    def get(self, image_path: str) -> Image.Image:
        if image_path in self.images:
            self.images.move_to_end(image_path)
            return self.images[image_path]
        image = load_image(self.image_root, image_path)
        size = image.width * image.height * 3
        if size <= self.max_bytes:
            self.images[image_path] = image
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self.images.popitem(last=False)
                self.bytes -= evicted.width * evicted.height * 3
        return image


# ---------------------------------------------------------------- batches


def collate_batch(
    backbone: Backbone, crops: Sequence[Image.Image], prompts: Sequence[str], targets: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Model inputs with `labels` (-100 where no loss): T5 targets, or prompt+target for decoder-only LMs."""
    processor = backbone.processor
    tokenizer = processor.tokenizer
    inputs = processor(images=list(crops), text=list(prompts), return_tensors="pt", padding=True, truncation=True)
    if not backbone.model.config.use_decoder_only_language_model:
        labels = tokenizer(list(targets), return_tensors="pt", padding=True, truncation=True)["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        inputs["labels"] = labels
        return dict(inputs)
    # Decoder-only (Vicuna): the LM reads image tokens + prompt + target; loss on the target only.
    target_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    rows, label_rows = [], []
    for prompt_ids, prompt_mask, answer_ids in zip(inputs["input_ids"], inputs["attention_mask"], target_ids):
        prompt_ids = prompt_ids[prompt_mask.bool()].tolist()
        answer_ids = list(answer_ids) + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        label_rows.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for index, (row, label_row) in enumerate(zip(rows, label_rows)):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
        labels[index, : len(row)] = torch.tensor(label_row)
    inputs["input_ids"], inputs["attention_mask"], inputs["labels"] = input_ids, attention_mask, labels
    return dict(inputs)


@dataclass(frozen=True)
class BatchPlan:
    """Which example rows each process uses at each optimizer step (pure function of seed and sizes)."""

    examples: int
    batch_size: int
    grad_accum: int
    processes: int
    epochs: int
    seed: int
    max_steps: int = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.processes

    @property
    def micro_batches_per_epoch(self) -> int:
        # Rows are padded (wrapping around) to a multiple of the process count so every process gets data.
        padded = math.ceil(self.examples / self.processes) * self.processes
        return math.ceil(padded / self.global_batch)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.grad_accum)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps > 0 else total

    def epoch_order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.examples)
        padded = math.ceil(self.examples / self.processes) * self.processes
        return np.concatenate([order, order[: padded - self.examples]])

    def micro_batches(self, step: int, process: int) -> tuple[int, list[list[int]]]:
        """(epoch, [rows of each micro-batch]) of optimizer step `step` for `process`."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        first = step_in_epoch * self.grad_accum
        last = min(first + self.grad_accum, self.micro_batches_per_epoch)
        batches = []
        for micro in range(first, last):
            global_rows = order[micro * self.global_batch : (micro + 1) * self.global_batch]
            share = len(global_rows) // self.processes
            batches.append(global_rows[process * share : (process + 1) * share].tolist())
        return epoch, batches


def example_views(
    examples: pd.DataFrame, rows: Sequence[int], epoch: int, backbone: Backbone, images: ImageCache, settings: TrainSettings
) -> tuple[list[Image.Image], list[str], list[str]]:
    """Augmented crops and texts of the given rows; each row's randomness is seeded by (seed, epoch, row)."""
    crops, prompts, targets = [], [], []
    for row in rows:
        record = examples.iloc[row]
        image = images.get(str(record["image_path"]))
        rng = random.Random(f"{settings.seed}:{epoch}:{row}")
        source = f"{images.image_root / str(record['image_path'])}"
        if settings.flip_probability > 0 or settings.box_jitter > 0:
            crop, prompt, target = augment_example(
                image,
                list(record["union_box"]),
                backbone.image_size,
                str(record["prompt"]),
                str(record["target"]),
                rng,
                flip_probability=settings.flip_probability,
                box_jitter=settings.box_jitter,
                source=source,
            )
        else:
            crop = union_crop(image, list(record["union_box"]), backbone.image_size, source)
            prompt, target = str(record["prompt"]), str(record["target"])
        crops.append(crop)
        prompts.append(prompt)
        targets.append(target)
    return crops, prompts, targets


# ---------------------------------------------------------------- the loop


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # As LAVIS: no weight decay on biases and norm scales (1-d tensors).
        (no_decay if parameter.ndim < 2 or name.endswith(".bias") else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=tuple(settings.betas))


def _examples_fingerprint(examples: pd.DataFrame) -> str:
    text = "\n".join(
        f"{path}|{[float(value) for value in box]}|{prompt}|{target}"
        for path, box, prompt, target in zip(examples["image_path"], examples["union_box"], examples["prompt"], examples["target"])
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _LiveLog:
    """dvclive logger that only writes what is covered by a checkpoint (or the final model)."""

    def __init__(self, live_dir: Path | None, resume: bool, enabled: bool) -> None:
        self.pending: list[tuple[int, float, float]] = []
        self.live = None
        if enabled and live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)

    def add(self, step: int, loss: float, lr: float) -> None:
        self.pending.append((step, loss, lr))

    def flush(self) -> None:
        if self.live is not None:
            for step, loss, lr in self.pending:
                self.live.step = step
                self.live.log_metric("train/loss", loss)
                self.live.log_metric("train/lr", lr)
                self.live.next_step()
        self.pending.clear()

    def close(self, summary: dict[str, Any]) -> None:
        self.flush()
        if self.live is not None:
            for key, value in summary.items():
                self.live.summary[key] = value
            self.live.make_summary()
            self.live.end()


def train_backbone(
    backbone_dir: str | Path,
    examples: pd.DataFrame,
    image_root: str | Path,
    out_dir: str | Path,
    settings: TrainSettings,
    live_dir: str | Path | None = None,
    source: str = "training examples",
    extra_metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the backbone in `backbone_dir` on `examples`; save the result to `out_dir`.

    `live_dir` None puts the dvclive logs in `<out_dir>/dvclive`.
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    check_examples(examples, source)
    examples = examples.reset_index(drop=True)
    want_cpu = settings.device == "cpu" or (settings.device == "" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=want_cpu, mixed_precision="no" if want_cpu else "bf16")
    is_main = accelerator.is_main_process
    if accelerator.device.type == "cpu" and settings.cpu_threads > 0:
        torch.set_num_threads(settings.cpu_threads)
    out_dir = Path(out_dir)
    checkpoint_dir = checkpoint_dir_for(out_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT_FILE

    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    backbone = load_backbone(str(backbone_dir), device=str(accelerator.device))
    parts = set_trainable(
        backbone,
        train_all=settings.train_all,
        lora_r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
    )
    model = backbone.model
    # bf16 weights on GPU are frozen; what trains keeps fp32 master weights (autocast does the bf16 math).
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    optimizer = _optimizer(model, settings)
    plan = BatchPlan(
        examples=len(examples),
        batch_size=settings.batch_size,
        grad_accum=settings.grad_accum,
        processes=accelerator.num_processes,
        epochs=settings.epochs,
        seed=settings.seed,
        max_steps=settings.max_steps,
    )
    total_steps = plan.total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, settings.warmup_steps, total_steps)
    )

    config_text = (Path(backbone_dir) / "config.json").read_text() if (Path(backbone_dir) / "config.json").is_file() else ""
    run_identity = {
        "settings": settings.fingerprint(),
        "examples": _examples_fingerprint(examples),
        "processes": plan.processes,
        "backbone": f"{backbone_dir}:{hashlib.sha256(config_text.encode()).hexdigest()[:16]}",
    }
    start_step = 0
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint is not None and checkpoint.get("identity") != run_identity:
        if is_main:
            differing = [key for key in run_identity if checkpoint.get("identity", {}).get(key) != run_identity[key]]
            log(f"ignoring stale checkpoint {checkpoint_path} (different {', '.join(differing)})")
        checkpoint = None
    if checkpoint is not None:
        start_step = restore_checkpoint(
            checkpoint, model, optimizer, scheduler, accelerator.process_index, total_steps, checkpoint_path
        )
        if is_main:
            log(f"resuming from checkpoint step {start_step} of {total_steps}")
    accelerator.wait_for_everyone()

    model.train()
    if not settings.train_all:
        # Frozen towers run as at inference (no dropout), as BLIP-2 / LAVIS do.
        model.vision_model.eval()
        if settings.lora_r == 0:
            model.language_model.eval()
    wrapped = accelerator.prepare_model(model)
    trainable_parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if is_main:
        log(
            f"training {trainable_parameter_count(model):,} parameters ({', '.join(parts)}) on {len(examples)} examples, "
            f"{total_steps} steps, {plan.processes} process(es), device {accelerator.device}"
        )
    images = ImageCache(Path(image_root), settings.image_cache_mb)
    default_live = checkpoint_dir / "dvclive"
    live = _LiveLog(Path(live_dir) if live_dir else default_live, resume=checkpoint is not None, enabled=is_main)
    losses: list[float] = []
    step_loss = float("nan")

    loop_start = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("train", total=total_steps, completed=start_step, visible=is_main)
        for step in range(start_step, total_steps):
            epoch, micro_batches = plan.micro_batches(step, accelerator.process_index)
            step_loss_sum = torch.zeros((), device=accelerator.device)
            for micro_index, rows in enumerate(micro_batches):
                crops, prompts, targets = example_views(examples, rows, epoch, backbone, images, settings)
                batch = {k: v.to(accelerator.device) for k, v in collate_batch(backbone, crops, prompts, targets).items()}
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
                last_micro = micro_index == len(micro_batches) - 1
                sync = accelerator.no_sync(wrapped) if not last_micro and plan.processes > 1 else contextlib.nullcontext()
                with sync, accelerator.autocast():
                    loss = wrapped(**batch).loss / len(micro_batches)
                    accelerator.backward(loss)
                step_loss_sum += loss.detach()
            if settings.clip_norm > 0:
                accelerator.clip_grad_norm_(trainable_parameters, settings.clip_norm)
            current_lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = accelerator.reduce(step_loss_sum, reduction="mean").item()
            losses.append(step_loss)
            done = step + 1
            if done % settings.log_every == 0 or done == total_steps:
                live.add(done, step_loss, current_lr)
            progress.update(task, advance=1, description=f"train loss {step_loss:.3f}")
            if settings.checkpoint_every > 0 and done % settings.checkpoint_every == 0 and done < total_steps:
                rng_states = gather_object([rng_state()])
                if is_main:
                    save_checkpoint(
                        checkpoint_path,
                        {
                            "identity": run_identity,
                            "step": done,
                            "trainable": trainable_state(model),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": rng_states,
                        },
                    )
                    live.flush()
                accelerator.wait_for_everyone()
            if settings.stop_after_steps and done == settings.stop_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard crash, nothing cleaned up

    accelerator.wait_for_everyone()
    loop_seconds = time.perf_counter() - loop_start
    result = TrainResult(
        steps=total_steps,
        resumed_from_step=start_step,
        examples=len(examples),
        final_loss=step_loss,
        out_dir=out_dir,
        trainable=parts,
        losses=losses,
        seconds=loop_seconds,
    )
    if is_main:
        live.close({"final_loss": step_loss, "steps": total_steps, "examples": len(examples)})
        model.eval()
        backbone.model = accelerator.unwrap_model(wrapped)
        backbone.extra = {
            "training": {
                "steps": total_steps,
                "examples": len(examples),
                "processes": plan.processes,
                "final_loss": step_loss,
                "train_seconds": round(loop_seconds, 2),
                "trained_parts": list(parts),
                "settings": {k: v for k, v in asdict(settings).items() if k != "stop_after_steps"},
                **(extra_metadata or {}),
            }
        }
        extra_dirs = {"dvclive": default_live} if live_dir is None and default_live.is_dir() else {}
        save_backbone(backbone, out_dir, extra_dirs=extra_dirs)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result
