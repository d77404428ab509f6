"""Search spaces: which architectures exist, how they are encoded and built."""
from __future__ import annotations

from typing import Any

from pynas.errors import UsageError
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.darts import DartsSpace
from pynas.spaces.hierarchical import HierarchicalFlatSpace, HierarchicalSpace
from pynas.spaces.macro import MacroSpace
from pynas.spaces.mlp import MLPSpace
from pynas.spaces.nb201 import NB201Space
from pynas.spaces.pnas import PNASSpace

#: ``--space`` name -> class
SPACES: dict[str, type[SearchSpace]] = {
    "nb201": NB201Space,
    "pnas": PNASSpace,
    "macro": MacroSpace,
    "darts": DartsSpace,
    "mlp": MLPSpace,
    "hierarchical": HierarchicalSpace,
    "hierarchical-flat": HierarchicalFlatSpace,
}


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """The search space called ``name``, built with ``kwargs``.

    Raises
    ------
    UsageError
        When no space has that name.
    """
    if name not in SPACES:
        raise UsageError(f"unknown search space {name!r}; known spaces: {', '.join(SPACES)}")
    return SPACES[name](**kwargs)


__all__ = ["SPACES", "Arch", "DartsSpace", "HierarchicalFlatSpace", "HierarchicalSpace",
           "MLPSpace", "MacroSpace", "NB201Space", "PNASSpace", "SearchSpace", "get_space"]
