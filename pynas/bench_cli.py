"""``pynas bench NAME [options]``: run a benchmark of bench/ (installed as pynas.bench)."""
from __future__ import annotations

import argparse
import importlib

from pynas.errors import UsageError

BENCHMARKS = {
    "ops": "fused DARTS mixed op against the original DARTS form and torch.compile",
    "partial": "fused PC-DARTS partial-channel combine against the unfused PyTorch form",
    "nb201": "strategies on the NAS-Bench-201 table (mean +- std over seeds)",
    "sampling": "RL controller rollout: fused kernel against batched and one-at-a-time loops",
    "darts_step": "one DARTS search step: fused, reference and original-style supernets",
    "surrogate": "PNAS surrogates' rank correlation on NAS-Bench-301 cells",
    "own_data": "searches on your own files: Fashion-MNIST as PNG folders, diabetes as CSV",
    "hierarchical": "hierarchical against flat space, random search and evolution, on digits",
    "load": "a DARTS search idle and beside busy processes: pynas's threads against all cores",
    "darts_vs_random": "the cell default DARTS finds against random cells, retrained on "
                       "Fashion-MNIST",
    "darts_cost": "DARTS with a multiply-add target on the nb201 supernet: the cell found "
                  "against the target",
    "pareto": "multi-objective and constrained searches on the NAS-Bench-201 table, and "
              "latency repeats",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="options of that benchmark (see pynas bench NAME --help)")


def run(args: argparse.Namespace) -> int:
    if args.name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {args.name!r}; known: {', '.join(BENCHMARKS)}")
    try:
        module = importlib.import_module(f"pynas.bench.{args.name}")
    except ModuleNotFoundError as error:
        raise UsageError(
            f"benchmark {args.name!r} is not installed ({error}); install pynas with pip"
        ) from error
    return int(module.main(args.options) or 0)
