"""Kill ``python -m pynas search`` with SIGKILL at several moments, resume until done.

Each evaluation sleeps ``PYNAS_TEST_EVAL_DELAY`` seconds, so kills land inside
evaluations as well as between them (during the checkpoint and database writes). After
the last resume, ``trials.sqlite`` must hold exactly ``budget`` finished trials, no trial
finished twice, and, for a serial search, the very trials an uninterrupted run finds.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search_cli import write_table

from pynas.executors import DELAY_VARIABLE

REPOSITORY = Path(__file__).resolve().parents[1]
BUDGET = 16
DELAY_SECONDS = 0.1


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("table") / "table.csv")


def command(table: Path, out: Path, *extra: str) -> list[str]:
    """The search in ``out``: a new run until one recorded its config, resumed after."""
    resume = ["--resume"] if (out / "config.json").exists() else []
    return [sys.executable, "-m", "pynas", "search", "evolution", "--benchmark", str(table),
            "--metric", "acc_valid", "--budget", str(BUDGET), "--seed", "3",
            "--population", "5", "--sample-size", "2", "--out", str(out), *resume, *extra]


def environment(delay: float) -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, DELAY_VARIABLE: str(delay)}


def rows(out: Path) -> list[tuple[int, int, str, str]]:
    """(trial, attempt, arch, state) of every attempt; empty before the database exists."""
    if not (out / "trials.sqlite").exists():
        return []
    with sqlite3.connect(out / "trials.sqlite", timeout=10) as connection:
        return connection.execute(
            "SELECT trial, attempt, arch, state FROM trials ORDER BY id"
        ).fetchall()


def count_finished(out: Path) -> int:
    try:
        return sum(state == "finished" for *_, state in rows(out))
    except sqlite3.OperationalError:  # created but no table yet
        return 0


def kill_after(argv: list[str], out: Path, finished: int, extra_seconds: float) -> bool:
    """Start the search, SIGKILL it ``extra_seconds`` after ``finished`` trials finished.

    Returns whether it was killed (False: it completed first).
    """
    process = subprocess.Popen(argv, env=environment(DELAY_SECONDS),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while count_finished(out) < finished and process.poll() is None:
            time.sleep(0.02)
        time.sleep(extra_seconds)
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read().decode()
            return False
        process.kill()
        process.wait()
        return True
    finally:
        process.stderr.close()


def run_to_completion(argv: list[str]) -> None:
    completed = subprocess.run(argv, env=environment(0), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr


def check_run(out: Path) -> list[tuple[int, str]]:
    """Check the invariants of a completed run; return its finished (trial, arch)."""
    attempts = rows(out)
    finished = [(trial, arch) for trial, _, arch, state in attempts if state == "finished"]
    assert len(finished) == BUDGET
    assert len({trial for trial, _ in finished}) == BUDGET  # no trial finished twice
    for trial, _, arch, state in attempts:
        assert state in ("finished", "interrupted")  # nothing left running, nothing failed
        # every attempt of a trial evaluates the architecture that trial asked for
        assert arch == dict(finished)[trial]
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == BUDGET and result["failed"] == 0
    return sorted(finished)


def test_serial_search_survives_sigkill_and_resumes_identically(table, tmp_path):
    reference = tmp_path / "reference"
    run_to_completion(command(table, reference))
    expected = check_run(reference)
    assert [trial for trial, _ in expected] == list(range(BUDGET))

    out = tmp_path / "run"
    generator = random.Random(0)

    def anywhere() -> float:  # inside an evaluation or between two
        return generator.uniform(0, 1.5 * DELAY_SECONDS)

    inside = 0.4 * DELAY_SECONDS  # surely inside the evaluation after the last finished
    kills = 0
    for finished, extra_seconds in ((0, anywhere()), (1, inside), (4, anywhere()),
                                    (8, inside), (12, anywhere())):
        kills += kill_after(command(table, out), out, finished, extra_seconds)
    run_to_completion(command(table, out))
    assert kills == 5
    assert check_run(out) == expected
    result = json.loads((out / "result.json").read_text())
    assert result["best"] == json.loads((reference / "result.json").read_text())["best"]
    interrupted = sum(state == "interrupted" for *_, state in rows(out))
    assert result["interrupted"] == interrupted >= 2


def test_pool_search_survives_sigkill(table, tmp_path):
    out = tmp_path / "run"
    generator = random.Random(1)
    for finished in (2, 7):
        kill_after(command(table, out, "--workers", "2"), out, finished,
                   generator.uniform(0, DELAY_SECONDS))
    run_to_completion(command(table, out, "--workers", "2"))
    check_run(out)
