"""The inference runner: questions in; answers, beams, entropies and sequence scores out (DESIGN §8).

`score` and `predict` both call `run_inference`. It

- cuts the questions into shards of `shard_size` consecutive questions (the
  cut never depends on the number of processes, so neither do the batches
  nor, therefore, the answers);
- splits the shards that are not finished yet across the `accelerate`
  processes (`PartialState.split_between_processes`: contiguous, the same on
  every process), each process answering its shards in batches;
- writes every finished shard atomically to
  `<shard root>/<job>/<key>/shard-<index>.parquet`, where the key hashes the
  model's files, the questions, the decoding settings and everything else
  that changes an answer: a rerun after a kill skips the finished shards of
  the same key, and shards of any other key are deleted, never read;
- shows one progress line on the main process, counting the shards every
  process has finished (the shard directory is shared, as the outputs are);
- returns, on the main process, the beams of every shard in question order
  (`InferenceRun.beams`), once all shards exist.

The caller deletes the shard root after writing its outputs, so DVC sees
only the outputs (identical whatever the number of processes or restarts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reltune.inference.questions import QuestionSource, questions_fingerprint
from reltune.io import atomic_path
from reltune.progress import log, progress_bar

if TYPE_CHECKING:
    from accelerate import PartialState

SHARD_FORMAT = 1  # bump when the shard table changes: old shards then never match
SHARD_PATTERN = "shard-{index:06d}.parquet"
PROGRESS_SCAN_SECONDS = 2.0  # how often the main process counts the other processes' shards

# (questions, on_batch(questions answered)) -> beams with `question` = row position in `questions`
Answerer = Callable[[pd.DataFrame, Callable[[int], None]], pd.DataFrame]


@dataclass(frozen=True)
class InferenceJob:
    """One set of questions to answer with one model and one set of settings.

    `name`: shard sub-directory and progress text; `shard_root`: a directory
    under the stage's output; `identity`: everything besides the questions
    that changes an answer (model fingerprint, decoding settings, crops,
    device), JSON-serialisable; `stop_after_shards`: test hook, SIGKILL this
    process after writing that many shards.
    """

    name: str
    questions: QuestionSource
    shard_root: Path
    identity: dict[str, Any]
    shard_size: int
    stop_after_shards: int = 0


@dataclass
class InferenceRun:
    """Where the shards of a finished job are, and what this process did."""

    directory: Path
    shard_size: int
    shard_count: int
    questions: int
    skipped: int  # shards found finished at the start (whole run)
    answered_shards: int = 0  # by this process
    answered_questions: int = 0  # by this process
    seconds: float = 0.0
    process_index: int = 0

    def shard_path(self, index: int) -> Path:
        return self.directory / SHARD_PATTERN.format(index=index)

    def beams(self) -> Iterator[pd.DataFrame]:
        """Every shard's beams in order (`question`: position in the whole question list)."""
        for index in range(self.shard_count):
            yield pd.read_parquet(self.shard_path(index))

    def timing(self) -> dict[str, Any]:
        return {
            "shards_answered": self.answered_shards,
            "questions_answered": self.answered_questions,
            "shards_skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def model_fingerprint(directory: str | Path) -> str:
    """Hex digest of every file of a backbone directory (names and bytes): changes iff the model may."""
    root = Path(directory)
    digest = hashlib.sha256()
    if not root.is_dir():  # a hub id resolved from the local cache: its name is what we know
        digest.update(f"hub:{directory}".encode())
    for path in sorted(item for item in root.rglob("*") if item.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}|{path.stat().st_size}|".encode())
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def job_key(job: InferenceJob) -> str:
    """The shard key: a digest of the questions, the shard size and the job's identity."""
    content = {
        "format": SHARD_FORMAT,
        "name": job.name,
        "shard_size": job.shard_size,
        "questions": questions_fingerprint(job.questions, job.shard_size),
        "identity": job.identity,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:24]


def shard_sizes(questions: int, shard_size: int) -> list[int]:
    """Questions per shard: `shard_size` each, the last one what is left."""
    return [min(shard_size, questions - start) for start in range(0, questions, shard_size)]


def _readable_shard(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def prepare_shard_directory(job_root: Path, key: str, shard_count: int) -> tuple[Path, list[int]]:
    """Delete other keys' shards, create this key's directory; the indices of its finished shards."""
    directory = job_root / key
    if job_root.is_dir():
        for entry in job_root.iterdir():
            if entry.name != key:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                log(f"inference: removed stale shards {entry} (another model, question set or setting)")
    directory.mkdir(parents=True, exist_ok=True)
    finished = []
    for index in range(shard_count):
        path = directory / SHARD_PATTERN.format(index=index)
        if path.is_file():
            if _readable_shard(path):
                finished.append(index)
            else:  # cannot happen with atomic writes, unless the disk lies: answer it again
                path.unlink()
    return directory, finished


class _Progress:
    """The main process's progress line: questions done by every process, rate, ETA."""

    def __init__(self, run: InferenceRun, sizes: list[int], finished: list[int], state: PartialState, name: str):
        self.run, self.sizes, self.enabled = run, sizes, state.is_main_process
        self.initial = sum(sizes[index] for index in finished)
        self.others_done = self.initial
        self.own_in_shard = 0
        self.started = self.last_scan = time.perf_counter()
        self.name = f"{name} ({state.num_processes} process{'es' if state.num_processes > 1 else ''})"
        self.bar = progress_bar() if self.enabled else None
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.name, total=sum(sizes), completed=self.initial)

    def advance(self, questions: int) -> None:
        self.own_in_shard += questions
        self._refresh(scan=time.perf_counter() - self.last_scan >= PROGRESS_SCAN_SECONDS)

    def shard_written(self) -> None:
        self.own_in_shard = 0
        self._refresh(scan=True)

    def _refresh(self, scan: bool) -> None:
        if self.bar is None:
            return
        if scan:  # finished shards of every process, this one's included
            self.last_scan = time.perf_counter()
            names = {entry.name for entry in os.scandir(self.run.directory)}
            self.others_done = sum(
                size for index, size in enumerate(self.sizes) if SHARD_PATTERN.format(index=index) in names
            )
        done = self.others_done + self.own_in_shard
        rate = (done - self.initial) / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, completed=done, description=f"{self.name} {rate:,.1f} questions/s")

    def close(self) -> None:
        if self.bar is not None:
            self._refresh(scan=True)
            self.bar.stop()


def _write_shard(path: Path, beams: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(beams, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def _answer_own_shards(
    job: InferenceJob, run: InferenceRun, mine: set[int], answer: Answerer, progress: _Progress
) -> None:
    """Stream the questions, answer the shards in `mine`, write each one when done."""
    if not mine:
        return
    for index, chunk in enumerate(job.questions.chunks(job.shard_size)):
        if index not in mine:
            continue
        beams = answer(chunk, progress.advance)
        beams["question"] = beams["question"].to_numpy() + index * job.shard_size
        _write_shard(run.shard_path(index), beams)
        run.answered_shards += 1
        run.answered_questions += len(chunk)
        progress.shard_written()
        if job.stop_after_shards and run.answered_shards == job.stop_after_shards:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard crash, nothing cleaned up
        if run.answered_shards == len(mine):
            return


def run_inference(job: InferenceJob, answer: Answerer, state: PartialState) -> InferenceRun:
    """Answer every question of `job` across the processes of `state`; see the module docstring.

    Every process must call it. On the main process the returned run's
    shards are all there (`beams()`); on the others it only reports what
    that process did.
    """
    from accelerate.utils import broadcast_object_list

    started = time.perf_counter()
    sizes = shard_sizes(len(job.questions), job.shard_size)
    job_root = job.shard_root / job.name
    shared: list[Any] = [None, None]
    if state.is_main_process:
        key = job_key(job)
        shared = [key, prepare_shard_directory(job_root, key, len(sizes))[1]]
    key, finished = broadcast_object_list(shared)
    run = InferenceRun(job_root / key, job.shard_size, len(sizes), len(job.questions), len(finished))
    run.process_index = state.process_index
    pending = [index for index in range(len(sizes)) if index not in set(finished)]
    with state.split_between_processes(pending) as mine:
        own = set(mine)
    if state.is_main_process and finished:
        log(f"inference: {job.name}: {len(finished)} of {len(sizes)} shards already answered, skipped")
    progress = _Progress(run, sizes, finished, state, job.name)
    try:
        _answer_own_shards(job, run, own, answer, progress)
    finally:
        progress.close()
    state.wait_for_everyone()
    run.seconds = time.perf_counter() - started
    if state.is_main_process:
        missing = [index for index in range(len(sizes)) if not run.shard_path(index).is_file()]
        if missing:
            raise RuntimeError(f"{job.name}: shards {missing[:5]} of {run.directory} were not written")
    return run


def answered_chunks(run: InferenceRun, questions: QuestionSource) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(questions, beams) per shard, in order; beams' `question` is the row position in the chunk."""
    for index, (chunk, beams) in enumerate(zip(questions.chunks(run.shard_size), run.beams(), strict=True)):
        beams = beams.assign(question=beams["question"].to_numpy() - index * run.shard_size)
        if len(beams) and (beams["question"].min() < 0 or beams["question"].max() >= len(chunk)):
            raise RuntimeError(f"shard {index} of {run.directory} does not answer its questions")
        yield chunk, beams


def remove_shards(shard_root: Path) -> None:
    """Delete a stage's shard root (after its outputs are written)."""
    shutil.rmtree(shard_root, ignore_errors=True)


def write_parquet_stream(path: str | Path, chunks: Iterator[pd.DataFrame], empty: pd.DataFrame) -> int:
    """Write the chunks as one parquet table, one row group each, atomically; `empty` when there are none.

    The schema is the first chunk's (a column with no values there is a string column).
    Returns the number of rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, writer, schema = 0, None, None
    with atomic_path(path) as temporary:
        try:
            for chunk in chunks:
                table = pa.Table.from_pandas(chunk, preserve_index=False).replace_schema_metadata(None)
                if writer is None:
                    schema = pa.schema(
                        [item.with_type(pa.string()) if pa.types.is_null(item.type) else item for item in table.schema]
                    )
                    writer = pq.ParquetWriter(temporary, schema)
                writer.write_table(table.cast(schema))
                rows += len(chunk)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            pq.write_table(pa.Table.from_pandas(empty, preserve_index=False).replace_schema_metadata(None), temporary)
    return rows
