"""Several objectives: their names and directions, Pareto ranking and hypervolume.

``--objectives val_acc,latency_ms`` names two or more metrics of a trial: the evaluator's
(``val_acc``, ``val_rmse``, a table's columns such as ``cifar10_valid``) or the cost
measures of :mod:`pynas.costs` (``params``, ``flops``, ``peak_activation_bytes``,
``latency_ms``, ``batch_latency_ms``). Each is maximised or minimised as its name says
(accuracies, R², validation and test columns up; costs, losses, errors, seconds down), or
as an explicit ``NAME:max`` / ``NAME:min`` says; a name that says nothing needs the
explicit direction, and a direction that contradicts the name is refused.

Inside pynas every objective is turned around to be maximised (:meth:`Objectives.vector`
negates the minimised ones), so that one definition of dominance serves all: ``a``
dominates ``b`` when it is at least as good in every objective and better in one.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pynas.errors import UsageError

#: the cost measures a search can record (see :mod:`pynas.costs`); all minimised
COST_MEASURES = ("params", "flops", "peak_activation_bytes", "latency_ms", "batch_latency_ms")
#: the measures that need latency to be measured (``--measure-latency``)
LATENCY_MEASURES = ("latency_ms", "batch_latency_ms")

# parts of a metric's name that say its direction; the minimised ones are read first, so
# that test_rmse is an error before it is a test metric
_MINIMISED_WORDS = ("loss", "rmse", "mse", "mae", "error", "err", "seconds", "latency",
                    "params", "flops", "bytes", "memory", "time")
_MAXIMISED_WORDS = ("acc", "r2", "score", "valid", "test", "auc", "f1", "precision",
                    "recall", "reward")
_DIRECTIONS = {"max": True, "min": False}


def direction_of(name: str) -> bool | None:
    """``True`` (maximised) or ``False`` (minimised) as ``name`` says, ``None`` when its
    words say neither."""
    words = name.lower().replace("-", "_").split("_")
    if name in COST_MEASURES or any(word in _MINIMISED_WORDS for word in words):
        return False
    if any(word in _MAXIMISED_WORDS or word.endswith("acc") for word in words):
        return True
    return None


@dataclass(frozen=True)
class Objective:
    """One metric and whether it is maximised."""

    name: str
    maximize: bool

    @property
    def is_cost(self) -> bool:
        """Whether it is one of the cost measures, known before training."""
        return self.name in COST_MEASURES

    def __str__(self) -> str:
        return f"{self.name}:{'max' if self.maximize else 'min'}"


@dataclass(frozen=True)
class Objectives:
    """The objectives of a search, in the order given."""

    items: tuple[Objective, ...]

    @property
    def names(self) -> list[str]:
        return [objective.name for objective in self.items]

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        return ",".join(map(str, self.items))

    @property
    def costs(self) -> list[Objective]:
        """The objectives that are cost measures (computed before training)."""
        return [objective for objective in self.items if objective.is_cost]

    @property
    def qualities(self) -> list[Objective]:
        """The objectives that only an evaluation gives (accuracies, a table's columns)."""
        return [objective for objective in self.items if not objective.is_cost]

    def vector(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """The metrics' values of the objectives, each turned to be maximised.

        Raises
        ------
        UsageError
            Naming the objectives that ``metrics`` lacks, and the metrics it has.
        """
        missing = [name for name in self.names if name not in metrics]
        if missing:
            raise UsageError(
                f"--objectives: {', '.join(missing)} not among the metrics of the trial "
                f"({', '.join(sorted(metrics))})")
        return tuple(float(metrics[o.name]) if o.maximize else -float(metrics[o.name])
                     for o in self.items)

    def check_names(self, available: Iterable[str] | None, where: str) -> None:
        """Refuse an objective that is not among ``available`` (``None``: not known
        before the first evaluation, checked then).

        Raises
        ------
        UsageError
            Naming the objective, ``where`` the names come from, and what it offers.
        """
        if available is None:
            return
        available = sorted(set(available))
        for name in self.names:
            if name not in available:
                raise UsageError(f"--objectives: {name!r} is not a metric of {where}; "
                                 f"known: {', '.join(available)}")

    def describe(self) -> list[dict[str, str]]:
        """For ``result.json``: each objective's name and direction."""
        return [{"name": o.name, "direction": "max" if o.maximize else "min"}
                for o in self.items]


def parse_objectives(text: str | Sequence[str] | None) -> Objectives | None:
    """``"val_acc,latency_ms"`` (or a list of such names) as :class:`Objectives`; each
    name may end with ``:max`` or ``:min``. ``None`` stays ``None``.

    Raises
    ------
    UsageError
        For fewer than two objectives, a repeated name, an unknown direction word, a
        direction that contradicts the name, or a name that says no direction and has
        none given.
    """
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    items = []
    for part in (part.strip() for part in parts):
        name, _, direction = part.partition(":")
        name, direction = name.strip(), direction.strip().lower()
        if not name:
            raise UsageError(f"--objectives expects NAME[:max|min],NAME[:max|min]..., "
                             f"got {text!r}")
        implied = direction_of(name)
        if direction:
            if direction not in _DIRECTIONS:
                raise UsageError(f"--objectives: direction {direction!r} of {name!r} must be "
                                 "max or min")
            maximize = _DIRECTIONS[direction]
            if implied is not None and implied != maximize:
                said = "maximised" if implied else "minimised"
                raise UsageError(f"--objectives: {name} is {said} (its name says so), not "
                                 f"{direction}")
        elif implied is None:
            raise UsageError(f"--objectives: give the direction of {name!r}: {name}:max or "
                             f"{name}:min")
        else:
            maximize = implied
        items.append(Objective(name, maximize))
    names = [objective.name for objective in items]
    if len(items) < 2:
        raise UsageError(f"--objectives needs two or more, e.g. val_acc,flops; got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--objectives names {', '.join(repeated)} more than once")
    return Objectives(tuple(items))


# -- Pareto ranking (every vector maximised) ---------------------------------------------


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """The indices of ``points`` in fronts: the first holds the points no other point
    dominates, the next those that only the first dominates, and so on (NSGA-II's fast
    non-dominated sort; each front in index order)."""
    dominated_by = [0] * len(points)  # how many points dominate each
    dominating: list[list[int]] = [[] for _ in points]  # the points each dominates
    for i, a in enumerate(points):
        for j in range(i + 1, len(points)):
            if dominates(a, points[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(points[j], a):
                dominating[j].append(i)
                dominated_by[i] += 1
    fronts = []
    front = [i for i, count in enumerate(dominated_by) if count == 0]
    while front:
        fronts.append(front)
        following = []
        for i in front:
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        front = sorted(following)
    return fronts


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """The indices of the points that no other point dominates (equal points all stay)."""
    return non_dominated_fronts(points)[0] if points else []


def crowding_distances(points: Sequence[Sequence[float]], front: Sequence[int]
                       ) -> dict[int, float]:
    """NSGA-II's crowding distance of each point of ``front``: per objective, the gap
    between its two neighbours over the front's range, summed; the ends of each
    objective's range get infinity, so that the front keeps its extremes."""
    distance = {i: 0.0 for i in front}
    if len(front) < 3:
        return {i: math.inf for i in front}
    for axis in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: (points[i][axis], i))
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[here] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def pareto_order(points: Sequence[Sequence[float]]) -> list[int]:
    """The indices of ``points``, best first: by front, then by crowding distance (the
    less crowded first), then by index. NSGA-II's ranking."""
    order = []
    for front in non_dominated_fronts(points):
        crowding = crowding_distances(points, front)
        order += sorted(front, key=lambda i: (-crowding[i], i))
    return order


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume that ``points`` dominate above ``reference`` (every vector maximised):
    the union of the boxes between the reference and each point better than it in every
    objective. Exact, by slicing along the last objective (fine for a few hundred
    points in two or three objectives)."""
    reference = tuple(reference)
    inside = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference))]
    if not inside:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in inside) - reference[0]
    inside.sort(key=lambda p: p[-1], reverse=True)
    volume = 0.0
    for index, point in enumerate(inside):
        lower = inside[index + 1][-1] if index + 1 < len(inside) else reference[-1]
        if point[-1] > lower:
            volume += (point[-1] - lower) * hypervolume(
                [p[:-1] for p in inside[:index + 1]], reference[:-1])
    return volume
