"""DARTS on the NAS-Bench-201 space: a supernet of the nb201 network, one logit per edge
and operation shared by every cell (as the NAS-Bench-201 paper's DARTS baseline), and its
discretization to an nb201 architecture string.
"""

from __future__ import annotations

from torch import Tensor, nn

from pynas.search.darts.supernet import (
    CellArchitecture,
    NodeCombine,
    StateView,
    Supernet,
    combine_node,
    search_edge,
    state_view,
)
from pynas.spaces.base import Arch
from pynas.spaces.nb201 import (
    EDGES,
    NUM_NODES,
    OPERATIONS,
    NB201Space,
    ResidualReductionBlock,
    make_operation,
)


class NB201SearchCell(nn.Module):
    """An nb201 cell with every operation on every edge; node ``j`` is ONE combine call
    over its ``j`` incoming edges."""

    def __init__(self, channels: int, combine: NodeCombine) -> None:
        super().__init__()
        self.combine = combine
        self.groups = combine.groups  # PC-DARTS's K
        self.relu = nn.ReLU()  # applied once per node, shared by every edge leaving it
        self.edges = nn.ModuleList(
            search_edge(OPERATIONS, channels, 1, lambda name, c, _: make_operation(name, c),
                        combine.groups)
            for _ in EDGES
        )

    def forward(self, x: Tensor, architecture: CellArchitecture) -> Tensor:
        """``x`` (N, C, H, W), the 6 edges weighted by ``architecture`` -> (N, C, H, W)."""
        views: list[StateView] = []  # what the edges leaving each node read
        node = x
        offset = 0  # EDGES lists the edges grouped by target node
        for target in range(1, NUM_NODES):
            views.append(state_view(node, self.relu, self.groups, 1))
            edges = self.edges[offset : offset + target]
            node = combine_node(self.combine, edges, views, architecture, offset)
            offset += target
        return node


class NB201Supernet(Supernet):
    """The nb201 network (stem, 3 stages of ``cells_per_stage`` cells, residual reductions,
    head) with search cells sharing ``alpha_cell`` (6 edges, 5 operations), and
    ``beta_cell`` (6,) with edge normalization.

    ``mixed_op``, ``partial_channels``, ``edge_normalization`` and ``dirichlet`` as for
    :class:`pynas.search.darts.supernet.DartsSupernet`; the auxiliary skip goes beside
    every edge. Every edge is kept when discretizing, so edge normalization weighs the
    edges during the search but does not change the cell found.
    """

    space_name = "nb201"
    cell_kinds = ("cell",)
    operations = OPERATIONS
    skip_kinds = ("cell",)
    keeps_every_edge = True

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        channels: int = 16,
        cells_per_stage: int = 5,
        mixed_op: str = "fused",
        partial_channels: int = 1,
        edge_normalization: bool = False,
        dirichlet: bool = False,
    ) -> None:
        super().__init__(range(1, NUM_NODES), edge_normalization, dirichlet)
        self.discrete_space = NB201Space(channels=channels, cells_per_stage=cells_per_stage)
        combine = NodeCombine(mixed_op, partial_channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        self.stages = nn.ModuleList()
        for stage in range(3):
            if stage > 0:
                self.stages.append(ResidualReductionBlock(channels, 2 * channels))
                channels *= 2
            self.stages.extend(NB201SearchCell(channels, combine) for _ in range(cells_per_stage))
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images ``x`` (N, in_channels, H, W)."""
        architecture = self.cell_architecture("cell")
        x = self.stem(x)
        for block in self.stages:
            x = block(x, architecture) if isinstance(block, NB201SearchCell) else block(x)
        return self.classifier(self.head(x))

    def chosen_operations(self) -> list[int]:
        """The strongest operation of each edge (``none`` included, as the benchmark's
        DARTS baseline), or those :meth:`pin` set."""
        if self.pinned is not None:
            return list(self.pinned["cell"])
        return self.operation_weights("cell").argmax(dim=-1).tolist()

    def arch_string(self) -> str:
        """The discretized cell as an nb201 architecture string."""
        return self.discrete_space.to_string(self.discrete_architecture())

    def discrete_architecture(self) -> Arch:
        return self.discrete_space.validate(tuple(self.chosen_operations()))

    def edge_variants(self) -> tuple[Arch, dict[tuple[str, int, int], Arch]]:
        """The reference: ``none`` on every edge; a variant puts one operation on one edge."""
        none = self.operations.index("none")
        reference = (none,) * len(EDGES)
        variants = {
            ("cell", edge, index): reference[:edge] + (index,) + reference[edge + 1 :]
            for edge in range(len(EDGES))
            for index in range(len(self.operations))
            if index != none
        }
        return reference, variants

    def choice_weights(self, kind: str) -> Tensor:
        """Every edge is kept, with its strongest operation, ``none`` included: the
        operation weights themselves."""
        return self.expected_operation_weights(kind)

    def genotype(self) -> dict:
        return {"space": "nb201", "arch": self.arch_string()}

    def edge_names(self) -> list[str]:
        return [f"{source} -> {target}" for target, source in EDGES]

    def discrete_choices(self) -> dict[str, list[int]]:
        return {"cell": self.chosen_operations()}
