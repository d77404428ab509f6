"""The PNAS surrogates on their own: rank DARTS-space cells they have not seen.

Reads NASLib's ``zc_nasbench301.json`` (725 DARTS cells with a CIFAR-10 validation
accuracy, most likely the NAS-Bench-301 surrogate's prediction; see the file's
SOURCE.md), trains each surrogate ensemble (:mod:`pynas.search.surrogate`) on growing
random subsets and prints, as a markdown table, Spearman's rank correlation between
its predictions and the accuracies of every cell left out, beside the rank correlation
of the parameter count (the baseline a predictor must beat). Mean ± std over seeds.

Usage::

    python -m bench.surrogate [--data ../shared/data/nb301/naslib_zc_nasbench301.json]
        [--sizes 25 50 100 200 400] [--seeds 3] [--steps 300]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pynas.errors import UsageError
from pynas.search.pnas import spearman
from pynas.search.surrogate import KINDS, SurrogateEnsemble

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "nb301"
                / "naslib_zc_nasbench301.json")
#: NASLib's compact DARTS encoding numbers these operations (no ``none``)
OPERATION_COUNT = 7
CELL_KINDS = 2  # normal, reduction
NODES, INPUTS = 4, 6  # intermediate nodes per cell; nodes a pair may read (0..5)
#: token layout: cell kind, then input node, then operation
INPUT_OFFSET = CELL_KINDS
OPERATION_OFFSET = CELL_KINDS + INPUTS
VOCABULARY_SIZE = OPERATION_OFFSET + OPERATION_COUNT
ROW_WIDTH = 5


def darts_tokens(compact: str) -> list[list[int]]:
    """A NASLib compact DARTS key as token rows, one per intermediate node and cell:
    ``[cell kind, input a, input b, operation a, operation b]``, the node's two
    ``(input, operation)`` pairs in ascending order (their sum does not depend on it)."""
    rows = []
    for kind, pairs in enumerate(ast.literal_eval(compact)):
        for node in range(NODES):
            (input_a, operation_a), (input_b, operation_b) = sorted(pairs[2 * node: 2 * node + 2])
            rows.append([kind, INPUT_OFFSET + input_a, INPUT_OFFSET + input_b,
                         OPERATION_OFFSET + operation_a, OPERATION_OFFSET + operation_b])
    return rows


def load_cells(path: Path) -> tuple[list[list[list[int]]], np.ndarray, np.ndarray]:
    """Token rows, validation accuracies and parameter counts of every cell in ``path``."""
    try:
        records = json.loads(path.read_text())["cifar10"]
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"cannot read NASLib's nb301 records from {path}: {error}") from None
    keys = list(records)
    cells = [darts_tokens(key) for key in keys]
    accuracies = np.array([records[key]["val_accuracy"] for key in keys])
    parameters = np.array([records[key]["params"]["score"] for key in keys])
    return cells, accuracies, parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="training steps per member")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cells, accuracies, parameters = load_cells(args.data)
    except UsageError as error:
        print(f"bench/surrogate.py: {error}", file=sys.stderr)
        return 2
    if max(args.sizes) >= len(cells):
        print(f"bench/surrogate.py: every size must be below {len(cells)} cells", file=sys.stderr)
        return 2
    print(f"{len(cells)} DARTS cells from {args.data}; Spearman rho on the cells left out, "
          f"mean ± std over {args.seeds} random splits; ensembles of 5, {args.steps} steps")
    print()
    ensembles = " | ".join(f"{kind.upper()} ensemble" for kind in KINDS)
    print(f"| training cells | parameter count | {ensembles} | fit seconds "
          f"({'/'.join(KINDS)}) |")
    print("|---:|---:|" + "---:|" * len(KINDS) + "---:|")
    for size in args.sizes:
        rhos: dict[str, list[float]] = {"params": [], **{kind: [] for kind in KINDS}}
        seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(len(cells))
            train, held_out = order[:size], order[size:]
            rhos["params"].append(spearman(parameters[held_out], accuracies[held_out]))
            for kind in KINDS:
                started = time.perf_counter()
                ensemble = SurrogateEnsemble(kind, VOCABULARY_SIZE, ROW_WIDTH,
                                             steps=args.steps, seed=seed)
                ensemble.fit([cells[i] for i in train], accuracies[train])
                seconds[kind].append(time.perf_counter() - started)
                predicted, _ = ensemble.predict([cells[i] for i in held_out])
                rhos[kind].append(spearman(predicted, accuracies[held_out]))
        columns = [f"{np.mean(rhos[name]):.3f} ± {np.std(rhos[name]):.3f}"
                   for name in ("params", *KINDS)]
        timing = "/".join(f"{np.mean(seconds[kind]):.1f}" for kind in KINDS)
        print(f"| {size} | " + " | ".join(columns) + f" | {timing} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
