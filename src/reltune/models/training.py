"""Relation tuning (and the tiny model's pretraining): one training loop, DDP-ready.

Examples are a plain table with `image_path` (relative to an image root),
`union_box`, `prompt` and `target`. The loop:

- AdamW (weight decay on matrices only, as LAVIS); the learning rate follows
  `train.schedule` (`Schedule`): `warmup-cosine` warms up linearly over
  `warmup_steps` optimizer steps, then decays by cosine to 0 over the rest;
  `lavis-step` / `lavis-cosine` (the authors' LAVIS schedulers) warm up only
  inside the first epoch, then take one value per epoch (x`decay_rate` per
  epoch, or cosine by epoch). A warm-up longer than the round is refused.
- with `select_best`, validation positives are answered after every epoch and
  the best epoch's weights are the ones saved (`EpochSelector`).
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
    backbone_fingerprint,
    checkpoint_dir_for,
    load_checkpoint,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    trainable_state,
)
from reltune.models.converses import CONVERSE_SUFFIX, converse_groups
from reltune.models.images import augment_example, load_image, union_crop
from reltune.models.names import (
    check_names_in_prompts,
    copied_rows,
    even_lengths,
    pool_fingerprint,
    substitute_names,
    substitute_pool,
    text_words,
)
from reltune.models.schedule import (  # noqa: F401 (re-exported: the training interface)
    NAME_SUBSTITUTION_LENGTHS,
    NAME_SUBSTITUTION_MODES,
    SCHEDULES,
    BatchPlan,
    Schedule,
    TrainSettings,
    check_warmup,
    learning_rate_factor,
)
from reltune.progress import log, progress_bar

EXAMPLE_COLUMNS = ("image_path", "union_box", "prompt", "target")


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
    best_epoch: int | None = None  # 1-based epoch whose weights were saved (select_best), else None


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
    # the object names travel with the texts: name substitution (reltune.models.names) replaces them
    labels = [column for column in ("subj_label", "obj_label") if column in chosen.columns]
    examples = chosen[["qid", "kind", "image_id", "union_box", "prompt", "target", *labels]].copy()
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


def example_views(
    examples: pd.DataFrame,
    rows: Sequence[int],
    epoch: int,
    backbone: Backbone,
    images: ImageCache,
    settings: TrainSettings,
    name_pool: Sequence[str] = (),
    copy_sources: Sequence[int] = (),
) -> tuple[list[Image.Image], list[str], list[str]]:
    """Augmented crops and texts of the given rows; each row's randomness is seeded by (seed, epoch, row).

    With `settings.name_substitution`, object names are then replaced by words of `name_pool` (names.py):
    in every row (mode `replace`), or only in the rows past the examples, row len(examples) + i being a
    view of example `copy_sources[i]` with at least one name replaced (mode `add`).
    """
    crops, prompts, targets = [], [], []
    for row in rows:
        is_copy = row >= len(examples)
        record = examples.iloc[copy_sources[row - len(examples)] if is_copy else row]
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
        if settings.name_substitution > 0 and (is_copy or settings.name_substitution_mode == "replace"):
            labels = (str(record["subj_label"]), str(record["obj_label"]))
            prompt, target = substitute_names(prompt, target, labels, rng, name_pool, settings.name_substitution, at_least_one=is_copy)
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
        self.pending: dict[int, dict[str, float]] = {}
        self.live = None
        if enabled and live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)

    def add(self, step: int, **values: float) -> None:
        self.pending.setdefault(step, {}).update(values)

    def flush(self) -> None:
        if self.live is not None:
            for step in sorted(self.pending):
                self.live.step = step
                for name, value in self.pending[step].items():
                    self.live.log_metric(name, value)
                self.live.next_step()
        self.pending.clear()

    def close(self, summary: dict[str, Any]) -> None:
        self.flush()
        if self.live is not None:
            for key, value in summary.items():
                self.live.summary[key] = value
            self.live.make_summary()
            self.live.end()


# ---------------------------------------------------------------- best epoch


@dataclass
class ValidationSet:
    """Validation positives answered after every epoch (`train.select_best`), with their images."""

    questions: pd.DataFrame  # positive instruction rows (qid, image_id, union_box, prompt, subj/obj labels, predicate)
    image_paths: dict[str, str]
    image_root: str

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.questions["qid"].astype(str))).encode()).hexdigest()[:16]


def validation_set(
    instructions: pd.DataFrame, scenes: pd.DataFrame, image_root: str, cap: int, seed: int, file: str
) -> ValidationSet:
    """Up to `cap` validation positives (a seeded draw, kept in table order; 0 = all of them)."""
    from reltune.inference.scoring import check_images_known, positive_questions

    positives = positive_questions(instructions, file)
    if positives.empty:
        raise InputError(file, "no validation positives to select the best epoch with")
    if 0 < cap < len(positives):
        chosen = np.sort(np.random.default_rng([seed, cap]).choice(len(positives), size=cap, replace=False))
        positives = positives.iloc[chosen].reset_index(drop=True)
    image_paths = dict(zip(scenes["image_id"].astype(str), scenes["image_path"].astype(str)))
    check_images_known(positives, set(image_paths), file)
    return ValidationSet(positives, image_paths, str(image_root))


class EpochSelector:
    """Validation recall after each epoch; keeps the trainable weights of the best one.

    Best = highest mean recall over predicates (the paper's headline metric),
    the earlier epoch on ties. Answers are greedy (one beam): selection needs
    the top answer only.
    """

    def __init__(self, validation: ValidationSet | None) -> None:
        self.validation = validation
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, torch.Tensor] | None = None

    @property
    def enabled(self) -> bool:
        return self.validation is not None

    @property
    def best_record(self) -> dict[str, Any] | None:
        return max(self.records, key=lambda record: (record["mean_recall"], -record["epoch"]), default=None)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.records = list(checkpoint.get("validation") or [])
        self.best = checkpoint.get("best")

    def evaluate(self, backbone: Backbone, epoch: int, step: int, autocast: Any) -> dict[str, Any]:
        from reltune.inference.crops import CropLoader
        from reltune.inference.generation import GenerationSettings
        from reltune.inference.scoring import model_answer_source, validation_recall

        assert self.validation is not None
        backbone.model.eval()
        loader = CropLoader(self.validation.image_paths, self.validation.image_root, backbone.image_size)
        source = model_answer_source(backbone, loader, GenerationSettings(num_beams=1), f"validation epoch {epoch}")
        with torch.no_grad(), autocast:
            summary, _ = validation_recall(self.validation.questions, source)
        record = {
            "epoch": epoch,
            "step": step,
            "recall": summary["recall"],
            "mean_recall": summary["mean_recall"],
            "questions": summary["questions"],
        }
        previous_best = self.best_record
        self.records.append(record)
        if previous_best is None or record["mean_recall"] > previous_best["mean_recall"]:
            self.best = trainable_state(backbone.model)
        return record


# ---------------------------------------------------------------- the run


@dataclass
class _Run:
    """Everything one process's training run works on."""

    accelerator: Any
    backbone: Backbone
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    plan: BatchPlan
    settings: TrainSettings
    examples: pd.DataFrame
    images: ImageCache
    identity: dict[str, Any]
    checkpoint_path: Path
    selector: EpochSelector
    name_pool: Sequence[str] = ()
    copy_sources: tuple[int, ...] = ()  # mode add: the example behind each row past the examples
    live: _LiveLog | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.backbone.model

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)


def _accelerator(settings: TrainSettings) -> Any:
    from accelerate import Accelerator

    want_cpu = settings.device == "cpu" or (settings.device == "" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=want_cpu, mixed_precision="no" if want_cpu else "bf16")
    if accelerator.device.type == "cpu" and settings.cpu_threads > 0:
        torch.set_num_threads(settings.cpu_threads)
    return accelerator


def _load_trainable_backbone(backbone_dir: str | Path, settings: TrainSettings, device: str) -> tuple[Backbone, tuple[str, ...]]:
    """The backbone with its trainable parts chosen; those parts hold fp32 master weights."""
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    backbone = load_backbone(str(backbone_dir), device=device)
    parts = set_trainable(
        backbone,
        train_all=settings.train_all,
        lora_r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
    )
    # bf16 weights on GPU are frozen; what trains keeps fp32 master weights (autocast does the bf16 math).
    for parameter in backbone.model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return backbone, parts


def _set_train_mode(model: torch.nn.Module, settings: TrainSettings) -> None:
    model.train()
    if not settings.train_all:
        # Frozen towers run as at inference (no dropout), as BLIP-2 / LAVIS do.
        model.vision_model.eval()
        if settings.lora_r == 0:
            model.language_model.eval()


def _run_identity(
    backbone_dir: str | Path,
    settings: TrainSettings,
    examples: pd.DataFrame,
    processes: int,
    validation: ValidationSet | None,
    name_pool: Sequence[str] = (),
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: settings, data, process count, backbone (and validation set)."""
    identity = {
        "settings": settings.fingerprint(),
        "examples": _examples_fingerprint(examples),
        "processes": processes,
        "backbone": backbone_fingerprint(backbone_dir),
    }
    if validation is not None:
        identity["validation"] = validation.fingerprint()
    if settings.name_substitution > 0:
        identity["name_pool"] = pool_fingerprint(name_pool)
    return identity


def _resume(run: _Run) -> tuple[int, dict[str, Any] | None]:
    """(first step to run, the checkpoint resumed from or None); a checkpoint of another run is ignored."""
    checkpoint = load_checkpoint(run.checkpoint_path)
    if checkpoint is not None and checkpoint.get("identity") != run.identity:
        if run.is_main:
            differing = [key for key in run.identity if checkpoint.get("identity", {}).get(key) != run.identity[key]]
            log(f"ignoring stale checkpoint {run.checkpoint_path} (different {', '.join(differing)})")
        checkpoint = None
    start_step = 0
    if checkpoint is not None:
        start_step = restore_checkpoint(
            checkpoint, run.model, run.optimizer, run.scheduler, run.accelerator.process_index,
            run.plan.total_steps, run.checkpoint_path,
        )  # fmt: skip
        run.selector.restore(checkpoint)
        if run.is_main:
            log(f"resuming from checkpoint step {start_step} of {run.plan.total_steps}")
    run.accelerator.wait_for_everyone()
    return start_step, checkpoint


def _write_checkpoint(run: _Run, done: int) -> None:
    from accelerate.utils import gather_object

    rng_states = gather_object([rng_state()])
    if run.is_main:
        state = {
            "identity": run.identity,
            "step": done,
            "trainable": trainable_state(run.model),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng_states,
            "validation": run.selector.records,
            "best": run.selector.best,
        }
        save_checkpoint(run.checkpoint_path, state)
        assert run.live is not None
        run.live.flush()
    run.accelerator.wait_for_everyone()


def _optimizer_step(run: _Run, step: int) -> float:
    """One optimizer step (its micro-batches, gradient sync on the last one only); returns the mean loss."""
    accelerator, plan = run.accelerator, run.plan
    epoch, micro_batches = plan.micro_batches(step, accelerator.process_index)
    step_loss_sum = torch.zeros((), device=accelerator.device)
    for micro_index, rows in enumerate(micro_batches):
        crops, prompts, targets = example_views(
            run.examples, rows, epoch, run.backbone, run.images, run.settings, run.name_pool, run.copy_sources
        )
        batch = {k: v.to(accelerator.device) for k, v in collate_batch(run.backbone, crops, prompts, targets).items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(run.backbone.dtype)
        last_micro = micro_index == len(micro_batches) - 1
        sync = accelerator.no_sync(run.wrapped) if not last_micro and plan.processes > 1 else contextlib.nullcontext()
        with sync, accelerator.autocast():
            loss = run.wrapped(**batch).loss / len(micro_batches)
            accelerator.backward(loss)
        step_loss_sum += loss.detach()
    if run.settings.clip_norm > 0:
        trainable = [parameter for parameter in run.model.parameters() if parameter.requires_grad]
        accelerator.clip_grad_norm_(trainable, run.settings.clip_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return accelerator.reduce(step_loss_sum, reduction="mean").item()


def _validate_epoch(run: _Run, done: int) -> None:
    """After an epoch (or the last step): validation recall on the main process, the others wait."""
    if run.is_main:
        epoch = math.ceil(done / run.plan.steps_per_epoch)
        record = run.selector.evaluate(run.backbone, epoch, done, run.accelerator.autocast())
        _set_train_mode(run.model, run.settings)
        assert run.live is not None
        run.live.add(done, **{"val/recall": record["recall"], "val/mean_recall": record["mean_recall"]})
        log(f"epoch {epoch}: validation recall {record['recall']:.3f}, mean recall {record['mean_recall']:.3f}")
    run.accelerator.wait_for_everyone()


def _run_steps(run: _Run, start_step: int) -> list[float]:
    """Optimizer steps start_step..total: logging, per-epoch validation, checkpoints. Returns the step losses."""
    settings, total_steps = run.settings, run.plan.total_steps
    losses: list[float] = []
    assert run.live is not None
    with progress_bar() as progress:
        task = progress.add_task("train", total=total_steps, completed=start_step, visible=run.is_main)
        for step in range(start_step, total_steps):
            current_lr = run.scheduler.get_last_lr()[0]
            step_loss = _optimizer_step(run, step)
            losses.append(step_loss)
            done = step + 1
            if done % settings.log_every == 0 or done == total_steps:
                run.live.add(done, **{"train/loss": step_loss, "train/lr": current_lr})
            progress.update(task, advance=1, description=f"train loss {step_loss:.3f}")
            if run.selector.enabled and (done % run.plan.steps_per_epoch == 0 or done == total_steps):
                _validate_epoch(run, done)
            if settings.checkpoint_every > 0 and done % settings.checkpoint_every == 0 and done < total_steps:
                _write_checkpoint(run, done)
            if settings.stop_after_steps and done == settings.stop_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard crash, nothing cleaned up
    return losses


def _save_trained(run: _Run, result: TrainResult, schedule: Schedule, extra_metadata: dict[str, Any], extra_dirs: dict) -> None:
    """Main process: the best (or last) epoch's weights, with the run's metadata, saved atomically."""
    best = run.selector.best_record
    if best is not None and run.selector.best is not None:
        run.model.load_state_dict(run.selector.best, strict=False)
    assert run.live is not None
    summary = {"final_loss": result.final_loss, "steps": result.steps, "examples": result.examples}
    if best is not None:
        summary.update(best_epoch=best["epoch"], best_val_mean_recall=best["mean_recall"])
    run.live.close(summary)
    run.model.eval()
    run.backbone.model = run.accelerator.unwrap_model(run.wrapped)
    run.backbone.extra = {
        "training": {
            "steps": result.steps,
            "examples": result.examples,
            "processes": run.plan.processes,
            "final_loss": result.final_loss,
            "train_seconds": round(result.seconds, 2),
            "trained_parts": list(result.trainable),
            "settings": {k: v for k, v in asdict(run.settings).items() if k != "stop_after_steps"},
            "schedule": {"name": schedule.name, "warmup_steps": schedule.warmup_length, "steps_per_epoch": schedule.steps_per_epoch,
                         "epochs": schedule.epochs},
            "best_epoch": None if best is None else best["epoch"],
            "validation": run.selector.records,
            **extra_metadata,
            # the substitute names drawn from (their fingerprint is part of the run identity)
            **({"name_pool": {"words": len(run.name_pool), "sha256_16": run.identity["name_pool"]}} if "name_pool" in run.identity else {}),
            **({"named_copies": len(run.copy_sources)} if run.settings.name_substitution_mode == "add" and "name_pool" in run.identity else {}),
        }
    }
    save_backbone(run.backbone, result.out_dir, extra_dirs=extra_dirs)


def _named_copies(examples: pd.DataFrame, settings: TrainSettings, source: str) -> tuple[int, ...]:
    """Mode add: which examples get a view with names replaced (nothing without substitution or in mode replace)."""
    if settings.name_substitution_mode not in NAME_SUBSTITUTION_MODES:
        raise InputError("--name-substitution-mode", f"{settings.name_substitution_mode!r} is not one of {NAME_SUBSTITUTION_MODES}")
    if settings.name_substitution_lengths not in NAME_SUBSTITUTION_LENGTHS:
        raise InputError("--name-substitution-lengths", f"{settings.name_substitution_lengths!r} is not one of {NAME_SUBSTITUTION_LENGTHS}")
    if not settings.name_substitution > 0:
        return ()
    check_names_in_prompts(examples, source)
    if settings.name_substitution_mode == "replace":
        return ()
    label_pairs = list(zip(examples["subj_label"].astype(str), examples["obj_label"].astype(str)))
    return copied_rows(label_pairs, settings.name_substitution, settings.seed)


def _converse_groups(examples: pd.DataFrame, settings: TrainSettings, copies: int, source: str) -> tuple[int, ...]:
    """`train.converse_batches`: each converse question grouped with its source row (() when off)."""
    if not settings.converse_batches:
        return ()
    qids = examples["qid"].astype(str).tolist()
    if not any(qid.endswith(CONVERSE_SUFFIX) for qid in qids):
        raise InputError(source, "--converse-batches true needs converse questions (--converse-predicates names none of these examples)")
    return converse_groups(qids, len(qids) + copies)


def train_backbone(
    backbone_dir: str | Path,
    examples: pd.DataFrame,
    image_root: str | Path,
    out_dir: str | Path,
    settings: TrainSettings,
    live_dir: str | Path | None = None,
    source: str = "training examples",
    extra_metadata: dict[str, Any] | None = None,
    validation: ValidationSet | None = None,
    name_pool: Sequence[str] | None = None,
) -> TrainResult:
    """Train the backbone in `backbone_dir` on `examples`; save the result to `out_dir`.

    `live_dir` None puts the dvclive logs in `<out_dir>/dvclive`. With
    `settings.select_best`, `validation` is answered after every epoch and the
    best epoch's weights are saved (else the last step's). With
    `settings.name_substitution`, object names are replaced by words of
    `name_pool` (None: the sentence model's words that no example text uses;
    `reltune train` also leaves out every dataset's names).
    """
    check_examples(examples, source)
    if settings.select_best and validation is None:
        raise InputError("--val", "train.select_best needs the validation instructions")
    examples = examples.reset_index(drop=True)
    copy_sources = _named_copies(examples, settings, source)  # checked before anything is loaded
    group_of = _converse_groups(examples, settings, len(copy_sources), source)
    accelerator = _accelerator(settings)
    plan = BatchPlan.of(settings, len(examples) + len(copy_sources), accelerator.num_processes, group_of)
    if plan.total_steps < 1:  # an untrained model must not be saved as if it were trained
        raise InputError(source, f"no optimizer step: {len(examples)} examples, epochs {plan.epochs}, max_steps {settings.max_steps}")
    schedule = Schedule.of(settings, plan)
    check_warmup(schedule, settings.allow_long_warmup)  # before anything is loaded or trained
    if settings.name_substitution > 0:
        if name_pool is None:
            name_pool = substitute_pool(text_words(examples["prompt"]) | text_words(examples["target"]))
    name_pool = tuple(name_pool or ())
    backbone, parts = _load_trainable_backbone(backbone_dir, settings, str(accelerator.device))
    if name_pool and settings.name_substitution_lengths == "even":  # lengths in the pieces of this backbone's tokenizer
        tokenizer = backbone.processor.tokenizer
        name_pool = even_lengths(name_pool, lambda word: len(tokenizer.tokenize(" " + word)))
    optimizer = _optimizer(backbone.model, settings)
    out_dir = Path(out_dir)
    checkpoint_dir = checkpoint_dir_for(out_dir)
    selector = EpochSelector(validation if settings.select_best else None)
    run = _Run(
        accelerator=accelerator, backbone=backbone, wrapped=backbone.model, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor), plan=plan, settings=settings,
        examples=examples, images=ImageCache(Path(image_root), settings.image_cache_mb),
        identity=_run_identity(backbone_dir, settings, examples, plan.processes, selector.validation, name_pool),
        checkpoint_path=checkpoint_dir / CHECKPOINT_FILE, selector=selector, name_pool=name_pool, copy_sources=copy_sources,
    )  # fmt: skip
    start_step, checkpoint = _resume(run)
    _set_train_mode(run.model, settings)
    run.wrapped = accelerator.prepare_model(run.model)
    if run.is_main:
        log(
            f"training {trainable_parameter_count(run.model):,} parameters ({', '.join(parts)}) on {len(examples)} examples"
            + (f" (+{len(copy_sources)} with names replaced)" if copy_sources else "") + ", "
            f"{plan.total_steps} steps in {math.ceil(plan.total_steps / plan.steps_per_epoch)} epochs ({schedule.describe()}), "
            f"{plan.processes} process(es), device {accelerator.device}"
        )
    default_live = checkpoint_dir / "dvclive"
    run.live = _LiveLog(Path(live_dir) if live_dir else default_live, resume=checkpoint is not None, enabled=run.is_main)

    loop_start = time.perf_counter()
    losses = _run_steps(run, start_step)
    accelerator.wait_for_everyone()
    result = TrainResult(
        steps=plan.total_steps, resumed_from_step=start_step, examples=len(examples),
        final_loss=losses[-1] if losses else float("nan"), out_dir=out_dir, trainable=parts, losses=losses,
        seconds=time.perf_counter() - loop_start,
        best_epoch=None if selector.best_record is None else selector.best_record["epoch"],
    )  # fmt: skip
    if run.is_main:
        extra_dirs = {"dvclive": default_live} if live_dir is None and default_live.is_dir() else {}
        _save_trained(run, result, schedule, extra_metadata or {}, extra_dirs)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result
