"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020).

A cell is a directed acyclic graph of 4 nodes: node 0 is the cell input, node ``j``
is the sum of one operation applied to every earlier node (eq. 1 of the paper), and
node 3 is the cell output. Each of the 6 edges carries one of 5 operations, so the
space holds ``5 ** 6 = 15,625`` cells. The network stacks the same cell ``N`` times
in each of 3 stages of ``C``, ``2C`` and ``4C`` channels, with a residual block of
stride 2 between stages.

An architecture is the tuple of the 6 operation indices, edge by edge in the order of
the official architecture string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.spaces.base import IMAGE, Arch, SearchSpace

#: the candidate operations of every edge, in the order of the official benchmark
OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: (target node, source node) of each edge, in the order of the architecture string
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

NUM_NODES = 4

#: the input of the benchmark's CIFAR-10 networks, and its classes
CIFAR10_SHAPE, CIFAR10_CLASSES = (3, 32, 32), 10

# (what is counted, space class, channels, cells per stage, sorted operations, input
# shape, outputs) -> the count; see NB201Space.count_parameters
_COUNTS: dict[tuple, int] = {}


class ReLUConvBN(nn.Sequential):
    """ReLU, then a convolution without bias, then batch norm (the ``nor_conv`` op)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
    ) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        )

    def preactivated(self, relu_x: Tensor) -> Tensor:
        """The output from ``relu(x)`` computed by the caller (the supernet shares one
        ReLU per node among the operations that start with it)."""
        return self[2](self[1](relu_x))


def make_operation(name: str, channels: int) -> nn.Module | None:
    """The module of one cell edge; ``None`` for the ``none`` operation (no output).

    Every operation keeps the shape ``(batch, channels, height, width)``.
    """
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"nb201: unknown operation {name!r}, expected one of {OPERATIONS}")


class NB201Cell(nn.Module):
    """One NAS-Bench-201 cell: ``node_j = sum_{i<j} op_ji(node_i)``, output node 3."""

    def __init__(self, operations: Sequence[str], channels: int) -> None:
        super().__init__()
        # Edges with the ``none`` operation add nothing to their target node, so they
        # are left out instead of computing a tensor of zeros.
        self.live_edges: list[tuple[int, int]] = []
        modules = []
        for (target, source), name in zip(EDGES, operations):
            module = make_operation(name, channels)
            if module is not None:
                self.live_edges.append((target, source))
                modules.append(module)
        self.operations = nn.ModuleList(modules)

    def forward(self, cell_input: torch.Tensor) -> torch.Tensor:
        """``cell_input``: (batch, channels, height, width) -> same shape."""
        nodes = [cell_input]
        for target in range(1, NUM_NODES):
            terms = [
                operation(nodes[source])
                for (edge_target, source), operation in zip(self.live_edges, self.operations)
                if edge_target == target
            ]
            # A node whose every input edge is ``none`` is zero, as in the benchmark.
            nodes.append(sum(terms) if terms else torch.zeros_like(cell_input))
        return nodes[-1]


class ResidualReductionBlock(nn.Module):
    """The ResNet basic block of stride 2 that halves the resolution between stages."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, 3, stride=2)
        self.conv_b = ReLUConvBN(out_channels, out_channels, 3)
        # ceil_mode keeps the shortcut the same size as the stride-2 convolution when
        # the input has an odd side (7x7 -> 4x4); even sides are unaffected.
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: (batch, in, H, W) -> (batch, out, ceil(H/2), ceil(W/2))."""
        return self.conv_b(self.conv_a(features)) + self.shortcut(features)


class NB201Network(nn.Module):
    """Stem, 3 stages of cells with residual reductions between them, classifier."""

    def __init__(
        self,
        operations: Sequence[str],
        channels: int,
        cells_per_stage: int,
        in_channels: int,
        num_outputs: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = []
        stage_channels = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReductionBlock(stage_channels, 2 * stage_channels))
                stage_channels *= 2
            layers.extend(NB201Cell(operations, stage_channels) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(stage_channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(stage_channels, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: (batch, in_channels, H, W) -> outputs (batch, num_outputs)."""
        return self.classifier(self.head(self.cells(self.stem(images))))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"nb201: {name} must be a positive integer, got {value!r}")
    return value


class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space: 6 edges, 5 operations each.

    Parameters
    ----------
    channels : int
        Channels ``C`` of the first stage (the benchmark uses 16).
    cells_per_stage : int
        Cells ``N`` in each of the 3 stages (the benchmark uses 5).
    """

    name = "nb201"
    input_kind = IMAGE

    def __init__(self, channels: int = 16, cells_per_stage: int = 5) -> None:
        self.channels = _positive_int("channels", channels)
        self.cells_per_stage = _positive_int("cells_per_stage", cells_per_stage)

    @property
    def num_choices(self) -> tuple[int, ...]:
        return (len(OPERATIONS),) * len(EDGES)

    def decision_names(self) -> list[str]:
        return [f"node{target}<-node{source}" for target, source in EDGES]

    def operations(self, arch: Arch) -> tuple[str, ...]:
        """The operation name of each edge, in architecture-string order."""
        return tuple(OPERATIONS[choice] for choice in self.validate(arch))

    def to_string(self, arch: Arch) -> str:
        names = self.operations(arch)
        node_texts = []
        for target in range(1, NUM_NODES):
            inputs = [
                f"{name}~{source}"
                for (edge_target, source), name in zip(EDGES, names)
                if edge_target == target
            ]
            node_texts.append("|" + "|".join(inputs) + "|")
        return "+".join(node_texts)

    def from_string(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise ValueError(f"nb201: architecture string expected, got {type(text).__name__}")
        node_texts = text.strip().split("+")
        if len(node_texts) != NUM_NODES - 1:
            raise ValueError(
                f"nb201: {text!r} has {len(node_texts)} nodes separated by '+', "
                f"expected {NUM_NODES - 1}"
            )
        arch = []
        for target, node_text in enumerate(node_texts, start=1):
            if len(node_text) < 2 or node_text[0] != "|" or node_text[-1] != "|":
                raise ValueError(f"nb201: node {node_text!r} of {text!r} must be '|...|'")
            inputs = node_text[1:-1].split("|")
            if len(inputs) != target:
                raise ValueError(
                    f"nb201: node {target} of {text!r} has {len(inputs)} inputs, "
                    f"expected {target}"
                )
            for source, entry in enumerate(inputs):
                name, separator, index = entry.partition("~")
                if not separator or index != str(source):
                    raise ValueError(
                        f"nb201: input {entry!r} of node {target} in {text!r} must be "
                        f"'operation~{source}'"
                    )
                if name not in OPERATIONS:
                    raise ValueError(
                        f"nb201: unknown operation {name!r} in {text!r}, expected one of "
                        f"{', '.join(OPERATIONS)}"
                    )
                arch.append(OPERATIONS.index(name))
        return tuple(arch)

    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        return {"space": self.name, "arch": self.to_string(arch)}

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict) or genotype.get("space") != self.name:
            raise ValueError(f"nb201: genotype must be a dict with space 'nb201', got {genotype!r}")
        if "arch" not in genotype:
            raise ValueError(f"nb201: genotype {genotype!r} has no 'arch' string")
        return self.from_string(genotype["arch"])

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        self.check_input(input_shape)
        return NB201Network(
            self.operations(arch),
            self.channels,
            self.cells_per_stage,
            input_shape[0],
            num_outputs,
        )

    def count_parameters(self, arch: Arch, input_shape: tuple[int, ...] = CIFAR10_SHAPE,
                         num_outputs: int = CIFAR10_CLASSES) -> int:
        """Trainable parameters of the built network, counted once per set of operations.

        Every edge of a cell maps ``(C, H, W)`` to ``(C, H, W)`` and runs once per
        forward (an edge from a node that is zero still runs), so a network's parameters
        and multiply-adds are sums over its edges' operations, wherever they sit: the
        15,625 cells fall into 210 multisets of 6 operations, and one network is built
        and counted for each (see :meth:`counts_of_every_cell`)."""
        return self._count(super().count_parameters, arch, input_shape, num_outputs)

    def count_flops(self, arch: Arch, input_shape: tuple[int, ...] = CIFAR10_SHAPE,
                    num_outputs: int = CIFAR10_CLASSES) -> int:
        """Multiply-adds of one example, counted once per set of operations (see
        :meth:`count_parameters`)."""
        return self._count(super().count_flops, arch, input_shape, num_outputs)

    def _count(self, count: Callable[..., int], arch: Arch, input_shape: tuple[int, ...],
               num_outputs: int) -> int:
        key = (count.__name__, type(self), self.channels, self.cells_per_stage,
               tuple(sorted(self.validate(arch))), tuple(input_shape), num_outputs)
        if key not in _COUNTS:
            _COUNTS[key] = count(arch, input_shape, num_outputs)
        return _COUNTS[key]

    def counts_of_every_cell(self, input_shape: tuple[int, ...] = CIFAR10_SHAPE,
                             num_outputs: int = CIFAR10_CLASSES) -> dict[Arch, tuple[int, int]]:
        """``(parameters, multiply-adds)`` of each of the 15,625 cells' networks (by
        default the benchmark's CIFAR-10 networks), from 210 built networks: seconds."""
        return {arch: (self.count_parameters(arch, input_shape, num_outputs),
                       self.count_flops(arch, input_shape, num_outputs))
                for arch in itertools.product(*map(range, self.num_choices))}
