"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalization.

Partial channel connections (Sec. 3.2 of the paper): on each edge only ``1/K`` of the input
channels go through the candidate operations; the others bypass the edge (max-pooled on a
stride-2 edge, so they match the operations' resolution), and a channel shuffle
interleaves the two parts. The operations then cost about ``1/K`` of their compute and
memory, which lets the search take larger batches.

Edge normalization (Sec. 3.3): each edge ``(i, j)`` carries one more logit ``beta_ij``;
node ``j`` sums its incoming edges weighted by ``softmax_i(beta_ij)`` over its inputs, and
an edge's strength when the cell is discretized is that weight times the operation's
``softmax(alpha)`` weight. It damps the fluctuation that sampling channels brings.

The weighted sum, the bypass concatenation and the shuffle are one call of
``pynas.ops.partial_channel_combine`` per node (``NodeCombine`` in
:mod:`pynas.search.darts.supernet`); this module provides what the edges compute before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class PartialChannelEdge(nn.Module):
    """A PC-DARTS edge: ``edge`` (the candidate operations, built for ``channels // groups``
    channels) applied to the first ``1/groups`` of the input channels; the rest bypass it.

    Parameters
    ----------
    edge : a :class:`pynas.search.darts.supernet.MixedEdge` of ``channels // groups``
        channels, called as ``edge(x, relu_x)``.
    channels : C, the channels of the edge's input and of the node it feeds.
    groups : K, so that C/K channels are operated on.
    stride : 2 on a reduction edge, whose bypass is then max-pooled 2x2 (rounding up, as
        the operations do on odd sizes), else 1.
    """

    def __init__(self, edge: nn.Module, channels: int, groups: int, stride: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.edge = edge
        self.operated = channels // groups
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor, relu_x: Tensor | None = None) -> list[Tensor | None]:
        """The candidates' K outputs (N, C/K, H', W') on the operated channels of ``x``
        (N, C, H, W); ``relu_x`` is ``relu(x)`` when the caller shares one."""
        operated = x[:, : self.operated]
        return self.edge(operated, None if relu_x is None else relu_x[:, : self.operated])

    def bypass(self, x: Tensor) -> Tensor:
        """The channels that skip the operations, (N, C - C/K, H', W')."""
        return self.pool(x[:, self.operated :])


def node_softmax(beta: Tensor, node_inputs: Sequence[int]) -> Tensor:
    """Edge normalization's weights: the softmax of ``beta`` (E,) within each node's input
    edges, the edges listed node after node with ``node_inputs[j]`` edges into node j."""
    return torch.cat([torch.softmax(part, dim=0) for part in beta.split(list(node_inputs))])
