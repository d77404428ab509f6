"""The cures for DARTS's collapse: each option reaches the computation, on both supernets
and with both orders, and a search with them resumes where it stopped."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as functional

from pynas import _backend, cli
from pynas.data import load_dataset
from pynas.errors import UsageError
from pynas.runs import RunDirectory
from pynas.search.darts import DartsConfig
from pynas.search.darts import search as darts_loop
from pynas.search.darts.bilevel import BilevelOptimizer
from pynas.search.darts.cures import beta_decay, expected_weights, mixing_logits
from pynas.search.darts.nb201 import NB201SearchCell, NB201Supernet
from pynas.search.darts.partial import split_state
from pynas.search.darts.search import beta_decay_penalty, search, train_supernet
from pynas.search.darts.supernet import (
    CellArchitecture,
    DartsSupernet,
    combine_node,
    discretize_cell,
    state_view,
)
from pynas.spaces.darts import OPERATIONS

pytestmark = pytest.mark.usefixtures("one_thread")

SPACES = ("darts", "nb201")
#: every cure at once
ALL_CURES = dict(partial_channels=2, edge_normalization=True, beta_decay=2.0, aux_skip=True,
                 warmup_epochs=1, dirichlet=True)  # fmt: skip


def tiny_supernet(space: str, **options):
    """A float64 supernet of a few cells on 1x8x8 images of 3 classes, its logits far from
    uniform so that every weight matters."""
    torch.manual_seed(0)
    if space == "darts":
        model = DartsSupernet(3, 1, channels=4, layers=3, steps=2, multiplier=2, **options)
    else:
        model = NB201Supernet(3, 1, channels=4, cells_per_stage=1, **options)
    with torch.no_grad():
        for parameter in model.arch_parameters():
            parameter.normal_()
    return model.double()


def tiny_batch(seed: int, size: int = 6):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 1, 8, 8, generator=generator, dtype=torch.float64)
    return images, torch.randint(0, 3, (size,), generator=generator)


def tiny_config(**overrides) -> DartsConfig:
    settings = dict(channels=4, layers=2, steps=2, multiplier=2, batch_size=16,
                    limit_train=64, mixed_op="reference", epochs=2)  # fmt: skip
    return DartsConfig(**{**settings, **overrides})


# ---- partial channels and edge normalization (PC-DARTS) ------------------------------


def shuffle(x, groups):
    """ShuffleNet's channel shuffle by an explicit permutation: output channel
    ``a * groups + i`` is input channel ``i * C/groups + a``."""
    per_group = x.shape[1] // groups
    return x[:, [i * per_group + a for a in range(per_group) for i in range(groups)]]


def hand_written_edge(edge, x, weights, groups):
    """A PC-DARTS edge written out: split, every operation on its own, concatenate,
    shuffle; the bypass max-pooled where the operations halve the resolution."""
    operated = x.shape[1] // groups
    part, rest = x[:, :operated], x[:, operated:]
    candidates = edge.edge.candidates
    mixed = sum(w * candidates[name](part) for w, name in zip(weights, edge.edge.operations)
                if name in candidates)
    if mixed.shape[-1] != x.shape[-1]:
        rest = functional.max_pool2d(rest, 2, 2, ceil_mode=True)
    return shuffle(torch.cat([mixed, rest], dim=1), groups)


def hand_written_node(edges, inputs, alpha, beta, groups):
    """sum_e softmax(beta)_e * edge_e(x_e), each edge weighing its operations by
    softmax(alpha_e)."""
    edge_weights = torch.softmax(beta, dim=0)
    operation_weights = torch.softmax(alpha, dim=-1)
    return sum(edge_weights[e] * hand_written_edge(edge, x, operation_weights[e], groups)
               for e, (edge, x) in enumerate(zip(edges, inputs)))


def hand_written_forward(model, images, groups):
    """The supernet's forward from its modules, every node written out (no combine op)."""
    if isinstance(model, DartsSupernet):
        s0 = s1 = model.stem(images)
        for cell in model.cells:
            kind = "reduce" if cell.reduction else "normal"
            alpha, beta = getattr(model, f"alpha_{kind}"), getattr(model, f"beta_{kind}")
            states, offset = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
            for _ in range(cell.steps):
                rows = slice(offset, offset + len(states))
                offset += len(states)
                states.append(hand_written_node(cell.edges[rows], states, alpha[rows],
                                                beta[rows], groups))
            s0, s1 = s1, torch.cat(states[-cell.multiplier :], dim=1)
        return model.classifier(model.global_pooling(s1).flatten(1))
    x = model.stem(images)
    for block in model.stages:
        if not isinstance(block, NB201SearchCell):
            x = block(x)
            continue
        nodes, offset = [x], 0
        for target in range(1, 4):
            rows = slice(offset, offset + target)
            nodes.append(hand_written_node(block.edges[rows], nodes, model.alpha_cell[rows],
                                           model.beta_cell[rows], groups))
            offset += target
        x = nodes[-1]
    return model.classifier(model.head(x))


@pytest.mark.parametrize("mixed_op", ["fused", "reference"])
@pytest.mark.parametrize("space", SPACES)
def test_partial_channel_supernet_equals_a_hand_written_split_cat_shuffle(space, mixed_op):
    if mixed_op == "fused" and "cpu" not in _backend.backends():
        pytest.skip("pynas._C is not built: the fused combine would be the reference")
    groups = 2
    model = tiny_supernet(space, mixed_op=mixed_op, partial_channels=groups,
                          edge_normalization=True)
    images, _ = tiny_batch(1)
    architecture = model.arch_parameters()

    def outputs_and_gradients(forward):
        out = forward(images)
        return [out, *torch.autograd.grad(out.square().sum(), architecture)]

    ours = outputs_and_gradients(model)
    theirs = outputs_and_gradients(lambda x: hand_written_forward(model, x, groups))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_partial_channel_operations_see_a_quarter_of_the_channels():
    model = DartsSupernet(3, 1, channels=8, layers=3, partial_channels=4)
    normal, reduction = model.cells[0].edges[0], model.cells[1].edges[0]
    assert normal.edge.candidates["sep_conv_3x3"].op[0].op[1].in_channels == 2
    assert reduction.edge.candidates["skip_connect"].conv_even.in_channels == 4
    operated, bypass = split_state(torch.zeros(1, 16, 7, 7), 4, 2)
    assert operated.shape == (1, 4, 7, 7) and bypass.shape == (1, 12, 4, 4)


def test_edge_normalization_changes_the_ranking_as_the_paper_says():
    """PC-DARTS ranks the edges into a node by softmax(beta) * softmax(alpha), keeping on
    each edge the operation softmax(alpha) chose."""
    index = OPERATIONS.index
    weights = torch.empty(5, len(OPERATIONS), dtype=torch.float64)
    for edge, (name, weight) in enumerate([
        ("avg_pool_3x3", 0.7), ("skip_connect", 0.6),  # node 2
        ("sep_conv_5x5", 0.9), ("dil_conv_3x3", 0.5), ("max_pool_3x3", 0.4),  # node 3
    ]):  # fmt: skip
        weights[edge] = (1 - weight) / (len(OPERATIONS) - 1)
        weights[edge, index(name)] = weight
    edge_weights = torch.tensor([0.4, 0.6, 0.2, 0.3, 0.5], dtype=torch.float64)
    assert discretize_cell(weights, 2) == [
        ["avg_pool_3x3", 0], ["skip_connect", 1],
        ["sep_conv_5x5", 0], ["dil_conv_3x3", 1],
    ]  # fmt: skip
    # 0.7 * 0.4 < 0.6 * 0.6; 0.9 * 0.2 and 0.4 * 0.5 beat 0.5 * 0.3
    assert discretize_cell(weights, 2, edge_weights) == [
        ["skip_connect", 1], ["avg_pool_3x3", 0],
        ["max_pool_3x3", 2], ["sep_conv_5x5", 0],
    ]  # fmt: skip
    # the supernet's genotype reads both from its logits
    model = DartsSupernet(3, 1, channels=4, layers=3, steps=2, multiplier=2,
                          edge_normalization=True)
    with torch.no_grad():
        model.alpha_normal.copy_(weights.log())
        model.beta_normal.copy_(edge_weights.log())  # per node, softmax gives them back
    assert model.genotype()["normal"] == discretize_cell(weights, 2, edge_weights)
    torch.testing.assert_close(model.edge_weights("normal"), edge_weights)


def test_discretized_edge_normalization_weighs_kept_edges_equally():
    model = tiny_supernet("darts", edge_normalization=True)
    logits = model.discretized_logits()
    with torch.no_grad():
        model.beta_normal.copy_(logits["beta_normal"])
    kept = model.edge_weights("normal")
    assert sorted(kept.tolist()) == [0.0, 0.5, 0.5, 0.5, 0.5]  # 2 of 2 and 2 of 3 edges


# ---- beta-decay (beta-DARTS) -----------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("space", SPACES)
def test_beta_decay_adds_exactly_its_gradient_to_the_architecture_step(space, order):
    model = tiny_supernet(space, mixed_op="reference", edge_normalization=True)
    twin = copy.deepcopy(model)
    batches = tiny_batch(1), tiny_batch(2)
    alphas = [alpha.detach().clone() for alpha in model.operation_logits()]
    BilevelOptimizer(model, epochs=1, order=order).arch_step(*batches)
    weight = 0.7
    BilevelOptimizer(twin, epochs=1, order=order).arch_step(
        *batches, penalty=beta_decay_penalty(twin, weight)
    )
    edges = sum(alpha.shape[0] for alpha in alphas)
    regulariser = iter([weight * torch.softmax(alpha, dim=-1) / edges for alpha in alphas])
    for (name, plain), regularised in zip(model.named_parameters(), twin.parameters()):
        if name.startswith("alpha_"):  # d/d alpha_e of mean_e logsumexp(alpha_e)
            difference = regularised.grad - plain.grad
            torch.testing.assert_close(difference, next(regulariser), rtol=1e-9, atol=1e-15)
        elif name.startswith("beta_"):  # the edges' logits are not regularised
            torch.testing.assert_close(regularised.grad, plain.grad, rtol=0, atol=0)


def test_beta_decay_is_the_mean_logsumexp_over_every_edge():
    alphas = [torch.zeros(14, 8), torch.ones(14, 8)]
    assert beta_decay(alphas).item() == pytest.approx(math.log(8) + 0.5)


# ---- schedules, warm-up, auxiliary skip (DARTS-) ---------------------------------------


@pytest.mark.parametrize("space", SPACES)
def test_schedules_and_warmup_follow_the_search(space, monkeypatch):
    """beta-decay's weight rises 0 -> W and the auxiliary skip falls 1 -> 0 over the
    steps; the warm-up epochs leave the architecture where it started."""
    seen = []
    step = BilevelOptimizer.step

    def recording(self, train_batch, valid_batch, update_architecture=True, penalty=None):
        model = self.model
        with torch.no_grad():
            weight = float(penalty() / beta_decay(model.operation_logits()))
        seen.append((update_architecture, model.skip_coefficient, weight))
        return step(self, train_batch, valid_batch, update_architecture, penalty)

    monkeypatch.setattr(BilevelOptimizer, "step", recording)
    config = tiny_config(space=space, epochs=3, warmup_epochs=1, beta_decay=3.0, aux_skip=True,
                         layers=1 if space == "nb201" else 2)
    trained = train_supernet(config, load_dataset("digits", limit_train=64))
    ramp = [step / 5 for step in range(6)]  # 3 epochs of 2 steps
    assert [entry[0] for entry in seen] == [False, False, True, True, True, True]
    assert [entry[1] for entry in seen] == pytest.approx([1 - r for r in ramp], abs=1e-12)
    assert seen[-1][1] == 0.0 and trained.model.skip_coefficient == 0.0
    # (the ratio of two float32 losses)
    assert [entry[2] for entry in seen] == pytest.approx([3.0 * r for r in ramp], rel=1e-6)
    history = trained.history
    assert history[1]["alphas"] == history[0]["alphas"] != history[2]["alphas"]
    assert math.isnan(history[1]["valid_loss"]) and not math.isnan(history[2]["valid_loss"])
    assert history[1]["train_loss"] > 0


@pytest.mark.parametrize("space", SPACES)
def test_auxiliary_skip_adds_its_identity_path_to_the_normal_nodes_only(space):
    model = tiny_supernet(space, mixed_op="reference", partial_channels=2)
    model.skip_coefficient = 0.25
    kinds = {kind: model.cell_architecture(kind).skip for kind in model.cell_kinds}
    assert kinds == ({"normal": 0.25, "reduce": 0.0} if space == "darts" else {"cell": 0.25})
    cell = model.cells[0] if space == "darts" else model.stages[0]
    inputs = [torch.randn(2, 4, 8, 8, dtype=torch.float64) for _ in range(2)]
    views = [state_view(x, torch.relu, 2, 1) for x in inputs]
    architecture = model.cell_architecture(model.cell_kinds[0])
    without = CellArchitecture(architecture.logits, architecture.edge_weights, 0.0)
    nodes = [combine_node(cell.combine, cell.edges[:2], views, weights, 0)
             for weights in (architecture, without)]
    torch.testing.assert_close(nodes[0] - nodes[1], 0.25 * (inputs[0] + inputs[1]))


# ---- Dirichlet weights (DrNAS) ---------------------------------------------------------


def test_dirichlet_weights_sum_to_one_per_edge_and_are_differentiable():
    torch.manual_seed(0)
    alpha = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    first = torch.softmax(mixing_logits(alpha, dirichlet=True, sample=True), dim=-1)
    second = torch.softmax(mixing_logits(alpha, dirichlet=True, sample=True), dim=-1)
    torch.testing.assert_close(first.sum(dim=-1), torch.ones(5, dtype=torch.float64))
    assert (first > 0).all() and not torch.equal(first, second)
    mean = torch.softmax(mixing_logits(alpha, dirichlet=True, sample=False), dim=-1)
    torch.testing.assert_close(mean, expected_weights(alpha, dirichlet=True))
    # reparameterised: the average gradient of a linear function of the samples is the
    # gradient of that function of the mean
    draws, values = 20_000, torch.arange(8, dtype=torch.float64)
    many = alpha[:1].expand(draws, 8)
    samples = torch.softmax(mixing_logits(many, dirichlet=True, sample=True), dim=-1)
    estimate, = torch.autograd.grad((samples @ values).mean(), alpha)
    exact, = torch.autograd.grad((expected_weights(alpha[:1], True) @ values).sum(), alpha)
    assert estimate[1:].abs().max() == 0
    torch.testing.assert_close(estimate, exact, rtol=0.05, atol=2e-3)


@pytest.mark.parametrize("space", SPACES)
def test_dirichlet_supernet_samples_while_training_and_averages_in_evaluation(space):
    model = tiny_supernet(space, mixed_op="reference", dirichlet=True)
    images, _ = tiny_batch(3)
    first, second = model(images), model(images)
    assert not torch.allclose(first, second)
    gradients = torch.autograd.grad(first.square().sum(), model.operation_logits())
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in gradients)
    model.eval()
    torch.testing.assert_close(model(images), model(images), rtol=0, atol=0)


# ---- a search with every cure: recorded, resumed ---------------------------------------


@pytest.mark.parametrize(("space", "order"), [("darts", 1), ("nb201", 2)])
def test_search_with_every_cure_records_them_and_resumes_after_a_kill(
    space, order, tmp_path, monkeypatch
):
    monkeypatch.setattr(darts_loop, "write_run", lambda run_dir, trained, result: None)
    config = tiny_config(space=space, order=order, epochs=3, **ALL_CURES,
                         layers=1 if space == "nb201" else 2)
    uninterrupted = search(config, RunDirectory.prepare(tmp_path / "a"))
    assert {name: uninterrupted["config"][name] for name in ALL_CURES} == ALL_CURES
    saves = []
    save_checkpoint = darts_loop.save_checkpoint

    def save_then_die(path, state):
        save_checkpoint(path, state)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # the process dies after epoch 2's checkpoint

    monkeypatch.setattr(darts_loop, "save_checkpoint", save_then_die)
    run_dir = RunDirectory.prepare(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        search(config, run_dir)
    with pytest.raises(UsageError, match="aux_skip=True"):
        search(dataclasses.replace(config, aux_skip=False), run_dir, resume=True)
    resumed = search(config, run_dir, resume=True)
    assert len(saves) == 3  # only epoch 3 was trained again
    for key in ("genotype", "supernet_val_acc", "val_acc", "final_train_loss"):
        assert resumed[key] == uninterrupted[key], key
    final = torch.load(run_dir.checkpoint_path)["model"]
    for name, tensor in torch.load(tmp_path / "a" / "checkpoint.pt")["model"].items():
        if name.startswith(("alpha_", "beta_")):
            torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-6)


def test_command_line_records_every_option_in_the_run(tmp_path):
    out = tmp_path / "run"
    status = cli.main([
        "search", "darts", "--space", "nb201", "--channels", "4", "--layers", "1",
        "--batch-size", "16", "--limit-train", "32", "--epochs", "2", "--mixed-op",
        "reference", "--out", str(out), "--partial-channels", "2", "--edge-normalization",
        "--beta-decay", "2", "--aux-skip", "--warmup-epochs", "1", "--dirichlet",
    ])  # fmt: skip
    assert status == 0
    for name in ("result.json", "config.json"):
        recorded = json.loads((out / name).read_text())
        recorded = recorded.get("config", recorded)
        assert {key: recorded[key] for key in ALL_CURES} == ALL_CURES, name
