"""`reltune plan`: what a parameter file will cost, before anyone spends GPU-days (issue 14).

For every tuned model of the round chain (`sampling.rounds`, `train_on`) it
prints the selected positives it trains on, its training examples (with their
negatives, the rare predicates' repeats of `train.repeat_threshold`, the
replayed where-questions of `train.replay`, the copy questions of
`train.copy_replay` and, with name substitution in mode
`add`, the expected renamed copies), its epochs and optimizer steps for the
given process count, the warm-up share of those steps (`train.schedule`), the pool rows its score stage
answers and the generate calls of that stage, and, given the throughput JSON
of `benchmarks/gpu_shapes.py --json`, GPU hours per stage and in total.

Budgets come from the selection code itself (`round_budget`,
`balanced_allocation`, `allocate_budget`); where they depend on recall that
only a trained model gives (ART's recall-weighted split, which decides the
capped pool subset), the plan assumes equal recall for every predicate and
says so. A configuration that cannot run is refused with one line: a warm-up
longer than a round's training (unless `train.allow_long_warmup`), a budget
larger than the pool left, a round chain that does not close.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reltune.argtypes import non_negative_int, positive_int
from reltune.errors import InputError
from reltune.io import read_json

if TYPE_CHECKING:  # the model stack stays unimported until a plan needs its settings
    from reltune.models.schedule import TrainSettings

# Keys of the throughput JSON (benchmarks/gpu_shapes.py --json): one GPU's rates.
TRAIN_RATE_KEY = "train_samples_per_s"
SCORE_RATE_KEY = "score_questions_per_s"


@dataclass(frozen=True)
class RoundPlan:
    """One tuned model of the chain and the score stage that uses it (the final model has none)."""

    round: str
    selection_round: int  # the selection it trains on
    positives: int
    examples: int
    epochs: int  # train.epochs, or more where train_on.<model>.min_steps raises them
    steps: int
    warmup_steps: int
    pool_rows: int
    generate_calls: int
    train_gpu_hours: float | None = None
    score_gpu_hours: float | None = None

    @property
    def warmup_share(self) -> float:
        return self.warmup_steps / self.steps if self.steps else 1.0

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "warmup_share": round(self.warmup_share, 4)}


# ---------------------------------------------------------------- inputs


# what a whole params file has; a profile (reltune.profiles) holds only what it changes
PARAMS_SECTIONS = ("train", "sampling", "instructions")


def resolve_params(path: Path, base: Path) -> dict:
    """params.yaml itself, or a profile (a file with `replace:` or without some section) merged onto `base`."""
    from reltune.profiles import load_yaml, merge_profile

    params = load_yaml(path)
    if "replace" in params or not all(section in params for section in PARAMS_SECTIONS):
        params = merge_profile(load_yaml(base), params)
    for section in PARAMS_SECTIONS:
        if not isinstance(params.get(section), Mapping):
            raise InputError(path, f"no `{section}` mapping (a params file or a profile over --base)")
    return params


def counts_from_json(path: Path) -> dict[str, int]:
    """Positives per predicate from a JSON mapping, or from its `predicate_count` (VG150 dicts files)."""
    from reltune.io import read_json

    data = read_json(path)
    counts = data.get("predicate_count", data) if isinstance(data, dict) else None
    if not isinstance(counts, dict) or not counts:
        raise InputError(path, "expected a non-empty {predicate: count} mapping or a `predicate_count` key")
    for predicate, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError(path, f"count must be a non-negative integer, got {count!r}", predicate)
    return {str(predicate): int(count) for predicate, count in counts.items()}


def counts_from_scenes(scene_dir: Path, split: str) -> dict[str, int]:
    """Distinct relations per predicate of a scene split: the positives `instructions` makes of it."""
    from reltune.data.scenes import read_scenes
    from reltune.instructions.relations import explode_relations

    scenes, _ = read_scenes(scene_dir, split)
    relations = explode_relations(scenes, str(scene_dir))
    distinct = relations.drop_duplicates(["image_row", "subj", "obj", "predicate"])
    return {str(name): int(count) for name, count in distinct["predicate"].value_counts().sort_index().items()}


def counts_from_instructions(path: Path) -> tuple[dict[str, int], float]:
    """Positives per predicate of an instruction table and its negatives per positive."""
    from reltune.io import read_parquet

    table = read_parquet(path, ["kind", "predicate"])
    positives = table[table["kind"] == "positive"]
    if positives.empty:
        raise InputError(path, "no positive instructions")
    negatives = int((table["kind"] == "negative").sum())
    counts = {str(name): int(count) for name, count in positives["predicate"].value_counts().sort_index().items()}
    return counts, negatives / len(positives)


def negatives_per_positive(params: Mapping) -> float:
    """Negatives each selected positive brings, per `instructions` (at most: a pair may lack another category)."""
    instructions = params["instructions"]
    return 0.0 if instructions.get("negatives", "counter") == "none" else float(instructions.get("negatives_per_positive", 1))


def renamed_copies(questions: int, settings: TrainSettings) -> int:
    """Expected questions asked once more with names replaced (`train.name_substitution_mode: add`).

    Each question is copied with the chance that substitution changes it, 1 - (1 - p)^2 for its two
    names (`reltune.models.names.substitution_share`; a pair of one class has one name, so this is
    an upper estimate); mode `replace` alters questions without adding any.
    """
    from reltune.models.names import substitution_share

    if settings.name_substitution_mode != "add" or settings.name_substitution <= 0:
        return 0
    return math.floor(questions * substitution_share(("subject", "object"), settings.name_substitution))


def train_settings(params: Mapping, source: Path) -> TrainSettings:
    """TrainSettings of `train` (unknown keys refused: a typo would silently plan the default)."""
    from reltune.models.schedule import TrainSettings

    fields = {field.name for field in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(params["train"]) - fields)
    if unknown:
        raise InputError(source, f"unknown train parameter(s) {unknown}", "train")
    values = dict(params["train"])
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return dataclasses.replace(TrainSettings(), **values)


def read_throughput(path: Path) -> dict[str, float]:
    from reltune.io import read_json

    data = read_json(path)
    rates = {}
    for key in (TRAIN_RATE_KEY, SCORE_RATE_KEY):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InputError(path, f"expected a positive number under {key!r}, got {value!r}")
        rates[key] = float(value)
    return rates


# ---------------------------------------------------------------- the round chain


def _round_number(key: object, source: Path, where: str) -> int:
    try:
        number = int(str(key))
    except ValueError:
        raise InputError(source, f"round {key!r} is not a number", where) from None
    if number < 0:
        raise InputError(source, f"round {number} is negative", where)
    return number


@dataclass(frozen=True)
class TunedModel:
    """One item of `train_on`: the selection round a model trains on and its floor of optimizer steps."""

    selection: int
    min_steps: int


def tuned_model(item: object, source: Path, name: str) -> TunedModel:
    """`train_on.<name>` read: {selection: N, min_steps: N}; the older bare round number is refused with the new form."""
    where = f"train_on.{name}"
    if not isinstance(item, Mapping) or set(item) != {"selection", "min_steps"}:
        raise InputError(source, f"expected {{selection: <round>, min_steps: <steps>}}, got {item!r}", where)
    min_steps = item["min_steps"]
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise InputError(source, f"min_steps must be a whole number of steps >= 0, got {min_steps!r}", where)
    return TunedModel(_round_number(item["selection"], source, f"{where}.selection"), min_steps)


def selection_round_of(item: object) -> int:
    """The selection round of a `train_on` item, in today's form or the bare number older commits hold."""
    return int(item["selection"] if isinstance(item, Mapping) else item)


def round_chain(params: Mapping, source: Path) -> tuple[dict[int, int], dict[str, TunedModel]]:
    """({score round k: its previous selection round}, {tuned model: what it trains on}).

    Closes when every previous is 0 (the seed) or another round, no chain
    loops, every model trains on an existing selection, a `final` model
    exists, and score round k uses the model k trained on its previous round.
    """
    sampling = params["sampling"]
    rounds: dict[int, int] = {}
    for key, item in (sampling.get("rounds") or {}).items():
        previous = item.get("previous") if isinstance(item, Mapping) else None
        rounds[_round_number(key, source, "sampling.rounds")] = _round_number(previous, source, f"sampling.rounds.{key}.previous")
    if 0 in rounds:
        raise InputError(source, "round 0 is the seed; rounds start at 1", "sampling.rounds")
    for start in rounds:
        seen, current = {start}, start
        while current != 0:
            current = rounds.get(current, -1)
            if current == -1 or current in seen:
                raise InputError(source, f"the chain of round {start} does not reach the seed (round 0)", "sampling.rounds")
            seen.add(current)
    if "train_on" in params:
        if "min_steps" in params["train"]:  # dvc.yaml passes train_on's: this one would be planned, not trained
            raise InputError(source, "train.min_steps is per model now: train_on.<model>.min_steps", "train.min_steps")
        models = {str(name): tuned_model(item, source, str(name)) for name, item in params["train_on"].items()}
    else:  # older params: one model per round, and the final one on sampling.last_round, all with train.min_steps
        min_steps = int(params["train"].get("min_steps", 0))
        models = {str(k): TunedModel(previous, min_steps) for k, previous in rounds.items()}
        last = _round_number(sampling.get("last_round", max(rounds, default=0)), source, "sampling.last_round")
        models["final"] = TunedModel(last, min_steps)
    if "final" not in models:
        raise InputError(source, "no `final` model to evaluate", "train_on")
    for name, model in models.items():
        if model.selection != 0 and model.selection not in rounds:
            raise InputError(source, f"model {name} trains on selection {model.selection}, which no round makes",
                             f"train_on.{name}.selection")  # fmt: skip
    for k, previous in rounds.items():
        if str(k) not in models or models[str(k)].selection != previous:
            raise InputError(source, f"score round {k} needs model {k} trained on selection {previous}", f"train_on.{k}")
    return rounds, models


# ---------------------------------------------------------------- selections and pools


def _take(available: Mapping[str, int], budget: int, balanced: bool) -> dict[str, int]:
    """Per-predicate picks of one round: Alg. 2 for a balanced seed, else the equal-recall ART split."""
    from reltune.sampling import allocate_budget, balanced_allocation

    return balanced_allocation(available, budget) if balanced else allocate_budget({}, available, budget)


def selections(
    counts: Mapping[str, int], rounds: Mapping[int, int], sampling: Mapping, source: Path
) -> tuple[int, dict[int, dict[str, int]]]:
    """(round budget B, {selection round: cumulative selected positives per predicate}); a budget over the pool is refused."""
    from reltune.sampling import round_budget

    total = sum(counts.values())
    budget = round_budget(float(sampling.get("budget_fraction", 0.0)), total)
    if budget == 0 and "full" not in (sampling.get("seed_strategy"), sampling.get("strategy")):
        raise InputError(source, f"budget_fraction x {total} training positives rounds to a budget of 0", "sampling.budget_fraction")
    selected: dict[int, dict[str, int]] = {}
    for current in [0, *sorted(rounds, key=lambda k: _depth(k, rounds))]:
        before = selected[rounds[current]] if current else {name: 0 for name in counts}
        available = {name: counts[name] - before[name] for name in counts}
        strategy = sampling.get("seed_strategy", "balanced") if current == 0 else sampling.get("strategy", "art")
        if strategy == "full":
            taken = available
        elif budget > sum(available.values()):
            raise InputError(
                source, f"round {current}: budget {budget} is larger than the {sum(available.values())} positives left in the pool",
                "sampling.budget_fraction",
            )  # fmt: skip
        else:
            taken = _take(available, budget, balanced=current == 0 and strategy == "balanced")
        selected[current] = {name: before[name] + taken[name] for name in counts}
    return budget, selected


def _depth(round_key: int, rounds: Mapping[int, int]) -> int:
    depth = 0
    while round_key != 0:
        round_key, depth = rounds[round_key], depth + 1
    return depth


def pool_rows(available: Mapping[str, int], budget: int, sampling: Mapping) -> int:
    """Pool rows the score stage answers: none for score-free strategies, all (cap 0) or the capped subset.

    The cap keeps min(N_p, floor(C x B'_p)) rows per predicate
    (`pool_scoring_candidates`); B'_p is the equal-recall split here.
    """
    from reltune.sampling import allocate_budget, make_strategy

    if not make_strategy(str(sampling.get("strategy", "art"))).needs_scores:
        return 0
    cap = float(sampling.get("pool_cap_factor", 0))
    if cap == 0:
        return sum(available.values())
    shares = allocate_budget({}, available, budget)
    return sum(min(count, math.floor(cap * shares[name])) for name, count in available.items())


# ---------------------------------------------------------------- the plan

# `--positives N` states one pseudo-predicate: enough unless a setting depends on the per-predicate split
ALL_PREDICATES = "(all)"


@dataclass(frozen=True)
class PlanInputs:
    counts: dict[str, int]  # training positives per predicate
    negatives_per_positive: float
    processes: int = 1
    val_positives: int = 0  # validation positives the score stage answers every round
    throughput: dict[str, float] | None = None


def plan_rounds(params: Mapping, inputs: PlanInputs, source: Path) -> tuple[int, list[RoundPlan]]:
    """(round budget, one RoundPlan per tuned model in chain order); refuses what cannot run."""
    from reltune.models.converses import converse_pairs
    from reltune.models.repeats import repeated_counts
    from reltune.models.schedule import BatchPlan, Schedule, check_warmup, replay_count

    settings = train_settings(params, source)
    converses = converse_pairs(settings.converse_predicates, "train.converse_predicates")
    by_predicate = [name for name, on in (("train.repeat_threshold", settings.repeat_threshold > 0),
                                          ("train.converse_predicates", bool(converses))) if on]  # fmt: skip
    if by_predicate and set(inputs.counts) == {ALL_PREDICATES}:
        raise InputError(source, f"{by_predicate[0]} needs per-predicate counts (--counts, --instructions or --scenes), "
                         "not --positives", by_predicate[0])  # fmt: skip
    rounds, models = round_chain(params, source)
    budget, selected = selections(inputs.counts, rounds, params["sampling"], source)
    plans = []
    for name, model in sorted(models.items(), key=lambda item: (item[0] == "final", _sort_key(item[0]))):
        selection_round = model.selection
        positives = sum(selected[selection_round].values())
        repeated = repeated_counts(selected[selection_round], settings.repeat_threshold)  # rare ones repeated
        # each (repeated) question of a converse predicate asked again swapped: at most, as skips need the pairs
        asked = sum(repeated.values()) + sum(count for predicate, count in repeated.items() if predicate in converses)
        questions = asked + math.floor(asked * inputs.negatives_per_positive)
        # replayed where- and copy questions are renamed too
        questions += replay_count(questions, settings.replay) + replay_count(questions, settings.copy_replay)
        examples = questions + renamed_copies(questions, settings)
        model_settings = dataclasses.replace(settings, min_steps=model.min_steps)
        batch_plan = BatchPlan.of(model_settings, examples, inputs.processes)
        schedule = Schedule.of(model_settings, batch_plan)
        try:
            check_warmup(schedule, settings.allow_long_warmup)
        except InputError as error:
            raise InputError(source, error.problem, f"train@{name}, {positives} positives") from None
        pool = 0
        if name != "final" and int(name) in rounds:
            available = {p: inputs.counts[p] - selected[rounds[int(name)]][p] for p in inputs.counts}
            pool = pool_rows(available, budget, params["sampling"])
        validation = inputs.val_positives if name != "final" else 0
        best_epoch_calls = min(settings.val_questions or inputs.val_positives, inputs.val_positives) * batch_plan.epochs
        calls = pool + validation + (best_epoch_calls if settings.select_best else 0)
        train_hours = score_hours = None
        if inputs.throughput is not None:
            samples = batch_plan.total_steps * settings.batch_size * settings.grad_accum * inputs.processes
            train_hours = samples / inputs.throughput[TRAIN_RATE_KEY] / 3600
            score_hours = calls / inputs.throughput[SCORE_RATE_KEY] / 3600
        plans.append(RoundPlan(name, selection_round, positives, examples, batch_plan.epochs, batch_plan.total_steps,
                               min(schedule.warmup_length, batch_plan.total_steps), pool, calls, train_hours, score_hours))  # fmt: skip
    return budget, plans


def _sort_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (10**9, name)


def format_plan(plans: list[RoundPlan], header: str) -> str:
    hours = plans and plans[0].train_gpu_hours is not None
    columns = ["round", "trains on", "positives", "examples", "epochs", "steps", "warm-up", "pool rows", "generate calls"]
    columns += ["train GPU h", "score GPU h"] if hours else []
    rows = []
    for item in plans:
        row = [item.round, f"selection {item.selection_round}", f"{item.positives:,}", f"{item.examples:,}", f"{item.epochs:,}", f"{item.steps:,}",
               f"{item.warmup_steps:,} ({item.warmup_share:.0%})", f"{item.pool_rows:,}", f"{item.generate_calls:,}"]  # fmt: skip
        if hours:
            row += [f"{item.train_gpu_hours:.2f}", f"{item.score_gpu_hours:.2f}"]
        rows.append(row)
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(columns)]
    lines = [header, "  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    if hours:
        total = sum(item.train_gpu_hours + item.score_gpu_hours for item in plans)
        lines.append(f"total: {total:.2f} GPU hours (train + score; predict/evaluate not included)")
    return "\n".join(lines)


def validation_source(scene_dir: Path) -> str:
    """Where the held-in validation split comes from; refused when it is test images."""
    report_path = scene_dir / "import_report.json"
    if not report_path.is_file():
        return "validation source unknown (no import_report.json)"
    report = read_json(report_path)
    if report.get("val_uses_test_images"):
        raise InputError(report_path, "validation was carved from test images: as the held-in dataset its validation "
                         "would steer ART with test images; import it with --held-in-dataset (dvc.yaml does)")
    return "validation from training images"


def _inputs(args: argparse.Namespace, params: Mapping) -> tuple[PlanInputs, str]:
    """Counts and rates from the command line, and a line saying where the positives came from."""
    ratio = negatives_per_positive(params)
    val_positives = args.val_positives
    if args.positives is not None:
        # one pseudo-predicate: the per-predicate split only matters for a capped pool
        counts, origin = {ALL_PREDICATES: args.positives}, f"{args.positives:,} positives (stated)"
    elif args.counts is not None:
        counts, origin = counts_from_json(args.counts), f"per-predicate counts of {args.counts}"
    elif args.instructions is not None:
        counts, ratio = counts_from_instructions(args.instructions)
        origin = f"positives of {args.instructions} ({ratio:.2f} negatives each)"
    else:
        counts, origin = counts_from_scenes(args.scenes, "train"), f"train relations of {args.scenes}"
        origin += f", {validation_source(args.scenes)}"
        if val_positives is None and (args.scenes / "val.parquet").is_file():  # a dataset may have no val split
            val_positives = sum(counts_from_scenes(args.scenes, "val").values())
    throughput = read_throughput(args.throughput) if args.throughput else None
    inputs = PlanInputs(counts, ratio, args.processes, val_positives or 0, throughput)
    return inputs, origin


def run_plan(args: argparse.Namespace) -> int:
    params = resolve_params(args.params, args.base)
    inputs, origin = _inputs(args, params)
    budget, plans = plan_rounds(params, inputs, args.params)
    settings = train_settings(params, args.params)
    if args.json:
        summary = {
            "params": str(args.params), "positives_from": origin, "training_positives": sum(inputs.counts.values()),
            "round_budget": budget, "processes": inputs.processes, "schedule": settings.schedule,
            "assumes": "equal validation recall for every predicate (ART's budget split)",
            "rounds": [item.as_json() for item in plans],
        }  # fmt: skip
        print(json.dumps(summary, indent=2))
        return 0
    header = (
        f"{args.params}: {origin}; {sum(inputs.counts.values()):,} training positives, budget {budget:,} per round, "
        f"{inputs.processes} process(es), schedule {settings.schedule}, validation {inputs.val_positives:,} positives per score stage"
    )
    print(format_plan(plans, header))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="per round: positives, examples, optimizer steps, warm-up share, pool rows, GPU hours",
        description="What a parameter file (params.yaml or a profile) will train and score, round by round; "
        "exits non-zero with one line when the configuration cannot run.",
    )  # fmt: skip
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml or a profile (profiles/*.yaml)")
    parser.add_argument("--base", type=Path, default=Path("params.yaml"), help="what a profile is merged onto")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--positives", type=positive_int, default=None, help="number of training positives")
    source.add_argument("--counts", type=Path, default=None, help="JSON {predicate: count} or a file with `predicate_count`")
    source.add_argument("--scenes", type=Path, default=None, help="scene directory (its train split's relations)")
    source.add_argument("--instructions", type=Path, default=None, help="train instruction table (exact positives and negatives)")
    parser.add_argument("--val-positives", type=non_negative_int, default=None, help="validation positives scored per round (default: from --scenes, else 0)")
    parser.add_argument("--processes", type=positive_int, default=1, help="training processes (GPUs) per round")
    parser.add_argument("--throughput", type=Path, default=None, help=f"JSON with {TRAIN_RATE_KEY} and {SCORE_RATE_KEY} (one GPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (key `rounds`)")
    parser.set_defaults(func=run_plan)
