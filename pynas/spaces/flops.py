"""Count the multiply-adds of a network, for any search space.

Only convolutions and linear layers are counted: they hold nearly all the arithmetic
of a CNN or an MLP, and this is the convention of most NAS papers. Batch norm, activations,
pooling and additions are left out, so the count is a lower bound on the FLOPs that
a profiler would report.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _convolution_multiply_adds(
    module: nn.Module, input_: torch.Tensor, output: torch.Tensor
) -> int:
    kernel_volume = math.prod(module.kernel_size)
    if module.transposed:
        # A transposed convolution scatters every input element over one kernel window
        # of the output channels of its group.
        return input_[0].numel() * (module.out_channels // module.groups) * kernel_volume
    # Every output element of a convolution is a dot product over one kernel window of
    # the input channels of its group.
    return output[0].numel() * (module.in_channels // module.groups) * kernel_volume


def _linear_multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    return output[0].numel() * module.in_features


def count_multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of ``model`` on one example.

    The network is run once, in evaluation mode and without gradients, on a single
    zero example; forward hooks on its convolutions and linear layers add up the
    work of every call (a layer called twice counts twice).

    Parameters
    ----------
    model : nn.Module
        Any network; it is left in the training mode it had.
    input_shape : sequence of int
        The shape of one example without the batch dimension, e.g. ``(3, 32, 32)`` for
        an image or ``(F,)`` for a feature vector.

    Returns
    -------
    int
        The multiply-adds of the convolutions and linear layers (biases not counted).
    """
    total = 0

    def add_convolution(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _convolution_multiply_adds(module, inputs[0], output)

    def add_linear(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _linear_multiply_adds(module, output)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(add_convolution))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(add_linear))
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
