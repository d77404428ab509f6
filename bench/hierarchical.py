"""Hierarchical against flat representation (Liu et al., ICLR 2018, section 4), on digits.

Runs random search and regularized evolution on the ``hierarchical`` space (3 levels: six
level-2 motifs of 4 nodes, a level-3 cell of 5 nodes; 46 decisions) and on its flat
variant ``hierarchical-flat`` (one motif of 11 nodes over the primitives; 55 decisions),
with the same budget, for ``--seeds`` seeds each, through the Python API
(``pynas.search``), each in a throwaway run directory. Each evaluation trains the network
from scratch for ``--epochs`` epochs on the embedded digits (8x8 images). Prints a
Markdown table: space, strategy, seeds, the best validation accuracy of each run and the
test accuracy of that same trained network (mean ± std over seeds), seconds per
evaluation. Run as ``pynas bench hierarchical`` or ``python bench/hierarchical.py``.

Evolution keeps a small population (``--population``, ``--sample-size``) so that most of a
small budget goes to mutations (the space's own: a level, a motif, an edge). Torch runs
``--threads`` threads (default 1): on a busy two-core machine two threads made one
evaluation ten times slower than one.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import pynas
from pynas.bench.nb201 import mean_std
from pynas.errors import UsageError
from pynas.spaces import get_space

SPACES = ("hierarchical", "hierarchical-flat")
STRATEGIES = ("random", "evolution")


def run(space: str, strategy: str, args: argparse.Namespace, work_dir: Path) -> list[dict]:
    """The ``result.json`` of each seed's search."""
    options = ({"population": args.population, "sample_size": args.sample_size}
               if strategy == "evolution" else {})
    return [
        pynas.search(strategy, "digits", space=space, budget=args.budget, epochs=args.epochs,
                     seed=seed, out=str(work_dir / f"{space}-{strategy}-{seed}"),
                     **options).result
        for seed in range(args.seeds)
    ]


def row(space: str, strategy: str, results: list[dict]) -> str:
    best = [result["best"] for result in results]
    seconds = (sum(result["seconds"] for result in results)
               / sum(result["evaluations"] for result in results))
    cells = [space, str(len(get_space(space).num_choices)), strategy, str(len(results)),
             mean_std([found["val_acc"] for found in best]),
             mean_std([found["test_acc"] for found in best]), f"{seconds:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench hierarchical",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument("--budget", type=int, default=8, help="evaluations per run (default 8)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="training epochs per evaluation (default 1)")
    parser.add_argument("--population", type=int, default=4,
                        help="evolution's population P (default 4)")
    parser.add_argument("--sample-size", type=int, default=2,
                        help="evolution's tournament size S (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if min(args.seeds, args.budget, args.epochs, args.threads) < 1:
        raise UsageError("--seeds, --budget, --epochs and --threads must be at least 1")
    torch.set_num_threads(args.threads)

    print(f"digits, {args.budget} evaluations of {args.epochs} epoch(s) per run, {args.seeds} "
          f"seeds; evolution P={args.population}, S={args.sample_size}; accuracy (%) mean ± "
          "std over seeds\n")
    print("| space | decisions | strategy | seeds | best validation accuracy | its test "
          "accuracy | s per evaluation |")
    print("|---" * 7 + "|")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pynas-bench-hierarchical-") as work_dir:
        for space in SPACES:
            for strategy in STRATEGIES:
                print(row(space, strategy, run(space, strategy, args, Path(work_dir))),
                      flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
