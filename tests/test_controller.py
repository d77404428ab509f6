"""The RL controller: the fused rollout kernel against the PyTorch re-scoring (teacher
forcing) and the PyTorch sampler, seeds, frequencies, program checks; the macro space."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import pynas.spaces
from pynas import _backend
from pynas.search.rl.controller import Controller
from pynas.spaces.macro import MacroSpace
from pynas.spaces.mlp import MLPSpace
from pynas.spaces.nb201 import NB201Space
from pynas.spaces.program import Step, StepKind, cell_program, decision_program

# Without pynas._C the tests that need no kernel run the PyTorch fallback, which warns once.
pytestmark = pytest.mark.filterwarnings("ignore:pynas.*using the PyTorch:RuntimeWarning")
needs_kernel = pytest.mark.skipif("cpu" not in _backend.backends(),
                                  reason="pynas._C is not built")


PROGRAMS = {
    "macro": decision_program(MacroSpace(layers=4, strides=True)),
    "cells": cell_program(),
    "nb201": decision_program(NB201Space()),
    "mlp": decision_program(MLPSpace()),
}


def make_controller(program, hidden=64, seed=0, tanh_constant=2.5):
    torch.manual_seed(seed)
    controller = Controller(program, hidden=hidden, tanh_constant=tanh_constant)
    with torch.no_grad():  # larger weights than the initial ones: peaked, varied policies
        for parameter in controller.parameters():
            parameter.mul_(8)
    return controller


@needs_kernel
@pytest.mark.parametrize("name", PROGRAMS)
@pytest.mark.parametrize("hidden, tanh_constant", [(64, 2.5), (24, 0.0)])
def test_rescored_log_probs_equal_the_kernels(name, hidden, tanh_constant):
    controller = make_controller(PROGRAMS[name], hidden, tanh_constant=tanh_constant)
    sample = controller.sample(100, torch.Generator().manual_seed(1))
    scored = controller.score(sample.actions)
    torch.testing.assert_close(sample.decision_log_prob, scored.decision_log_prob.detach(),
                               atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(sample.decision_entropy, scored.decision_entropy.detach(),
                               atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(sample.log_prob, scored.log_prob.detach(), atol=1e-4, rtol=1e-5)
    assert sample.actions.shape == (100, controller.num_decisions)
    # Gradients reach every parameter the program uses through the re-scoring.
    (scored.log_prob.mean() + scored.entropy.mean()).backward()
    attends = any(step.kind != StepKind.CHOICE for step in controller.program)
    for name_, parameter in controller.named_parameters():
        if attends or name_.split(".")[0] not in ("attention", "weight_prev", "weight_curr"):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name_


@needs_kernel
@pytest.mark.parametrize("name", PROGRAMS)
def test_kernel_draws_what_the_pytorch_loop_draws(name, monkeypatch):
    controller = make_controller(PROGRAMS[name])
    kernel = controller.sample(200, torch.Generator().manual_seed(5))
    monkeypatch.setattr(_backend, "backends", lambda: [])
    monkeypatch.setattr(_backend, "_warned", set())
    with pytest.warns(RuntimeWarning, match="no rollout kernel"):
        loop = controller.sample(200, torch.Generator().manual_seed(5))
    assert torch.equal(kernel.actions, loop.actions)
    torch.testing.assert_close(kernel.log_prob, loop.log_prob, atol=1e-4, rtol=1e-5)


def test_samples_are_architectures_of_the_space():
    space = MacroSpace(layers=5)
    controller = Controller(decision_program(space))
    for arch in controller.sample(50).actions.tolist():
        assert space.validate(arch) == tuple(arch)
    pointers = make_controller(cell_program()).sample(100).actions
    for step_decision, options in [(0, 2), (1, 2), (4, 3), (16, 6), (20, 2), (36, 6)]:
        column = pointers[:, step_decision]
        assert column.min() >= 0 and column.max() < options


def test_manual_seed_reproduces_samples_and_calls_differ():
    controller = make_controller(PROGRAMS["macro"])
    torch.manual_seed(3)
    first, second = controller.sample(64), controller.sample(64)
    torch.manual_seed(3)
    assert torch.equal(controller.sample(64).actions, first.actions)
    assert torch.equal(controller.sample(64).actions, second.actions)
    assert not torch.equal(first.actions, second.actions)


@needs_kernel
def test_first_decision_frequencies_match_its_softmax():
    # The first step sees the same input for every architecture: its n draws are i.i.d.
    controller = make_controller([Step(StepKind.CHOICE, 8), Step(StepKind.CHOICE, 3)], seed=4)
    draws = 200_000
    sample = controller.sample(draws, torch.Generator().manual_seed(0))
    probabilities = sample.decision_log_prob[:, 0].exp()
    expected = torch.zeros(8, dtype=torch.float64)
    expected[sample.actions[:, 0]] = probabilities.double()
    counts = torch.bincount(sample.actions[:, 0], minlength=8).double()
    seen = expected > 0
    statistic = ((counts[seen] - draws * expected[seen]) ** 2 / (draws * expected[seen])).sum()
    degrees = int(seen.sum()) - 1
    ratio = 2.0 / (9.0 * degrees)
    assert statistic < degrees * (1 - ratio + 3.719 * math.sqrt(ratio)) ** 3


@needs_kernel
def test_thread_count_does_not_change_samples():
    controller = make_controller(PROGRAMS["macro"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = controller.sample(100, torch.Generator().manual_seed(2))
        torch.set_num_threads(2)
        two = controller.sample(100, torch.Generator().manual_seed(2))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.actions, two.actions)
    assert torch.equal(one.log_prob, two.log_prob)


def test_zero_samples_and_bad_programs():
    controller = Controller(PROGRAMS["nb201"])
    assert controller.sample(0).actions.shape == (0, 6)
    with pytest.raises(ValueError, match="count"):
        controller.sample(-1)
    with pytest.raises(ValueError, match="anchors"):
        Controller([Step(StepKind.POINTER, 1)])
    with pytest.raises(ValueError, match="anchors"):
        Controller([Step(StepKind.SKIPS, 0, records_anchor=True), Step(StepKind.SKIPS, 2)])
    with pytest.raises(ValueError, match="empty"):
        Controller([])
    with pytest.raises(ValueError, match=r"actions must be \(n, 6\)"):
        controller.score(torch.zeros(3, 5, dtype=torch.int64))


@pytest.mark.cuda
@pytest.mark.parametrize("name", PROGRAMS)
def test_cpu_and_cuda_rollouts_agree(name):
    controller = make_controller(PROGRAMS[name])
    torch.manual_seed(7)
    on_cpu = controller.sample(500)
    controller.cuda()
    on_gpu = controller.sample(500)
    assert torch.equal(on_cpu.actions, on_gpu.actions.cpu())
    torch.testing.assert_close(on_cpu.decision_log_prob, on_gpu.decision_log_prob.cpu(),
                               atol=2e-5, rtol=1e-5)
    scored = controller.score(on_gpu.actions)
    torch.testing.assert_close(on_gpu.log_prob, scored.log_prob.detach(), atol=1e-4, rtol=1e-5)


# ---- the macro space ----

@pytest.mark.parametrize("strides", [False, True])
def test_macro_round_trips_and_builds(strides):
    space = MacroSpace(layers=5, strides=strides)
    assert len(space.num_choices) == 5 * (5 if strides else 3) + 10
    assert len(space.decision_names()) == len(space.num_choices)
    controller = Controller(decision_program(space))
    for arch in map(tuple, controller.sample(6).actions.tolist()):
        assert space.from_string(space.to_string(arch)) == arch
        assert space.from_genotype(space.to_genotype(arch)) == arch
        logits = space.build(arch, (1, 9, 8), num_outputs=10)(torch.randn(2, 1, 9, 8))
        assert logits.shape == (2, 10)


def test_macro_wiring_follows_the_paper():
    space = MacroSpace(layers=3, strides=True)
    # Layer 1 reads nothing (takes the image); layer 2 reads layers 0 and 1, whose maps
    # differ in size (stride 2 against 1): the smaller is padded. Only layer 2 feeds the
    # classifier; layer 0 and 1 are read.
    arch = space.from_string("3x3-24-s2x2 | 1x1-36-s1x1 | 5x3-48-s1x1<0,1")
    network = space.build(arch, (3, 8, 8), num_outputs=4)
    assert network.inputs == [[], [], [0, 1]]
    assert network.outputs == [2]
    assert network.layers[1].conv.in_channels == 3
    assert network.layers[2].conv.in_channels == 24 + 36
    assert network(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    lonely = space.build(space.from_string("3x3-24-s1x1 | 3x3-36-s1x1 | 3x3-48-s1x1<1"),
                         (3, 8, 8), 4)
    assert lonely.outputs == [0, 2] and lonely.classifier.in_features == 24 + 48


@pytest.mark.parametrize("text", ["3x3-24", "3x3-24 | 2x3-24 | 3x3-24", "3x3-24 | 3x3-24<1",
                                  "3x3-24 | 3x3-24-s1x1", "3x3-25 | 3x3-24",
                                  "3x3-24 | 3x3-24<", "3x3-24 | 3x3-24<0,0"])
def test_macro_rejects_bad_strings(text):
    with pytest.raises(ValueError):
        MacroSpace(layers=2).from_string(text)


# ---- decision programs belong to the spaces ----

def test_no_space_module_imports_a_strategy():
    spaces = Path(pynas.spaces.__file__).parent
    modules = sorted(spaces.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.startswith("pynas.search") for name in names), path.name


def test_default_program_is_one_choice_per_decision_and_mismatches_are_refused():
    space = NB201Space()
    assert decision_program(space) == [Step(StepKind.CHOICE, 5)] * 6

    class Wrong(NB201Space):
        def decision_program(self):
            return [Step(StepKind.CHOICE, 5)] * 5

    with pytest.raises(ValueError, match="decision program gives choices"):
        decision_program(Wrong())
