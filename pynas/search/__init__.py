"""Search strategies (random, evolution, RL, PNAS, DARTS) and the loop that drives them.

``pynas.search`` is also the Python API's entry point: calling this package,
``pynas.search("evolution", data, ...)``, runs :func:`pynas.api.search`. (Python sets
``pynas.search`` to this package once any of its modules is imported, so the package
itself must be the callable.)
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from pynas.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
