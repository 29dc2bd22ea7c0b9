"""Training settings and how a round is laid out: which rows each optimizer step uses, its learning rate.

Kept free of the model stack (numpy only) so that `reltune plan` lays out a
round without importing torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from reltune.errors import InputError

SCHEDULES = ("warmup-cosine", "lavis-step", "lavis-cosine")
NAME_SUBSTITUTION_MODES = ("add", "replace")  # reltune.models.names
NAME_SUBSTITUTION_LENGTHS = ("pool", "even")  # reltune.models.names.even_lengths


@dataclass
class TrainSettings:
    """Training hyper-parameters: the `train` parameters of params.yaml (tests/test_models_train.py checks that
    these defaults equal them); `reltune train` takes its CLI defaults from here, pretrain-tiny overrides a few."""

    epochs: int = 20
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 4
    schedule: str = "lavis-cosine"  # one of SCHEDULES (see Schedule)
    decay_rate: float = 0.9  # lavis-step: lr x decay_rate per epoch after the first
    select_best: bool = False  # keep the epoch with the best validation mean recall
    val_questions: int = 500  # validation positives answered per epoch (0: all)
    allow_long_warmup: bool = False  # accept a warm-up longer than the round (check_warmup)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = 0  # 0: no cap, run all epochs
    # more epochs for a small training set, until it gets this many optimizer steps (0: `epochs` as given):
    # a model trained on a few hundred questions for 20 epochs is undertrained (docs/RESULTS.md "Training length")
    min_steps: int = 560
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
    # relation tuning: chance that each object name of a question is replaced by a word naming nothing
    # (prompt and answer alike), so the answer copies the name from the question (reltune.models.names)
    name_substitution: float = 0.25
    # add: each altered question is an extra view beside the question as written; replace: it stands in for it
    name_substitution_mode: str = "add"
    # pool: substitutes drawn uniformly from the pool (nearly all of several tokenizer pieces); even: words of one
    # piece, of two and of more a third of the draws each, as unseen class names are often one piece (names.even_lengths)
    name_substitution_lengths: str = "pool"
    # relation tuning: pretraining's relative-where questions asked besides, this fraction of the relation
    # examples (reltune.models.replay; 0: off), so the tuned model keeps reading where two named objects are
    replay: float = 0.0
    # side: replayed questions answer as pretraining does ("top"); direction: "{a} above {b}" (from the boxes)
    replay_answer: str = "side"
    # relation tuning: pretraining's language-only copy questions ("Repeat the words: fox on.") over every dataset's
    # names, this fraction of the relation examples (reltune.models.replay; 0: off), so the tuned model can still
    # write a name no training answer has (a held-out class) instead of the seen name its picture recalls
    copy_replay: float = 0.0
    # pair: copy phrases of two names ("fox on"); triplet: "{object} {predicate} {object}" ("fox hug kite"), the places
    # a relation answer has its words, so an unseen subject is followed by a predicate (reltune.models.replay);
    # triplet-no-converse: triplets whose predicate is none of converse_predicates (the directions, which only the
    # image can tell; a phrase stating one about no such pair may teach the model to write them from the words)
    copy_phrase: str = "pair"
    # relation tuning: LVIS's repeat-factor threshold t; a predicate of share f of the positives is asked
    # max(1, sqrt(t / f)) times as often (reltune.models.repeats; 0: off), so rare predicates get the steps
    repeat_threshold: float = 0.0
    # relation tuning: "a:b,c:d", predicates each the converse of the other; a question of one is asked again with
    # subject and object swapped, answered with the other (reltune.models.converses; '' off), so both answers balance
    converse_predicates: str = ""
    # relation tuning: each converse question in the same batch as its source (False: both shuffled apart), so every
    # step sees "a left of b" beside "b right of a" and a lean towards one answer cannot pay (reltune.models.converses)
    converse_batches: bool = False
    image_cache_mb: int = 1024
    device: str = ""  # "" = CUDA when available, else CPU
    # CPU threads per process (0 = torch's default). Measured on the shared 2-core machine: with 2
    # threads a tiny train-all step took 8.6 s, with 1 thread 0.43 s (OpenMP threads stall under load).
    cpu_threads: int = 1
    stop_after_steps: int = 0  # test hook: SIGKILL this process after that many steps

    def fingerprint(self) -> str:
        """Identity of a run for resuming: everything but the crash hook and the logging cadence."""
        relevant = {k: v for k, v in asdict(self).items() if k not in ("stop_after_steps", "log_every", "checkpoint_every", "cpu_threads", "allow_long_warmup")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=list).encode()).hexdigest()[:16]


# what a replayed where-question's answer says (reltune.models.replay): the first object's side, as
# pretraining answers ("top"), or a sentence with the English direction phrase ("cup above plate")
REPLAY_ANSWERS = ("side", "direction")
# the words of a copy-replay phrase (reltune.models.replay): two names, or object, predicate and object
COPY_PHRASES = ("pair", "triplet", "triplet-no-converse")


def replay_count(relation_examples: int, replay: float) -> int:
    """Replayed where-questions for a training set (`train.replay`): `replay` times its relation examples, rounded down."""
    return math.floor(relation_examples * replay)


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
    # group of each example row, a row number (e.g. the group's first row): rows of one group are shuffled as one
    # block; () = every row on its own
    group_of: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, settings: TrainSettings, examples: int, processes: int, group_of: Sequence[int] = ()) -> BatchPlan:
        """The plan of a round of `examples` rows: `settings.epochs`, raised until the round has `settings.min_steps` steps.

        `epochs` 0 stays 0 (no training, refused by the caller); `max_steps` still caps the raised round.
        `group_of`: a group id per row, a row number in [0, examples); rows of a group kept together in the shuffled
        order (() = none).
        """
        if group_of and len(group_of) != examples:
            raise ValueError(f"group_of has {len(group_of)} entries for {examples} example rows")
        if group_of and not 0 <= min(group_of) <= max(group_of) < examples:
            raise ValueError(f"group_of holds ids outside the {examples} row numbers")
        plan = cls(examples=examples, batch_size=settings.batch_size, grad_accum=settings.grad_accum, processes=processes,
                   epochs=settings.epochs, seed=settings.seed, max_steps=settings.max_steps,
                   group_of=tuple(int(group) for group in group_of))  # fmt: skip
        if settings.epochs > 0 and examples > 0 and settings.min_steps > plan.steps_per_epoch * settings.epochs:
            plan = replace(plan, epochs=math.ceil(settings.min_steps / plan.steps_per_epoch))
        return plan

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
        rng = np.random.default_rng([self.seed, epoch])
        if self.group_of:
            # the groups shuffled (a random rank per group id), each group's rows kept together in their own order
            group_rank = rng.permutation(self.examples)
            order = np.lexsort((np.arange(self.examples), group_rank[np.asarray(self.group_of)]))
        else:
            order = rng.permutation(self.examples)
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


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """`warmup-cosine` multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The learning-rate multiplier of every optimizer step of a round (`train.schedule`).

    - `warmup-cosine`: `learning_rate_factor` over the round's steps.
    - `lavis-step` / `lavis-cosine` (LAVIS's linear_warmup_step_lr /
      linear_warmup_cosine_lr, what the authors ran): in the first epoch a
      linear warm-up `min(1, (s + 1) / warmup_steps)`, so it never lasts past
      that epoch; from epoch e >= 1 (0-based) one value per epoch,
      `decay_rate ** e` (step) or `0.5 * (1 + cos(pi * e / epochs))` (cosine,
      min lr 0).
    """

    name: str
    warmup_steps: int
    total_steps: int
    steps_per_epoch: int
    epochs: int
    decay_rate: float

    @classmethod
    def of(cls, settings: TrainSettings, plan: BatchPlan) -> Schedule:
        if settings.schedule not in SCHEDULES:
            raise InputError("--schedule", f"unknown schedule {settings.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        return cls(settings.schedule, settings.warmup_steps, plan.total_steps, plan.steps_per_epoch, plan.epochs, settings.decay_rate)

    @property
    def warmup_length(self) -> int:
        """Optimizer steps of the warm-up: `warmup_steps`, for lavis-* at most the first epoch's steps."""
        if self.name == "warmup-cosine":
            return self.warmup_steps
        return min(self.warmup_steps, self.steps_per_epoch)

    def factor(self, step: int) -> float:
        if self.name == "warmup-cosine":
            return learning_rate_factor(step, self.warmup_steps, self.total_steps)
        epoch = step // max(1, self.steps_per_epoch)
        if epoch == 0:
            return min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.name == "lavis-step":
            return self.decay_rate**epoch
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, self.epochs)))

    def describe(self) -> str:
        return f"{self.name}, warm-up {self.warmup_length} of {self.total_steps} steps"


def check_warmup(schedule: Schedule, allow_long_warmup: bool) -> None:
    """Refuse a round that would end before its warm-up does (`--allow-long-warmup` accepts it).

    The warm-up is too long when `schedule.warmup_length` > the round's
    optimizer steps: for warmup-cosine when warmup_steps > steps; for the
    lavis-* schedules (whose warm-up stops at the end of the first epoch)
    only when the whole round is shorter than both warmup_steps and one epoch
    (a max_steps cap or a single epoch).
    """
    if schedule.warmup_length > schedule.total_steps and not allow_long_warmup:
        raise InputError(
            "--warmup-steps",
            f"warm-up of {schedule.warmup_length} optimizer steps is longer than the round's {schedule.total_steps} "
            f"({schedule.name}): the learning rate would never reach train.lr; lower train.warmup_steps, use a "
            "lavis-* schedule, or pass --allow-long-warmup",
        )
