"""Rich progress bars on stderr for long work (DESIGN §10)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr_console = Console(stderr=True)


def progress_bar() -> Progress:
    """A progress display on stderr; disabled when RELTUNE_NO_PROGRESS is set."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        disable=bool(os.environ.get("RELTUNE_NO_PROGRESS")) or not sys.stderr.isatty() and bool(os.environ.get("CI")),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def log(message: str) -> None:
    """Log a line to stderr (data goes to files, never to stdout logs): one line however long (a log file
    keeps it whole for grep; a terminal wraps it), and printed as written (a name in brackets is not markup)."""
    stderr_console.print(message, highlight=False, soft_wrap=True, markup=False)
