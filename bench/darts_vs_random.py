"""The cell that default DARTS finds against cells drawn at random from the same space,
each retrained the same way on Fashion-MNIST.

1. ``pynas search darts --dataset fashion-mnist --limit-train N`` with every other
   setting at its default (the darts space, beta-decay on, 10 epochs);
2. the genotype it found and ``--random`` genotypes drawn uniformly from the darts space
   (seeds 0, 1, ...; each edge's operation and input uniform, as the space's random
   search draws them) are each retrained by ``pynas.retrain.train`` with the same data
   (``--retrain-limit`` training examples, the built-in split's validation and test),
   epochs, network size and seed;
3. prints each cell's test accuracy and the summary: DARTS's cell against the mean and
   standard deviation of the random cells (issue #11's target: DARTS's cell beats the
   random mean by more than their standard deviation).

At the default size each step takes hours on one CPU thread: ``--search-dir`` retrains
from an earlier run of the search instead of searching again, and ``--workers N`` retrains
N cells at once. Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (or
``--data-dir``). Run as
``pynas bench darts_vs_random`` or ``python bench/darts_vs_random.py``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from pynas.retrain import train
from pynas.search.random_search import random_arch
from pynas.spaces import get_space


def search_darts(work: Path, args: argparse.Namespace) -> dict:
    """The result.json of a default DARTS search on Fashion-MNIST (or of --search-dir)."""
    if args.search_dir:
        config = json.loads((args.search_dir / "config.json").read_text())
        args.search_limit = config["limit_train"]  # what the table's header reports
        return json.loads((args.search_dir / "result.json").read_text())
    out = work / "darts-search"
    command = [sys.executable, "-m", "pynas", "search", "darts", "--dataset", args.dataset,
               "--limit-train", str(args.search_limit), "--out", str(out), "--overwrite"]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    print("+ " + " ".join(command[2:]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / "result.json").read_text())


def retrain(genotype: dict, args: argparse.Namespace, threads: int | None = None) -> float:
    """Test accuracy (%) of ``genotype`` retrained with the benchmark's recipe (on
    ``threads`` threads when given)."""
    if threads:
        torch.set_num_threads(threads)
    trained = train({"space": "darts", "best": {"genotype": genotype}}, args.dataset,
                    data_dir=args.data_dir, limit_train=args.retrain_limit,
                    epochs=args.epochs, channels=args.channels, layers=args.layers, seed=0)
    return float(trained.metrics["test_acc"])


def retrained(rows: list[tuple[str, dict]], args: argparse.Namespace):
    """(name, test accuracy) of each (name, genotype) retrained, in order; with
    ``--workers N`` in N processes of one thread each."""
    if args.workers == 1:
        for name, genotype in rows:
            yield name, retrain(genotype, args)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process running torch
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [(name, pool.submit(retrain, genotype, args, 1)) for name, genotype in rows]
        for name, future in futures:
            yield name, future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench darts_vs_random",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-darts-vs-random"))
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="a built-in dataset or a path (default fashion-mnist)")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST's IDX files")
    parser.add_argument("--search-limit", type=int, default=2000,
                        help="training examples of the DARTS search (default 2000)")
    parser.add_argument("--retrain-limit", type=int, default=5000,
                        help="training examples of each retraining (default 5000)")
    parser.add_argument("--epochs", type=int, default=10, help="retraining epochs (default 10)")
    parser.add_argument("--channels", type=int, default=8,
                        help="initial channels of the retrained network (default 8)")
    parser.add_argument("--layers", type=int, default=5,
                        help="cells of the retrained network (default 5)")
    parser.add_argument("--random", type=int, default=5, help="random cells (default 5)")
    parser.add_argument("--search-dir", type=Path,
                        help="reuse the run directory of an earlier search of this benchmark "
                             "instead of searching again")
    parser.add_argument("--workers", type=int, default=1,
                        help="retrainings run at once, one thread each (default 1: one at a "
                             "time, with torch's threads)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.search_dir and not all((args.search_dir / name).is_file()
                                   for name in ("result.json", "config.json")):
        parser.error(f"--search-dir: no result.json and config.json in {args.search_dir}")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    found = search_darts(args.work_dir, args)
    space = get_space("darts")
    rows = [("DARTS (defaults)", found["genotype"])]
    rows += [(f"random {seed}", space.to_genotype(random_arch(space, random.Random(seed))))
             for seed in range(args.random)]
    accuracies = {}
    for name, accuracy in retrained(rows, args):
        accuracies[name] = accuracy
        print(f"{name}: test accuracy {accuracy:.2f}", file=sys.stderr, flush=True)
    darts = accuracies.pop("DARTS (defaults)")
    values = list(accuracies.values())
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"{args.dataset}, search on {args.search_limit} examples, each cell retrained "
          f"{args.epochs} epochs on {args.retrain_limit} (C={args.channels}, "
          f"{args.layers} cells); test accuracy (%)\n")
    print("| cell | test accuracy |")
    print("|---|---:|")
    print(f"| DARTS, its defaults | {darts:.2f} |")
    for name, value in accuracies.items():
        print(f"| {name} | {value:.2f} |")
    print(f"| random, mean ± std | {mean:.2f} ± {spread:.2f} |")
    verdict = "beats" if darts > mean + spread else "does not beat"
    print(f"\nDARTS's cell {verdict} the random mean by more than their standard deviation "
          f"({darts:.2f} against {mean:.2f} + {spread:.2f}); "
          f"{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
