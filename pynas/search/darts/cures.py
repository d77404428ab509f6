"""Cures for the collapse of DARTS to parameter-free operations.

Each is an option of ``pynas search darts`` on both supernets; beta-decay is on by default
(chosen by measurement, see ``bench/RESULTS.md``), the others off:

- ``--beta-decay W``: the beta-decay regularization of beta-DARTS (Ye et al., CVPR 2022):
  the architecture loss gains ``lambda * mean_e logsumexp(alpha_e)`` (:func:`beta_decay`),
  ``lambda`` ramped linearly from 0 to W over the search (:func:`linear_ramp`). Its gradient
  ``softmax(alpha_e) / E`` lowers every logit in proportion to its weight, which keeps the
  logits of an edge close together (Sec. 3 of the paper).
- ``--aux-skip``: the auxiliary skip connection of DARTS- (Chu et al., ICLR 2021): an
  identity path beside every edge of the normal cells, outside the search space, whose
  coefficient decays linearly from 1 to 0 over the search (1 minus :func:`linear_ramp`).
  The residual path it provides is what lets the skip-connection candidate win early
  without it (Sec. 3 of the paper).
- ``--warmup-epochs N``: weight-only epochs before the architecture moves (PC-DARTS warms
  up 15 of its 50 epochs), so the logits are not fitted to untrained operations.
- ``--dirichlet``: the mixed weights of an edge are a reparameterised sample of a
  Dirichlet distribution of concentration ``elu(alpha) + 1`` (DrNAS, Chen et al., ICLR
  2021; :func:`mixing_logits`); its expectation, ``concentration /
  sum(concentration)``, is what an edge weighs at evaluation and what discretization ranks.
  DrNAS's default anchor regulariser (an L2 penalty of 1e-3 on the logits, pulling the
  concentration towards 1) is the architecture optimiser's weight decay, which pynas
  already applies.

Partial channel connections and edge normalization (PC-DARTS) are in
:mod:`pynas.search.darts.partial`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as functional
from torch import Tensor


def linear_ramp(step: int, steps: int) -> float:
    """``step / (steps - 1)``: 0 at the first of ``steps`` steps, 1 at the last."""
    return step / max(steps - 1, 1)


def beta_decay(alphas: Sequence[Tensor]) -> Tensor:
    """The beta-decay regularization of beta-DARTS: the mean over every edge of
    every cell type of ``logsumexp`` of its (K,) logits; ``alphas`` are (edges, K)."""
    return torch.logsumexp(torch.cat(list(alphas)), dim=-1).mean()


def dirichlet_concentration(alpha: Tensor) -> Tensor:
    """DrNAS's positive concentration ``elu(alpha) + 1`` of (edges, K) logits."""
    return functional.elu(alpha) + 1.0


def expected_weights(alpha: Tensor, dirichlet: bool) -> Tensor:
    """What each operation of an edge weighs on average: ``softmax(alpha)``, or the mean of
    the Dirichlet distribution of concentration ``elu(alpha) + 1``."""
    if not dirichlet:
        return torch.softmax(alpha, dim=-1)
    concentration = dirichlet_concentration(alpha)
    return concentration / concentration.sum(dim=-1, keepdim=True)


def mixing_logits(alpha: Tensor, dirichlet: bool, sample: bool) -> Tensor:
    """Logits whose softmax weighs the operations of each edge, for the node combine.

    ``alpha`` itself without ``dirichlet``. With it, ``log theta``: ``theta`` a Dirichlet
    sample per edge (reparameterised, so differentiable in ``alpha``) when ``sample``,
    else the Dirichlet mean; the combine's softmax of ``log theta`` is ``theta``.
    """
    if not dirichlet:
        return alpha
    concentration = dirichlet_concentration(alpha)
    if sample:
        weights = torch.distributions.Dirichlet(concentration).rsample()
    else:
        weights = concentration / concentration.sum(dim=-1, keepdim=True)
    # Clamped so that a weight of exactly 0 (a one-hot discretized edge) has a finite logit.
    return weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
