"""CPU and CUDA kernels of the ops in ``_ops.py``: thin calls into ``pynas._C``.

Where a backend was not compiled (or a dtype has no kernel there), the pure-PyTorch
reference runs instead, with a one-time warning. ``forward`` and ``backward`` trust
their arguments (the public wrapper has validated them); the kernels registered for
``torch.ops.pynas.*`` check the cheap invariants first, for direct callers.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from pynas import _backend
from pynas.ops import _ops  # noqa: F401  (defines the ops registered below)
from pynas.ops.reference import (
    channel_shuffle,
    mixed_op_reference,
    partial_channel_combine_reference,
)

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
# Gradients of at least this many bytes each share one allocation (see ``backward``).
_SHARED_GRAD_BYTES = 2**20
# The CUDA kernels keep the E*K softmax weights in shared memory (csrc/cuda/mixed_op.cu).
_CUDA_MAX_WEIGHTS = 2048


def _kernel_dtype(device: torch.device, dtype: torch.dtype, op: str = "mixed_op",
                  compiled: frozenset = _COMPILED) -> int | None:
    """The kernel's dtype code, or None (with a one-time warning) to use the reference."""
    code = _KERNEL_DTYPES.get((device.type, dtype)) if device.type in compiled else None
    if code is None:
        if device.type in compiled:
            reason = f"no {dtype} kernel on {device.type}"
        elif device.type in _COMPILED:  # an extension built before this op existed
            reason = f"no {device.type} kernel in this build of pynas._C (rebuild it)"
        else:
            reason = (f"{device.type} backend not available: "
                      f"{_backend.IMPORT_ERROR or 'not compiled'}")
        _backend.warn_once(f"{op}-{device.type}-{dtype}",
                           f"pynas: {op} has {reason}; using the PyTorch reference")
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
    # Referenced until the call returns: a converted alpha is a new tensor the kernel reads.
    kernel_alpha = _kernel_alpha(alpha, template.dtype)
    head, tail, _ = _call_args(code, present, slots, kernel_alpha, workspace=False)
    with _on_device(template.device):
        _C.mixed_op_forward(*head, out.data_ptr(), *tail)
    return out


def backward(
    grad: Tensor, outputs: list[Tensor], slots: list[int], alpha: Tensor,
    may_alias: bool = True,
) -> tuple[list[Tensor], Tensor]:
    """Gradients of every output (M tensors) and of alpha (E, K) for upstream ``grad``.

    With ``may_alias``, large gradients are views of one buffer (the registered op passes
    False: an op's outputs must not alias).
    """
    template = outputs[0]
    code = _kernel_dtype(template.device, template.dtype)
    if code is None:
        return _reference_backward(grad, outputs, slots, alpha)
    present = [t.contiguous() for t in outputs]
    kernel_alpha = _kernel_alpha(alpha, template.dtype)
    grad = grad.to(template.dtype).contiguous()
    if may_alias and grad.numel() * grad.element_size() >= _SHARED_GRAD_BYTES:
        grads = list(_gradient_block(len(present), grad).unbind(0))
    else:  # small: one allocation each is cheaper than making M views
        grads = [torch.empty_like(grad) for _ in present]
    grad_alpha = torch.empty_like(kernel_alpha)
    head, tail, _workspace = _call_args(code, present, slots, kernel_alpha, workspace=True)
    with _on_device(template.device):
        _C.mixed_op_backward(*head, grad.data_ptr(), [g.data_ptr() for g in grads],
                             grad_alpha.data_ptr(), *tail)
    return grads, grad_alpha.to(alpha.dtype)


def _gradient_block(count: int, like: Tensor) -> Tensor:
    """An uninitialised (count, *like.shape) tensor of like's dtype and device.

    On the CPU it comes from pynas's block cache (``csrc/host_pool.h``): glibc returns a
    freed multi-MB block to the system, and every call would fault its pages in again,
    which costs more than the kernel (see :func:`empty_cache`).
    """
    if like.device.type != "cpu" or "cpu" not in _COMPILED:
        return torch.empty((count, *like.shape), dtype=like.dtype, device=like.device)
    block = torch.from_dlpack(_C.pooled_host_block(count * like.numel() * like.element_size()))
    return block.view(like.dtype).view(count, *like.shape)


def empty_cache() -> None:
    """Free the host blocks that large CPU gradients of ``mixed_op`` left for reuse.

    A backward that returns gradients of 1 MiB or more each takes them from one block of a
    cache; once every gradient of a block is gone the block is kept (up to 512 MiB in all,
    see :func:`set_cache_limit`) for the next backward of that size or a little smaller,
    instead of going back to the system. Blocks in use are not affected.
    """
    if "cpu" in _COMPILED:
        _C.host_pool_empty()


def set_cache_limit(limit_bytes: int) -> None:
    """Keep at most ``limit_bytes`` of freed gradient blocks (0 turns the cache off)."""
    if limit_bytes < 0:
        raise ValueError(f"limit_bytes must be >= 0, got {limit_bytes}")
    if "cpu" in _COMPILED:
        _C.host_pool_set_limit(limit_bytes)


def cached_bytes() -> int:
    """Bytes of freed gradient blocks held for reuse (see :func:`empty_cache`)."""
    return _C.host_pool_cached_bytes() if "cpu" in _COMPILED else 0


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
    return backward(grad, outputs, slots, alpha, may_alias=False)


def _grid(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> list[list[Tensor | None]]:
    """The E x K grid of the present outputs at their slots, None elsewhere."""
    edges, ops = alpha.shape
    grid: list[list[Tensor | None]] = [[None] * ops for _ in range(edges)]
    for output, slot in zip(outputs, slots):
        grid[slot // ops][slot % ops] = output
    return grid


def _reference(outputs: list[Tensor], slots: list[int], alpha: Tensor) -> Tensor:
    return mixed_op_reference(_grid(outputs, slots, alpha), alpha)


def _reference_backward(grad, outputs, slots, alpha):
    """The backward in plain torch ops, written out: a kernel runs below autograd, so it
    cannot ask autograd for it. grad_m = w[slot_m] * grad, and alpha's gradient is the
    softmax Jacobian applied to the dot products <grad, output_m>."""
    accumulate = torch.float64 if grad.dtype == torch.float64 else torch.float32
    weights = torch.softmax(alpha.to(accumulate), dim=-1).flatten()
    grads = [(weights[slot] * grad.to(accumulate)).to(grad.dtype) for slot in slots]
    dots = torch.zeros_like(weights)
    for output, slot in zip(outputs, slots):
        dots[slot] = (grad.to(accumulate) * output.to(accumulate)).sum()
    weights, dots = weights.view(alpha.shape), dots.view(alpha.shape)
    grad_alpha = weights * (dots - (weights * dots).sum(dim=-1, keepdim=True))
    return grads, grad_alpha.to(alpha.dtype)


for _device in ("cpu", "cuda"):
    torch.library.register_kernel("pynas::mixed_op", _device, _checked_forward)
    torch.library.register_kernel("pynas::mixed_op_backward", _device, _checked_backward)


# ---- pynas::sample_categorical ----

# (device type, torch dtype) -> pynas::DType of the sampling kernels; float16 and bfloat16
# logits are widened to float32 (exactly) and the results narrowed back.
_SAMPLING_DTYPES = {("cpu", torch.float32): 0, ("cpu", torch.float64): 1,
                    ("cuda", torch.float32): 0, ("cuda", torch.float64): 1}


def sample_categorical(logits: Tensor, seed: int, offset: int):
    """Actions (B,) int64, log_prob and entropy (B,) of logits (B, N); seed is signed."""
    from pynas.ops.sampling import sample_categorical_reference

    if logits.dim() != 2 or logits.shape[1] < 1 or offset < 0 or offset % 4:
        raise ValueError("sample_categorical needs (B, N >= 1) logits and an offset that is "
                         f"a non-negative multiple of 4, got {tuple(logits.shape)}, {offset}")
    device = logits.device
    kernel_logits = logits if logits.dtype == torch.float64 else logits.float()
    if device.type not in _COMPILED or (device.type, kernel_logits.dtype) not in _SAMPLING_DTYPES:
        _backend.warn_once(f"sample_categorical-{device.type}",
                           f"pynas: sample_categorical has no kernel on {device.type}; "
                           "using the PyTorch reference")
        return tuple(sample_categorical_reference(logits, seed, offset))
    # Rows may be strided, or all one row (an expanded logits row, stride 0).
    row_stride = kernel_logits.stride(0) if kernel_logits.shape[0] > 1 else 0
    if kernel_logits.stride(1) != 1 or 0 < row_stride < kernel_logits.shape[1]:
        kernel_logits = kernel_logits.contiguous()
        row_stride = kernel_logits.shape[1]
    rows = kernel_logits.shape[0]
    actions = torch.empty(rows, dtype=torch.int64, device=device)
    log_prob = torch.empty(rows, dtype=kernel_logits.dtype, device=device)
    entropy = torch.empty_like(log_prob)
    cuda = device.type == "cuda"
    stream = torch.cuda.current_stream(device).cuda_stream if cuda else 0
    with _on_device(device):
        _C.sample_categorical(cuda, _SAMPLING_DTYPES[(device.type, kernel_logits.dtype)],
                              kernel_logits.data_ptr(), rows, kernel_logits.shape[1],
                              row_stride,
                              seed % 2**64, offset, actions.data_ptr(), log_prob.data_ptr(),
                              entropy.data_ptr(), torch.get_num_threads(), stream)
    return actions, log_prob.to(logits.dtype), entropy.to(logits.dtype)


for _device in ("cpu", "cuda"):
    torch.library.register_kernel("pynas::sample_categorical", _device, sample_categorical)


# ---- the RL controller's fused rollout (csrc/rollout.h; pynas/search/rl/controller.py) ----

def controller_rollout(program: list[list[int]], num_decisions: int, num_anchors: int,
                       weights: list[Tensor], hidden: int, tanh_constant: float, count: int,
                       seed: int, offset: int, actions: Tensor, log_prob: Tensor,
                       entropy: Tensor) -> None:
    """Fill actions (count, D) int64, log_prob and entropy (count, D) float32 with
    ``count`` rollouts; ``weights`` are the nine contiguous float32 arrays of
    ``pynas::RolloutWeights`` in order, on the outputs' device."""
    device = actions.device
    cuda = device.type == "cuda"
    workspace = None
    if cuda:
        size = _C.controller_rollout_cuda_workspace_bytes(count, num_anchors, hidden)
        workspace = torch.empty(size, dtype=torch.uint8, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if cuda else 0
    with _on_device(device):
        _C.controller_rollout(
            cuda, program, num_decisions, num_anchors, [w.data_ptr() for w in weights],
            hidden, weights[0].shape[0], weights[4].shape[0], tanh_constant, count,
            seed % 2**64, offset, actions.data_ptr(), log_prob.data_ptr(), entropy.data_ptr(),
            torch.get_num_threads(), workspace.data_ptr() if workspace is not None else 0,
            stream)


# ---- pynas::partial_channel_combine (PC-DARTS; csrc/partial_channel.h) ----

# A pynas._C built before this op (a checkout whose extension was not rebuilt) runs the
# reference, with the one-time warning.
_PARTIAL_COMPILED = _COMPILED if hasattr(_C, "partial_channel_forward") else frozenset()
_PARTIAL = "partial_channel_combine"


def _bypass_layout(bypass: list[Tensor]) -> tuple[list[Tensor], int]:
    """The bypass tensors as the kernels read them, and the elements between their samples.

    A channel slice ``x[:, C/g:]`` of a contiguous x, what PC-DARTS bypasses on a normal
    edge, is read in place: each sample is contiguous, and the samples lie C*S elements
    apart. Any other layout is copied once into contiguous tensors.
    """
    if not bypass:
        return [], 0
    batch, *sample_shape = bypass[0].shape
    if batch > 0 and all(t[0].is_contiguous() for t in bypass):
        strides = {t.stride(0) for t in bypass} if batch > 1 else {math.prod(sample_shape)}
        if len(strides) == 1:
            return bypass, strides.pop()
    return [t.contiguous() for t in bypass], math.prod(sample_shape)


def _partial_channel_call_args(code: int, present: list[Tensor], slots: list[int],
                               bypass: list[Tensor], bypass_stride: int, alpha: Tensor,
                               edge_weights: Tensor | None, groups: int, workspace: bool):
    """Positional arguments of the _C entry points, as ``_call_args`` gives them for
    mixed_op: the head, the tail (threads, workspace, stream) and the workspace tensor."""
    template = present[0]
    device = template.device
    batch, channels_per_group, *spatial = template.shape
    edges, ops = alpha.shape
    buffer = None
    if device.type == "cuda":
        if edges * ops > _CUDA_MAX_WEIGHTS:
            raise ValueError(f"alpha has E*K = {edges * ops} logits; the CUDA kernel "
                             f"takes at most {_CUDA_MAX_WEIGHTS}")
        if workspace:
            size = _C.partial_channel_cuda_workspace_bytes(edges, ops)
            buffer = torch.empty(size, dtype=torch.uint8, device=device)
        tail = (0, buffer.data_ptr() if buffer is not None else 0,
                torch.cuda.current_stream(device).cuda_stream)
    else:
        tail = (torch.get_num_threads(), 0, 0)
    head = (device.type == "cuda", code, [t.data_ptr() for t in present], slots,
            [t.data_ptr() for t in bypass], bypass_stride, alpha.data_ptr(),
            edge_weights.data_ptr() if edge_weights is not None else 0, edges, ops, batch,
            channels_per_group, groups, math.prod(spatial))
    return head, tail, buffer


def partial_channel_forward(outputs: list[Tensor], slots: list[int], bypass: list[Tensor],
                            alpha: Tensor, edge_weights: Tensor | None, groups: int) -> Tensor:
    """The node's combine: outputs (M tensors (N, C/g, ...)) at slots (M,) of alpha (E, K),
    bypass (E tensors (N, C - C/g, ...), none when groups == 1), edge_weights (E,) or None."""
    template = outputs[0]
    code = _kernel_dtype(template.device, template.dtype, _PARTIAL, _PARTIAL_COMPILED)
    if code is None:
        return partial_channel_combine_reference(_grid(outputs, slots, alpha), bypass, alpha,
                                                 groups, edge_weights)
    batch, channels_per_group, *spatial = template.shape
    out = template.new_empty((batch, groups * channels_per_group, *spatial))
    # Every tensor whose address the kernel reads stays referenced until the call returns.
    present = [t.contiguous() for t in outputs]
    passed, bypass_stride = _bypass_layout(bypass)
    kernel_alpha = _kernel_alpha(alpha, template.dtype)
    kernel_edge_weights = (None if edge_weights is None
                           else _kernel_alpha(edge_weights, template.dtype))
    head, tail, _ = _partial_channel_call_args(code, present, slots, passed, bypass_stride,
                                               kernel_alpha, kernel_edge_weights, groups,
                                               workspace=False)
    with _on_device(template.device):
        _C.partial_channel_forward(*head, out.data_ptr(), *tail)
    return out


def partial_channel_backward(
    grad: Tensor, outputs: list[Tensor], slots: list[int], bypass: list[Tensor], alpha: Tensor,
    edge_weights: Tensor | None, groups: int, edge_weights_grad: bool, may_alias: bool = True,
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """Gradients of the outputs (M), the bypass tensors (E, or none when groups == 1),
    alpha (E, K) and edge_weights ((E,) when ``edge_weights_grad``, else (0,)) for the
    upstream ``grad`` (N, C, ...). ``may_alias`` as in :func:`backward`."""
    template = outputs[0]
    code = _kernel_dtype(template.device, template.dtype, _PARTIAL, _PARTIAL_COMPILED)
    if code is None:
        return _partial_channel_reference_backward(grad, outputs, slots, bypass, alpha,
                                                   edge_weights, groups, edge_weights_grad)
    present = [t.contiguous() for t in outputs]
    passed, bypass_stride = _bypass_layout(bypass)
    kernel_alpha = _kernel_alpha(alpha, template.dtype)
    kernel_edge_weights = (None if edge_weights is None
                           else _kernel_alpha(edge_weights, template.dtype))
    grad = grad.to(template.dtype).contiguous()
    grads = _gradients(len(present), template, may_alias)
    bypass_grads = _gradients(len(passed), passed[0], may_alias) if passed else []
    grad_alpha = torch.empty_like(kernel_alpha)
    grad_edge_weights = kernel_alpha.new_empty(alpha.shape[0] if edge_weights_grad else 0)
    head, tail, _workspace = _partial_channel_call_args(
        code, present, slots, passed, bypass_stride, kernel_alpha, kernel_edge_weights, groups,
        workspace=True)
    with _on_device(template.device):
        _C.partial_channel_backward(
            *head, grad.data_ptr(), [g.data_ptr() for g in grads],
            [g.data_ptr() for g in bypass_grads], grad_alpha.data_ptr(),
            grad_edge_weights.data_ptr() if edge_weights_grad else 0, *tail)
    weights_dtype = (alpha if edge_weights is None else edge_weights).dtype
    return grads, bypass_grads, grad_alpha.to(alpha.dtype), grad_edge_weights.to(weights_dtype)


def _gradients(count: int, like: Tensor, may_alias: bool) -> list[Tensor]:
    """``count`` uninitialised tensors shaped like ``like`` (contiguous): views of one
    cached block when large and ``may_alias``, as mixed_op's gradients are."""
    if may_alias and like.numel() * like.element_size() >= _SHARED_GRAD_BYTES:
        return list(_gradient_block(count, like).unbind(0))
    return [torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in range(count)]


def _partial_channel_reference_backward(grad, outputs, slots, bypass, alpha, edge_weights,
                                        groups, edge_weights_grad):
    """The backward in plain torch ops, written out (see ``_reference_backward``). With
    w_e the edge weights, p = softmax(alpha) and the upstream gradient unshuffled into its
    operated part G_op (N, C/g, ...) and bypass part G_bypass (N, C - C/g, ...):
    grad output_ek = w_e p_ek G_op, grad bypass_e = w_e G_bypass, grad alpha_e is the
    softmax Jacobian applied to w_e <G_op, output_ek>, and grad w_e =
    sum_k p_ek <G_op, output_ek> + <G_bypass, bypass_e>."""
    accumulate = torch.float64 if grad.dtype == torch.float64 else torch.float32
    edges, ops = alpha.shape
    probabilities = torch.softmax(alpha.to(accumulate), dim=-1)
    scales = (torch.ones(edges, dtype=accumulate, device=alpha.device) if edge_weights is None
              else edge_weights.to(accumulate))
    channels_per_group = outputs[0].shape[1]
    # The inverse of the shuffle with g groups is the shuffle with C/g groups.
    unshuffled = channel_shuffle(grad.to(accumulate), channels_per_group)
    grad_operated = unshuffled[:, :channels_per_group]
    grad_bypass = unshuffled[:, channels_per_group:]
    dots = torch.zeros(edges * ops, dtype=accumulate, device=alpha.device)
    grads = []
    for output, slot in zip(outputs, slots):
        coefficient = scales[slot // ops] * probabilities.flatten()[slot]
        grads.append((coefficient * grad_operated).to(output.dtype))
        dots[slot] = (grad_operated * output.to(accumulate)).sum()
    dots = dots.view(edges, ops)
    bypass_grads = [(scales[e] * grad_bypass).to(t.dtype) for e, t in enumerate(bypass)]
    weighted = scales.unsqueeze(-1) * dots
    grad_alpha = probabilities * (weighted - (probabilities * weighted).sum(-1, keepdim=True))
    weights_dtype = (alpha if edge_weights is None else edge_weights).dtype
    grad_edge_weights = alpha.new_empty(0, dtype=weights_dtype)
    if edge_weights_grad:
        grad_edge_weights = (probabilities * dots).sum(-1)
        for e, t in enumerate(bypass):
            grad_edge_weights[e] += (grad_bypass * t.to(accumulate)).sum()
    return grads, bypass_grads, grad_alpha.to(alpha.dtype), grad_edge_weights.to(weights_dtype)


def _check_partial_channel(outputs: list[Tensor], slots: list[int], bypass: list[Tensor],
                           alpha: Tensor, edge_weights: Tensor | None, groups: int) -> None:
    """Cheap checks for direct callers of the op (the public wrapper checks more)."""
    _check_grid(outputs, slots, alpha)
    edges = alpha.shape[0]
    template = outputs[0]
    if template.dim() < 2:
        raise ValueError(f"outputs must be (N, C/g, ...), got shape {tuple(template.shape)}")
    if groups < 1 or len(bypass) != (edges if groups > 1 else 0):
        raise ValueError(f"bypass must hold E={edges} tensors when groups > 1 and none when "
                         f"groups == 1, got {len(bypass)} with groups={groups}")
    batch, channels_per_group, *spatial = template.shape
    expected = (batch, (groups - 1) * channels_per_group, *spatial)
    if any((tuple(t.shape), t.dtype, t.device) != (expected, template.dtype, template.device)
           for t in bypass):
        raise ValueError(f"bypass tensors must be {expected} of the outputs' dtype and device")
    if edge_weights is not None and tuple(edge_weights.shape) != (edges,):
        raise ValueError(f"edge_weights must be (E,) = ({edges},), "
                         f"got {tuple(edge_weights.shape)}")


def _checked_partial_channel_forward(outputs, slots, bypass, alpha, edge_weights, groups):
    _check_partial_channel(outputs, slots, bypass, alpha, edge_weights, groups)
    return partial_channel_forward(outputs, slots, bypass, alpha, edge_weights, groups)


def _checked_partial_channel_backward(grad, outputs, slots, bypass, alpha, edge_weights, groups,
                                      edge_weights_grad):
    _check_partial_channel(outputs, slots, bypass, alpha, edge_weights, groups)
    if edge_weights_grad and edge_weights is None:
        raise ValueError("edge_weights_grad needs edge_weights")
    return partial_channel_backward(grad, outputs, slots, bypass, alpha, edge_weights, groups,
                                    edge_weights_grad, may_alias=False)


for _device in ("cpu", "cuda"):
    torch.library.register_kernel("pynas::partial_channel_combine", _device,
                                  _checked_partial_channel_forward)
    torch.library.register_kernel("pynas::partial_channel_combine_backward", _device,
                                  _checked_partial_channel_backward)
