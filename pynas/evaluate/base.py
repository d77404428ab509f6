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

    @abstractmethod
    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """Score ``arch``.

        Returns
        -------
        dict
            Always ``val_acc`` (float, percent, the search signal) and ``seconds``
            (the cost of this evaluation: wall seconds when training, the simulated
            training time for a table). ``test_acc`` where a test split or column
            exists, and any further numeric metrics (every column of a table row).
        """

    def describe(self) -> dict[str, Any]:
        """What this evaluator is, for ``result.json`` (dataset, table, epochs...)."""
        return {"evaluator": type(self).__name__}
