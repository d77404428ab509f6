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


# ---- pynas::partial_channel_combine: the PC-DARTS node (pynas/ops/partial_channel.py) ----
# outputs, slots and alpha as in pynas::mixed_op, each output (N, C/g, ...); bypass: E
# tensors (N, C - C/g, ...), empty when groups == 1; edge_weights: (E,) or None for ones.
# The backward returns the gradients of the outputs, the bypass tensors, alpha, and of
# edge_weights when edge_weights_grad is set (a (0,) tensor otherwise, so that a node
# without edge normalisation never reads its bypass tensors in the backward).
torch.library.define(
    "pynas::partial_channel_combine",
    "(Tensor[] outputs, int[] slots, Tensor[] bypass, Tensor alpha, Tensor? edge_weights, "
    "int groups) -> Tensor",
)
torch.library.define(
    "pynas::partial_channel_combine_backward",
    "(Tensor grad, Tensor[] outputs, int[] slots, Tensor[] bypass, Tensor alpha, "
    "Tensor? edge_weights, int groups, bool edge_weights_grad) "
    "-> (Tensor[], Tensor[], Tensor, Tensor)",
)


@torch.library.register_fake("pynas::partial_channel_combine")
def _partial_channel_combine_fake(outputs: list[Tensor], slots: list[int], bypass: list[Tensor],
                                  alpha: Tensor, edge_weights: Tensor | None,
                                  groups: int) -> Tensor:
    if not outputs:
        raise ValueError("outputs: at least one entry must be a tensor")
    batch, channels_per_group, *spatial = outputs[0].shape
    return outputs[0].new_empty((batch, groups * channels_per_group, *spatial))


@torch.library.register_fake("pynas::partial_channel_combine_backward")
def _partial_channel_combine_backward_fake(
    grad: Tensor, outputs: list[Tensor], slots: list[int], bypass: list[Tensor], alpha: Tensor,
    edge_weights: Tensor | None, groups: int, edge_weights_grad: bool,
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    weights = alpha if edge_weights is None else edge_weights
    return ([torch.empty_like(t) for t in outputs], [torch.empty_like(t) for t in bypass],
            torch.empty_like(alpha),
            weights.new_empty(alpha.shape[0] if edge_weights_grad else 0))


def _partial_channel_setup_context(ctx, inputs, output) -> None:
    outputs, slots, bypass, alpha, edge_weights, groups = inputs
    ctx.slots, ctx.groups, ctx.num_outputs = slots, groups, len(outputs)
    ctx.save_for_backward(alpha, edge_weights, *outputs, *bypass)


def _partial_channel_backward(ctx, grad: Tensor):
    alpha, edge_weights, *tensors = ctx.saved_tensors
    outputs, bypass = tensors[:ctx.num_outputs], tensors[ctx.num_outputs:]
    edge_weights_grad = edge_weights is not None and ctx.needs_input_grad[4]
    grads, bypass_grads, grad_alpha, grad_edge_weights = (
        torch.ops.pynas.partial_channel_combine_backward(
            grad, outputs, ctx.slots, bypass, alpha, edge_weights, ctx.groups,
            edge_weights_grad))
    return (list(grads), None, list(bypass_grads), grad_alpha,
            grad_edge_weights if edge_weights_grad else None, None)


torch.library.register_autograd("pynas::partial_channel_combine", _partial_channel_backward,
                                setup_context=_partial_channel_setup_context)
