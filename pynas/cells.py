"""Drawings of DARTS cells: graphviz ``dot`` text always, a PNG from ``dot`` when it is
installed, else from matplotlib.

Nodes are named as in the paper's figures: ``c_{k-2}`` and ``c_{k-1}`` are the outputs of
the two previous cells, ``0 .. steps-1`` the intermediate nodes, ``c_{k}`` the output.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"
# names both graphviz and matplotlib know
_INPUT_COLOUR, _NODE_COLOUR, _OUTPUT_COLOUR = "palegreen", "lightblue", "palegoldenrod"


def node_name(index: int) -> str:
    """The drawn name of cell node ``index`` (0 and 1 are the cell inputs)."""
    return INPUT_NAMES[index] if index < 2 else str(index - 2)


def cell_dot(pairs: Sequence[Sequence], concat: Sequence[int], title: str = "cell") -> str:
    """The graphviz text of one cell.

    Parameters
    ----------
    pairs : ``[operation, input node]`` pairs, two per intermediate node (a genotype's
        ``normal`` or ``reduce``).
    concat : the nodes concatenated into the output (``normal_concat`` / ``reduce_concat``).
    """
    steps = len(pairs) // 2
    lines = [
        f'digraph "{title}" {{',
        "  rankdir=LR;",
        '  node [style=filled, shape=rect, fontname="helvetica", fontsize=16];',
        '  edge [fontname="helvetica", fontsize=12];',
    ]
    lines += [f'  "{name}" [fillcolor={_INPUT_COLOUR}];' for name in INPUT_NAMES]
    lines += [
        f'  "{node_name(node + 2)}" [fillcolor={_NODE_COLOUR}, shape=circle];'
        for node in range(steps)
    ]
    lines.append(f'  "{OUTPUT_NAME}" [fillcolor={_OUTPUT_COLOUR}];')
    for index, (operation, source) in enumerate(pairs):
        target = node_name(index // 2 + 2)
        lines.append(f'  "{node_name(source)}" -> "{target}" [label="{operation}"];')
    lines += [f'  "{node_name(node)}" -> "{OUTPUT_NAME}" [color=gray];' for node in concat]
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_cell(
    pairs: Sequence[Sequence], concat: Sequence[int], stem: Path, title: str = "cell"
) -> list[Path]:
    """Write ``stem.dot`` and ``stem.png``; returns the files written.

    The PNG comes from graphviz's ``dot`` when it is on the PATH (and succeeds), from
    matplotlib otherwise.
    """
    stem = Path(stem)
    dot_path, png_path = stem.with_suffix(".dot"), stem.with_suffix(".png")
    dot_path.write_text(cell_dot(pairs, concat, title))
    dot = shutil.which("dot")
    drawn = False
    if dot is not None:
        completed = subprocess.run(
            [dot, "-Tpng", "-o", str(png_path), str(dot_path)], capture_output=True, check=False
        )
        drawn = completed.returncode == 0
    if not drawn:
        _draw_with_matplotlib(pairs, concat, png_path, title)
    return [dot_path, png_path]


def _draw_with_matplotlib(
    pairs: Sequence[Sequence], concat: Sequence[int], path: Path, title: str
) -> None:
    steps = len(pairs) // 2
    # Left to right like dot's rankdir=LR: inputs, intermediate nodes (alternately high
    # and low so that edges skipping a node stay visible), output.
    position = {0: (0.0, 0.0), 1: (0.0, 2.0)}
    for node in range(steps):
        position[node + 2] = (1.5 * (node + 1), 1.0 + (0.6 if node % 2 else -0.6))
    output = (1.5 * (steps + 1), 1.0)
    figure = Figure(figsize=(2.2 * (steps + 2), 4.5))
    axes = figure.add_subplot()
    axes.set_xlim(-0.7, output[0] + 0.7)
    axes.set_ylim(-0.7, 2.7)
    to_display = axes.transData
    arrow = {"arrowstyle": "->", "shrinkA": 16, "shrinkB": 16}
    for index, (operation, source) in enumerate(pairs):
        start, end = position[source], position[index // 2 + 2]
        bend = 0.15 if index % 2 else -0.15  # the two edges into a node must not overlap
        axes.annotate("", end, start, arrowprops={**arrow, "connectionstyle": f"arc3,rad={bend}"})
        # The label sits on the curve's middle: an arc3 Bezier bulges by bend / 2 times
        # the chord turned clockwise, measured in display coordinates.
        (x0, y0), (x1, y1) = to_display.transform([start, end])
        middle = ((x0 + x1) / 2 + bend * (y1 - y0) / 2, (y0 + y1) / 2 - bend * (x1 - x0) / 2)
        axes.text(
            *to_display.inverted().transform(middle),
            operation,
            fontsize=8,
            ha="center",
            va="center",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "none"},
        )
    for node in concat:
        axes.annotate("", output, position[node], arrowprops={**arrow, "color": "gray"})
    colours = {0: _INPUT_COLOUR, 1: _INPUT_COLOUR}
    for index, (x, y) in position.items():
        colour = colours.get(index, _NODE_COLOUR)
        axes.text(
            x,
            y,
            f"${node_name(index)}$" if index < 2 else node_name(index),
            ha="center",
            va="center",
            fontsize=12,
            bbox={"boxstyle": "round", "facecolor": colour},
        )
    axes.text(
        *output,
        f"${OUTPUT_NAME}$",
        ha="center",
        va="center",
        fontsize=12,
        bbox={"boxstyle": "round", "facecolor": _OUTPUT_COLOUR},
    )
    axes.axis("off")
    axes.set_title(title)
    FigureCanvasAgg(figure).print_png(str(path))


def draw_genotype(genotype: dict, folder: Path) -> list[Path]:
    """Draw a DARTS genotype's normal and reduction cells into ``folder``
    (``normal_cell.{dot,png}``, ``reduce_cell.{dot,png}``); returns the files written."""
    written: list[Path] = []
    for kind, title in (("normal", "normal cell"), ("reduce", "reduction cell")):
        written += draw_cell(
            genotype[kind], genotype[f"{kind}_concat"], Path(folder) / f"{kind}_cell", title
        )
    return written
