"""Multi-objective and constrained search on the NAS-Bench-201 table, and latency repeats.

Three parts (``--only`` picks some):

- ``front``: random search, evolution (NSGA-II-style), REINFORCE with MnasNet's soft
  reward and PNAS, each with ``--objectives cifar10_valid,flops`` for ``--seeds`` seeds
  (from ``--first-seed``, 100: no default was chosen on them) and ``--budget``
  evaluations, through the Python API behind ``pynas search``. Each run's hypervolume is
  that of its Pareto front against a fixed reference point: the median
  ``cifar10_valid`` of the table's 15,625 cells and the largest multiply-adds of their
  networks (so a cell counts when it is better than the median cell and, by
  construction, no larger than the largest). Issue #12's target: evolution's mean
  hypervolume at least 1.05x random search's.
- ``constrained``: evolution with ``--max-flops`` at the median multiply-adds of the
  cells, one objective; the mean CIFAR-10 test accuracy of the cell found against the
  best feasible cell of the table (target: within 0.3).
- ``latency``: the latency of ``--cells`` nb201 networks drawn at random, one thread,
  measured twice (each the median of the passes :func:`pynas.costs.latency` times after
  warm-up); how often the two agree within 10% (target: all, on a quiet machine).

Run as ``pynas bench pareto`` or ``python bench/pareto.py``.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pynas import costs
from pynas.errors import UsageError
from pynas.evaluate import read_table
from pynas.objectives import hypervolume
from pynas.runs import RunDirectory
from pynas.search import cli as search_cli
from pynas.search.random_search import random_arch
from pynas.spaces.nb201 import NB201Space

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"
REWARD = "cifar10_valid"
TEST = "cifar10_test"
PARTS = ("front", "constrained", "latency")

#: (row title, strategy, its options); ``{target}`` is the median multiply-adds
FRONT_ROWS = [
    ("random search", "random", []),
    ("evolution (defaults: NSGA-II selection, S=2, no repeats)", "evolution", []),
    ("REINFORCE, MnasNet soft reward (target: median)", "rl",
     ["--space", "nb201", "--cost-target", "{target}"]),
    ("PNAS, Pareto-ranked beam", "pnas", ["--space", "nb201"]),
]


def cells_of(table: Path) -> dict[str, np.ndarray]:
    """Per cell of the table: its validation and test accuracy and its multiply-adds."""
    space, data = NB201Space(), read_table(table)
    counts = space.counts_of_every_cell()
    strings = sorted(data.rows, key=data.rows.__getitem__)
    return {
        REWARD: data.values[:, data.columns.index(REWARD)],
        TEST: data.values[:, data.columns.index(TEST)],
        "flops": np.array([counts[space.from_string(text)][1] for text in strings], float),
    }


def search(strategy: str, options: list[str], table: Path, seed: int, budget: int,
           out: Path) -> dict:
    """The result.json of one table search."""
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    args = parser.parse_args([strategy, "--benchmark", str(table), "--metric", REWARD,
                              "--budget", str(budget), "--seed", str(seed), "--out", str(out),
                              *options])
    return search_cli.search(args, RunDirectory.prepare(out, durable=False))


def mean_std(values: list[float], digits: int = 2) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def front_part(args: argparse.Namespace, cells: dict, work: Path) -> None:
    median_flops = int(np.median(cells["flops"]))
    # maximised: accuracy, and minus the multiply-adds in millions
    reference = (float(np.median(cells[REWARD])), -float(cells["flops"].max()) / 1e6)
    print(f"Pareto fronts of {REWARD} (max) and multiply-adds (min), {args.budget} evaluations, "
          f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}. Hypervolume in "
          f"%-points x M multiply-adds above the reference ({reference[0]:.2f}, "
          f"{-reference[1]:.2f}M), mean ± std over seeds; the table's own front: "
          f"{table_hypervolume(cells, reference):.1f}\n")
    print("| strategy | hypervolume | / random | front size | best CIFAR-10 test | s per run |")
    print("|---|---|---|---|---|---|")
    random_mean = None
    for title, strategy, options in FRONT_ROWS:
        options = [option.format(target=median_flops) for option in options]
        volumes, sizes, tests, seconds = [], [], [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            started = time.perf_counter()
            result = search(strategy, [*options, "--objectives", f"{REWARD},flops"],
                            args.table, seed, args.budget, work / f"{strategy}-{seed}")
            seconds.append(time.perf_counter() - started)
            points = [(trial[REWARD], -trial["flops"] / 1e6) for trial in result["pareto"]]
            volumes.append(hypervolume(points, reference))
            sizes.append(len(points))
            tests.append(result["best"]["metrics"][TEST])
        mean = statistics.mean(volumes)
        random_mean = mean if strategy == "random" else random_mean
        ratio = f"{mean / random_mean:.3f}" if random_mean else "-"
        print(f"| {title} | {mean_std(volumes, 1)} | {ratio} | {statistics.mean(sizes):.1f} | "
              f"{mean_std(tests)} | {statistics.mean(seconds):.1f} |", flush=True)


def table_hypervolume(cells: dict, reference: tuple[float, float]) -> float:
    """The hypervolume of every cell of the table: what a search could reach at most."""
    points = list(zip(cells[REWARD].tolist(), (-cells["flops"] / 1e6).tolist()))
    # only the best accuracy at each cost can be on the front
    best: dict[float, float] = {}
    for accuracy, cost in points:
        best[cost] = max(best.get(cost, -np.inf), accuracy)
    return hypervolume([(accuracy, cost) for cost, accuracy in best.items()], reference)


def constrained_part(args: argparse.Namespace, cells: dict, work: Path) -> None:
    median_flops = int(np.median(cells["flops"]))
    feasible = cells["flops"] <= median_flops
    best_test = cells[TEST][feasible].max()
    oracle = cells[TEST][feasible][np.argmax(cells[REWARD][feasible])]
    found, flops = [], []
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = search("evolution", ["--max-flops", str(median_flops)], args.table, seed,
                        args.budget, work / f"constrained-{seed}")
        found.append(result["best"]["metrics"][TEST])
        flops.append(result["best"]["metrics"]["flops"])
    mean = statistics.mean(found)
    print(f"\nEvolution with --max-flops {median_flops} (the median of the cells; "
          f"{int(feasible.sum())} of {feasible.size} feasible), {args.budget} evaluations, "
          f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, "
          f"{(time.perf_counter() - started) / args.seeds:.1f} s per run\n")
    print("| | CIFAR-10 test |")
    print("|---|---|")
    print(f"| cell found (mean ± std) | {mean_std(found)} |")
    print(f"| best feasible cell of the table | {best_test:.2f} |")
    print(f"| feasible cell of best {REWARD} | {oracle:.2f} |")
    print(f"| gap to the best feasible | {best_test - mean:.2f} (target ≤ 0.3) |")
    print(f"| largest multiply-adds found | {max(flops)} (limit {median_flops}) |")


def latency_part(args: argparse.Namespace) -> None:
    space, generator = NB201Space(), random.Random(args.first_seed)
    archs = [random_arch(space, generator) for _ in range(args.cells)]
    torch.set_num_threads(1)
    passes = []
    for _ in range(2):
        costs._CACHE.clear()  # measure again, not from the cache
        passes.append([costs.latency(space, arch, (3, 32, 32), 10) for arch in archs])
    differences = [abs(a - b) / min(a, b) for a, b in zip(*passes)]
    within = sum(difference <= 0.10 for difference in differences)
    print(f"\nLatency of {args.cells} random nb201 networks (CIFAR-10 input, batch 1, one "
          f"thread), measured twice, each the median of {costs.LATENCY_REPEATS} or more passes "
          f"adding up to {costs.LATENCY_MIN_SECONDS:g} s after {costs.LATENCY_WARMUP} warm-up "
          "ones\n")
    print("| | value |")
    print("|---|---|")
    print(f"| latency, first pass (median over cells) | {statistics.median(passes[0]):.2f} ms |")
    print(f"| latency range | {min(passes[0]):.2f}-{max(passes[0]):.2f} ms |")
    print(f"| difference between passes, median | {100 * statistics.median(differences):.1f}% |")
    print(f"| difference between passes, largest | {100 * max(differences):.1f}% |")
    print(f"| cells within 10% | {within} of {len(archs)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench pareto",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="the NAS-Bench-201 CSV (default: ../shared/data/nb201/nb201.csv "
                             "beside the repository)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                        help="the parts to run (default: all)")
    parser.add_argument("--seeds", type=int, default=20, help="runs per strategy (default 20)")
    parser.add_argument("--first-seed", type=int, default=100, help="the first seed (default 100)")
    parser.add_argument("--budget", type=int, default=100, help="evaluations per run (default 100)")
    parser.add_argument("--cells", type=int, default=20,
                        help="networks whose latency is measured (default 20)")
    args = parser.parse_args(argv)
    if min(args.seeds, args.budget, args.cells) < 1 or args.first_seed < 0:
        raise UsageError("--seeds, --budget and --cells must be at least 1, --first-seed at "
                         "least 0")
    started = time.perf_counter()
    if {"front", "constrained"} & set(args.only):
        if not args.table.is_file():
            raise UsageError(f"no NAS-Bench-201 table at {args.table}; pass --table PATH")
        cells = cells_of(args.table)
        with tempfile.TemporaryDirectory(prefix="pynas-bench-pareto-") as work:
            if "front" in args.only:
                front_part(args, cells, Path(work))
            if "constrained" in args.only:
                constrained_part(args, cells, Path(work))
    if "latency" in args.only:
        latency_part(args)
    print(f"\n{time.perf_counter() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as error:
        print(f"pareto: error: {error}", file=sys.stderr)
        sys.exit(2)
