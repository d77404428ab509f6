"""The search-space interface.

An architecture is a tuple of ints, one per decision: ``arch[i]`` is in
``range(space.num_choices[i])``. Strategies only ever see these tuples (so random
search, evolution, RL and PNAS work on every space); the space alone turns them into
strings, JSON genotypes and ``nn.Module`` networks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from torch import nn

Arch = tuple[int, ...]


class SearchSpace(ABC):
    """A set of architectures encoded as fixed-length decision sequences."""

    #: short name used on the command line (``--space NAME``)
    name: str = ""

    @property
    @abstractmethod
    def num_choices(self) -> tuple[int, ...]:
        """Number of options of each decision; ``len`` is the sequence length."""

    @abstractmethod
    def decision_names(self) -> list[str]:
        """A readable name for each decision (for logs and plots)."""

    @abstractmethod
    def to_string(self, arch: Arch) -> str:
        """The canonical, human-readable string of an architecture (the trial key)."""

    @abstractmethod
    def from_string(self, text: str) -> Arch:
        """Inverse of :meth:`to_string`; raises ``ValueError`` on a malformed string."""

    @abstractmethod
    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        """A JSON-serialisable description (written to ``result.json``)."""

    @abstractmethod
    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        """Inverse of :meth:`to_genotype`; raises ``ValueError`` on bad input."""

    @abstractmethod
    def build(self, arch: Arch, num_classes: int, in_channels: int) -> nn.Module:
        """The network for images of ``in_channels`` channels and ``num_classes`` classes."""

    def validate(self, arch: Sequence[int]) -> Arch:
        """Return ``arch`` as a tuple, or raise ``ValueError`` if it is not in the space."""
        arch = tuple(int(a) for a in arch)
        if len(arch) != len(self.num_choices):
            raise ValueError(
                f"{self.name}: architecture has {len(arch)} decisions, expected "
                f"{len(self.num_choices)}"
            )
        for index, (value, count) in enumerate(zip(arch, self.num_choices)):
            if not 0 <= value < count:
                raise ValueError(
                    f"{self.name}: decision {index} is {value}, expected 0..{count - 1}"
                )
        return arch

    def count_parameters(self, arch: Arch, num_classes: int = 10, in_channels: int = 3) -> int:
        """Number of trainable parameters of the built network."""
        model = self.build(arch, num_classes, in_channels)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def count_flops(self, arch: Arch, input_shape: tuple[int, int, int] = (3, 32, 32),
                    num_classes: int = 10) -> int:
        """Multiply-adds of the convolution and linear layers for one image."""
        from pynas.spaces.flops import count_multiply_adds

        model = self.build(arch, num_classes, input_shape[0])
        return count_multiply_adds(model, input_shape)
