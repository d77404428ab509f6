"""The strategy interface: ask for candidates, tell results, checkpoint state.

A strategy never builds networks and never touches files: it proposes architectures
(decision tuples, see :mod:`pynas.spaces.base`), is told their scores, and can hand
back its whole state as a picklable dict so a killed run resumes exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pynas.objectives import Objectives
from pynas.spaces.base import Arch, SearchSpace


class Strategy(ABC):
    """Base of the ask/tell strategies (random, evolution, RL, PNAS)."""

    name: str = ""

    def __init__(self, space: SearchSpace, seed: int = 0,
                 objectives: Objectives | None = None) -> None:
        self.space = space
        self.seed = seed
        #: the objectives of a multi-objective search; ``None``: the score alone
        self.objectives = objectives

    def value_of(self, metrics: dict[str, Any]) -> Any:
        """What :meth:`tell` receives for an evaluation that finished with ``metrics``:
        the score or, with several objectives, their values each turned to be maximised
        (:meth:`Objectives.vector`). Strategies that want another signal (RL's
        cost-weighted reward) override it."""
        if self.objectives is None:
            return metrics["score"]
        return self.objectives.vector(metrics)

    @abstractmethod
    def ask(self, count: int) -> list[Arch]:
        """Up to ``count`` new candidates; fewer (even none) while the strategy waits
        for results it has asked for (PNAS between levels, RL between updates)."""

    @abstractmethod
    def tell(self, arch: Arch, score: Any) -> None:
        """The result of an asked candidate: :meth:`value_of` its metrics (the score),
        or ``None`` if it failed or broke a constraint."""

    def finished(self) -> bool:
        """True when the strategy has nothing more to propose (exhausted space/levels)."""
        return False

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (random state included); picklable."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
