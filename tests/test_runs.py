"""The trial store, atomic files, run directories and the loop's crash safety.

The crash tests stop the search by raising at one precise step of the loop (before or
after writing the checkpoint, inserting a row, finishing a row, telling the strategy),
which is what a SIGKILL at that moment leaves behind, then resume and check the run.
"""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.runs import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    RunDirectory,
    TrialStore,
    atomic_write,
    best_attempt,
    load_checkpoint,
    save_checkpoint,
)
from pynas.search.evolution import RegularizedEvolution
from pynas.search.loop import Budget, run_search
from pynas.spaces import get_space

SPACE = get_space("nb201")


class SumEvaluator(Evaluator):
    """Scores by the sum of the decisions; fails on architectures whose last decision is 0
    if ``fail_some`` and on every architecture if ``fail_all``."""

    def __init__(self, fail_some: bool = False, fail_all: bool = False) -> None:
        self.fail_some, self.fail_all = fail_some, fail_all

    def evaluate(self, space, arch):
        if self.fail_all or (self.fail_some and arch[-1] == 0):
            raise ValueError(f"cannot evaluate {arch}")
        return {"score": float(sum(arch)), "val_acc": float(sum(arch)),
                "test_acc": sum(arch) - 0.5, "seconds": 10.0,
                "params": 1000 + arch[1]}


class Crash(BaseException):
    """Stands for a SIGKILL: nothing catches it, and nothing is written on the way out."""


def crash_at(monkeypatch, owner, method: str, call: int, after: bool) -> None:
    """Make the ``call``-th call of ``owner.method`` crash, before or after doing its work."""
    original = getattr(owner, method)
    count = 0

    def wrapper(*args, **kwargs):
        nonlocal count
        count += 1
        if count == call and not after:
            raise Crash
        value = original(*args, **kwargs)
        if count == call:
            raise Crash
        return value

    monkeypatch.setattr(owner, method, wrapper)


def search(path, budget=None, evaluator=None):
    """Evolution for ``budget`` (default 12 evaluations), resuming what ``path`` holds."""
    strategy = RegularizedEvolution(SPACE, seed=0, population_size=4, sample_size=2)
    run = RunDirectory.prepare(path, resume=True, durable=False)
    return run_search(strategy, evaluator or SumEvaluator(), run, budget or Budget(12))


def attempts_of(path):
    with TrialStore(path / RunDirectory.TRIALS) as store:
        return store.attempts()


# the trial store ----------------------------------------------------------------------

def test_store_records_one_row_per_attempt(tmp_path):
    with TrialStore(tmp_path / "t.sqlite") as store:
        first = store.start(0, "a", (1, 2))
        store.interrupt(first)
        second = store.start(0, "a", (1, 2))
        store.finish(second, {"score": 1.0, "seconds": 2.0}, "host:1")
        failed = store.start(1, "b", (3, 4))
        store.fail(failed, "ValueError: no", "host:2")
        rows = store.attempts()
        mode = store._connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert [(r.trial, r.attempt, r.state) for r in rows] == [
        (0, 1, INTERRUPTED), (0, 2, FINISHED), (1, 1, FAILED)
    ]
    assert rows[1].metrics == {"score": 1.0, "seconds": 2.0}
    assert rows[1].decisions == (1, 2) and rows[1].worker == "host:1"
    assert rows[2].error == "ValueError: no"
    assert all(r.ended >= r.started for r in rows)


def test_store_refuses_a_second_outcome_for_a_trial(tmp_path):
    with TrialStore(tmp_path / "t.sqlite") as store:
        store.finish(store.start(0, "a", (1,)), {"score": 1.0, "seconds": 1.0}, None)
        again = store.start(0, "a", (1,))
        with pytest.raises(sqlite3.IntegrityError):
            store.finish(again, {"score": 1.0, "seconds": 1.0}, None)


def test_store_only_ends_running_attempts(tmp_path):
    with TrialStore(tmp_path / "t.sqlite") as store:
        row = store.start(0, "a", (1,))
        store.finish(row, {"score": 1.0, "seconds": 1.0}, None)
        store.interrupt(row)  # too late: it finished
        assert store.attempts()[0].state == FINISHED


def test_best_attempt_is_the_first_of_the_highest():
    with TrialStore(":memory:") as store:
        for trial, value in enumerate([1.0, 3.0, 2.0, 3.0]):
            store.finish(store.start(trial, str(trial), (trial,)),
                         {"score": value, "seconds": 1.0}, None)
        store.fail(store.start(9, "9", (9,)), "boom", None)
        assert best_attempt(store.attempts()).trial == 1
    assert best_attempt([]) is None


def test_store_rejects_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "t.sqlite"
    path.write_text("not a database, but long enough to have a header " * 4)
    with pytest.raises(UsageError, match="not a pynas trial database"):
        TrialStore(path)


# atomic files ---------------------------------------------------------------------------

def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_failing_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")

    def no_replace(*args):
        raise Crash

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(Crash):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"


def test_checkpoint_round_trip(tmp_path):
    import random

    state = {"random": random.Random(3).getstate(), "pending": {4: [1, 2]}, "x": 1.5}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["pending"] == {4: [1, 2]} and loaded["x"] == 1.5
    generator = random.Random()
    generator.setstate(loaded["random"])
    assert generator.random() == random.Random(3).random()


def test_unreadable_checkpoint_is_a_usage_error(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


# run directories ------------------------------------------------------------------------

def test_non_empty_directory_needs_resume_or_overwrite(tmp_path):
    run = RunDirectory.prepare(tmp_path / "run")
    run.write_config({"seed": 0})
    (run.path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="--resume .* --overwrite"):
        RunDirectory.prepare(run.path)
    RunDirectory.prepare(run.path, resume=True)
    RunDirectory.prepare(run.path, overwrite=True)
    # --overwrite removes the run's files only
    assert sorted(os.listdir(run.path)) == ["notes.txt"]


def test_resume_needs_a_run_or_nothing(tmp_path):
    RunDirectory.prepare(tmp_path / "new", resume=True)  # nothing yet: a new run
    assert (tmp_path / "new").is_dir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(UsageError, match="no pynas run"):
        RunDirectory.prepare(tmp_path / "other", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        RunDirectory.prepare(tmp_path / "file")


def test_one_search_per_directory(tmp_path):
    run = RunDirectory.prepare(tmp_path)
    with run.lock():
        with pytest.raises(UsageError, match="another pynas search"):
            with RunDirectory(tmp_path).lock():
                pass
    with run.lock():  # released
        pass


# the loop ---------------------------------------------------------------------------------

def test_search_writes_the_run(tmp_path):
    result = search(tmp_path, Budget(12, simulated_time=True))
    assert result["evaluations"] == 12 and result["failed"] == 0
    assert result["simulated_seconds"] == 120.0
    assert result["stopped"] == "budget of evaluations"
    best = result["best"]
    assert best["score"] == max(a.metrics["score"] for a in attempts_of(tmp_path))
    assert best["val_acc"] == best["score"] and result["score_name"] == "val_acc"
    assert best["test_acc"] == best["val_acc"] - 0.5
    assert best["metrics"]["params"] >= 1000
    assert SPACE.from_string(best["arch"]) == SPACE.from_genotype(best["genotype"])
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert (tmp_path / "search_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["pending"] == {}


def test_failed_evaluations_are_recorded_and_not_counted(tmp_path):
    result = search(tmp_path, evaluator=SumEvaluator(fail_some=True))
    attempts = attempts_of(tmp_path)
    failed = [a for a in attempts if a.state == FAILED]
    assert result["evaluations"] == 12 and result["failed"] == len(failed) > 0
    assert sum(a.state == FINISHED for a in attempts) == 12
    assert all("ValueError: cannot evaluate" in a.error for a in failed)
    assert all(a.decisions[-1] == 0 for a in failed)


def test_search_stops_when_everything_fails(tmp_path):
    result = search(tmp_path, Budget(5), evaluator=SumEvaluator(fail_all=True))
    assert result["evaluations"] == 0 and result["failed"] == 5
    assert result["best"] is None and result["stopped"] == "5 evaluations failed"


def test_budget_of_simulated_seconds(tmp_path):
    result = search(tmp_path, Budget(seconds=55, simulated_time=True))
    assert result["evaluations"] == 6  # stops asking once 60 >= 55 seconds are spent


def test_resume_with_a_larger_budget_continues(tmp_path):
    search(tmp_path, Budget(5))
    result = search(tmp_path, Budget(9))
    assert result["evaluations"] == 9
    assert [a.trial for a in attempts_of(tmp_path)] == list(range(9))


def test_a_run_needs_its_checkpoint(tmp_path):
    search(tmp_path, Budget(3))
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(UsageError, match="no checkpoint.pt"):
        search(tmp_path, Budget(4))


CRASH_POINTS = [
    # (owner, method, after its work?, leaves an unfinished attempt?): every step of the
    # loop's ordering, crashing at the n-th call, i.e. during trial n - 1
    ("run", "save_checkpoint", False, False),  # asked, nothing saved
    ("run", "save_checkpoint", True, False),  # checkpoint holds the trial, no row yet
    ("store", "start", True, True),  # running row, not submitted
    ("evaluator", "evaluate", False, True),  # killed during the evaluation
    ("store", "finish", False, True),  # evaluated, the result not recorded
    ("store", "finish", True, False),  # finished row, the strategy not told
    ("strategy", "tell", True, False),  # told, the checkpoint not yet updated
]
OWNERS = {"run": RunDirectory, "store": TrialStore, "evaluator": SumEvaluator,
          "strategy": RegularizedEvolution}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The result and the finished (trial, arch) pairs of the run without a crash."""
    path = tmp_path_factory.mktemp("uninterrupted")
    result = search(path)
    return result, [(a.trial, a.arch) for a in attempts_of(path) if a.state == FINISHED]


@pytest.mark.parametrize("call", [1, 5, 9])
@pytest.mark.parametrize("owner, method, after, interrupts", CRASH_POINTS)
def test_resume_after_a_crash_at_any_step(tmp_path, monkeypatch, uninterrupted, owner, method,
                                          after, interrupts, call):
    reference, finished_reference = uninterrupted
    with monkeypatch.context() as patch:
        crash_at(patch, OWNERS[owner], method, call, after)
        with pytest.raises(Crash):
            search(tmp_path / "run")
    result = search(tmp_path / "run")

    attempts = attempts_of(tmp_path / "run")
    finished = [(a.trial, a.arch) for a in attempts if a.state == FINISHED]
    # exactly the budget, each trial finished once, and the same search as without a crash
    assert sorted(finished) == finished_reference
    assert result["best"] == reference["best"]
    assert not [a for a in attempts if a.state in (RUNNING, FAILED)]
    interrupted = [(a.trial, a.attempt) for a in attempts if a.state == INTERRUPTED]
    if interrupts:
        # the attempt that died unrecorded is marked, and a second attempt finished it
        assert interrupted == [(call - 1, 1)]
        assert (call - 1, 2) in {(a.trial, a.attempt) for a in attempts if a.state == FINISHED}
    else:
        assert interrupted == []
