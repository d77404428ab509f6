"""A cost target for DARTS: ``--cost-target COUNT`` with ``--objectives val_acc,flops``
(or ``params``).

FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et al., ICLR 2019) make a network's
cost differentiable with a table of what each candidate operation costs: an edge's
expected cost is the sum of its operations' costs weighted by their probabilities, the
network's the sum over its edges plus what no choice changes. TF-NAS (Hu et al., ECCV
2020) pulls that expectation toward a target. pynas does the same with four pieces:

- the table (:func:`cost_table`): for every edge of the supernet and every operation
  discretization can choose on it, what that operation costs in the network the search
  derives: full channels even with ``--partial-channels``, the search's input shape, the
  multiply-adds of one example or the parameters counted by :mod:`pynas.costs` on the
  supernet's ``discrete_space``. Each entry is the difference between two architectures
  of that space that differ on that edge alone, so the table is measured by the very
  counts ``pynas.costs.measure`` makes, and any space whose cost adds up over its edges
  gets an exact one (checked in ``tests/test_darts_cost.py``); ``base`` is the rest (stem,
  reductions, the cells' preprocessing, classifier);
- the expected cost (:func:`expected_cost`): ``base + sum_e sum_o P[e, o] * cost[e, o]``,
  with ``P`` the supernet's ``choice_weights``: the operation weights on nb201, where every
  edge is kept; on the darts cell, where discretization keeps two input edges per node
  and never ``none``, the weights without ``none`` renormalised, times each edge's share
  ``2 * strength / sum of the node's strengths`` of the node's two kept inputs;
- the penalty (:func:`cost_penalty`): ``weight * log(C / target) ** 2``, added to the
  validation loss of every architecture step. ``log C`` is straight-through: its value is
  that of the discretized cell's cost (:func:`discretized_cost`, from the table), its
  gradient that of the log of the expected cost over sharpened weights (below). The
  target is met or missed by the discretized cell, not by the mixture: under beta-decay
  (the default) the operation weights stay within a percent of uniform, so the expected
  cost sits near the mean of each edge's operations whatever cell the argmax picks, and
  a penalty on the expected cost alone falls silent while the discretized cell is still
  far from the target. The logarithm makes the penalty depend on the ratio alone, so
  that one weight serves multiply-adds and parameters, small targets and large.

  The gradient goes through each edge's weights sharpened (:func:`sharpen`) so that
  their log-spread is :data:`SHARPNESS`: near uniform weights, the gradient of the plain
  expectation favours the operation of the largest cost difference on every edge (to
  add cost, always the 3x3 convolution, never the 1x1), and the discretized cell then
  jumps back and forth over a target that lies between two such steps (measured on
  nb201: one 3x3 convolution too many, then none, the penalty's gradient averaging out).
  Sharpened, the gradient goes to the operations next to each edge's argmax, the ones a
  small move of the logits makes the argmax, which lets the cell reach the target in
  small steps.

  The weight is large (:data:`pynas.search.darts.config.DEFAULT_COST_WEIGHT`) because
  under beta-decay every logit's gradient carries a positive part common to its edge
  (``lambda * softmax / edges``, about 1.7 per logit at the end of the default ramp on
  nb201) and Adam scales each logit's step by its own gradient's size: the cost term
  changes the relative logits only where it outweighs that part.

- the choice of the cell (:func:`fit_to_target`): the penalty steers the weights, but the
  argmax cell can still end one operation short of or past the target, where the weights
  of the operations on either side differ by a thousandth. The discretized cell is
  therefore the one of highest weight within ``--cost-tolerance`` of the target, which is
  the argmax cell whenever that one is within it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pynas import costs
from pynas.search.darts.bilevel import Penalty
from pynas.search.darts.supernet import Supernet

#: the spread, in logits, of each edge's sharpened weights in the penalty's gradient
SHARPNESS = 4.0
#: the cost measures a per-operation table can price: both add up over the operations
TABLE_MEASURES = {"flops": costs.multiply_adds, "params": costs.parameters}


@dataclass(frozen=True)
class CostTable:
    """What each operation of each edge costs in the discretized network.

    Attributes
    ----------
    measure : ``"flops"`` (multiply-adds of one example) or ``"params"``.
    base : the cost of the reference architecture (see ``Supernet.edge_variants``).
    costs : per cell type, (edges, K) float64: what the operation adds to ``base`` when
        the discretized cell keeps it on that edge (0 for ``none``).
    """

    measure: str
    base: float
    costs: dict[str, Tensor]


def cost_table(model: Supernet, measure: str, input_shape: Sequence[int],
               num_outputs: int) -> CostTable:
    """The table of ``model``'s operations, in ``measure``, for networks of
    ``input_shape`` and ``num_outputs`` (see the module docstring). Counts one network
    per edge and operation (cached by :mod:`pynas.costs`): about a second on nb201."""
    count = TABLE_MEASURES[measure]
    space, shape = model.discrete_space, tuple(input_shape)
    reference, variants = model.edge_variants()
    base = count(space, reference, shape, num_outputs)
    edges, operations = model.operation_logits()[0].shape
    table = {kind: torch.zeros(edges, operations, dtype=torch.float64)
             for kind in model.cell_kinds}
    for (kind, edge, operation), arch in variants.items():
        table[kind][edge, operation] = count(space, arch, shape, num_outputs) - base
    return CostTable(measure, float(base), table)


def expected_cost(model: Supernet, table: CostTable, sharpness: float | None = None) -> Tensor:
    """The differentiable expected cost of ``model``'s discretized network (a scalar in
    the architecture parameters' dtype), each edge's choice weights sharpened to a
    log-spread of ``sharpness`` when given (see :func:`sharpen`)."""
    total = 0.0
    for kind in model.cell_kinds:
        weights = sharpen(model.choice_weights(kind), sharpness)
        total = total + (weights * table.costs[kind].to(weights)).sum()
    return table.base + total


def sharpen(weights: Tensor, sharpness: float | None) -> Tensor:
    """(edges, K) non-negative weights with each row's logarithms stretched so that the
    row's strongest and weakest (non-zero) operations lie ``sharpness`` apart, each row
    keeping its sum. The stretch is taken as a constant (detached), so the gradient of a
    cost through the sharpened weights goes mostly to the operations near the top of
    each edge, those a small change of the logits can make the argmax. ``None``: the
    weights as they are."""
    if sharpness is None:
        return weights
    logits = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
    live = weights > 0
    spread = (logits.masked_fill(~live, -math.inf).amax(dim=-1, keepdim=True)
              - logits.masked_fill(~live, math.inf).amin(dim=-1, keepdim=True)).detach()
    stretched = (logits * (sharpness / spread.clamp_min(1e-6))).masked_fill(~live, -math.inf)
    return weights.sum(dim=-1, keepdim=True) * torch.softmax(stretched, dim=-1)


def discretized_cost(model: Supernet, table: CostTable) -> float:
    """The cost of the network of ``model``'s discretized cells, read from the table."""
    return table.base + sum(
        float(table.costs[kind][edge, operation])
        for kind, choices in model.discrete_choices().items()
        for edge, operation in enumerate(choices)
    )


def cost_penalty(model: Supernet, table: CostTable, target: float, weight: float) -> Penalty:
    """``weight * log(C / target) ** 2``, ``C`` the discretized cell's cost in value and
    the expected cost in gradient (see the module docstring)."""

    def penalty() -> Tensor:
        # In logarithms, so that the gradient's scale is the expected cost's, which
        # stays near the mean of the operations, not the discretized one's, which can be
        # ten times larger and would weaken the push just where it is needed most.
        expected = torch.log(expected_cost(model, table, SHARPNESS))
        cost = expected + (math.log(discretized_cost(model, table)) - expected.detach())
        return weight * (cost - math.log(target)) ** 2

    return penalty


#: the relative width of the cost bins in which :func:`fit_to_target` keeps one partial
#: cell each (0.01%)
FIT_BIN = 1e-4


def fit_to_target(model: Supernet, table: CostTable, target: float,
                  tolerance: float) -> dict[str, list[int]]:
    """The discretization with a cost within ``tolerance`` of ``target`` (``|C / target -
    1| <= tolerance``) whose operations weigh most, or when none has, that of the cost
    nearest the target.

    It keeps the edges the argmax discretization keeps (on the darts cell, two per node)
    and chooses each kept edge's operation among those :meth:`Supernet.choice_weights`
    gives a weight (on the darts cell, not ``none``), maximising the sum of their log
    weights: the cell the argmax gives when its cost is within the band, else the one
    closest to it in weight that is. The search goes edge by edge and keeps, per bin of
    relative width :data:`FIT_BIN` of the cost so far, the choices of highest weight:
    exact whenever no two such partial cells' costs lie within 0.01% of each other
    (always on nb201, whose few distinct operation costs leave a few hundred sums).
    Returns the choices as :meth:`Supernet.discrete_choices` gives them."""
    argmax = model.discrete_choices()
    none = model.operations.index("none")
    # (score, cost, choices) of the partial cells, one per cost bin
    states: dict[int, tuple[float, float, tuple[tuple[str, int, int], ...]]] = {
        0: (0.0, table.base, ())}
    with torch.no_grad():
        for kind, choices in argmax.items():
            logs = model.choice_weights(kind).double().log()
            for edge, chosen in enumerate(choices):
                if chosen == none and logs[edge, none] == -math.inf:
                    continue  # an edge discretization drops, not an operation choice
                options = [(operation, float(logs[edge, operation]),
                            float(table.costs[kind][edge, operation]))
                           for operation in range(logs.shape[1])
                           if logs[edge, operation] > -math.inf]
                grown: dict[int, tuple[float, float, tuple[tuple[str, int, int], ...]]] = {}
                for score, cost, path in states.values():
                    for operation, log_weight, extra in options:
                        total = cost + extra
                        key = round(math.log(max(total, 1.0)) / FIT_BIN)
                        if key not in grown or grown[key][0] < score + log_weight:
                            grown[key] = (score + log_weight, total,
                                          path + ((kind, edge, operation),))
                states = grown

    def distance(state: tuple[float, float, tuple]) -> tuple[float, float]:
        """Outside the band first, then lower weight."""
        score, cost, _ = state
        return max(abs(cost / target - 1) - tolerance, 0.0), -score

    fitted = {kind: list(choices) for kind, choices in argmax.items()}
    for kind, edge, operation in min(states.values(), key=distance)[2]:
        fitted[kind][edge] = operation
    return fitted


def measured_cost(model: Supernet, table: CostTable, input_shape: Sequence[int],
                  num_outputs: int) -> int:
    """The discretized network's cost as ``pynas.costs.measure`` gives it."""
    measures = costs.measure(model.discrete_space, model.discrete_architecture(),
                             tuple(input_shape), num_outputs)
    return int(measures[table.measure])


def cost_summary(model: Supernet, table: CostTable, target: int, weight: float,
                 input_shape: Sequence[int], num_outputs: int) -> dict[str, Any]:
    """For ``result.json``: the measure, the target and weight, the discretized
    network's measured cost and its ratio to the target, and the final expected cost."""
    measured = measured_cost(model, table, input_shape, num_outputs)
    with torch.no_grad():
        expected = float(expected_cost(model, table))
    return {
        "measure": table.measure,
        "target": target,
        "weight": weight,
        "cost": measured,
        "ratio": measured / target,
        "expected_cost": expected,
    }
