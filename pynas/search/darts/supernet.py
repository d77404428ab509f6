"""The DARTS supernet: every edge holds every operation, every node is ONE combine call.

Each intermediate node combines all its incoming edges with one call to a fused op
(:class:`NodeCombine`): ``pynas.ops.mixed_op`` (Eq. 1 of the DARTS paper, summed over the
edges into the node), or, with PC-DARTS's partial channels or edge normalization,
``pynas.ops.partial_channel_combine``. The zero operation is passed as ``None`` so it
costs nothing. ``mixed_op="reference"`` swaps in the pure-PyTorch combines, to measure
what the kernels bring end to end.

What the DARTS and nb201 supernets share, the architecture parameters and how they become
the weights a cell reads (:class:`Supernet`), is here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.ops import (
    mixed_op,
    mixed_op_reference,
    partial_channel_combine,
    partial_channel_combine_reference,
)
from pynas.search.darts.cures import expected_weights, mixing_logits
from pynas.search.darts.partial import PartialChannelEdge, node_softmax, split_state
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.darts import (
    CELL_OPERATIONS,
    OPERATIONS,
    DartsSpace,
    Genotype,
    cell_preprocessing,
    make_operation,
    reduction_layers,
    shares_relu,
)

#: a factory(name, channels, stride) of one candidate operation, ``None`` for the zero op
OperationFactory = Callable[[str, int, int], nn.Module | None]

MIXED_OP_KINDS = ("fused", "reference")
#: the logit that removes an operation (or an edge) when discretizing: softmax gives it 0
REMOVED = -1e4


class NodeCombine:
    """How a node reduces its incoming edges, in ONE call (what NNI calls the mixed layer's
    ``_reduction``).

    Parameters
    ----------
    kind : ``"fused"`` (the ``pynas.ops`` kernels, which themselves fall back to the
        reference with a warning where none is compiled) or ``"reference"`` (pure PyTorch).
    groups : PC-DARTS's K: the edges operate on 1/K of the channels (1: all of them).
    """

    def __init__(self, kind: str, groups: int = 1) -> None:
        if kind not in MIXED_OP_KINDS:
            raise UsageError(
                f"unknown --mixed-op {kind!r}; expected one of {', '.join(MIXED_OP_KINDS)}"
            )
        self.groups = groups
        fused = kind == "fused"
        self.mixed_op = mixed_op if fused else mixed_op_reference
        self.partial = partial_channel_combine if fused else partial_channel_combine_reference

    def __call__(
        self,
        outputs: Sequence[Sequence[Tensor | None]],
        logits: Tensor,
        bypass: Sequence[Tensor | None],
        edge_weights: Tensor | None,
    ) -> Tensor:
        """The node: ``sum_e edge_weights[e] * shuffle_K(cat(sum_k softmax(logits[e])[k] *
        outputs[e][k], bypass[e]))`` (PC-DARTS), which is ``mixed_op(outputs, logits)`` when
        K = 1 without edge weights (DARTS).

        Parameters
        ----------
        outputs : per incoming edge, its K candidates' outputs (``None`` for the zero op).
        logits : (edges, K).
        bypass : per edge, the channels that skip it (``None`` entries when K = 1).
        edge_weights : (edges,) edge normalization's weights, or ``None``.
        """
        if self.groups == 1 and edge_weights is None:
            return self.mixed_op(outputs, logits)
        return self.partial(outputs, bypass, logits, self.groups, edge_weights)


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


def search_edge(
    operations: Sequence[str], channels: int, stride: int, factory: OperationFactory, groups: int
) -> nn.Module:
    """The edge of a search cell: a :class:`MixedEdge`, or with ``groups`` K > 1 a
    :class:`PartialChannelEdge` whose operations are built for C/K channels."""
    if groups == 1:
        return MixedEdge(operations, channels, stride, factory)
    return PartialChannelEdge(
        MixedEdge(operations, channels // groups, stride, factory), channels, groups
    )


@dataclass(frozen=True)
class CellArchitecture:
    """What the search cells of one type read, computed once per supernet forward."""

    #: (edges, K): the logits whose softmax weighs each edge's operations
    logits: Tensor
    #: (edges,): edge normalization's weights, or ``None``
    edge_weights: Tensor | None
    #: the coefficient of the auxiliary skip beside each edge (DARTS-); 0 for none
    skip: float


@dataclass(frozen=True)
class StateView:
    """What every edge leaving one cell state reads, computed once for all of them."""

    #: the state itself (DARTS-'s auxiliary skip adds it)
    state: Tensor
    #: the channels the operations see: all of them, or the first C/K with partial channels
    operated: Tensor
    #: relu(operated), shared by the operations that start with a ReLU
    relu: Tensor
    #: PC-DARTS: the other channels, max-pooled on stride-2 edges; ``None`` when K = 1
    bypass: Tensor | None


def state_view(
    state: Tensor, relu: nn.Module, groups: int, stride: int, channels_last: bool = False
) -> StateView:
    """The :class:`StateView` of ``state`` for edges of ``groups`` K and ``stride``.

    ``channels_last`` lays the ReLU out channels-last on the CPU, for the darts space's
    separable and dilated convolutions that start from it: PyTorch's depthwise convolutions
    run 1.5-3x faster so on the few channels of a supernet (a quarter of them with
    PC-DARTS), copies included. The nb201 operations (dense convolutions) run faster in
    NCHW, so their cells leave it off.
    """
    if groups == 1:
        operated, bypass = state, None
    else:
        operated, bypass = split_state(state, groups, stride)
    activated = relu(operated)
    if channels_last and activated.device.type == "cpu":
        activated = activated.contiguous(memory_format=torch.channels_last)
    return StateView(state, operated, activated, bypass)


def combine_node(
    combine: Callable[..., Tensor],
    edges: Sequence[nn.Module],
    views: Sequence[StateView],
    architecture: CellArchitecture,
    first_edge: int,
) -> Tensor:
    """One node of a search cell from its incoming ``edges`` (edge ``first_edge`` on in
    the cell's order) and the views of their input states: one ``combine`` call, plus
    DARTS-'s auxiliary skip ``skip * sum(inputs)`` when its coefficient is not 0."""
    rows = slice(first_edge, first_edge + len(edges))
    outputs = [edge(view.operated, view.relu) for edge, view in zip(edges, views)]
    bypass = [view.bypass for view in views]
    edge_weights = None if architecture.edge_weights is None else architecture.edge_weights[rows]
    node = combine(outputs, architecture.logits[rows], bypass, edge_weights)
    if architecture.skip:
        node = node + architecture.skip * sum(view.state for view in views)
    return node


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
        combine: NodeCombine,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.multiplier = multiplier
        self.reduction = reduction
        self.combine = combine
        self.groups = combine.groups  # PC-DARTS's K
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            previous_previous_channels, previous_channels, channels, reduction_previous, False
        )
        self.relu = nn.ReLU()  # applied once per state, shared by every edge leaving it
        self.edges = nn.ModuleList(
            search_edge(
                OPERATIONS,
                channels,
                2 if reduction and source < 2 else 1,
                lambda name, c, stride: make_operation(name, c, stride, affine=False),
                combine.groups,
            )
            for node in range(steps)
            for source in range(2 + node)
        )

    def forward(self, s0: Tensor, s1: Tensor, architecture: CellArchitecture) -> Tensor:
        """The concatenation of the last ``multiplier`` nodes, the edges weighted by
        ``architecture`` (of this cell's type)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        views: list[StateView] = []  # what the edges leaving each state read
        offset = 0
        for _ in range(self.steps):
            for index in range(len(views), len(states)):  # the states new since last node
                stride = 2 if self.reduction and index < 2 else 1
                views.append(state_view(states[index], self.relu, self.groups, stride,
                                        channels_last=True))
            edges = self.edges[offset : offset + len(views)]
            states.append(combine_node(self.combine, edges, views, architecture, offset))
            offset += len(edges)
        return torch.cat(states[-self.multiplier :], dim=1)


class ArchitectureMixin:
    """Splits a supernet's parameters into the architecture's (``alpha_*``, the operation
    logits, and ``beta_*``, edge normalization's logits) and the weights."""

    _ARCHITECTURE_PREFIXES = ("alpha_", "beta_")

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters()
                if name.startswith(self._ARCHITECTURE_PREFIXES)]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((name, p) for name, p in self.named_parameters()
                if not name.startswith(self._ARCHITECTURE_PREFIXES))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]


class Supernet(ArchitectureMixin, nn.Module):
    """What the DARTS and nb201 supernets share: per cell type ``alpha_<type>`` (edges, K)
    logits (and ``beta_<type>`` (edges,) with edge normalization), and how they become the
    weights the cells read.

    Subclasses set ``cell_kinds``, ``operations``, ``skip_kinds`` (the cell types with
    the auxiliary skip) and ``discrete_space`` (the space of the networks the search
    derives, at their full channels), and implement ``discrete_choices``,
    ``discrete_architecture``, ``edge_variants`` and ``choice_weights`` (what the
    expected-cost term of :mod:`pynas.search.darts.cost` reads).

    Parameters
    ----------
    node_inputs : the number of input edges of each node, the edges being listed node
        after node.
    edge_normalization : PC-DARTS's per-edge ``beta`` (see :mod:`.partial`).
    dirichlet : DrNAS's Dirichlet-sampled mixed weights (see :mod:`.cures`).
    """

    cell_kinds: tuple[str, ...]
    operations: tuple[str, ...]
    skip_kinds: tuple[str, ...]
    #: whether the discretized cell keeps every edge (nb201) or drops some (darts: two
    #: input edges per node), an edge it drops getting ``none`` in :meth:`discrete_choices`
    keeps_every_edge: bool
    discrete_space: SearchSpace

    def __init__(
        self, node_inputs: Sequence[int], edge_normalization: bool, dirichlet: bool
    ) -> None:
        super().__init__()
        self.node_inputs = tuple(node_inputs)
        self.dirichlet = dirichlet
        #: the auxiliary skip's coefficient (DARTS-), which the search sets at every step
        self.skip_coefficient = 0.0
        #: operation choices that replace the argmax ones (see :meth:`pin`)
        self.pinned: dict[str, list[int]] | None = None
        edges = sum(self.node_inputs)
        for kind in self.cell_kinds:
            # Small random logits: every operation starts almost equally weighted (the paper).
            logits = 1e-3 * torch.randn(edges, len(self.operations))
            self.register_parameter(f"alpha_{kind}", nn.Parameter(logits))
            if edge_normalization:
                self.register_parameter(f"beta_{kind}", nn.Parameter(1e-3 * torch.randn(edges)))

    def operation_logits(self) -> list[nn.Parameter]:
        """The operation logits ``alpha_<type>`` of every cell type."""
        return [getattr(self, f"alpha_{kind}") for kind in self.cell_kinds]

    def cell_architecture(self, kind: str) -> CellArchitecture:
        """The differentiable weights the cells of type ``kind`` read in this forward:
        with ``dirichlet``, a fresh sample while training and the expectation otherwise."""
        alpha = getattr(self, f"alpha_{kind}")
        beta = getattr(self, f"beta_{kind}", None)
        return CellArchitecture(
            logits=mixing_logits(alpha, self.dirichlet, sample=self.training),
            edge_weights=None if beta is None else node_softmax(beta, self.node_inputs),
            skip=self.skip_coefficient if kind in self.skip_kinds else 0.0,
        )

    @torch.no_grad()
    def operation_weights(self, kind: str) -> Tensor:
        """(edges, K) float64: what each operation of each edge weighs on average
        (``softmax(alpha)``, or the Dirichlet mean)."""
        return expected_weights(getattr(self, f"alpha_{kind}").detach().double(), self.dirichlet)

    @torch.no_grad()
    def edge_weights(self, kind: str) -> Tensor | None:
        """(edges,) float64 edge normalization's weights, or ``None`` without it."""
        beta = getattr(self, f"beta_{kind}", None)
        return None if beta is None else node_softmax(beta.detach().double(), self.node_inputs)

    def alpha_weights(self) -> dict[str, list[list[float]]]:
        """:meth:`operation_weights` of every cell type, as lists."""
        return {kind: self.operation_weights(kind).tolist() for kind in self.cell_kinds}

    def pin(self, choices: dict[str, list[int]] | None) -> None:
        """Discretize to ``choices`` (as :meth:`discrete_choices` gives them, keeping the
        edges the argmax keeps) rather than to each edge's strongest operation; ``None``:
        the argmax again. What ``--cost-target`` does with the cell within its tolerance
        (:func:`pynas.search.darts.cost.fit_to_target`)."""
        self.pinned = None if choices is None else {k: list(v) for k, v in choices.items()}

    def discrete_choices(self) -> dict[str, list[int]]:
        """Per cell type, the operation index the discretized cell gives each edge (that of
        ``none`` for an edge it drops)."""
        raise NotImplementedError

    def discrete_architecture(self) -> Arch:
        """The discretized cells as an architecture of ``discrete_space``."""
        raise NotImplementedError

    def edge_variants(self) -> tuple[Arch, dict[tuple[str, int, int], Arch]]:
        """Architectures of ``discrete_space`` that price each operation of each edge.

        Returns a reference architecture and, for each ``(cell type, edge, operation)``
        that discretization can choose (``none`` excluded), an architecture that differs
        from the reference in that edge alone. A network's cost is then the reference's
        plus, over the edges its cells keep, the variants' differences from it (the
        tests check this against every measure of discretized architectures).
        """
        raise NotImplementedError

    def choice_weights(self, kind: str) -> Tensor:
        """(edges, K), differentiable in the architecture parameters: how much each
        operation of each edge of the cells of type ``kind`` counts in the discretized
        cell, the smooth stand-in for the 0/1 choices of :meth:`discrete_choices`."""
        raise NotImplementedError

    def expected_operation_weights(self, kind: str) -> Tensor:
        """(edges, K), differentiable: ``softmax(alpha)``, or the Dirichlet mean, the
        weights discretization ranks."""
        return expected_weights(getattr(self, f"alpha_{kind}"), self.dirichlet)

    @torch.no_grad()
    def discretized_logits(self) -> dict[str, Tensor]:
        """Architecture parameters that make this supernet compute its own discrete cells:
        each edge weighs its chosen operation 1 (``none`` if dropped) and, with edge
        normalization, a node weighs the edges it keeps equally, as a discrete cell sums
        them."""
        none = self.operations.index("none")
        logits = {}
        for kind, choices in self.discrete_choices().items():
            alpha = getattr(self, f"alpha_{kind}")
            chosen = torch.tensor(choices, device=alpha.device)
            logits[f"alpha_{kind}"] = torch.full_like(alpha, REMOVED).scatter_(
                1, chosen.unsqueeze(1), 0.0
            )
            if hasattr(self, f"beta_{kind}"):
                kept = torch.zeros(len(choices), dtype=alpha.dtype, device=alpha.device)
                logits[f"beta_{kind}"] = kept.masked_fill(chosen == none, REMOVED)
        return logits


class DartsSupernet(Supernet):
    """The DARTS search network (the paper's ``model_search.Network``).

    Parameters
    ----------
    num_classes, in_channels : of the images.
    channels : initial channel count C.
    layers : number of cells; reductions at one and two thirds of the depth.
    steps : intermediate nodes per cell.
    multiplier : how many of the last nodes form a cell's output.
    stem_multiplier : the stem has ``stem_multiplier * channels`` channels.
    mixed_op : ``"fused"`` or ``"reference"`` (see :class:`NodeCombine`).
    partial_channels : PC-DARTS's K (1: every channel goes through the operations).
    edge_normalization, dirichlet : see :class:`Supernet`.

    ``alpha_normal`` and ``alpha_reduce`` are the (edges, 8) architecture logits, in the
    order of :data:`pynas.spaces.darts.OPERATIONS`; ``beta_normal`` and ``beta_reduce``
    (edges,) with edge normalization. The auxiliary skip goes beside the normal cells'
    edges.
    """

    space_name = "darts"
    cell_kinds = ("normal", "reduce")
    operations = OPERATIONS
    skip_kinds = ("normal",)
    keeps_every_edge = False

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
        partial_channels: int = 1,
        edge_normalization: bool = False,
        dirichlet: bool = False,
    ) -> None:
        if not 1 <= multiplier <= steps:
            raise UsageError(f"multiplier must be in 1..steps={steps}, got {multiplier}")
        super().__init__([2 + node for node in range(steps)], edge_normalization, dirichlet)
        self.steps = steps
        self.multiplier = multiplier
        self.discrete_space = DartsSpace(
            channels=channels, layers=layers, steps=steps, stem_multiplier=stem_multiplier
        )
        combine = NodeCombine(mixed_op, partial_channels)
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

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images ``x`` (N, in_channels, H, W)."""
        architectures = {kind: self.cell_architecture(kind) for kind in self.cell_kinds}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, architectures["reduce" if cell.reduction else "normal"])
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self) -> Genotype:
        """The discrete cells (see :func:`discretize_cell`) as a DARTS genotype."""
        concat = list(range(2 + self.steps - self.multiplier, 2 + self.steps))
        genotype: Genotype = {}
        for kind in self.cell_kinds:
            pairs = discretize_cell(
                self.operation_weights(kind), self.steps, self.edge_weights(kind)
            )
            if self.pinned is not None:
                first_edges = [node_edge_count(node) for node in range(self.steps)]
                pairs = [[self.operations[self.pinned[kind][first_edges[i // 2] + source]],
                          source] for i, (_, source) in enumerate(pairs)]
            genotype[kind] = pairs
            genotype[f"{kind}_concat"] = concat
        return genotype

    def arch_string(self) -> str | None:
        """The genotype as a ``darts`` space string (``None`` when ``multiplier`` leaves
        out nodes, which the space's decisions cannot express)."""
        if self.multiplier != self.steps:
            return None
        return self.discrete_space.to_string(self.discrete_architecture())

    def discrete_architecture(self) -> Arch:
        """The genotype as an architecture of the darts space (whose cells concatenate
        every node: ``multiplier`` must equal ``steps``)."""
        return self.discrete_space.from_genotype(self.genotype())

    def edge_variants(self) -> tuple[Arch, dict[tuple[str, int, int], Arch]]:
        """The reference: every node fed by inputs 0 and 1 through the first cell
        operation (``max_pool_3x3``). The variant of edge ``source -> node`` with
        operation ``o`` puts ``o`` on that edge in place of one of the node's reference
        edges (that from input 1 when the source is 1, else that from input 0). Both
        reference edges of a node read a cell input of the same shape with the same
        stride, so it does not matter which one a variant replaces."""
        reference_operation = CELL_OPERATIONS[0]

        def architecture(kind: str = "", node: int = -1, pair: list | None = None) -> Arch:
            genotype: Genotype = {}
            for cell_kind in self.cell_kinds:
                pairs = [[reference_operation, source]
                         for _ in range(self.steps) for source in (0, 1)]
                if cell_kind == kind:
                    pairs[2 * node + (1 if pair[1] == 1 else 0)] = pair
                genotype[cell_kind] = pairs
                genotype[f"{cell_kind}_concat"] = self.discrete_space.concat
            return self.discrete_space.from_genotype(genotype)

        variants = {}
        for kind in self.cell_kinds:
            edge = 0
            for node in range(self.steps):
                for source in range(2 + node):
                    for index, name in enumerate(self.operations):
                        if name != "none":
                            variants[kind, edge, index] = architecture(kind, node, [name, source])
                    edge += 1
        return architecture(), variants

    def choice_weights(self, kind: str) -> Tensor:
        """The derived cell keeps two input edges per node and, on each, the strongest
        operation other than ``none``. So each edge's operations count by their weights
        renormalised without ``none``, times the edge's share of the node's two kept
        inputs: ``2 * strength / sum of the node's strengths``, an edge's strength being
        what :func:`discretize_cell` ranks (its highest non-``none`` weight, times its
        edge normalization weight). The weights of a node's edges sum to 2, as its kept
        inputs do."""
        none = self.operations.index("none")
        weights = self.expected_operation_weights(kind)
        weights = weights.index_fill(1, torch.tensor([none], device=weights.device), 0.0)
        strength = weights.max(dim=-1).values
        beta = getattr(self, f"beta_{kind}", None)
        if beta is not None:
            strength = strength * node_softmax(beta, self.node_inputs)
        kept = torch.cat([2 * part / part.sum() for part in strength.split(self.node_inputs)])
        return kept.unsqueeze(1) * weights / weights.sum(dim=-1, keepdim=True)

    def edge_names(self) -> list[str]:
        """``"source -> node"`` for each edge, nodes 0 and 1 being the cell inputs."""
        return [
            f"{source} -> {node + 2}" for node in range(self.steps) for source in range(2 + node)
        ]

    def discrete_choices(self) -> dict[str, list[int]]:
        genotype = self.genotype()
        first_edges = [node_edge_count(node) for node in range(self.steps)]
        choices = {}
        for kind in self.cell_kinds:
            chosen = [OPERATIONS.index("none")] * node_edge_count(self.steps)
            for index, (name, source) in enumerate(genotype[kind]):
                chosen[first_edges[index // 2] + source] = OPERATIONS.index(name)
            choices[kind] = chosen
        return choices


def discretize_cell(
    weights: Tensor,
    steps: int,
    edge_weights: Tensor | None = None,
    operations: Sequence[str] = OPERATIONS,
) -> list[list]:
    """The discrete cell of (edges, K) operation weights (the DARTS paper's Sec. 2.4).

    Each intermediate node keeps its two incoming edges of highest strength, and each kept
    edge its non-``none`` operation of highest weight. An edge's strength is its highest
    non-``none`` weight, times its edge normalization weight when ``edge_weights`` (edges,)
    is given (PC-DARTS, Sec. 3.3: ``softmax(beta) * softmax(alpha)``).

    Returns
    -------
    list
        ``2 * steps`` pairs ``[operation, input node]``, strongest edge first per node.
    """
    weights = weights.detach().double().clone()
    weights[:, operations.index("none")] = -1.0
    strength, best = weights.max(dim=-1)
    if edge_weights is not None:
        strength = strength * edge_weights.detach().double()
    pairs: list[list] = []
    offset = 0
    for node in range(steps):
        count = 2 + node
        # sorted is stable: among equally strong edges the lower input wins
        kept = sorted(range(count), key=lambda source: -float(strength[offset + source]))[:2]
        pairs += [[operations[int(best[offset + source])], source] for source in kept]
        offset += count
    return pairs
