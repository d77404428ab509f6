"""The PNAS cell space (Liu et al., "Progressive Neural Architecture Search", ECCV 2018).

A cell has two inputs, the outputs of the two previous cells (numbered 0 for the older,
1 for the newer), and ``b`` blocks, ``1 <= b <= B``. Block ``j`` (numbered ``2 + j``)
picks two inputs among the cell inputs and the blocks before it, applies one of the 8
operations below to each, and adds the two results (the paper's only combination). The
cell's output concatenates the blocks that no later block reads.

The network stacks ``N`` normal cells, a stride-2 cell, ``N`` normal cells, a stride-2
cell and ``N`` normal cells (the paper's CIFAR network). As in the paper the stride-2
cell is the same cell, its operations on the cell inputs using stride 2, and the channel
count doubles with each stride-2 cell.

Decisions. An architecture is ``(b - 1, I1, I2, O1, O2, I1, I2, O1, O2, ...)``: the
number of blocks first, then four decisions for every one of the ``B`` block slots (the
paper's ``<I1, I2, O1, O2>``). Block slot ``j`` offers ``2 + j`` inputs and 8 operations.
The decisions of the slots past ``b`` are ignored, so one space of fixed-length decision
tuples holds the cells of every size that the progressive search evaluates, and random
search or evolution can search it too. :meth:`PNASSpace.canonical` zeroes those ignored
slots and orders each block's two ``(input, operation)`` pairs, so that a cell and its
mirror image (the two summands swapped) are the same architecture.

String. ``op~input+op~input`` per block, blocks joined by ``|``, e.g.
``sep_conv_3x3~1+max_pool_3x3~0|identity~2+sep_conv_5x5~0``; the pairs appear in
canonical order. Its tokens (inputs and operation names, block by block) are what the
surrogate predictors read (:meth:`PNASSpace.tokens`).

Counts. Block ``j`` has ``((2 + j) * 8) ** 2`` ordered choices; with ``B = 1`` that is
the paper's ``|B_1| = 256`` one-block cells. Without mirror images there are
``n (n + 1) / 2`` for ``n = (2 + j) * 8`` pairs, i.e. 136 one-block cells (see
:func:`count_cells`).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.spaces.base import IMAGE, Arch, SearchSpace
from pynas.spaces.darts import OPERATION_FACTORIES as DARTS_OPERATION_FACTORIES
from pynas.spaces.darts import SepConv, cell_preprocessing

#: the 8 operations of the paper (section 3.1), in its order
OPERATIONS = (
    "sep_conv_3x3",
    "identity",
    "avg_pool_3x3",
    "max_pool_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
    "conv_1x7_7x1",
    "dil_conv_3x3",
)

#: inputs of a cell before its blocks: the previous-previous and the previous cell
CELL_INPUTS = 2

#: decisions per block: input 1, input 2, operation 1, operation 2
DECISIONS_PER_BLOCK = 4


class Block(NamedTuple):
    """One block: ``operation_a(input_a) + operation_b(input_b)``; inputs are node numbers
    (0 and 1 the cell inputs, ``2 + j`` block ``j``), operations indices in OPERATIONS."""

    input_a: int
    input_b: int
    operation_a: int
    operation_b: int

    def canonical(self) -> Block:
        """The block with its two ``(input, operation)`` pairs in ascending order."""
        first, second = sorted(((self.input_a, self.operation_a),
                                (self.input_b, self.operation_b)))
        return Block(first[0], second[0], first[1], second[1])


class Conv1x7Then7x1(nn.Module):
    """ReLU, a 1x7 convolution, a 7x1 convolution, batch norm (a factorised 7x7)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(channels, channels, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def make_operation(name: str, channels: int, stride: int) -> nn.Module:
    """The module of one PNAS operation; it keeps ``channels`` and divides the resolution
    by ``stride``. The operations the DARTS space shares are its modules."""
    if name == "identity":
        name = "skip_connect"  # a factorised reduction when the stride is 2
    elif name == "sep_conv_7x7":
        return SepConv(channels, channels, 7, stride, 3)
    elif name == "conv_1x7_7x1":
        return Conv1x7Then7x1(channels, stride)
    return DARTS_OPERATION_FACTORIES[name](channels, stride, True)


def unused_blocks(blocks: Sequence[Block]) -> list[int]:
    """Node numbers of the blocks no later block reads: the cell's output."""
    read = {node for block in blocks for node in (block.input_a, block.input_b)}
    return [CELL_INPUTS + j for j in range(len(blocks)) if CELL_INPUTS + j not in read]


class PNASCell(nn.Module):
    """One cell: its blocks over the two preprocessed inputs, unused blocks concatenated.

    ``forward(s0, s1)``: the outputs of the two previous cells, (batch, C0, H0, W0) and
    (batch, C1, H, W) -> (batch, len(unused) * channels, H / stride, W / stride).
    """

    def __init__(self, blocks: Sequence[Block], previous_previous_channels: int,
                 previous_channels: int, channels: int, reduction: bool,
                 reduction_previous: bool) -> None:
        super().__init__()
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            previous_previous_channels, previous_channels, channels, reduction_previous, True
        )
        self.inputs = [(block.input_a, block.input_b) for block in blocks]
        self.concat = unused_blocks(blocks)
        self.multiplier = len(self.concat)

        def operation(index: int, source: int) -> nn.Module:
            stride = 2 if reduction and source < CELL_INPUTS else 1
            return make_operation(OPERATIONS[index], channels, stride)

        self.operations = nn.ModuleList(
            nn.ModuleList([operation(block.operation_a, block.input_a),
                           operation(block.operation_b, block.input_b)])
            for block in blocks
        )

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        nodes = [self.preprocess0(s0), self.preprocess1(s1)]
        for (input_a, input_b), (operation_a, operation_b) in zip(self.inputs, self.operations):
            nodes.append(operation_a(nodes[input_a]) + operation_b(nodes[input_b]))
        return torch.cat([nodes[node] for node in self.concat], dim=1)


class PNASNetwork(nn.Module):
    """Stem, then ``N`` cells, a stride-2 cell, ``N`` cells, a stride-2 cell, ``N`` cells,
    then global pooling and a linear classifier.

    ``forward``: images (batch, in_channels, H, W) -> outputs (batch, num_outputs).
    """

    def __init__(self, blocks: Sequence[Block], channels: int, cells_per_stage: int,
                 stem_multiplier: int, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        stem_channels = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )
        previous_previous = previous = stem_channels
        current, reduction_previous = channels, False
        self.cells = nn.ModuleList()
        for stage in range(3):
            reductions = [False] * cells_per_stage
            if stage > 0:
                reductions.insert(0, True)
            for reduction in reductions:
                if reduction:
                    current *= 2
                cell = PNASCell(blocks, previous_previous, previous, current, reduction,
                                reduction_previous)
                self.cells.append(cell)
                reduction_previous = reduction
                previous_previous, previous = previous, cell.multiplier * current
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_outputs)

    def forward(self, images: Tensor) -> Tensor:
        s0 = s1 = self.stem(images)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


def block_pairs(block_index: int) -> int:
    """The ``(input, operation)`` pairs block ``block_index`` (0-based) can choose from."""
    return (CELL_INPUTS + block_index) * len(OPERATIONS)


def count_cells(blocks: int, mirror_images: bool = True) -> int:
    """Number of cells of exactly ``blocks`` blocks.

    Parameters
    ----------
    blocks : int
        Blocks per cell.
    mirror_images : bool
        Count a block and its mirror image (its two summands swapped) as two cells, as
        the paper does (256 one-block cells); ``False`` counts them once (136).
    """
    total = 1
    for block_index in range(blocks):
        pairs = block_pairs(block_index)
        total *= pairs * pairs if mirror_images else pairs * (pairs + 1) // 2
    return total


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"pnas: {name} must be a positive integer, got {value!r}")
    return value


class PNASSpace(SearchSpace):
    """The PNAS cell space of cells with 1 to ``blocks`` blocks (see the module docstring).

    Parameters
    ----------
    blocks : int
        The most blocks a cell may have (the paper's B = 5).
    channels : int
        Channels of each block in the first stage (the paper's F); the defaults are small
        so that a cell trains in seconds on the 8x8 digits.
    cells_per_stage : int
        Normal cells between stride-2 cells (the paper's N).
    stem_multiplier : int
        The stem convolution has ``stem_multiplier * channels`` channels.
    """

    name = "pnas"
    input_kind = IMAGE

    def __init__(self, blocks: int = 5, channels: int = 8, cells_per_stage: int = 1,
                 stem_multiplier: int = 2) -> None:
        self.blocks = _positive_int("blocks", blocks)
        self.channels = _positive_int("channels", channels)
        self.cells_per_stage = _positive_int("cells_per_stage", cells_per_stage)
        self.stem_multiplier = _positive_int("stem_multiplier", stem_multiplier)

    @property
    def num_choices(self) -> tuple[int, ...]:
        choices = [self.blocks]
        for block_index in range(self.blocks):
            inputs = CELL_INPUTS + block_index
            choices += [inputs, inputs, len(OPERATIONS), len(OPERATIONS)]
        return tuple(choices)

    def decision_names(self) -> list[str]:
        return ["blocks"] + [
            f"block{block_index}.{what}"
            for block_index in range(self.blocks)
            for what in Block._fields
        ]

    def cell_blocks(self, arch: Arch) -> list[Block]:
        """The cell's blocks (only the ``b`` it has), each in canonical order."""
        arch = self.validate(arch)
        count = arch[0] + 1
        return [
            Block(*arch[1 + DECISIONS_PER_BLOCK * j: 1 + DECISIONS_PER_BLOCK * (j + 1)]).canonical()
            for j in range(count)
        ]

    def num_blocks(self, arch: Arch) -> int:
        """How many blocks the cell has."""
        return self.validate(arch)[0] + 1

    def from_blocks(self, blocks: Sequence[Block]) -> Arch:
        """The canonical architecture of a cell given by its blocks."""
        if not 1 <= len(blocks) <= self.blocks:
            raise ValueError(f"pnas: a cell has 1..{self.blocks} blocks, got {len(blocks)}")
        decisions = [len(blocks) - 1]
        for block in blocks:
            decisions += Block(*block).canonical()
        decisions += [0] * (DECISIONS_PER_BLOCK * (self.blocks - len(blocks)))
        return self.validate(decisions)

    def canonical(self, arch: Arch) -> Arch:
        """The architecture with ignored slots zeroed and mirror images merged: two
        decision tuples are the same cell exactly when their canonical forms are equal."""
        return self.from_blocks(self.cell_blocks(arch))

    def to_string(self, arch: Arch) -> str:
        return "|".join(
            f"{OPERATIONS[block.operation_a]}~{block.input_a}"
            f"+{OPERATIONS[block.operation_b]}~{block.input_b}"
            for block in self.cell_blocks(arch)
        )

    def from_string(self, text: str) -> Arch:
        """The canonical architecture of a string (pairs may come in either order)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"pnas: architecture string expected, got {text!r}")
        blocks = []
        for block_text in text.strip().split("|"):
            pairs = block_text.split("+")
            if len(pairs) != 2:
                raise ValueError(
                    f"pnas: block {block_text!r} of {text!r} must be 'op~input+op~input'"
                )
            parsed = [self._parse_pair(pair, len(blocks), text) for pair in pairs]
            blocks.append(Block(parsed[0][0], parsed[1][0], parsed[0][1], parsed[1][1]))
        return self.from_blocks(blocks)

    @staticmethod
    def _parse_pair(pair: str, block_index: int, text: str) -> tuple[int, int]:
        name, separator, source = pair.partition("~")
        if not separator or name not in OPERATIONS or not source.isdigit():
            raise ValueError(
                f"pnas: {pair!r} in {text!r} must be 'operation~input' with an operation "
                f"among {', '.join(OPERATIONS)}"
            )
        if int(source) >= CELL_INPUTS + block_index:
            raise ValueError(
                f"pnas: block {block_index} of {text!r} reads node {source}; it can read "
                f"nodes 0..{CELL_INPUTS + block_index - 1}"
            )
        return int(source), OPERATIONS.index(name)

    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        blocks = self.cell_blocks(arch)
        return {
            "space": self.name,
            "arch": self.to_string(arch),
            "blocks": [
                [[OPERATIONS[block.operation_a], block.input_a],
                 [OPERATIONS[block.operation_b], block.input_b]]
                for block in blocks
            ],
            "concat": unused_blocks(blocks),
        }

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict) or genotype.get("space") != self.name:
            raise ValueError(f"pnas: genotype must be a dict with space 'pnas', got {genotype!r}")
        if not isinstance(genotype.get("arch"), str):
            raise ValueError(f"pnas: genotype {genotype!r} has no 'arch' string")
        return self.from_string(genotype["arch"])

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        self.check_input(input_shape)
        return PNASNetwork(self.cell_blocks(arch), self.channels, self.cells_per_stage,
                           self.stem_multiplier, input_shape[0], num_outputs)

    # -- progressive search -----------------------------------------------------------

    def cells_with_one_block(self) -> list[Arch]:
        """Every one-block cell once (mirror images merged): ``count_cells(1, False)``."""
        return self._extend([])

    def children(self, arch: Arch) -> list[Arch]:
        """The cells made of ``arch`` and one more block, each once; none when ``arch``
        already has the most blocks."""
        blocks = self.cell_blocks(arch)
        return [] if len(blocks) == self.blocks else self._extend(blocks)

    def _extend(self, blocks: list[Block]) -> list[Arch]:
        pairs = list(itertools.product(range(CELL_INPUTS + len(blocks)), range(len(OPERATIONS))))
        # combinations_with_replacement of sorted pairs yields each block once, canonical
        return [
            self.from_blocks(blocks + [Block(first[0], second[0], first[1], second[1])])
            for first, second in itertools.combinations_with_replacement(pairs, 2)
        ]

    @property
    def vocabulary_size(self) -> int:
        """Distinct tokens of :meth:`tokens`: every input node, then every operation."""
        return CELL_INPUTS + self.blocks + len(OPERATIONS)

    def tokens(self, arch: Arch) -> list[list[int]]:
        """The cell as the surrogate reads it: one row ``[I1, I2, O1, O2]`` per block.

        Inputs are tokens ``0 .. 1 + B`` (their node numbers), operations tokens
        ``2 + B + index``; shape (b, 4) as nested lists.
        """
        offset = CELL_INPUTS + self.blocks
        return [
            [block.input_a, block.input_b, offset + block.operation_a,
             offset + block.operation_b]
            for block in self.cell_blocks(arch)
        ]
