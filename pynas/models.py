"""A network together with its data's normalisation: what a search trains and exports.

A :class:`DataAdapter` takes inputs in the units they are stored in (pixel values 0-255
for uint8 images, raw feature values) and returns logits, or regression targets in the
data's own units. The statistics live in buffers, so ``state_dict``, ONNX and
TorchScript carry them, and an exported model needs neither pynas nor the training data.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pynas.data import REGRESSION, DatasetSplits
from pynas.spaces.base import Arch, SearchSpace


class DataAdapter(nn.Module):
    """``network((inputs - input_mean) / input_std)``, then for regression
    ``* target_std + target_mean``.

    Parameters
    ----------
    network : maps normalised inputs to logits (N, classes) or standardised targets (N, T).
    input_mean, input_std : broadcast against one example: (C, 1, 1) or (F,).
    target_mean, target_std : (T,) for regression; ``None`` for classification.
    """

    def __init__(
        self,
        network: nn.Module,
        input_mean: Tensor,
        input_std: Tensor,
        target_mean: Tensor | None = None,
        target_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("input_mean", input_mean.detach().clone().float())
        self.register_buffer("input_std", input_std.detach().clone().float())
        self.regression = target_mean is not None
        # classification keeps neutral values, so that every adapter has the same buffers
        self.register_buffer("target_mean", torch.zeros(1) if target_mean is None
                             else target_mean.detach().clone().float())
        self.register_buffer("target_std", torch.ones(1) if target_std is None
                             else target_std.detach().clone().float())

    def normalised_outputs(self, inputs: Tensor) -> Tensor:
        """The network's own outputs: logits, or standardised targets (what losses use)."""
        return self.network((inputs.float() - self.input_mean) / self.input_std)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs (N, C, H, W) or (N, F), stored units -> logits (N, K) or targets (N, T)."""
        outputs = self.normalised_outputs(inputs)
        if self.regression:
            outputs = outputs * self.target_std + self.target_mean
        return outputs


def adapt(network: nn.Module, data: DatasetSplits) -> DataAdapter:
    """``network`` wrapped with the normalisation of ``data`` (its training split's)."""
    regression = data.task == REGRESSION
    return DataAdapter(
        network,
        data.input_mean,
        data.input_std,
        data.target_mean if regression else None,
        data.target_std if regression else None,
    )


def build_model(space: SearchSpace, arch: Arch, data: DatasetSplits) -> DataAdapter:
    """The network of ``arch`` for ``data``'s inputs and outputs, with its normalisation."""
    return adapt(space.build(arch, data.input_shape, data.num_outputs), data)
