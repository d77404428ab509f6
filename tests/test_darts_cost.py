"""DARTS's cost target: the per-operation table, the penalty, the options, result.json."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from test_darts_search import TINY  # the smallest supernet options

from pynas import cli, costs
from pynas.search.darts.cost import (
    cost_penalty,
    cost_table,
    discretized_cost,
    expected_cost,
    fit_to_target,
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


def cell_score_and_cost(model, table, choices):
    """The sum of the chosen operations' log choice weights over the kept edges, and the
    cost of the network, from the table."""
    none = model.operations.index("none")
    score, cost = 0.0, table.base
    for kind, operations in choices.items():
        logs = model.choice_weights(kind).detach().double().log()
        for edge, operation in enumerate(operations):
            if operation != none or logs[edge, none] > -math.inf:
                score += float(logs[edge, operation])
                cost += float(table.costs[kind][edge, operation])
    return score, cost


@pytest.mark.parametrize("tolerance", [0.0, 0.1, 0.25])
def test_nb201_fit_is_the_strongest_cell_within_the_tolerance(tolerance):
    """Against every one of the 15,625 cells: the fit is within the band when any cell
    is, of the highest score there; else the cell nearest the target."""
    torch.manual_seed(0)
    model = nb201_supernet()
    table = cost_table(model, "flops", INPUT_SHAPE, CLASSES)
    cells = torch.tensor(list(itertools.product(range(5), repeat=6)))
    edges = torch.arange(6)
    cell_costs = (table.base + table.costs["cell"][edges, cells].sum(dim=1)).tolist()
    for draw in range(4):
        randomize(model, scale=0.5)
        logs = model.choice_weights("cell").detach().double().log()
        measured = list(zip(logs[edges, cells].sum(dim=1).tolist(), cell_costs))
        argmax_cost = discretized_cost(model, table)
        # a cost 40% off the argmax cell's, and one between two achievable costs
        for target in (argmax_cost * (0.6 if draw % 2 else 1.4), argmax_cost * 0.93 + 17):
            fitted = fit_to_target(model, table, target, tolerance)
            score, cost = cell_score_and_cost(model, table, fitted)
            inside = [s for s, c in measured if abs(c / target - 1) <= tolerance]
            if inside:
                assert abs(cost / target - 1) <= tolerance
                assert score == pytest.approx(max(inside))
            else:
                nearest = min(abs(c / target - 1) for _, c in measured)
                assert abs(cost / target - 1) == pytest.approx(nearest)


def test_fit_keeps_the_argmax_cell_within_the_tolerance():
    torch.manual_seed(0)
    for model in (nb201_supernet(), darts_supernet()):
        randomize(model)
        table = cost_table(model, "flops", INPUT_SHAPE, CLASSES)
        argmax = model.discrete_choices()
        assert fit_to_target(model, table, discretized_cost(model, table) * 1.2, 0.25) == argmax


def test_darts_fit_keeps_the_argmax_edges_and_pins_the_cells():
    torch.manual_seed(0)
    model = darts_supernet(edge_normalization=True)
    randomize(model)
    table = cost_table(model, "params", INPUT_SHAPE, CLASSES)
    argmax, argmax_genotype = model.discrete_choices(), model.genotype()
    none = model.operations.index("none")
    # a target: the cost of the same kept edges with other operations drawn at random
    generator = torch.Generator().manual_seed(3)
    other = {kind: [none if operation == none else
                    int(torch.randint(1, len(model.operations), (1,), generator=generator))
                    for operation in choices] for kind, choices in argmax.items()}
    other_score, target = cell_score_and_cost(model, table, other)
    argmax_score, argmax_cost = cell_score_and_cost(model, table, argmax)
    assert abs(argmax_cost / target - 1) > 0.05  # the draw moved the cost
    fitted = fit_to_target(model, table, target, 0.05)
    score, cost = cell_score_and_cost(model, table, fitted)
    assert abs(cost / target - 1) <= 0.05 and other_score <= score < argmax_score
    assert all((a == none) == (f == none) for kind in argmax
               for a, f in zip(argmax[kind], fitted[kind]))
    model.pin(fitted)
    assert model.discrete_choices() == fitted
    measured = costs.measure(model.discrete_space, model.discrete_architecture(),
                             INPUT_SHAPE, CLASSES)["params"]
    assert measured == cost == discretized_cost(model, table)
    for kind in model.cell_kinds:  # the same inputs, in the same order
        assert [s for _, s in model.genotype()[kind]] == [s for _, s in argmax_genotype[kind]]
    model.pin(None)
    assert model.discrete_choices() == argmax


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
        (["--cost-tolerance", "0.1"], "--cost-tolerance needs --cost-target"),
        (["--cost-target", "1M", "--cost-tolerance", "-1"],
         "--cost-tolerance must be a number >= 0"),
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
    # the strongest cell within 25% of the target, or the nearest: never farther than
    # the argmax cell the search ended with
    assert history[-1]["discretized_cost"] == cost["argmax_cost"]
    assert cost["tolerance"] == 0.25 and cost["argmax_ratio"] == cost["argmax_cost"] / 20_000
    if abs(cost["argmax_ratio"] - 1) <= 0.25:
        assert cost["cost"] == cost["argmax_cost"]
    else:
        assert abs(cost["ratio"] - 1) <= abs(cost["argmax_ratio"] - 1)
