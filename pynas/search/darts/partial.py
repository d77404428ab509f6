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
import torch.nn.functional as functional
from torch import Tensor, nn


class PartialChannelEdge(nn.Module):
    """A PC-DARTS edge: ``edge`` (the candidate operations, built for ``channels // groups``
    channels), applied to the first ``1/groups`` of the input channels; the rest bypass it
    (:func:`split_state`, computed once per cell state for all the edges leaving it).

    Parameters
    ----------
    edge : a :class:`pynas.search.darts.supernet.MixedEdge` of ``channels // groups``
        channels, called as ``edge(x, relu_x)``.
    channels : C, the channels of the edge's input and of the node it feeds.
    groups : K, so that C/K channels are operated on.
    """

    def __init__(self, edge: nn.Module, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.edge = edge
        self.operated = channels // groups

    def forward(self, operated: Tensor, relu_operated: Tensor | None = None
                ) -> list[Tensor | None]:
        """The candidates' K outputs (N, C/K, H', W') from the operated channels (N, C/K,
        H, W) of the edge's input (and their ReLU, when the caller shares one)."""
        return self.edge(operated, relu_operated)


def split_state(x: Tensor, groups: int, stride: int) -> tuple[Tensor, Tensor]:
    """The two parts of a cell state ``x`` (N, C, H, W) that every PC-DARTS edge leaving it
    reads: the operated channels (N, C/K, H, W) and the bypass (N, C - C/K, H', W'),
    max-pooled 2x2 on a stride-2 edge (rounding up, as the operations do on odd sizes).

    One ``split`` for all the edges, not a slice per edge: its backward is one
    concatenation, where each slice's would write a zero-filled gradient of the whole state.
    """
    channels = x.shape[1]
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    operated, rest = x.split([channels // groups, channels - channels // groups], dim=1)
    if stride == 2:
        rest = functional.max_pool2d(rest, 2, 2, ceil_mode=True)
    return operated, rest


def node_softmax(beta: Tensor, node_inputs: Sequence[int]) -> Tensor:
    """Edge normalization's weights: the softmax of ``beta`` (E,) within each node's input
    edges, the edges listed node after node with ``node_inputs[j]`` edges into node j."""
    return torch.cat([torch.softmax(part, dim=0) for part in beta.split(list(node_inputs))])
