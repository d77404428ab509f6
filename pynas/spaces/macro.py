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
1) / 2`` decisions. The RL controller walks :meth:`MacroSpace.decision_program`: a
choice step per layer property and one anchor step per layer, as in the paper.

String: layers joined by ``" | "``, each ``HxW-F`` (``HxW-F-sHxW`` with strides) then
``<j,k`` naming its inputs when it has any, e.g. ``3x3-36 | 5x1-24<0 | 7x7-64<0,1``.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from pynas.errors import UsageError
from pynas.search.rl.controller import Step, StepKind
from pynas.spaces.base import Arch, SearchSpace

FILTER_SIZES = (1, 3, 5, 7)
FILTER_COUNTS = (24, 36, 48, 64)
STRIDES = (1, 2)

_LAYER_PATTERN = re.compile(r"^(\d+)x(\d+)-(\d+)(?:-s(\d+)x(\d+))?(?:<([\d,]+))?$")


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

    def __init__(self, layers: list[dict[str, Any]], num_classes: int, in_channels: int):
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
        read = {j for inputs in self.inputs for j in inputs}
        self.outputs = [n for n in range(len(layers)) if n not in read]
        self.classifier = nn.Linear(sum(channels[n] for n in self.outputs), num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, in_channels, H, W) -> logits (batch, num_classes)."""
        features: list[Tensor] = []
        for layer, inputs in zip(self.layers, self.inputs):
            source = concatenate_padded([features[j] for j in inputs]) if inputs else images
            features.append(layer(source))
        pooled = concatenate_padded([features[n] for n in self.outputs]).mean(dim=(2, 3))
        return self.classifier(pooled)


class MacroSpace(SearchSpace):
    """Zoph & Le's macro space of ``layers`` convolution layers with anchor-point skips.

    Parameters
    ----------
    layers : number of convolution layers L (the paper grows it to 15; 6 by default, for
        the small images this machine trains on).
    strides : also choose stride height and width in {1, 2} per layer.
    """

    name = "macro"

    def __init__(self, layers: int = 6, strides: bool = False) -> None:
        if not isinstance(layers, int) or layers < 1:
            raise UsageError(f"macro: layers must be a positive integer, got {layers!r}")
        self.layers = layers
        self.strides = bool(strides)
        self._properties = ["filter_height", "filter_width", "filters"] + (
            ["stride_height", "stride_width"] if self.strides else [])
        self._property_options = [FILTER_SIZES, FILTER_SIZES, FILTER_COUNTS] + (
            [STRIDES, STRIDES] if self.strides else [])

    @property
    def num_choices(self) -> tuple[int, ...]:
        choices: list[int] = []
        for layer in range(self.layers):
            choices += [len(options) for options in self._property_options] + [2] * layer
        return tuple(choices)

    def decision_names(self) -> list[str]:
        names = []
        for layer in range(self.layers):
            names += [f"layer{layer}.{name}" for name in self._properties]
            names += [f"layer{layer}.from{j}" for j in range(layer)]
        return names

    def decision_program(self) -> list[Step]:
        """Per layer a choice step per property, then the anchor step of its skips."""
        program = []
        for layer in range(self.layers):
            program += [Step(StepKind.CHOICE, len(options)) for options in self._property_options]
            program.append(Step(StepKind.SKIPS, layer, records_anchor=True))
        return program

    def layer_specs(self, arch: Arch) -> list[dict[str, Any]]:
        """Each layer's filter shape, filters, strides and inputs (earlier layer indices)."""
        arch = self.validate(arch)
        specs, position = [], 0
        for layer in range(self.layers):
            spec: dict[str, Any] = {"stride_height": 1, "stride_width": 1}
            for name, options in zip(self._properties, self._property_options):
                spec[name] = options[arch[position]]
                position += 1
            spec["inputs"] = [j for j in range(layer) if arch[position + j] == 1]
            position += layer
            specs.append(spec)
        return specs

    def from_layer_specs(self, specs: list[dict[str, Any]]) -> Arch:
        """Inverse of :meth:`layer_specs`; raises ``ValueError`` on bad values."""
        if len(specs) != self.layers:
            raise ValueError(f"macro: {len(specs)} layers given, the space has {self.layers}")
        arch: list[int] = []
        for layer, spec in enumerate(specs):
            for name, options in zip(self._properties, self._property_options):
                if spec.get(name) not in options:
                    raise ValueError(f"macro: layer {layer} {name} is {spec.get(name)!r}, "
                                     f"expected one of {options}")
                arch.append(options.index(spec[name]))
            strides = (spec.get("stride_height", 1), spec.get("stride_width", 1))
            if not self.strides and strides != (1, 1):
                raise ValueError(f"macro: layer {layer} has strides but the space has none")
            inputs = spec.get("inputs", [])
            if any(not isinstance(j, int) or not 0 <= j < layer for j in inputs):
                raise ValueError(f"macro: layer {layer} inputs {inputs} must be earlier layers")
            arch += [int(j in inputs) for j in range(layer)]
        return tuple(arch)

    def to_string(self, arch: Arch) -> str:
        parts = []
        for spec in self.layer_specs(arch):
            text = f"{spec['filter_height']}x{spec['filter_width']}-{spec['filters']}"
            if self.strides:
                text += f"-s{spec['stride_height']}x{spec['stride_width']}"
            if spec["inputs"]:
                text += "<" + ",".join(str(j) for j in spec["inputs"])
            parts.append(text)
        return " | ".join(parts)

    def from_string(self, text: str) -> Arch:
        specs = []
        for layer, part in enumerate(text.split("|")):
            match = _LAYER_PATTERN.match(part.strip())
            if match is None or (match.group(4) is not None) != self.strides:
                raise ValueError(f"macro: cannot read layer {layer} {part.strip()!r}")
            height, width, filters, stride_height, stride_width, inputs = match.groups()
            specs.append({"filter_height": int(height), "filter_width": int(width),
                          "filters": int(filters), "stride_height": int(stride_height or 1),
                          "stride_width": int(stride_width or 1),
                          "inputs": [int(j) for j in inputs.split(",")] if inputs else []})
        return self.from_layer_specs(specs)

    def to_genotype(self, arch: Arch) -> dict[str, Any]:
        return {"space": self.name, "strides": self.strides, "layers": self.layer_specs(arch),
                "string": self.to_string(arch)}

    def from_genotype(self, genotype: dict[str, Any]) -> Arch:
        if not isinstance(genotype, dict) or genotype.get("space") != self.name:
            raise ValueError("macro: not a macro genotype (expected space 'macro')")
        if not isinstance(genotype.get("layers"), list):
            raise ValueError("macro: genotype has no 'layers' list")
        return self.from_layer_specs(genotype["layers"])

    def build(self, arch: Arch, num_classes: int, in_channels: int) -> nn.Module:
        return MacroNetwork(self.layer_specs(arch), num_classes, in_channels)
