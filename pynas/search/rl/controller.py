"""The RL controller: an LSTM that walks a space's decision program (Zoph & Le 2017, ENAS).

Sampling runs in the fused rollout kernel (``csrc/rollout.h``): all n architectures in one
call, the LSTM steps and the Philox draws inside. Gradients come from :meth:`Controller.
score`, which re-runs the same program with ``torch.nn.LSTMCell`` on given actions (teacher
forcing); the kernel's log-probabilities equal the re-scored ones to float32 rounding.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from pynas import _backend
from pynas.ops import _kernels
from pynas.ops.sampling import (
    categorical_from_uniform_reference,
    philox_uniform_reference,
    seed_and_offset,
)
from pynas.spaces.program import Step, StepKind


class RolloutSample(NamedTuple):
    """n sampled architectures: actions (n, D) int64, the per-architecture log-probability
    and entropy (n,) (sums over the D decisions), and the per-decision values (n, D)."""

    actions: Tensor
    log_prob: Tensor
    entropy: Tensor
    decision_log_prob: Tensor
    decision_entropy: Tensor


class Controller(nn.Module):
    """LSTM controller over a decision program.

    Parameters
    ----------
    program : the steps (see :func:`pynas.spaces.program.decision_program`).
    hidden : LSTM hidden size H (default 64).
    tanh_constant : logits become ``c * tanh(logits)`` (ENAS); 0 leaves them as they are.
    """

    def __init__(self, program: list[Step], hidden: int = 64, tanh_constant: float = 2.5):
        super().__init__()
        if not program:
            raise ValueError("the decision program is empty")
        self.program = list(program)
        self.hidden = hidden
        self.tanh_constant = float(tanh_constant)
        anchors = 0
        for index, step in enumerate(self.program):
            least = 0 if step.kind == StepKind.SKIPS else 1
            needed = step.first_anchor + step.options if step.kind != StepKind.CHOICE else 0
            if step.options < least or step.first_anchor < 0 or needed > anchors:
                raise ValueError(f"step {index}: {step.kind.name.lower()} over anchors "
                                 f"{step.first_anchor}..{needed - 1}, but {anchors} recorded")
            anchors += step.records_anchor
        self.num_anchors = anchors
        self.num_decisions = sum(step.num_decisions for step in self.program)
        self._arrays = self._program_arrays()
        head_rows = sum(s.options for s in self.program if s.kind == StepKind.CHOICE)
        table_rows = 1 + sum(s.options for s in self.program if s.kind != StepKind.SKIPS)
        self.lstm = nn.LSTMCell(hidden, hidden)
        # Row 0 is the first input; then the action embeddings of each choice/pointer step.
        self.embedding = nn.Parameter(torch.empty(table_rows, hidden).uniform_(-0.1, 0.1))
        self.head_weight = nn.Parameter(torch.empty(head_rows, hidden).uniform_(-0.1, 0.1))
        self.head_bias = nn.Parameter(torch.zeros(head_rows))
        self.weight_prev = nn.Linear(hidden, hidden, bias=False)
        self.weight_curr = nn.Linear(hidden, hidden, bias=False)
        self.attention = nn.Parameter(torch.empty(hidden).uniform_(-0.1, 0.1))
        for parameter in self.lstm.parameters():
            nn.init.uniform_(parameter, -0.1, 0.1)

    def _program_arrays(self) -> list[list[int]]:
        """The seven int lists of ``pynas::RolloutProgram``."""
        arrays: list[list[int]] = [[] for _ in range(7)]
        head = decision = 0
        embedding = 1
        for step in self.program:
            for array, value in zip(arrays, (int(step.kind), step.options,
                                             int(step.records_anchor), head, embedding,
                                             decision, step.first_anchor)):
                array.append(value)
            head += step.options if step.kind == StepKind.CHOICE else 0
            embedding += step.options if step.kind != StepKind.SKIPS else 0
            decision += step.num_decisions
        return arrays

    # ---- sampling ----

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None, *,
               seed: int | None = None, offset: int | None = None) -> RolloutSample:
        """``count`` architectures from the current policy, in one fused kernel call.

        Seeds come from ``generator`` (or the default generator of the controller's
        device) as for :func:`pynas.ops.sample_categorical`, or are given as ``seed`` and
        ``offset`` (a multiple of 4; a call uses ``4 * num_decisions`` words of it).
        ``torch.manual_seed`` reproduces samples, and CPU and CUDA draw the same actions
        up to float32 rounding of the logits. Not differentiable: re-score with
        :meth:`score` for gradients.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        device = self.embedding.device
        if seed is None:
            seed, offset = seed_and_offset(4 * self.num_decisions, generator, device)
        elif offset is None or offset < 0 or offset % 4:
            raise ValueError(f"offset must be a non-negative multiple of 4, got {offset}")
        if device.type in _backend.backends() and self.hidden <= 256:
            return self._sample_kernel(count, seed, offset)
        _backend.warn_once(f"controller_rollout-{device.type}",
                           f"pynas: no rollout kernel on {device.type}; using the PyTorch loop")
        rows = torch.arange(count, device=device)

        def philox_draw(logits: Tensor, decision: int) -> Tensor:
            uniform = philox_uniform_reference(seed, rows, torch.tensor(offset // 4 + decision))
            return categorical_from_uniform_reference(logits, uniform).actions

        return self.walk(count, philox_draw)

    def _kernel_weights(self) -> list[Tensor]:
        """The nine float32 arrays of ``pynas::RolloutWeights`` (matrices transposed),
        rebuilt only when a parameter changed since the last call (an optimizer step
        bumps the parameters' version counters)."""
        versions = tuple(parameter._version for parameter in self.parameters())
        key = (versions, self.embedding.device, self.embedding.data_ptr())
        if getattr(self, "_kernel_cache", (None,))[0] != key:
            lstm = self.lstm
            with torch.no_grad():
                bias = (lstm.bias_ih + lstm.bias_hh).float()
                input_table = torch.addmm(bias, self.embedding.float(), lstm.weight_ih.float().t())
                weights = [input_table, lstm.weight_ih.t(), bias, lstm.weight_hh.t(),
                           self.head_weight, self.head_bias, self.weight_prev.weight.t(),
                           self.weight_curr.weight.t(), self.attention]
                weights = [weight.float().contiguous() for weight in weights]
            self._kernel_cache = (key, weights)
        return self._kernel_cache[1]

    def _sample_kernel(self, count: int, seed: int, offset: int) -> RolloutSample:
        device = self.embedding.device
        actions = torch.empty(count, self.num_decisions, dtype=torch.int64, device=device)
        log_prob = torch.empty(count, self.num_decisions, device=device)
        entropy = torch.empty_like(log_prob)
        _kernels.controller_rollout(self._arrays, self.num_decisions, self.num_anchors,
                                    self._kernel_weights(), self.hidden, self.tanh_constant,
                                    count, seed, offset, actions, log_prob, entropy)
        return RolloutSample(actions, log_prob.sum(1), entropy.sum(1), log_prob, entropy)

    # ---- re-scoring (teacher forcing) and the PyTorch loop ----

    def score(self, actions: Tensor) -> RolloutSample:
        """Log-probabilities and entropies of given architectures, differentiable with
        respect to every parameter: the program re-run with ``nn.LSTMCell`` on ``actions``
        (n, D) (teacher forcing)."""
        if actions.dim() != 2 or actions.shape[1] != self.num_decisions:
            raise ValueError(f"actions must be (n, {self.num_decisions}), got "
                             f"{tuple(actions.shape)}")
        actions = actions.to(self.embedding.device)
        return self.walk(actions.shape[0], lambda logits, decision: actions[:, decision])

    def _squash(self, logits: Tensor) -> Tensor:
        return self.tanh_constant * torch.tanh(logits) if self.tanh_constant > 0 else logits

    def walk(self, count: int, choose: Callable[[Tensor, int], Tensor]) -> RolloutSample:
        """The program as a batched PyTorch loop over decisions, for ``count``
        architectures at once.

        ``choose(logits, decision)`` gives the actions (count,) of decision ``decision``
        from its logits (count, K) (detached): the given actions when re-scoring, Philox
        draws for the fallback sampler, ``torch.multinomial`` in the benchmark.
        """
        device = self.embedding.device
        hidden = torch.zeros(count, self.hidden, device=device)
        cell = torch.zeros_like(hidden)
        inputs = self.embedding[0].expand(count, -1)
        anchor_hidden: list[Tensor] = []
        anchor_projection: list[Tensor] = []
        chosen_actions, log_probs, entropies = [], [], []

        def decide(logits: Tensor, decision: int) -> Tensor:
            action = choose(logits.detach(), decision)
            log_softmax = torch.log_softmax(logits, dim=1)
            chosen_actions.append(action)
            log_probs.append(log_softmax.gather(1, action[:, None])[:, 0])
            entropies.append(-(log_softmax.exp() * log_softmax).sum(1))
            return action

        heads = decision = 0
        embeddings = 1
        for step in self.program:
            hidden, cell = self.lstm(inputs, (hidden, cell))
            if step.kind == StepKind.CHOICE:
                span = slice(heads, heads + step.options)
                logits = self._squash(hidden @ self.head_weight[span].t() + self.head_bias[span])
                heads += step.options
            elif step.options > 0:
                query = self.weight_curr(hidden)
                attended = range(step.first_anchor, step.first_anchor + step.options)
                logits = self._squash(torch.stack(
                    [torch.tanh(anchor_projection[j] + query) @ self.attention
                     for j in attended], dim=1))
            if step.kind == StepKind.SKIPS:
                total = torch.zeros_like(hidden)
                chosen = torch.ones(count, 1, device=device)
                for j in range(step.options):
                    pair = torch.stack([torch.zeros_like(logits[:, j]), logits[:, j]], dim=1)
                    feeds = decide(pair, decision + j).to(hidden.dtype)[:, None]
                    total = total + feeds * anchor_hidden[step.first_anchor + j]
                    chosen = chosen + feeds
                inputs = total / chosen
            else:
                action = decide(logits, decision)
                inputs = self.embedding[embeddings + action]
                embeddings += step.options
            decision += step.num_decisions
            if step.records_anchor:
                anchor_hidden.append(hidden)
                anchor_projection.append(self.weight_prev(hidden))
        decision_log_prob = torch.stack(log_probs, dim=1)
        decision_entropy = torch.stack(entropies, dim=1)
        return RolloutSample(torch.stack(chosen_actions, dim=1), decision_log_prob.sum(1),
                             decision_entropy.sum(1), decision_log_prob, decision_entropy)
