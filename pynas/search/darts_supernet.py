"""The DARTS supernet: every edge holds every operation, every node is ONE mixed-op call.

Each intermediate node combines all its incoming edges with one call to the fused
``pynas.ops.mixed_op`` (Eq. 1 of the paper, summed over the edges into the node), the
zero operation passed as ``None`` so it costs nothing. ``mixed_op="reference"`` swaps in
the pure-PyTorch combine, to measure what the kernel brings end to end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Callable

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.ops import mixed_op, mixed_op_reference
from pynas.spaces.darts import (
    OPERATIONS,
    DartsSpace,
    Genotype,
    cell_preprocessing,
    make_operation,
    reduction_layers,
    shares_relu,
)

Combine = Callable[[Sequence[Sequence[Tensor | None]], Tensor], Tensor]
#: a factory(name, channels, stride) of one candidate operation, ``None`` for the zero op
OperationFactory = Callable[[str, int, int], nn.Module | None]

MIXED_OP_KINDS = ("fused", "reference")
#: the logit that removes an operation from a discretized edge: softmax gives it exactly 0
_REMOVED = -1e4


def resolve_mixed_op(kind: str) -> Combine:
    """The node combine: ``"fused"`` (``pynas.ops.mixed_op``, which itself falls back to
    the reference with a warning where no kernel is compiled) or ``"reference"``."""
    if kind == "fused":
        return mixed_op
    if kind == "reference":
        return mixed_op_reference
    raise UsageError(f"unknown --mixed-op {kind!r}; expected one of {', '.join(MIXED_OP_KINDS)}")


class MixedEdge(nn.Module):
    """All candidate operations of one edge; calling it gives their K outputs."""

    def __init__(
        self, operations: Sequence[str], channels: int, stride: int, factory: OperationFactory
    ) -> None:
        super().__init__()
        self.operations = tuple(operations)
        candidates = {name: factory(name, channels, stride) for name in self.operations}
        self.candidates = nn.ModuleDict(
            {name: module for name, module in candidates.items() if module is not None}
        )

        self.after_relu = {name for name, module in self.candidates.items()
                             if shares_relu(module)}
        self.relu = nn.ReLU()

    def forward(self, x: Tensor, relu_x: Tensor | None = None) -> list[Tensor | None]:
        """K outputs of the shape of ``x`` (halved on a stride-2 edge); ``None`` for the
        zero operation.

        The operations that start with a ReLU of ``x`` share one: ``relu_x`` when the
        caller gives it (one per cell state, shared by every edge leaving that state),
        else one computed here.
        """
        if relu_x is None and self.after_relu:
            relu_x = self.relu(x)
        outputs: list[Tensor | None] = []
        for name in self.operations:
            if name in self.after_relu:
                outputs.append(self.candidates[name].preactivated(relu_x))
            elif name in self.candidates:
                outputs.append(self.candidates[name](x))
            else:
                outputs.append(None)
        return outputs


def node_edge_count(steps: int) -> int:
    """Edges of a cell whose node ``i`` (0-based) has ``2 + i`` inputs."""
    return sum(2 + node for node in range(steps))


class SearchCell(nn.Module):
    """A DARTS cell with every operation on every edge."""

    def __init__(
        self,
        steps: int,
        multiplier: int,
        previous_previous_channels: int,
        previous_channels: int,
        channels: int,
        reduction: bool,
        reduction_previous: bool,
        combine: Combine,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.multiplier = multiplier
        self.reduction = reduction
        self.combine = combine
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            previous_previous_channels, previous_channels, channels, reduction_previous, False
        )
        self.relu = nn.ReLU()  # applied once per state, shared by every edge leaving it
        self.edges = nn.ModuleList(
            MixedEdge(
                OPERATIONS,
                channels,
                2 if reduction and source < 2 else 1,
                lambda name, c, stride: make_operation(name, c, stride, affine=False),
            )
            for node in range(steps)
            for source in range(2 + node)
        )

    def forward(self, s0: Tensor, s1: Tensor, alpha: Tensor) -> Tensor:
        """``alpha``: (edges, K) logits of this cell type; returns the concatenation of the
        last ``multiplier`` nodes."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus: list[Tensor] = []  # each state's ReLU, shared by all edges leaving it
        offset = 0
        for _ in range(self.steps):
            count = len(states)
            relus += [self.relu(h) for h in states[len(relus):]]
            outputs = [self.edges[offset + source](states[source], relus[source])
                       for source in range(count)]
            states.append(self.combine(outputs, alpha[offset : offset + count]))
            offset += count
        return torch.cat(states[-self.multiplier :], dim=1)


class ArchitectureMixin:
    """Splits a supernet's parameters into architecture logits (``alpha_*``) and weights."""

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("alpha_")]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((name, p) for name, p in self.named_parameters() if not name.startswith("alpha_"))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]


class DartsSupernet(ArchitectureMixin, nn.Module):
    """The DARTS search network (the paper's ``model_search.Network``).

    Parameters
    ----------
    num_classes, in_channels : of the images.
    channels : initial channel count C.
    layers : number of cells; reductions at one and two thirds of the depth.
    steps : intermediate nodes per cell.
    multiplier : how many of the last nodes form a cell's output.
    stem_multiplier : the stem has ``stem_multiplier * channels`` channels.
    mixed_op : ``"fused"`` or ``"reference"`` (see :func:`resolve_mixed_op`).

    ``alpha_normal`` and ``alpha_reduce`` are the (edges, 8) architecture logits, in the
    order of :data:`pynas.spaces.darts.OPERATIONS`.
    """

    space_name = "darts"
    cell_kinds = ("normal", "reduce")
    operations = OPERATIONS

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        mixed_op: str = "fused",
    ) -> None:
        super().__init__()
        if not 1 <= multiplier <= steps:
            raise UsageError(f"multiplier must be in 1..steps={steps}, got {multiplier}")
        self.steps = steps
        self.multiplier = multiplier
        combine = resolve_mixed_op(mixed_op)
        stem_channels = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )
        previous_previous, previous, current = stem_channels, stem_channels, channels
        reduction_previous = False
        self.cells = nn.ModuleList()
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            if reduction:
                current *= 2
            self.cells.append(
                SearchCell(
                    steps,
                    multiplier,
                    previous_previous,
                    previous,
                    current,
                    reduction,
                    reduction_previous,
                    combine,
                )
            )
            reduction_previous = reduction
            previous_previous, previous = previous, multiplier * current
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)
        # Small random logits: every operation starts almost equally weighted (the paper).
        shape = (node_edge_count(steps), len(OPERATIONS))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images ``x`` (N, in_channels, H, W)."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            alpha = self.alpha_reduce if cell.reduction else self.alpha_normal
            s0, s1 = s1, cell(s0, s1, alpha)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self) -> Genotype:
        """The discrete cells (see :func:`discretize_cell`) as a DARTS genotype."""
        concat = list(range(2 + self.steps - self.multiplier, 2 + self.steps))
        return {
            "normal": discretize_cell(self.alpha_normal, self.steps),
            "normal_concat": concat,
            "reduce": discretize_cell(self.alpha_reduce, self.steps),
            "reduce_concat": concat,
        }

    def arch_string(self) -> str | None:
        """The genotype as a ``darts`` space string (``None`` when ``multiplier`` leaves
        out nodes, which the space's decisions cannot express)."""
        if self.multiplier != self.steps:
            return None
        space = DartsSpace(steps=self.steps)
        return space.to_string(space.from_genotype(self.genotype()))

    def edge_names(self) -> list[str]:
        """``"source -> node"`` for each edge, nodes 0 and 1 being the cell inputs."""
        return [
            f"{source} -> {node + 2}" for node in range(self.steps) for source in range(2 + node)
        ]

    def alpha_weights(self) -> dict[str, list[list[float]]]:
        """Softmax weights per edge, ``{"normal": (edges, K), "reduce": (edges, K)}``."""
        return {
            kind: torch.softmax(getattr(self, f"alpha_{kind}").detach().double(), dim=-1).tolist()
            for kind in self.cell_kinds
        }

    @torch.no_grad()
    def discretized_logits(self) -> dict[str, Tensor]:
        """Architecture logits that make this supernet compute its own discrete cells:
        each kept edge weights its chosen operation 1, every other edge weights ``none`` 1."""
        genotype = self.genotype()
        return {
            f"alpha_{kind}": one_hot_logits(genotype[kind], self.steps, alpha)
            for kind, alpha in (("normal", self.alpha_normal), ("reduce", self.alpha_reduce))
        }


def discretize_cell(
    alpha: Tensor, steps: int, operations: Sequence[str] = OPERATIONS
) -> list[list]:
    """The discrete cell of (edges, K) logits (the paper's Sec. 2.4).

    Each intermediate node keeps its two incoming edges of highest non-``none`` softmax
    weight, and each kept edge its non-``none`` operation of highest weight.

    Returns
    -------
    list
        ``2 * steps`` pairs ``[operation, input node]``, strongest edge first per node.
    """
    weights = torch.softmax(alpha.detach().double(), dim=-1)
    weights[:, operations.index("none")] = -1.0
    strength, best = weights.max(dim=-1)
    pairs: list[list] = []
    offset = 0
    for node in range(steps):
        count = 2 + node
        # sorted is stable: among equally strong edges the lower input wins
        kept = sorted(range(count), key=lambda source: -float(strength[offset + source]))[:2]
        pairs += [[operations[int(best[offset + source])], source] for source in kept]
        offset += count
    return pairs


def one_hot_logits(pairs: Sequence[Sequence], steps: int, like: Tensor) -> Tensor:
    """(edges, K) logits whose softmax is one-hot on each kept edge's operation of
    ``pairs`` and on ``none`` for every edge not kept."""
    logits = torch.full_like(like, _REMOVED)
    logits[:, OPERATIONS.index("none")] = 0.0
    offsets = [node_edge_count(node) for node in range(steps)]
    for index, (name, source) in enumerate(pairs):
        edge = offsets[index // 2] + source
        logits[edge, OPERATIONS.index("none")] = _REMOVED
        logits[edge, OPERATIONS.index(name)] = 0.0
    return logits
