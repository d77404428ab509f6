"""How a searched supernet becomes a discrete cell: ``--selection``.

``argmax`` (the DARTS paper) keeps each edge's operation of highest weight.
``perturbation`` asks the trained supernet instead (after Wang et al., "Rethinking
Architecture Selection in Differentiable NAS", ICLR 2021): each edge gets the operation
whose removal raises the supernet's loss the most, measured on the architecture's half of
the training split. Removing an operation gives its weight to the edge's other operations
in proportion to theirs (its logit is pushed to the bottom of the softmax), so the edge's
output keeps its scale. ``none`` is never chosen: with its zero output, removing it only
rescales the others. On the darts space the cell keeps the edges the argmax keeps (two per
node) and takes each one's operation from the perturbation.

Two departures from the paper, both measured (bench/RESULTS.md, "perturbation"):
removing an operation there zeroes its output without sharing out its weight, which on
the nb201 supernet trained on digits chose skip connections on most edges; and there is
no fine-tuning between edges: every edge is measured on the one trained supernet. That
costs a forward pass of those examples per candidate operation of each kept edge (nb201:
24; darts: 112).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from tqdm import tqdm

from pynas.search.darts.supernet import REMOVED, Supernet

#: ``--selection`` choices
SELECTIONS = ("argmax", "perturbation")


@torch.no_grad()
def perturbation_choices(
    model: Supernet, batches: list[tuple[torch.Tensor, torch.Tensor]], progress: bool = False
) -> dict[str, list[int]]:
    """Per cell type, the operation index of each edge chosen by perturbation (see the
    module docstring; ``none`` on the edges the argmax cell drops), in the form of
    :meth:`Supernet.discrete_choices`, for :meth:`Supernet.pin`.

    ``batches`` are the (prepared inputs, labels) the loss is measured on; ``model`` is
    left as it was given (its logits restored, in evaluation mode).
    """
    model.eval()
    count = sum(len(labels) for _, labels in batches)

    def loss() -> float:
        total = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in batches)
        return total / count

    none = model.operations.index("none")
    argmax = model.discrete_choices()
    measured = {kind: [edge for edge, chosen in enumerate(argmax[kind])
                       if model.keeps_every_edge or chosen != none]
                for kind in model.cell_kinds}
    candidates = [index for index in range(len(model.operations)) if index != none]
    bar = tqdm(total=sum(map(len, measured.values())) * len(candidates), disable=not progress,
               desc="perturbation", unit="pass")
    choices = {}
    with bar:
        for kind in model.cell_kinds:
            alpha = getattr(model, f"alpha_{kind}")
            chosen = list(argmax[kind])
            for edge in measured[kind]:
                saved = alpha[edge].clone()
                rises = {}
                for operation in candidates:
                    alpha[edge, operation] = REMOVED
                    rises[operation] = loss()
                    alpha[edge] = saved
                    bar.update()
                chosen[edge] = max(rises, key=rises.__getitem__)
            choices[kind] = chosen
    return choices
