"""A search on a machine that other work keeps busy: pynas's choice of threads against
every usable core, idle and under load.

Times ``pynas search darts --epochs 1`` on the embedded digits (a subprocess, wall
seconds) in three settings, ``--repeats`` times each, the settings taking turns:

- idle, with pynas's own choice of threads (the free cores, see ``pynas.threads``);
- under ``--busy`` competing processes (each a Python loop that never sleeps), with
  pynas's own choice;
- under the same load with ``--threads`` set to every usable core (what torch does by
  default, and what pynas did before it looked at the load).

Prints the median seconds of each and the ratio loaded / idle (the target: at most 1.5
with pynas's choice under one busy process). A run past ``--timeout`` seconds is stopped
and reported as longer than that. Run as ``pynas bench load`` or ``python bench/load.py``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pynas.threads import ENVIRONMENT, usable_cpus


def spin() -> None:
    """A process that keeps one core busy until it is killed."""
    while True:
        pass


def search_seconds(threads: int | None, timeout: float) -> float:
    """Wall seconds of one ``pynas search darts --epochs 1``; ``inf`` past ``timeout``."""
    environment = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    with tempfile.TemporaryDirectory(prefix="pynas-bench-load-") as work:
        command = [sys.executable, "-m", "pynas", "search", "darts", "--epochs", "1",
                   "--out", os.path.join(work, "run")]
        if threads is not None:
            command += ["--threads", str(threads)]
        started = time.perf_counter()
        try:
            subprocess.run(command, check=True, env=environment, timeout=timeout,
                           stdout=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench load", description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1,
                        help="competing busy processes (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds after which a run is stopped (default 300)")
    args = parser.parse_args(argv)
    cores = len(usable_cpus())
    settings = {"idle, pynas's threads": (None, 0),
                f"{args.busy} busy, pynas's threads": (None, args.busy),
                f"{args.busy} busy, --threads {cores}": (cores, args.busy)}
    times: dict[str, list[float]] = {name: [] for name in settings}
    context = multiprocessing.get_context("spawn")
    for _ in range(args.repeats):
        for name, (threads, busy) in settings.items():
            spinners = [context.Process(target=spin, daemon=True) for _ in range(busy)]
            for process in spinners:
                process.start()
            time.sleep(1.0 if busy else 0.0)  # let the load show in /proc/stat
            try:
                times[name].append(search_seconds(threads, args.timeout))
            finally:
                for process in spinners:
                    process.kill()
                    process.join()
            print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    idle = statistics.median(times["idle, pynas's threads"])
    print(f"`pynas search darts --epochs 1` on digits, {cores} usable cores, median of "
          f"{args.repeats}\n")
    print("| setting | seconds (median) | runs | / idle |")
    print("|---|---:|---|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(f"| {name} | {median:.1f} | {runs} | {median / idle:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
