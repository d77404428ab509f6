"""Plots of a DARTS search: the architecture weights over epochs, losses and accuracies.

Drawn on matplotlib's Agg canvas directly, as :mod:`pynas.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_LOSS_CURVES = {
    "train_loss": "weight steps (training half)",
    "valid_loss": "architecture steps (other half)",
}
_ACCURACY_CURVES = {
    "train_acc": "weight steps (training half)",
    "valid_acc": "supernet on the validation split",
}


def plot_alpha_evolution(
    history: Sequence[dict[str, Any]],
    kind: str,
    operations: Sequence[str],
    edge_names: Sequence[str],
    path: Path,
) -> None:
    """One panel per edge: the weight of each operation against the epoch.

    Parameters
    ----------
    history : per epoch (epoch 0 = the initial logits), a dict whose ``"alphas"`` maps
        each cell type to its (edges, K) operation weights (the softmax of the logits, or
        the Dirichlet mean: ``Supernet.operation_weights``).
    kind : the cell type to draw (``"normal"``, ``"reduce"``, ``"cell"``).
    operations : the K operation names; edge_names : the edges' names.
    """
    epochs = [entry["epoch"] for entry in history]
    weights = [entry["alphas"][kind] for entry in history]  # epoch x edge x operation
    columns = min(len(edge_names), 5)
    rows = math.ceil(len(edge_names) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows + 0.8), layout="constrained")
    panels = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).flatten()
    for edge, (axes, name) in enumerate(zip(panels, edge_names)):
        for operation, label in enumerate(operations):
            axes.plot(epochs, [w[edge][operation] for w in weights], label=label)
        axes.set_title(name, fontsize=9)
        axes.grid(alpha=0.3)
    for axes in panels[len(edge_names) :]:
        axes.axis("off")
    panels[0].set_ylabel("operation weight")
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(operations))
    figure.suptitle(f"architecture weights per edge ({kind} cell) over epochs")
    FigureCanvasAgg(figure).print_png(str(path))


def plot_search_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Losses (training, and validation from the architecture steps) and accuracies
    (training, supernet validation) against the epoch."""
    trained = [entry for entry in history if entry["epoch"] > 0]
    epochs = [entry["epoch"] for entry in trained]
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, accuracies = figure.subplots(1, 2, sharex=True)
    for axes, curves, label in (
        (losses, _LOSS_CURVES, "cross-entropy"),
        (accuracies, _ACCURACY_CURVES, "accuracy (%)"),
    ):
        for key, name in curves.items():
            axes.plot(epochs, [entry[key] for entry in trained], marker=".", label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("DARTS search")
    FigureCanvasAgg(figure).print_png(str(path))
