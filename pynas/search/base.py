"""The strategy interface: ask for candidates, tell results, checkpoint state.

A strategy never builds networks and never touches files: it proposes architectures
(decision tuples, see :mod:`pynas.spaces.base`), is told their scores, and can hand
back its whole state as a picklable dict so a killed run resumes exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pynas.spaces.base import Arch, SearchSpace


class Strategy(ABC):
    """Base of the ask/tell strategies (random, evolution, RL, PNAS)."""

    name: str = ""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed

    @abstractmethod
    def ask(self, count: int) -> list[Arch]:
        """Up to ``count`` new candidates; fewer (even none) while the strategy waits
        for results it has asked for (PNAS between levels, RL between updates)."""

    @abstractmethod
    def tell(self, arch: Arch, score: float | None) -> None:
        """The result of an asked candidate: its score, or ``None`` if it failed."""

    def finished(self) -> bool:
        """True when the strategy has nothing more to propose (exhausted space/levels)."""
        return False

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (random state included); picklable."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
