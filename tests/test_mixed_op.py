"""pynas.ops.mixed_op against its PyTorch reference, gradcheck, opcheck, torch.compile,
and bad input."""
from __future__ import annotations

import random
import warnings

import pytest
import torch

from pynas import _backend
from pynas.ops import mixed_op, mixed_op_reference

SHAPES = [(7,), (3, 5), (2, 3, 17), (2, 3, 4, 5), (2, 1, 3, 5, 7), (64, 9), (4099,)]


def random_grid(rng, edges, ops, shape, dtype, device="cpu", none_rate=0.3, grad=True):
    """An E x K grid of random tensors, some None, never all None."""
    grid = [[None if rng.random() < none_rate else
             torch.randn(shape, dtype=dtype, device=device, requires_grad=grad)
             for _ in range(ops)] for _ in range(edges)]
    if all(t is None for edge in grid for t in edge):
        grid[rng.randrange(edges)][rng.randrange(ops)] = torch.randn(
            shape, dtype=dtype, device=device, requires_grad=grad)
    alpha = torch.randn(edges, ops, dtype=torch.float64 if dtype == torch.float64
                        else torch.float32, device=device, requires_grad=grad)
    return grid, alpha


def present(grid):
    return [t for edge in grid for t in edge if t is not None]


def assert_matches_reference(grid, alpha, atol, rtol, one_edge=False):
    """Forward and every gradient against the reference run in float64 (the oracle), so
    the tolerance measures this kernel's rounding, not the reference's."""
    outputs = grid[0] if one_edge else grid
    logits = alpha[0] if one_edge else alpha
    result = mixed_op(outputs, logits)
    upstream = torch.randn_like(result)
    leaves = [*present(grid), alpha]
    got = torch.autograd.grad(result, leaves, upstream)

    def double(t):
        return None if t is None else t.detach().double().requires_grad_()

    grid64 = [[double(t) for t in edge] for edge in grid]
    alpha64 = double(alpha)
    expected = mixed_op_reference(grid64, alpha64)
    want = torch.autograd.grad(expected, [*present(grid64), alpha64], upstream.double())
    torch.testing.assert_close(result, expected.to(result.dtype), atol=atol, rtol=rtol)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.to(g.dtype), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_over_shapes(shape, dtype):
    rng = random.Random()  # fresh inputs every run
    # float32: alpha's gradient sums up to 4099 products, rounded in float32 (~1e-7 each)
    tolerance = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12,
                                                                                 rtol=1e-12)
    for _ in range(3):
        grid, alpha = random_grid(rng, rng.randint(1, 14), rng.randint(1, 8), shape, dtype)
        assert_matches_reference(grid, alpha, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_backward_with_streaming_stores_matches_reference(dtype):
    """A backward writing 8 MiB of gradients or more uses the streaming-store loop
    (csrc/cpu/mixed_op.cpp); an odd element count exercises its unaligned tail."""
    rng = random.Random()
    numel = (1 << 20) // torch.finfo(dtype).bits * 8 + 3  # just over 1 MiB per gradient
    grid, alpha = random_grid(rng, 2, 8, (numel,), dtype, none_rate=0.0)
    tolerance = dict(atol=1e-3, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10,
                                                                                rtol=1e-10)
    assert_matches_reference(grid, alpha, **tolerance)


def test_large_gradients_reuse_a_cached_block_only_once_it_is_free():
    """Gradients of 1 MiB or more come from one cached host block (csrc/host_pool.h): a
    block is handed out again only after every gradient viewing it is gone."""
    if "cpu" not in _backend.backends():
        pytest.skip("pynas._C is not built")
    from pynas import ops

    ops.empty_cache()
    grid, alpha = random_grid(random.Random(), 2, 4, (2**18,), torch.float32, none_rate=0.0)
    leaves = present(grid)

    def gradients():
        result = mixed_op(grid, alpha)
        return torch.autograd.grad(result, leaves, torch.ones_like(result))

    def span(grads):
        starts = [g.data_ptr() for g in grads]
        return min(starts), max(starts) + grads[0].numel() * grads[0].element_size()

    first = gradients()
    kept = [g.clone() for g in first]
    second = gradients()  # `first` is alive: a different block
    low, high = span(first)
    assert span(second)[1] <= low or span(second)[0] >= high
    for g, copy in zip(first, kept):
        torch.testing.assert_close(g, copy, rtol=0, atol=0)
    address = span(first)[0]
    del first, g
    assert ops.cached_bytes() >= 8 * 2**20
    third = gradients()  # reuses the block `first` gave back
    assert span(third)[0] == address
    torch.testing.assert_close(third[0], kept[0], rtol=0, atol=0)
    del second, third
    ops.empty_cache()
    assert ops.cached_bytes() == 0
    ops.set_cache_limit(0)
    try:
        del_now = gradients()
        del del_now
        assert ops.cached_bytes() == 0  # nothing kept with the cache off
    finally:
        ops.set_cache_limit(512 * 2**20)
    with pytest.raises(ValueError, match="limit_bytes"):
        ops.set_cache_limit(-1)


@pytest.mark.parametrize("edges", [1, 2, 5, 14])
@pytest.mark.parametrize("ops", [1, 2, 7, 8])
@pytest.mark.parametrize("none_rate", [0.0, 0.5])
def test_matches_reference_over_grids(edges, ops, none_rate):
    rng = random.Random(edges * 100 + ops + int(none_rate * 10))
    grid, alpha = random_grid(rng, edges, ops, (3, 4, 5), torch.float32, none_rate=none_rate)
    assert_matches_reference(grid, alpha, atol=1e-5, rtol=1e-5)


def test_one_edge_form_equals_node_form():
    rng = random.Random(1)
    grid, alpha = random_grid(rng, 1, 8, (2, 3, 9), torch.float32)
    assert_matches_reference(grid, alpha, atol=1e-5, rtol=1e-5, one_edge=True)
    torch.testing.assert_close(mixed_op(grid[0], alpha[0]), mixed_op(grid, alpha))


def test_zero_op_takes_part_in_softmax():
    x = torch.randn(10)
    alpha = torch.tensor([0.0, 0.0])
    # half the weight goes to the absent zero op
    torch.testing.assert_close(mixed_op([x, None], alpha), 0.5 * x)


def test_non_contiguous_inputs():
    rng = random.Random(2)
    base = [torch.randn(6, 10, 4, requires_grad=True) for _ in range(5)]
    views = [b.transpose(0, 2)[:, ::2] for b in base]  # strided, not contiguous
    assert not any(v.is_contiguous() for v in views)
    grid = [views[:3] + [None], views[3:] + [None, None]]
    alpha = torch.randn(2, 4, requires_grad=True)
    assert_matches_reference(grid, alpha, atol=1e-5, rtol=1e-5)
    del rng


def test_empty_tensors():
    grid = [[torch.randn(0, 3, requires_grad=True), None]]
    alpha = torch.randn(1, 2, requires_grad=True)
    result = mixed_op(grid, alpha)
    assert result.shape == (0, 3)
    grad_alpha, = torch.autograd.grad(result.sum() + alpha.sum() * 0, [alpha])
    torch.testing.assert_close(grad_alpha, torch.zeros(1, 2))


def test_gradcheck_float64():
    rng = random.Random(3)
    grid, alpha = random_grid(rng, 3, 4, (2, 5), torch.float64, none_rate=0.25)
    leaves = present(grid)
    slots = [(e, k) for e, edge in enumerate(grid) for k, t in enumerate(edge) if t is not None]

    def function(alpha, *tensors):
        rebuilt = [[None] * 4 for _ in range(3)]
        for (e, k), t in zip(slots, tensors):
            rebuilt[e][k] = t
        return mixed_op(rebuilt, alpha)

    assert torch.autograd.gradcheck(function, (alpha, *leaves))


def test_opcheck():
    rng = random.Random(4)
    for dtype in (torch.float32, torch.float64):
        grid, alpha = random_grid(rng, 3, 5, (4, 6), dtype, none_rate=0.3)
        slots = [e * 5 + k for e, edge in enumerate(grid) for k, t in enumerate(edge)
                 if t is not None]
        torch.library.opcheck(torch.ops.pynas.mixed_op.default, (present(grid), slots, alpha))
        grad = torch.randn(4, 6, dtype=dtype)
        detached = [t.detach() for t in present(grid)]
        torch.library.opcheck(torch.ops.pynas.mixed_op_backward.default,
                              (grad, detached, slots, alpha.detach()))


def test_torch_compile_fullgraph_forward_and_backward():
    rng = random.Random(5)
    grid, alpha = random_grid(rng, 3, 8, (4, 3, 5), torch.float32, none_rate=0.2)

    def node(grid, alpha):
        return torch.relu(mixed_op(grid, alpha)) * 2

    compiled = torch.compile(node, fullgraph=True)
    result = compiled(grid, alpha)
    expected = node(grid, alpha)
    torch.testing.assert_close(result, expected)
    leaves = [*present(grid), alpha]
    got = torch.autograd.grad(result.sum(), leaves)
    want = torch.autograd.grad(expected.sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_alpha_propagates_like_softmax(value):
    grid = [[torch.randn(8), torch.randn(8), None], [torch.randn(8), None, torch.randn(8)]]
    alpha = torch.randn(2, 3)
    alpha[0, 1] = value
    torch.testing.assert_close(mixed_op(grid, alpha), mixed_op_reference(grid, alpha),
                               equal_nan=True)


def test_cpu_float16_falls_back_to_reference_with_one_warning():
    _backend._warned.discard("mixed_op-cpu-torch.float16")
    grid = [[torch.randn(5, dtype=torch.float16), None]]
    alpha = torch.randn(1, 2)
    with pytest.warns(RuntimeWarning, match="PyTorch reference"):
        result = mixed_op(grid, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed_op(grid, alpha)  # the second call is silent
    torch.testing.assert_close(result, mixed_op_reference(grid, alpha))


def test_fallback_backward_matches_reference_and_passes_opcheck():
    # float64 on CUDA and float16 on the CPU run the reference, the backward written out
    grid = [[torch.randn(6, dtype=torch.float16, requires_grad=True), None,
             torch.randn(6, dtype=torch.float16, requires_grad=True)]]
    alpha = torch.randn(1, 3, requires_grad=True)
    leaves = [grid[0][0], grid[0][2], alpha]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = torch.autograd.grad(mixed_op(grid, alpha).float().sum(), leaves)
        torch.library.opcheck(torch.ops.pynas.mixed_op.default,
                              ([grid[0][0], grid[0][2]], [0, 2], alpha))
    want = torch.autograd.grad(mixed_op_reference(grid, alpha).float().sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=1e-3)


def test_compiled_cpu_backend_is_used():
    assert "cpu" in _backend.backends(), f"extension not loaded: {_backend.IMPORT_ERROR}"


x = torch.randn(4)


@pytest.mark.parametrize(
    "outputs, alpha, error, match",
    [
        ([x, x], torch.randn(3), ValueError, "outputs has 2 entries but alpha has K=3"),
        ([[x, x]] * 2, torch.randn(3, 2), ValueError, "outputs has 2 edges but alpha has E=3"),
        ([[x, x], [x]], torch.randn(2, 2), ValueError, r"outputs\[1\] has 1 entries"),
        ([x, torch.randn(5)], torch.randn(2), ValueError, r"outputs\[1\] has shape"),
        ([x, x.double()], torch.randn(2), TypeError, r"outputs\[1\] has dtype"),
        ([x.int(), x.int()], torch.randn(2), TypeError, r"outputs\[0\] must be floating"),
        ([x, "x"], torch.randn(2), TypeError, r"outputs\[1\] must be a Tensor or None"),
        ([], torch.randn(0), ValueError, "outputs is empty"),
        ([None, None], torch.randn(2), ValueError, "every entry is None"),
        ([x, x], torch.randn(1, 1, 2), ValueError, "alpha must have shape"),
        ([x, x], torch.randn(2).int(), TypeError, "alpha must be a floating"),
        ([x, x], [0.0, 1.0], TypeError, "alpha must be a Tensor"),
        (x, torch.randn(2), TypeError, "outputs must be a list"),
        ([x, x], torch.randn(2, 2), TypeError, r"outputs\[0\] must be a list of K tensors"),
    ],
)
def test_bad_input_raises_clear_error(outputs, alpha, error, match):
    with pytest.raises(error, match=match):
        mixed_op(outputs, alpha)


def test_bad_input_to_the_raw_op_raises():
    with pytest.raises(ValueError, match="slots"):
        torch.ops.pynas.mixed_op([x, x], [0, 7], torch.randn(1, 2))
    with pytest.raises(ValueError, match="slots"):
        torch.ops.pynas.mixed_op([x, x], [0, 0], torch.randn(1, 2))
    with pytest.raises(ValueError, match="share one shape"):
        torch.ops.pynas.mixed_op([x, torch.randn(3)], [0, 1], torch.randn(1, 2))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7,), (64, 16, 32, 32), (3, 5, 7, 9), (4099,)])
def test_cuda_matches_reference(dtype, shape):
    rng = random.Random(6)
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for edges, ops in ((1, 8), (5, 8), (14, 8), (20, 8)):  # 20*8 exceeds one launch's slots
        grid, alpha = random_grid(rng, edges, ops, shape, dtype, device="cuda")
        assert_matches_reference(grid, alpha, atol=tolerance, rtol=tolerance)


@pytest.mark.cuda
def test_cuda_unaligned_and_non_contiguous():
    base = torch.randn(5, 1001, device="cuda", requires_grad=True)
    views = [base[i, 1:] for i in range(5)]  # 4-byte offset: not 16-byte aligned
    grid = [views[:3] + [None], views[3:] + [None, None]]
    alpha = torch.randn(2, 4, device="cuda", requires_grad=True)
    assert_matches_reference(grid, alpha, atol=1e-5, rtol=1e-5)
    strided = [torch.randn(9, 6, device="cuda").t() for _ in range(3)]
    torch.testing.assert_close(mixed_op(strided, torch.zeros(3, device="cuda")),
                               sum(strided) / 3)


@pytest.mark.cuda
def test_cuda_compile_and_opcheck():
    rng = random.Random(7)
    grid, alpha = random_grid(rng, 4, 8, (2, 8, 5, 5), torch.float32, device="cuda")
    slots = [e * 8 + k for e, edge in enumerate(grid) for k, t in enumerate(edge)
             if t is not None]
    torch.library.opcheck(torch.ops.pynas.mixed_op.default, (present(grid), slots, alpha))
    compiled = torch.compile(lambda g, a: mixed_op(g, a), fullgraph=True)
    torch.testing.assert_close(compiled(grid, alpha), mixed_op_reference(grid, alpha))


@pytest.mark.cuda
def test_cuda_mismatched_devices_raise():
    with pytest.raises(ValueError, match="alpha is on"):
        mixed_op([torch.randn(3, device="cuda")], torch.randn(1))
    with pytest.raises(ValueError, match=r"outputs\[1\] is on"):
        mixed_op([torch.randn(3, device="cuda"), torch.randn(3)], torch.randn(2, device="cuda"))
