"""Pure-PyTorch references of the fused ops: the test oracle and the fallback."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mixed_op_reference(outputs: Sequence[Sequence[Tensor | None]], alpha: Tensor) -> Tensor:
    """The DARTS mixed operation of one node, written with plain torch ops.

    Parameters
    ----------
    outputs : E sequences of K tensors of one shape, or ``None`` for the zero op
        (at least one entry is a tensor).
    alpha : (E, K) logits.

    Returns
    -------
    Tensor
        ``sum_e sum_k softmax(alpha[e])[k] * outputs[e][k]``, accumulated in float32
        (float64 for float64 outputs) and returned in the outputs' dtype.
    """
    template = next(t for edge in outputs for t in edge if t is not None)
    accumulate = torch.float64 if template.dtype == torch.float64 else torch.float32
    weights = torch.softmax(alpha.to(accumulate), dim=-1)
    total = torch.zeros(template.shape, dtype=accumulate, device=template.device)
    for e, edge in enumerate(outputs):
        for k, output in enumerate(edge):
            if output is not None:
                total = total + weights[e, k] * output.to(accumulate)
    return total.to(template.dtype)


def partial_channel_combine_reference(
    outputs: Sequence[Sequence[Tensor | None]],
    bypass: Sequence[Tensor | None],
    alpha: Tensor,
    groups: int,
    edge_weights: Tensor | None = None,
) -> Tensor:
    """The PC-DARTS partial-channel combine of one node, written with plain torch ops.

    Parameters
    ----------
    outputs : E sequences of K tensors (N, C/g, ...), or ``None`` for the zero op
        (at least one entry is a tensor).
    bypass : E tensors (N, C - C/g, ...), the channels that skip each edge; ``None``
        entries (or 0 channels) when ``groups == 1``.
    alpha : (E, K) logits.
    groups : g >= 1, the channel-shuffle groups.
    edge_weights : (E,) weights of the edges, or ``None`` for all ones.

    Returns
    -------
    Tensor
        (N, C, ...): ``sum_e edge_weights[e] * shuffle_g(cat(sum_k softmax(alpha[e])[k]
        * outputs[e][k], bypass[e]))``, accumulated in float32 (float64 for float64
        outputs) and returned in the outputs' dtype. Every step is linear, so the edges
        are summed before the one concatenation and shuffle.
    """
    template = next(t for edge in outputs for t in edge if t is not None)
    accumulate = torch.float64 if template.dtype == torch.float64 else torch.float32
    weights = torch.softmax(alpha.to(accumulate), dim=-1)
    if edge_weights is not None:
        weights = weights * edge_weights.to(accumulate).unsqueeze(-1)
    operated = torch.zeros(template.shape, dtype=accumulate, device=template.device)
    for e, edge in enumerate(outputs):
        for k, output in enumerate(edge):
            if output is not None:
                operated = operated + weights[e, k] * output.to(accumulate)
    if groups == 1:
        return operated.to(template.dtype)
    passed = 0
    for e, channels in enumerate(bypass):
        scale = 1 if edge_weights is None else edge_weights[e].to(accumulate)
        passed = passed + scale * channels.to(accumulate)
    combined = torch.cat([operated, passed], dim=1)
    return channel_shuffle(combined, groups).to(template.dtype)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle of x (N, C, ...): channel ``i * C/g + a`` moves to
    ``a * g + i``."""
    batch, channels, *spatial = x.shape
    return (x.view(batch, groups, channels // groups, *spatial).transpose(1, 2)
            .reshape(batch, channels, *spatial))
