"""The hierarchical search space of Liu et al., "Hierarchical Representations for Efficient
Architecture Search" (ICLR 2018), section 2, and its flat variant.

Levels (section 2.2). Level 1 holds the six primitives of section 2.3 (``conv_1x1``,
``dw_conv_3x3``, ``sep_conv_3x3``, ``max_pool_3x3``, ``avg_pool_3x3``, ``identity``) and
``none``, the absence of an edge. Each level ``l = 2 .. L`` holds ``M_l`` motifs; a motif
is a directed acyclic graph of ``|G^(l)|`` nodes whose every edge ``(i, j)``, ``i < j``,
carries ``none`` or one operation of level ``l - 1`` (a primitive at level 2, a level-``l-1``
motif above). Node 0 is the motif's input, the last node its output, and node ``j``
merges the edges into it (eq. 1 of the paper): ``x_j = merge[o_ij(x_i) for i < j]``. The
single motif of the top level ``L`` is the cell. The paper's search setting, the defaults:
``L = 3``, ``M_2 = 6`` motifs of 4 nodes, one level-3 motif of 5 nodes.

Flat variant (section 4.1): ``L = 2``, a single motif of 11 nodes directly over the
primitives (``hierarchical-flat``, :class:`HierarchicalFlatSpace`).

Building, as in the paper where it says how:

- every primitive keeps the channels ``C`` and the resolution (stride 1, padded);
- every convolution is followed by batch norm and ReLU (section 2.3): ``conv_1x1`` is
  conv-BN-ReLU, ``dw_conv_3x3`` a depthwise 3x3 conv-BN-ReLU, ``sep_conv_3x3`` a depthwise
  3x3 then a pointwise 1x1 convolution, then BN-ReLU. The paper puts no batch norm after
  pooling or identity, nor does this space;
- merge is depthwise concatenation (section 2.1); where a node has several inputs, a 1x1
  conv-BN-ReLU brings the ``k C`` concatenated channels back to ``C`` (the paper keeps
  every primitive at ``C`` channels but does not say how concatenations are narrowed);
  a node with one input is that input;
- only edges on a path from the input to the output are built; a node that no path
  reaches is absent, and a motif whose output no path reaches computes nothing, so an
  edge that carries it is ``none``. A cell whose output is unreachable outputs zeros;
- the network is the small model the paper searches with (its figure 2, left): a 3x3
  conv-BN-ReLU stem of ``C`` channels, then cell, separable conv 3x3 of stride 2 to
  ``2C``, cell, separable conv 3x3 of stride 2 to ``4C``, cell, separable conv 3x3,
  global average pooling and a linear layer to ``num_outputs``. The cells are three
  copies of one architecture, each with its own weights. The paper uses ``C = 16``; the
  default here is 8, so that a digits evaluation takes seconds on a CPU.

Decisions: for each level from 2 up, each motif in turn, the edges ``(i, j)`` ordered by
``j`` then ``i`` (NAS-Bench-201's order): index 0 is ``none``, then the primitives (level
2) or ``motif_0 .. motif_{M-1}`` of the level below. 46 decisions by default (6 motifs of
6 edges, 10 edges), 55 for the flat variant.

Mutation (section 3.1): :meth:`HierarchicalSpace.mutate` picks a level, a motif of it, a
successor node ``j``, a predecessor ``i < j``, and gives edge ``(i, j)`` another operation;
regularized evolution uses it. Progressive search (PNAS) grows the motifs node by node,
lowest level first (:class:`pynas.search.pnas.HierarchicalProgression`).

String: levels joined by ``" ; "``, each ``levelL:`` then its motifs in parentheses; in a
motif, the nodes ``j = 1 ..`` joined by ``" | "``, each the operations of its edges from
``i = 0, 1, ..`` joined by ``","``: a motif of 3 nodes ``(conv_1x1 | identity,none)`` has
node 1 = conv_1x1(node 0) and node 2 = identity(node 0), its edge 1->2 being ``none``.
Genotype: ``{"space": ..., "motifs": {"level2": [{"0->1": operation, ...}, ...],
"level3": [{...}]}}``, every edge named, ``none`` included.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.spaces.base import IMAGE, Arch, SearchSpace

#: the level-1 primitives of section 2.3, after ``none`` (decision value 0)
PRIMITIVES = ("conv_1x1", "dw_conv_3x3", "sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
              "identity")
NONE = "none"

#: a motif's edges that are not ``none``: (source node, target node, decision value)
Edges = list[tuple[int, int, int]]

_EDGE_KEY = re.compile(r"(\d+)->(\d+)")
_LEVEL_LABEL = re.compile(r"level(\d+)")
_MOTIFS_TEXT = re.compile(r"(?:\s*\([^()]*\))*\s*")


def motif_edges(nodes: int) -> list[tuple[int, int]]:
    """The edges ``(i, j)``, ``i < j``, of a motif of ``nodes`` nodes, in decision order
    (by target ``j``, then source ``i``)."""
    return [(source, target) for target in range(1, nodes) for source in range(target)]


def useful_edges(edges: Edges, nodes: int) -> Edges:
    """The edges that lie on a path from node 0 to node ``nodes - 1``; ``edges`` holds
    the edges that are not ``none``. Empty when no path reaches the output."""
    reached = {0}
    for source, target, _ in sorted(edges, key=lambda edge: edge[1]):
        if source in reached:
            reached.add(target)
    reaching = {nodes - 1}
    for source, target, _ in sorted(edges, key=lambda edge: -edge[1]):
        if target in reaching:
            reaching.add(source)
    return [edge for edge in edges if edge[0] in reached and edge[1] in reaching]


class ConvBNReLU(nn.Sequential):
    """A convolution without bias, batch norm, ReLU (the paper's convolutional unit)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class SeparableConvBNReLU(nn.Sequential):
    """A depthwise 3x3 convolution, a pointwise 1x1 convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1,
                      groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


def make_primitive(name: str, channels: int) -> nn.Module:
    """The module of a level-1 primitive; it keeps the shape (batch, channels, H, W)."""
    if name == "conv_1x1":
        return ConvBNReLU(channels, channels, 1)
    if name == "dw_conv_3x3":
        return ConvBNReLU(channels, channels, 3, groups=channels)
    if name == "sep_conv_3x3":
        return SeparableConvBNReLU(channels, channels)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"hierarchical: unknown primitive {name!r}, expected one of {PRIMITIVES}")


class Motif(nn.Module):
    """One motif: ``x_j = merge[o_ij(x_i) for its edges (i, j)]``, output the last node.

    Parameters
    ----------
    edges : the built edges ``(i, j)``, each on a path from node 0 to node ``nodes - 1``.
    operations : the module of each edge.
    nodes : nodes of the motif.
    channels : channels ``C`` of every node.
    """

    def __init__(self, edges: Sequence[tuple[int, int]], operations: Sequence[nn.Module],
                 nodes: int, channels: int) -> None:
        super().__init__()
        self.edges = list(edges)
        self.operations = nn.ModuleList(operations)
        self.output = nodes - 1
        self.targets = sorted({target for _, target in self.edges})
        fan_in = {target: sum(t == target for _, t in self.edges) for target in self.targets}
        # keyed by node number; ModuleDict keys must be strings
        self.merges = nn.ModuleDict({
            str(target): ConvBNReLU(count * channels, channels, 1)
            for target, count in fan_in.items() if count > 1
        })

    def forward(self, features: Tensor) -> Tensor:
        """``features``: (batch, C, H, W) -> (batch, C, H, W)."""
        if not self.edges:
            return torch.zeros_like(features)
        values = {0: features}
        for target in self.targets:
            inputs = [operation(values[source])
                      for (source, edge_target), operation in zip(self.edges, self.operations)
                      if edge_target == target]
            merge = self.merges[str(target)] if str(target) in self.merges else None
            values[target] = inputs[0] if merge is None else merge(torch.cat(inputs, dim=1))
        return values[self.output]


class HierarchicalNetwork(nn.Module):
    """The paper's small search model: stem, three cells separated by stride-2 separable
    convolutions that double the channels, a separable convolution, pooling, linear.

    Parameters
    ----------
    make_cell : ``make_cell(channels)`` returns a new cell of that many channels.
    channels : channels ``C`` of the stem and the first cell.
    in_channels, num_outputs : channels of the images, outputs of the linear layer.
    """

    def __init__(self, make_cell: Callable[[int], nn.Module], channels: int, in_channels: int,
                 num_outputs: int) -> None:
        super().__init__()
        self.stem = ConvBNReLU(in_channels, channels, 3)
        self.cells = nn.Sequential(
            make_cell(channels),
            SeparableConvBNReLU(channels, 2 * channels, stride=2),
            make_cell(2 * channels),
            SeparableConvBNReLU(2 * channels, 4 * channels, stride=2),
            make_cell(4 * channels),
            SeparableConvBNReLU(4 * channels, 4 * channels),
        )
        self.classifier = nn.Linear(4 * channels, num_outputs)

    def forward(self, images: Tensor) -> Tensor:
        """``images``: (batch, in_channels, H, W) -> outputs (batch, num_outputs)."""
        return self.classifier(self.cells(self.stem(images)).mean(dim=(2, 3)))


def _count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"hierarchical: {name} must be an integer of at least {least}, "
                         f"got {value!r}")
    return value


def _counts(name: str, value: Any, length: int, least: int) -> tuple[int, ...]:
    """``value``, one count for every level or a sequence of one per level, as ``length``
    counts of at least ``least``."""
    if isinstance(value, int):
        return (_count(name, value, least),) * length
    counts = tuple(value) if isinstance(value, Sequence) else ()
    if len(counts) != length:
        raise UsageError(f"hierarchical: {name} must be an integer or {length} of them, one "
                         f"per level, got {value!r}")
    return tuple(_count(name, count, least) for count in counts)


class HierarchicalSpace(SearchSpace):
    """Motifs of motifs over six primitives (Liu et al. 2018); see the module docstring.

    Parameters
    ----------
    levels : int
        Levels ``L`` counting the primitives' (the paper: 3); at least 2.
    motifs : int or sequence of int
        Motifs ``M_l`` of each intermediate level ``l = 2 .. L-1`` (the paper: 6); the
        top level has one.
    nodes : int or sequence of int
        Nodes ``|G^(l)|`` of the motifs of each level ``l = 2 .. L`` (the paper: 4 and 5).
    channels : int
        Channels ``C`` of the first cell (the paper: 16).
    """

    name = "hierarchical"
    input_kind = IMAGE

    def __init__(self, levels: int = 3, motifs: int | Sequence[int] = 6,
                 nodes: int | Sequence[int] = (4, 5), channels: int = 8) -> None:
        self.levels = levels = _count("levels", levels, 2)
        self.nodes = _counts("nodes", nodes, levels - 1, 2)
        #: motifs of levels 2 .. L
        self.motifs = (*_counts("motifs", motifs, levels - 2, 1), 1)
        self.channels = _count("channels", channels, 1)
        # (level, motif) -> its first decision, in decision order
        self._first_decision: dict[tuple[int, int], int] = {}
        position = 0
        for level in self.level_numbers:
            for motif in range(self.motifs[level - 2]):
                self._first_decision[level, motif] = position
                position += len(motif_edges(self.nodes[level - 2]))

    def first_decision(self, level: int, motif: int) -> int:
        """The position of the first decision of motif ``motif`` of level ``level``."""
        return self._first_decision[level, motif]

    @property
    def level_numbers(self) -> range:
        """The levels of motifs, ``2 .. L``."""
        return range(2, self.levels + 1)

    def operations(self, level: int) -> tuple[str, ...]:
        """The names of the options of an edge of a level-``level`` motif."""
        if level == 2:
            return (NONE, *PRIMITIVES)
        return (NONE, *(f"motif_{m}" for m in range(self.motifs[level - 3])))

    @property
    def num_choices(self) -> tuple[int, ...]:
        return tuple(len(self.operations(level))
                     for level, _ in self._first_decision
                     for _ in motif_edges(self.nodes[level - 2]))

    def decision_names(self) -> list[str]:
        return [f"level{level}.motif{motif}.node{target}<-node{source}"
                for level, motif in self._first_decision
                for source, target in motif_edges(self.nodes[level - 2])]

    def motif_choices(self, arch: Arch) -> dict[int, list[list[int]]]:
        """The decisions of each motif: ``{level: [values of motif m's edges, ...]}``."""
        arch = self.validate(arch)
        choices: dict[int, list[list[int]]] = {level: [] for level in self.level_numbers}
        for (level, _), start in self._first_decision.items():
            end = start + len(motif_edges(self.nodes[level - 2]))
            choices[level].append(list(arch[start:end]))
        return choices

    def _from_choices(self, choices: dict[int, list[list[int]]]) -> Arch:
        return tuple(value for level in self.level_numbers for motif in choices[level]
                     for value in motif)

    # ---- strings and genotypes ----

    def to_string(self, arch: Arch) -> str:
        levels = []
        for level, motifs in self.motif_choices(arch).items():
            names = self.operations(level)
            texts = []
            for values in motifs:
                by_target: dict[int, list[str]] = {}
                for (_, target), value in zip(motif_edges(self.nodes[level - 2]), values):
                    by_target.setdefault(target, []).append(names[value])
                texts.append("(" + " | ".join(",".join(ops) for ops in by_target.values()) + ")")
            levels.append(f"level{level}: " + " ".join(texts))
        return " ; ".join(levels)

    def from_string(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise ValueError(f"{self.name}: architecture string expected, got "
                             f"{type(text).__name__}")
        parts = text.split(";")
        if len(parts) != len(self.level_numbers):
            raise ValueError(f"{self.name}: {text!r} has {len(parts)} levels separated by ';', "
                             f"expected {len(self.level_numbers)}")
        choices = {}
        for level, part in zip(self.level_numbers, parts):
            label, _, body = part.partition(":")
            if label.strip() != f"level{level}" or not _MOTIFS_TEXT.fullmatch(body):
                raise ValueError(f"{self.name}: level {level} must read 'level{level}: (...) "
                                 f"(...)', got {part.strip()!r}")
            motif_texts = re.findall(r"\(([^()]*)\)", body)
            self._check_count(level, len(motif_texts))
            choices[level] = [self._parse_motif(level, motif, motif_text)
                              for motif, motif_text in enumerate(motif_texts)]
        return self._from_choices(choices)

    def _check_count(self, level: int, count: int) -> None:
        if count != self.motifs[level - 2]:
            raise ValueError(f"{self.name}: level {level} has {count} motifs, expected "
                             f"{self.motifs[level - 2]}")

    def _parse_motif(self, level: int, motif: int, text: str) -> list[int]:
        """The decision values of motif ``(..|..)`` text, inside its parentheses."""
        nodes = self.nodes[level - 2]
        targets = text.split("|")
        if len(targets) != nodes - 1:
            raise ValueError(f"{self.name}: level {level} motif {motif} ({text}) has "
                             f"{len(targets)} nodes after the input, expected {nodes - 1}")
        values = []
        for target, target_text in enumerate(targets, start=1):
            sources = [name.strip() for name in target_text.split(",")]
            if len(sources) != target:
                raise ValueError(f"{self.name}: node {target} of level {level} motif {motif} "
                                 f"has {len(sources)} input edges, expected {target}")
            values += [self._operation_value(level, motif, f"{source}->{target}", name)
                       for source, name in enumerate(sources)]
        return values

    def _operation_value(self, level: int, motif: int, edge: str, name: Any) -> int:
        names = self.operations(level)
        if name not in names:
            raise ValueError(f"{self.name}: edge {edge} of level {level} motif {motif} is "
                             f"{name!r}, expected one of {', '.join(names)}")
        return names.index(name)

    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        motifs = {}
        for level, level_motifs in self.motif_choices(arch).items():
            names = self.operations(level)
            motifs[f"level{level}"] = [
                {f"{source}->{target}": names[value]
                 for (source, target), value in zip(motif_edges(self.nodes[level - 2]), values)}
                for values in level_motifs
            ]
        return {"space": self.name, "motifs": motifs}

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict) or genotype.get("space") != self.name:
            raise ValueError(f"{self.name}: not a {self.name} genotype (expected space "
                             f"{self.name!r})")
        levels = read_motifs(genotype, self.name)
        expected = [f"level{level}" for level in self.level_numbers]
        if sorted(levels) != sorted(expected):
            raise ValueError(f"{self.name}: genotype has motifs of {', '.join(levels)}, "
                             f"expected {', '.join(expected)}")
        choices = {}
        for level in self.level_numbers:
            motifs = levels[f"level{level}"]
            self._check_count(level, len(motifs))
            edges = [f"{source}->{target}" for source, target in
                     motif_edges(self.nodes[level - 2])]
            choices[level] = []
            for motif, operations in enumerate(motifs):
                keys = [f"{source}->{target}" for source, target in operations]
                if sorted(keys) != sorted(edges):
                    raise ValueError(f"{self.name}: level {level} motif {motif} has edges "
                                     f"{', '.join(keys)}, expected {', '.join(edges)}")
                by_key = dict(zip(keys, operations.values()))
                choices[level].append([self._operation_value(level, motif, edge, by_key[edge])
                                       for edge in edges])
        return self._from_choices(choices)

    # ---- search ----

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """The paper's mutation (section 3.1): a level ``l >= 2``, a motif of that level,
        a successor node ``j``, a predecessor ``i < j``, each drawn uniformly; edge
        ``(i, j)`` gets another operation of level ``l - 1`` (or ``none``), drawn
        uniformly among the others. Exactly one decision changes."""
        arch = self.validate(arch)
        level = rng.choice(self.level_numbers)
        motif = rng.randrange(self.motifs[level - 2])
        target = rng.randrange(1, self.nodes[level - 2])
        source = rng.randrange(target)
        position = (self._first_decision[level, motif]
                    + motif_edges(self.nodes[level - 2]).index((source, target)))
        # draw among the other values: skip over the current one
        value = rng.randrange(len(self.operations(level)) - 1)
        if value >= arch[position]:
            value += 1
        return arch[:position] + (value,) + arch[position + 1:]

    def draw(self, arch: Arch, folder: str | Path) -> list[Path]:
        """Draw the motifs of each level of ``arch`` into ``folder`` (see
        :func:`draw_hierarchical`); returns the files written."""
        return draw_hierarchical(self.to_genotype(arch), folder)

    # ---- networks ----

    def built_edges(self, arch: Arch) -> dict[int, list[Edges]]:
        """The edges each motif builds: ``{level: [edges of motif m, ...]}``, each
        ``(source, target, decision value)`` on a path from the motif's input to its
        output, where a lower motif that computes nothing counts as ``none``."""
        built: dict[int, list[Edges]] = {}
        for level, motifs in self.motif_choices(arch).items():
            empty = {m + 1 for m, edges in enumerate(built.get(level - 1, [])) if not edges}
            built[level] = [
                useful_edges([(source, target, value) for (source, target), value
                              in zip(motif_edges(self.nodes[level - 2]), values)
                              if value != 0 and value not in empty], self.nodes[level - 2])
                for values in motifs
            ]
        return built

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        self.check_input(input_shape)
        built = self.built_edges(arch)

        def make_motif(level: int, motif: int, channels: int) -> Motif:
            edges = built[level][motif]
            operations = [make_primitive(PRIMITIVES[value - 1], channels) if level == 2
                          else make_motif(level - 1, value - 1, channels)
                          for _, _, value in edges]
            return Motif([(source, target) for source, target, _ in edges], operations,
                         self.nodes[level - 2], channels)

        return HierarchicalNetwork(lambda channels: make_motif(self.levels, 0, channels),
                                   self.channels, input_shape[0], num_outputs)


class HierarchicalFlatSpace(HierarchicalSpace):
    """The paper's flat representation (section 4.1): one motif of ``nodes`` nodes over
    the primitives (``L = 2``), 11 nodes as in the paper, in the same network.

    Parameters
    ----------
    nodes : int
        Nodes of the motif (the paper: 11, about as many edges as the hierarchical
        genotype has decisions).
    channels : int
        Channels ``C`` of the first cell.
    """

    name = "hierarchical-flat"

    def __init__(self, nodes: int = 11, channels: int = 8) -> None:
        super().__init__(levels=2, nodes=nodes, channels=channels)


def read_motifs(genotype: dict[str, Any], space: str = HierarchicalSpace.name
                ) -> dict[str, list[dict[tuple[int, int], Any]]]:
    """The motifs of a genotype, by level name: ``{"level2": [{(i, j): operation}]}``;
    raises ``ValueError``, its message starting with ``space``, when
    ``genotype["motifs"]`` is not of that form."""
    levels = genotype.get("motifs") if isinstance(genotype, dict) else None
    if not isinstance(levels, dict) or not levels:
        raise ValueError(f"{space}: genotype has no 'motifs' dict of levels")
    motifs: dict[str, list[dict[tuple[int, int], Any]]] = {}
    for label, level_motifs in levels.items():
        if not isinstance(label, str) or not _LEVEL_LABEL.fullmatch(label):
            raise ValueError(f"{space}: genotype motifs key {label!r} must be 'levelN'")
        if not isinstance(level_motifs, list) or not all(
                isinstance(motif, dict) for motif in level_motifs):
            raise ValueError(f"{space}: genotype {label} must be a list of motifs, each a "
                             "dict 'i->j': operation")
        motifs[label] = []
        for index, motif in enumerate(level_motifs):
            edges = {}
            for key, operation in motif.items():
                match = _EDGE_KEY.fullmatch(key) if isinstance(key, str) else None
                if match is None or int(match.group(1)) >= int(match.group(2)):
                    raise ValueError(f"{space}: {label} motif {index} has edge {key!r}, "
                                     "expected 'i->j' with i < j")
                edges[int(match.group(1)), int(match.group(2))] = operation
            motifs[label].append(edges)
    return motifs


def draw_hierarchical(genotype: dict[str, Any], folder: str | Path) -> list[Path]:
    """Draw a hierarchical genotype: ``levelL_motifs.dot`` and ``.png`` in ``folder`` for
    each level, its motifs side by side (``none`` edges left out); returns the files.

    The PNG comes from graphviz ``dot`` when it is installed, from matplotlib otherwise.
    """
    from pynas.cells import draw_motifs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    space = HierarchicalSpace.name
    if isinstance(genotype, dict):
        space = genotype.get("space", space)
    levels = read_motifs(genotype, space)
    top = max(levels, key=lambda label: int(label[len("level"):]))
    for label, motifs in levels.items():
        nodes = 1 + max((target for motif in motifs for _, target in motif), default=1)
        edges = [[(source, target, str(operation)) for (source, target), operation
                  in motif.items() if operation != NONE] for motif in motifs]
        names = ["cell"] if label == top else [f"motif_{m}" for m in range(len(motifs))]
        title = f"{space} {label.replace('level', 'level ')}"
        written += draw_motifs(edges, nodes, names, folder / f"{label}_motifs", title)
    return written
