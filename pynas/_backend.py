"""The compiled extension, if it could be loaded, and what it was built with."""
from __future__ import annotations

import warnings

try:
    from pynas import _C
except ImportError as error:  # a source checkout without a build, or a broken install
    _C = None
    IMPORT_ERROR: str | None = str(error)
else:
    IMPORT_ERROR = None

_warned: set[str] = set()


def backends() -> list[str]:
    """Compiled kernel backends: ``["cpu"]`` or ``["cpu", "cuda"]`` (empty without _C)."""
    if _C is None:
        return []
    return ["cpu", "cuda"] if _C.with_cuda else ["cpu"]


def cuda_archs() -> list[int]:
    """CUDA architectures compiled in, e.g. ``[80, 90]``."""
    return list(_C.cuda_archs()) if _C is not None else []


def warn_once(key: str, message: str) -> None:
    """Warn the first time ``key`` is seen in this process: fallbacks are never silent."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
