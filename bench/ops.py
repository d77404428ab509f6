"""Fused DARTS mixed op against the original DARTS form, eager and torch.compile'd.

Times forward + backward (``torch.autograd.grad`` into every operation output and
alpha, so no gradient accumulation is timed) of

  (a) fused     ``pynas.ops.mixed_op``, one call per node;
  (b) original  the DARTS code's form: softmax of alpha, then per edge
                ``sum(w * out for w, out in zip(weights, outputs))``, edges summed per node;
  (c) compiled  ``torch.compile`` of (b);

for one edge (K=8) and for a whole DARTS cell (4 nodes fed by 2, 3, 4, 5 edges: 14 edges,
K=8). The zero op (``none``) is passed as ``None`` to (a) and skipped by (b) and (c), so
every method combines the same 7 tensors per edge. The three take turns, round by round.
Reports the median microseconds,
the effective bandwidth of (a) (bytes that must move: each output read once forward and
once backward, each gradient written once, the node output written and its gradient
read once), the machine's copy bandwidth measured in the same run, and the ratios.
Run as ``pynas bench ops`` or ``python bench/ops.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pynas.ops import mixed_op

SHAPES = {  # batch 64 feature maps, and the small overhead-bound case
    "C16x32x32": (64, 16, 32, 32),
    "C32x16x16": (64, 32, 16, 16),
    "C64x8x8": (64, 64, 8, 8),
    "8x8x8x8": (8, 8, 8, 8),
}
NUM_OPS = 8  # the DARTS operations; index 0 is `none`
CELL_EDGES = (2, 3, 4, 5)  # incoming edges of the 4 intermediate nodes
TARGETS_CPU = {"large": {"bandwidth": 0.75, "original": 1.5, "compiled": 1.0},
               "small": {"original": 8.0, "compiled": 5.0}}
TARGETS_CUDA = {"large": {"bandwidth": 0.80}, "small": {"original": 5.0}}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(steps: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median wall seconds of each of ``steps`` (name -> function), timed in turns (each
    round runs every method once, in a rotating order) so that a machine whose speed
    drifts during the run slows every method alike."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            _synchronize(device)
            start = time.perf_counter()
            steps[name]()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def copy_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 10) -> float:
    """Measured copy bandwidth in GB/s (bytes read + bytes written per second)."""
    source = torch.ones(megabytes * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), device, repeats, warmup=2)
    return 2 * source.numel() * 4 / seconds / 1e9


def make_case(edges_per_node, shape, dtype, device):
    """Operation outputs (None for `none`) and alphas for nodes with these edge counts."""
    nodes = []
    for edges in edges_per_node:
        outputs = [[None] + [torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
                             for _ in range(NUM_OPS - 1)] for _ in range(edges)]
        alpha = (1e-3 * torch.randn(edges, NUM_OPS, device=device)).requires_grad_()
        nodes.append((outputs, alpha))
    return nodes


def fused(nodes):
    return [mixed_op(outputs, alpha) for outputs, alpha in nodes]


def original(nodes):
    results = []
    for outputs, alpha in nodes:
        weights = torch.softmax(alpha, dim=-1)
        results.append(sum(
            sum(w * out for w, out in zip(weights[e], edge) if out is not None)
            for e, edge in enumerate(outputs)
        ))
    return results


def _forward_backward(forward, nodes, grads, leaves):
    return lambda: torch.autograd.grad(forward(nodes), leaves, grads)


def effective_bytes(nodes, shape, dtype) -> int:
    numel = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    present = sum(out is not None for outputs, _ in nodes for edge in outputs for out in edge)
    # forward: read M outputs, write 1 result; backward: read 1 grad + M outputs, write M.
    return (3 * present + 2 * len(nodes)) * numel


def run(device: str = "cpu", threads: int = 1, repeats: int = 20, shapes=None,
        compile_reference: bool = True, dtype: torch.dtype = torch.float32) -> dict:
    """Run every case; return the copy bandwidth and one row per (case, shape)."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(device, threads, repeats, shapes, compile_reference, dtype)
    finally:
        torch.set_num_threads(previous_threads)


def _run(device, threads, repeats, shapes, compile_reference, dtype) -> dict:
    torch.manual_seed(0)
    bandwidth = copy_bandwidth(device)
    rows = []
    for case, edges in (("edge", (1,)), ("cell", CELL_EDGES)):
        for name in shapes or SHAPES:
            shape = SHAPES[name]
            nodes = make_case(edges, shape, dtype, device)
            leaves = [out for outputs, alpha in nodes for edge in outputs for out in edge
                      if out is not None] + [alpha for _, alpha in nodes]
            grads = [torch.randn(shape, dtype=dtype, device=device) for _ in nodes]
            # The small case runs many more rounds (it is overhead-bound, microseconds).
            reps = repeats if torch.Size(shape).numel() > 10**5 else repeats * 10
            row = {"case": case, "shape": name, "edges": sum(edges)}
            compiled = None
            if compile_reference:
                torch._dynamo.reset()  # a fresh compilation per case, never a recompile limit
                compiled = torch.compile(original, dynamic=False)
            steps = {method: _forward_backward(forward, nodes, grads, leaves)
                     for method, forward in (("fused", fused), ("original", original),
                                             ("compiled", compiled)) if forward is not None}
            for method, seconds in interleaved_medians(steps, device, reps, warmup=3).items():
                row[method] = seconds * 1e6
            row["gbps"] = effective_bytes(nodes, shape, dtype) / row["fused"] / 1e3
            rows.append(row)
            del nodes, leaves, grads
    return {"device": str(device), "threads": threads, "copy_gbps": bandwidth, "rows": rows}


def format_table(result: dict) -> str:
    """A markdown table of the rows with ratios and the targets met or missed."""
    targets = TARGETS_CUDA if result["device"].startswith("cuda") else TARGETS_CPU
    copy = result["copy_gbps"]
    lines = [
        f"device {result['device']}, {result['threads']} thread(s), measured copy bandwidth "
        f"{copy:.1f} GB/s",
        "",
        "| case | shape | fused us | original us | compiled us | fused GB/s (% copy) "
        "| vs original | vs compiled | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        vs_original = row["original"] / row["fused"]
        vs_compiled = row["compiled"] / row["fused"] if "compiled" in row else float("nan")
        verdict = ""
        if row["case"] == "cell":
            size = "small" if row["shape"] == "8x8x8x8" else "large"
            wanted = targets[size]
            checks = {"bandwidth": row["gbps"] / copy, "original": vs_original,
                      "compiled": vs_compiled}
            missed = [f"{k} {checks[k]:.2f}<{v}" for k, v in wanted.items() if not checks[k] >= v]
            verdict = "met" if not missed else "MISSED " + ", ".join(missed)
        compiled_text = f"{row['compiled']:.0f}" if "compiled" in row else "-"
        lines.append(
            f"| {row['case']} | {row['shape']} | {row['fused']:.0f} | {row['original']:.0f} "
            f"| {compiled_text} | {row['gbps']:.1f} ({100 * row['gbps'] / copy:.0f}%) "
            f"| {vs_original:.2f}x | {vs_compiled:.2f}x | {verdict} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench ops", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), help="subset of shapes")
    parser.add_argument("--no-compile", action="store_true", help="skip (c), torch.compile")
    parser.add_argument("--dtype", default="float32",
                        choices=["float32", "float64", "float16", "bfloat16"])
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("pynas bench ops: no CUDA device available", file=sys.stderr)
        return 2
    result = run(args.device, args.threads, args.repeats, args.shapes,
                 compile_reference=not args.no_compile, dtype=getattr(torch, args.dtype))
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
