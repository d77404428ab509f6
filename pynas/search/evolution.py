"""Regularized evolution (aging evolution): tournaments, one mutation, the oldest dies.

Real et al. 2019, "Regularized Evolution for Image Classifier Architecture Search",
Algorithm 1.

A population of ``population_size`` architectures starts at random. Each further
candidate comes from a tournament: ``sample_size`` members are drawn at random, the best
of them is the parent, and the child is the parent with ONE decision changed to a
different value. A child that was evaluated joins the population and the oldest member
dies, whatever its score (the "regularization": a good architecture lives on only
through good descendants); a child whose evaluation failed is dropped.

With several objectives (``--objectives``) the population is Pareto-ranked, as in
NSGA-II (Deb et al. 2002) run steady-state: a tournament's winner is the contestant of
the best non-dominated front, the less crowded among equals, and when a child joins a
full population the member that leaves is the most crowded of the last front (the oldest
among equals) rather than the oldest. The tournament is then NSGA-II's binary one (S=2)
unless ``sample_size`` is given (measured on NAS-Bench-201: ``bench/RESULTS.md``, "Pareto
fronts").

Unlike the paper's, no architecture is proposed twice in a run while one of
:data:`MAX_MUTATION_TRIES` draws finds a new one: a repeat costs an evaluation and adds
nothing (measured on NAS-Bench-201, tuning seeds 0-59: the same mean with one objective,
94.17 against 94.18; under a multiply-add limit at the median, 0.14 closer to the best
feasible cell; with two objectives, hypervolume 1.080 against 1.067 times random
search's).

A space may offer its own mutation, a method ``mutate(arch, rng) -> arch`` (the
hierarchical space's is that of Liu et al. 2018, section 3.1); evolution then mutates
with it, passing its own random generator, whose state the checkpoint keeps.
"""

from __future__ import annotations

import argparse
import functools
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from pynas.errors import UsageError
from pynas.objectives import Objectives, crowding_distances, non_dominated_fronts, pareto_order
from pynas.search.base import Strategy
from pynas.search.random_search import random_arch, set_random_state
from pynas.spaces.base import Arch, SearchSpace

#: Defaults measured on NAS-Bench-201 at 100 evaluations (reward ``cifar10_valid``; mean
#: CIFAR-10 test of the best found over 300 seeds not used to choose them: 94.21 against
#: 94.13 for S=3 and for P=20, S=5). A small population turns over several times
#: within such a budget, and S=P/2 selects hard without always picking the same parent.
DEFAULT_POPULATION_SIZE = 10
DEFAULT_SAMPLE_SIZE = 5
#: the tournament with several objectives: NSGA-II's binary tournament. On NAS-Bench-201
#: (cifar10_valid and multiply-adds, 100 evaluations, tuning seeds 0-59) the hypervolume
#: against random search's was 1.043 with S=5, 1.067 with S=2, 1.080 with S=2 and no
#: repeats
DEFAULT_MULTI_OBJECTIVE_SAMPLE_SIZE = 2
#: draws tried for a candidate not proposed before in the run
MAX_MUTATION_TRIES = 50


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
        Members drawn for each tournament (the paper's S), at most ``population_size``;
        default :data:`DEFAULT_SAMPLE_SIZE`, with objectives
        :data:`DEFAULT_MULTI_OBJECTIVE_SAMPLE_SIZE`.
    objectives
        Several objectives: Pareto-ranked selection (see the module docstring).
    """

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        population_size: int = DEFAULT_POPULATION_SIZE,
        sample_size: int | None = None,
        objectives: Objectives | None = None,
    ) -> None:
        super().__init__(space, seed, objectives)
        if sample_size is None:
            sample_size = (DEFAULT_SAMPLE_SIZE if objectives is None
                           else DEFAULT_MULTI_OBJECTIVE_SAMPLE_SIZE)
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(
                f"sample_size must be in 1..population_size={population_size}, got {sample_size}"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        self._random = random.Random(seed)
        # oldest first; with several objectives each value is their vector
        self._population: deque[tuple[Arch, Any]] = deque()
        self._initial_in_flight: list[Arch] = []  # random members asked, not yet told
        self._proposed: set[Arch] = set()  # every architecture asked
        self._mutable_decisions = [i for i, n in enumerate(space.num_choices) if n > 1]

    def ask(self, count: int) -> list[Arch]:
        candidates = []
        for _ in range(count):
            if len(self._population) + len(self._initial_in_flight) < self.population_size:
                arch = self._new(lambda: random_arch(self.space, self._random))
                self._initial_in_flight.append(arch)
            elif self._population:
                arch = self._new(functools.partial(self._mutate, self._tournament()))
            else:
                break  # the whole initial population is being evaluated: wait for it
            candidates.append(arch)
        return candidates

    def _new(self, draw: Callable[[], Arch]) -> Arch:
        """``draw()``, drawn again (up to :data:`MAX_MUTATION_TRIES` times in all) while
        it gives an architecture already proposed."""
        arch = draw()
        for _ in range(MAX_MUTATION_TRIES - 1):
            if arch not in self._proposed:
                break
            arch = draw()
        self._proposed.add(arch)
        return arch

    def _tournament(self) -> Arch:
        """The best of ``sample_size`` members drawn without replacement: the highest
        score, or the best Pareto rank in the population."""
        if self.objectives is None:
            contestants = self._random.sample(
                list(self._population), min(self.sample_size, len(self._population))
            )
            return max(contestants, key=lambda member: member[1])[0]
        indices = self._random.sample(range(len(self._population)),
                                      min(self.sample_size, len(self._population)))
        rank = {index: position for position, index in
                enumerate(pareto_order([value for _, value in self._population]))}
        return self._population[min(indices, key=rank.__getitem__)][0]

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
            if self.objectives is None:
                self._population.popleft()  # the oldest dies
            else:
                del self._population[self._worst_ranked()]

    def _worst_ranked(self) -> int:
        """The index of the most crowded member of the last front, the oldest among
        equals."""
        values = [value for _, value in self._population]
        last = non_dominated_fronts(values)[-1]
        crowding = crowding_distances(values, last)
        return min(last, key=lambda index: (crowding[index], index))

    def state_dict(self) -> dict[str, Any]:
        return {
            "random": self._random.getstate(),
            "population": [(list(arch), list(value) if isinstance(value, tuple) else value)
                           for arch, value in self._population],
            "initial_in_flight": [list(arch) for arch in self._initial_in_flight],
            "proposed": sorted(list(arch) for arch in self._proposed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_random_state(self._random, state["random"])
        self._population = deque(
            (tuple(arch), tuple(value) if isinstance(value, list) else value)
            for arch, value in state["population"])
        self._initial_in_flight = [tuple(arch) for arch in state["initial_in_flight"]]
        # absent from the checkpoints of runs started before objectives existed
        self._proposed = {tuple(arch) for arch in state.get("proposed", [])}


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
        help=f"tournament size S (default: {DEFAULT_SAMPLE_SIZE}, best measured on "
        f"NAS-Bench-201; Real et al.'s CIFAR-10 search: 25; with --objectives "
        f"{DEFAULT_MULTI_OBJECTIVE_SAMPLE_SIZE}, NSGA-II's binary tournament, also best "
        "measured)",
    )


def check_arguments(space: SearchSpace, args: argparse.Namespace) -> None:
    """Fill in ``--sample-size`` (its default depends on ``--objectives``) and refuse
    sizes that do not fit, before the run directory records them."""
    objectives = getattr(args, "_objectives", None)
    if args.sample_size is None:
        args.sample_size = (DEFAULT_SAMPLE_SIZE if objectives is None
                            else DEFAULT_MULTI_OBJECTIVE_SAMPLE_SIZE)
    if args.population < 1:
        raise UsageError(f"--population must be at least 1, got {args.population}")
    if not 1 <= args.sample_size <= args.population:
        raise UsageError(
            f"--sample-size must be between 1 and --population ({args.population}), "
            f"got {args.sample_size}"
        )


def build(space: SearchSpace, args: argparse.Namespace) -> RegularizedEvolution:
    """The strategy for ``pynas search evolution`` (see :mod:`pynas.search.cli`)."""
    check_arguments(space, args)
    return RegularizedEvolution(
        space, seed=args.seed, population_size=args.population, sample_size=args.sample_size,
        objectives=getattr(args, "_objectives", None),
    )
