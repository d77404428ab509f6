"""Fused operations, usable from any PyTorch code (autograd, torch.compile)."""
from pynas.ops._kernels import cached_bytes, empty_cache, set_cache_limit
from pynas.ops.mixed_op import mixed_op
from pynas.ops.reference import mixed_op_reference
from pynas.ops.sampling import sample_categorical

__all__ = ["cached_bytes", "empty_cache", "mixed_op", "mixed_op_reference",
           "sample_categorical", "set_cache_limit"]
