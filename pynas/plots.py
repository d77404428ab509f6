"""Plots of a run, drawn from its trial records.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``): nothing here
opens a window or changes the backend of a program that imports pynas. matplotlib is
imported when a plot is drawn, not with this module: it would add half a second to
every ``pynas`` command.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from pynas.objectives import Objective, Objectives
from pynas.runs import Attempt, finished_in_order


def best_so_far(values: Sequence[float]) -> list[int]:
    """For each position, the index of the largest value up to it (the first among equals).

    Examples
    --------
    >>> best_so_far([1.0, 3.0, 2.0, 3.0, 4.0])
    [0, 1, 1, 1, 4]
    """
    indices: list[int] = []
    for index, value in enumerate(values):
        if not indices or value > values[indices[-1]]:
            indices.append(index)
        else:
            indices.append(indices[-1])
    return indices


def test_counterpart(score_name: str, metrics: dict) -> str | None:
    """The test metric that goes with the validation score ``score_name``, if measured:
    ``val_r2`` -> ``test_r2``; otherwise ``test_acc`` (a table's test column)."""
    if score_name.startswith("val_") and "test_" + score_name[4:] in metrics:
        return "test_" + score_name[4:]
    return "test_acc" if "test_acc" in metrics else None


def plot_search_curve(attempts: Sequence[Attempt], path: Path, title: str = "",
                      score_name: str = "val_acc") -> None:
    """Draw the best score so far, and that architecture's test counterpart.

    Against the number of finished evaluations and, when the evaluations report a cost,
    in a second panel against their cumulative ``seconds`` (simulated training time for
    a table).

    Parameters
    ----------
    attempts
        The run's attempts (any order, any state: only finished ones are drawn).
    path
        The PNG file to write.
    score_name
        What the attempts' ``score`` is (the y axis label).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    finished = finished_in_order(attempts)
    seconds = list(itertools.accumulate(a.metrics["seconds"] for a in finished))
    panels = [("finished evaluations", range(1, len(finished) + 1))]
    if seconds and seconds[-1] > 0:
        panels.append(("cumulative evaluation seconds", seconds))
    figure = Figure(figsize=(5 * len(panels), 4))
    # fixed margins: a layout engine would triple the drawing time of this small figure
    figure.subplots_adjust(left=0.14 / len(panels), right=0.98, bottom=0.13, top=0.9,
                           wspace=0.05)
    axes_list = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for axes, (label, _) in zip(axes_list, panels):
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    axes_list[0].set_ylabel(score_name + (" (%)" if score_name.endswith("acc") else ""))
    figure.suptitle(title)
    if not finished:
        axes_list[0].text(0.5, 0.5, "no finished evaluation", ha="center",
                          transform=axes_list[0].transAxes)
    else:
        scores = [a.metrics["score"] for a in finished]
        best = [finished[i] for i in best_so_far(scores)]
        curves = {f"best {score_name} so far": [a.metrics["score"] for a in best]}
        test_name = test_counterpart(score_name, best[-1].metrics)
        if test_name is not None and all(test_name in a.metrics for a in best):
            curves[f"its {test_name}"] = [a.metrics[test_name] for a in best]
        for axes, (_, x) in zip(axes_list, panels):
            axes.plot(x, scores, ".", color="0.7", label="each evaluation")
            for label, values in curves.items():
                axes.step(x, values, where="post", label=label)
        # frame the curves: the worst evaluations (chance level) would flatten them
        low = min(min(values) for values in curves.values())
        high = max(max(values) for values in curves.values())
        margin = max(1.0, 0.1 * (high - low))
        axes_list[0].set_ylim(low - margin, high + margin)
        axes_list[0].legend(loc="best", fontsize="small")
    FigureCanvasAgg(figure).print_png(str(path))


#: the metric each limit of :class:`pynas.costs.Constraints` bounds
_LIMITED_METRICS = {"max_params": "params", "max_flops": "flops",
                    "max_latency_ms": "latency_ms"}


def plot_pareto(attempts: Sequence[Attempt], front: Sequence[Attempt], objectives: Objectives,
                path: Path, title: str = "", limits: dict[str, float] | None = None) -> None:
    """Draw every finished trial (faded) in the plane of the first two objectives, the
    Pareto front over all of them (marked and joined), and the constraint lines.

    Parameters
    ----------
    attempts
        The run's attempts (only finished ones are drawn).
    front
        The non-dominated attempts (:func:`pynas.search.loop.pareto_attempts`).
    objectives
        The search's :class:`~pynas.objectives.Objectives`: the second is the x axis, the
        first the y axis.
    limits
        The constraints that were set (:meth:`Constraints.given`), drawn where they bound
        an axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y_objective, x_objective = list(objectives)[:2]
    finished = finished_in_order(attempts)
    figure = Figure(figsize=(6, 4.5))
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.9)
    axes = figure.subplots()
    direction = {True: "higher is better", False: "lower is better"}
    axes.set_xlabel(f"{x_objective.name} ({direction[x_objective.maximize]})")
    axes.set_ylabel(f"{y_objective.name} ({direction[y_objective.maximize]})")
    axes.grid(alpha=0.3)
    more = len(objectives) - 2
    figure.suptitle(title + (f" (front over {more} more objective(s) too)" if more else ""))
    if not finished:
        axes.text(0.5, 0.5, "no finished evaluation", ha="center", transform=axes.transAxes)
    else:
        def values(group: Sequence[Attempt], objective: Objective) -> list[float]:
            return [a.metrics[objective.name] for a in group]

        axes.plot(values(finished, x_objective), values(finished, y_objective), ".",
                  color="0.75", label=f"each trial ({len(finished)})")
        ordered = sorted(front, key=lambda a: (a.metrics[x_objective.name],
                                               a.metrics[y_objective.name]))
        axes.plot(values(ordered, x_objective), values(ordered, y_objective), "o-",
                  color="C3", label=f"Pareto front ({len(front)})")
        # frame the front: the worst trials (chance level) would flatten it
        low, high = min(values(front, y_objective)), max(values(front, y_objective))
        margin = max(abs(high) * 0.01, high - low)
        every = values(finished, y_objective)
        axes.set_ylim(max(min(every), low - margin) - 0.05 * margin,
                      min(max(every), high + margin) + 0.05 * margin)
        for name, limit in (limits or {}).items():
            metric = _LIMITED_METRICS.get(name)
            if metric == x_objective.name:
                axes.axvline(limit, color="k", linestyle="--", label=f"{name} {limit:g}")
            elif metric == y_objective.name:
                axes.axhline(limit, color="k", linestyle="--", label=f"{name} {limit:g}")
        axes.legend(loc="best", fontsize="small")
    FigureCanvasAgg(figure).print_png(str(path))
