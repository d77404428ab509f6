"""REINFORCE: it learns, batches, failures, checkpoint/resume, and an end-to-end run on the
macro space training real child networks on the digits."""
from __future__ import annotations

import io

import pytest
import torch

from pynas.evaluate.train import TrainEvaluator
from pynas.runs import RunDirectory
from pynas.search.loop import Budget, run_search
from pynas.search.rl.reinforce import Reinforce
from pynas.spaces.macro import MacroSpace
from pynas.spaces.nb201 import NB201Space

# Without pynas._C the controller samples with its PyTorch loop, which warns once.
pytestmark = pytest.mark.filterwarnings("ignore:pynas.*using the PyTorch:RuntimeWarning")

TARGET = (3, 3, 1, 3, 2, 3)


def reward(arch) -> float:
    """Percent of the decisions equal to TARGET's: 20 on average for uniform draws."""
    return 100.0 * sum(a == t for a, t in zip(arch, TARGET)) / len(TARGET)


def run_updates(strategy: Reinforce, updates: int) -> list[float]:
    """Ask and tell whole batches; the mean reward of each."""
    means = []
    for _ in range(updates):
        batch = strategy.ask(strategy.batch)
        assert len(batch) == strategy.batch
        for arch in batch:
            strategy.tell(arch, reward(arch))
        means.append(sum(map(reward, batch)) / len(batch))
    return means


def test_reinforce_learns_a_target_architecture():
    strategy = Reinforce(NB201Space(), seed=0, batch=10, learning_rate=0.02)
    means = run_updates(strategy, 60)
    assert sum(means[:5]) / 5 < 40
    assert sum(means[-5:]) / 5 > 55, means[-5:]  # uniform draws score 20
    assert strategy.updates == 60


def test_batches_wait_for_their_results():
    strategy = Reinforce(NB201Space(), seed=1, batch=4)
    first = strategy.ask(3)
    assert len(first) == 3
    rest = strategy.ask(5)
    assert len(rest) == 1
    assert strategy.ask(2) == []  # waiting for the batch's results
    for arch in first + rest[:0]:
        strategy.tell(arch, 50.0)
    assert strategy.ask(2) == [] and strategy.updates == 0
    before = [p.detach().clone() for p in strategy.controller.parameters()]
    strategy.tell(rest[0], 90.0)
    assert strategy.updates == 1
    after = list(strategy.controller.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    assert len(strategy.ask(10)) == 4


def test_failed_evaluations_are_left_out():
    strategy = Reinforce(NB201Space(), seed=2, batch=3)
    batch = strategy.ask(3)
    for arch in batch:
        strategy.tell(arch, None)
    assert strategy.updates == 0 and strategy.baseline is None
    batch = strategy.ask(3)
    strategy.tell(batch[0], None)
    strategy.tell(batch[1], 40.0)
    strategy.tell(batch[2], 60.0)
    assert strategy.updates == 1 and strategy.baseline == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not asked"):
        strategy.tell(batch[0], 10.0)


def test_resume_continues_exactly():
    uninterrupted = Reinforce(NB201Space(), seed=3, batch=5)
    run_updates(uninterrupted, 3)
    half = uninterrupted.ask(3)
    for arch in half[:2]:
        uninterrupted.tell(arch, reward(arch))
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)
    buffer.seek(0)
    resumed = Reinforce(NB201Space(), seed=99, batch=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    for strategy in (uninterrupted, resumed):
        strategy.tell(half[2], reward(half[2]))
        for arch in strategy.ask(5):
            strategy.tell(arch, reward(arch))
    run_a, run_b = run_updates(uninterrupted, 3), run_updates(resumed, 3)
    assert run_a == run_b
    assert uninterrupted.ask(5) == resumed.ask(5)
    for a, b in zip(uninterrupted.controller.parameters(), resumed.controller.parameters()):
        assert torch.equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch"):
        Reinforce(NB201Space(), batch=0)
    with pytest.raises(ValueError, match="baseline_decay"):
        Reinforce(NB201Space(), baseline_decay=1.0)


def test_macro_search_trains_child_networks_and_resumes(tmp_path):
    space = MacroSpace(layers=3)
    evaluator = TrainEvaluator("digits", epochs=1, limit_train=256)

    def search(evaluations: int) -> tuple[Reinforce, dict]:
        strategy = Reinforce(space, seed=0, batch=2)
        run = RunDirectory.prepare(tmp_path, resume=True, durable=False)
        return strategy, run_search(strategy, evaluator, run, Budget(evaluations))

    strategy, result = search(2)
    assert result["evaluations"] == 2 and strategy.updates == 1
    # Resuming from the checkpoint continues the controller: one more update, not two.
    strategy, result = search(4)
    assert result["evaluations"] == 4 and strategy.updates == 2
    best = result["best"]
    assert space.to_string(space.from_genotype(best["genotype"])) == best["arch"]
    assert 10.0 < best["val_acc"] <= 100.0  # trained: better than chance on 10 classes
