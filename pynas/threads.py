"""How many threads a search computes with.

Torch (and pynas's own kernels, which follow ``torch.get_num_threads()``) start one
OpenMP thread per core and, in every parallel region, wait for all of them. When another
process keeps a core busy, the thread scheduled on it runs late and every region waits
for it: measured on a two-core machine with one other busy process, one DARTS epoch took
61-400 s instead of 16 s. So a search computes with the cores that are free when it
starts, not all of them:

- the cores this process may run on (``os.sched_getaffinity``: a container's or
  ``taskset``'s limit, not the machine's count),
- less the share of them other processes kept busy over a short sample of
  ``/proc/stat`` (Linux; elsewhere every usable core counts as free),
- divided among the worker processes of ``--executor pool``.

The override, first found wins: ``--threads N`` on ``pynas search``, the environment
variable ``PYNAS_THREADS``, then ``OMP_NUM_THREADS``. Each is the total for the search,
divided among its workers.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pynas.errors import UsageError

ENVIRONMENT = ("PYNAS_THREADS", "OMP_NUM_THREADS")

#: seconds over which the busy share of the cores is sampled
SAMPLE_SECONDS = 0.25


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """``{cpu: (idle, total)}`` jiffies from ``/proc/stat``; ``None`` where unreadable."""
    wanted = {f"cpu{cpu}": cpu for cpu in cpus}
    times = {}
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                name, *values = line.split()
                if name in wanted:
                    numbers = [int(value) for value in values]
                    # user nice system idle iowait irq softirq steal (guest is in user)
                    times[wanted[name]] = (numbers[3] + numbers[4], sum(numbers[:8]))
    except (OSError, ValueError, IndexError):
        return None
    return times if len(times) == len(cpus) else None


def free_cpus(cpus: list[int] | None = None, seconds: float = SAMPLE_SECONDS) -> int:
    """How many of ``cpus`` (default: the usable ones) other processes leave free: the
    idle share of each over ``seconds``, summed and rounded, at least 1."""
    cpus = usable_cpus() if cpus is None else cpus
    before = _cpu_times(cpus)
    if before is None:
        return len(cpus)
    time.sleep(seconds)
    after = _cpu_times(cpus)
    if after is None:
        return len(cpus)
    idle = 0.0
    for cpu in cpus:
        total = after[cpu][1] - before[cpu][1]
        idle += (after[cpu][0] - before[cpu][0]) / total if total > 0 else 1.0
    return max(1, min(len(cpus), round(idle)))


@dataclass(frozen=True)
class ThreadPlan:
    """Threads of each process of a search, and why."""

    #: torch threads of each process that computes (the search's, or each worker's)
    per_process: int
    #: the total chosen for the search
    total: int
    #: where the total came from: ``--threads``, an environment variable, or ``measured``
    source: str
    #: cores this process may run on, and how many of them were free (when measured)
    usable: int
    free: int | None = None

    def note(self) -> str | None:
        """One line for stderr when busy cores made the search use fewer threads."""
        if self.free is None or self.free >= self.usable:
            return None
        busy = self.usable - self.free
        return (f"{busy} of {self.usable} cores busy with other work: computing with "
                f"{self.per_process} thread(s) per process (--threads N to choose)")


def _positive(name: str, value: object) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}")
    return number


def plan_threads(threads: int | None = None, workers: int = 1) -> ThreadPlan:
    """The threads of a search of ``workers`` processes (1: the search computes in its
    own process); ``threads`` is ``--threads`` (``None``: not given)."""
    usable = len(usable_cpus())
    free = None
    if threads is not None:
        total, source = _positive("--threads", threads), "--threads"
    else:
        name = next((name for name in ENVIRONMENT if os.environ.get(name)), None)
        if name is not None:
            total, source = _positive(name, os.environ[name]), name
        else:
            free = free_cpus()
            total, source = free, "measured"
    return ThreadPlan(max(1, total // max(1, workers)), total, source, usable, free)
