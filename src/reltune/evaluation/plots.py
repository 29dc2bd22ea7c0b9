"""PNG plots for the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402

from reltune.io import atomic_path  # noqa: E402


def save_figure(figure: plt.Figure, path: str | os.PathLike) -> None:
    """Write a PNG atomically and free the figure."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_validation_recall(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    """Validation mean recall and recall per round."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(summary["round"], summary["mean_recall"], marker="o", label="mean recall")
    axis.plot(summary["round"], summary["recall"], marker="s", label="recall")
    axis.set_xlabel("round")
    axis.set_ylabel("validation recall (fraction)")
    axis.set_xticks(summary["round"].tolist())
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def plot_validation_heatmap(per_predicate: pd.DataFrame, path: str | os.PathLike) -> None:
    """Validation recall per predicate (rows) and round (columns)."""
    grid = per_predicate.pivot_table(index="predicate", columns="round", values="recall", aggfunc="mean").sort_index()
    figure, axis = plt.subplots(figsize=(1.2 + 0.6 * grid.shape[1], 1.0 + 0.22 * grid.shape[0]))
    image = axis.imshow(grid.to_numpy(), aspect="auto", vmin=0, vmax=1, cmap="viridis")
    axis.set_yticks(range(grid.shape[0]), grid.index.tolist(), fontsize=7)
    axis.set_xticks(range(grid.shape[1]), [str(k) for k in grid.columns])
    axis.set_xlabel("round")
    figure.colorbar(image, ax=axis, label="validation recall")
    save_figure(figure, path)


def plot_selection_per_round(per_round: pd.DataFrame, path: str | os.PathLike) -> None:
    """Stacked bars: instances added per round, by selection reason (component)."""
    reasons = [column for column in per_round.columns if column not in ("round", "total") and per_round[column].sum() > 0]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bottom = pd.Series(0, index=per_round.index, dtype=float)
    for reason in reasons:
        axis.bar(per_round["round"].astype(str), per_round[reason], bottom=bottom, label=reason)
        bottom = bottom + per_round[reason]
    axis.set_xlabel("round")
    axis.set_ylabel("instances added")
    if reasons:
        axis.legend(fontsize=7)
    save_figure(figure, path)


def plot_selection_per_predicate(per_predicate: pd.DataFrame, path: str | os.PathLike) -> None:
    """Horizontal stacked bars: selected instances per predicate, by round added."""
    round_columns = [column for column in per_predicate.columns if column.startswith("round_")]
    table = per_predicate.iloc[::-1]  # most selected at the top
    figure, axis = plt.subplots(figsize=(7, 1.0 + 0.22 * len(table)))
    left = pd.Series(0, index=table.index, dtype=float)
    for column in round_columns:
        axis.barh(table["predicate"], table[column], left=left, label=column.replace("_", " "))
        left = left + table[column]
    axis.set_xlabel("selected instances (cumulative)")
    axis.tick_params(axis="y", labelsize=7)
    if round_columns:
        axis.legend(fontsize=7)
    save_figure(figure, path)


def plot_per_predicate_recall(table: pd.DataFrame, columns: list[str], title: str, path: str | os.PathLike) -> None:
    """Horizontal bars of per-predicate recall (percent) for the given metric columns."""
    table = table.iloc[::-1]
    figure, axis = plt.subplots(figsize=(7, 1.0 + 0.22 * len(table) * max(1, len(columns)) / 1.5))
    height = 0.8 / max(1, len(columns))
    positions = pd.Series(range(len(table)), dtype=float)
    for offset, column in enumerate(columns):
        axis.barh(positions + offset * height, table[column].to_numpy(), height=height, label=column)
    axis.set_yticks((positions + height * (len(columns) - 1) / 2).tolist(), table["predicate"].astype(str).tolist(), fontsize=7)
    axis.set_xlim(0, 100)
    axis.set_xlabel("recall (%)")
    axis.set_title(title)
    axis.legend(fontsize=7)
    save_figure(figure, path)
