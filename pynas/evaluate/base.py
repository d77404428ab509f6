"""The performance-estimation interface.

An evaluator scores one architecture of one space. It must be picklable (the process
pool and Ray ship it to workers once) and must not write files: the run machinery
records what it returns.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pynas.spaces.base import Arch, SearchSpace


class Evaluator(ABC):
    """Scores architectures; returns a flat dict of metrics."""

    #: what ``score`` is, named in ``result.json`` (e.g. ``val_acc``, ``val_r2``)
    score_name: str = "val_acc"

    @abstractmethod
    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """Score ``arch``.

        Returns
        -------
        dict
            Always ``score`` (a finite float, the search signal, maximised; what it is
            is :attr:`score_name`) and ``seconds`` (the cost of this evaluation: wall
            seconds when training, the simulated training time for a table). Any
            further numeric metrics: ``val_acc`` and ``test_acc`` (percent) for
            classification, ``val_r2``... for regression, every column of a table row.
        """

    def metric_names(self) -> list[str] | None:
        """The names of the metrics :meth:`evaluate` returns, so that ``--objectives``
        can be checked before a search starts; ``None`` when only an evaluation tells
        (a user's function)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What this evaluator is, for ``result.json`` (dataset, table, epochs...)."""
        return {"evaluator": type(self).__name__}
