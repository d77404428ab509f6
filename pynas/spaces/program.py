"""Decision programs: how a space lays out its decisions for a sequential sampler.

A space declares its decisions as a program of steps (:meth:`pynas.spaces.base.SearchSpace.
decision_program`); the RL controller (Zoph & Le 2017, ENAS) walks it one LSTM step at a
time. The program lives with the spaces so that a space never imports a strategy.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pynas.spaces.base imports this module (the default program)
    from pynas.spaces.base import SearchSpace


class StepKind(IntEnum):
    """What a controller step decides (the numbers are ``pynas::StepKind``)."""

    CHOICE = 0   # one of `options` values, from the step's own softmax head
    POINTER = 1  # one of `options` anchors (earlier nodes), by attention
    SKIPS = 2    # for each of `options` anchors (earlier layers), whether it feeds this one


@dataclass(frozen=True)
class Step:
    """One LSTM step of a decision program.

    A choice or pointer step makes one decision; a skips step makes ``options`` binary
    decisions (possibly none). Pointer and skips steps attend to the anchors
    ``first_anchor, ..., first_anchor + options - 1`` (a cell's own nodes).
    ``records_anchor`` appends this step's hidden state to the anchors.
    """

    kind: StepKind
    options: int
    records_anchor: bool = False
    first_anchor: int = 0

    @property
    def num_decisions(self) -> int:
        return self.options if self.kind == StepKind.SKIPS else 1


def decision_program(space: SearchSpace) -> list[Step]:
    """The space's program, checked: its decisions must be the space's, in order.

    Raises
    ------
    ValueError
        When the program's decisions differ from ``space.num_choices``.
    """
    program = list(space.decision_program())
    sizes = [option for step in program for option in
             ([2] * step.options if step.kind == StepKind.SKIPS else [step.options])]
    if tuple(sizes) != tuple(space.num_choices):
        raise ValueError(f"{space.name}: decision program gives choices {sizes}, the space "
                         f"has {list(space.num_choices)}")
    return program


def cell_program(blocks: int = 5, cells: int = 2, operations: int = 8) -> list[Step]:
    """The ENAS/NASNet cell program: per cell, two anchors for the cell inputs, then per
    block two pointers over the cell's nodes so far (its inputs and earlier blocks) and two
    operation choices; each block records an anchor. ``4 * blocks * cells`` decisions."""
    program: list[Step] = []
    for cell in range(cells):
        first = cell * (2 + blocks)
        program += [Step(StepKind.SKIPS, 0, records_anchor=True)] * 2
        for block in range(blocks):
            program += [Step(StepKind.POINTER, 2 + block, first_anchor=first)] * 2
            program += [Step(StepKind.CHOICE, operations),
                        Step(StepKind.CHOICE, operations, records_anchor=True)]
    return program
