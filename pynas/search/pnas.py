"""Progressive neural architecture search with a learned surrogate (PNAS).

Liu et al., "Progressive Neural Architecture Search", ECCV 2018, Algorithm 1: evaluate
the simplest cells (one block), fit a surrogate predictor on what was seen; then, level
by level, expand each of the best ``K`` cells of the last level by one block, rank every
child with the surrogate, evaluate the ``K`` children it ranks highest, and refit the
surrogate on everything seen. The search never trains a cell it only predicted.

A :class:`Progression` says what a level is in one space:

- ``pnas``: level ``b`` holds the cells of ``b`` blocks (the paper), see
  :class:`CellProgression`;
- ``nb201``: node by node (:class:`NB201Progression`), so that PNAS runs on the
  NAS-Bench-201 table;
- ``mlp``: layer by layer (:class:`MLPProgression`);
- ``hierarchical`` and ``hierarchical-flat``: motif by motif, node by node, bottom-up
  (:class:`HierarchicalProgression`).

At each level after the first, the Spearman rank correlation between the predicted and
the observed accuracies of the newly evaluated cells is recorded (the paper's figure 4);
:meth:`ProgressiveSearch.rank_correlations` returns it, and
:func:`write_rank_correlation` writes ``rank_correlation.json`` and a plot into a run.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynas.costs import CostModel
from pynas.errors import UsageError
from pynas.evaluate import TableEvaluator
from pynas.objectives import COST_MEASURES, Objectives, pareto_order
from pynas.runs import RunDirectory, load_checkpoint
from pynas.search.base import Strategy
from pynas.search.cli import retrain_line, search, summary_line
from pynas.search.loop import Budget, run_search
from pynas.search.random_search import set_random_state
from pynas.search.surrogate import KINDS, SurrogateEnsemble, TokenRows
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.hierarchical import PRIMITIVES as HIERARCHICAL_PRIMITIVES
from pynas.spaces.hierarchical import motif_edges
from pynas.spaces.mlp import ACTIVATIONS as MLP_ACTIVATIONS
from pynas.spaces.mlp import DROPOUTS as MLP_DROPOUTS
from pynas.spaces.mlp import WIDTHS as MLP_WIDTHS
from pynas.spaces.nb201 import EDGES as NB201_EDGES
from pynas.spaces.nb201 import OPERATIONS as NB201_OPERATIONS
from pynas.spaces.nb201 import NB201Space

DEFAULT_BEAM = 4
#: surrogate refits per level when --rounds is not given (at most the beam)
DEFAULT_ROUNDS = 4
RANK_CORRELATION_JSON = "rank_correlation.json"
RANK_CORRELATION_PLOT = "rank_correlation.png"


class Progression(ABC):
    """How progressive search grows the cells of one space, level by level."""

    #: levels of the full progression (the most blocks, for the pnas space)
    levels: int
    #: tokens per row of :meth:`tokens`, and the number of distinct tokens
    width: int
    vocabulary_size: int

    @abstractmethod
    def first_level(self) -> list[Arch]:
        """The cells of level 1, each once."""

    @abstractmethod
    def children(self, arch: Arch, level: int) -> list[Arch]:
        """The cells of level ``level + 1`` grown from ``arch`` of level ``level``."""

    @abstractmethod
    def tokens(self, arch: Arch) -> TokenRows:
        """``arch`` as token rows for the surrogate, (rows, width)."""

    def key(self, arch: Arch) -> Arch:
        """The architecture that ``arch`` denotes: equal keys, equal cells."""
        return arch


class CellProgression(Progression):
    """The pnas space: level ``b`` holds the cells of ``b`` blocks (mirror images once)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.levels = space.blocks
        self.width = 4
        self.vocabulary_size = space.vocabulary_size

    def first_level(self) -> list[Arch]:
        return self.space.cells_with_one_block()

    def children(self, arch: Arch, level: int) -> list[Arch]:
        return self.space.children(arch)

    def tokens(self, arch: Arch) -> TokenRows:
        return self.space.tokens(arch)

    def key(self, arch: Arch) -> Arch:
        return self.space.canonical(arch)


class NB201Progression(Progression):
    """NAS-Bench-201 node by node: level ``L`` chooses the ``L`` edges into node ``L``.

    Level 1 is node 1's edge (5 cells), level 2 adds node 2's two edges (25 children per
    parent), level 3 node 3's three edges (125 children per parent): the last level holds
    complete cells. The nodes past ``L`` are not searched yet; they are filled with a
    plain chain, ``node j = skip(node j-1)``, so that a level-``L`` cell is the cell
    whose output is node ``L`` (as a b-block PNAS cell is a cell with fewer blocks), and
    it is a real cell of the table. Filling them with ``none`` instead would cut the
    output from the input (every level-1 and level-2 cell at chance, 10%: nothing to
    rank); with ``skip_connect`` on every free edge the partial cells would also add
    the input and the earlier nodes to the output, so a level-``L`` cell would no longer
    measure what its chosen edges compute.

    Tokens: one row per edge, ``[edge, 6 + operation]``.
    """

    levels = 3
    width = 2

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.edges = NB201_EDGES
        self.operation_count = len(NB201_OPERATIONS)
        self.vocabulary_size = len(NB201_EDGES) + len(NB201_OPERATIONS)
        self.skip = NB201_OPERATIONS.index("skip_connect")
        self.none = NB201_OPERATIONS.index("none")

    def _edges_of(self, node: int) -> list[int]:
        return [index for index, (target, _) in enumerate(self.edges) if target == node]

    def _fill(self, chosen: Sequence[int], level: int) -> Arch:
        """``chosen`` operations of the edges into nodes 1..level, the chain after."""
        arch = list(chosen) + [0] * (len(self.edges) - len(chosen))
        for node in range(level + 1, 4):
            for index in self._edges_of(node):
                arch[index] = self.skip if self.edges[index][1] == node - 1 else self.none
        return tuple(arch)

    def first_level(self) -> list[Arch]:
        return [self._fill([operation], 1) for operation in range(self.operation_count)]

    def children(self, arch: Arch, level: int) -> list[Arch]:
        if level >= self.levels:
            return []
        kept = arch[: sum(len(self._edges_of(node)) for node in range(1, level + 1))]
        new_edges = len(self._edges_of(level + 1))
        return [
            self._fill(list(kept) + [
                (code // self.operation_count ** position) % self.operation_count
                for position in range(new_edges)
            ], level + 1)
            for code in range(self.operation_count ** new_edges)
        ]

    def tokens(self, arch: Arch) -> TokenRows:
        return [[edge, len(self.edges) + operation] for edge, operation in enumerate(arch)]


class MLPProgression(Progression):
    """The mlp space layer by layer: level ``L`` chooses the properties and the inputs of
    layer ``L - 1`` (layers are numbered from 0).

    The layers past the level are absent and each reads the layer before it, so that a
    level-``L`` network is the network of its first ``L`` layers (an absent last layer
    reading its predecessor passes it to the head), a real, smaller network of the space,
    as a b-block PNAS cell is a cell with fewer blocks. Absent layers that read nothing
    would instead each pass the features to the head: a linear path from the input to
    the output that the level's layers did not choose.

    Children of a level-``L`` network: every distinct new layer (61 with the space's
    options: the absent one and 5 widths x 4 activations x 3 dropouts) with every subset
    of the ``L`` earlier layers as its inputs, ``61 * 2**L``: at most 488 per parent with
    the default 4 layers. Past :attr:`max_children` (4096, from the 8th layer on) a parent
    gets a fixed sample of that many, drawn from a :class:`random.Random` seeded with the
    parent, so that a resumed search grows the same children.

    Tokens: a row per layer up to the last one chosen (trailing absent layers that read
    their predecessor are the same network without them, and are left out):
    ``[layer, width, activation, dropout]``, the last two the ``absent`` token for an
    absent layer; then a row ``[layer, reads, j, reads]`` per input ``j`` of that layer.
    """

    max_children = 4096

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.levels = space.layers
        self.width = 4
        self._options = space.layer_options()
        self._width_token = space.layers
        self._activation_token = self._width_token + len(MLP_WIDTHS)
        self._dropout_token = self._activation_token + len(MLP_ACTIVATIONS)
        self._absent = self._dropout_token + len(MLP_DROPOUTS)
        self._reads = self._absent + 1
        self.vocabulary_size = self._reads + 1

    def _extend(self, kept: list[dict[str, Any]], seed: str) -> list[Arch]:
        """Every network of ``kept`` layers, one new layer and absent layers after it
        (a seeded sample of :attr:`max_children` when there are more)."""
        layer = len(kept)
        indices: Sequence[int] = range(len(self._options) << layer)  # option, then inputs
        if len(indices) > self.max_children:
            indices = sorted(random.Random(seed).sample(indices, self.max_children))
        fill = [{"width": 0, "inputs": [k - 1]} for k in range(layer + 1, self.levels)]
        return [
            self.space.from_layer_specs(kept + [{
                **self._options[index >> layer],
                "inputs": [j for j in range(layer) if index >> j & 1],
            }] + fill)
            for index in indices
        ]

    def first_level(self) -> list[Arch]:
        return self._extend([], "")

    def children(self, arch: Arch, level: int) -> list[Arch]:
        if level >= self.levels:
            return []
        return self._extend(self.space.layer_specs(arch)[:level], repr(self.key(arch)))

    def tokens(self, arch: Arch) -> TokenRows:
        specs = self.space.layer_specs(arch)
        last = len(specs) - 1
        while last > 0 and not specs[last]["width"] and specs[last]["inputs"] == [last - 1]:
            last -= 1
        specs = specs[:last + 1]
        rows = []
        for layer, spec in enumerate(specs):
            width = self._width_token + MLP_WIDTHS.index(spec["width"])
            if spec["width"]:
                rows.append([layer, width,
                             self._activation_token + MLP_ACTIVATIONS.index(spec["activation"]),
                             self._dropout_token + MLP_DROPOUTS.index(spec["dropout"])])
            else:
                rows.append([layer, width, self._absent, self._absent])
            rows += [[layer, self._reads, j, self._reads] for j in spec["inputs"]]
        return rows

    def key(self, arch: Arch) -> Arch:
        return self.space.canonical(arch)


class HierarchicalProgression(Progression):
    """The hierarchical spaces bottom-up, motif by motif, node by node: one level of the
    progression chooses the edges into one node of one motif, lowest motif level first
    (level-2 motifs 0, 1, .., then the level-3 motif), so 22 levels with the paper's
    settings (6 motifs of 3 nodes after the input, then 4) and 10 for the flat variant.

    Each partial architecture is a real one of the space, whose cell computes what the
    chosen nodes compute:

    - while motif ``m`` of level ``l`` grows, the cell is that motif alone: the top-level
      motif (and every level between) holds one edge, input to output, carrying motif
      ``m`` of the level below (motif 0 of the levels between);
    - a level-2 motif grown up to node ``j`` passes node ``j`` on to its output through a
      chain of ``identity`` edges, as :class:`NB201Progression` does with skip;
    - a motif above level 2 has no identity among its options (they are the motifs of the
      level below), so its growth up to node ``j`` also chooses the motif on the edge
      from node ``j`` to the output (6 options); the last node's level chooses every edge
      into the output freely.

    Children per parent with the defaults: 7, 49 and 343 for a level-2 motif's nodes;
    42, 294, 2058 and 2401 for the level-3 motif's. Past :attr:`max_children` (from the
    5th node of the flat variant's motif on) a parent gets a fixed sample of that many,
    seeded with the parent.

    Tokens: one row per decision, ``[decision, decisions + value]``.
    """

    max_children = 4096
    width = 2

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        #: (level, motif, node): what each level of the progression chooses, in order
        self.steps = [(level, motif, node) for level in space.level_numbers
                      for motif in range(space.motifs[level - 2])
                      for node in range(1, space.nodes[level - 2])]
        self.levels = len(self.steps)
        self.decisions = len(space.num_choices)
        self.vocabulary_size = self.decisions + max(space.num_choices)
        self._identity = 1 + HIERARCHICAL_PRIMITIVES.index("identity")

    def _position(self, level: int, motif: int, edge: tuple[int, int]) -> int:
        nodes = self.space.nodes[level - 2]
        return self.space.first_decision(level, motif) + motif_edges(nodes).index(edge)

    def _grow(self, parent: Arch, step: int) -> list[Arch]:
        """The architectures of progression level ``step + 1`` grown from ``parent``."""
        level, motif, node = self.steps[step]
        nodes = self.space.nodes[level - 2]
        output = nodes - 1
        base = list(parent)
        # forget the filler of the earlier growth of this motif, and everything later
        for target in range(node, nodes):
            for source in range(target):
                base[self._position(level, motif, (source, target))] = 0
        for later_motif in range(motif + 1, self.space.motifs[level - 2]):
            for edge in motif_edges(nodes):
                base[self._position(level, later_motif, edge)] = 0
        for source in range(node - 1):  # the edge to the output chosen with the last node
            base[self._position(level, motif, (source + 1, output))] = 0
        # the cell is this motif alone
        for upper in range(level + 1, self.space.levels + 1):
            upper_nodes = self.space.nodes[upper - 2]
            for upper_motif in range(self.space.motifs[upper - 2]):
                for edge in motif_edges(upper_nodes):
                    base[self._position(upper, upper_motif, edge)] = 0
            carried = motif + 1 if upper == level + 1 else 1
            base[self._position(upper, 0, (0, upper_nodes - 1))] = carried
        options = len(self.space.operations(level))
        into_node = [self._position(level, motif, (source, node)) for source in range(node)]
        # the edge from the new node to the output: identity chain on level 2, chosen above
        chained = node < output and level == 2
        to_output = None if node == output else self._position(level, motif, (node, output))
        extra = options - 1 if to_output is not None and not chained else 1
        count = options ** len(into_node) * extra
        indices: Sequence[int] = range(count)
        if count > self.max_children:
            indices = sorted(random.Random(repr((parent, step))).sample(indices,
                                                                        self.max_children))
        children = []
        for index in indices:
            arch = list(base)
            code, choice = divmod(index, extra)
            for position in into_node:
                code, arch[position] = divmod(code, options)
            if chained:
                for target in range(node + 1, nodes):
                    arch[self._position(level, motif, (target - 1, target))] = self._identity
            elif to_output is not None:
                arch[to_output] = 1 + choice
            children.append(tuple(arch))
        return children

    def first_level(self) -> list[Arch]:
        return self._grow((0,) * self.decisions, 0)

    def children(self, arch: Arch, level: int) -> list[Arch]:
        if level >= self.levels:
            return []
        return self._grow(arch, level)

    def tokens(self, arch: Arch) -> TokenRows:
        return [[position, self.decisions + value] for position, value in enumerate(arch)]


def progression_for(space: SearchSpace) -> Progression:
    """The progression of ``space``; a :class:`UsageError` for a space without one."""
    progressions = {"pnas": CellProgression, "nb201": NB201Progression, "mlp": MLPProgression,
                    "hierarchical": HierarchicalProgression,
                    "hierarchical-flat": HierarchicalProgression}
    if space.name not in progressions:
        raise UsageError(
            f"pnas searches the spaces {', '.join(progressions)}; {space.name!r} has no "
            "progressive order"
        )
    return progressions[space.name](space)


class ProgressiveSearch(Strategy):
    """PNAS as an ask/tell strategy.

    Parameters
    ----------
    space
        A space with a progression (see :func:`progression_for`).
    seed
        Seeds the sample of first-level cells and every surrogate fit.
    beam
        ``K``: cells expanded, and children evaluated, per level.
    levels
        Levels to search (blocks, in the pnas space); default: all of the space's.
    initial
        First-level cells to evaluate, a random sample; default: all of them.
    surrogate
        ``"mlp"`` (the default, best measured) or ``"lstm"`` (the paper's; see
        :mod:`pynas.search.surrogate`).
    members, surrogate_steps
        Ensemble size, and training steps per member and fit.
    rounds
        Batches in which a level's ``K`` children are evaluated, the surrogate refit on
        every result between batches to rank the children left. 1 is the paper (one
        batch per level); more lets the surrogate learn what the level's new decisions
        do from the level's own first results. Default :data:`DEFAULT_ROUNDS` (4; the
        beam when it is smaller), with ``"mlp"`` the best measured on NAS-Bench-201
        (``bench/RESULTS.md``).

    objectives, costs
        Several objectives: one that training gives (an accuracy, which the surrogate
        predicts) and cost measures, which ``costs`` (a :class:`~pynas.costs.CostModel`)
        gives exactly, untrained. The beam's parents and each batch of children are then
        the best in NSGA-II's Pareto order (front, then crowding) of observed or
        predicted accuracy and exact costs, rather than the highest accuracy.

    Notes
    -----
    A cell whose evaluation failed is neither a parent nor a training example. The
    search finishes after its last level, or earlier when a level has no new child.
    """

    name = "pnas"

    def __init__(self, space: SearchSpace, seed: int = 0, beam: int = DEFAULT_BEAM,
                 levels: int | None = None, initial: int | None = None,
                 surrogate: str = "mlp", members: int = 5, surrogate_steps: int = 300,
                 rounds: int | None = None, objectives: Objectives | None = None,
                 costs: CostModel | None = None) -> None:
        super().__init__(space, seed, objectives)
        check_objectives(objectives, costs is not None)
        self.costs = costs
        self.progression = progression_for(space)
        levels = self.progression.levels if levels is None else levels
        if not 1 <= levels <= self.progression.levels:
            raise UsageError(
                f"pnas: --levels must be in 1..{self.progression.levels} for the space "
                f"{space.name!r}, got {levels}"
            )
        if beam < 1:
            raise UsageError(f"pnas: --beam must be at least 1, got {beam}")
        if initial is not None and initial < 1:
            raise UsageError(f"pnas: --initial must be at least 1, got {initial}")
        if surrogate not in KINDS:
            raise UsageError(f"pnas: unknown surrogate {surrogate!r}; known: {', '.join(KINDS)}")
        rounds = min(DEFAULT_ROUNDS, beam) if rounds is None else rounds
        if not 1 <= rounds <= beam:
            raise UsageError(f"pnas: --rounds must be in 1..{beam} (the beam), got {rounds}")
        self.beam, self.levels, self.rounds = beam, levels, rounds
        self.surrogate = SurrogateEnsemble(
            surrogate, self.progression.vocabulary_size, self.progression.width,
            members=members, steps=surrogate_steps, seed=seed,
        )
        self._random = random.Random(seed)
        first = self.progression.first_level()
        self._random.shuffle(first)
        self._level = 1
        self._queue: list[Arch] = first[:initial] if initial is not None else first
        self._in_flight: list[Arch] = []
        # this level's cells: evaluated ones with their score (None: failed), and
        # children already known from an earlier level (they count, unevaluated)
        self._members: dict[Arch, float | None] = {}
        self._seen: dict[Arch, float | None] = {}  # every result, in the order it came
        self._predictions: dict[Arch, tuple[float, float]] = {}  # this level's asked cells
        self._candidates: list[Arch] = []  # this level's children not yet asked
        self._records: list[dict[str, Any]] = []
        self._done = False

    # -- ask / tell ---------------------------------------------------------------------

    def value_of(self, metrics: dict[str, Any]) -> float:
        """The score, or with objectives the one that training gives (maximised): what
        the surrogate learns to predict."""
        if self.objectives is None:
            return metrics["score"]
        quality = self.objectives.qualities[0]
        return metrics[quality.name] if quality.maximize else -metrics[quality.name]

    def _best(self, archs: Sequence[Arch], accuracies: Sequence[float], count: int
              ) -> list[int]:
        """The indices of the ``count`` best of ``archs``: the highest accuracy (ties in
        their order), or with objectives the first in Pareto order of accuracy and the
        exact cost measures."""
        if self.objectives is None:
            return sorted(range(len(archs)), key=lambda index: -accuracies[index])[:count]
        vectors = [(accuracy, *(-self.costs.measure_one(arch, cost.name)
                                for cost in self.objectives.costs))
                   for arch, accuracy in zip(archs, accuracies)]
        return pareto_order(vectors)[:count]

    def ask(self, count: int) -> list[Arch]:
        asked, self._queue = self._queue[:count], self._queue[count:]
        self._in_flight += asked
        return asked

    def tell(self, arch: Arch, score: float | None) -> None:
        arch = self.progression.key(tuple(arch))
        self._in_flight.remove(arch)
        self._members[arch] = score
        self._seen[arch] = score
        if not self._queue and not self._in_flight:
            self._finish_level()

    def finished(self) -> bool:
        return self._done

    def _finish_level(self) -> None:
        """After a batch: queue the level's next batch, or record the level, fit the
        surrogate and queue the first batch of the next level's children."""
        evaluated = len(self._predictions)
        if self._candidates and evaluated < self.beam:
            self._queue_best_candidates(self.beam - evaluated)
            return
        if self._predictions:
            self._records.append(self._level_record())
        if self._level == self.levels:
            self._done = True
            return
        scored = [arch for arch, score in self._members.items() if score is not None]
        parents = [scored[index] for index in
                   self._best(scored, [self._members[arch] for arch in scored], self.beam)]
        children = list(dict.fromkeys(
            self.progression.key(child)
            for parent in parents for child in self.progression.children(parent, self._level)
        ))
        self._level += 1
        self._members = {child: self._seen[child] for child in children if child in self._seen}
        self._predictions = {}
        self._candidates = [child for child in children if child not in self._seen]
        if not parents or not self._candidates:
            self._done = True  # every evaluation failed, or no new child
            return
        self._queue_best_candidates(self.beam)

    def _queue_best_candidates(self, left: int) -> None:
        """Refit the surrogate on every result; queue the next ``ceil(beam / rounds)``
        (at most ``left``) candidates it ranks highest."""
        scored = {arch: score for arch, score in self._seen.items() if score is not None}
        self.surrogate.fit([self.progression.tokens(arch) for arch in scored],
                           list(scored.values()), seed=len(self._seen))
        candidates = self._candidates
        means, spreads = self.surrogate.predict([self.progression.tokens(c) for c in candidates])
        count = min(left, math.ceil(self.beam / self.rounds))
        best = self._best(candidates, means, count)
        self._queue = [candidates[index] for index in best]
        self._predictions.update(
            (candidates[index], (float(means[index]), float(spreads[index]))) for index in best
        )
        chosen = set(best)
        self._candidates = [c for index, c in enumerate(candidates) if index not in chosen]

    def _level_record(self) -> dict[str, Any]:
        cells = [
            {"arch": self.space.to_string(arch), "predicted": predicted, "spread": spread,
             "observed": self._members.get(arch)}
            for arch, (predicted, spread) in self._predictions.items()
        ]
        observed = [cell for cell in cells if cell["observed"] is not None]
        return {
            "level": self._level,
            "evaluated": len(observed),
            "spearman": spearman([c["predicted"] for c in observed],
                                 [c["observed"] for c in observed]),
            "cells": cells,
        }

    def rank_correlations(self) -> list[dict[str, Any]]:
        """One record per level after the first, in order: ``level``, ``evaluated``
        (cells with a result), ``spearman`` (between predicted and observed accuracy of
        those cells; ``None`` for fewer than two or constant values) and ``cells`` (each
        ``arch`` string, ``predicted`` mean, ``spread``, ``observed`` score or ``None``)."""
        return [dict(record) for record in self._records]

    @property
    def level(self) -> int:
        """The level being evaluated (1-based)."""
        return self._level

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        def arch_list(archs: Sequence[Arch]) -> list[list[int]]:
            return [list(arch) for arch in archs]

        return {
            "random": self._random.getstate(),
            "level": self._level,
            "queue": arch_list(self._queue),
            "in_flight": arch_list(self._in_flight),
            "members": [[list(arch), score] for arch, score in self._members.items()],
            "seen": [[list(arch), score] for arch, score in self._seen.items()],
            "predictions": [[list(arch), list(value)] for arch, value in self._predictions.items()],
            "candidates": arch_list(self._candidates),
            "records": self._records,
            "done": self._done,
            "surrogate": self.surrogate.state_dict() if self.surrogate.fitted else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_random_state(self._random, state["random"])
        self._level = state["level"]
        self._queue = [tuple(arch) for arch in state["queue"]]
        self._in_flight = [tuple(arch) for arch in state["in_flight"]]
        self._members = {tuple(arch): score for arch, score in state["members"]}
        self._seen = {tuple(arch): score for arch, score in state["seen"]}
        self._predictions = {tuple(arch): tuple(value) for arch, value in state["predictions"]}
        self._candidates = [tuple(arch) for arch in state["candidates"]]
        self._records = list(state["records"])
        self._done = state["done"]
        if state["surrogate"] is not None:
            self.surrogate.load_state_dict(state["surrogate"])


def spearman(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Spearman's rank correlation; ``None`` when it is undefined (under two values, or
    one side constant)."""
    if len(first) < 2 or len(set(first)) < 2 or len(set(second)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(first, second)[0])


# -- the run's rank-correlation record ---------------------------------------------------

def write_rank_correlation(run_path: Path | str, records: Sequence[dict[str, Any]]
                           ) -> list[Path]:
    """Write ``rank_correlation.json`` and ``rank_correlation.png`` into a run directory.

    The plot shows Spearman's rho per level (left) and predicted against observed
    accuracy of every newly evaluated cell, one colour per level (right), as the paper's
    figure 4. Returns the two paths.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_path = Path(run_path)
    json_path, plot_path = run_path / RANK_CORRELATION_JSON, run_path / RANK_CORRELATION_PLOT
    json_path.write_text(json.dumps(list(records), indent=2) + "\n")
    figure = Figure(figsize=(10, 4))
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    by_level, scatter = figure.subplots(1, 2)
    levels = [record["level"] for record in records]
    rhos = [math.nan if record["spearman"] is None else record["spearman"] for record in records]
    by_level.plot(levels, rhos, "o-")
    by_level.set_xlabel("level (blocks)")
    by_level.set_ylabel("Spearman rho, predicted vs observed")
    by_level.set_ylim(-1.05, 1.05)
    by_level.axhline(0.0, color="0.7", linewidth=0.8)
    if levels:
        by_level.set_xticks(levels)
    for record in records:
        cells = [cell for cell in record["cells"] if cell["observed"] is not None]
        scatter.plot([cell["predicted"] for cell in cells], [cell["observed"] for cell in cells],
                     ".", label=f"level {record['level']}")
    scatter.set_xlabel("predicted accuracy")
    scatter.set_ylabel("observed accuracy")
    if records:
        scatter.legend(fontsize="small")
    else:
        scatter.text(0.5, 0.5, "no level after the first yet", ha="center",
                     transform=scatter.transAxes)
    figure.suptitle("surrogate rank correlation on the newly evaluated cells")
    FigureCanvasAgg(figure).print_png(str(plot_path))
    return [json_path, plot_path]


# -- pynas search pnas -------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pynas search pnas``; its space defaults to ``pnas``."""
    parser.set_defaults(space="pnas")
    parser.add_argument("--beam", type=int,
                        help="K, cells expanded and children evaluated per level (default: "
                             f"{DEFAULT_BEAM}, or wider when the whole first level fits in "
                             "--budget: the rest split over the later levels; narrower when "
                             "--budget is too small, said on stderr)")
    parser.add_argument("--levels", type=int,
                        help="levels to search: blocks per cell in the pnas space, nodes in "
                             "nb201, layers in mlp, motif nodes in hierarchical (default: "
                             "every level of the space: 5 blocks, 3 nb201 nodes, 4 mlp layers, "
                             "22 hierarchical motif nodes; fewer when --budget is too small, "
                             "said on stderr)")
    parser.add_argument("--initial", type=int,
                        help="first-level cells to evaluate, a random sample (default: all, "
                             "or what --budget leaves after the later levels)")
    parser.add_argument("--surrogate", choices=KINDS, default="mlp",
                        help="the accuracy predictor, an ensemble of 5 (default: %(default)s, "
                             "best measured; the paper's is lstm)")
    parser.add_argument("--rounds", type=int,
                        help="batches per level, the surrogate refit between them (default: "
                             f"{DEFAULT_ROUNDS}, or the beam when it is smaller; best "
                             "measured; the paper's is 1). The paper's PNAS: --surrogate "
                             "lstm --rounds 1")


def build(space: SearchSpace, args: argparse.Namespace) -> ProgressiveSearch:
    """The strategy for ``pynas search pnas`` (see :mod:`pynas.search.cli`).

    :func:`fit_budget` splits a ``--budget`` of evaluations over the levels; when it
    shrinks the defaults, one line on stderr says so.
    """
    plan = check_arguments(space, args)
    if plan.note is not None:
        print(f"pynas: {plan.note}", file=sys.stderr)
    return ProgressiveSearch(space, seed=args.seed, beam=plan.beam, levels=plan.levels,
                             initial=plan.initial, surrogate=args.surrogate, rounds=args.rounds,
                             objectives=getattr(args, "_objectives", None),
                             costs=getattr(args, "_costs", None))


def check_objectives(objectives: Objectives | None, has_costs: bool) -> None:
    """Refuse objectives PNAS cannot rank: it predicts one that training gives and takes
    the others exactly, so they must be cost measures that the search can measure."""
    if objectives is None:
        return
    if len(objectives.qualities) != 1:
        raise UsageError(f"pnas: --objectives must hold one metric that training gives (its "
                         f"surrogate predicts it) and cost measures ({', '.join(COST_MEASURES)}),"
                         f" got {objectives}")
    if not has_costs:
        raise UsageError("pnas: the cost objectives need networks to measure, whose input a "
                         "table of this space does not give")


def check_arguments(space: SearchSpace, args: argparse.Namespace) -> Plan:
    """The plan of ``pynas search pnas``; a :class:`UsageError` for options that do not fit
    the space or the budget (the command calls it before creating the run directory)."""
    check_objectives(getattr(args, "_objectives", None),
                     getattr(args, "_network", None) is not None)
    return fit_budget(progression_for(space), args.budget, args.levels, args.beam,
                      args.initial, smallest_beam=args.rounds or 1)


@dataclass(frozen=True)
class Plan:
    """How a progressive search spends its budget."""

    levels: int
    beam: int
    #: first-level cells to evaluate; ``None``: all of them
    initial: int | None
    #: what was shrunk to fit the budget, in one line; ``None`` when nothing was
    note: str | None = None


def fit_budget(progression: Progression, budget: int | None, levels: int | None = None,
               beam: int | None = None, initial: int | None = None,
               smallest_beam: int = 1) -> Plan:
    """Split ``budget`` evaluations over the levels; options given as ``None`` are chosen.

    ``levels`` levels of beam ``K`` evaluate ``initial + (levels - 1) * K`` cells. Without
    ``initial``, the first level gets what the later levels leave, and at least
    ``min(K, first-level cells)`` of it: fewer would leave the beam without ``K``
    parents and the surrogate with next to nothing to rank the children by.

    Where the defaults (every level of the progression, beam :data:`DEFAULT_BEAM`) need
    more than ``budget``, the levels shrink first, keeping the beam (a shallower search
    of the same quality), then, at two levels, the beam, down to ``smallest_beam`` (the
    rounds of a level evaluate a cell each at least). A budget too small even for that
    searches the first level alone. A budget larger than the defaults need, with the
    whole first level in it (nb201's has 5 cells), widens the beam instead, so that the
    later levels use it. Options given are never changed: where they leave no
    first-level cell, this raises.

    Raises
    ------
    UsageError
        When the options given do not fit in ``budget``.
    """
    if budget is None or budget < 1 or (levels is not None
                                        and not 1 <= levels <= progression.levels):
        # nothing to fit, or options ProgressiveSearch and Budget refuse in their words
        return Plan(progression.levels if levels is None else levels,
                    DEFAULT_BEAM if beam is None else beam, initial)
    first_level = len(progression.first_level())
    level_choices = [levels] if levels is not None else list(range(progression.levels, 1, -1))
    beam_choices = [beam] if beam is not None else list(
        range(DEFAULT_BEAM, min(max(smallest_beam, 1), DEFAULT_BEAM) - 1, -1))
    # (levels, beam), best first: fewer levels, then a smaller beam
    plans = [(depth, beam_choices[0]) for depth in level_choices]
    plans += [(level_choices[-1], width) for width in beam_choices[1:]]

    def first_fitting_plan(lenient: bool) -> tuple[int, int] | None:
        for depth, width in plans:
            least = initial if initial is not None else 1 if lenient else min(width, first_level)
            if least + (depth - 1) * width <= budget:
                return depth, width
        return None

    chosen = first_fitting_plan(lenient=False)
    if chosen is None and (levels is not None or beam is not None):
        chosen = first_fitting_plan(lenient=True)  # the options given, on a smaller first level
    if chosen is None and levels is None and beam is None and (initial or 1) <= budget:
        chosen = (1, DEFAULT_BEAM)  # the first level alone
    if chosen is None:
        # the smallest search the options given allow
        depth, width = (1, DEFAULT_BEAM) if levels is None and beam is None else plans[-1]
        need = (initial or 1) + (depth - 1) * width
        given = ", ".join(f"--{name} {value}" for name, value in
                          (("levels", levels), ("beam", beam), ("initial", initial))
                          if value is not None)
        later = f"{depth - 1} later level(s) of beam {width}"
        if initial is None:
            problem = f"leaves no first-level cell after {later}"
        else:
            problem = f"is too small for --initial {initial}" + (f" and {later}" * (depth > 1))
        raise UsageError(f"pnas: --budget {budget} {problem}: give a budget of at least "
                         f"{need}, or change {given}")
    depth, width = chosen
    if (beam is None and initial is None and depth > 1
            and first_level + (depth - 1) * DEFAULT_BEAM < budget):
        width = math.ceil((budget - first_level) / (depth - 1))
    first = initial if initial is not None else budget - (depth - 1) * width
    if not ((levels is None and depth < progression.levels)
            or (beam is None and width < DEFAULT_BEAM)):
        return Plan(depth, width, first)
    wanted_levels = progression.levels if levels is None else levels
    wanted_beam = DEFAULT_BEAM if beam is None else beam
    needed = ((initial if initial is not None else min(wanted_beam, first_level))
              + (wanted_levels - 1) * wanted_beam)
    searched = (f"{depth} levels of beam {width} from {first} first-level cell(s)"
                if depth > 1 else f"the first level alone ({first} cell(s))")
    note = (f"--budget {budget} is too small for {wanted_levels} levels of beam "
            f"{wanted_beam} (they need {needed} evaluations): searching {searched}")
    return Plan(depth, width, first, note)


def after_search(run_dir: RunDirectory) -> list[dict[str, Any]]:
    """Write the per-level rank correlations of a finished search; returns them."""
    # the last checkpoint holds the strategy as the search left it
    records = load_checkpoint(run_dir.checkpoint_path)["strategy"]["records"]
    write_rank_correlation(run_dir.path, records)
    return records


def run(args: argparse.Namespace, run_dir: RunDirectory) -> int:
    """Search through the shared loop, then write the per-level rank correlations."""
    result = search(args, run_dir, progress=sys.stderr.isatty())
    records = after_search(run_dir)
    print(summary_line(result, run_dir.path))
    for record in records:
        rho = "undefined" if record["spearman"] is None else f"{record['spearman']:.3f}"
        print(f"level {record['level']}: {record['evaluated']} cells evaluated, "
              f"Spearman(predicted, observed) {rho}")
    if result["best"] is None:
        return 1
    print(retrain_line(run_dir.path))
    return 0


# -- NAS-Bench-201 -----------------------------------------------------------------------

def run_pnas_on_table(table_path: Path | str, seed: int, budget: int = 100,
                      metric: str = "cifar10_valid", beam: int | None = None,
                      surrogate: str = "mlp", rounds: int = 4,
                      out: Path | str | None = None) -> str:
    """Run PNAS on a NAS-Bench-201 table; return the best architecture string found.

    The defaults (those of ``pynas search pnas``) were chosen on ``nb201.csv`` at 100
    evaluations, reward ``cifar10_valid``, seeds 0..9: mean CIFAR-10 test of the best
    found 94.30 ± 0.10 with the MLP and 4 rounds per level, 94.32 ± 0.09 with 2 rounds,
    94.10 ± 0.36 with the MLP in one round (the paper's schedule), 93.93 ± 0.52 with the
    LSTM in one round (the paper's PNAS), 94.19 ± 0.21 with the LSTM in 4 rounds; fresh
    seeds are in ``bench/RESULTS.md``. With about 50 cells seen, the MLP ranks better
    than the LSTM (as on NAS-Bench-301 cells, ``bench/surrogate.py``).

    Parameters
    ----------
    table_path
        The table (CSV with ``arch`` and ``metric`` columns), e.g. ``nb201.csv``.
    seed
        The search's seed.
    budget
        Evaluations (table look-ups).
    metric
        The column searched on (the reward).
    beam
        ``K``; default: the budget left after the 5 first-level cells, split over the
        two later levels.
    surrogate
        ``"lstm"`` or ``"mlp"``.
    out
        A run directory to write (trials, result, rank correlations); default: a
        temporary one, removed afterwards.
    """
    space = NB201Space()
    progression = progression_for(space)
    first = len(progression.first_level())
    if beam is None:
        beam = max(1, math.ceil((budget - first) / (progression.levels - 1)))
    strategy = ProgressiveSearch(space, seed=seed, beam=beam, surrogate=surrogate, rounds=rounds)
    evaluator = TableEvaluator(table_path, metric)
    with tempfile.TemporaryDirectory(prefix="pynas-pnas-") as scratch:
        run_dir = RunDirectory.prepare(out if out is not None else scratch,
                                       durable=out is not None)
        result = run_search(strategy, evaluator, run_dir, Budget(evaluations=budget))
        write_rank_correlation(run_dir.path, strategy.rank_correlations())
    return result["best"]["arch"]
