"""Random search: uniform draws from the space, without repeats.

The baseline every NAS paper should beat (Li & Talwalkar, 2019). Within a run no
architecture is proposed twice until every architecture of the space has been; then a
new pass over the space begins.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
from typing import Any

from pynas.objectives import Objectives
from pynas.search.base import Strategy
from pynas.spaces.base import Arch, SearchSpace


class RandomSearch(Strategy):
    """Proposes architectures uniformly at random, never one it has already proposed.

    Parameters
    ----------
    space
        The space to draw from.
    seed
        Seeds the strategy's own :class:`random.Random`; equal seeds give equal runs.
    objectives
        Several objectives: they change nothing in what is drawn; the run reports the
        Pareto front of what it drew.
    """

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0,
                 objectives: Objectives | None = None) -> None:
        super().__init__(space, seed, objectives)
        self._random = random.Random(seed)
        self._proposed: set[Arch] = set()
        self._space_size = math.prod(space.num_choices)
        # the unproposed architectures in enumeration order, listed once half the space
        # has been proposed; derived from _proposed, so a restored state rebuilds it equal
        self._remaining: list[Arch] | None = None

    def ask(self, count: int) -> list[Arch]:
        return [self._draw() for _ in range(count)]

    def _draw(self) -> Arch:
        if len(self._proposed) == self._space_size:
            # the space is exhausted: start the next pass
            self._proposed.clear()
            self._remaining = None
        if len(self._proposed) < self._space_size // 2:
            # rejection is cheap while at least half the space is still unproposed
            while True:
                arch = random_arch(self.space, self._random)
                if arch not in self._proposed:
                    break
        else:
            # few left (no more than already proposed): draw from the list of them
            if self._remaining is None:
                self._remaining = [
                    arch
                    for arch in itertools.product(*map(range, self.space.num_choices))
                    if arch not in self._proposed
                ]
            arch = self._remaining.pop(self._random.randrange(len(self._remaining)))
        self._proposed.add(arch)
        return arch

    def tell(self, arch: Arch, score: float | None) -> None:
        """Random search learns nothing from results."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "random": self._random.getstate(),
            # sorted, so that equal states give equal checkpoints
            "proposed": sorted(self._proposed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_random_state(self._random, state["random"])
        self._proposed = {tuple(arch) for arch in state["proposed"]}
        self._remaining = None


def random_arch(space: SearchSpace, generator: random.Random) -> Arch:
    """One architecture drawn uniformly from ``space``."""
    return tuple(generator.randrange(count) for count in space.num_choices)


def set_random_state(generator: random.Random, state: Any) -> None:
    """Restore ``generator.getstate()`` as read back from a checkpoint (lists or tuples)."""
    version, internal, gauss = state
    generator.setstate((version, tuple(internal), gauss))


def build(space: SearchSpace, args: argparse.Namespace) -> RandomSearch:
    """The strategy for ``pynas search random`` (see :mod:`pynas.search.cli`)."""
    return RandomSearch(space, seed=args.seed, objectives=getattr(args, "_objectives", None))
