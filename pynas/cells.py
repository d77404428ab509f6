"""Drawings of DARTS cells and of hierarchical motifs: graphviz ``dot`` text always, a PNG
from ``dot`` when it is installed, else from matplotlib.

Cell nodes are named as in the DARTS paper's figures: ``c_{k-2}`` and ``c_{k-1}`` are the
outputs of the two previous cells, ``0 .. steps-1`` the intermediate nodes, ``c_{k}`` the
output. Motif nodes (Liu et al. 2018) are ``input``, ``1 .. n-2`` and ``output``.
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
_ARROW = {"arrowstyle": "->", "shrinkA": 16, "shrinkB": 16}


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
    lines = _dot_header(title)
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


def _dot_header(title: str) -> list[str]:
    """The first lines of a drawing's graphviz text: left to right, filled boxes."""
    return [
        f'digraph "{title}" {{',
        "  rankdir=LR;",
        '  node [style=filled, shape=rect, fontname="helvetica", fontsize=16];',
        '  edge [fontname="helvetica", fontsize=12];',
    ]


def _png_from_dot(dot_path: Path, png_path: Path) -> bool:
    """Render ``dot_path`` to ``png_path`` with graphviz; False when ``dot`` is not on
    the PATH or fails (the caller then draws with matplotlib)."""
    dot = shutil.which("dot")
    if dot is None:
        return False
    completed = subprocess.run(
        [dot, "-Tpng", "-o", str(png_path), str(dot_path)], capture_output=True, check=False
    )
    return completed.returncode == 0


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
    if not _png_from_dot(dot_path, png_path):
        _draw_with_matplotlib(pairs, concat, png_path, title)
    return [dot_path, png_path]


def _labelled_arrow(
    axes, start: tuple[float, float], end: tuple[float, float], bend: float, label: str
) -> None:
    """An arrow from ``start`` to ``end`` (data coordinates) bent by ``bend`` (matplotlib's
    ``arc3`` radius), with ``label`` on the middle of its curve."""
    axes.annotate("", end, start, arrowprops={**_ARROW, "connectionstyle": f"arc3,rad={bend}"})
    # The label sits on the curve's middle: an arc3 Bezier bulges by bend / 2 times
    # the chord turned clockwise, measured in display coordinates.
    to_display = axes.transData
    (x0, y0), (x1, y1) = to_display.transform([start, end])
    middle = ((x0 + x1) / 2 + bend * (y1 - y0) / 2, (y0 + y1) / 2 - bend * (x1 - x0) / 2)
    axes.text(
        *to_display.inverted().transform(middle),
        label,
        fontsize=8,
        ha="center",
        va="center",
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "none"},
    )


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
    for index, (operation, source) in enumerate(pairs):
        bend = 0.15 if index % 2 else -0.15  # the two edges into a node must not overlap
        _labelled_arrow(axes, position[source], position[index // 2 + 2], bend, operation)
    for node in concat:
        axes.annotate("", output, position[node], arrowprops={**_ARROW, "color": "gray"})
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


def motif_node_name(index: int, nodes: int) -> str:
    """The drawn name of node ``index`` of a motif of ``nodes`` nodes."""
    return "input" if index == 0 else "output" if index == nodes - 1 else str(index)


def _motif_node_colour(index: int, nodes: int) -> str:
    return _INPUT_COLOUR if index == 0 else _OUTPUT_COLOUR if index == nodes - 1 else _NODE_COLOUR


def motifs_dot(
    motifs: Sequence[Sequence[Sequence]], nodes: int, names: Sequence[str], title: str
) -> str:
    """The graphviz text of motifs (Liu et al. 2018), each in its own box.

    Parameters
    ----------
    motifs : per motif, its edges ``(source, target, operation)``: the nodes are
        ``0 .. nodes-1``, 0 the motif's input and ``nodes - 1`` its output.
    nodes : nodes of every motif.
    names : the title of each motif.
    """
    lines = _dot_header(title)
    for index, (edges, name) in enumerate(zip(motifs, names)):
        lines += [f'  subgraph "cluster_{index}" {{', f'    label="{name}";']
        lines += [
            f'    "{index}:{node}" [label="{motif_node_name(node, nodes)}", '
            f"fillcolor={_motif_node_colour(node, nodes)}];"
            for node in range(nodes)
        ]
        lines += [
            f'    "{index}:{source}" -> "{index}:{target}" [label="{operation}"];'
            for source, target, operation in edges
        ]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_motifs(
    motifs: Sequence[Sequence[Sequence]],
    nodes: int,
    names: Sequence[str],
    stem: Path,
    title: str = "motifs",
) -> list[Path]:
    """Write ``stem.dot`` and ``stem.png`` of motifs (see :func:`motifs_dot`); returns
    the files written. The PNG comes from graphviz's ``dot`` when it is on the PATH (and
    succeeds), from matplotlib otherwise."""
    stem = Path(stem)
    dot_path, png_path = stem.with_suffix(".dot"), stem.with_suffix(".png")
    dot_path.write_text(motifs_dot(motifs, nodes, names, title))
    if not _png_from_dot(dot_path, png_path):
        _draw_motifs_with_matplotlib(motifs, nodes, names, png_path, title)
    return [dot_path, png_path]


#: the bend of every motif edge: edges bulge upwards by a quarter of their length, so
#: that no two of them (a source and a target fix both the middle and the height) and no
#: edge and node share a label position
_MOTIF_BEND = -0.5
_MOTIF_NODE_SPACING = 1.5


def _draw_motifs_with_matplotlib(
    motifs: Sequence[Sequence[Sequence]],
    nodes: int,
    names: Sequence[str],
    path: Path,
    title: str,
) -> None:
    # The nodes on a line, left to right like dot's rankdir=LR; one row per motif.
    width = _MOTIF_NODE_SPACING * (nodes - 1) + 1.4
    height = -_MOTIF_BEND / 2 * _MOTIF_NODE_SPACING * (nodes - 1) + 1.2
    figure = Figure(figsize=(1.1 * width, 1.1 * height * len(motifs) + 0.8))
    figure.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / figure.get_figheight(), hspace=0.15
    )
    figure.suptitle(title)
    for row, (edges, name) in enumerate(zip(motifs, names)):
        axes = figure.add_subplot(len(motifs), 1, row + 1)
        axes.set_xlim(-0.7, width - 0.7)
        axes.set_ylim(-0.6, height - 0.6)
        position = {node: (_MOTIF_NODE_SPACING * node, 0.0) for node in range(nodes)}
        for source, target, operation in edges:
            _labelled_arrow(axes, position[source], position[target], _MOTIF_BEND, operation)
        for node, (x, y) in position.items():
            axes.text(
                x,
                y,
                motif_node_name(node, nodes),
                ha="center",
                va="center",
                fontsize=11,
                bbox={"boxstyle": "round", "facecolor": _motif_node_colour(node, nodes)},
            )
        axes.axis("off")
        axes.set_title(name, fontsize=10)
    FigureCanvasAgg(figure).print_png(str(path))
