"""RL search: an LSTM controller trained with REINFORCE (Zoph & Le, ICLR 2017).

Each controller update samples m architectures in one fused rollout (they are evaluated in
parallel by the executor), and once all m rewards (validation accuracy) are in, takes one
Adam step on

    loss = -mean_k (R_k - b) log p(a_k) - beta * mean_k H(a_k)      (Zoph & Le, Eq. 2)

with b an exponential moving average of the rewards (the baseline) and beta the entropy
bonus (ENAS). Log-probabilities for the gradient come from re-scoring the sampled actions
with the PyTorch LSTM. The controller, its optimizer, the baseline and the Philox stream
position are in the state, so a resumed run continues exactly.

With two objectives, an accuracy and a cost (``--objectives val_acc,flops --cost-target
60M``), the reward is MnasNet's (Tan et al., CVPR 2019, Eq. 2): ``accuracy *
(cost / target) ** w``. The soft reward has ``w = -0.07`` on both sides of the target
(``--cost-weight`` sets its size), the hard one ``w = 0`` up to the target and ``-1``
beyond it (``--cost-weight`` sets that ``1``).
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from pynas.costs import parse_count, parse_milliseconds
from pynas.errors import UsageError
from pynas.objectives import COST_MEASURES, LATENCY_MEASURES, Objectives
from pynas.search.base import Strategy
from pynas.search.rl.controller import Controller
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.program import decision_program


class Reinforce(Strategy):
    """REINFORCE over a space's decision program.

    Parameters
    ----------
    space : the space; its ``decision_program()`` when it has one, else one choice step
        per decision.
    seed : seeds the controller's weights and its sampling stream.
    batch : m, architectures per controller update.
    learning_rate : Adam's step size.
    entropy_weight : beta, the entropy bonus.
    baseline_decay : the baseline's moving-average decay.
    hidden : the LSTM's hidden size.
    tanh_constant : logits become ``c * tanh(logits)``; 0 leaves them as they are.
    reward : the MnasNet reward of two objectives (:class:`MnasReward`); without it the
        reward is the score.
    """

    name = "rl"

    def __init__(self, space: SearchSpace, seed: int = 0, batch: int = 10,
                 learning_rate: float = 0.03, entropy_weight: float = 1e-4,
                 baseline_decay: float = 0.95, hidden: int = 64,
                 tanh_constant: float = 2.5, reward: MnasReward | None = None) -> None:
        super().__init__(space, seed, None if reward is None else reward.objectives)
        self.reward = reward
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        self.batch = batch
        self.entropy_weight = entropy_weight
        self.baseline_decay = baseline_decay
        with torch.random.fork_rng(devices=[]):  # seed the weights, leave the global stream
            torch.manual_seed(seed)
            self.controller = Controller(decision_program(space), hidden, tanh_constant)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=learning_rate)
        self.baseline: float | None = None
        self.updates = 0
        # The Philox stream of the rollouts: the seed, and the offset of the next batch.
        self._philox = [seed % 2**64, 0]
        self._actions: list[Arch] = []  # the current batch
        self._rewards: list[float | None] = []
        self._told: list[bool] = []
        self._asked = 0

    def ask(self, count: int) -> list[Arch]:
        """Up to ``count`` architectures of the current batch (a new batch is sampled
        once every architecture of the last one was told); none while waiting."""
        if self._asked == len(self._actions) and all(self._told):
            self._sample_batch()
        asked = self._actions[self._asked:self._asked + max(count, 0)]
        self._asked += len(asked)
        return asked

    def value_of(self, metrics: dict[str, Any]) -> float:
        """The score, or with objectives the MnasNet reward (in the score's units)."""
        return metrics["score"] if self.reward is None else self.reward(metrics)

    def _sample_batch(self) -> None:
        seed, offset = self._philox
        sample = self.controller.sample(self.batch, seed=seed, offset=offset)
        self._philox[1] = offset + 4 * self.controller.num_decisions
        self._actions = [tuple(arch) for arch in sample.actions.tolist()]
        self._rewards = [None] * self.batch
        self._told = [False] * self.batch
        self._asked = 0

    def tell(self, arch: Arch, score: float | None) -> None:
        """Record ``arch``'s validation accuracy (percent); a failed evaluation (None)
        leaves it out of the update. The last result of a batch triggers the update."""
        arch = tuple(arch)
        for index in range(self._asked):
            if self._actions[index] == arch and not self._told[index]:
                self._told[index] = True
                self._rewards[index] = None if score is None else float(score) / 100.0
                break
        else:
            raise ValueError(f"rl: told about {arch}, which was not asked or already told")
        if self._asked == len(self._actions) and all(self._told):
            self._update()

    def _update(self) -> None:
        """One REINFORCE step on the told batch (Eq. 2 with a moving-average baseline)."""
        scored = [(arch, reward) for arch, reward in zip(self._actions, self._rewards)
                  if reward is not None]
        if not scored:
            return
        rewards = torch.tensor([reward for _, reward in scored])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantages = rewards - self.baseline
        sample = self.controller.score(torch.tensor([arch for arch, _ in scored]))
        loss = (-(advantages * sample.log_prob).mean()
                - self.entropy_weight * sample.entropy.mean())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.baseline = (self.baseline_decay * self.baseline
                         + (1.0 - self.baseline_decay) * float(rewards.mean()))
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "updates": self.updates,
            "philox": list(self._philox),
            "batch": {"actions": [list(arch) for arch in self._actions],
                      "rewards": list(self._rewards), "told": list(self._told),
                      "asked": self._asked},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.updates = state["updates"]
        self._philox = list(state["philox"])
        batch = state["batch"]
        self._actions = [tuple(arch) for arch in batch["actions"]]
        self._rewards = list(batch["rewards"])
        self._told = list(batch["told"])
        self._asked = batch["asked"]


class MnasReward:
    """MnasNet's reward ``accuracy * (cost / target) ** w`` (Tan et al. 2019, Eq. 2).

    Parameters
    ----------
    objectives : two, an accuracy (maximised) and a cost (minimised), in either order.
    target : the cost's target, in its units.
    kind : ``"soft"``: ``w = -weight`` everywhere (default weight 0.07, the paper's);
        ``"hard"``: ``w = 0`` up to the target, ``-weight`` beyond it (default 1).
    weight : the size of ``w``.
    """

    DEFAULT_WEIGHTS = {"soft": 0.07, "hard": 1.0}

    def __init__(self, objectives: Objectives, target: float | None, kind: str = "soft",
                 weight: float | None = None) -> None:
        maximised = [o for o in objectives if o.maximize]
        minimised = [o for o in objectives if not o.maximize]
        if len(maximised) != 1 or len(minimised) != 1:
            raise UsageError(f"rl: --objectives for the MnasNet reward are an accuracy "
                             f"(maximised) and a cost (minimised), got {objectives}")
        if target is None:
            raise UsageError(f"rl: --objectives needs --cost-target, the target of "
                             f"{minimised[0].name} in the reward accuracy * (cost/target)^w")
        if kind not in self.DEFAULT_WEIGHTS:
            raise UsageError(f"rl: --reward must be soft or hard, got {kind!r}")
        weight = self.DEFAULT_WEIGHTS[kind] if weight is None else weight
        if not weight > 0:
            raise UsageError(f"rl: --cost-weight must be positive, got {weight}")
        self.objectives = objectives
        self.accuracy, self.cost = maximised[0].name, minimised[0].name
        self.target, self.kind, self.weight = float(target), kind, float(weight)

    def __call__(self, metrics: dict[str, Any]) -> float:
        cost = float(metrics[self.cost])
        over = cost > self.target
        exponent = -self.weight if self.kind == "soft" or over else 0.0
        return float(metrics[self.accuracy]) * (max(cost, 1e-12) / self.target) ** exponent


def parse_target(value: Any, cost: str) -> float:
    """``--cost-target`` in the units of the cost objective ``cost``: a count with SI
    suffixes for the counted measures, milliseconds for latency, else a positive number."""
    if cost in COST_MEASURES and cost not in LATENCY_MEASURES:
        return float(parse_count(value, "--cost-target"))
    return parse_milliseconds(value, "--cost-target") if cost in LATENCY_MEASURES else (
        _positive(value, "--cost-target"))


def _positive(value: Any, option: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise UsageError(f"{option} must be a positive number, got {value!r}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pynas search rl``."""
    group = parser.add_argument_group("REINFORCE controller")
    group.add_argument("--controller-batch", type=int, default=10, metavar="M",
                       help="architectures per controller update (default: %(default)s)")
    group.add_argument("--controller-lr", type=float, default=0.03,
                       help="Adam learning rate (default: %(default)s, best measured on "
                            "NAS-Bench-201; Zoph & Le's: 0.0006)")
    group.add_argument("--entropy-weight", type=float, default=1e-4,
                       help="entropy bonus (default: %(default)s)")
    group.add_argument("--baseline-decay", type=float, default=0.95,
                       help="moving-average decay of the baseline (default: %(default)s)")
    group.add_argument("--controller-hidden", type=int, default=64,
                       help="LSTM hidden size (default: %(default)s)")
    reward = parser.add_argument_group(
        "MnasNet reward (with --objectives ACCURACY,COST)",
        "the reward becomes accuracy * (cost / target) ** w (Tan et al. 2019)")
    reward.add_argument("--cost-target", metavar="VALUE",
                        help="the cost's target (counts take SI suffixes: 60M)")
    reward.add_argument("--reward", choices=tuple(MnasReward.DEFAULT_WEIGHTS),
                        help="soft: w = -0.07 everywhere (the default); hard: w = 0 up to the "
                        "target and -1 beyond it")
    reward.add_argument("--cost-weight", type=float, metavar="W",
                        help="the size of w (default: 0.07 soft, 1 hard)")


def check_arguments(space: SearchSpace, args: argparse.Namespace) -> None:
    """Refuse reward options without objectives, and objectives without a target."""
    objectives = getattr(args, "_objectives", None)
    if objectives is None:
        given = [flag for flag, value in (("--cost-target", args.cost_target),
                                          ("--reward", args.reward),
                                          ("--cost-weight", args.cost_weight))
                 if value is not None]
        if given:
            raise UsageError(f"rl: {', '.join(given)} shape the MnasNet reward, which needs "
                             "--objectives ACCURACY,COST")
        return
    reward_of(args, objectives)


def reward_of(args: argparse.Namespace, objectives: Objectives) -> MnasReward:
    """The reward the options describe (errors as :class:`MnasReward` raises them)."""
    costs = [o.name for o in objectives if not o.maximize]
    target = args.cost_target
    if target is not None and len(costs) == 1:
        target = parse_target(target, costs[0])
    return MnasReward(objectives, target, args.reward or "soft", args.cost_weight)


def build(space: SearchSpace, args: argparse.Namespace) -> Reinforce:
    """The strategy for ``pynas search rl`` (see :mod:`pynas.search.cli`)."""
    try:
        objectives = getattr(args, "_objectives", None)
        return Reinforce(space, seed=args.seed, batch=args.controller_batch,
                         learning_rate=args.controller_lr, entropy_weight=args.entropy_weight,
                         baseline_decay=args.baseline_decay, hidden=args.controller_hidden,
                         reward=None if objectives is None else reward_of(args, objectives))
    except ValueError as error:
        raise UsageError(f"rl: {error}") from error
