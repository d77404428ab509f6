"""One DARTS search step: pynas's supernet (fused or reference combine) against a supernet
written the way the original DARTS code writes it.

For each configuration and each supernet, times one first-order and one second-order
search step (:meth:`BilevelOptimizer.step`: the architecture step, then the weight step):
the median over ``--repeats`` after a warm-up step, the three supernets taking turns so
the ratios are measured side by side. On CPU the time is the process's CPU time (see
:func:`seconds_of`), so run it with ``OMP_NUM_THREADS=1``. It also measures the step's
peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the rise of the process's
peak resident memory (VmHWM, restarted after a warm-up step) over its resident memory
before the step, each supernet in a fresh process with glibc returning freed blocks at once.

Supernets:

  fused      ``DartsSupernet(mixed_op="fused")``: one ``pynas.ops.mixed_op`` per node;
  reference  ``DartsSupernet(mixed_op="reference")``: the pure-PyTorch combine;
  original   the original DARTS ``model_search.py`` form: one ``MixedOp`` per edge
             returning ``sum(w * op(x))``, the zero op computing ``x.mul(0.)``, nodes
             summing their edges, softmax taken once per forward;
  partial    with ``--partial-channels K`` > 1 only: PC-DARTS, ``DartsSupernet(
             mixed_op="fused", partial_channels=K, edge_normalization=True)``, one
             ``pynas.ops.partial_channel_combine`` per node; its "speed-up vs original"
             and "memory vs original" are PC-DARTS's gain over the full supernet.

The same operation modules, optimiser and data serve all three. pynas's supernet (fused
and reference) also applies each state's ReLU once for all the operations that start with
one (``pynas.spaces.darts.shares_relu``), where the original applies it once per operation;
so fused against reference is the combine alone, and fused against original is what a user
gains in all. The combine's share of the step time is estimated by timing the combine alone
(forward and backward) on tensors of the shapes the supernet combines, once per
forward-backward pass of the step (2 for first order, 5 for second order).

Run as ``OMP_NUM_THREADS=1 python bench/darts_step.py [--config small paper]
[--orders 1 2] [--repeats N] [--device cuda] [--partial-channels 4]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from pynas.search.darts.bilevel import BilevelOptimizer
from pynas.search.darts.supernet import ArchitectureMixin, DartsSupernet, node_edge_count
from pynas.spaces.darts import (
    OPERATIONS,
    cell_preprocessing,
    make_operation,
    reduction_layers,
)

CONFIGS = {  # name: (C, layers, batch, image side), 3 channels, 10 classes
    "small": (8, 5, 16, 16),
    "paper": (16, 8, 64, 32),
}
FULL_SUPERNETS = ("fused", "reference", "original")
PASSES_PER_STEP = {1: 2, 2: 5}  # forward-backward passes of a first/second-order step


class OriginalMixedOp(nn.Module):
    """The original DARTS ``MixedOp``: ``sum(w * op(x) for w, op in zip(weights, ops))``."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.ops = nn.ModuleList(
            make_operation(name, channels, stride, affine=False) for name in OPERATIONS[1:]
        )

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        # the zero op of the original code: a real multiply by zero, strided when reducing
        zero = x[:, :, :: self.stride, :: self.stride].mul(0.0)
        return weights[0] * zero + sum(w * op(x) for w, op in zip(weights[1:], self.ops))


class OriginalCell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_previous) -> None:
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            c_pp, c_p, c, reduction_previous, False
        )
        self.ops = nn.ModuleList(
            OriginalMixedOp(c, 2 if reduction and j < 2 else 1)
            for i in range(steps)
            for j in range(2 + i)
        )

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier :], dim=1)


class OriginalSupernet(ArchitectureMixin, nn.Module):
    """``model_search.Network`` of the DARTS code, on pynas's operation modules."""

    def __init__(self, num_classes, in_channels, channels, layers, steps=4, multiplier=4):
        super().__init__()
        stem = 3 * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem)
        )
        c_pp, c_p, c, reduction_previous = stem, stem, channels, False
        self.cells = nn.ModuleList()
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            c = 2 * c if reduction else c
            self.cells.append(
                OriginalCell(steps, multiplier, c_pp, c_p, c, reduction, reduction_previous)
            )
            reduction_previous, c_pp, c_p = reduction, c_p, multiplier * c
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        shape = (node_edge_count(steps), len(OPERATIONS))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def forward(self, x: Tensor) -> Tensor:
        normal = functional.softmax(self.alpha_normal, dim=-1)
        reduce = functional.softmax(self.alpha_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.global_pooling(s1).flatten(1))


def partial_supernet(partial_channels: int) -> str:
    """The name of the PC-DARTS supernet of K = ``partial_channels``."""
    return f"partial-{partial_channels}"


def build(supernet: str, channels: int, layers: int) -> nn.Module:
    """One of the supernets named in the module docstring (``partial-K`` for PC-DARTS)."""
    if supernet == "original":
        return OriginalSupernet(10, 3, channels, layers)
    if supernet.startswith("partial-"):
        return DartsSupernet(10, 3, channels=channels, layers=layers, mixed_op="fused",
                             partial_channels=int(supernet.split("-")[1]),
                             edge_normalization=True)
    return DartsSupernet(10, 3, channels=channels, layers=layers, mixed_op=supernet)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_resident() -> bool:
    """Restart the process's peak resident memory (VmHWM) from its current resident memory
    (Linux >= 4.0). Needed because a child forked from a large parent starts with the
    parent's peak, and ``exec`` keeps it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _peak_resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class StepSetup:
    """One supernet with its bilevel optimiser and a (train, valid) batch."""

    def __init__(self, config: str, supernet: str, order: int, device: torch.device) -> None:
        channels, layers, batch, side = CONFIGS[config]
        torch.manual_seed(0)
        self.model = build(supernet, channels, layers).to(device)
        self.optimizer = BilevelOptimizer(self.model, epochs=10, order=order)
        images = torch.randn(2, batch, 3, side, side, device=device)
        labels = torch.randint(0, 10, (2, batch), device=device)
        self.batches = ((images[0], labels[0]), (images[1], labels[1]))

    def step(self) -> None:
        self.optimizer.step(*self.batches)


def seconds_of(function, device: torch.device) -> float:
    """Seconds of one call: CPU seconds of this process on CPU (other processes on a busy
    machine then do not count; run with one thread, OMP_NUM_THREADS=1, so that they are
    also wall seconds), wall seconds after synchronising on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start
    start = time.process_time()
    function()
    return time.process_time() - start


def step_seconds(
    config: str, order: int, device: torch.device, repeats: int, supernets: tuple[str, ...]
) -> dict:
    """Median seconds of one search step of each supernet, measured side by side: the
    supernets take turns, in a rotating order, so that a busy machine slows all alike."""
    setups = {supernet: StepSetup(config, supernet, order, device) for supernet in supernets}
    times: dict[str, list[float]] = {supernet: [] for supernet in supernets}
    for setup in setups.values():
        setup.step()  # warm-up: allocator, momentum buffers, kernels
    for repeat in range(repeats):
        turn = supernets[repeat % len(supernets) :] + supernets[: repeat % len(supernets)]
        for supernet in turn:
            times[supernet].append(seconds_of(setups[supernet].step, device))
    return {supernet: statistics.median(values) for supernet, values in times.items()}


def peak_step_bytes(config: str, supernet: str, order: int, device: torch.device) -> int:
    """Memory one search step needs above what the process held before it (on CPU, run
    in a fresh process: nothing else then moves its resident memory)."""
    setup = StepSetup(config, supernet, order, device)
    setup.step()  # warm-up: momentum buffers and allocator caches exist before measuring
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        setup.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if not _reset_peak_resident():
        raise RuntimeError("cannot reset the peak resident memory (/proc/self/clear_refs); "
                           "the CPU memory column needs Linux >= 4.0")
    before = _resident_bytes()
    setup.step()
    return max(_peak_resident_bytes() - before, 0)


def combine_seconds(config: str, supernet: str, device: torch.device, repeats: int) -> float:
    """Forward + backward time of every node combine of one supernet pass, timed alone on
    fresh tensors of the shapes the supernet combines (the original's are the fused
    supernet's)."""
    channels, layers, batch, side = CONFIGS[config]
    model = build("fused" if supernet == "original" else supernet, channels, layers).to(device)
    combine = model.cells[0].combine
    recorded: list[tuple] = []
    for cell in model.cells:
        cell.combine = lambda *arguments: recorded.append(arguments) or combine(*arguments)
    with torch.no_grad():
        model(torch.randn(batch, 3, side, side, device=device))

    def fresh(value):
        """``value`` with each tensor (in nested lists) replaced by a new random leaf."""
        if isinstance(value, Tensor):
            return torch.randn(value.shape, device=device, requires_grad=True)
        if isinstance(value, (list, tuple)):
            return [fresh(entry) for entry in value]
        return value

    def leaves(value) -> list[Tensor]:
        if isinstance(value, Tensor):
            return [value]
        if isinstance(value, list):
            return [leaf for entry in value for leaf in leaves(entry)]
        return []

    def original_combine(outputs, alpha, bypass, edge_weights):
        # per edge sum(w * op(x)); the zero op multiplies a tensor of its output's
        # shape by 0 (the edge input in the original code; another output here)
        weights = functional.softmax(alpha, dim=-1)
        return sum(
            sum(w * (out if out is not None else edge[1].mul(0.0)) for w, out in zip(ws, edge))
            for ws, edge in zip(weights, outputs)
        )

    node_combine = original_combine if supernet == "original" else combine
    nodes = [fresh(arguments) for arguments in recorded]

    def all_nodes() -> None:
        for arguments in nodes:
            result = node_combine(*arguments)
            torch.autograd.grad(result, leaves(arguments), torch.ones_like(result))

    all_nodes()  # warm-up
    return statistics.median(seconds_of(all_nodes, device) for _ in range(repeats))


def child(arguments: argparse.Namespace) -> None:
    config, supernet, order = arguments.child.split(",")
    print(peak_step_bytes(config, supernet, int(order), torch.device(arguments.device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench darts_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--orders",
        nargs="+",
        type=int,
        choices=(1, 2),
        default=[1, 2],
        help="which search steps to time (the paper config is slow on a CPU)",
    )
    parser.add_argument(
        "--partial-channels",
        type=int,
        metavar="K",
        default=1,
        help="also time PC-DARTS's supernet with 1/K of the channels operated on, and edge "
        "normalization (default: 1, not timed)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        child(arguments)
        return 0
    device = torch.device(arguments.device)
    supernets = FULL_SUPERNETS
    if arguments.partial_channels > 1:
        supernets += (partial_supernet(arguments.partial_channels),)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print(
        "| config (C, layers, batch, side) | order | supernet | step (ms) | peak memory (MiB) "
        "| combine share | speed-up vs original | memory vs original |"
    )
    print("|---" * 8 + "|")
    for config in arguments.config:
        combine = {s: combine_seconds(config, s, device, arguments.repeats) for s in supernets}
        for order in arguments.orders:
            seconds = step_seconds(config, order, device, arguments.repeats, supernets)
            memory = {s: peak_memory(arguments, config, s, order) for s in supernets}
            for supernet in supernets:
                share = PASSES_PER_STEP[order] * combine[supernet] / seconds[supernet]
                cells = [
                    f"{config} {CONFIGS[config]}",
                    str(order),
                    supernet,
                    f"{1e3 * seconds[supernet]:.0f}",
                    f"{memory[supernet] / 2**20:.1f}",
                    f"{100 * share:.1f}%",
                    f"{seconds['original'] / seconds[supernet]:.2f}x",
                    f"{memory[supernet] / max(memory['original'], 1):.2f}x",
                ]
                print("| " + " | ".join(cells) + " |", flush=True)
    return 0


def peak_memory(arguments: argparse.Namespace, config: str, supernet: str, order: int) -> int:
    """:func:`peak_step_bytes` in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{config},{supernet},{order}",
        "--device",
        arguments.device,
    ]
    # Freed blocks of 64 KiB and more go back to the system at once, so the resident
    # memory follows the live tensors instead of what glibc keeps cached.
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    completed = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return int(completed.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
