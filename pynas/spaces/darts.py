"""The DARTS CNN cell space (Liu, Simonyan and Yang, ICLR 2019).

A cell has two input nodes (the outputs of the two previous cells), ``steps``
intermediate nodes and one output node, the concatenation of the intermediate nodes.
Each intermediate node sums two operations, each applied to one earlier node. A network
stacks normal cells and reduction cells (stride 2 on the edges leaving the input nodes,
channels doubled) at one and two thirds of its depth.

The genotype is the DARTS ``Genotype`` as JSON::

    {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ...],  # 2 pairs per node
     "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}

where each pair is ``[operation, input node]``, nodes 0 and 1 being the cell inputs.
The decision sequence holds, for each cell (normal, then reduce) and each node, the two
input nodes then the two operations (the zero operation ``none`` is never chosen in a
discrete cell, so operations are numbered among the seven others).

The operation modules here also serve the supernet (``affine=False`` there, as in the
paper's search).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from pynas.spaces.base import IMAGE, Arch, SearchSpace

#: the DARTS operations in the paper's order; ``none`` is the zero operation
OPERATIONS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: the operations a discrete cell may use
CELL_OPERATIONS = OPERATIONS[1:]
CELL_TYPES = ("normal", "reduce")

Genotype = dict[str, Any]


class ReLUConvBN(nn.Module):
    """ReLU, convolution, batch norm: the paper's pre-activation convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    def preactivated(self, relu_x: Tensor) -> Tensor:
        """The output from ``relu(x)`` computed by the caller (see :func:`shares_relu`)."""
        return self.op[2](self.op[1](relu_x))


class DilConv(nn.Module):
    """ReLU, dilated depthwise convolution, pointwise convolution, batch norm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    def preactivated(self, relu_x: Tensor) -> Tensor:
        """The output from ``relu(x)`` computed by the caller (see :func:`shares_relu`)."""
        return self.op[3](self.op[2](self.op[1](relu_x)))


class SepConv(nn.Module):
    """A separable convolution applied twice, the stride on the first (as the paper)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine),
            DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    def preactivated(self, relu_x: Tensor) -> Tensor:
        """The output from ``relu(x)`` computed by the caller (see :func:`shares_relu`)."""
        return self.op[1](self.op[0].preactivated(relu_x))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convolutions, the second shifted by one
    pixel so that together they see every input position."""

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {out_channels}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.preactivated(self.relu(x))

    def preactivated(self, x: Tensor) -> Tensor:
        """The output from ``relu(x)`` computed by the caller (see :func:`shares_relu`)."""
        # Padding the shifted view back to the input size keeps both halves the same size
        # on odd resolutions too (the original code assumes even ones).
        shifted = functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _pool(kind: str, channels: int, stride: int, affine: bool) -> nn.Module:
    if kind == "max":
        pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
    else:
        pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if affine:
        return pool
    # In the supernet a pooling output is normalised like the convolutions' outputs, so
    # the architecture weights compare operations on one scale (the paper's MixedOp).
    return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False))


def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


#: name -> factory(channels, stride, affine) of each operation except ``none``
OPERATION_FACTORIES: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "max_pool_3x3": lambda c, stride, affine: _pool("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, affine: _pool("avg", c, stride, affine),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


def shares_relu(module: nn.Module | None) -> bool:
    """Whether ``module`` starts with a ReLU of its input and can start after it instead
    (``module.preactivated(relu(x)) == module(x)``). A supernet applies each state's ReLU
    once for all such operations on all its edges, where the original DARTS code applies
    it once per operation: the same function, with fewer activations kept for backward."""
    return hasattr(module, "preactivated")


def make_operation(name: str, channels: int, stride: int, affine: bool) -> nn.Module | None:
    """The module of operation ``name``, or ``None`` for the zero operation ``none``."""
    if name == "none":
        return None
    return OPERATION_FACTORIES[name](channels, stride, affine)


def cell_preprocessing(
    previous_previous_channels: int,
    previous_channels: int,
    channels: int,
    reduction_previous: bool,
    affine: bool,
) -> tuple[nn.Module, nn.Module]:
    """The 1x1 convolutions that bring both cell inputs to ``channels`` channels; the
    older input is also halved in resolution when the previous cell was a reduction."""
    if reduction_previous:
        first: nn.Module = FactorizedReduce(previous_previous_channels, channels, affine)
    else:
        first = ReLUConvBN(previous_previous_channels, channels, 1, 1, 0, affine)
    return first, ReLUConvBN(previous_channels, channels, 1, 1, 0, affine)


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells: one and two thirds of the depth (the paper)."""
    return layers // 3, 2 * layers // 3


def drop_path(x: Tensor, drop_probability: float) -> Tensor:
    """Zero whole samples of ``x`` (N, C, H, W) with probability ``drop_probability``,
    scaling the kept ones so the expectation is unchanged (ScheduledDropPath)."""
    keep = 1.0 - drop_probability
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """A discrete DARTS cell built from one cell of a genotype."""

    def __init__(
        self,
        pairs: Sequence[tuple[str, int]],
        concat: Sequence[int],
        previous_previous_channels: int,
        previous_channels: int,
        channels: int,
        reduction: bool,
        reduction_previous: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            previous_previous_channels, previous_channels, channels, reduction_previous, True
        )
        self.inputs = [index for _, index in pairs]
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(
            make_operation(name, channels, 2 if reduction and index < 2 else 1, True)
            for name, index in pairs
        )

    def forward(self, s0: Tensor, s1: Tensor, drop_probability: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for edge in (2 * node, 2 * node + 1):
                h = self.ops[edge](states[self.inputs[edge]])
                # Identity edges are never dropped, as in the paper's evaluation code.
                if (
                    self.training
                    and drop_probability > 0
                    and not isinstance(self.ops[edge], nn.Identity)
                ):
                    h = drop_path(h, drop_probability)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier at two thirds of the depth (the paper's CIFAR head).

    On a 32x32 image the head reads an 8x8 map, which the paper pools with a 5x5 window
    at stride 3 into 2x2; a map of any other size is pooled to 2x2 adaptively, so the
    rest of the head (a 1x1 and a 2x2 convolution, a linear layer) is the paper's on
    every image size.
    """

    def __init__(self, channels: int, num_outputs: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        if tuple(feature_size) == (8, 8):
            pool: nn.Module = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """The discrete DARTS network (the paper's NetworkCIFAR) for one genotype.

    ``forward`` takes images (N, C, H, W) of ``input_shape`` (C, H, W) and returns the
    outputs (N, num_outputs); :meth:`forward_with_auxiliary` also returns the auxiliary
    head's outputs while training with the head. Set ``drop_path_probability`` between
    epochs to schedule drop-path.
    """

    def __init__(
        self,
        genotype: Genotype,
        input_shape: tuple[int, ...],
        num_outputs: int,
        channels: int = 16,
        layers: int = 8,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
        drop_path_probability: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop_path_probability = drop_path_probability
        stem_channels = stem_multiplier * channels
        in_channels, height, width = input_shape
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )
        self.auxiliary_layer = reduction_layers(layers)[1]
        previous_previous, previous, current = stem_channels, stem_channels, channels
        reduction_previous = False
        self.cells = nn.ModuleList()
        auxiliary_channels, auxiliary_size = previous, (height, width)
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            if reduction:
                current *= 2
                # every stride-2 operation maps a side n to ceil(n / 2)
                height, width = -(-height // 2), -(-width // 2)
            kind = "reduce" if reduction else "normal"
            cell = Cell(
                [tuple(pair) for pair in genotype[kind]],
                genotype[f"{kind}_concat"],
                previous_previous,
                previous,
                current,
                reduction,
                reduction_previous,
            )
            self.cells.append(cell)
            reduction_previous = reduction
            previous_previous, previous = previous, cell.multiplier * current
            if layer == self.auxiliary_layer:
                auxiliary_channels, auxiliary_size = previous, (height, width)
        self.auxiliary_head = (
            AuxiliaryHead(auxiliary_channels, num_outputs, auxiliary_size) if auxiliary else None
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_outputs)

    def forward_with_auxiliary(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Outputs (N, num_outputs) and the auxiliary head's (N, num_outputs), the latter
        only while training a network built with the auxiliary head (else ``None``)."""
        auxiliary_logits = None
        s0 = s1 = self.stem(x)
        for layer, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_probability)
            if layer == self.auxiliary_layer and self.auxiliary_head is not None and self.training:
                auxiliary_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, auxiliary_logits

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_auxiliary(x)[0]


class DartsSpace(SearchSpace):
    """The DARTS cell space; the network options are fixed per space instance.

    Parameters
    ----------
    channels : initial channel count C of the built network.
    layers : number of cells.
    steps : intermediate nodes per cell.
    stem_multiplier : the stem has ``stem_multiplier * channels`` channels.
    auxiliary : build the auxiliary head (see :meth:`DartsNetwork.forward_with_auxiliary`).
    drop_path_probability : initial drop-path probability of built networks.
    """

    name = "darts"
    input_kind = IMAGE

    def __init__(
        self,
        channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
        drop_path_probability: float = 0.0,
    ) -> None:
        if steps < 1 or layers < 1 or channels < 1:
            raise ValueError("darts: channels, layers and steps must be positive")
        self.channels = channels
        self.layers = layers
        self.steps = steps
        self.stem_multiplier = stem_multiplier
        self.auxiliary = auxiliary
        self.drop_path_probability = drop_path_probability

    @property
    def concat(self) -> list[int]:
        """The nodes concatenated into a cell's output: every intermediate node."""
        return list(range(2, 2 + self.steps))

    @property
    def num_choices(self) -> tuple[int, ...]:
        per_cell: list[int] = []
        for node in range(self.steps):
            inputs = 2 + node
            per_cell += [inputs, inputs, len(CELL_OPERATIONS), len(CELL_OPERATIONS)]
        return tuple(per_cell * len(CELL_TYPES))

    def decision_names(self) -> list[str]:
        return [
            f"{kind}.node{node + 2}.{what}"
            for kind in CELL_TYPES
            for node in range(self.steps)
            for what in ("input_a", "input_b", "op_a", "op_b")
        ]

    def to_genotype(self, arch: Arch) -> Genotype:
        arch = self.validate(arch)
        genotype: Genotype = {}
        per_cell = 4 * self.steps
        for cell_index, kind in enumerate(CELL_TYPES):
            decisions = arch[cell_index * per_cell : (cell_index + 1) * per_cell]
            pairs = []
            for node in range(self.steps):
                input_a, input_b, op_a, op_b = decisions[4 * node : 4 * node + 4]
                pairs += [[CELL_OPERATIONS[op_a], input_a], [CELL_OPERATIONS[op_b], input_b]]
            genotype[kind] = pairs
            genotype[f"{kind}_concat"] = self.concat
        return genotype

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict):
            raise ValueError("darts: a genotype must be a JSON object")
        arch: list[int] = []
        for kind in CELL_TYPES:
            pairs = genotype.get(kind)
            if not isinstance(pairs, list) or len(pairs) != 2 * self.steps:
                raise ValueError(
                    f"darts: genotype field {kind!r} must list {2 * self.steps} "
                    "[operation, input] pairs"
                )
            concat = genotype.get(f"{kind}_concat", self.concat)
            if list(concat) != self.concat:
                raise ValueError(
                    f"darts: {kind}_concat must be {self.concat} for a cell of "
                    f"{self.steps} nodes, got {concat}"
                )
            for node in range(self.steps):
                (name_a, input_a), (name_b, input_b) = (
                    self._parse_pair(pair, kind, node) for pair in pairs[2 * node : 2 * node + 2]
                )
                arch += [
                    input_a,
                    input_b,
                    CELL_OPERATIONS.index(name_a),
                    CELL_OPERATIONS.index(name_b),
                ]
        return self.validate(arch)

    @staticmethod
    def _parse_pair(pair: Any, kind: str, node: int) -> tuple[str, int]:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or pair[0] not in CELL_OPERATIONS
            or not isinstance(pair[1], int)
            or not 0 <= pair[1] < node + 2
        ):
            raise ValueError(
                f"darts: {kind} node {node + 2} has a bad pair {pair!r}; expected "
                f"[operation, input] with an operation among {', '.join(CELL_OPERATIONS)} "
                f"and an input in 0..{node + 1}"
            )
        return pair[0], pair[1]

    def to_string(self, arch: Arch) -> str:
        """``normal:op~input,op~input|...;reduce:...``, one ``|``-separated group per node."""
        genotype = self.to_genotype(arch)
        cells = []
        for kind in CELL_TYPES:
            pairs = genotype[kind]
            nodes = [
                ",".join(f"{name}~{index}" for name, index in pairs[2 * node : 2 * node + 2])
                for node in range(self.steps)
            ]
            cells.append(f"{kind}:" + "|".join(nodes))
        return ";".join(cells)

    def from_string(self, text: str) -> Arch:
        genotype: Genotype = {}
        try:
            for cell_text in text.strip().split(";"):
                kind, body = cell_text.split(":")
                genotype[kind] = [
                    [name, int(index)]
                    for node in body.split("|")
                    for name, index in (pair.split("~") for pair in node.split(","))
                ]
        except ValueError as error:
            raise ValueError(f"darts: malformed architecture string {text!r}") from error
        if set(genotype) != set(CELL_TYPES):
            raise ValueError(f"darts: {text!r} must have exactly a normal and a reduce cell")
        return self.from_genotype(genotype)

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> DartsNetwork:
        return self.build_genotype(self.to_genotype(arch), input_shape, num_outputs)

    def build_genotype(
        self, genotype: Genotype, input_shape: tuple[int, ...], num_outputs: int
    ) -> DartsNetwork:
        """The network of a genotype (checked against this space, and the input, first)."""
        self.check_input(input_shape)
        self.from_genotype(genotype)
        return DartsNetwork(
            genotype,
            input_shape,
            num_outputs,
            channels=self.channels,
            layers=self.layers,
            stem_multiplier=self.stem_multiplier,
            auxiliary=self.auxiliary,
            drop_path_probability=self.drop_path_probability,
        )


def load_genotype(text: str) -> Genotype:
    """A genotype from JSON text: a genotype object, or a run's result.json holding one
    under ``genotype`` (top level or inside ``best``)."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    best = document.get("best")
    nested = best.get("genotype") if isinstance(best, dict) else None
    for candidate in (document, document.get("genotype"), nested):
        if isinstance(candidate, dict) and all(kind in candidate for kind in CELL_TYPES):
            return candidate
    raise ValueError("no DARTS genotype (fields normal, reduce, ...) in this JSON")


def steps_of(genotype: Genotype) -> int:
    """Number of intermediate nodes of a genotype's cells."""
    return len(genotype["normal"]) // 2
