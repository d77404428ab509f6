"""Fused PC-DARTS partial-channel combine against the unfused PyTorch form.

Times forward + backward (``torch.autograd.grad`` into every operation output, every cell
state or bypass tensor, alpha and the edge logits beta, so no gradient accumulation into
``.grad`` is timed) of one PC-DARTS cell (4 nodes fed by 2, 3, 4, 5 edges, K=8 operations,
g=4 channel groups, edge normalisation with ``softmax(beta)``) at the shapes of the paper's
CIFAR-10 search network (C=16 at 32x32, C=32 at 16x16, C=64 at 8x8):

  (a) fused    ``pynas.ops.partial_channel_combine``, one call per node;
  (b) unfused  the PC-DARTS code's form: per edge the softmax-weighted sum of the operated
               channels, ``torch.cat`` with the bypassed ones, the channel shuffle
               (view/transpose/reshape), then the edge-weighted sum of the node.

Two kinds of cell: ``normal``, where each edge's bypass is a channel slice
``x[:, C/g:]`` of its input state (node i reads the states 0 .. i+1), and ``reduction``,
where it is a separate tensor (the caller's max-pooled channels). The zero op is ``None``
in (a) and skipped in (b), so both combine the same 7 tensors per edge. The two take turns,
round by round; the table gives median microseconds, the ratio, and the effective bandwidth
of (a) (each output and bypass tensor read twice and its gradient written once, the node's
result written and its gradient read once) beside the machine's copy bandwidth measured in
the same run. Run as ``pynas bench partial`` or ``python bench/partial.py``.
"""
from __future__ import annotations

import argparse
import sys

import torch

from pynas.bench.ops import copy_bandwidth, interleaved_medians
from pynas.ops import partial_channel_combine

SHAPES = {"C16x32x32": (16, 32), "C32x16x16": (32, 16), "C64x8x8": (64, 8)}
NUM_OPS = 8  # the DARTS operations; index 0 is `none`
GROUPS = 4  # PC-DARTS' K on CIFAR-10: a quarter of the channels are operated on
CELL_EDGES = (2, 3, 4, 5)  # incoming edges of the 4 intermediate nodes
CELLS = ("normal", "reduction")
TARGET = 1.3  # fused at least this much faster than unfused, forward + backward (CPU)


def make_cell(cell: str, batch: int, channels: int, size: int, dtype, device) -> dict:
    """The leaves of one cell: states, operation outputs (None for `none`), bypass tensors,
    alpha (E, K) and beta (E,) per node."""
    def leaf(count, scale=1.0):
        return (scale * torch.randn(batch, count, size, size, dtype=dtype, device=device)
                ).requires_grad_()

    operated = channels // GROUPS
    states = [leaf(channels) for _ in range(1 + len(CELL_EDGES))]
    nodes = []
    for edges in CELL_EDGES:
        outputs = [[None] + [leaf(operated) for _ in range(NUM_OPS - 1)] for _ in range(edges)]
        if cell == "normal":
            bypass = [state[:, operated:] for state in states[:edges]]
        else:
            bypass = [leaf(channels - operated) for _ in range(edges)]
        alpha = (1e-3 * torch.randn(edges, NUM_OPS, device=device)).requires_grad_()
        beta = (1e-3 * torch.randn(edges, device=device)).requires_grad_()
        nodes.append((outputs, bypass, alpha, beta))
    leaves = [out for outputs, _, _, _ in nodes for edge in outputs for out in edge
              if out is not None]
    if cell == "normal":
        leaves += states
    else:
        leaves += [tensor for _, bypass, _, _ in nodes for tensor in bypass]
    leaves += [t for _, _, alpha, beta in nodes for t in (alpha, beta)]
    return {"nodes": nodes, "leaves": leaves}


def fused(nodes):
    return [partial_channel_combine(outputs, bypass, alpha, GROUPS, torch.softmax(beta, dim=0))
            for outputs, bypass, alpha, beta in nodes]


def channel_shuffle(x, groups):
    batch, channels, height, width = x.shape
    return (x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
            .reshape(batch, channels, height, width))


def unfused(nodes):
    results = []
    for outputs, bypass, alpha, beta in nodes:
        weights, edge_weights = torch.softmax(alpha, dim=-1), torch.softmax(beta, dim=0)
        edges = []
        for e, edge in enumerate(outputs):
            mixed = sum(w * out for w, out in zip(weights[e], edge) if out is not None)
            edges.append(edge_weights[e] * channel_shuffle(torch.cat([mixed, bypass[e]], dim=1),
                                                           GROUPS))
        results.append(sum(edges))
    return results


def _forward_backward(forward, nodes, leaves, grads):
    return lambda: torch.autograd.grad(forward(nodes), leaves, grads)


def effective_bytes(nodes, element_size: int) -> int:
    """Bytes the fused op must move forward + backward (see the module docstring)."""
    total = 0
    for outputs, bypass, _, _ in nodes:
        present = sum(out.numel() for edge in outputs for out in edge if out is not None)
        passed = sum(t.numel() for t in bypass)
        result = outputs[0][1].numel() * GROUPS
        total += 3 * (present + passed) + 2 * result
    return total * element_size


def run(device: str = "cpu", threads: int = 1, repeats: int = 20, batch: int = 64,
        shapes=None, dtype: torch.dtype = torch.float32) -> dict:
    """Run every (cell, shape); return the copy bandwidth and one row per case."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        rows = []
        bandwidth = copy_bandwidth(device)
        for cell in CELLS:
            for name in shapes or SHAPES:
                channels, size = SHAPES[name]
                case = make_cell(cell, batch, channels, size, dtype, device)
                nodes, leaves = case["nodes"], case["leaves"]
                grads = [torch.randn(batch, channels, size, size, dtype=dtype, device=device)
                         for _ in nodes]
                steps = {"fused": _forward_backward(fused, nodes, leaves, grads),
                         "unfused": _forward_backward(unfused, nodes, leaves, grads)}
                seconds = interleaved_medians(steps, device, repeats, warmup=3)
                row = {"cell": cell, "shape": name, "edges": sum(CELL_EDGES),
                       **{method: value * 1e6 for method, value in seconds.items()}}
                row["gbps"] = effective_bytes(nodes, grads[0].element_size()) / row["fused"] / 1e3
                rows.append(row)
        return {"device": str(device), "threads": threads, "batch": batch, "dtype": str(dtype),
                "copy_gbps": bandwidth, "rows": rows}
    finally:
        torch.set_num_threads(previous_threads)


def format_table(result: dict) -> str:
    """A markdown table of the rows with the ratio and the target met or missed."""
    copy = result["copy_gbps"]
    cpu = not result["device"].startswith("cuda")
    lines = [
        f"device {result['device']}, {result['threads']} thread(s), batch {result['batch']}, "
        f"{result['dtype']}, g={GROUPS}, K={NUM_OPS}, edges {'+'.join(map(str, CELL_EDGES))}; "
        f"measured copy bandwidth {copy:.1f} GB/s",
        "",
        "| cell | shape | fused us | unfused us | fused vs unfused | fused GB/s (% copy) "
        "| target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        ratio = row["unfused"] / row["fused"]
        verdict = ("met" if ratio >= TARGET else f"MISSED {ratio:.2f}<{TARGET}") if cpu else "-"
        lines.append(
            f"| {row['cell']} | {row['shape']} | {row['fused']:.0f} | {row['unfused']:.0f} "
            f"| {ratio:.2f}x | {row['gbps']:.1f} ({100 * row['gbps'] / copy:.0f}%) | {verdict} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench partial",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), help="subset of shapes")
    parser.add_argument("--dtype", default="float32",
                        choices=["float32", "float64", "float16", "bfloat16"])
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("pynas bench partial: no CUDA device available", file=sys.stderr)
        return 2
    result = run(args.device, args.threads, args.repeats, args.batch, args.shapes,
                 getattr(torch, args.dtype))
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
