"""The search-space interface.

An architecture is a tuple of ints, one per decision: ``arch[i]`` is in
``range(space.num_choices[i])``. Strategies only ever see these tuples (so random
search, evolution, RL and PNAS work on every space); the space alone turns them into
strings, JSON genotypes and ``nn.Module`` networks, and declares how its decisions are
laid out for a sequential sampler (:mod:`pynas.spaces.program`). A space builds networks
for one kind of input (:attr:`SearchSpace.input_kind`): images ``(C, H, W)`` or feature
vectors ``(F,)``; the last linear layer has ``num_outputs`` outputs, classes or
regression targets alike.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from torch import nn

from pynas.errors import UsageError
from pynas.spaces.program import Step, StepKind

Arch = tuple[int, ...]

#: the inputs a space can build networks for: images (C, H, W), feature vectors (F,)
IMAGE, FEATURES = "image", "features"


class SearchSpace(ABC):
    """A set of architectures encoded as fixed-length decision sequences."""

    #: short name used on the command line (``--space NAME``)
    name: str = ""
    #: what built networks take: ``"image"`` (C, H, W) or ``"features"`` (F,)
    input_kind: str = IMAGE
    #: the smallest height and width an image space builds networks for
    min_image_size: int = 8

    @property
    @abstractmethod
    def num_choices(self) -> tuple[int, ...]:
        """Number of options of each decision; ``len`` is the sequence length."""

    @abstractmethod
    def decision_names(self) -> list[str]:
        """A readable name for each decision (for logs and plots)."""

    def decision_program(self) -> list[Step]:
        """The decisions as the RL controller walks them (see :mod:`pynas.spaces.program`):
        by default one choice step per decision; a space overrides it to share structure
        (anchors, pointers) between its decisions."""
        return [Step(StepKind.CHOICE, count) for count in self.num_choices]

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
    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        """The network of ``arch``; it calls :meth:`check_input` first.

        Parameters
        ----------
        arch : the architecture.
        input_shape : one example's shape without the batch dimension: ``(C, H, W)`` for
            images, ``(F,)`` for feature vectors.
        num_outputs : outputs of the last linear layer: the classes (logits) or the
            regression targets.
        """

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Refuse, with a one-line :class:`UsageError`, an input this space cannot take:
        the wrong kind (images for a feature space, feature vectors for an image space),
        a malformed shape, or images smaller than :attr:`min_image_size`."""
        try:
            shape = tuple(operator.index(size) for size in input_shape)
        except TypeError:  # not a sequence, or a size that is not an integer
            shape = ()
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise UsageError(f"input shape must be (C, H, W) for images or (F,) for feature "
                             f"vectors, got {input_shape!r}")
        if self.input_kind == IMAGE and len(shape) == 1:
            raise UsageError(
                f"the {self.name} space builds networks for images (C, H, W); this data has "
                f"feature vectors of shape {shape}: use --space {_spaces_for(FEATURES)}")
        if self.input_kind == FEATURES and len(shape) == 3:
            raise UsageError(
                f"the {self.name} space builds networks for feature vectors (F,); this data "
                f"has images of shape {shape}: use an image space ({_spaces_for(IMAGE)})")
        if self.input_kind == IMAGE and min(shape[1:]) < self.min_image_size:
            raise UsageError(
                f"the {self.name} space needs images of at least {self.min_image_size}x"
                f"{self.min_image_size} pixels; this data has {shape[1]}x{shape[2]} images")

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

    def count_parameters(self, arch: Arch, input_shape: tuple[int, ...] = (3, 32, 32),
                         num_outputs: int = 10) -> int:
        """Number of trainable parameters of the built network (by default for CIFAR-10,
        the setting of NAS-Bench-201's published counts)."""
        model = self.build(arch, input_shape, num_outputs)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def count_flops(self, arch: Arch, input_shape: tuple[int, ...] = (3, 32, 32),
                    num_outputs: int = 10) -> int:
        """Multiply-adds of the convolution and linear layers for one example."""
        from pynas.spaces.flops import count_multiply_adds

        model = self.build(arch, input_shape, num_outputs)
        return count_multiply_adds(model, input_shape)


def _spaces_for(kind: str) -> str:
    """The registered spaces whose networks take ``kind`` inputs, for messages."""
    from pynas.spaces import SPACES  # the registry imports every space, this module first

    names = [name for name, space in SPACES.items() if space.input_kind == kind]
    return ", ".join(names) if kind == IMAGE else " or --space ".join(names)
