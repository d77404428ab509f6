"""Pure-PyTorch references of the fused ops: the test oracle and the fallback."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mixed_op_reference(outputs: Sequence[Sequence[Tensor | None]], alpha: Tensor) -> Tensor:
    """The DARTS mixed operation of one node, written with plain torch ops.

    Parameters
    ----------
    outputs : E sequences of K tensors of one shape, or ``None`` for the zero op
        (at least one entry is a tensor).
    alpha : (E, K) logits.

    Returns
    -------
    Tensor
        ``sum_e sum_k softmax(alpha[e])[k] * outputs[e][k]``, accumulated in float32
        (float64 for float64 outputs) and returned in the outputs' dtype.
    """
    template = next(t for edge in outputs for t in edge if t is not None)
    accumulate = torch.float64 if template.dtype == torch.float64 else torch.float32
    weights = torch.softmax(alpha.to(accumulate), dim=-1)
    total = torch.zeros(template.shape, dtype=accumulate, device=template.device)
    for e, edge in enumerate(outputs):
        for k, output in enumerate(edge):
            if output is not None:
                total = total + weights[e, k] * output.to(accumulate)
    return total.to(template.dtype)
