"""The compiled extension, if it could be loaded, and what it was built with."""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: the extension's full name, whichever file it is loaded from
EXTENSION = "pynas._C"
#: the directory holding this pynas: the repository root of a source checkout, or
#: site-packages
_PARENT = Path(__file__).resolve().parents[1]


def installed_extension_path(path: Sequence[str] | None = None) -> Path | None:
    """The file of ``pynas._C`` that an installed pynas distribution holds, if any.

    Parameters
    ----------
    path
        The directories searched for distributions, first match first (default:
        ``sys.path``).
    """
    names = {"_C" + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES}
    for distribution in importlib.metadata.distributions(
            name="pynas", path=list(sys.path if path is None else path)):
        for file in distribution.files or ():
            if file.parent.as_posix() == "pynas" and file.name in names:
                location = Path(distribution.locate_file(file))
                if location.is_file():
                    return location
    return None


def load_extension(location: Path) -> ModuleType:
    """Load the extension file ``location`` as ``pynas._C`` (``ImportError`` when it fails)."""
    loader = importlib.machinery.ExtensionFileLoader(EXTENSION, str(location))
    spec = importlib.util.spec_from_loader(EXTENSION, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _extension_for_checkout(error: ImportError) -> tuple[ModuleType | None, str | None]:
    """``pynas._C`` for a source checkout without a build of its own: ``python -m pytest``
    or ``python`` started in the repository root imports the checkout's ``pynas``, which
    shadows the installed package, and a non-editable install (``pip install .``) leaves
    the compiled module in site-packages only. Returns the module and the import error."""
    location = installed_extension_path()
    if location is None:
        return None, (f"{error}; the source checkout {_PARENT} has no build of {EXTENSION} "
                      "and no pynas is installed: run `pip install .` in it")
    try:
        # the installed build of (one hopes) the same sources: pip installs from here
        module = load_extension(location)
    except ImportError as installed_error:
        return None, f"{error}; the installed {location} did not load: {installed_error}"
    sys.modules[EXTENSION] = module  # so that `from pynas import _C` finds it too
    sys.modules[__package__]._C = module
    return module, None


try:
    from pynas import _C
except ImportError as error:  # a source checkout without a build, or a broken install
    if (_PARENT / "pyproject.toml").is_file():
        _C, IMPORT_ERROR = _extension_for_checkout(error)
    else:
        _C, IMPORT_ERROR = None, str(error)
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
