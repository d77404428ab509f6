"""pynas: neural architecture search for PyTorch with a compiled C++/CUDA core."""
from pynas._version import __version__

__all__ = ["__version__"]
