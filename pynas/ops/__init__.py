"""Fused operations, usable from any PyTorch code (autograd, torch.compile)."""
from pynas.ops.mixed_op import mixed_op
from pynas.ops.reference import mixed_op_reference

__all__ = ["mixed_op", "mixed_op_reference"]
