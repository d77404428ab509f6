"""The cell that default DARTS finds against cells drawn at random from the same space,
each retrained the same way on Fashion-MNIST.

1. ``pynas search darts --dataset fashion-mnist --limit-train N`` with every other
   setting at its default (the darts space, beta-decay on, 10 epochs);
2. the genotype it found and ``--random`` genotypes drawn uniformly from the darts space
   (seeds 0, 1, ...; each edge's operation and input uniform, as the space's random
   search draws them) are each retrained by ``pynas.retrain.train`` with the same data
   (``--retrain-limit`` training examples, the built-in split's validation and test),
   epochs and network size, once per retraining seed (``--retrain-seeds N``: 0 to N-1);
3. prints each cell's test accuracy (the mean over its retrainings), the spread between
   retrainings of one cell, and the summary: DARTS's cell against the mean and standard
   deviation of the random cells (issue #11's target: DARTS's cell beats the random mean
   by more than their standard deviation).

At the default size each step takes hours on one CPU thread: ``--search-dir`` retrains
from an earlier run of the search instead of searching again, and ``--workers N`` retrains
N cells at once. Every retraining's accuracy is appended to ``retrained.jsonl`` in
``--work-dir`` as it finishes, and a later run with the same settings reuses it: a
stopped benchmark resumes where it was. Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` (or ``--data-dir``). Run as
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
from concurrent.futures import ProcessPoolExecutor, as_completed
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


def recipe(args: argparse.Namespace) -> dict:
    """The retraining settings a stored accuracy is valid for."""
    return {"dataset": args.dataset, "retrain_limit": args.retrain_limit,
            "epochs": args.epochs, "channels": args.channels, "layers": args.layers}


def retrain(genotype: dict, seed: int, args: argparse.Namespace,
            threads: int | None = None) -> float:
    """Test accuracy (%) of ``genotype`` retrained with the benchmark's recipe and ``seed``
    (on ``threads`` threads when given)."""
    if threads:
        torch.set_num_threads(threads)
    trained = train({"space": "darts", "best": {"genotype": genotype}}, args.dataset,
                    data_dir=args.data_dir, limit_train=args.retrain_limit,
                    epochs=args.epochs, channels=args.channels, layers=args.layers, seed=seed)
    return float(trained.metrics["test_acc"])


def key(genotype: dict, seed: int) -> tuple[str, int]:
    """What identifies one retraining (with the recipe)."""
    return json.dumps(genotype, sort_keys=True), seed


def stored(path: Path, args: argparse.Namespace) -> dict[tuple[str, int], float]:
    """The accuracies of earlier retrainings in ``path`` with this run's recipe."""
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["recipe"] == recipe(args):
                found[key(entry["genotype"], entry["seed"])] = entry["test_acc"]
    return found


def retrained(jobs: list[tuple[str, dict, int]], args: argparse.Namespace):
    """(name, seed, test accuracy) of each (name, genotype, seed): first those an earlier
    run stored in ``retrained.jsonl`` of the work directory, then the others as each
    retraining finishes, each stored there at once; with ``--workers N`` in N processes
    of one thread each."""
    path = args.work_dir / "retrained.jsonl"
    done = stored(path, args)

    def finished(name: str, genotype: dict, seed: int, accuracy: float):
        with path.open("a") as file:
            file.write(json.dumps({"cell": name, "genotype": genotype, "seed": seed,
                                   "recipe": recipe(args), "test_acc": accuracy}) + "\n")
        return name, seed, accuracy

    todo = []
    for name, genotype, seed in jobs:
        if key(genotype, seed) in done:
            yield name, seed, done[key(genotype, seed)]
        else:
            todo.append((name, genotype, seed))
    if args.workers == 1:
        for name, genotype, seed in todo:
            yield finished(name, genotype, seed, retrain(genotype, seed, args))
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process running torch
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = {pool.submit(retrain, genotype, seed, args, 1): (name, genotype, seed)
                   for name, genotype, seed in todo}
        for future in as_completed(futures):
            yield finished(*futures[future], future.result())


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
    parser.add_argument("--retrain-seeds", type=int, default=3,
                        help="retrainings of each cell, seeds 0 to N-1; a cell's accuracy is "
                             "their mean (default 3)")
    parser.add_argument("--search-dir", type=Path,
                        help="reuse the run directory of an earlier search of this benchmark "
                             "instead of searching again")
    parser.add_argument("--workers", type=int, default=1,
                        help="retrainings run at once, one thread each (default 1: one at a "
                             "time, with torch's threads)")
    args = parser.parse_args(argv)
    for name in ("workers", "retrain_seeds", "random"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got "
                         f"{getattr(args, name)}")
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
    jobs = [(name, genotype, seed) for name, genotype in rows
            for seed in range(args.retrain_seeds)]
    accuracies: dict[str, dict[int, float]] = {name: {} for name, _ in rows}
    for name, seed, accuracy in retrained(jobs, args):
        accuracies[name][seed] = accuracy
        print(f"{name}, retraining seed {seed}: test accuracy {accuracy:.2f}",
              file=sys.stderr, flush=True)
    means = {name: statistics.mean(by_seed.values()) for name, by_seed in accuracies.items()}
    darts = means.pop("DARTS (defaults)")
    values = list(means.values())
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    seeds = ", ".join(str(seed) for seed in range(args.retrain_seeds))
    print(f"{args.dataset}, search on {args.search_limit} examples, each cell retrained "
          f"{args.epochs} epochs on {args.retrain_limit} (C={args.channels}, "
          f"{args.layers} cells) with seeds {seeds}; test accuracy (%)\n")
    print(f"| cell | mean over retrainings | seeds {seeds} |")
    print("|---|---:|---|")
    for name, by_seed in accuracies.items():
        cell = "DARTS, its defaults" if name == "DARTS (defaults)" else name
        print(f"| {cell} | {statistics.mean(by_seed.values()):.2f} | "
              + ", ".join(f"{by_seed[seed]:.2f}" for seed in sorted(by_seed)) + " |")
    print(f"| random, mean ± std of the cells | {mean:.2f} ± {spread:.2f} | |")
    if args.retrain_seeds > 1:
        within = statistics.mean(statistics.stdev(by_seed.values())
                                 for by_seed in accuracies.values())
        print(f"\nOne cell's retrainings differ by {within:.2f} (standard deviation over "
              "seeds, mean over cells).")
    verdict = "beats" if darts > mean + spread else "does not beat"
    print(f"\nDARTS's cell {verdict} the random mean by more than their standard deviation "
          f"({darts:.2f} against {mean:.2f} + {spread:.2f}); "
          f"{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
