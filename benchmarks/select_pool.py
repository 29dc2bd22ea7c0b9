"""Benchmark ART selection: closed form at VG scale, and against the literal Alg. 1 loop.

    .venv/bin/python benchmarks/select_pool.py [--rows 1000000] [--loop-rows 100000] [--repeats 5] [--seed 0]

1. A pool of --rows training positives over 50 predicates whose counts follow
   VG150's predicate_count (long tail), scored with random outcomes, entropies
   and similarities: time allocate_budget + art_select (target < 2 s).
2. On a --loop-rows pool with budgets from allocate_budget (computed once, as
   the loops take them as given): the literal Alg. 1 loop (per predicate,
   lower z from 1.96 by 0.1, test every sample against the thresholds, trim
   the overshoot by lowest z*) in plain Python, and the same loop with numpy
   masks per z, against art_select; asserts identical selections, reasons
   and z met and prints the speed-up ratios (target >= 50x over the literal
   loop): best of --repeats each, and (the machine may be shared, so load
   varies) the median ratio of --repeats pairs timed back to back, literal
   loop then art_select.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from reltune.sampling import allocate_budget, art_select

# VG150 predicate_count (VG-SGG-dicts-with-attri.json), sorted; only its shape is used.
VG150_PREDICATE_COUNTS = [
    712409, 277936, 251756, 146339, 136099, 96589, 66425, 47341, 42722, 41356, 22596, 18643, 15457, 14185,
    13715, 10190, 9903, 9894, 9317, 9145, 8856, 5213, 4688, 4613, 3810, 3806, 3739, 3624, 3490, 3477, 3411,
    3288, 3095, 3092, 3083, 2945, 2721, 2517, 2380, 2312, 2253, 2241, 2065, 1996, 1973, 1925, 1914, 1869,
    1853, 1740,
]
COMPONENTS = ("h_tp", "h_fn", "t_fn", "t_fp")
REASONS = {"h_tp": "tp_high_entropy", "h_fn": "fn_high_entropy", "t_fn": "fn_low_entropy", "t_fp": "fp_low_similarity"}


def long_tailed_counts(rows: int) -> np.ndarray:
    shares = np.array(VG150_PREDICATE_COUNTS, dtype=float) / sum(VG150_PREDICATE_COUNTS) * rows
    counts = np.floor(shares).astype(int)
    counts[np.argsort(-(shares - counts))[: rows - counts.sum()]] += 1
    return counts


def make_pool(rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, float]]:
    rng = np.random.default_rng(seed)
    counts = long_tailed_counts(rows)
    predicates = np.repeat([f"predicate_{index:02d}" for index in range(len(counts))], counts)
    outcome = rng.choice(np.array(["TP", "FN", "FP"]), size=rows, p=[0.5, 0.3, 0.2])
    pool = pd.DataFrame(
        {
            "qid": [f"vg150/train/{index:07d}" for index in rng.permutation(rows)],
            "predicate": predicates,
            "outcome": outcome,
            "entropy": rng.gamma(2.0, 0.3, size=rows),
            "similarity": np.where(outcome == "FP", rng.uniform(0.2, 1.0, size=rows), np.nan),
        }
    )
    recall = {name: float(value) for name, value in zip(np.unique(predicates), rng.uniform(0, 1, len(counts)))}
    return pool.sample(frac=1.0, random_state=seed).reset_index(drop=True), recall


def group_stats(values: list[float]) -> tuple[float, float]:
    """Population mean and std + 1e-6, summed in ascending order (as reltune.sampling.art)."""
    if len(values) < 2:
        return 0.0, 1.0
    ordered = np.sort(np.asarray(values, dtype=float))
    mean = float(np.sum(ordered)) / len(ordered)
    return mean, math.sqrt(float(np.sum((ordered - mean) ** 2)) / len(ordered)) + 1e-6


def literal_loop(pool: pd.DataFrame, budgets: dict[str, int], z_init=1.96, z_step=0.1):
    """Alg. 1 step 2 as printed, all four components, in plain Python."""
    selected: dict[str, str] = {}
    z_met: dict[str, float] = {}
    for predicate, group in pool.groupby("predicate", sort=True):
        budget = budgets.get(predicate, 0)
        if budget <= 0:
            continue
        tp = [(q, h) for q, o, h in zip(group["qid"], group["outcome"], group["entropy"]) if o == "TP"]
        fn = [(q, h) for q, o, h in zip(group["qid"], group["outcome"], group["entropy"]) if o == "FN"]
        fp = [(q, s) for q, o, s in zip(group["qid"], group["outcome"], group["similarity"]) if o == "FP"]
        taken: dict[str, tuple[str, float]] = {}
        k = 0
        while len(taken) < budget:
            z = z_init - k * z_step
            mu_tp, sd_tp = group_stats([h for _, h in tp])  # Alg. 1 recomputes these inside the loop
            mu_fn, sd_fn = group_stats([h for _, h in fn])
            mu_fp, sd_fp = group_stats([s for _, s in fp])
            for qid, h in tp:
                if h > mu_tp + z * sd_tp and qid not in taken:
                    taken[qid] = ("h_tp", (h - mu_tp) / sd_tp)
            for qid, h in fn:
                if h > mu_fn + z * sd_fn and qid not in taken:
                    taken[qid] = ("h_fn", max((h - mu_fn) / sd_fn, (mu_fn - h) / sd_fn))
            for qid, h in fn:
                if h < mu_fn - z * sd_fn and qid not in taken:
                    taken[qid] = ("t_fn", max((h - mu_fn) / sd_fn, (mu_fn - h) / sd_fn))
            for qid, s in fp:
                if s < mu_fp - z * sd_fp and qid not in taken:
                    taken[qid] = ("t_fp", (mu_fp - s) / sd_fp)
            if len(taken) < budget:
                k += 1
        z_met[predicate] = z
        for qid, (component, _) in sorted(taken.items(), key=lambda item: (-item[1][1], item[0]))[:budget]:
            selected[qid] = REASONS[component]
    return selected, z_met


def numpy_loop(pool: pd.DataFrame, budgets: dict[str, int], z_init=1.96, z_step=0.1):
    """The same loop with numpy masks per criterion and z (a fairer baseline than plain Python)."""
    selected: dict[str, str] = {}
    z_met: dict[str, float] = {}
    for predicate, group in pool.groupby("predicate", sort=True):
        budget = budgets.get(predicate, 0)
        if budget <= 0:
            continue
        qids = group["qid"].to_numpy()
        outcome = group["outcome"].to_numpy()
        value = np.where(outcome == "FP", group["similarity"].to_numpy(), group["entropy"].to_numpy())
        (mu_tp, sd_tp), (mu_fn, sd_fn), (mu_fp, sd_fp) = (
            group_stats(list(value[outcome == name])) for name in ("TP", "FN", "FP")
        )
        is_tp, is_fn, is_fp = outcome == "TP", outcome == "FN", outcome == "FP"
        z_star = np.select(
            [is_tp, is_fn],
            [(value - mu_tp) / sd_tp, np.maximum((value - mu_fn) / sd_fn, (mu_fn - value) / sd_fn)],
            (mu_fp - value) / sd_fp,
        )
        reason = np.full(len(group), None, dtype=object)
        k = 0
        while True:
            z = z_init - k * z_step
            for component, passes in (
                ("h_tp", is_tp & (value > mu_tp + z * sd_tp)),
                ("h_fn", is_fn & (value > mu_fn + z * sd_fn)),
                ("t_fn", is_fn & (value < mu_fn - z * sd_fn)),
                ("t_fp", is_fp & (value < mu_fp - z * sd_fp)),
            ):
                reason[passes & (reason == None)] = REASONS[component]  # noqa: E711 (elementwise)
            if (reason != None).sum() >= budget:  # noqa: E711
                break
            k += 1
        z_met[predicate] = z
        rows = np.flatnonzero(reason != None)  # noqa: E711
        order = sorted(rows, key=lambda row: (-z_star[row], qids[row]))[:budget]
        selected.update({qids[row]: reason[row] for row in order})
    return selected, z_met


def closed_form(pool: pd.DataFrame, recall: dict[str, float], budget: int):
    available = pool["predicate"].value_counts().to_dict()
    budgets = allocate_budget(recall, available, budget)
    return budgets, art_select(pool, budgets, COMPONENTS)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def best_of(repeats: int, function, *args):
    runs = [timed(function, *args) for _ in range(repeats)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop-rows", type=int, default=100_000)
    parser.add_argument("--budget-fraction", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pool, recall = make_pool(args.rows, args.seed)
    budget = round(args.budget_fraction * args.rows)
    seconds, (budgets, result) = best_of(args.repeats, closed_form, pool, recall, budget)
    counts = long_tailed_counts(args.rows)
    print(f"pool {args.rows:,} rows, 50 predicates (largest {counts.max():,}, smallest {counts.min():,}), budget {budget:,}")
    print(f"allocate_budget + art_select: {seconds:.3f} s (best of {args.repeats}; target < 2 s) -> {len(result):,} selected")

    small, small_recall = make_pool(args.loop_rows, args.seed + 1)
    small_budget = round(args.budget_fraction * args.loop_rows)
    small_budgets = allocate_budget(small_recall, small["predicate"].value_counts().to_dict(), small_budget)
    art_select(small, small_budgets, COMPONENTS)  # warm-up (imports, caches)
    closed_seconds, small_result = best_of(args.repeats, art_select, small, small_budgets, COMPONENTS)
    literal_seconds, (literal_selected, literal_z) = best_of(args.repeats, literal_loop, small, small_budgets)
    numpy_seconds, (numpy_selected, numpy_z) = best_of(args.repeats, numpy_loop, small, small_budgets)
    paired_ratios = []
    for _ in range(args.repeats):
        literal_pair, _ = timed(literal_loop, small, small_budgets)
        closed_pair, _ = timed(art_select, small, small_budgets, COMPONENTS)
        paired_ratios.append(literal_pair / closed_pair)

    closed_selected = dict(zip(small_result["qid"], small_result["reason"]))
    closed_z = {p: z for p, z in small_result.attrs["z_met"].items()}
    assert closed_selected == literal_selected, "closed form and literal loop select differently"
    assert closed_selected == numpy_selected, "closed form and numpy loop select differently"
    assert closed_z == literal_z == numpy_z, "z met differs"
    print(f"pool {args.loop_rows:,} rows, budget {small_budget:,}: identical selections, reasons and z met")
    print(
        f"  art_select {closed_seconds * 1e3:.2f} ms | literal loop {literal_seconds:.3f} s | "
        f"numpy-mask loop {numpy_seconds:.3f} s (best of {args.repeats} each)"
    )
    print(f"  speed-up vs literal loop: {literal_seconds / closed_seconds:.1f}x (best of {args.repeats}; target >= 50x)")
    print(
        f"  speed-up vs literal loop, {args.repeats} back-to-back pairs: median {float(np.median(paired_ratios)):.1f}x "
        f"(range {min(paired_ratios):.1f}-{max(paired_ratios):.1f}x)"
    )
    print(f"  speed-up vs numpy-mask loop: {numpy_seconds / closed_seconds:.1f}x")


if __name__ == "__main__":
    main()
