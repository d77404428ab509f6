"""pynas: neural architecture search for PyTorch with a compiled C++/CUDA core.

``pynas.search(...)`` runs a search on your data (or with your own evaluation function)
and returns a :class:`~pynas.api.SearchResult`; ``pynas.load(DIR)`` opens a run again;
``pynas.train(DIR)`` retrains its best architecture and tests it.
"""
from __future__ import annotations

from typing import Any

from pynas._version import __version__

__all__ = ["__version__", "load", "search", "train"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `pynas --version` and `import pynas` stay fast.
    if name == "search":  # the package pynas.search, callable as pynas.api.search
        import pynas.search

        return pynas.search
    if name == "load":
        from pynas.api import load

        return load
    if name == "train":
        from pynas.retrain import train

        return train
    raise AttributeError(f"module 'pynas' has no attribute {name!r}")
