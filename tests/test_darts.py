"""The DARTS space, supernet, bilevel optimiser and discretization."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as functional
from torch import nn
from torch.func import functional_call

from pynas import _backend
from pynas.search.darts.bilevel import BilevelOptimizer, unrolled_arch_gradient, virtual_step
from pynas.search.darts.nb201 import NB201Supernet
from pynas.search.darts.supernet import DartsSupernet, MixedEdge, discretize_cell, node_edge_count
from pynas.spaces.darts import (
    CELL_OPERATIONS,
    CELL_TYPES,
    OPERATIONS,
    DartsSpace,
    load_genotype,
)

# DARTS_V2 from the paper's genotypes.py (second-order search on CIFAR-10).
DARTS_V2 = {
    "normal": [
        ["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2],
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        ["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
        ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1],
    ],
    "reduce_concat": [2, 3, 4, 5],
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_batch(seed: int, size: int = 6, channels: int = 1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, channels, 8, 8, generator=generator, dtype=dtype)
    labels = torch.randint(0, 3, (size,), generator=generator)
    return images, labels


def tiny_supernet(dtype=torch.float32, mixed_op: str = "reference", seed: int = 0):
    torch.manual_seed(seed)
    model = DartsSupernet(3, 1, channels=4, layers=3, steps=2, multiplier=2, mixed_op=mixed_op)
    with torch.no_grad():  # logits far from uniform, so the test sees a real gradient
        for alpha in model.arch_parameters():
            alpha.normal_()
    return model.to(dtype)


# ---- the space -------------------------------------------------------------------------


def test_operations_are_in_the_paper_order():
    assert OPERATIONS == (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    )  # fmt: skip


def test_decision_encoding_round_trips_through_genotype_and_string():
    space = DartsSpace()
    assert space.num_choices[:8] == (2, 2, 7, 7, 3, 3, 7, 7)
    assert len(space.num_choices) == len(space.decision_names()) == 32
    rng = random.Random(0)
    for _ in range(200):
        arch = tuple(rng.randrange(count) for count in space.num_choices)
        genotype = space.to_genotype(arch)
        assert space.from_genotype(genotype) == arch
        assert space.from_string(space.to_string(arch)) == arch
    arch = space.from_genotype(DARTS_V2)
    assert space.to_genotype(arch) == DARTS_V2


@pytest.mark.parametrize(
    "bad",
    [
        {"normal": DARTS_V2["normal"][:6], "reduce": DARTS_V2["reduce"]},
        {"normal": [["conv_7x7", 0]] + DARTS_V2["normal"][1:], "reduce": DARTS_V2["reduce"]},
        {"normal": [["none", 0]] + DARTS_V2["normal"][1:], "reduce": DARTS_V2["reduce"]},
        {"normal": DARTS_V2["normal"][:2] + [["skip_connect", 3]] + DARTS_V2["normal"][3:],
         "reduce": DARTS_V2["reduce"]},
        {**DARTS_V2, "normal_concat": [2, 3]},
        {"normal": DARTS_V2["normal"]},
    ],
)  # fmt: skip
def test_bad_genotypes_are_refused(bad):
    with pytest.raises(ValueError, match="darts"):
        DartsSpace().from_genotype(bad)


def test_malformed_string_is_refused():
    with pytest.raises(ValueError, match="malformed"):
        DartsSpace().from_string("normal:sep_conv_3x3")


def test_darts_v2_has_the_papers_parameter_count():
    # The DARTS train.py log for DARTS_V2 at C=36, 20 cells: "param size = 3.349342MB"
    # (parameters outside the auxiliary head).
    space = DartsSpace(channels=36, layers=20, auxiliary=True)
    model = space.build(space.from_genotype(DARTS_V2), (3, 32, 32), num_outputs=10)
    count = sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n)
    assert count == 3_349_342


def test_flops_grow_with_the_convolutions_of_the_cell():
    space = DartsSpace(channels=8, layers=5, auxiliary=True)
    darts_v2 = space.count_flops(space.from_genotype(DARTS_V2), (1, 8, 8))
    pools = {kind: [["max_pool_3x3", index] for _, index in DARTS_V2[kind]] for kind in CELL_TYPES}
    pooling = space.count_flops(space.from_genotype({**DARTS_V2, **pools}), (1, 8, 8))
    assert 0 < pooling < darts_v2


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 9, 9), (3, 12, 9), (3, 64, 48)])
def test_network_runs_on_small_odd_and_oblong_images_with_auxiliary_head(shape):
    space = DartsSpace(channels=4, layers=5, auxiliary=True, drop_path_probability=0.3)
    model = space.build(space.from_genotype(DARTS_V2), shape, num_outputs=10)
    logits, auxiliary = model.forward_with_auxiliary(torch.randn(3, *shape))
    assert logits.shape == auxiliary.shape == (3, 10)
    (logits.sum() + auxiliary.sum()).backward()
    model.eval()
    logits, auxiliary = model.forward_with_auxiliary(torch.randn(3, *shape))
    assert auxiliary is None and model(torch.zeros(1, *shape)).shape == (1, 10)


def test_auxiliary_head_pools_as_the_paper_on_32x32_images_only():
    # On CIFAR the head reads 8x8 maps, pooled as the paper: 5x5 windows at stride 3 to 2x2.
    space = DartsSpace(channels=4, layers=8, auxiliary=True)
    arch = space.from_genotype(DARTS_V2)
    seen = []
    for shape in [(3, 32, 32), (1, 28, 28)]:
        model = space.build(arch, shape, 10)
        pool = model.auxiliary_head.features[1]
        hook = pool.register_forward_hook(
            lambda module, inputs, output: seen.append(
                (type(module), tuple(inputs[0].shape[2:]), tuple(output.shape[2:]))))
        model.forward_with_auxiliary(torch.randn(2, *shape))
        hook.remove()
    assert seen == [(nn.AvgPool2d, (8, 8), (2, 2)), (nn.AdaptiveAvgPool2d, (7, 7), (2, 2))]
    paper = space.build(arch, (3, 32, 32), 10).auxiliary_head.features[1]
    assert (paper.kernel_size, paper.stride, paper.padding) == (5, 3, 0)


def test_drop_path_drops_whole_samples_only_while_training():
    space = DartsSpace(channels=4, layers=2, drop_path_probability=0.9)
    model = space.build(space.from_genotype(DARTS_V2), (1, 8, 8), num_outputs=4)
    torch.manual_seed(0)
    images = torch.randn(16, 1, 8, 8)
    model.train()
    first, second = model(images), model(images)
    assert not torch.allclose(first, second)
    model.eval()
    assert torch.equal(model(images), model(images))


def test_load_genotype_reads_a_genotype_or_a_result_json():
    import json

    assert load_genotype(json.dumps(DARTS_V2)) == DARTS_V2
    assert load_genotype(json.dumps({"strategy": "darts", "genotype": DARTS_V2})) == DARTS_V2
    assert load_genotype(json.dumps({"best": {"genotype": DARTS_V2}})) == DARTS_V2
    with pytest.raises(ValueError):
        load_genotype(json.dumps({"best": {"arch": "x"}}))


# ---- the supernet ----------------------------------------------------------------------


def test_supernet_shapes_and_one_mixed_op_call_per_node(monkeypatch):
    calls = []
    from pynas.ops import mixed_op_reference

    def counting(outputs, alpha):
        calls.append((len(outputs), alpha.shape))
        assert all(o is None for o in (edge[0] for edge in outputs))  # the zero op is None
        return mixed_op_reference(outputs, alpha)

    monkeypatch.setattr("pynas.search.darts.supernet.mixed_op_reference", counting)
    torch.manual_seed(0)
    model = DartsSupernet(10, 1, channels=4, layers=5, mixed_op="reference")
    assert model.alpha_normal.shape == (14, 8) == model.alpha_reduce.shape
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # 5 cells x 4 nodes, node i combining its 2 + i edges in one call
    assert len(calls) == 20
    assert [c[0] for c in calls[:4]] == [2, 3, 4, 5]
    assert calls[3][1] == (5, 8)
    assert {id(p) for p in model.arch_parameters()} == {
        id(model.alpha_normal),
        id(model.alpha_reduce),
    }
    assert len(model.weight_parameters()) + 2 == len(list(model.parameters()))


def test_fused_and_reference_supernets_agree():
    if "cpu" not in _backend.backends():
        pytest.skip("pynas._C is not built: the fused combine would be the reference")
    fused, reference = tiny_supernet(mixed_op="fused"), tiny_supernet(mixed_op="reference")
    images, _ = tiny_batch(1)
    torch.testing.assert_close(fused(images), reference(images))


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_shared_relu_computes_what_each_operation_computes_alone(space, monkeypatch):
    """The supernets apply each state's ReLU once for every operation that starts with
    one; outputs and gradients must equal those of every operation called on its own."""
    torch.manual_seed(0)
    if space == "darts":
        model = DartsSupernet(10, 3, channels=4, layers=3, mixed_op="reference")
    else:
        model = NB201Supernet(10, 3, channels=4, cells_per_stage=1, mixed_op="reference")
    model = model.double()
    assert all(edge.after_relu for edge in model.modules() if isinstance(edge, MixedEdge))
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)

    def outputs_and_gradients():
        out = model(images)
        return [out, *torch.autograd.grad(out.square().sum(), list(model.parameters()))]

    shared = outputs_and_gradients()
    monkeypatch.setattr(
        MixedEdge,
        "forward",
        lambda self, x, relu_x=None: [
            self.candidates[name](x) if name in self.candidates else None
            for name in self.operations
        ],
    )
    alone = outputs_and_gradients()
    for a, b in zip(shared, alone):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- discretization --------------------------------------------------------------------


def test_discretize_keeps_two_strongest_edges_and_their_best_non_none_op():
    steps = 2
    alpha = torch.zeros(node_edge_count(steps), len(OPERATIONS))
    index = OPERATIONS.index
    # node 2 (edges 0, 1): edge 1 is the stronger; 'none' is ignored however large
    alpha[0, index("none")] = 50.0
    alpha[0, index("avg_pool_3x3")] = 1.0
    alpha[1, index("sep_conv_5x5")] = 3.0
    # node 3 (edges 2, 3, 4): edges 4 and 2 win, edge 3 has only a huge 'none'
    alpha[2, index("dil_conv_3x3")] = 2.0
    alpha[3, index("none")] = 80.0
    alpha[4, index("skip_connect")] = 4.0
    assert discretize_cell(torch.softmax(alpha, dim=-1), steps) == [
        ["sep_conv_5x5", 1], ["avg_pool_3x3", 0],
        ["skip_connect", 2], ["dil_conv_3x3", 0],
    ]  # fmt: skip


def test_supernet_genotype_is_a_valid_darts_genotype_and_builds():
    model = tiny_supernet()
    genotype = model.genotype()
    space = DartsSpace(channels=4, layers=3, steps=2)
    arch = space.from_genotype(genotype)
    assert all(name in CELL_OPERATIONS for name, _ in genotype["normal"] + genotype["reduce"])
    assert space.build(arch, (1, 8, 8), 3)(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_discretized_logits_make_the_supernet_compute_the_discrete_cells():
    model = tiny_supernet(dtype=torch.float64)
    weights = torch.softmax(model.discretized_logits()["alpha_normal"], dim=-1)
    kept = weights[:, 1:].sum(dim=1)  # every edge's weight outside 'none'
    assert sorted(kept.tolist()) == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert set(weights.flatten().tolist()) == {0.0, 1.0}


# ---- the bilevel optimiser -------------------------------------------------------------


def smooth_kinks(model: nn.Module) -> nn.Module:
    """Replace ReLU by softplus and max-pooling by average pooling.

    A central difference of the gradient of a piecewise-linear network jumps wherever the
    shift crosses a ReLU or max-pool kink (thousands of them even in a tiny supernet),
    while autograd's exact second derivative is zero there; comparing the two on a smooth
    network tests the unrolled-step mathematics rather than the kinks.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(3, child.stride, 1))
    return model


def exact_unrolled_arch_gradient(model, train_batch, valid_batch, lr, buffers, momentum, decay):
    """grad_alpha L_val(w - lr * (momentum * m + grad_w L_train(w) + decay * w), alpha),
    differentiated through the inner step by autograd (no finite difference)."""
    names, weights = zip(*model.named_weight_parameters())
    images, labels = train_batch
    train_loss = functional.cross_entropy(model(images), labels)
    gradients = torch.autograd.grad(train_loss, weights, create_graph=True)
    stepped = virtual_step(weights, gradients, buffers, lr, momentum, decay)
    images, labels = valid_batch
    logits = functional_call(model, dict(zip(names, stepped)), (images,))
    valid_loss = functional.cross_entropy(logits, labels)
    return torch.autograd.grad(valid_loss, model.arch_parameters())


def test_second_order_gradient_matches_autograd_through_the_unrolled_step():
    model = smooth_kinks(tiny_supernet(dtype=torch.float64))
    optimizer = BilevelOptimizer(model, epochs=1, order=2, weight_lr=0.1)
    train_batch, valid_batch = (
        tiny_batch(1, dtype=torch.float64),
        tiny_batch(2, dtype=torch.float64),
    )
    optimizer.weight_step(train_batch)  # so the momentum buffers are not zero
    buffers = optimizer.momentum_buffers()
    assert all(b is not None for b in buffers)
    arguments = (model, train_batch, valid_batch, 0.1, buffers, 0.9, 3e-4)
    approximate, _ = unrolled_arch_gradient(*arguments)
    exact = exact_unrolled_arch_gradient(*arguments)
    first_order = torch.autograd.grad(
        functional.cross_entropy(model(valid_batch[0]), valid_batch[1]), model.arch_parameters()
    )
    for estimate, truth, direct in zip(approximate, exact, first_order):
        error = (estimate - truth).norm() / truth.norm()
        assert error < 1e-2, f"relative error {error:.2e}"
        # the implicit term matters: without it the gradient would be clearly different
        assert (direct - truth).norm() / truth.norm() > 10 * error


@pytest.mark.parametrize("order", [1, 2])
def test_search_steps_lower_the_training_loss_and_move_alpha(order):
    model = tiny_supernet()
    before = [a.detach().clone() for a in model.arch_parameters()]
    optimizer = BilevelOptimizer(model, epochs=1, order=order, weight_lr=0.05)
    train_batch, valid_batch = tiny_batch(3, size=12), tiny_batch(4, size=12)
    losses = [optimizer.step(train_batch, valid_batch)["train_loss"] for _ in range(8)]
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), before))
    lr = optimizer.learning_rate
    optimizer.end_epoch()
    assert optimizer.learning_rate == pytest.approx(0.001) and lr == pytest.approx(0.05)


# ---- DARTS on nb201 --------------------------------------------------------------------


def test_nb201_supernet_calls_mixed_op_once_per_node_and_discretizes(monkeypatch):
    from pynas.ops import mixed_op_reference
    from pynas.spaces.nb201 import NB201Space

    calls = []

    def counting(outputs, alpha):
        calls.append(alpha.shape)
        return mixed_op_reference(outputs, alpha)

    monkeypatch.setattr("pynas.search.darts.supernet.mixed_op_reference", counting)
    torch.manual_seed(0)
    model = NB201Supernet(10, 1, channels=4, cells_per_stage=1, mixed_op="reference")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert calls == [(1, 5), (2, 5), (3, 5)] * 3  # 3 stages x 1 cell x nodes 1, 2, 3
    with torch.no_grad():
        model.alpha_cell.zero_()
        for edge, operation in enumerate([3, 0, 1, 2, 4, 3]):
            model.alpha_cell[edge, operation] = 1.0
    arch = model.arch_string()
    assert (
        arch
        == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    )
    assert NB201Space().to_string(NB201Space().from_string(arch)) == arch
    weights = torch.softmax(model.discretized_logits()["alpha_cell"], dim=-1)
    assert torch.equal(weights.argmax(dim=-1), torch.tensor([3, 0, 1, 2, 4, 3]))
    assert set(weights.flatten().tolist()) == {0.0, 1.0}


def test_darts_on_nb201_returns_an_arch_of_the_benchmark_table():
    from pathlib import Path

    from pynas.search.darts.config import DartsConfig
    from pynas.search.darts.search import search
    from pynas.spaces.nb201 import NB201Space

    config = DartsConfig(space="nb201", epochs=1, channels=4, layers=1, limit_train=64,
                         batch_size=16, mixed_op="reference")
    arch = search(config)["arch"]
    NB201Space().from_string(arch)  # a valid cell
    table = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"
    if table.exists():
        assert f",{arch}," in table.read_text()
