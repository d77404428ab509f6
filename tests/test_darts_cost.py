"""DARTS's cost target: the per-operation table, the penalty, the options, result.json."""

from __future__ import annotations

import json

import pytest
import torch
from test_darts_search import TINY  # the smallest supernet options

from pynas import cli, costs
from pynas.search.darts.cost import (
    cost_penalty,
    cost_table,
    discretized_cost,
    expected_cost,
    sharpen,
)
from pynas.search.darts.nb201 import NB201Supernet
from pynas.search.darts.supernet import DartsSupernet
from pynas.spaces.darts import DartsSpace
from pynas.spaces.nb201 import NB201Space

pytestmark = pytest.mark.usefixtures("one_thread")

INPUT_SHAPE, CLASSES = (1, 8, 8), 10  # the embedded digits


def nb201_supernet(**options) -> NB201Supernet:
    return NB201Supernet(CLASSES, INPUT_SHAPE[0], channels=4, cells_per_stage=2,
                         mixed_op="reference", **options)


def darts_supernet(**options) -> DartsSupernet:
    return DartsSupernet(CLASSES, INPUT_SHAPE[0], channels=4, layers=3, steps=3,
                         multiplier=3, mixed_op="reference", **options)


def randomize(model, scale: float = 2.0) -> None:
    with torch.no_grad():
        for parameter in model.arch_parameters():
            parameter.normal_(0.0, scale)


@pytest.mark.parametrize("measure", ["flops", "params"])
@pytest.mark.parametrize("make", [nb201_supernet, darts_supernet], ids=["nb201", "darts"])
def test_table_prices_every_discretized_network_exactly(make, measure):
    torch.manual_seed(0)
    model = make()
    table = cost_table(model, measure, INPUT_SHAPE, CLASSES)
    architectures = set()
    for _ in range(8):
        randomize(model)
        arch = model.discrete_architecture()
        architectures.add(arch)
        measured = costs.measure(model.discrete_space, arch, INPUT_SHAPE, CLASSES)[measure]
        assert discretized_cost(model, table) == measured
    assert len(architectures) > 4  # the draws did change the cells
    # the reference architecture prices no choice: base is part of every network
    assert table.base > 0 and all(costs.min() >= 0 for costs in table.costs.values())


def test_nb201_table_is_the_base_plus_each_edge_operation():
    model = nb201_supernet()
    table = cost_table(model, "flops", INPUT_SHAPE, CLASSES)
    space = model.discrete_space
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):
        arch = tuple(torch.randint(0, 5, (6,), generator=generator).tolist())
        predicted = table.base + sum(float(table.costs["cell"][edge, operation])
                                     for edge, operation in enumerate(arch))
        assert predicted == space.count_flops(arch, INPUT_SHAPE, CLASSES)


def test_partial_channels_price_the_full_network():
    full = cost_table(darts_supernet(), "flops", INPUT_SHAPE, CLASSES)
    partial = cost_table(darts_supernet(partial_channels=2, edge_normalization=True), "flops",
                         INPUT_SHAPE, CLASSES)
    assert partial.base == full.base
    for kind, table in full.costs.items():
        assert torch.equal(partial.costs[kind], table)


@pytest.mark.parametrize("options", [{}, {"edge_normalization": True}, {"dirichlet": True}])
def test_darts_choice_weights_count_two_inputs_per_node_without_none(options):
    torch.manual_seed(0)
    model = darts_supernet(**options)
    randomize(model)
    for kind in model.cell_kinds:
        weights = model.choice_weights(kind)
        assert torch.all(weights[:, model.operations.index("none")] == 0)
        per_node = torch.stack([part.sum() for part in weights.split(model.node_inputs)])
        torch.testing.assert_close(per_node, torch.full_like(per_node, 2.0))


def test_sharpen_keeps_row_sums_argmax_and_zeros():
    weights = torch.tensor([[0.21, 0.19, 0.2, 0.2, 0.2], [0.0, 0.5, 0.25, 0.25, 0.0]])
    sharp = sharpen(weights, 4.0)
    torch.testing.assert_close(sharp.sum(dim=-1), weights.sum(dim=-1))
    assert torch.equal(sharp.argmax(dim=-1), weights.argmax(dim=-1))
    assert torch.all(sharp[weights == 0] == 0)
    live = sharp[0].log()
    assert float(live.max() - live.min()) == pytest.approx(4.0, rel=1e-4)
    assert sharpen(weights, None) is weights


@pytest.mark.parametrize("make", [nb201_supernet, darts_supernet], ids=["nb201", "darts"])
@pytest.mark.parametrize("direction", ["down", "up"])
def test_the_cost_term_alone_moves_the_costs_toward_the_target(make, direction):
    torch.manual_seed(0)
    model = make()
    randomize(model, 0.5)  # edges apart, so that they flip one by one
    table = cost_table(model, "flops", INPUT_SHAPE, CLASSES)
    start = discretized_cost(model, table)
    with torch.no_grad():
        start_expected = float(expected_cost(model, table))
    # between the start and the cheapest network (the base), or above the start
    target = (table.base + start) / 2 if direction == "down" else 1.5 * start
    sign = -1 if direction == "down" else 1  # the way to the target
    penalty = cost_penalty(model, table, target, weight=1.0)
    alphas = model.operation_logits()
    gradients = torch.autograd.grad(penalty(), alphas)
    assert all(gradient.abs().sum() > 0 for gradient in gradients)  # every cell type
    optimizer = torch.optim.Adam(alphas, lr=0.03)
    expected, discretized = [], []
    for _ in range(60):
        optimizer.zero_grad()
        penalty().backward()
        optimizer.step()
        with torch.no_grad():
            expected.append(float(expected_cost(model, table)))
        discretized.append(discretized_cost(model, table))
    assert sign * (expected[0] - start_expected) > 0
    # The discretized cost moves in whole operations (one 3x3 convolution is more than
    # the tiny nb201 network's base): it reaches the target, then goes back and forth
    # across it as the gradient changes sign.
    assert max(sign * (cost - target) for cost in discretized) >= 0


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--objectives", "val_acc,latency_ms", "--cost-target", "1M"],
         "--objectives latency_ms is not supported for DARTS"),
        (["--objectives", "val_acc,peak_activation_bytes", "--cost-target", "1M"],
         "peak_activation_bytes is not supported for DARTS"),
        (["--objectives", "val_acc,flops,params", "--cost-target", "1M"],
         "exactly one cost, flops or params"),
        (["--objectives", "val_acc,flops"], "DARTS needs --cost-target with --objectives"),
        (["--cost-weight", "2"], "--cost-weight needs --cost-target"),
        (["--cost-target", "1M", "--cost-weight", "0"], "--cost-weight must be a number > 0"),
        (["--cost-target", "1M", "--cost-weight", "nan"], "--cost-weight must be a number > 0"),
        (["--cost-target", "2X"], "--cost-target 2X: unknown suffix"),
        (["--cost-target", "0"], "--cost-target must be a positive count"),
        (["--cost-target", "1M", "--multiplier", "1"], "needs --multiplier = --steps"),
    ],
)
def test_bad_cost_options_are_one_line_with_status_2_and_write_nothing(
    tmp_path, capsys, arguments, message
):
    out = tmp_path / "run"
    status = cli.main(["search", "darts", "--out", str(out), *TINY, *arguments])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "space,options,measure",
    [
        ("nb201", ["--objectives", "val_acc,flops"], "flops"),
        ("nb201", ["--objectives", "val_acc,params", "--order", "2"], "params"),
        ("darts", ["--partial-channels", "2", "--edge-normalization"], "flops"),
        ("darts", ["--objectives", "val_acc,params", "--order", "2"], "params"),
    ],
)
def test_a_search_with_a_cost_target_records_the_cost(tmp_path, capsys, space, options, measure):
    out = tmp_path / "run"
    status = cli.main(["search", "darts", "--space", space, "--epochs", "1", "--out", str(out),
                       *TINY, "--cost-target", "20k", "--cost-weight", "2", *options])
    assert status == 0
    result = json.loads((out / "result.json").read_text())
    cost = result["cost_target"]
    assert cost["measure"] == measure and cost["target"] == 20_000 and cost["weight"] == 2.0
    discrete_space = (NB201Space(channels=4, cells_per_stage=2) if space == "nb201"
                      else DartsSpace(channels=4, layers=2, steps=2))
    arch = discrete_space.from_string(result["arch"])
    measured = costs.measure(discrete_space, arch, INPUT_SHAPE, CLASSES)[measure]
    assert cost["cost"] == measured == result["best"]["metrics"][measure]
    assert cost["ratio"] == pytest.approx(measured / 20_000)
    assert cost["expected_cost"] > 0
    printed = capsys.readouterr().out
    assert f"{measure} of the discretized network: {measured:,}" in printed
    assert "x the target 20,000" in printed
    history = torch.load(out / "checkpoint.pt")["history"]
    assert all("expected_cost" in entry and "discretized_cost" in entry for entry in history)
    assert history[-1]["discretized_cost"] == measured
