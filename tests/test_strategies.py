"""Random search and regularized evolution: the ask/tell contract, seeding, state."""
from __future__ import annotations

import itertools
import math
import statistics

import pytest

from pynas.search.evolution import RegularizedEvolution
from pynas.search.random_search import RandomSearch
from pynas.spaces.base import Arch, SearchSpace


class GridSpace(SearchSpace):
    """A space of ``num_choices`` decisions that cannot build networks (not needed here)."""

    name = "grid"

    def __init__(self, num_choices: tuple[int, ...]) -> None:
        self._num_choices = num_choices

    @property
    def num_choices(self) -> tuple[int, ...]:
        return self._num_choices

    def decision_names(self) -> list[str]:
        return [f"d{i}" for i in range(len(self._num_choices))]

    def to_string(self, arch: Arch) -> str:
        return "-".join(map(str, arch))

    def from_string(self, text: str) -> Arch:
        return tuple(int(part) for part in text.split("-"))

    def to_genotype(self, arch: Arch) -> dict:
        return {"arch": list(arch)}

    def from_genotype(self, genotype: dict) -> Arch:
        return tuple(genotype["arch"])

    def build(self, arch, input_shape, num_outputs):
        raise NotImplementedError


SPACE = GridSpace((5,) * 6)  # the shape of NAS-Bench-201: 6 edges, 5 operations


def score(arch: Arch) -> float:
    """A smooth objective with one optimum, (4, 4, 4, 4, 4, 4), and no ties."""
    return sum(arch) + int("".join(map(str, arch)), 5) * 1e-6


def run_serial(strategy, evaluations: int, fail: set[Arch] = frozenset()) -> list[Arch]:
    """Ask one, tell one, ``evaluations`` times; archs in ``fail`` are told ``None``."""
    asked = []
    for _ in range(evaluations):
        (arch,) = strategy.ask(1)
        asked.append(arch)
        strategy.tell(arch, None if arch in fail else score(arch))
    return asked


def make_random(seed: int) -> RandomSearch:
    return RandomSearch(SPACE, seed)


def make_evolution(seed: int) -> RegularizedEvolution:
    return RegularizedEvolution(SPACE, seed, population_size=6, sample_size=3)


@pytest.mark.parametrize("make", [make_random, make_evolution])
def test_proposals_are_in_the_space_and_seeded(make):
    first = run_serial(make(3), 40)
    assert all(SPACE.validate(arch) == arch for arch in first)
    assert run_serial(make(3), 40) == first
    assert run_serial(make(4), 40) != first


@pytest.mark.parametrize("make", [make_random, make_evolution])
def test_state_dict_continues_exactly(make):
    reference = make(7)
    run_serial(reference, 15)
    expected = run_serial(reference, 15)

    interrupted = make(7)
    run_serial(interrupted, 15)
    restored = make(99)  # a different seed: everything must come from the state
    restored.load_state_dict(interrupted.state_dict())
    assert run_serial(restored, 15) == expected


@pytest.mark.parametrize("make", [make_random, make_evolution])
def test_strategy_state_is_independent_of_global_random(make):
    import random

    random.seed(0)
    first = run_serial(make(1), 20)
    random.seed(12345)
    assert run_serial(make(1), 20) == first


def test_random_search_never_repeats_until_the_space_is_exhausted():
    space = GridSpace((2, 3, 2))  # 12 architectures
    strategy = RandomSearch(space, seed=0)
    first_pass = strategy.ask(12)
    assert sorted(first_pass) == sorted(itertools.product(range(2), range(3), range(2)))
    second_pass = strategy.ask(5) + strategy.ask(7)
    assert sorted(second_pass) == sorted(first_pass)  # a new pass, again without repeats
    assert second_pass != first_pass


def test_random_search_state_past_half_the_space():
    # past half the space, draws come from the list of what is left: a restored state
    # must rebuild that list identically
    space = GridSpace((2, 3, 2))
    reference = RandomSearch(space, seed=1)
    reference.ask(8)
    restored = RandomSearch(space, seed=2)
    restored.load_state_dict(reference.state_dict())
    assert restored.ask(4) == reference.ask(4)


def test_random_search_without_repeats_on_a_large_space():
    asked = RandomSearch(SPACE, seed=5).ask(math.prod(SPACE.num_choices) - 1)
    assert len(set(asked)) == len(asked)


def test_evolution_starts_with_a_random_population_then_mutates_one_decision():
    strategy = RegularizedEvolution(SPACE, seed=0, population_size=8, sample_size=4)
    initial = run_serial(strategy, 8)
    population = {tuple(arch) for arch, _ in strategy.state_dict()["population"]}
    assert population == set(initial)
    for _ in range(50):
        parents = {tuple(a) for a, _ in strategy.state_dict()["population"]}
        (child,) = strategy.ask(1)
        # exactly one decision differs from some member (its parent)
        assert any(sum(c != p for c, p in zip(child, parent)) == 1 for parent in parents)
        strategy.tell(child, score(child))


def test_evolution_oldest_dies_and_failed_children_are_dropped():
    strategy = RegularizedEvolution(SPACE, seed=1, population_size=4, sample_size=2)
    initial = run_serial(strategy, 4)
    (child,) = strategy.ask(1)
    strategy.tell(child, None)  # failed: nothing changes
    assert [tuple(a) for a, _ in strategy.state_dict()["population"]] == initial
    (child,) = strategy.ask(1)
    strategy.tell(child, 1.0)  # joins, the oldest (not the worst) dies
    members = [tuple(a) for a, _ in strategy.state_dict()["population"]]
    assert members == initial[1:] + [child]


def test_evolution_parent_is_the_best_of_the_tournament():
    # with the tournament as large as the population, the parent is always the best
    strategy = RegularizedEvolution(SPACE, seed=2, population_size=5, sample_size=5)
    run_serial(strategy, 5)
    for _ in range(20):
        best = max(strategy.state_dict()["population"], key=lambda member: member[1])[0]
        (child,) = strategy.ask(1)
        assert sum(c != b for c, b in zip(child, best)) == 1
        strategy.tell(child, score(child))


def test_evolution_refills_the_population_when_initial_members_fail():
    strategy = RegularizedEvolution(SPACE, seed=3, population_size=4, sample_size=2)
    failing = set(strategy.ask(4))
    for arch in failing:
        strategy.tell(arch, None)
    refill = strategy.ask(4)  # still random: the population is empty
    assert len(refill) == 4


def test_evolution_waits_while_its_whole_initial_population_is_in_flight():
    strategy = RegularizedEvolution(SPACE, seed=4, population_size=3, sample_size=2)
    initial = strategy.ask(5)
    assert len(initial) == 3  # nothing to mutate yet
    assert strategy.ask(2) == []
    strategy.tell(initial[0], score(initial[0]))
    assert len(strategy.ask(2)) == 2  # mutations of the one member


def test_evolution_rejects_bad_sizes():
    with pytest.raises(ValueError, match="population_size"):
        RegularizedEvolution(SPACE, population_size=0)
    with pytest.raises(ValueError, match="sample_size"):
        RegularizedEvolution(SPACE, population_size=4, sample_size=5)


def test_evolution_beats_random_search_on_a_smooth_objective():
    def mean_best(make) -> float:
        return statistics.mean(max(map(score, run_serial(make(seed), 60))) for seed in range(10))

    assert mean_best(make_evolution) > mean_best(make_random)
