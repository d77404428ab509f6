"""pynas.ops.partial_channel_combine against its PyTorch reference and the naive PC-DARTS
form, gradcheck, opcheck, torch.compile, and bad input."""
from __future__ import annotations

import random
import warnings

import pytest
import torch

from pynas import _backend
from pynas.ops import partial_channel_combine, partial_channel_combine_reference


def random_node(rng, edges, ops, groups, batch, channels_per_group, spatial, dtype,
                device="cpu", none_rate=0.3, edge_weights=True):
    """The E x K operation outputs (some None, never all), the E bypass tensors (None when
    groups == 1), alpha (E, K) and the edge weights (E,) or None, all leaves."""
    def leaf(channels):
        return torch.randn(batch, channels, *spatial, dtype=dtype, device=device,
                           requires_grad=True)

    grid = [[None if rng.random() < none_rate else leaf(channels_per_group)
             for _ in range(ops)] for _ in range(edges)]
    if all(t is None for edge in grid for t in edge):
        grid[rng.randrange(edges)][rng.randrange(ops)] = leaf(channels_per_group)
    bypass = [leaf((groups - 1) * channels_per_group) for _ in range(edges)] if groups > 1 else None
    real = torch.float64 if dtype == torch.float64 else torch.float32
    alpha = torch.randn(edges, ops, dtype=real, device=device, requires_grad=True)
    weights = (torch.rand(edges, dtype=real, device=device).requires_grad_() if edge_weights
               else None)
    return grid, bypass, alpha, weights


def leaves(grid, bypass, alpha, edge_weights):
    tensors = [t for edge in grid for t in edge if t is not None] + list(bypass or [])
    return tensors + [t for t in (alpha, edge_weights) if t is not None and t.requires_grad]


def naive(inputs, grid, alpha, groups, edge_weights):
    """PC-DARTS as the paper's code writes it, from each edge's input x (N, C, ...): split off
    the first C/g channels (the operations' outputs stand in for ops(x[:, :C/g])), weighted
    sum, cat with the other channels, shuffle, then the edge-weighted sum of the node."""
    total = 0
    for e, (x, edge) in enumerate(zip(inputs, grid)):
        batch, channels, *spatial = x.shape
        bypass = x[:, channels // groups:]
        weights = torch.softmax(alpha[e], dim=-1)
        mixed = sum(w * out for w, out in zip(weights, edge) if out is not None)
        combined = torch.cat([mixed, bypass], dim=1)
        shuffled = (combined.view(batch, groups, channels // groups, *spatial).transpose(1, 2)
                    .reshape(batch, channels, *spatial))
        total = total + (1 if edge_weights is None else edge_weights[e]) * shuffled
    return total


def assert_matches_reference(grid, bypass, alpha, groups, edge_weights, atol, rtol,
                             one_edge=False):
    """Forward and every gradient against the reference run in float64 (the oracle)."""
    if one_edge:
        result = partial_channel_combine(grid[0], None if bypass is None else bypass[0], alpha[0],
                                         groups, None if edge_weights is None else edge_weights[0])
    else:
        result = partial_channel_combine(grid, bypass, alpha, groups, edge_weights)
    upstream = torch.randn_like(result)
    inputs = leaves(grid, bypass, alpha, edge_weights)
    got = torch.autograd.grad(result, inputs, upstream)

    def double(t):
        return None if t is None else t.detach().double().requires_grad_(t.requires_grad)

    grid64 = [[double(t) for t in edge] for edge in grid]
    bypass64 = None if bypass is None else [double(t) for t in bypass]
    alpha64, weights64 = double(alpha), double(edge_weights)
    expected = partial_channel_combine_reference(grid64, bypass64 or [], alpha64, groups,
                                                 weights64)
    want = torch.autograd.grad(expected, leaves(grid64, bypass64, alpha64, weights64),
                               upstream.double())
    torch.testing.assert_close(result, expected.to(result.dtype), atol=atol, rtol=rtol)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.to(g.dtype), atol=atol, rtol=rtol)


TOLERANCE = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-12,
                                                                          rtol=1e-12)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_matches_reference_over_shapes(groups, dtype):
    rng = random.Random()  # fresh inputs every run
    for _ in range(4):
        spatial = rng.choice([(), (1,), (5, 7), (3, 3), (8, 8), (9,), (2, 3, 5)])
        node = random_node(rng, rng.randint(1, 4), rng.randint(1, 8), groups, rng.randint(1, 3),
                           rng.randint(1, 5), spatial, dtype, none_rate=rng.choice([0, 0.3]),
                           edge_weights=rng.random() < 0.7)
        assert_matches_reference(*node[:3], groups, node[3], **TOLERANCE[dtype])


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_reference_equals_naive_form(groups):
    rng = random.Random()
    edges, ops, channels = rng.randint(1, 4), 8, 2 * groups * rng.randint(1, 3)
    inputs = [torch.randn(2, channels, 5, 3, dtype=torch.float64) for _ in range(edges)]
    grid = [[None if k == 0 else torch.randn(2, channels // groups, 5, 3, dtype=torch.float64)
             for k in range(ops)] for _ in range(edges)]
    alpha = torch.randn(edges, ops, dtype=torch.float64)
    edge_weights = torch.softmax(torch.randn(edges, dtype=torch.float64), dim=0)
    bypass = [x[:, channels // groups:] for x in inputs]
    for weights in (edge_weights, None):
        want = naive(inputs, grid, alpha, groups, weights)
        torch.testing.assert_close(
            partial_channel_combine_reference(grid, bypass, alpha, groups, weights), want)
        torch.testing.assert_close(partial_channel_combine(grid, bypass, alpha, groups, weights),
                                   want)


def test_one_edge_form_equals_node_form():
    rng = random.Random(1)
    grid, bypass, alpha, weights = random_node(rng, 1, 8, 4, 2, 3, (5, 5), torch.float32)
    assert_matches_reference(grid, bypass, alpha, 4, weights, atol=1e-5, rtol=1e-5,
                             one_edge=True)
    torch.testing.assert_close(partial_channel_combine(grid[0], bypass[0], alpha[0], 4),
                               partial_channel_combine(grid, bypass, alpha, 4))
    torch.testing.assert_close(  # a () edge weight is the (1,) one
        partial_channel_combine(grid[0], bypass[0], alpha[0], 4, weights.detach()[0]),
        partial_channel_combine(grid, bypass, alpha, 4, weights.detach()))


def test_groups_one_takes_no_bypass():
    """g = 1 is DARTS' mixed op summed over edges: bypass is None, a list of None or
    tensors with 0 channels, and the shuffle is the identity."""
    rng = random.Random(2)
    grid, _, alpha, weights = random_node(rng, 3, 4, 1, 2, 6, (4, 4), torch.float64)
    want = partial_channel_combine_reference(grid, [], alpha, 1, weights)
    empty = [torch.empty(2, 0, 4, 4, dtype=torch.float64) for _ in range(3)]
    for bypass in (None, [None] * 3, empty):
        torch.testing.assert_close(partial_channel_combine(grid, bypass, alpha, 1, weights), want)
    assert_matches_reference(grid, None, alpha, 1, weights, atol=1e-12, rtol=1e-12)


def test_zero_op_takes_part_in_softmax():
    operated, bypass = torch.randn(1, 2, 3, 3), torch.randn(1, 6, 3, 3)
    result = partial_channel_combine([operated, None], bypass, torch.zeros(2), 4)
    # half the weight goes to the absent zero op; channel a*4 holds operated channel a
    torch.testing.assert_close(result[:, ::4], 0.5 * operated)
    torch.testing.assert_close(result[:, 1::4], bypass[:, :2])
    torch.testing.assert_close(result[:, 3::4], bypass[:, 4:])


@pytest.mark.parametrize("layout", ["slice", "strided", "mixed"])
def test_non_contiguous_inputs(layout):
    """Channel slices x[:, C/g:] of contiguous inputs x (what PC-DARTS bypasses on a normal
    edge) are read in place; other layouts, or samples apart by different strides, are
    copied once."""
    base = [torch.randn(6, 3, 4, 2, requires_grad=True) for _ in range(4)]
    outputs = [b.permute(3, 2, 0, 1)[:, ::2] for b in base]  # (2, 2, 6, 3), strided
    inputs = [torch.randn(2, 8, 6, 3, requires_grad=True) for _ in range(2)]
    if layout == "strided":
        inputs = [torch.randn(2, 8, 3, 6, requires_grad=True).transpose(2, 3) for _ in range(2)]
    bypass = [x[:, 2:] for x in inputs]
    if layout == "mixed":
        bypass[1] = torch.randn(2, 6, 6, 3, requires_grad=True)
    assert not any(t.is_contiguous() for t in outputs + bypass[:1])
    grid = [outputs[:2] + [None], [None] + outputs[2:]]
    alpha = torch.randn(2, 3, requires_grad=True)
    weights = torch.rand(2, requires_grad=True)
    assert_matches_reference(grid, bypass, alpha, 4, weights, atol=1e-5, rtol=1e-5)
    # the same, one sample: the stride between samples no longer matters
    single = [[t if t is None else t[:1] for t in edge] for edge in grid]
    assert_matches_reference(single, [t[:1] for t in bypass], alpha, 4, weights, atol=1e-5,
                             rtol=1e-5)


def test_empty_batch():
    grid = [[torch.randn(0, 2, 3, 3, requires_grad=True), None]]
    bypass = [torch.randn(0, 6, 3, 3, requires_grad=True)]
    alpha = torch.randn(1, 2, requires_grad=True)
    weights = torch.rand(1, requires_grad=True)
    result = partial_channel_combine(grid, bypass, alpha, 4, weights)
    assert result.shape == (0, 8, 3, 3)
    grad_alpha, grad_weights = torch.autograd.grad(result.sum(), [alpha, weights])
    torch.testing.assert_close(grad_alpha, torch.zeros(1, 2))
    torch.testing.assert_close(grad_weights, torch.zeros(1))


@pytest.mark.parametrize("groups", [1, 4])
def test_gradcheck_float64(groups):
    rng = random.Random(3)
    grid, bypass, alpha, weights = random_node(rng, 3, 4, groups, 2, 1, (3,), torch.float64,
                                               none_rate=0.25)
    slots = [(e, k) for e, edge in enumerate(grid) for k, t in enumerate(edge) if t is not None]
    bypass = bypass or []

    def function(alpha, weights, *tensors):
        rebuilt = [[None] * 4 for _ in range(3)]
        for (e, k), t in zip(slots, tensors):
            rebuilt[e][k] = t
        return partial_channel_combine(rebuilt, list(tensors[len(slots):]) or None, alpha,
                                       groups, weights)

    present = [t for edge in grid for t in edge if t is not None]
    assert torch.autograd.gradcheck(function, (alpha, weights, *present, *bypass))
    assert torch.autograd.gradcheck(function, (alpha, None, *present, *bypass))


def test_opcheck():
    rng = random.Random(4)
    for dtype, groups, with_weights in ((torch.float32, 4, True), (torch.float64, 2, False),
                                        (torch.float32, 1, True)):
        grid, bypass, alpha, weights = random_node(rng, 3, 5, groups, 2, 3, (4, 5), dtype,
                                                   edge_weights=with_weights)
        present = [t for edge in grid for t in edge if t is not None]
        slots = [e * 5 + k for e, edge in enumerate(grid) for k, t in enumerate(edge)
                 if t is not None]
        bypass = bypass or []
        torch.library.opcheck(torch.ops.pynas.partial_channel_combine.default,
                              (present, slots, bypass, alpha, weights, groups))
        grad = torch.randn(2, 3 * groups, 4, 5, dtype=dtype)
        detach = [t.detach() for t in present], [t.detach() for t in bypass]
        torch.library.opcheck(
            torch.ops.pynas.partial_channel_combine_backward.default,
            (grad, *detach[:1], slots, detach[1], alpha.detach(),
             None if weights is None else weights.detach(), groups, with_weights))


def test_torch_compile_fullgraph_forward_and_backward():
    rng = random.Random(5)
    grid, bypass, alpha, weights = random_node(rng, 3, 8, 4, 2, 4, (5, 5), torch.float32,
                                               none_rate=0.2)

    def node(grid, bypass, alpha, weights):
        return torch.relu(partial_channel_combine(grid, bypass, alpha, 4, weights)) * 2

    compiled = torch.compile(node, fullgraph=True)
    result = compiled(grid, bypass, alpha, weights)
    expected = node(grid, bypass, alpha, weights)
    torch.testing.assert_close(result, expected)
    inputs = leaves(grid, bypass, alpha, weights)
    got = torch.autograd.grad(result.sum(), inputs)
    want = torch.autograd.grad(expected.sum(), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_cpu_float16_falls_back_to_reference_with_one_warning():
    _backend._warned.discard("partial_channel_combine-cpu-torch.float16")
    rng = random.Random(6)
    grid, bypass, alpha, weights = random_node(rng, 2, 3, 2, 2, 2, (3,), torch.float16)
    with pytest.warns(RuntimeWarning, match="PyTorch reference"):
        result = partial_channel_combine(grid, bypass, alpha, 2, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.autograd.grad(partial_channel_combine(grid, bypass, alpha, 2, weights).sum(),
                                  leaves(grid, bypass, alpha, weights))
    torch.testing.assert_close(
        result, partial_channel_combine_reference(grid, bypass, alpha, 2, weights))
    want = torch.autograd.grad(
        partial_channel_combine_reference(grid, bypass, alpha, 2, weights).float().sum(),
        leaves(grid, bypass, alpha, weights))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-2, rtol=1e-2)


def test_compiled_cpu_kernel_is_used():
    from pynas import _C

    assert _C is not None and hasattr(_C, "partial_channel_forward"), _backend.IMPORT_ERROR


x = torch.randn(2, 2, 3, 3)  # an operated part: N = 2, C/g = 2
by = torch.randn(2, 6, 3, 3)  # its bypass for g = 4


@pytest.mark.parametrize(
    "outputs, bypass, alpha, groups, weights, error, match",
    [
        ([x, x], by, torch.randn(3), 4, None, ValueError, "outputs has 2 entries but alpha"),
        ([x, torch.randn(2, 3, 3, 3)], by, torch.randn(2), 4, None, ValueError,
         r"outputs\[1\] has shape"),
        ([x, x.double()], by, torch.randn(2), 4, None, TypeError, r"outputs\[1\] has dtype"),
        ([x, x], torch.randn(2, 5, 3, 3), torch.randn(2), 4, None, ValueError,
         "not divisible by groups=4"),
        ([x, x], torch.randn(2, 10, 3, 3), torch.randn(2), 4, None, ValueError,
         "bypass has 10 channels but the outputs have C/g = 2: groups=4 needs 6"),
        ([x, x], torch.randn(2, 6, 3, 4), torch.randn(2), 4, None, ValueError,
         r"bypass has shape \(2, 6, 3, 4\)"),
        ([x, x], torch.randn(3, 6, 3, 3), torch.randn(2), 4, None, ValueError, "bypass has shape"),
        ([x, x], by.double(), torch.randn(2), 4, None, TypeError, "bypass has dtype"),
        ([x, x], None, torch.randn(2), 4, None, TypeError, r"bypass must be a Tensor \(groups"),
        ([x, x], "by", torch.randn(2), 4, None, TypeError, "bypass must be a Tensor or None"),
        ([x, x], by, torch.randn(2), 0, None, ValueError, "groups must be >= 1"),
        ([x, x], by, torch.randn(2), 4.0, None, TypeError, "groups must be an int"),
        ([x, x], by, torch.randn(2), True, None, TypeError, "groups must be an int"),
        ([x, x], by, torch.randn(1, 1, 2), 4, None, ValueError, "alpha must have shape"),
        ([x, x], by, torch.randn(2).int(), 4, None, TypeError, "alpha must be a floating"),
        ([x, x], by, [0.0, 1.0], 4, None, TypeError, "alpha must be a Tensor"),
        ([[x, x]], [by], torch.randn(1, 2), 4, torch.rand(2), ValueError,
         r"edge_weights must have shape \(E,\) = \(1,\)"),
        ([x, x], by, torch.randn(2), 4, torch.rand(2), ValueError,
         r"edge_weights must have shape \(\) or \(1,\)"),
        ([x, x], by, torch.randn(2), 4, torch.ones(1).int(), TypeError,
         "edge_weights must be floating"),
        ([x, x], by, torch.randn(2), 4, [1.0], TypeError, "edge_weights must be a Tensor"),
        ([[x, x]] * 2, [by], torch.randn(2, 2), 4, None, ValueError,
         "bypass has 1 entries but alpha has E=2"),
        ([[x, x]] * 2, by, torch.randn(2, 2), 4, None, TypeError,
         r"bypass must be a list of E=2 tensors"),
        ([[x, x]] * 2, [by, torch.randn(2, 5, 3, 3)], torch.randn(2, 2), 4, None, ValueError,
         r"bypass\[1\] has 5 channels"),
        ([x[0, 0, 0], x[0, 0, 0]], by, torch.randn(2), 4, None, ValueError,
         r"outputs must be \(N, C/g, \.\.\.\)"),
        ([None, None], by, torch.randn(2), 4, None, ValueError, "every entry is None"),
        (x, by, torch.randn(2), 4, None, TypeError, "outputs must be a list"),
        ([], by, torch.randn(0), 4, None, ValueError, "outputs is empty"),
        ([x, x], torch.randn(2, 3, 3, 3), torch.randn(2), 1, None, ValueError,
         "bypass has 3 channels"),
    ],
)
def test_bad_input_raises_clear_error(outputs, bypass, alpha, groups, weights, error, match):
    with pytest.raises(error, match=match):
        partial_channel_combine(outputs, bypass, alpha, groups, weights)


def test_bad_input_to_the_raw_op_raises():
    op = torch.ops.pynas.partial_channel_combine
    with pytest.raises(ValueError, match="slots"):
        op([x, x], [0, 7], [by], torch.randn(1, 2), None, 4)
    with pytest.raises(ValueError, match="bypass must hold E=1"):
        op([x, x], [0, 1], [], torch.randn(1, 2), None, 4)
    with pytest.raises(ValueError, match="bypass tensors must be"):
        op([x, x], [0, 1], [by[:, :5]], torch.randn(1, 2), None, 4)
    with pytest.raises(ValueError, match="edge_weights must be"):
        op([x, x], [0, 1], [by], torch.randn(1, 2), torch.ones(2), 4)
    with pytest.raises(ValueError, match="edge_weights_grad needs edge_weights"):
        torch.ops.pynas.partial_channel_combine_backward(
            torch.randn(2, 8, 3, 3), [x, x], [0, 1], [by], torch.randn(1, 2), None, 4, True)


# ---- CUDA (skipped without a GPU) ----

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spatial", [(32, 32), (8, 8), (7, 7), (5, 3)])
def test_cuda_matches_reference(dtype, spatial):
    rng = random.Random(7)
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for edges, ops, groups in ((1, 8, 4), (5, 8, 4), (2, 8, 1), (3, 4, 8), (20, 2, 2)):
        node = random_node(rng, edges, ops, groups, 4, 4, spatial, dtype, device="cuda",
                           edge_weights=edges > 1)
        assert_matches_reference(*node[:3], groups, node[3], atol=tolerance, rtol=tolerance)


@pytest.mark.cuda
def test_cuda_non_contiguous_compile_and_opcheck():
    rng = random.Random(8)
    grid, bypass, alpha, weights = random_node(rng, 4, 8, 4, 2, 8, (5, 5), torch.float32,
                                               device="cuda")
    strided = [x.transpose(2, 3) for x in bypass]
    assert_matches_reference(grid, strided, alpha, 4, weights, atol=1e-5, rtol=1e-5)
    present = [t for edge in grid for t in edge if t is not None]
    slots = [e * 8 + k for e, edge in enumerate(grid) for k, t in enumerate(edge)
             if t is not None]
    torch.library.opcheck(torch.ops.pynas.partial_channel_combine.default,
                          (present, slots, bypass, alpha, weights, 4))
    compiled = torch.compile(lambda *a: partial_channel_combine(*a), fullgraph=True)
    torch.testing.assert_close(compiled(grid, bypass, alpha, 4, weights),
                               partial_channel_combine_reference(grid, bypass, alpha, 4, weights))


@pytest.mark.cuda
def test_cuda_mismatched_devices_raise():
    operated = torch.randn(2, 2, 3, device="cuda")
    with pytest.raises(ValueError, match="alpha is on"):
        partial_channel_combine([operated], torch.randn(2, 6, 3, device="cuda"), torch.randn(1), 4)
    with pytest.raises(ValueError, match="bypass is on"):
        partial_channel_combine([operated], torch.randn(2, 6, 3), torch.randn(1, device="cuda"), 4)
    with pytest.raises(ValueError, match="edge_weights is on"):
        partial_channel_combine([operated], torch.randn(2, 6, 3, device="cuda"),
                                torch.randn(1, device="cuda"), 4, torch.ones(1))
