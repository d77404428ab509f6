"""The mlp space: the chain of Zoph & Le (ICLR 2017, section 3.3) for feature vectors,
the space of tables and regression.

A network of ``layers`` hidden layers (4 by default). Each layer chooses its width, its
activation and its dropout probability, then, at its anchor point, for each earlier
layer ``j`` whether ``j`` feeds it, exactly as in the macro space
(:class:`pynas.spaces.macro.ChainSpace` holds what the two share).

Options, and why:

- width in (0, 16, 32, 64, 128, 256). Width 0 means the layer is absent, so the search
  also chooses the depth, down to a linear model; 256 bounds a 4-layer network at a few
  hundred thousand weights, already more than tables of a few thousand rows can fit.
- activation in (relu, tanh, gelu, elu). Sigmoid is left out: ``sigmoid(x) = (1 +
  tanh(x / 2)) / 2``, so a sigmoid layer followed by a linear layer computes what a tanh
  layer with halved weights followed by another linear layer computes. It adds no network,
  only a worse-conditioned one (gradients at most 1/4, outputs not centred), on which
  evaluations would be spent.
- dropout in (0.0, 0.1, 0.3): none, light, strong.
- No normalisation layers: the inputs arrive standardised by the training split's
  statistics (:mod:`pynas.models`), the chains are shallow, and batch norm on the small
  batches of small tables adds noise (and fails on a batch of one while training).

Building. A present layer is ``Linear(inputs, width)``, the activation, then dropout;
its input is the concatenation of the layers it chose, or the feature vector when it
chose none (the paper's rule, as in the macro space: a layer with no input takes the
network's input). An absent layer passes its input on unchanged: whatever reads it reads
its inputs instead (the feature vector when it chose none), and a source reached through
several paths is concatenated once. The layers that no later layer reads feed the head,
concatenated with the feature vector itself, then one ``Linear`` to ``num_outputs``
(classes or regression targets). The feature vector's path to the head makes every
network a linear model plus what its layers add ("wide and deep"); on scikit-learn's
diabetes table, RL's retrained cells scored a mean test R² of 0.50 with it against 0.44
without (split seeds 1-5; ridge regression 0.51). With every layer absent the network is
the linear model ``Linear(F, num_outputs)``.

Decisions, layer by layer: ``width, activation, dropout, skip_0, ..., skip_{N-1}``, option
indices into the tuples below; ``4 * 3 + 6 = 18`` decisions for 4 layers. An absent
layer's activation and dropout are ignored (:meth:`~ChainSpace.canonical` sets them to
0). The RL controller walks the program of the macro space: a choice step per property
and one anchor step per layer.

String: layers joined by ``" | "``, each ``width-activation-dropout`` or ``0`` when absent,
then ``<j,k`` naming its inputs when it has any, e.g. ``64-relu-0.1 | 0 | 32-tanh-0.0<0``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pynas.errors import UsageError
from pynas.spaces.base import FEATURES, Arch
from pynas.spaces.macro import ChainSpace, unread_layers

WIDTHS = (0, 16, 32, 64, 128, 256)
ACTIVATIONS = ("relu", "tanh", "gelu", "elu")
DROPOUTS = (0.0, 0.1, 0.3)

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU,
}
_LAYER_PATTERN = re.compile(r"(\d+)-([a-z]+)-(\d+(?:\.\d+)?)")

#: the network's input, the feature vector, as a source of a layer or of the head
FEATURES_SOURCE = -1


def wiring(specs: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[int]]:
    """What each layer and the head read once the absent layers are resolved.

    Parameters
    ----------
    specs : the layers, as :meth:`MLPSpace.layer_specs` describes them.

    Returns
    -------
    reads : for each layer, the sources concatenated into its input: indices of present
        layers and :data:`FEATURES_SOURCE`, ascending, each once.
    head : the sources concatenated into the head's input, the same way; always with
        the feature vector (the linear path, see the module docstring).
    """
    reads: list[list[int]] = []
    passes: list[list[int]] = []  # what each layer's output is made of
    for layer, spec in enumerate(specs):
        inputs = spec["inputs"]
        sources = sorted({s for j in inputs for s in passes[j]}) if inputs else [FEATURES_SOURCE]
        reads.append(sources)
        passes.append([layer] if spec["width"] else sources)
    unread = unread_layers([spec["inputs"] for spec in specs])
    head = {source for n in unread for source in passes[n]} | {FEATURES_SOURCE}
    return reads, sorted(head)


class MLPNetwork(nn.Module):
    """The present layers wired by :func:`wiring`, then the linear head.

    ``forward``: features (batch, F) -> outputs (batch, num_outputs).
    """

    def __init__(self, specs: Sequence[dict[str, Any]], num_features: int, num_outputs: int):
        super().__init__()
        reads, self.head_sources = wiring(specs)
        widths = {FEATURES_SOURCE: num_features}
        self.sources: list[tuple[int, list[int]]] = []  # (layer, its sources), present layers
        modules = []
        for layer, (spec, sources) in enumerate(zip(specs, reads)):
            if not spec["width"]:
                continue
            steps = [nn.Linear(sum(widths[s] for s in sources), spec["width"]),
                     _ACTIVATION_MODULES[spec["activation"]]()]
            if spec["dropout"]:
                steps.append(nn.Dropout(spec["dropout"]))
            modules.append(nn.Sequential(*steps))
            self.sources.append((layer, sources))
            widths[layer] = spec["width"]
        self.layers = nn.ModuleList(modules)
        self.head = nn.Linear(sum(widths[s] for s in self.head_sources), num_outputs)

    def forward(self, features: Tensor) -> Tensor:
        outputs = {FEATURES_SOURCE: features}
        for (layer, sources), module in zip(self.sources, self.layers):
            outputs[layer] = module(torch.cat([outputs[s] for s in sources], dim=1))
        return self.head(torch.cat([outputs[s] for s in self.head_sources], dim=1))


class MLPSpace(ChainSpace):
    """Chains of ``layers`` fully connected layers with anchor-point skips, for feature
    vectors (see the module docstring).

    Parameters
    ----------
    layers : the most hidden layers L (absent layers make shallower networks).
    """

    name = "mlp"
    input_kind = FEATURES

    def __init__(self, layers: int = 4) -> None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise UsageError(f"mlp: layers must be a positive integer, got {layers!r}")
        self.layers = layers
        self.properties = [("width", WIDTHS), ("activation", ACTIVATIONS),
                           ("dropout", DROPOUTS)]

    def layer_options(self) -> list[dict[str, Any]]:
        """Every distinct layer (its properties, no inputs): the absent layer once, then
        each width, activation and dropout of a present layer."""
        return [{"width": 0}] + [
            {"width": width, "activation": activation, "dropout": dropout}
            for width in WIDTHS if width for activation in ACTIVATIONS for dropout in DROPOUTS
        ]

    def _describe(self, choices: Sequence[int]) -> dict[str, Any]:
        spec = super()._describe(choices)
        return spec if spec["width"] else {"width": 0}

    def _encode(self, layer: int, spec: dict[str, Any]) -> list[int]:
        if spec.get("width") == 0 and not isinstance(spec.get("width"), bool):
            return [0] * len(self.properties)  # an absent layer: nothing else to read
        return super()._encode(layer, spec)

    def _layer_text(self, spec: dict[str, Any]) -> str:
        if not spec["width"]:
            return "0"
        return f"{spec['width']}-{spec['activation']}-{spec['dropout']}"

    def _parse_layer(self, text: str) -> dict[str, Any] | None:
        if text == "0":
            return {"width": 0}
        match = _LAYER_PATTERN.fullmatch(text)
        if match is None:
            return None
        width, activation, dropout = match.groups()
        return {"width": int(width), "activation": activation, "dropout": float(dropout)}

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        self.check_input(input_shape)
        return MLPNetwork(self.layer_specs(arch), input_shape[0], num_outputs)
