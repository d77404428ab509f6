"""The serial, process-pool and Ray executors, and the search loop running on them."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from pynas.evaluate.base import Evaluator
from pynas.executors import (
    Completion,
    Executor,
    ProcessPoolExecutor,
    RayExecutor,
    SerialExecutor,
    threads_per_worker,
)
from pynas.runs import FAILED, FINISHED, RunDirectory, TrialStore
from pynas.search.loop import Budget, run_search
from pynas.search.random_search import RandomSearch
from pynas.spaces import get_space

SPACE = get_space("nb201")


class ProbeEvaluator(Evaluator):
    """Reports its process and thread count. The last decision chooses a behaviour:
    1 raises, 2 exits the process, 3 kills it with SIGKILL, 4 takes half a second.
    Counts its pickles."""

    pickles = 0  # in the process that pickles it: the search process

    def __getstate__(self) -> dict:
        type(self).pickles += 1
        return {}

    def __setstate__(self, state: dict) -> None:
        pass

    def evaluate(self, space, arch):
        import torch

        behaviour = arch[-1]
        if behaviour == 1:
            raise ValueError(f"bad architecture {arch}")
        if behaviour == 2:
            os._exit(3)
        if behaviour == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        if behaviour == 4:
            time.sleep(0.5)
        return {"score": float(sum(arch)), "seconds": 1.0, "pid": os.getpid(),
                "threads": torch.get_num_threads()}


def arch_with(last: int, first: int = 0) -> tuple[int, ...]:
    return (first, 4, 4, 4, 4, last)


def run_all(executor: Executor, archs: list[tuple[int, ...]]) -> dict[int, Completion]:
    """Evaluate ``archs`` as trials 0, 1, ... keeping the executor full."""
    waiting = list(enumerate(archs))
    running, done = 0, {}
    while waiting or running:
        while waiting and running < executor.capacity:
            executor.submit(*waiting.pop(0))
            running += 1
        for completion in executor.wait():
            assert completion.trial not in done
            done[completion.trial] = completion
            running -= 1
    return done


def test_threads_per_worker_divides_the_total_among_the_workers():
    assert threads_per_worker(2, threads=8) == 4
    assert threads_per_worker(3, threads=8) == 2
    assert threads_per_worker(16, threads=8) == 1


def test_serial_executor_reports_errors_and_keeps_going():
    with SerialExecutor() as executor:
        executor.start(SPACE, ProbeEvaluator())
        done = run_all(executor, [arch_with(0), arch_with(1), arch_with(4)])
    assert done[0].metrics["score"] == 16.0 and done[0].error is None
    assert done[1].metrics is None and "ValueError: bad architecture" in done[1].error
    assert done[2].metrics["pid"] == os.getpid()


def test_pool_workers_are_warm_and_get_the_evaluator_once():
    ProbeEvaluator.pickles = 0
    with ProcessPoolExecutor(2, threads=3) as executor:
        executor.start(SPACE, ProbeEvaluator())
        done = run_all(executor, [arch_with(0, first) for first in range(5)] * 2)
    assert ProbeEvaluator.pickles == 2  # once per worker, not once per trial
    assert [done[t].metrics["score"] for t in range(10)] == [16.0 + f for f in range(5)] * 2
    pids = {c.metrics["pid"] for c in done.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {c.worker.rsplit(":", 1)[1] for c in done.values()} == {str(p) for p in pids}
    assert {c.metrics["threads"] for c in done.values()} == {3}


def test_pool_survives_failing_and_dying_evaluations():
    with ProcessPoolExecutor(2) as executor:
        executor.start(SPACE, ProbeEvaluator())
        done = run_all(executor, [arch_with(0), arch_with(1), arch_with(2), arch_with(3),
                                  arch_with(4, 1), arch_with(4, 2)])
    assert "ValueError: bad architecture" in done[1].error
    assert "the worker process died (exit code 3)" in done[2].error
    assert "the worker process died (killed by SIGKILL)" in done[3].error
    assert all(done[t].metrics is None for t in (1, 2, 3))
    assert [done[t].metrics["score"] for t in (0, 4, 5)] == [16.0, 21.0, 22.0]
    # the last two ran in live worker processes, replacements of the dead ones
    dead = {int(done[t].worker.rsplit(":", 1)[1]) for t in (2, 3)}
    survivors = {done[t].metrics["pid"] for t in (4, 5)}
    assert len(dead) == 2 and not survivors & (dead | {os.getpid()})


class DyingSometimes(Evaluator):
    """Scores by the sum; the worker process dies on architectures ending in 0."""

    def evaluate(self, space, arch):
        if arch[-1] == 0:
            os._exit(1)
        return {"score": float(sum(arch)), "seconds": 1.0}


def test_search_on_the_pool_records_dead_workers_and_reaches_the_budget(tmp_path):
    run = RunDirectory.prepare(tmp_path, durable=False)
    result = run_search(RandomSearch(SPACE, seed=0), DyingSometimes(), run, Budget(8),
                        ProcessPoolExecutor(2))
    with TrialStore(run.trials_path) as store:
        attempts = store.attempts()
    failed = [a for a in attempts if a.state == FAILED]
    assert result["evaluations"] == 8 == sum(a.state == FINISHED for a in attempts)
    assert failed and all(a.decisions[-1] == 0 and "died" in a.error for a in failed)
    assert result["failed"] == len(failed)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # the evaluators of this test file are not importable in Ray's workers: ship them
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_evaluates_and_survives_a_dead_actor(ray_cluster):
    executor = RayExecutor(workers=2)
    executor.start(SPACE, ProbeEvaluator())
    try:
        assert executor.capacity == 2
        done = run_all(executor, [arch_with(0), arch_with(2), arch_with(1), arch_with(0, 1),
                                  arch_with(0, 2)])
    finally:
        executor.close()
    assert [done[t].metrics["score"] for t in (0, 3, 4)] == [16.0, 17.0, 18.0]
    assert "the Ray worker died" in done[1].error
    assert "ValueError: bad architecture" in done[2].error
    assert len({done[t].metrics["pid"] for t in (0, 3, 4)} - {os.getpid()}) >= 1
    assert ray_cluster.is_initialized()  # a Ray it did not start is left running
