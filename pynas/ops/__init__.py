"""Fused operations, usable from any PyTorch code (autograd, torch.compile)."""
from pynas.ops._kernels import cached_bytes, empty_cache, set_cache_limit
from pynas.ops.mixed_op import mixed_op
from pynas.ops.partial_channel import partial_channel_combine
from pynas.ops.reference import mixed_op_reference, partial_channel_combine_reference
from pynas.ops.sampling import sample_categorical

__all__ = ["cached_bytes", "empty_cache", "mixed_op", "mixed_op_reference",
           "partial_channel_combine", "partial_channel_combine_reference",
           "sample_categorical", "set_cache_limit"]
