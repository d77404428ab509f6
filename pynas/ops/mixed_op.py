"""The public DARTS mixed operation: validation and the nested forms."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from pynas.ops import _kernels

Entry = Optional[Tensor]  # None stands for the zero op


def mixed_op(
    outputs: Sequence[Entry] | Sequence[Sequence[Entry]], alpha: Tensor
) -> Tensor:
    """The DARTS mixed operation, fused: one call per node.

    ``sum_e sum_k softmax(alpha[e])[k] * outputs[e][k]``, differentiable with respect
    to every output and to ``alpha``, in one pass over memory forward and one backward.

    Parameters
    ----------
    outputs : sequence of K tensors (one edge) or sequence of E sequences of K tensors
        (all edges into one node). Every tensor has the same shape, dtype and device.
        An entry may be ``None`` for the zero operation: it takes part in the softmax
        of its edge but costs no memory and no bandwidth. At least one entry is a
        tensor. Non-contiguous tensors are accepted (copied once).
    alpha : (K,) logits for one edge, or (E, K) for a node; floating point, on the
        outputs' device.

    Returns
    -------
    Tensor
        The weighted sum, of the outputs' shape and dtype. float32 and float64 run the
        CPU kernel; float32, float16 and bfloat16 the CUDA kernel (float32
        accumulation). Other combinations run the PyTorch reference with a one-time
        warning. NaN or infinite logits propagate as ``torch.softmax`` propagates them
        (an edge with a NaN or +inf logit yields NaN weights for that edge).

    Raises
    ------
    TypeError
        ``outputs`` or ``alpha`` of the wrong type, or integer dtypes.
    ValueError
        Disagreeing E or K, shapes, devices, an empty grid, or ``alpha`` not of rank 1 or 2.
    """
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a Tensor, got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be a floating-point tensor, got {alpha.dtype}")
    if isinstance(outputs, Tensor) or not isinstance(outputs, Sequence):
        raise TypeError(
            "outputs must be a list of tensors (one edge) or a list of such lists "
            f"(a node), got {type(outputs).__name__}"
        )
    if len(outputs) == 0:
        raise ValueError("outputs is empty: expected K >= 1 entries (or E >= 1 edges)")
    if alpha.dim() == 1:
        grid, logits = [outputs], alpha.unsqueeze(0)
    elif alpha.dim() == 2:
        grid, logits = outputs, alpha
    else:
        raise ValueError(
            f"alpha must have shape (K,) for one edge or (E, K) for a node, got rank "
            f"{alpha.dim()} shape {tuple(alpha.shape)}"
        )
    present, slots = _flatten(grid, logits, one_edge=alpha.dim() == 1)
    return _MixedOp.apply(slots, logits, *present)


class _MixedOp(torch.autograd.Function):
    """Autograd outside the op: the cheapest form (no pytree over tensor lists, as
    ``register_autograd`` needs), traced as is by ``torch.compile``. The op keeps its
    own registered autograd for callers of ``torch.ops.pynas.mixed_op``."""

    @staticmethod
    def forward(ctx, slots: list[int], alpha: Tensor, *outputs: Tensor) -> Tensor:
        ctx.slots = slots
        ctx.save_for_backward(alpha, *outputs)
        if torch.compiler.is_compiling():
            return torch.ops.pynas.mixed_op(list(outputs), slots, alpha)
        # Eager: the kernel itself, without a second trip through the dispatcher.
        return _kernels.forward(list(outputs), slots, alpha)

    @staticmethod
    def backward(ctx, grad: Tensor):
        alpha, *outputs = ctx.saved_tensors
        if torch.compiler.is_compiling():
            backward = torch.ops.pynas.mixed_op_backward
        else:
            backward = _kernels.backward
        grads, grad_alpha = backward(grad, outputs, ctx.slots, alpha)
        return (None, grad_alpha, *grads)


def _flatten(grid, alpha: Tensor, one_edge: bool) -> tuple[list[Tensor], list[int]]:
    """Check the E x K grid against alpha; return the present tensors and their slots
    e*K + k.

    The common case is checked in one pass (this runs on every call and bounds the op's
    overhead at small sizes); the loop that names the offending entry runs only once
    something is wrong.
    """
    edges, ops = alpha.shape
    if len(grid) != edges:
        raise ValueError(f"outputs has {len(grid)} edges but alpha has E={edges} rows")
    flat: list[Entry] = []
    for e, edge in enumerate(grid):
        if isinstance(edge, Tensor) or not isinstance(edge, Sequence):
            raise TypeError(
                f"outputs[{e}] must be a list of K tensors (alpha has rank 2), "
                f"got {type(edge).__name__}"
            )
        if len(edge) != ops:
            name = "outputs" if one_edge else f"outputs[{e}]"
            raise ValueError(f"{name} has {len(edge)} entries but alpha has K={ops}")
        flat.extend(edge)
    slots = [slot for slot, entry in enumerate(flat) if entry is not None]
    if not slots:
        raise ValueError("outputs: every entry is None; at least one must be a tensor")
    present = [flat[slot] for slot in slots]
    template = present[0]
    if (
        all(isinstance(entry, Tensor) for entry in present)
        and len({(entry.shape, entry.dtype, entry.device) for entry in present}) == 1
        and template.device == alpha.device
        and template.is_floating_point()
    ):
        return present, slots
    for slot in slots:
        entry = flat[slot]
        where = f"outputs[{slot}]" if one_edge else f"outputs[{slot // ops}][{slot % ops}]"
        if not isinstance(entry, Tensor):
            raise TypeError(f"{where} must be a Tensor or None, got {type(entry).__name__}")
        if not entry.is_floating_point():
            raise TypeError(f"{where} must be floating point, got {entry.dtype}")
        if entry.shape != template.shape:
            raise ValueError(
                f"{where} has shape {tuple(entry.shape)}, expected {tuple(template.shape)}"
            )
        if entry.dtype != template.dtype:
            raise TypeError(f"{where} has dtype {entry.dtype}, expected {template.dtype}")
        if entry.device != alpha.device:
            raise ValueError(f"{where} is on {entry.device} but alpha is on {alpha.device}")
    raise AssertionError("the one-pass check failed, yet every entry passed the slow one")
