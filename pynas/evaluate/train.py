"""Score an architecture by training it on a dataset and measuring validation accuracy."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from pynas.data import DatasetSplits, Split, ensure_files, load_dataset
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.spaces.base import Arch, SearchSpace

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")

#: learning rate used when none is given, per optimizer
DEFAULT_LEARNING_RATES = {"sgd": 0.1, "adam": 1e-3}

#: images per forward pass when measuring accuracy (no gradients, so it can be large)
EVALUATION_BATCH_SIZE = 512

#: training images over which batch-norm statistics are re-estimated after training
CALIBRATION_IMAGES = 2048

# Datasets already loaded by this process, keyed by what selects them. The evaluator
# is pickled to every worker; keeping the tensors here instead of in the evaluator
# keeps that pickle small and loads each dataset once per process.
_DATASET_CACHE: dict[tuple[str, str | None, int | None, str], DatasetSplits] = {}


def _cached_dataset(
    name: str, data_dir: str | None, limit_train: int | None, device: torch.device
) -> DatasetSplits:
    key = (name, data_dir, limit_train, str(device))
    if key not in _DATASET_CACHE:
        data = load_dataset(name, data_dir, limit_train=limit_train)
        if device.type != "cpu":
            data = dataclasses.replace(
                data,
                **{
                    split: Split(*(tensor.to(device) for tensor in getattr(data, split)))
                    for split in ("train", "valid", "test")
                },
            )
        _DATASET_CACHE[key] = data
    return _DATASET_CACHE[key]


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "integer" if integer else "number"
        raise UsageError(f"{name} must be a positive {kind}, got {value!r}")


def _parse_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but this machine has no usable CUDA")
    return parsed


@torch.no_grad()
def accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode) on ``split``."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for start in range(0, len(split.labels), EVALUATION_BATCH_SIZE):
        batch = slice(start, start + EVALUATION_BATCH_SIZE)
        correct += (model(split.images[batch]).argmax(dim=1) == split.labels[batch]).sum()
    return 100.0 * int(correct) / len(split.labels)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Replace the running statistics of every batch norm by exact averages over ``images``.

    After a short training the running averages (momentum 0.1) still carry the
    statistics of the first steps, and a network evaluated with them can score at
    chance even though it has learned; re-estimating them with the final weights
    removes that noise from the search signal.

    Parameters
    ----------
    model : nn.Module
        Left in training mode.
    images : torch.Tensor
        (N, C, H, W) images to estimate the statistics on.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for start in range(0, len(images), EVALUATION_BATCH_SIZE):
        model(images[start : start + EVALUATION_BATCH_SIZE])
    for norm, momentum in zip(norms, saved_momenta):
        norm.momentum = momentum


class TrainEvaluator(Evaluator):
    """Train each architecture from scratch for a few epochs; score = validation accuracy.

    Parameters
    ----------
    dataset : str
        A name known to :func:`pynas.data.load_dataset`.
    data_dir : str, optional
        Where the dataset files are (see :func:`pynas.data.load_dataset`).
    epochs : int
        Passes over the training split.
    batch_size : int
        Training images per step.
    optimizer : {"sgd", "adam"}
        SGD uses Nesterov momentum when ``momentum > 0``, as NAS-Bench-201 trains.
    lr : float, optional
        Initial learning rate; default 0.1 for SGD and 0.001 for Adam.
    momentum : float
        SGD momentum (ignored by Adam).
    weight_decay : float
        L2 penalty.
    schedule : {"cosine", "constant"}
        Cosine decays the learning rate to zero over all training steps.
    device : str
        Where to train, e.g. ``"cpu"`` or ``"cuda:0"``.
    seed : int
        Seeds the weights and the batch order: the same seed gives the same result.
    limit_train : int, optional
        Train on a fixed subset of this many examples, for quick searches.
    recalibrate : bool
        Before measuring, re-estimate the batch-norm statistics on the first
        ``CALIBRATION_IMAGES`` training images (see :func:`recalibrate_batchnorm`).

    Notes
    -----
    The dataset is loaded at the first evaluation in each process and kept there, so
    the evaluator pickles to a few hundred bytes. The number of CPU threads is left as
    the caller set it (``torch.set_num_threads``).
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str | os.PathLike[str] | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        optimizer: str = "sgd",
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        schedule: str = "cosine",
        device: str = "cpu",
        seed: int = 0,
        limit_train: int | None = None,
        recalibrate: bool = True,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}"
            )
        if schedule not in SCHEDULES:
            raise UsageError(
                f"unknown schedule {schedule!r}; known schedules: {', '.join(SCHEDULES)}"
            )
        lr = DEFAULT_LEARNING_RATES[optimizer] if lr is None else lr
        _check_positive("epochs", epochs, integer=True)
        _check_positive("batch_size", batch_size, integer=True)
        _check_positive("lr", lr)
        if limit_train is not None:
            _check_positive("limit_train", limit_train, integer=True)
        if not 0 <= momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise UsageError(f"weight_decay must be zero or positive, got {weight_decay!r}")
        _parse_device(device)
        # Find (or download) the files now, so that a missing dataset is reported before
        # any worker starts; they are read at the first evaluation in each process.
        ensure_files(dataset, data_dir)
        self.dataset = dataset
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.device = str(device)
        self.seed = int(seed)
        self.limit_train = limit_train
        self.recalibrate = bool(recalibrate)

    def describe(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, **vars(self)}

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            model.parameters(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.momentum > 0,
        )

    def train(self, model: nn.Module, train: Split) -> float:
        """Train ``model`` in place on ``train``; returns the mean loss of the last epoch.

        The batch order comes from a generator seeded with ``seed``; the caller seeds
        the weights.
        """
        optimizer = self._make_optimizer(model)
        count = len(train.labels)
        total_steps = self.epochs * math.ceil(count / self.batch_size)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            if self.schedule == "cosine"
            else None
        )
        generator = torch.Generator().manual_seed(self.seed)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(count, generator=generator).to(train.labels.device)
            # Summed on the device so that steps need not wait for each other on a GPU.
            loss_sum = torch.zeros((), device=train.labels.device)
            for start in range(0, count, self.batch_size):
                batch = order[start : start + self.batch_size]
                loss = functional.cross_entropy(model(train.images[batch]), train.labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.detach() * len(batch)
        return float(loss_sum) / count

    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """Train ``arch`` and measure it.

        Returns
        -------
        dict
            ``val_acc`` and ``test_acc`` (percent), ``train_loss`` (last epoch),
            ``seconds`` (wall time of building, training and measuring; loading the
            dataset, done once per process, is not counted) and ``params``.
        """
        device = torch.device(self.device)
        data = _cached_dataset(self.dataset, self.data_dir, self.limit_train, device)
        started = time.perf_counter()
        # Seed a private copy of the global generators, so that evaluating does not
        # reset the random stream of the caller (a strategy drawing architectures).
        rng_devices = []
        if device.type == "cuda":
            rng_devices.append(
                torch.cuda.current_device() if device.index is None else device.index
            )
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(self.seed)
            model = space.build(arch, data.num_classes, data.in_channels).to(device)
            train_loss = self.train(model, data.train)
        if self.recalibrate:
            recalibrate_batchnorm(model, data.train.images[:CALIBRATION_IMAGES])
        return {
            "val_acc": accuracy(model, data.valid),
            "test_acc": accuracy(model, data.test),
            "train_loss": train_loss,
            "seconds": time.perf_counter() - started,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
