"""Search strategies on the NAS-Bench-201 table, against the paper's figures.

Runs every strategy of :data:`ROWS` for ``--seeds`` seeds (from ``--first-seed``) and
``--budget`` evaluations with reward ``cifar10_valid`` (validation accuracy after 200
epochs, mean of 3 seeds) through the Python API behind ``pynas search``
(``pynas.search.cli.search``, no subprocess), each in a throwaway run directory. Prints
a markdown table of the mean ± standard deviation of the test accuracies of the cell
each run found, beside the optimum of the table and the NAS-Bench-201 paper's CIFAR-10
figures (Dong & Yang, ICLR 2020, Table 5). Run as ``pynas bench nb201`` or ``python
bench/nb201.py``.

DARTS is not a table search: ``--strategies darts`` trains the nb201 supernet (``pynas
search darts --space nb201``, first order, the defaults otherwise) for each variant of
``--darts-variants`` (:data:`DARTS_VARIANTS`: plain DARTS and each cure for its collapse)
on ``--darts-dataset`` (CIFAR-10 needs a download; the default is the embedded digits),
``--darts-epochs`` epochs, ``--darts-seeds`` seeds, and looks each discretized cell up in
the table. Its own table has one row per variant: the test accuracies of the cells found,
how many seeds collapsed (:func:`collapsed`) and the seconds per search. The papers'
figures come from their own CIFAR-10 searches (DARTS's from the NAS-Bench-201 paper, where
it collapses to the cell of skip connections).
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pynas.errors import UsageError
from pynas.evaluate import read_table
from pynas.runs import RunDirectory
from pynas.search import cli as search_cli

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"
REWARD = "cifar10_valid"

#: table column -> column title; the reported accuracies of the found cell
TEST_COLUMNS = {
    "cifar10_test": "CIFAR-10 test",
    "cifar100_test": "CIFAR-100 test",
    "imagenet16_test": "ImageNet16-120 test",
}

#: (row title, ``pynas search`` strategy, its options, the paper's CIFAR-10 test
#: accuracy). A row whose strategy is not registered yet shows the paper's figure only;
#: adding the strategy to ``pynas.search.cli.STRATEGIES`` fills it in.
ROWS = [
    ("random search", "random", [], "93.70 ± 0.36"),
    ("regularized evolution (REA)", "evolution", [], "93.92 ± 0.30"),
    ("REINFORCE", "rl", ["--space", "nb201"], "93.85 ± 0.37"),
    ("PNAS (its defaults: MLP ensemble, 4 refits per level)", "pnas", ["--space", "nb201"],
     "-"),
]


def warmup_epochs(epochs: int) -> int:
    """PC-DARTS's warm-up, 15 of its 50 epochs, as a share of ``epochs``."""
    return 3 * epochs // 10


#: name -> (description, the DartsConfig settings of a search of ``epochs`` epochs, the
#: CIFAR-10 test accuracy its paper reports on NAS-Bench-201). Each cure alone: every
#: variant but the default sets ``beta_decay=0`` (beta-decay is on by default).
DARTS_VARIANTS: dict[str, tuple[str, Callable[[int], dict[str, Any]], str]] = {
    "darts": ("DARTS, first order (`--beta-decay 0`)", lambda epochs: {"beta_decay": 0.0},
              "54.30 ± 0.00"),
    "darts-beta": ("beta-DARTS: beta-decay, weight 0 to 50 (the paper's NAS-Bench-201 ramp; "
                   "pynas's default)", lambda epochs: {}, "94.36 ± 0.00"),
    "darts-pc": ("PC-DARTS: K=4, edge normalization, weights alone for 3/10 of the epochs",
                 lambda epochs: {"beta_decay": 0.0, "partial_channels": 4,
                                 "edge_normalization": True,
                                 "warmup_epochs": warmup_epochs(epochs)}, "-"),
    "darts-minus": ("DARTS-: auxiliary skip decaying from 1 to 0",
                    lambda epochs: {"beta_decay": 0.0, "aux_skip": True}, "93.80 ± 0.40"),
    "darts-dirichlet": ("DrNAS: Dirichlet-sampled operation weights",
                        lambda epochs: {"beta_decay": 0.0, "dirichlet": True}, "94.36 ± 0.00"),
    "darts-pt": ("DARTS, the cell chosen by perturbation (`--beta-decay 0 --selection "
                 "perturbation`)",
                 lambda epochs: {"beta_decay": 0.0, "selection": "perturbation"}, "-"),
    "darts-warmup": ("weights alone for 3/10 of the epochs",
                     lambda epochs: {"beta_decay": 0.0, "warmup_epochs": warmup_epochs(epochs)},
                     "-"),
}
#: nb201 operations without parameters, which a collapsed cell is made of
PARAMETER_FREE = ("skip_connect", "none")


def run_strategy(strategy: str, options: list[str], table: Path, seeds: range, budget: int,
                 work_dir: Path) -> list[dict[str, float]]:
    """The metrics of the best cell of each seed's search."""
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    found = []
    for seed in seeds:
        args = parser.parse_args([
            strategy, "--benchmark", str(table), "--metric", REWARD, "--budget", str(budget),
            "--seed", str(seed), "--out", str(work_dir / f"{strategy}-{seed}"), *options,
        ])
        # a throwaway run: no need to sync every write to disk
        run_dir = RunDirectory.prepare(args.out, durable=False)
        found.append(search_cli.search(args, run_dir)["best"]["metrics"])
    return found


def collapsed(arch: str) -> bool:
    """Whether an nb201 cell collapsed: half or more of its 6 edges are ``skip_connect`` or
    ``none`` (the all-skip cell among them)."""
    operations = [edge.split("~")[0] for edge in arch.strip("|").replace("|+|", "|").split("|")]
    return 2 * sum(operation in PARAMETER_FREE for operation in operations) >= len(operations)


def describe(arch: str, table: Path | dict[str, Any]) -> str:
    """``arch``, its CIFAR-10 test accuracy when ``table`` (a path, or the arch's row) has
    it, and whether it collapsed."""
    row = read_table(table).row(arch) if isinstance(table, Path) and table.is_file() else table
    test = f" CIFAR-10 test {row['cifar10_test']:.2f}" if row else ""
    return f"{arch}{test}{' (collapsed)' if collapsed(arch) else ''}"


def run_darts(variant: str, table: Path, dataset: str, seed: int, epochs: int,
              work_dir: Path, threads: int | None = None, **settings: Any) -> dict[str, Any]:
    """One seed of the DARTS ``variant`` on nb201: the table's metrics of the cell found
    (none when ``table`` is absent), with its ``arch``, the search's ``seconds`` (on
    ``threads`` threads if given) and its ``result``. ``settings`` are DartsConfig
    fields beyond the variant's (a cost target)."""
    import torch

    from pynas.search.darts import DartsConfig
    from pynas.search.darts.search import search as darts_search

    if threads:
        torch.set_num_threads(threads)
    settings = {**DARTS_VARIANTS[variant][1](epochs), **settings}
    run_dir = RunDirectory.prepare(work_dir / f"{variant}-{seed}", durable=False)
    config = DartsConfig(space="nb201", dataset=dataset, seed=seed, epochs=epochs, **settings)
    result = darts_search(config, run_dir)
    row = read_table(table).row(result["arch"]) if table.is_file() else {}
    found = {**row, "arch": result["arch"], "seconds": result["seconds"], "result": result}
    print(f"{variant} seed {seed}: {describe(found['arch'], row)}"
          + (f"; the argmax cell: {describe(result['argmax']['arch'], table)}"
             if "argmax" in result else "")  # chosen by perturbation
          + f", {found['seconds']:.0f} s", file=sys.stderr, flush=True)
    return found


def print_darts_table(args: argparse.Namespace, work_dir: Path) -> None:
    """One row per DARTS variant (see the module docstring). With ``--darts-workers N``
    the searches run in N processes of one thread each."""
    seeds = range(args.darts_first_seed, args.darts_first_seed + args.darts_seeds)
    print(f"\nDARTS on the nb201 supernet trained on {args.darts_dataset}, {args.darts_epochs} "
          f"epochs, seeds {seeds.start}-{seeds.stop - 1}; test accuracy (%) of the cell found, "
          "mean ± std over seeds\n")
    print("| variant | " + " | ".join(TEST_COLUMNS.values())
          + " | collapsed seeds | s per search | paper, CIFAR-10 test |")
    print("|---" * (len(TEST_COLUMNS) + 4) + "|")
    jobs = [(variant, args.table, args.darts_dataset, seed, args.darts_epochs, work_dir)
            for variant in args.darts_variants for seed in seeds]
    if args.darts_workers > 1:
        context = multiprocessing.get_context("spawn")  # no fork of a process running torch
        with ProcessPoolExecutor(args.darts_workers, mp_context=context) as pool:
            futures = [pool.submit(run_darts, *job, threads=1) for job in jobs]
            results = [future.result() for future in futures]
    else:
        results = [run_darts(*job) for job in jobs]
    for index, variant in enumerate(args.darts_variants):
        description, _, paper = DARTS_VARIANTS[variant]
        found = results[index * len(seeds):(index + 1) * len(seeds)]
        cells = [mean_std([metrics[name] for metrics in found]) for name in TEST_COLUMNS]
        cells.append(f"{sum(collapsed(metrics['arch']) for metrics in found)}/{len(found)}")
        cells.append(f"{statistics.mean(metrics['seconds'] for metrics in found):.0f}")
        print(f"| `{variant}`: {description} | " + " | ".join(cells) + f" | {paper} |",
              flush=True)


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench nb201",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="the NAS-Bench-201 CSV (default: ../shared/data/nb201/nb201.csv "
                             "beside the repository)")
    parser.add_argument("--seeds", type=int, default=20, help="runs per strategy (default 20)")
    parser.add_argument("--first-seed", type=int, default=100,
                        help="the first seed of the table searches (default 100: the defaults "
                             "were chosen on seeds 0-9)")
    parser.add_argument("--budget", type=int, default=100,
                        help="evaluations per run (default 100)")
    strategies = [row[1] for row in ROWS] + ["darts"]
    parser.add_argument("--strategies", nargs="+", choices=strategies, default=strategies,
                        help="the rows to run (default: all)")
    parser.add_argument("--darts-variants", nargs="+", choices=DARTS_VARIANTS,
                        default=list(DARTS_VARIANTS),
                        help="the DARTS rows (default: all): "
                        + "; ".join(f"{name}: {row[0]}" for name, row in DARTS_VARIANTS.items()))
    parser.add_argument("--darts-seeds", type=int, default=5,
                        help="DARTS searches per variant (each trains a supernet; default 5)")
    parser.add_argument("--darts-epochs", type=int, default=10,
                        help="epochs of each DARTS search (default 10)")
    parser.add_argument("--darts-first-seed", type=int, default=0,
                        help="the first DARTS seed (default 0); seeds other than those the "
                             "defaults were chosen on measure them honestly")
    parser.add_argument("--darts-workers", type=int, default=1,
                        help="DARTS searches run at once, one thread each (default 1: one "
                             "at a time, with torch's threads)")
    parser.add_argument("--darts-dataset", default="digits",
                        help="the dataset DARTS trains its supernet on (default digits)")
    args = parser.parse_args(argv)
    if args.darts_workers < 1 or args.darts_first_seed < 0 or args.first_seed < 0:
        raise UsageError(f"--darts-workers must be at least 1, --first-seed and "
                         f"--darts-first-seed at least 0, got {args.darts_workers}, "
                         f"{args.first_seed} and {args.darts_first_seed}")
    if args.seeds < 1 or args.darts_seeds < 0 or args.darts_epochs < 1:
        raise UsageError(f"--seeds and --darts-epochs must be at least 1 and --darts-seeds at "
                         f"least 0, got {args.seeds}, {args.darts_epochs} and {args.darts_seeds}")
    if not args.table.is_file():
        raise UsageError(f"no NAS-Bench-201 table at {args.table}; pass --table PATH")
    columns = read_table(args.table).columns
    missing = [name for name in (REWARD, *TEST_COLUMNS) if name not in columns]
    if missing:
        raise UsageError(f"the table {args.table} lacks the columns {', '.join(missing)}")

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"NAS-Bench-201: reward {REWARD}, {args.budget} evaluations, seeds {seeds.start}-"
          f"{seeds.stop - 1}; "
          "test accuracy (%) of the cell found, mean ± std over seeds\n")
    print("| strategy | " + " | ".join(TEST_COLUMNS.values()) + " | paper, CIFAR-10 test |")
    print("|---" * (len(TEST_COLUMNS) + 2) + "|")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pynas-bench-nb201-") as work_dir:
        for title, strategy, options, paper in ROWS:
            if strategy not in args.strategies:
                continue
            if strategy in search_cli.STRATEGIES:
                found = run_strategy(strategy, options, args.table, seeds, args.budget,
                                     Path(work_dir))
            else:
                found = []
            cells = ([mean_std([metrics[name] for metrics in found]) for name in TEST_COLUMNS]
                     if found else
                     [f"(no `{strategy}` strategy yet)"] + [""] * (len(TEST_COLUMNS) - 1))
            print(f"| {title} | " + " | ".join(cells) + f" | {paper} |", flush=True)
        optimum = [f"{read_table(args.table).values[:, columns.index(name)].max():.2f}"
                   for name in TEST_COLUMNS]
        print("| optimum of the table | " + " | ".join(optimum) + " | 94.37 |")
        if "darts" in args.strategies and args.darts_seeds:
            print_darts_table(args, Path(work_dir))
    print(f"\n{time.perf_counter() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as error:
        print(f"nb201: error: {error}", file=sys.stderr)
        sys.exit(2)
