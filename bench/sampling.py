"""RL controller sampling: the fused rollout kernel against PyTorch loops.

Architectures per second (each with its log-probability and entropy) of

  (a) fused     ``Controller.sample(n)``: one kernel call, LSTM steps and draws inside;
  (b) batched   the same program as a batched PyTorch loop over decisions
                (``nn.LSTMCell`` on all n at once, ``torch.multinomial`` per decision);
  (c) one-at-a-time  the loop of the ENAS and NNI controllers: a Python loop over
                decisions, one architecture at a time (its rate does not depend on n,
                so it is timed over a few architectures);

for n in {1, 100, 1000} on the macro space (4 layers with strides: 20 choices and 6 skip
decisions) and a 5-block cell pair (normal and reduction cell: 40 decisions), on the CPU
(and CUDA when present: ``--device cuda``). Medians after warm-up, ratios measured side by
side. Run as ``pynas bench sampling`` or ``python bench/sampling.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pynas.search.rl import Controller, cell_program, decision_program
from pynas.spaces.macro import MacroSpace

COUNTS = (1, 100, 1000)
TARGETS_CPU = {1000: {"batched": 2.0, "one-at-a-time": 200.0}, 1: {"one-at-a-time": 20.0}}
ONE_AT_A_TIME_SAMPLE = 20  # architectures timed for (c)


def median_seconds(function, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def multinomial(logits: torch.Tensor, decision: int) -> torch.Tensor:
    """The draw a plain PyTorch controller makes."""
    return torch.multinomial(torch.softmax(logits, dim=1), 1)[:, 0]


def rates(controller: Controller, count: int, device: torch.device, repeats: int) -> dict:
    """Architectures per second of the three methods for ``count`` architectures."""
    def fused():
        controller.sample(count)

    @torch.no_grad()
    def batched():
        controller.walk(count, multinomial)

    @torch.no_grad()
    def one_at_a_time():
        for _ in range(min(count, ONE_AT_A_TIME_SAMPLE)):
            controller.walk(1, multinomial)

    return {
        "fused": count / median_seconds(fused, device, repeats),
        "batched": count / median_seconds(batched, device, max(3, repeats // 4)),
        "one-at-a-time": min(count, ONE_AT_A_TIME_SAMPLE)
        / median_seconds(one_at_a_time, device, 3, warmup=1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynas bench sampling", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the kernel "
                        "(default: torch's current setting)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    programs = {"macro": decision_program(MacroSpace(layers=4, strides=True)),
                "cell": cell_program(blocks=5, cells=2)}
    print(f"device {device}, {torch.get_num_threads()} threads, hidden {args.hidden}; "
          "architectures per second (higher is better)")
    print(f"{'program':8} {'D':>3} {'n':>5} {'fused':>10} {'batched':>10} {'one-by-one':>10}"
          f" {'x batched':>10} {'x one':>8}")
    missed = []
    for name, program in programs.items():
        controller = Controller(program, hidden=args.hidden).to(device)
        for count in COUNTS:
            measured = rates(controller, count, device, args.repeats)
            over_batched = measured["fused"] / measured["batched"]
            over_one = measured["fused"] / measured["one-at-a-time"]
            print(f"{name:8} {controller.num_decisions:3d} {count:5d} {measured['fused']:10.0f} "
                  f"{measured['batched']:10.0f} {measured['one-at-a-time']:10.0f} "
                  f"{over_batched:10.1f} {over_one:8.1f}")
            for method, target in TARGETS_CPU.get(count, {}).items():
                ratio = over_batched if method == "batched" else over_one
                if device.type == "cpu" and ratio < target:
                    missed.append(f"{name} n={count}: {ratio:.1f}x {method}, target {target}x")
    if device.type == "cpu":
        print("CPU targets: n=1000 >= 2x batched and >= 200x one-at-a-time; n=1 >= 20x "
              "one-at-a-time: " + ("all met" if not missed else "MISSED " + "; ".join(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
