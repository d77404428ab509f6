"""Executors: where evaluations run.

All three share one small interface: :meth:`Executor.start` hands over the space and the
evaluator once, :meth:`Executor.submit` starts one trial on an idle worker (at most
:attr:`Executor.capacity` at a time), and :meth:`Executor.wait` blocks until at least
one has completed, returning a :class:`Completion` for each. An evaluation that raises,
or whose worker process dies, completes with an ``error``: the search records it as
failed and goes on, and the pool replaces the dead worker.

- :class:`SerialExecutor` evaluates in the search process (the default).
- :class:`ProcessPoolExecutor` keeps warm worker processes on this machine.
- :class:`RayExecutor` keeps warm Ray actors, on this machine or a Ray cluster.
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import numbers
import os
import signal
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.spaces.base import Arch, SearchSpace
from pynas.threads import plan_threads, usable_cpus

#: Test-only knob: seconds to sleep before each evaluation, so that tests can kill a
#: search in the middle of one.
DELAY_VARIABLE = "PYNAS_TEST_EVAL_DELAY"


@dataclass(frozen=True)
class Completion:
    """The outcome of one submitted trial: ``metrics`` or an ``error``, never both."""

    trial: int
    metrics: dict[str, Any] | None
    error: str | None
    worker: str


def worker_name() -> str:
    """How a trial's row names the process that evaluated it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def evaluate(space: SearchSpace, evaluator: Evaluator, arch: Arch
             ) -> tuple[dict[str, Any] | None, str | None]:
    """Run one evaluation as every executor does: ``(metrics, None)`` or ``(None, error)``.

    The metrics are checked here, in the worker, so that a bad evaluator fails its trial
    with a clear message instead of breaking the search later.
    """
    try:
        delay = float(os.environ.get(DELAY_VARIABLE) or 0.0)
        if delay > 0:
            time.sleep(delay)
        return _checked_metrics(evaluator.evaluate(space, arch)), None
    except Exception:  # any failure of one evaluation must not stop the search
        return None, traceback.format_exc().rstrip()


def _checked_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    for key in ("score", "seconds"):
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"the evaluator returned {key}={value!r}, expected a finite number")
    # numpy scalars and the like become plain numbers so the row is valid JSON
    return {key: _plain(value) for key, value in metrics.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, type(None))):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes: ``threads`` (the search's total,
    ``--threads``) divided among them, or the free cores (see :mod:`pynas.threads`)."""
    return plan_threads(threads, workers).per_process


class Executor(ABC):
    """Runs evaluations; see the module docstring for the protocol."""

    #: how many trials may be in flight at once
    capacity: int = 1

    @abstractmethod
    def start(self, space: SearchSpace, evaluator: Evaluator) -> None:
        """Get ready to evaluate architectures of ``space`` with ``evaluator``."""

    @abstractmethod
    def submit(self, trial: int, arch: Arch) -> None:
        """Start evaluating ``arch`` as ``trial``; only while fewer than ``capacity`` run."""

    @abstractmethod
    def wait(self) -> list[Completion]:
        """Block until at least one submitted trial completes; return all that have."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Evaluates each trial in the search process, when :meth:`wait` is called."""

    capacity = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[int, Arch]] = deque()

    def start(self, space: SearchSpace, evaluator: Evaluator) -> None:
        self._space, self._evaluator = space, evaluator

    def submit(self, trial: int, arch: Arch) -> None:
        self._queue.append((trial, arch))

    def wait(self) -> list[Completion]:
        trial, arch = self._queue.popleft()
        metrics, error = evaluate(self._space, self._evaluator, arch)
        return [Completion(trial, metrics, error, worker_name())]

    def close(self) -> None:
        """Nothing to release: evaluations ran in this process."""


def _pool_worker(connection: multiprocessing.connection.Connection, space: SearchSpace,
                 evaluator: Evaluator, threads: int) -> None:
    """Body of a pool worker: evaluate what arrives on ``connection`` until told to stop."""
    import torch

    # Ctrl-C reaches the whole process group; the search process shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    name = worker_name()
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the search process is gone
            return
        if message is None:
            return
        trial, arch = message
        metrics, error = evaluate(space, evaluator, arch)
        try:
            connection.send((trial, metrics, error, name))
        except OSError:  # the search process died while we were evaluating
            return


@dataclass
class _PoolWorker:
    process: multiprocessing.process.BaseProcess
    connection: multiprocessing.connection.Connection
    trial: int | None = None


class ProcessPoolExecutor(Executor):
    """Warm worker processes on this machine (``--executor pool --workers N``).

    Each worker is a spawned process that receives the space and the evaluator once, when
    it starts, and then evaluates one trial at a time with ``threads`` torch threads
    (default: the free cores divided among the workers, see :mod:`pynas.threads`). A
    worker that dies (``os._exit``, a segfault, the OOM killer) fails its trial and is
    replaced.

    Parameters
    ----------
    workers
        Number of processes; default: one per usable CPU.
    threads
        Torch threads of each worker; default: see :func:`threads_per_worker`.
    """

    def __init__(self, workers: int | None = None, threads: int | None = None) -> None:
        self.capacity = workers or len(usable_cpus())
        if self.capacity < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self._threads = threads
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_PoolWorker] = []

    def start(self, space: SearchSpace, evaluator: Evaluator) -> None:
        threads = self._threads or threads_per_worker(self.capacity)
        self._arguments = (space, evaluator, threads)
        self._workers = [self._spawn() for _ in range(self.capacity)]

    def _spawn(self) -> _PoolWorker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_pool_worker, args=(theirs, *self._arguments), daemon=True,
            name="pynas-worker",
        )
        process.start()
        theirs.close()  # keep only the worker's copy, so its death closes the pipe
        return _PoolWorker(process, ours)

    def submit(self, trial: int, arch: Arch) -> None:
        index = next(i for i, w in enumerate(self._workers) if w.trial is None)
        if not self._workers[index].process.is_alive():  # it died after its last reply
            self._respawn(index)
        worker = self._workers[index]
        worker.trial = trial
        try:
            worker.connection.send((trial, arch))
        except OSError:  # it died just now: wait() sees it and fails the trial
            pass

    def wait(self) -> list[Completion]:
        busy = [w for w in self._workers if w.trial is not None]
        multiprocessing.connection.wait(
            [w.connection for w in busy] + [w.process.sentinel for w in busy]
        )
        completions = []
        for index, worker in enumerate(self._workers):
            if worker.trial is None:
                continue
            if worker.connection.poll():
                try:
                    trial, metrics, error, name = worker.connection.recv()
                except (EOFError, OSError):  # closed without a reply: the worker died
                    completions.append(self._respawn(index))
                    continue
                completions.append(Completion(trial, metrics, error, name))
                worker.trial = None
            elif not worker.process.is_alive():
                completions.append(self._respawn(index))
        return completions

    def _respawn(self, index: int) -> Completion:
        """Replace the dead worker ``index``; the failure of the trial it had."""
        dead = self._workers[index]
        dead.process.join()
        dead.connection.close()
        self._workers[index] = self._spawn()
        return Completion(
            dead.trial, None, f"the worker process died ({_describe_exit(dead.process.exitcode)})",
            f"{socket.gethostname()}:{dead.process.pid}",
        )

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.connection.send(None)
            except OSError:  # already dead
                pass
        for worker in self._workers:
            # an idle worker stops at once; one still evaluating is not waited for
            worker.process.join(timeout=1.0 if worker.trial is None else 0.0)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()
            worker.connection.close()
        self._workers = []


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


class _RayWorker:
    """A Ray actor holding the space and the evaluator (sent once, when it starts)."""

    def __init__(self, space: SearchSpace, evaluator: Evaluator, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._space, self._evaluator = space, evaluator

    def evaluate(self, arch: Arch) -> tuple[dict[str, Any] | None, str | None, str]:
        metrics, error = evaluate(self._space, self._evaluator, arch)
        return metrics, error, worker_name()


class RayExecutor(Executor):
    """Warm Ray actors (``--executor ray``), one trial at a time each.

    Parameters
    ----------
    workers
        Number of actors; default: the CPUs Ray reports (one actor per CPU).
    address
        A Ray cluster to join (``ray.init(address=...)``, e.g. ``"auto"`` or
        ``"ray://head:10001"``); default: start a local Ray instance.
    num_cpus
        CPUs of the local instance (ignored with ``address``); default: all.
    threads
        Torch threads of each actor; default: the cluster's CPUs divided among them.
    """

    def __init__(self, workers: int | None = None, address: str | None = None,
                 num_cpus: int | None = None, threads: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(
                "--executor ray needs Ray: pip install \"pynas[ray]\""
            ) from None
        self._ray = ray
        self._workers, self._address, self._num_cpus = workers, address, num_cpus
        self._threads = threads
        self._actors: list[Any] = []
        self._running: dict[Any, tuple[int, int]] = {}  # object ref -> (trial, actor index)
        self._started_ray = False

    def start(self, space: SearchSpace, evaluator: Evaluator) -> None:
        ray = self._ray
        if not ray.is_initialized():
            try:
                ray.init(address=self._address, num_cpus=None if self._address else self._num_cpus,
                         include_dashboard=False, logging_level="ERROR")
            except ConnectionError as error:
                raise UsageError(f"cannot reach the Ray cluster at {self._address}: {error}"
                                 ) from None
            self._started_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = self._workers or cpus
        # a fractional share each, so that more workers than CPUs still all get scheduled
        self._actor_class = ray.remote(num_cpus=cpus / self.capacity, max_restarts=0)(
            _RayWorker
        )
        # one copy of each in the object store, fetched by every actor when it starts
        self._actor_arguments = (
            ray.put(space), ray.put(evaluator), self._threads or max(1, cpus // self.capacity)
        )
        self._actors = [self._new_actor() for _ in range(self.capacity)]
        self._idle = list(range(self.capacity))

    def _new_actor(self) -> Any:
        return self._actor_class.remote(*self._actor_arguments)

    def submit(self, trial: int, arch: Arch) -> None:
        index = self._idle.pop()
        self._running[self._actors[index].evaluate.remote(arch)] = (trial, index)

    def wait(self) -> list[Completion]:
        ray = self._ray
        ready, _ = ray.wait(list(self._running), num_returns=1)
        completions = []
        for ref in ready:
            trial, index = self._running.pop(ref)
            try:
                metrics, error, name = ray.get(ref)
            except ray.exceptions.RayActorError as died:
                ray.kill(self._actors[index])
                self._actors[index] = self._new_actor()
                first_line = str(died).strip().splitlines()[0] if str(died).strip() else ""
                metrics, error, name = None, f"the Ray worker died: {first_line}", "ray"
            self._idle.append(index)
            completions.append(Completion(trial, metrics, error, name))
        return completions

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors, self._running = [], {}
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False
