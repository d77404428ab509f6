"""The bilevel optimisation of DARTS (Sec. 2.3 of the paper).

The architecture logits ``alpha`` minimise the validation loss of the weights ``w*(alpha)``
that minimise the training loss (Eq. 3-4). Steps alternate: one on ``alpha`` with a
validation batch, one on ``w`` with a training batch. ``order=1`` takes the gradient of the
validation loss at the current weights; ``order=2`` at the weights after one virtual step
of the weight optimiser (Eq. 6), which needs a Hessian-vector product, approximated by a
central finite difference (Eq. 8).

The supernet must provide ``arch_parameters()``, ``named_weight_parameters()`` and
``weight_parameters()`` (see :class:`pynas.search.darts.supernet.ArchitectureMixin`).
A regulariser of the architecture alone (beta-DARTS's beta-decay) adds its gradient to the
architecture step's; warm-up epochs take weight steps only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as distributed
import torch.nn.functional as functional
from torch import Tensor, nn
from torch.func import functional_call

Batch = tuple[Tensor, Tensor]
#: a regulariser of the architecture: a scalar tensor from its parameters alone
Penalty = Callable[[], Tensor]


def average_across_processes(tensors: Sequence[Tensor]) -> None:
    """Average ``tensors`` in place over the processes of the default group (one
    flattened all-reduce); nothing to do in a single process."""
    if not (distributed.is_available() and distributed.is_initialized()):
        return
    world_size = distributed.get_world_size()
    if world_size == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _loss(model: nn.Module, batch: Batch, weights: dict[str, Tensor] | None = None) -> Tensor:
    """Cross-entropy of ``model`` on ``batch``, with ``weights`` (name -> tensor) in place
    of the model's own weights when given."""
    images, labels = batch
    logits = model(images) if weights is None else functional_call(model, weights, (images,))
    return functional.cross_entropy(logits, labels)


def _alpha_gradients(loss: Tensor, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    # Zeros for logits the loss does not use: a network too shallow to hold a normal cell
    # (fewer than 3 layers) never reads alpha_normal.
    return torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)


def virtual_step(
    weights: Sequence[Tensor],
    gradients: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor | None],
    learning_rate: float,
    momentum: float,
    weight_decay: float,
) -> list[Tensor]:
    """The weights after one step of SGD with momentum and weight decay (Eq. 6's
    ``w - xi * grad``, taken exactly as the weight optimiser would take it)."""
    stepped = []
    for weight, gradient, buffer in zip(weights, gradients, momentum_buffers):
        direction = gradient + weight_decay * weight
        if buffer is not None:
            direction = direction + momentum * buffer
        stepped.append(weight - learning_rate * direction)
    return stepped


def hessian_vector_product(
    model: nn.Module,
    names: Sequence[str],
    weights: Sequence[Tensor],
    vector: Sequence[Tensor],
    train_batch: Batch,
) -> list[Tensor]:
    """``d^2 L_train / (d alpha d w) @ vector`` by a central difference (Eq. 8):
    ``(grad_alpha L_train(w + e v) - grad_alpha L_train(w - e v)) / 2e`` with
    ``e = 0.01 / ||v||``."""
    epsilon = 0.01 / torch.cat([v.reshape(-1) for v in vector]).norm()
    alphas = model.arch_parameters()
    devices = [weights[0].device] if weights[0].device.type == "cuda" else []
    gradients = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            shifted = {n: w + sign * epsilon * v for n, w, v in zip(names, weights, vector)}
        # Both sides of the difference draw the same random numbers (DrNAS's Dirichlet
        # sample), so that it measures the shift of the weights alone.
        with torch.random.fork_rng(devices=devices):
            loss = _loss(model, train_batch, shifted)
        gradients.append(_alpha_gradients(loss, alphas))
    return [(plus - minus) / (2 * epsilon) for plus, minus in zip(*gradients)]


def unrolled_arch_gradient(
    model: nn.Module,
    train_batch: Batch,
    valid_batch: Batch,
    learning_rate: float,
    momentum_buffers: Sequence[Tensor | None],
    momentum: float,
    weight_decay: float,
) -> tuple[list[Tensor], Tensor]:
    """The second-order architecture gradient (Eq. 7 with Eq. 8).

    ``grad_alpha L_val(w', alpha) - xi * d^2 L_train(w, alpha)/(d alpha d w) @ grad_w' L_val``
    with ``w' = virtual_step(w)`` and ``xi = learning_rate``.

    Parameters
    ----------
    momentum_buffers : per weight (in ``named_weight_parameters`` order), the weight
        optimiser's momentum buffer, or ``None`` before its first step.

    Returns
    -------
    (gradients, validation loss)
        one gradient per tensor of ``arch_parameters()``, and ``L_val(w', alpha)``.
    """
    names, weights = zip(*model.named_weight_parameters())
    alphas = model.arch_parameters()
    gradients = torch.autograd.grad(_loss(model, train_batch), weights)
    with torch.no_grad():
        stepped = virtual_step(
            weights, gradients, momentum_buffers, learning_rate, momentum, weight_decay
        )
    unrolled = [w.detach().requires_grad_() for w in stepped]
    valid_loss = _loss(model, valid_batch, dict(zip(names, unrolled)))
    direct = _alpha_gradients(valid_loss, [*alphas, *unrolled])
    alpha_gradients, unrolled_gradients = direct[: len(alphas)], direct[len(alphas) :]
    implicit = hessian_vector_product(model, names, weights, unrolled_gradients, train_batch)
    return (
        [d - learning_rate * h for d, h in zip(alpha_gradients, implicit)],
        valid_loss.detach(),
    )


class BilevelOptimizer:
    """Alternating weight and architecture updates of a supernet, as the paper's search.

    Weights: SGD (momentum 0.9, weight decay 3e-4), learning rate cosine-annealed from
    ``weight_lr`` to ``weight_lr_min`` over ``epochs``, gradient norm clipped to
    ``grad_clip``. Architecture: Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3).
    Gradients are averaged over processes when torch.distributed is initialised.
    """

    def __init__(
        self,
        model: nn.Module,
        epochs: int,
        order: int = 1,
        weight_lr: float = 0.025,
        weight_lr_min: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_lr: float = 3e-4,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
    ) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.model = model
        self.order = order
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.weights = model.weight_parameters()
        self.alphas = model.arch_parameters()
        self.weight_optimizer = torch.optim.SGD(
            self.weights, lr=weight_lr, momentum=momentum, weight_decay=weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.weight_optimizer, max(epochs, 1), eta_min=weight_lr_min
        )
        self.arch_optimizer = torch.optim.Adam(
            self.alphas, lr=arch_lr, betas=arch_betas, weight_decay=arch_weight_decay
        )

    @property
    def learning_rate(self) -> float:
        """The weights' current learning rate (also the ``xi`` of the unrolled step)."""
        return self.weight_optimizer.param_groups[0]["lr"]

    def momentum_buffers(self) -> list[Tensor | None]:
        """The SGD momentum buffer of each weight, ``None`` before the first step."""
        return [self.weight_optimizer.state.get(w, {}).get("momentum_buffer") for w in self.weights]

    def arch_step(
        self, train_batch: Batch, valid_batch: Batch, penalty: Penalty | None = None
    ) -> float:
        """One Adam step on the architecture; returns the validation loss it was computed
        from. ``penalty()``, a scalar function of the architecture parameters alone, adds
        its gradient to the validation loss's."""
        self.model.train()
        if self.order == 1:
            valid_loss = _loss(self.model, valid_batch)
            gradients = list(_alpha_gradients(valid_loss, self.alphas))
        else:
            gradients, valid_loss = unrolled_arch_gradient(
                self.model,
                train_batch,
                valid_batch,
                self.learning_rate,
                self.momentum_buffers(),
                self.momentum,
                self.weight_decay,
            )
        average_across_processes(gradients)
        if penalty is not None:
            extra = _alpha_gradients(penalty(), self.alphas)
            gradients = [gradient + more for gradient, more in zip(gradients, extra)]
        for alpha, gradient in zip(self.alphas, gradients):
            alpha.grad = gradient
        self.arch_optimizer.step()
        return valid_loss.item()

    def weight_step(self, train_batch: Batch) -> tuple[float, Tensor]:
        """One SGD step on the weights; returns the training loss and the logits."""
        self.model.train()
        images, labels = train_batch
        logits = self.model(images)
        loss = functional.cross_entropy(logits, labels)
        gradients = torch.autograd.grad(loss, self.weights)
        average_across_processes(gradients)
        for weight, gradient in zip(self.weights, gradients):
            weight.grad = gradient
        nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.weight_optimizer.step()
        return loss.item(), logits.detach()

    def step(
        self,
        train_batch: Batch,
        valid_batch: Batch,
        update_architecture: bool = True,
        penalty: Penalty | None = None,
    ) -> dict[str, Any]:
        """One search iteration: the architecture step (with ``penalty``, see
        :meth:`arch_step`; skipped in a warm-up, ``update_architecture=False``, whose
        validation loss is then NaN), then the weight step (the paper's Algorithm 1)."""
        valid_loss = float("nan")
        if update_architecture:
            valid_loss = self.arch_step(train_batch, valid_batch, penalty)
        train_loss, logits = self.weight_step(train_batch)
        correct = int((logits.argmax(dim=1) == train_batch[1]).sum())
        return {"valid_loss": valid_loss, "train_loss": train_loss, "train_correct": correct}

    def end_epoch(self) -> None:
        """Advance the weights' cosine schedule."""
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
