"""DARTS on the NAS-Bench-201 space: a supernet of the nb201 network, one logit per edge
and operation shared by every cell (as the NAS-Bench-201 paper's DARTS baseline), and its
discretization to an nb201 architecture string.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pynas.search.darts_supernet import ArchitectureMixin, MixedEdge, resolve_mixed_op
from pynas.spaces.nb201 import (
    EDGES,
    NUM_NODES,
    OPERATIONS,
    NB201Space,
    ResidualReductionBlock,
    make_operation,
)


class NB201SearchCell(nn.Module):
    """An nb201 cell with every operation on every edge; node ``j`` is ONE mixed-op call
    over its ``j`` incoming edges."""

    def __init__(self, channels: int, combine) -> None:
        super().__init__()
        self.combine = combine
        self.relu = nn.ReLU()  # applied once per node, shared by every edge leaving it
        self.edges = nn.ModuleList(
            MixedEdge(OPERATIONS, channels, 1, lambda name, c, _: make_operation(name, c))
            for _ in EDGES
        )

    def forward(self, x: Tensor, alpha: Tensor) -> Tensor:
        """``x`` (N, C, H, W), ``alpha`` (6, 5) -> (N, C, H, W)."""
        nodes = [x]
        relus: list[Tensor] = []  # each node's ReLU, shared by all edges leaving it
        offset = 0  # EDGES lists the edges grouped by target node
        for target in range(1, NUM_NODES):
            relus.append(self.relu(nodes[-1]))
            outputs = [self.edges[offset + source](nodes[source], relus[source])
                       for source in range(target)]
            nodes.append(self.combine(outputs, alpha[offset : offset + target]))
            offset += target
        return nodes[-1]


class NB201Supernet(ArchitectureMixin, nn.Module):
    """The nb201 network (stem, 3 stages of ``cells_per_stage`` cells, residual reductions,
    head) with search cells sharing ``alpha_cell`` (6 edges, 5 operations)."""

    space_name = "nb201"
    cell_kinds = ("cell",)
    operations = OPERATIONS

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        channels: int = 16,
        cells_per_stage: int = 5,
        mixed_op: str = "fused",
    ) -> None:
        super().__init__()
        combine = resolve_mixed_op(mixed_op)
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
        self.alpha_cell = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPERATIONS)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of images ``x`` (N, in_channels, H, W)."""
        x = self.stem(x)
        for block in self.stages:
            x = block(x, self.alpha_cell) if isinstance(block, NB201SearchCell) else block(x)
        return self.classifier(self.head(x))

    def chosen_operations(self) -> list[int]:
        """The strongest operation of each edge (``none`` included, as the benchmark's
        DARTS baseline)."""
        return self.alpha_cell.detach().argmax(dim=-1).tolist()

    def arch_string(self) -> str:
        """The discretized cell as an nb201 architecture string."""
        return NB201Space().to_string(tuple(self.chosen_operations()))

    def genotype(self) -> dict:
        return {"space": "nb201", "arch": self.arch_string()}

    def edge_names(self) -> list[str]:
        return [f"{source} -> {target}" for target, source in EDGES]

    def alpha_weights(self) -> dict[str, list[list[float]]]:
        """Softmax weights per edge, ``{"cell": (6, 5)}``."""
        return {"cell": torch.softmax(self.alpha_cell.detach().double(), dim=-1).tolist()}

    @torch.no_grad()
    def discretized_logits(self) -> dict[str, Tensor]:
        """Logits whose softmax is one-hot on each edge's chosen operation."""
        chosen = torch.tensor(self.chosen_operations(), device=self.alpha_cell.device)
        one_hot = nn.functional.one_hot(chosen, len(OPERATIONS)).to(self.alpha_cell.dtype)
        return {"alpha_cell": (one_hot - 1.0) * 1e4}


def darts_nb201_arch(seed: int = 0, epochs: int = 10, dataset: str = "digits", **settings) -> str:
    """Run DARTS on the nb201 space (digits by default) and return the found arch string,
    for the NAS-Bench-201 table. ``settings`` are further :class:`DartsConfig` fields."""
    from pynas.search.darts import DartsConfig, search

    config = DartsConfig(space="nb201", dataset=dataset, seed=seed, epochs=epochs, **settings)
    return search(config)["arch"]
