"""CPU and CUDA kernels of the ops in ``_ops.py``: thin calls into ``pynas._C``.

Where a backend was not compiled (or a dtype has no kernel there), the pure-PyTorch
reference runs instead, with a one-time warning. ``forward`` and ``backward`` trust
their arguments (the public wrapper has validated them); the kernels registered for
``torch.ops.pynas.*`` check the cheap invariants first, for direct callers.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from pynas import _backend
from pynas.ops import _ops  # noqa: F401  (defines the ops registered below)
from pynas.ops.reference import mixed_op_reference

_C = _backend._C
_COMPILED = frozenset(_backend.backends())
# (device type, torch dtype) -> pynas::DType (csrc/common.h)
_KERNEL_DTYPES = {
    ("cpu", torch.float32): 0,
    ("cpu", torch.float64): 1,
    ("cuda", torch.float32): 0,
    ("cuda", torch.float16): 2,
    ("cuda", torch.bfloat16): 3,
}
# Below this many bytes the M gradients share one allocation (M small allocations cost
# more than the kernel); above it each gets its own, since one huge block would come
# from mmap and page-fault on every call.
_SHARED_GRAD_BYTES = 8 * 2**20
# The CUDA kernels keep the E*K softmax weights in shared memory (csrc/cuda/mixed_op.cu).
_CUDA_MAX_WEIGHTS = 2048


def _kernel_dtype(device: torch.device, dtype: torch.dtype) -> Optional[int]:
    """The kernel's dtype code, or None (with a one-time warning) to use the reference."""
    code = _KERNEL_DTYPES.get((device.type, dtype)) if device.type in _COMPILED else None
    if code is None:
        reason = (f"no {dtype} kernel on {device.type}" if device.type in _COMPILED
                  else f"{device.type} backend not available: "
                       f"{_backend.IMPORT_ERROR or 'not compiled'}")
        _backend.warn_once(f"mixed_op-{device.type}-{dtype}",
                           f"pynas: mixed_op has {reason}; using the PyTorch reference")
    return code


def _call_args(code: int, present: list[Tensor], slots: list[int], alpha: Tensor,
               workspace: bool):
    """Positional arguments of the _C entry points: the head shared by forward and
    backward, the tail (threads, workspace, stream), and the CUDA workspace tensor (kept
    alive by the caller until the launch is queued; the forward needs none)."""
    device = present[0].device
    numel = present[0].numel()
    edges, ops = alpha.shape
    buffer = None
    if device.type == "cuda":
        if edges * ops > _CUDA_MAX_WEIGHTS:
            raise ValueError(f"alpha has E*K = {edges * ops} logits; the CUDA kernel "
                             f"takes at most {_CUDA_MAX_WEIGHTS}")
        if workspace:
            size = _C.mixed_op_cuda_workspace_bytes(len(present), edges, ops, numel, code)
            buffer = torch.empty(size, dtype=torch.uint8, device=device)
        tail = (0, buffer.data_ptr() if buffer is not None else 0,
                torch.cuda.current_stream(device).cuda_stream)
    else:
        tail = (torch.get_num_threads(), 0, 0)
    head = (device.type == "cuda", code, [t.data_ptr() for t in present], slots,
            alpha.data_ptr(), edges, ops, numel)
    return head, tail, buffer


def _on_device(device: torch.device):
    """The kernels launch on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _kernel_alpha(alpha: Tensor, dtype: torch.dtype) -> Tensor:
    """alpha as the kernels read it: float64 for float64 outputs, float32 otherwise."""
    return alpha.to(torch.float64 if dtype == torch.float64 else torch.float32).contiguous()


def forward(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> Tensor:
    """The node's weighted sum; outputs (M tensors of one shape), slots (M,), alpha (E, K)."""
    template = outputs[0]
    code = _kernel_dtype(template.device, template.dtype)
    if code is None:
        return _reference(outputs, slots, alpha)
    present = [t.contiguous() for t in outputs]
    out = torch.empty(template.shape, dtype=template.dtype, device=template.device)
    head, tail, _ = _call_args(code, present, slots, _kernel_alpha(alpha, template.dtype),
                               workspace=False)
    with _on_device(template.device):
        _C.mixed_op_forward(*head, out.data_ptr(), *tail)
    return out


def backward(
    grad: Tensor, outputs: list[Tensor], slots: list[int], alpha: Tensor,
    share_allocation: bool = True,
) -> tuple[list[Tensor], Tensor]:
    """Gradients of every output (M tensors) and of alpha (E, K) for upstream ``grad``.

    With ``share_allocation``, small gradients are views of one buffer; an op's
    outputs must not alias, so the registered op passes False.
    """
    template = outputs[0]
    code = _kernel_dtype(template.device, template.dtype)
    if code is None:
        return _reference_backward(grad, outputs, slots, alpha)
    present = [t.contiguous() for t in outputs]
    kernel_alpha = _kernel_alpha(alpha, template.dtype)
    grad = grad.to(template.dtype).contiguous()
    if share_allocation and len(present) * grad.numel() * grad.element_size() <= _SHARED_GRAD_BYTES:
        grads = list(torch.empty((len(present), *template.shape), dtype=template.dtype,
                                 device=template.device).unbind(0))
    else:
        grads = [torch.empty_like(grad) for _ in present]
    grad_alpha = torch.empty_like(kernel_alpha)
    head, tail, _workspace = _call_args(code, present, slots, kernel_alpha, workspace=True)
    with _on_device(template.device):
        _C.mixed_op_backward(*head, grad.data_ptr(), [g.data_ptr() for g in grads],
                             grad_alpha.data_ptr(), *tail)
    return grads, grad_alpha.to(alpha.dtype)


def _check_grid(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> None:
    """Cheap checks for direct callers of the op (the public wrapper checks more)."""
    if not outputs:
        raise ValueError("outputs: at least one entry must be a tensor")
    if alpha.dim() != 2:
        raise ValueError(f"alpha must be (E, K), got shape {tuple(alpha.shape)}")
    if (len(slots) != len(outputs) or len(set(slots)) != len(slots)
            or min(slots) < 0 or max(slots) >= alpha.numel()):
        raise ValueError(
            f"slots must give one distinct index in [0, {alpha.numel()}) per output, "
            f"got {slots}"
        )
    if len({(t.shape, t.dtype, t.device) for t in outputs}) != 1:
        raise ValueError("outputs must share one shape, dtype and device")


def _checked_forward(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> Tensor:
    _check_grid(outputs, slots, alpha)
    return forward(outputs, slots, alpha)


def _checked_backward(grad, outputs: list[Tensor], slots: list[int], alpha: Tensor):
    _check_grid(outputs, slots, alpha)
    return backward(grad, outputs, slots, alpha, share_allocation=False)


def _reference(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> Tensor:
    edges, ops = alpha.shape
    grid: list[list[Optional[Tensor]]] = [[None] * ops for _ in range(edges)]
    for output, slot in zip(outputs, slots):
        grid[slot // ops][slot % ops] = output
    return mixed_op_reference(grid, alpha)


def _reference_backward(grad, outputs, slots, alpha):
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in outputs]
        alpha_leaf = alpha.detach().requires_grad_()
        result = _reference(leaves, slots, alpha_leaf)
        grads = torch.autograd.grad(result, [*leaves, alpha_leaf], grad)
    return list(grads[:-1]), grads[-1]


for _device in ("cpu", "cuda"):
    torch.library.register_kernel("pynas::mixed_op", _device, _checked_forward)
    torch.library.register_kernel("pynas::mixed_op_backward", _device, _checked_backward)
