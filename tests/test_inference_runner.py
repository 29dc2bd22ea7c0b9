"""The inference runner: shards, resume, stale keys, streaming; 2 accelerate processes equal 1 (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_models_answers_helpers import (  # noqa: F401 (single_torch_thread: autouse fixture)
    answering_world,
    single_torch_thread,
)

from reltune.cli import main
from reltune.inference.questions import FrameQuestions, ParquetQuestions, questions_fingerprint
from reltune.inference.runner import (
    InferenceJob,
    answered_chunks,
    model_fingerprint,
    run_inference,
    write_parquet_stream,
)

# ------------------------------------------------------------------ the runner with a stand-in model


def question_table(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{index % 3}" for index in range(count)],
            "union_box": [[0.0, 0.0, float(index + 1), 4.0] for index in range(count)],
            "prompt": [f"question {index}" for index in range(count)],
        }
    )


class CountingAnswerer:
    """Answers question i of a chunk with its prompt reversed; counts the questions it was asked."""

    def __init__(self, fail_after_chunks: int = 0) -> None:
        self.asked: list[str] = []
        self.chunks = 0
        self.fail_after_chunks = fail_after_chunks

    def __call__(self, questions: pd.DataFrame, on_batch) -> pd.DataFrame:
        if self.fail_after_chunks and self.chunks == self.fail_after_chunks:
            raise KeyboardInterrupt("killed")  # the process dies between two shards
        self.chunks += 1
        self.asked.extend(questions["prompt"])
        on_batch(len(questions))
        return pd.DataFrame(
            {
                "question": np.arange(len(questions)),
                "beam": 0,
                "answer": [prompt[::-1] for prompt in questions["prompt"]],
                "sequence_score": -np.arange(len(questions), dtype=float),
                "beam_entropy": 0.5,
                "entropy": 0.5,
            }
        )


@pytest.fixture(scope="module")
def state():
    from accelerate import PartialState

    return PartialState(cpu=True)


def job(tmp_path: Path, questions, model: str = "A", size: int = 4) -> InferenceJob:
    return InferenceJob("pool", questions, tmp_path / ".shards", {"model": model}, size)


def test_shards_resume_after_a_kill_and_stale_keys_are_removed(tmp_path: Path, state) -> None:
    questions = FrameQuestions(question_table(10))  # shards of 4: 4 + 4 + 2
    killed = CountingAnswerer(fail_after_chunks=2)
    with pytest.raises(KeyboardInterrupt):
        run_inference(job(tmp_path, questions), killed, state)
    # two finished shards on disk, atomically written; no output was produced
    (key_dir,) = (tmp_path / ".shards" / "pool").iterdir()
    assert sorted(path.name for path in key_dir.glob("shard-*.parquet")) == ["shard-000000.parquet", "shard-000001.parquet"]

    resumed = CountingAnswerer()
    run = run_inference(job(tmp_path, questions), resumed, state)
    assert run.skipped == 2 and run.answered_shards == 1
    assert resumed.asked == [f"question {index}" for index in (8, 9)]  # only the unfinished shard
    merged = pd.concat([beams for _, beams in answered_chunks(run, questions)], ignore_index=True)
    once = CountingAnswerer()
    uninterrupted = run_inference(job(tmp_path / "fresh", questions), once, state)
    expected = pd.concat(list(uninterrupted.beams()), ignore_index=True)
    assert list(pd.concat(list(run.beams()), ignore_index=True)["answer"]) == list(expected["answer"])
    assert list(expected["question"]) == list(range(10))  # global positions, in order
    assert list(merged["question"]) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # per chunk in answered_chunks

    # another model: the old key's shards are deleted, never read, and everything is answered again
    other = CountingAnswerer()
    changed = run_inference(job(tmp_path, questions, model="B"), other, state)
    assert changed.skipped == 0 and len(other.asked) == 10
    assert [path.name for path in (tmp_path / ".shards" / "pool").iterdir()] == [changed.directory.name]
    # other questions (one prompt changed) are another key too
    edited = question_table(10)
    edited.loc[9, "prompt"] = "changed"
    assert questions_fingerprint(FrameQuestions(edited), 4) != questions_fingerprint(questions, 4)


def test_model_fingerprint_follows_the_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights-1")
    (model / "config.json").write_text("{}")
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first
    (model / "model.safetensors").write_bytes(b"weights-2")
    assert model_fingerprint(model) != first


def test_parquet_questions_stream_the_chosen_rows_in_chunks(tmp_path: Path) -> None:
    import reltune.inference.questions as questions_module

    table = question_table(23).assign(qid=[f"q{index}" for index in range(23)])
    table.to_parquet(tmp_path / "questions.parquet", index=False)
    rows = np.zeros(23, dtype=bool)
    rows[[0, 3, 4, 9, 10, 11, 17, 22]] = True
    original = questions_module.READ_ROWS
    questions_module.READ_ROWS = 5  # several parquet batches per chunk and chunks across batches
    try:
        source = ParquetQuestions(tmp_path / "questions.parquet", ["qid", "image_id", "union_box", "prompt"], rows)
        chunks = list(source.chunks(3))
    finally:
        questions_module.READ_ROWS = original
    assert len(source) == 8 and [len(chunk) for chunk in chunks] == [3, 3, 2]
    assert [qid for chunk in chunks for qid in chunk["qid"]] == [f"q{index}" for index in np.flatnonzero(rows)]
    in_memory = FrameQuestions(table[rows].reset_index(drop=True))
    assert questions_fingerprint(source, 3) == questions_fingerprint(in_memory, 3)


def test_streamed_parquet_equals_one_write(tmp_path: Path) -> None:
    chunks = [
        pd.DataFrame({"name": ["a", "b"], "value": [1.0, np.nan], "maybe": pd.array([None, None], dtype="string")}),
        pd.DataFrame({"name": ["c"], "value": [3.0], "maybe": pd.array(["x"], dtype="string")}),
    ]
    rows = write_parquet_stream(tmp_path / "out.parquet", iter(chunks), chunks[0].iloc[0:0])
    assert rows == 3
    read = pd.read_parquet(tmp_path / "out.parquet")
    assert list(read["name"]) == ["a", "b", "c"] and list(read["maybe"].fillna("-")) == ["-", "-", "x"]
    assert [name for name in os.listdir(tmp_path)] == ["out.parquet"]  # no temporary left


# ------------------------------------------------------------------ score and predict: 1 process, 2 processes, kill


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return answering_world(tmp_path_factory.mktemp("runner_world"))


def score_arguments(world: dict, out: Path) -> list[str]:
    root = world["root"]
    return [
        "score", "--backbone", str(root / "backbone"), "--instructions", str(world["instructions"] / "train.parquet"),
        "--scenes", str(world["scenes"]), "--selection", str(root / "selection.parquet"),
        "--val-instructions", str(world["instructions"] / "val.parquet"), "--out", str(out),
        "--num-beams", "2", "--max-new-tokens", "12", "--batch-size", "2", "--shard-size", "2", "--device", "cpu",
        "--strategy", "art", "--pool-cap-factor", "0",
    ]  # fmt: skip


def predict_arguments(world: dict, out: Path) -> list[str]:
    return [
        "predict", "--backbone", str(world["root"] / "backbone"), "--scenes", str(world["scenes"]),
        "--out", str(out), "--num-beams", "2", "--max-new-tokens", "12", "--batch-size", "4", "--shard-size", "5",
        "--device", "cpu", "--answers-per-question", "all",
    ]  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(arguments: list[list[str]], processes: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run reltune commands one after the other in `processes` accelerate processes (gloo on CPU)."""
    script = tmp_path / "commands.py"
    script.write_text(
        "import sys\nfrom reltune.cli import main\n"
        f"for arguments in {arguments!r}:\n    code = main(arguments)\n    if code:\n        sys.exit(code)\n"
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script),
    ]  # fmt: skip
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def assert_same_scores(left: Path, right: Path) -> None:
    one, two = pd.read_parquet(left / "scores.parquet"), pd.read_parquet(right / "scores.parquet")
    pd.testing.assert_frame_equal(one, two, rtol=1e-6)
    assert json.loads((left / "val_recall.json").read_text()) == json.loads((right / "val_recall.json").read_text())


@pytest.fixture(scope="module")
def one_process(world: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """score and predict in this (single) process: the reference outputs."""
    one = tmp_path_factory.mktemp("one_process")
    assert main(["--timing", str(one / "timing.json"), *score_arguments(world, one)]) == 0
    assert main(predict_arguments(world, one / "predictions.parquet")) == 0
    return one


def test_two_processes_write_what_one_process_writes(world: dict, one_process: Path, tmp_path: Path) -> None:
    one = one_process
    two = tmp_path / "two"
    finished = launch(
        [["--timing", str(two / "timing.json"), *score_arguments(world, two)], predict_arguments(world, two / "predictions.parquet")],
        processes=2,
        tmp_path=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_scores(one, two)
    scores = pd.read_parquet(one / "scores.parquet")
    assert len(scores) == 5 and scores["answer"].nunique() > 1  # real, differing answers
    pd.testing.assert_frame_equal(
        pd.read_parquet(one / "predictions.parquet"), pd.read_parquet(two / "predictions.parquet"), rtol=1e-6
    )
    # both processes answered shards; only the main process wrote the timing, with both in it
    timing = json.loads((two / "timing.json").read_text())
    assert [item["process"] for item in timing["processes"]] == [0, 1]
    assert [item["pool"]["shards_answered"] for item in timing["processes"]] == [2, 1]  # 5 questions: 3 shards
    assert sum(item["validation"]["questions_answered"] for item in timing["processes"]) == 6
    # the shards are gone once the outputs are written: the round directory holds only the outputs
    assert sorted(os.listdir(two)) == ["predictions.parquet", "predictions.report.json", "score_report.json",
                                       "scores.parquet", "timing.json", "val_recall.json"]  # fmt: skip


def test_a_killed_score_resumes_from_its_shards_with_identical_output(world: dict, one_process: Path, tmp_path: Path) -> None:
    reference = one_process
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "reltune.cli", *score_arguments(world, out), "--stop-after-shards", "2"]
    env = {**os.environ, "RELTUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(os.listdir(out)) == [".shards"]  # no half-written outputs
    assert main(score_arguments(world, out)) == 0
    assert_same_scores(reference, out)
    processes = json.loads((out / "score_report.json").read_text())["timing"]["processes"]
    assert processes[0]["validation"]["shards_skipped"] == 2  # of 3 (6 validation questions)
    assert processes[0]["validation"]["shards_answered"] == 1 and processes[0]["pool"]["shards_skipped"] == 0
    assert not (out / ".shards").exists()
