"""The macro space of Zoph & Le, "Neural Architecture Search with Reinforcement Learning"
(ICLR 2017), section 3.3 and 4.1: a CNN of L convolution layers, each choosing its filter
height and width in {1, 3, 5, 7}, its number of filters in {24, 36, 48, 64} and,
optionally, its stride height and width in {1, 2}; skip connections come from anchor
points: layer N decides, for each earlier layer j, whether j feeds it.

Building (the paper's rules): a layer's chosen inputs are concatenated along channels,
smaller feature maps zero-padded to the largest; a layer with no input takes the image;
every layer that feeds no later layer feeds the classifier (concatenated, global average
pooled, one linear layer). Each layer is convolution, batch norm, ReLU.

Decisions, layer by layer: ``filter_height, filter_width, filters[, stride_height,
stride_width], skip_0, ..., skip_{N-1}``, option indices into the tuples below; a skip is
1 when that earlier layer feeds layer N. With L layers there are ``L * (3 or 5) + L (L -
1) / 2`` decisions. The RL controller walks :meth:`ChainSpace.decision_program`: a
choice step per layer property and one anchor step per layer, as in the paper.

String: layers joined by ``" | "``, each ``HxW-F`` (``HxW-F-sHxW`` with strides) then
``<j,k`` naming its inputs when it has any, e.g. ``3x3-36 | 5x1-24<0 | 7x7-64<0,1``.

:class:`ChainSpace` holds what the macro space shares with the mlp space
(:mod:`pynas.spaces.mlp`): the decisions of a chain with anchor-point skips, their
program, strings and genotypes.
"""
from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from pynas.errors import UsageError
from pynas.spaces.base import IMAGE, Arch, SearchSpace
from pynas.spaces.program import Step, StepKind

FILTER_SIZES = (1, 3, 5, 7)
FILTER_COUNTS = (24, 36, 48, 64)
STRIDES = (1, 2)

_LAYER_PATTERN = re.compile(r"(\d+)x(\d+)-(\d+)(?:-s(\d+)x(\d+))?")
_INPUTS_PATTERN = re.compile(r"\d+(?:,\d+)*")


def unread_layers(inputs: Sequence[Sequence[int]]) -> list[int]:
    """The layers that no later layer reads, in order (they feed the output head);
    ``inputs[n]`` lists the earlier layers that feed layer ``n``."""
    read = {j for layer_inputs in inputs for j in layer_inputs}
    return [n for n in range(len(inputs)) if n not in read]


class ChainSpace(SearchSpace):
    """``layers`` layers, each choosing its properties and then, at its anchor point,
    which earlier layers feed it (Zoph & Le 2017, section 3.3).

    Decisions, layer by layer: one per property (an index into its options), then one bit
    per earlier layer ``j``, 1 when ``j`` feeds the layer. A layer is described by a dict
    (:meth:`layer_specs`): its property values and ``inputs``, the earlier layers it reads.
    Subclasses set ``layers`` and ``properties`` and write and read a layer's properties
    as text; they may describe a layer otherwise than by its raw property values
    (:meth:`_describe` and :meth:`_encode`, inverse of each other).
    """

    #: number of layers L
    layers: int
    #: (name, options) of each decision a layer makes before its skips
    properties: list[tuple[str, tuple[Any, ...]]]

    @property
    def num_choices(self) -> tuple[int, ...]:
        choices: list[int] = []
        for layer in range(self.layers):
            choices += [len(options) for _, options in self.properties] + [2] * layer
        return tuple(choices)

    def decision_names(self) -> list[str]:
        names = []
        for layer in range(self.layers):
            names += [f"layer{layer}.{name}" for name, _ in self.properties]
            names += [f"layer{layer}.from{j}" for j in range(layer)]
        return names

    def decision_program(self) -> list[Step]:
        """Per layer a choice step per property, then the anchor step of its skips."""
        program = []
        for layer in range(self.layers):
            program += [Step(StepKind.CHOICE, len(options)) for _, options in self.properties]
            program.append(Step(StepKind.SKIPS, layer, records_anchor=True))
        return program

    def layer_specs(self, arch: Arch) -> list[dict[str, Any]]:
        """Each layer's description: its properties and ``inputs`` (earlier layers)."""
        arch = self.validate(arch)
        specs, position, count = [], 0, len(self.properties)
        for layer in range(self.layers):
            spec = self._describe(arch[position:position + count])
            position += count
            spec["inputs"] = [j for j in range(layer) if arch[position + j] == 1]
            position += layer
            specs.append(spec)
        return specs

    def from_layer_specs(self, specs: list[dict[str, Any]]) -> Arch:
        """Inverse of :meth:`layer_specs`; raises ``ValueError`` on bad values."""
        if not isinstance(specs, list) or len(specs) != self.layers:
            count = len(specs) if isinstance(specs, list) else repr(specs)
            raise ValueError(f"{self.name}: {count} layers given, the space has {self.layers}")
        arch: list[int] = []
        for layer, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise ValueError(f"{self.name}: layer {layer} must be a dict, got {spec!r}")
            arch += self._encode(layer, spec)
            inputs = spec.get("inputs", [])
            if (not isinstance(inputs, list)
                    or any(isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < layer
                           for j in inputs)
                    or len(set(inputs)) != len(inputs)):
                raise ValueError(f"{self.name}: layer {layer} inputs {inputs!r} must be "
                                 "distinct earlier layers")
            arch += [int(j in inputs) for j in range(layer)]
        return tuple(arch)

    def canonical(self, arch: Arch) -> Arch:
        """The architecture with the decisions its network ignores set to 0: two
        architectures are the same network when their canonical forms are equal."""
        return self.from_layer_specs(self.layer_specs(arch))

    def _describe(self, choices: Sequence[int]) -> dict[str, Any]:
        """One layer's property values from its option indices."""
        return {name: options[choice] for (name, options), choice in zip(self.properties, choices)}

    def _encode(self, layer: int, spec: dict[str, Any]) -> list[int]:
        """Inverse of :meth:`_describe`; raises ``ValueError`` on a value not offered."""
        choices = []
        for name, options in self.properties:
            value = spec.get(name)
            if isinstance(value, bool) or value not in options:
                raise ValueError(f"{self.name}: layer {layer} {name} is {value!r}, expected "
                                 f"one of {options}")
            choices.append(options.index(value))
        return choices

    @abstractmethod
    def _layer_text(self, spec: dict[str, Any]) -> str:
        """A layer's properties as text (its inputs are appended by :meth:`to_string`)."""

    @abstractmethod
    def _parse_layer(self, text: str) -> dict[str, Any] | None:
        """Inverse of :meth:`_layer_text`, ``None`` when ``text`` is not a layer."""

    def to_string(self, arch: Arch) -> str:
        parts = []
        for spec in self.layer_specs(arch):
            text = self._layer_text(spec)
            if spec["inputs"]:
                text += "<" + ",".join(str(j) for j in spec["inputs"])
            parts.append(text)
        return " | ".join(parts)

    def from_string(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise ValueError(f"{self.name}: architecture string expected, got "
                             f"{type(text).__name__}")
        specs = []
        for layer, part in enumerate(text.split("|")):
            body, marker, inputs = part.strip().partition("<")
            spec = self._parse_layer(body.strip())
            if spec is None or (marker and not _INPUTS_PATTERN.fullmatch(inputs)):
                raise ValueError(f"{self.name}: cannot read layer {layer} {part.strip()!r}")
            spec["inputs"] = [int(j) for j in inputs.split(",")] if marker else []
            specs.append(spec)
        return self.from_layer_specs(specs)

    def _genotype_settings(self) -> dict[str, Any]:
        """Space settings a genotype records besides its layers."""
        return {}

    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        return {"space": self.name, **self._genotype_settings(), "layers": self.layer_specs(arch),
                "string": self.to_string(arch)}

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict) or genotype.get("space") != self.name:
            raise ValueError(f"{self.name}: not a {self.name} genotype (expected space "
                             f"{self.name!r})")
        if not isinstance(genotype.get("layers"), list):
            raise ValueError(f"{self.name}: genotype has no 'layers' list")
        return self.from_layer_specs(genotype["layers"])


def _pad_to(features: Tensor, height: int, width: int) -> Tensor:
    """Zero-pad (batch, C, h, w) on the bottom and right to (batch, C, height, width)."""
    return functional.pad(features, (0, width - features.shape[3], 0, height - features.shape[2]))


def concatenate_padded(features: list[Tensor]) -> Tensor:
    """Feature maps (batch, C_i, h_i, w_i) padded to the largest h and w, concatenated
    along channels (the paper's rule for a layer with several inputs)."""
    height = max(f.shape[2] for f in features)
    width = max(f.shape[3] for f in features)
    return torch.cat([_pad_to(f, height, width) for f in features], dim=1)


class MacroLayer(nn.Module):
    """Convolution (the chosen filter shape, count and stride), batch norm, ReLU."""

    def __init__(self, in_channels: int, filters: int, filter_height: int, filter_width: int,
                 stride_height: int, stride_width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, (filter_height, filter_width),
                              stride=(stride_height, stride_width),
                              padding=(filter_height // 2, filter_width // 2), bias=False)
        self.norm = nn.BatchNorm2d(filters)

    def forward(self, features: Tensor) -> Tensor:
        return functional.relu(self.norm(self.conv(features)))


class MacroNetwork(nn.Module):
    """Layers wired by their chosen inputs; the layers nobody reads feed the classifier."""

    def __init__(self, layers: list[dict[str, Any]], in_channels: int, num_outputs: int):
        super().__init__()
        self.inputs = [list(layer["inputs"]) for layer in layers]
        channels = []
        modules = []
        for layer, inputs in zip(layers, self.inputs):
            layer_in = sum(channels[j] for j in inputs) if inputs else in_channels
            modules.append(MacroLayer(layer_in, layer["filters"], layer["filter_height"],
                                      layer["filter_width"], layer["stride_height"],
                                      layer["stride_width"]))
            channels.append(layer["filters"])
        self.layers = nn.ModuleList(modules)
        self.outputs = unread_layers(self.inputs)
        self.classifier = nn.Linear(sum(channels[n] for n in self.outputs), num_outputs)

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, in_channels, H, W) -> outputs (batch, num_outputs)."""
        features: list[Tensor] = []
        for layer, inputs in zip(self.layers, self.inputs):
            source = concatenate_padded([features[j] for j in inputs]) if inputs else images
            features.append(layer(source))
        pooled = concatenate_padded([features[n] for n in self.outputs]).mean(dim=(2, 3))
        return self.classifier(pooled)


class MacroSpace(ChainSpace):
    """Zoph & Le's macro space of ``layers`` convolution layers with anchor-point skips.

    Parameters
    ----------
    layers : number of convolution layers L (the paper grows it to 15; 6 by default, for
        the small images this machine trains on).
    strides : also choose stride height and width in {1, 2} per layer.
    """

    name = "macro"
    input_kind = IMAGE

    def __init__(self, layers: int = 6, strides: bool = False) -> None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise UsageError(f"macro: layers must be a positive integer, got {layers!r}")
        self.layers = layers
        self.strides = bool(strides)
        self.properties = [("filter_height", FILTER_SIZES), ("filter_width", FILTER_SIZES),
                           ("filters", FILTER_COUNTS)]
        if self.strides:
            self.properties += [("stride_height", STRIDES), ("stride_width", STRIDES)]

    def _describe(self, choices: Sequence[int]) -> dict[str, Any]:
        return {"stride_height": 1, "stride_width": 1, **super()._describe(choices)}

    def _encode(self, layer: int, spec: dict[str, Any]) -> list[int]:
        choices = super()._encode(layer, spec)
        strides = (spec.get("stride_height", 1), spec.get("stride_width", 1))
        if not self.strides and strides != (1, 1):
            raise ValueError(f"macro: layer {layer} has strides but the space has none")
        return choices

    def _layer_text(self, spec: dict[str, Any]) -> str:
        text = f"{spec['filter_height']}x{spec['filter_width']}-{spec['filters']}"
        if self.strides:
            text += f"-s{spec['stride_height']}x{spec['stride_width']}"
        return text

    def _parse_layer(self, text: str) -> dict[str, Any] | None:
        match = _LAYER_PATTERN.fullmatch(text)
        if match is None or (match.group(4) is not None) != self.strides:
            return None
        height, width, filters, stride_height, stride_width = match.groups()
        return {"filter_height": int(height), "filter_width": int(width),
                "filters": int(filters), "stride_height": int(stride_height or 1),
                "stride_width": int(stride_width or 1)}

    def _genotype_settings(self) -> dict[str, Any]:
        return {"strides": self.strides}

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        self.check_input(input_shape)
        return MacroNetwork(self.layer_specs(arch), input_shape[0], num_outputs)
