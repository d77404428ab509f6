"""DARTS with a multiply-add target on the nb201 supernet: how close the discretized cell
comes to the target (issue #12).

The protocol of the DARTS rows of ``bench/nb201.py`` (default DARTS, beta-decay on, first
order, the nb201 supernet with C=8 and 5 cells per stage, trained on the embedded digits
for ``--epochs`` 100 epochs: the collapse protocol of issue #11) with ``--objectives
val_acc,flops --cost-target T``, for each target of ``--percentiles``: that percentile of
the multiply-adds of the 15,625 nb201 cells' networks on the digits input (the networks
the search derives), over ``--seeds`` seeds from ``--first-seed``. Prints a markdown
table, one row per search: the target, the seed, the discretized cell, its multiply-adds
(``pynas.costs.measure``), the ratio to the target, whether it is within ``--tolerance``
(25%, also the search's ``--cost-tolerance``: the discretized cell is the strongest one
within it), the ratio of the argmax cell the search ended with, the CIFAR-10 test
accuracy of the cell in the NAS-Bench-201 table (a column left out when the table is
absent), and the seconds of the search; then the same seeds without the cost term, for
comparison, and one summary line per target, with the table's cells within the tolerance
for reference (how many, their mean and best CIFAR-10 test). ``--workers N`` runs N
searches at once, one thread each. Run as ``pynas bench darts_cost`` or ``python
bench/darts_cost.py``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pynas.errors import UsageError

try:  # as pynas.bench.darts_cost, or as a script next to nb201.py
    from pynas.bench.nb201 import DEFAULT_TABLE, run_darts
except ImportError:  # pragma: no cover
    from nb201 import DEFAULT_TABLE, run_darts  # type: ignore[no-redef]

#: the variant of bench/nb201.py the searches run: pynas's default DARTS
VARIANT = "darts-beta"
#: the supernet's settings (DartsConfig defaults): the network the cells are priced in
CHANNELS, CELLS_PER_STAGE = 8, 5


def cell_flops(dataset: str) -> dict[str, int]:
    """The multiply-adds of every nb201 cell's network on ``dataset``'s input, by
    architecture string."""
    from pynas.data import load_dataset
    from pynas.spaces.nb201 import NB201Space

    data = load_dataset(dataset, None)
    space = NB201Space(CHANNELS, CELLS_PER_STAGE)
    counts = space.counts_of_every_cell(tuple(data.input_shape), data.num_classes)
    return {space.to_string(arch): flops for arch, (_, flops) in counts.items()}


def percentile_targets(flops: dict[str, int], percentiles: list[float]) -> dict[float, int]:
    """Each percentile of the cells' multiply-adds ``flops`` (nearest rank)."""
    ordered = sorted(flops.values())
    return {p: ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
            for p in percentiles}


def cells_within(flops: dict[str, int], table: Path, target: int, tolerance: float) -> str:
    """The table's cells within ``tolerance`` of ``target``: how many, and their mean
    and best CIFAR-10 test accuracy."""
    from pynas.evaluate import read_table

    rows = read_table(table)
    tests = [rows.row(arch)["cifar10_test"] for arch, count in flops.items()
             if in_band(count / target, tolerance)]
    return (f"the table's {len(tests):,} cells within it: CIFAR-10 test "
            f"{statistics.mean(tests):.2f} on average, {max(tests):.2f} the best")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench darts_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--percentiles", type=float, nargs="+", default=[25.0, 50.0],
                        help="targets: these percentiles of the cells' multiply-adds")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=10,
                        help="10: fresh seeds (the weight's default was chosen on 0-2)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cost-weight", type=float, default=None,
                        help="default: pynas's (DEFAULT_COST_WEIGHT)")
    parser.add_argument("--tolerance", type=float, default=0.25)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the searches without the cost term")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--workers", type=int, default=1,
                        help="searches run at once, one thread each (default 1: one at a "
                             "time, with torch's threads)")
    args = parser.parse_args(argv)
    if min(args.seeds, args.epochs, args.workers) < 1 or args.first_seed < 0:
        raise UsageError("--seeds, --epochs and --workers must be at least 1, --first-seed "
                         "at least 0")
    if any(not 0 <= p <= 100 for p in args.percentiles):
        raise UsageError(f"--percentiles must be in 0..100, got {args.percentiles}")
    from pynas.search.darts.config import DEFAULT_COST_WEIGHT

    weight = DEFAULT_COST_WEIGHT if args.cost_weight is None else args.cost_weight
    flops = cell_flops(args.dataset)
    targets = percentile_targets(flops, args.percentiles)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with_table = args.table.is_file()
    print(f"\nDARTS (beta-decay, first order) on the nb201 supernet (C={CHANNELS}, "
          f"{CELLS_PER_STAGE} cells per stage) trained on {args.dataset}, {args.epochs} epochs, "
          f"--objectives val_acc,flops, --cost-weight {weight:g}, seeds {seeds.start}-"
          f"{seeds.stop - 1}; targets: percentiles of the multiply-adds of the 15,625 cells' "
          "networks\n")
    print("| target | seed | discretized cell | flops | ratio to target | within ±"
          f"{100 * args.tolerance:.0f}% | argmax cell's ratio |"
          + (" CIFAR-10 test |" if with_table else "") + " s |")
    print("|---" * (8 + with_table) + "|")
    # (label, target or None for the baseline, seed, settings of the search)
    jobs = [(f"{target:,} (p{percentile:g})", target, seed,
             {"objectives": "val_acc,flops", "cost_target": target,
              "cost_weight": args.cost_weight, "cost_tolerance": args.tolerance})
            for percentile, target in targets.items() for seed in seeds]
    if not args.no_baseline:
        jobs += [("no cost term", None, seed, {}) for seed in seeds]
    found: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="pynas-bench-darts-cost-") as work:
        for (label, target, seed, _), run in zip(jobs, searches(jobs, args, Path(work))):
            found.setdefault(label, []).append(run)
            if target is None:
                ratios = " / ".join(f"{flops_of(run) / each:.2f}" for each in targets.values())
                print_row(label, seed, run, ratios + " (to each target)", "-", "-", with_table)
            else:
                cost = run["result"]["cost_target"]
                print_row(label, seed, run, f"{cost['ratio']:.2f}",
                          yes_no(cost["ratio"], args.tolerance), f"{cost['argmax_ratio']:.2f}",
                          with_table)
    print()
    target_of = {label: target for label, target, _, _ in jobs}
    for label, runs in found.items():
        line = f"- {label}: "
        if target_of[label] is not None:
            ratios = [run["result"]["cost_target"]["ratio"] for run in runs]
            argmax = [run["result"]["cost_target"]["argmax_ratio"] for run in runs]
            line += (f"{within(ratios, args.tolerance)}/{len(ratios)} within "
                     f"±{100 * args.tolerance:.0f}% (the argmax cells: "
                     f"{within(argmax, args.tolerance)}), ratio "
                     f"{statistics.mean(ratios):.2f} ± {spread(ratios):.2f}")
        else:
            values = [flops_of(run) for run in runs]
            line += f"flops {statistics.mean(values):,.0f} ± {spread(values):,.0f}"
        if with_table:
            tests = [run["cifar10_test"] for run in runs]
            line += f"; CIFAR-10 test {statistics.mean(tests):.2f} ± {spread(tests):.2f}"
            if target_of[label] is not None:
                line += "; " + cells_within(flops, args.table, target_of[label], args.tolerance)
        seconds = statistics.mean(run["seconds"] for run in runs)
        print(line + f"; {seconds:.0f} s per search", flush=True)
    return 0


def searches(jobs: list[tuple[str, int | None, int, dict[str, Any]]],
             args: argparse.Namespace, work: Path):
    """The searches of ``jobs``, in order (each in its own directory under ``work``); with
    ``--workers N`` in N processes of one thread each."""
    calls = [(VARIANT, args.table, args.dataset, seed, args.epochs,
              work / ("none" if target is None else f"t{target}"))
             for _, target, seed, _ in jobs]
    if args.workers == 1:
        for call, (_, _, _, settings) in zip(calls, jobs):
            yield run_darts(*call, **settings)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process running torch
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(run_darts, *call, 1, **settings)
                   for call, (_, _, _, settings) in zip(calls, jobs)]
        for future in futures:
            yield future.result()


def flops_of(run: dict[str, Any]) -> int:
    """The multiply-adds of the cell a search found (its ``best`` metrics, or measured)."""
    from pynas import costs
    from pynas.spaces.nb201 import NB201Space

    result = run["result"]
    if "cost_target" in result:
        return result["cost_target"]["cost"]
    data = result["data"]
    space = NB201Space(CHANNELS, CELLS_PER_STAGE)
    return costs.multiply_adds(space, space.from_string(result["arch"]),
                               tuple(data["input_shape"]), data["num_outputs"])


def in_band(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1) <= tolerance


def yes_no(ratio: float, tolerance: float) -> str:
    return "yes" if in_band(ratio, tolerance) else "no"


def within(ratios: list[float], tolerance: float) -> int:
    return sum(in_band(ratio, tolerance) for ratio in ratios)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def print_row(target: str, seed: int, run: dict[str, Any], ratio: str, inside: str,
              argmax_ratio: str, with_table: bool) -> None:
    cells = [target, str(seed), f"`{run['arch']}`", f"{flops_of(run):,}", ratio, inside,
             argmax_ratio]
    if with_table:
        cells.append(f"{run['cifar10_test']:.2f}")
    cells.append(f"{run['seconds']:.0f}")
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
