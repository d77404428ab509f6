"""Search strategies on the NAS-Bench-201 table, against the paper's figures.

Runs every strategy of :data:`ROWS` for ``--seeds`` seeds (0, 1, ...) and ``--budget``
evaluations with reward ``cifar10_valid`` (validation accuracy after 200 epochs, mean of
3 seeds) through the Python API behind ``pynas search`` (``pynas.search.cli.search``,
no subprocess), each in a throwaway run directory. Prints a markdown table of the mean
± standard deviation of the test accuracies of the cell each run found, beside the
optimum of the table and the NAS-Bench-201 paper's CIFAR-10 figures (Dong & Yang, ICLR
2020, Table 5). Run as ``pynas bench nb201`` or ``python bench/nb201.py``.

DARTS is not a table search: its row trains the nb201 supernet (``pynas search darts
--space nb201``, first order, the defaults) on ``--darts-dataset`` (CIFAR-10 needs a
download; the default is the embedded digits) for ``--darts-seeds`` seeds and looks the
discretized cell up in the table. The paper's figure for DARTS comes from a CIFAR-10
search, where DARTS collapses to a cell of skip connections.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
    ("PNAS (MLP ensemble, 4 refits per level)", "pnas",
     ["--space", "nb201", "--surrogate", "mlp", "--rounds", "4"], "-"),
    ("DARTS, first order (supernet trained on {dataset})", "darts", [], "54.30 ± 0.00"),
]


def run_strategy(strategy: str, options: list[str], table: Path, seeds: int, budget: int,
                 work_dir: Path) -> list[dict[str, float]]:
    """The metrics of the best cell of each seed's search."""
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    found = []
    for seed in range(seeds):
        args = parser.parse_args([
            strategy, "--benchmark", str(table), "--metric", REWARD, "--budget", str(budget),
            "--seed", str(seed), "--out", str(work_dir / f"{strategy}-{seed}"), *options,
        ])
        # a throwaway run: no need to sync every write to disk
        run_dir = RunDirectory.prepare(args.out, durable=False)
        found.append(search_cli.search(args, run_dir)["best"]["metrics"])
    return found


def run_darts(table: Path, dataset: str, seeds: int, work_dir: Path) -> list[dict[str, float]]:
    """The table's metrics of the cell each seed's DARTS search on nb201 found."""
    from pynas.search.darts import DartsConfig
    from pynas.search.darts import search as darts_search

    rows = read_table(table)
    found = []
    for seed in range(seeds):
        run_dir = RunDirectory.prepare(work_dir / f"darts-{seed}", durable=False)
        result = darts_search(DartsConfig(space="nb201", dataset=dataset, seed=seed), run_dir)
        found.append(rows.row(result["arch"]))
    return found


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
    parser.add_argument("--budget", type=int, default=100,
                        help="evaluations per run (default 100)")
    parser.add_argument("--strategies", nargs="+", choices=[row[1] for row in ROWS],
                        default=[row[1] for row in ROWS],
                        help="the rows to run (default: all)")
    parser.add_argument("--darts-seeds", type=int, default=5,
                        help="DARTS searches (each trains a supernet; default 5)")
    parser.add_argument("--darts-dataset", default="digits",
                        help="the dataset DARTS trains its supernet on (default digits)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.darts_seeds < 0:
        raise UsageError(f"--seeds must be at least 1 and --darts-seeds at least 0, got "
                         f"{args.seeds} and {args.darts_seeds}")
    if not args.table.is_file():
        raise UsageError(f"no NAS-Bench-201 table at {args.table}; pass --table PATH")
    columns = read_table(args.table).columns
    missing = [name for name in (REWARD, *TEST_COLUMNS) if name not in columns]
    if missing:
        raise UsageError(f"the table {args.table} lacks the columns {', '.join(missing)}")

    print(f"NAS-Bench-201: reward {REWARD}, {args.budget} evaluations, {args.seeds} seeds; "
          "test accuracy (%) of the cell found, mean ± std over seeds\n")
    print("| strategy | " + " | ".join(TEST_COLUMNS.values()) + " | paper, CIFAR-10 test |")
    print("|---" * (len(TEST_COLUMNS) + 2) + "|")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pynas-bench-nb201-") as work_dir:
        for title, strategy, options, paper in ROWS:
            title = title.format(dataset=args.darts_dataset)
            if strategy not in args.strategies or (strategy == "darts" and not args.darts_seeds):
                continue
            if strategy == "darts":
                found = run_darts(args.table, args.darts_dataset, args.darts_seeds,
                                  Path(work_dir))
            elif strategy in search_cli.STRATEGIES:
                found = run_strategy(strategy, options, args.table, args.seeds, args.budget,
                                     Path(work_dir))
            else:
                found = []
            cells = ([mean_std([metrics[name] for metrics in found]) for name in TEST_COLUMNS]
                     if found else
                     [f"(no `{strategy}` strategy yet)"] + [""] * (len(TEST_COLUMNS) - 1))
            print(f"| {title} | " + " | ".join(cells) + f" | {paper} |")
    optimum = [f"{read_table(args.table).values[:, columns.index(name)].max():.2f}"
               for name in TEST_COLUMNS]
    print("| optimum of the table | " + " | ".join(optimum) + " | 94.37 |")
    print(f"\n{time.perf_counter() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as error:
        print(f"nb201: error: {error}", file=sys.stderr)
        sys.exit(2)
