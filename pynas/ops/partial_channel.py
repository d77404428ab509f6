"""The public PC-DARTS partial-channel combine: validation and the nested forms."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from pynas.ops import _kernels
from pynas.ops.mixed_op import Entry, _flatten

Bypass = Optional[Tensor]  # None only when groups == 1


def partial_channel_combine(
    outputs: Sequence[Entry] | Sequence[Sequence[Entry]],
    bypass: Bypass | Sequence[Bypass],
    alpha: Tensor,
    groups: int,
    edge_weights: Tensor | None = None,
) -> Tensor:
    """The PC-DARTS partial-channel combine of one edge or one node, fused.

    On an edge with input x (N, C, H, W), PC-DARTS (Xu et al. 2020) sends 1/g of the
    channels through the candidate operations and lets the other channels bypass the edge
    (max-pooled by the caller on reduction edges), then shuffles the concatenation with g
    groups; a node sums its E edges weighted by the normalised edge weights (edge
    normalisation):

    ``out = sum_e edge_weights[e] * shuffle_g(cat(sum_k softmax(alpha[e])[k] *
    outputs[e][k], bypass[e]))``

    with ``shuffle_g(y) = y.view(N, g, C/g, H, W).transpose(1, 2).reshape(N, C, H, W)``.
    Differentiable with respect to every output, every bypass tensor, ``alpha`` and
    ``edge_weights``; one pass over memory forward and one backward.

    Parameters
    ----------
    outputs : sequence of K tensors (one edge) or sequence of E sequences of K tensors
        (all edges into one node), each (N, C/g, ...) (any number of trailing dimensions,
        usually H, W), of one shape, dtype and device. An entry may be ``None`` for the
        zero operation: it takes part in the softmax of its edge and costs nothing else.
        At least one entry is a tensor.
    bypass : the channels that skip the edge, (N, C - C/g, ...) of the outputs' dtype and
        device: one tensor (one edge) or a sequence of E (a node). With ``groups == 1``
        nothing bypasses the edge: pass ``None`` (or tensors with 0 channels, or a
        sequence of ``None``).
    alpha : (K,) logits for one edge, or (E, K) for a node; floating point, on the
        outputs' device. Softmax-normalised per edge inside the op.
    groups : g >= 1, the partial-channel ratio K of the paper (4 on CIFAR-10).
    edge_weights : None (every edge weighs 1), or the E edge weights (already normalised
        by the caller): shape (E,) for a node, () or (1,) for one edge.

    Returns
    -------
    Tensor
        (N, C, ...) of the outputs' dtype. float32 and float64 run the CPU kernel;
        float32, float16 and bfloat16 the CUDA kernel (float32 accumulation); other
        combinations run the PyTorch reference with a one-time warning. Non-contiguous
        tensors are accepted (copied once), except that bypass tensors that are channel
        slices ``x[:, C/g:]`` of contiguous inputs, as on PC-DARTS' normal edges, are read
        in place.

    Raises
    ------
    TypeError
        An argument of the wrong type or a non-floating dtype, or tensors whose dtypes
        disagree.
    ValueError
        Disagreeing E or K, shapes, devices, channel counts (bypass channels other than
        C - C/g, or C not divisible by ``groups``), ``groups < 1``, ``alpha`` not of rank
        1 or 2, or ``edge_weights`` of the wrong shape.
    """
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a Tensor, got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be a floating-point tensor, got {alpha.dtype}")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if isinstance(outputs, Tensor) or not isinstance(outputs, Sequence):
        raise TypeError(
            "outputs must be a list of tensors (one edge) or a list of such lists "
            f"(a node), got {type(outputs).__name__}"
        )
    if len(outputs) == 0:
        raise ValueError("outputs is empty: expected K >= 1 entries (or E >= 1 edges)")
    one_edge = alpha.dim() == 1
    if one_edge:
        grid, logits, bypass_list = [outputs], alpha.unsqueeze(0), [bypass]
    elif alpha.dim() == 2:
        grid, logits = outputs, alpha
        bypass_list = _bypass_sequence(bypass, alpha.shape[0], groups)
    else:
        raise ValueError(
            f"alpha must have shape (K,) for one edge or (E, K) for a node, got rank "
            f"{alpha.dim()} shape {tuple(alpha.shape)}"
        )
    present, slots = _flatten(grid, logits, one_edge=one_edge)
    passed = _check_bypass(bypass_list, present[0], groups, one_edge)
    weights = _check_edge_weights(edge_weights, logits, one_edge)
    return _PartialChannel.apply(slots, groups, len(present), logits, weights, *present, *passed)


class _PartialChannel(torch.autograd.Function):
    """Autograd outside the op, as ``pynas.ops.mixed_op._MixedOp`` (the op keeps its own
    registered autograd for callers of ``torch.ops.pynas.partial_channel_combine``)."""

    @staticmethod
    def forward(ctx, slots: list[int], groups: int, num_outputs: int, alpha: Tensor,
                edge_weights: Tensor | None, *tensors: Tensor) -> Tensor:
        ctx.slots, ctx.groups, ctx.num_outputs = slots, groups, num_outputs
        ctx.save_for_backward(alpha, edge_weights, *tensors)
        outputs, bypass = list(tensors[:num_outputs]), list(tensors[num_outputs:])
        if torch.compiler.is_compiling():
            return torch.ops.pynas.partial_channel_combine(outputs, slots, bypass, alpha,
                                                           edge_weights, groups)
        # Eager: the kernel itself, without a second trip through the dispatcher.
        return _kernels.partial_channel_forward(outputs, slots, bypass, alpha, edge_weights,
                                                groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        alpha, edge_weights, *tensors = ctx.saved_tensors
        outputs, bypass = tensors[:ctx.num_outputs], tensors[ctx.num_outputs:]
        # Without edge weights to differentiate, the backward never reads the bypass tensors.
        edge_weights_grad = edge_weights is not None and ctx.needs_input_grad[4]
        if torch.compiler.is_compiling():
            backward = torch.ops.pynas.partial_channel_combine_backward
        else:
            backward = _kernels.partial_channel_backward
        grads, bypass_grads, grad_alpha, grad_edge_weights = backward(
            grad, outputs, ctx.slots, bypass, alpha, edge_weights, ctx.groups,
            edge_weights_grad)
        return (None, None, None, grad_alpha, grad_edge_weights if edge_weights_grad else None,
                *grads, *bypass_grads)


def _bypass_sequence(bypass, edges: int, groups: int) -> list[Bypass]:
    """The node form's bypass as a list of E entries (None stands for E Nones, g == 1)."""
    if bypass is None and groups == 1:
        return [None] * edges
    if isinstance(bypass, Tensor) or not isinstance(bypass, Sequence):
        raise TypeError(f"bypass must be a list of E={edges} tensors (alpha has rank 2), "
                        f"got {type(bypass).__name__}")
    if len(bypass) != edges:
        raise ValueError(f"bypass has {len(bypass)} entries but alpha has E={edges} rows")
    return list(bypass)


def _check_bypass(bypass: list[Bypass], template: Tensor, groups: int,
                  one_edge: bool) -> list[Tensor]:
    """Check each edge's bypass against the outputs' (N, C/g, ...) template; return the
    tensors the op takes (none when groups == 1)."""
    if template.dim() < 2:
        raise ValueError(f"outputs must be (N, C/g, ...) tensors, got shape "
                         f"{tuple(template.shape)}")
    batch, channels_per_group, *spatial = template.shape
    expected = (batch, (groups - 1) * channels_per_group, *spatial)
    for e, entry in enumerate(bypass):
        name = "bypass" if one_edge else f"bypass[{e}]"
        if entry is None:
            if groups == 1:
                continue
            raise TypeError(f"{name} must be a Tensor (groups={groups}), got None")
        if not isinstance(entry, Tensor):
            raise TypeError(f"{name} must be a Tensor or None, got {type(entry).__name__}")
        if entry.dtype != template.dtype:
            raise TypeError(f"{name} has dtype {entry.dtype}, expected the outputs' "
                            f"{template.dtype}")
        if entry.device != template.device:
            raise ValueError(f"{name} is on {entry.device} but the outputs are on "
                             f"{template.device}")
        if entry.dim() != template.dim() or (entry.shape[0], *entry.shape[2:]) != (
                batch, *spatial):
            raise ValueError(f"{name} has shape {tuple(entry.shape)}, expected "
                             f"{expected} (the outputs' N and spatial size)")
        channels = entry.shape[1]
        if channels != expected[1]:
            total = channels_per_group + channels
            if total % groups:
                raise ValueError(f"{name} has {channels} channels: C = C/g + {channels} = "
                                 f"{total} is not divisible by groups={groups}")
            raise ValueError(f"{name} has {channels} channels but the outputs have "
                             f"C/g = {channels_per_group}: groups={groups} needs "
                             f"{expected[1]} bypass channels (C - C/g)")
    return [entry for entry in bypass if entry is not None] if groups > 1 else []


def _check_edge_weights(edge_weights: Tensor | None, alpha: Tensor,
                        one_edge: bool) -> Tensor | None:
    """edge_weights as (E,), checked against alpha (E, K)."""
    if edge_weights is None:
        return None
    if not isinstance(edge_weights, Tensor):
        raise TypeError(f"edge_weights must be a Tensor or None, "
                        f"got {type(edge_weights).__name__}")
    if not edge_weights.is_floating_point():
        raise TypeError(f"edge_weights must be floating point, got {edge_weights.dtype}")
    if edge_weights.device != alpha.device:
        raise ValueError(f"edge_weights is on {edge_weights.device} but alpha is on "
                         f"{alpha.device}")
    edges = alpha.shape[0]
    allowed = [(), (1,)] if one_edge else [(edges,)]
    if tuple(edge_weights.shape) not in allowed:
        wanted = "() or (1,) for one edge" if one_edge else f"(E,) = ({edges},)"
        raise ValueError(f"edge_weights must have shape {wanted}, got "
                         f"{tuple(edge_weights.shape)}")
    return edge_weights.reshape(edges)
