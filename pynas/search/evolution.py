"""Regularized evolution (aging evolution): tournaments, one mutation, the oldest dies.

Real et al. 2019, "Regularized Evolution for Image Classifier Architecture Search",
Algorithm 1.

A population of ``population_size`` architectures starts at random. Each further
candidate comes from a tournament: ``sample_size`` members are drawn at random, the best
of them is the parent, and the child is the parent with ONE decision changed to a
different value. A child that was evaluated joins the population and the oldest member
dies, whatever its score (the "regularization": good architectures must stay good when
re-discovered); a child whose evaluation failed is dropped.

A space may offer its own mutation, a method ``mutate(arch, rng) -> arch`` (the
hierarchical space's is that of Liu et al. 2018, section 3.1); evolution then mutates
with it, passing its own random generator, whose state the checkpoint keeps.
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from typing import Any

from pynas.errors import UsageError
from pynas.search.base import Strategy
from pynas.search.random_search import random_arch, set_random_state
from pynas.spaces.base import Arch, SearchSpace

#: Defaults measured on NAS-Bench-201 at 100 evaluations (reward ``cifar10_valid``; mean
#: CIFAR-10 test of the best found over 300 seeds not used to choose them: 94.21 against
#: 94.13 for S=3 and for P=20, S=5). A small population turns over several times
#: within such a budget, and S=P/2 selects hard without always picking the same parent.
DEFAULT_POPULATION_SIZE = 10
DEFAULT_SAMPLE_SIZE = 5


class RegularizedEvolution(Strategy):
    """Aging evolution with tournament selection and single-decision mutations.

    Parameters
    ----------
    space
        The space to search.
    seed
        Seeds the strategy's own :class:`random.Random`; equal seeds give equal runs.
    population_size
        Members kept alive (the paper's P).
    sample_size
        Members drawn for each tournament (the paper's S), at most ``population_size``.
    """

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        population_size: int = DEFAULT_POPULATION_SIZE,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
    ) -> None:
        super().__init__(space, seed)
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(
                f"sample_size must be in 1..population_size={population_size}, got {sample_size}"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        self._random = random.Random(seed)
        self._population: deque[tuple[Arch, float]] = deque()  # oldest first
        self._initial_in_flight: list[Arch] = []  # random members asked, not yet told
        self._mutable_decisions = [i for i, n in enumerate(space.num_choices) if n > 1]

    def ask(self, count: int) -> list[Arch]:
        candidates = []
        for _ in range(count):
            if len(self._population) + len(self._initial_in_flight) < self.population_size:
                arch = random_arch(self.space, self._random)
                self._initial_in_flight.append(arch)
            elif self._population:
                arch = self._mutate(self._tournament())
            else:
                break  # the whole initial population is being evaluated: wait for it
            candidates.append(arch)
        return candidates

    def _tournament(self) -> Arch:
        """The best of ``sample_size`` members drawn without replacement."""
        contestants = self._random.sample(
            list(self._population), min(self.sample_size, len(self._population))
        )
        return max(contestants, key=lambda member: member[1])[0]

    def _mutate(self, parent: Arch) -> Arch:
        """``parent`` mutated by the space's own ``mutate`` when it has one; otherwise
        with one decision changed to a different value, both uniform."""
        space_mutate = getattr(self.space, "mutate", None)
        if space_mutate is not None:
            return self.space.validate(space_mutate(parent, self._random))
        if not self._mutable_decisions:
            return parent  # a space of a single architecture
        decision = self._random.choice(self._mutable_decisions)
        # draw among the other values: skip over the parent's own
        value = self._random.randrange(self.space.num_choices[decision] - 1)
        if value >= parent[decision]:
            value += 1
        return parent[:decision] + (value,) + parent[decision + 1 :]

    def tell(self, arch: Arch, score: float | None) -> None:
        if arch in self._initial_in_flight:
            self._initial_in_flight.remove(arch)
        if score is None:
            return
        self._population.append((arch, score))
        if len(self._population) > self.population_size:
            self._population.popleft()  # the oldest dies

    def state_dict(self) -> dict[str, Any]:
        return {
            "random": self._random.getstate(),
            "population": [(list(arch), score) for arch, score in self._population],
            "initial_in_flight": [list(arch) for arch in self._initial_in_flight],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_random_state(self._random, state["random"])
        self._population = deque((tuple(arch), score) for arch, score in state["population"])
        self._initial_in_flight = [tuple(arch) for arch in state["initial_in_flight"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pynas search evolution``."""
    parser.add_argument(
        "--population",
        type=int,
        default=DEFAULT_POPULATION_SIZE,
        help="population size P (default: %(default)s, best measured on NAS-Bench-201; "
        "Real et al.'s CIFAR-10 search: 100)",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        help="tournament size S (default: %(default)s, best measured on NAS-Bench-201; "
        "Real et al.'s CIFAR-10 search: 25)",
    )


def build(space: SearchSpace, args: argparse.Namespace) -> RegularizedEvolution:
    """The strategy for ``pynas search evolution`` (see :mod:`pynas.search.cli`)."""
    if args.population < 1:
        raise UsageError(f"--population must be at least 1, got {args.population}")
    if not 1 <= args.sample_size <= args.population:
        raise UsageError(
            f"--sample-size must be between 1 and --population ({args.population}), "
            f"got {args.sample_size}"
        )
    return RegularizedEvolution(
        space, seed=args.seed, population_size=args.population, sample_size=args.sample_size
    )
