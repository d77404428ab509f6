"""Every pynas op defined once: schema, fake kernel (for torch.compile) and autograd.

Device kernels register beside this file (``_kernels.py``); the public wrappers in
``mixed_op.py`` accept the nested forms, validate, and call these.

``pynas::mixed_op`` takes the E x K grid of a node compactly: ``outputs`` are the M
present tensors (the zero op is absent), ``slots[m] = e*K + k`` says where output m
sits in ``alpha`` (E, K). Absent entries take part in the softmax and nothing else.
"""
from __future__ import annotations

import torch
from torch import Tensor

torch.library.define(
    "pynas::mixed_op",
    "(Tensor[] outputs, int[] slots, Tensor alpha) -> Tensor",
)
torch.library.define(
    "pynas::mixed_op_backward",
    "(Tensor grad, Tensor[] outputs, int[] slots, Tensor alpha) -> (Tensor[], Tensor)",
)


@torch.library.register_fake("pynas::mixed_op")
def _mixed_op_fake(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> Tensor:
    if not outputs:
        raise ValueError("outputs: at least one entry must be a tensor")
    return torch.empty_like(outputs[0], memory_format=torch.contiguous_format)


@torch.library.register_fake("pynas::mixed_op_backward")
def _mixed_op_backward_fake(
    grad: Tensor, outputs: list[Tensor], slots: list[int], alpha: Tensor
) -> tuple[list[Tensor], Tensor]:
    return [torch.empty_like(grad) for _ in outputs], torch.empty_like(alpha)


def _setup_context(ctx, inputs, output) -> None:
    outputs, slots, alpha = inputs
    ctx.slots = slots
    ctx.save_for_backward(alpha, *outputs)


def _backward(ctx, grad: Tensor):
    alpha, *outputs = ctx.saved_tensors
    grads, grad_alpha = torch.ops.pynas.mixed_op_backward(grad, outputs, ctx.slots, alpha)
    return list(grads), None, grad_alpha


torch.library.register_autograd("pynas::mixed_op", _backward, setup_context=_setup_context)


# ---- pynas::sample_categorical: (B, N) logits -> actions, log_prob, entropy (B,) ----
# seed is the Philox key as a signed int64; offset a multiple of 4 (pynas/ops/sampling.py).
torch.library.define(
    "pynas::sample_categorical",
    "(Tensor logits, int seed, int offset) -> (Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("pynas::sample_categorical")
def _sample_categorical_fake(logits: Tensor, seed: int, offset: int):
    rows = logits.shape[0]
    return (logits.new_empty(rows, dtype=torch.int64), logits.new_empty(rows),
            logits.new_empty(rows))
