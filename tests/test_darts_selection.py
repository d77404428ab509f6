"""``--selection perturbation``: the cell chosen by what removing each operation costs the
trained supernet, and choosing again from a finished run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_darts_cost import CLASSES, INPUT_SHAPE, darts_supernet, nb201_supernet, randomize
from test_darts_search import TINY, registered  # noqa: F401 (a fixture)

from pynas import cli
from pynas.search.darts.selection import perturbation_choices

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(count: int = 2, size: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(size, *INPUT_SHAPE), torch.randint(0, CLASSES, (size,)))
            for _ in range(count)]


def loss_without(model, kind: str, edge: int, operation: int, data) -> float:
    """The mean loss with ``operation`` taken off ``edge``, its weight shared out among the
    edge's other operations in proportion to theirs (written out, as the docs say it)."""
    model = copy.deepcopy(model).eval()
    alpha = getattr(model, f"alpha_{kind}")
    with torch.no_grad():
        weights = torch.softmax(alpha[edge].double(), dim=0)
        weights[operation] = 0.0
        weights /= weights.sum()
        alpha[edge] = weights.clamp_min(1e-300).log().clamp_min(-1e4).float()
        losses = [torch.nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in data]
    return float(sum(losses)) / sum(len(y) for _, y in data)


@pytest.mark.parametrize("make", [nb201_supernet, darts_supernet], ids=["nb201", "darts"])
def test_each_edge_gets_the_operation_whose_removal_costs_the_most(make):
    torch.manual_seed(0)
    model = make()
    randomize(model)
    data = batches()
    before = copy.deepcopy(model.state_dict())
    argmax = model.discrete_choices()
    chosen = perturbation_choices(model, data)
    none = model.operations.index("none")
    for kind in model.cell_kinds:
        assert len(chosen[kind]) == len(argmax[kind])
        for edge, operation in enumerate(chosen[kind]):
            if not model.keeps_every_edge and argmax[kind][edge] == none:
                assert operation == none  # an edge the argmax cell drops stays dropped
                continue
            rises = {index: loss_without(model, kind, edge, index, data)
                     for index in range(len(model.operations)) if index != none}
            assert operation == max(rises, key=rises.__getitem__), (kind, edge, rises)
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the logits are put back


def test_a_finished_search_is_chosen_again_without_training(tmp_path, capsys):
    out = tmp_path / "run"
    options = ["--space", "nb201", "--epochs", "1", "--out", str(out), *TINY]
    assert cli.main(["search", "darts", *options]) == 0
    first = json.loads((out / "result.json").read_text())
    history = torch.load(out / "checkpoint.pt")["history"]
    assert first["selection"] == "argmax" and "argmax" not in first
    capsys.readouterr()
    assert cli.main(["search", "darts", *options, "--resume", "--selection", "perturbation"]) == 0
    again = json.loads((out / "result.json").read_text())
    assert again["selection"] == "perturbation"
    assert again["argmax"]["arch"] == first["arch"]
    assert again["best"]["arch"] == again["arch"] and "none" not in again["arch"]
    assert json.loads((out / "config.json").read_text())["selection"] == "perturbation"
    assert torch.load(out / "checkpoint.pt")["history"] == history  # no epoch trained again
    printed = capsys.readouterr().out
    assert f"the argmax cell: {first['arch']}" in printed and again["arch"] in printed


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--selection", "best"], "invalid choice"),
        (["--selection", "perturbation", "--cost-target", "1M"],
         "--selection perturbation does not combine with --cost-target"),
    ],
)
def test_bad_selection_is_one_line_with_status_2(tmp_path, capsys, arguments, message):
    out = tmp_path / "run"
    status = cli.main(["search", "darts", "--out", str(out), *TINY, *arguments])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
