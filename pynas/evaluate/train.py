"""Score an architecture by training it on a dataset and measuring it on the validation split.

Classification is scored by validation accuracy (percent), regression by validation R²
(RMSE and MAE reported beside it); the same metrics are measured on the test split.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from pynas.data import CLASSIFICATION, DatasetSplits, DataSpec, Split
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.models import DataAdapter, build_model
from pynas.spaces.base import Arch, SearchSpace

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")

#: learning rate used when none is given, per optimizer
DEFAULT_LEARNING_RATES = {"sgd": 0.1, "adam": 1e-3}

#: images per forward pass when measuring accuracy (no gradients, so it can be large)
EVALUATION_BATCH_SIZE = 512

#: gradients are clipped to this norm: networks without normalisation layers (the mlp
#: space) diverge under SGD's default learning rate without it
GRADIENT_CLIP = 5.0

#: training images over which batch-norm statistics are re-estimated after training
CALIBRATION_IMAGES = 2048

# Datasets already loaded by this process, keyed by their spec and device. The evaluator
# is pickled to every worker; keeping the tensors here instead of in the evaluator keeps
# that pickle small and loads each dataset once per process.
_DATASET_CACHE: dict[tuple[DataSpec, str], DatasetSplits] = {}


def cached_dataset(spec: DataSpec, device: torch.device | str = "cpu") -> DatasetSplits:
    """``spec`` loaded once per process (and per device)."""
    key = (spec, str(device))
    if key not in _DATASET_CACHE:
        cpu = (spec, "cpu")
        if cpu not in _DATASET_CACHE:
            _DATASET_CACHE[cpu] = spec.load()
        if key != cpu:
            _DATASET_CACHE[key] = _DATASET_CACHE[cpu].to(device)
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
def predict(model: nn.Module, inputs: Tensor) -> Tensor:
    """``model``'s outputs (evaluation mode) on ``inputs``, in batches."""
    model.eval()
    return torch.cat([model(inputs[start:start + EVALUATION_BATCH_SIZE])
                      for start in range(0, len(inputs), EVALUATION_BATCH_SIZE)])


def accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode) on ``split``."""
    correct = (predict(model, split.inputs).argmax(dim=1) == split.targets).sum()
    return 100.0 * int(correct) / len(split.targets)


def regression_scores(predictions: Tensor, targets: Tensor) -> dict[str, float]:
    """R² (the mean over targets of each target's coefficient of determination), RMSE and
    MAE (over every value) of ``predictions`` against ``targets``, both (N, T)."""
    predictions, targets = predictions.double(), targets.double()
    residual = ((targets - predictions) ** 2).sum(dim=0)
    spread = ((targets - targets.mean(dim=0)) ** 2).sum(dim=0)
    # a constant target is predicted perfectly or not at all (scikit-learn's convention)
    r2 = torch.where(spread > 0, 1 - residual / spread.clamp_min(1e-300),
                     (residual == 0).double())
    return {
        "r2": float(r2.mean()),
        "rmse": float(((targets - predictions) ** 2).mean().sqrt()),
        "mae": float((targets - predictions).abs().mean()),
    }


def measure(model: nn.Module, data: DatasetSplits, part: str) -> dict[str, float]:
    """The task's metrics of ``model`` on split ``part`` (``"valid"`` or ``"test"``):
    ``{part}_acc`` for classification; ``{part}_r2``, ``_rmse`` and ``_mae`` for regression.
    Validation metrics are named ``val_...``."""
    split = getattr(data, part)
    prefix = "val" if part == "valid" else part
    if data.task == CLASSIFICATION:
        return {f"{prefix}_acc": accuracy(model, split)}
    scores = regression_scores(predict(model, split.inputs), split.targets)
    return {f"{prefix}_{name}": value for name, value in scores.items()}


def task_loss(model: DataAdapter, outputs: Tensor, targets: Tensor, task: str) -> Tensor:
    """The training loss of ``outputs``, the network's own outputs
    (:meth:`DataAdapter.normalised_outputs`): cross-entropy for classification; for
    regression the mean squared error of the standardised targets (each target weighs
    the same whatever its units)."""
    if task == CLASSIFICATION:
        return functional.cross_entropy(outputs, targets)
    return functional.mse_loss(outputs, (targets - model.target_mean) / model.target_std)


def batches(split: Split, batch_size: int, generator: torch.Generator
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``(inputs, targets)`` in a seeded random order. A last batch of a
    single example is left out: batch norm cannot train on it."""
    order = torch.randperm(len(split), generator=generator).to(split.targets.device)
    for start in range(0, usable_examples(len(split), batch_size), batch_size):
        index = order[start:start + batch_size]
        yield split.inputs[index], split.targets[index]


def usable_examples(count: int, batch_size: int) -> int:
    """Examples :func:`batches` yields per epoch."""
    return count - 1 if count > 1 and count % batch_size == 1 else count


#: ``on_epoch(epoch, model, {"train_loss": ...})``, called after each training epoch
EpochCallback = Callable[[int, DataAdapter, dict[str, float]], None]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Replace the running statistics of every batch norm by exact averages over ``inputs``.

    After a short training the running averages (momentum 0.1) still carry the
    statistics of the first steps, and a network evaluated with them can score at
    chance even though it has learned; re-estimating them with the final weights
    removes that noise from the search signal.

    Parameters
    ----------
    model : nn.Module
        Left in training mode.
    inputs : torch.Tensor
        Inputs (N, ...) to estimate the statistics on, as ``model`` takes them.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved_momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for start in range(0, len(inputs), EVALUATION_BATCH_SIZE):
        model(inputs[start : start + EVALUATION_BATCH_SIZE])
    for norm, momentum in zip(norms, saved_momenta):
        norm.momentum = momentum


class TrainEvaluator(Evaluator):
    """Train each architecture from scratch for a few epochs; score it on validation.

    The score is validation accuracy (percent) for classification and validation R² for
    regression (see :attr:`score_name`).

    Parameters
    ----------
    dataset : str, DataSpec or DatasetSplits
        A built-in name or a path (see :func:`pynas.data.load_dataset`), a
        :class:`~pynas.data.DataSpec`, or data already loaded (arrays from Python; it is
        pickled to each worker once).
    data_dir : str, optional
        Where a built-in dataset's files are (with a name only).
    epochs : int
        Passes over the training split.
    batch_size : int
        Training examples per step.
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
        Train on a fixed subset of this many examples, for quick searches (with a name).
    recalibrate : bool
        Before measuring, re-estimate the batch-norm statistics on the first
        ``CALIBRATION_IMAGES`` training examples (see :func:`recalibrate_batchnorm`).

    Notes
    -----
    Data named by a spec is loaded at the first evaluation in each process and kept
    there, so the evaluator pickles to a few hundred bytes. The number of CPU threads is
    left as the caller set it (``torch.set_num_threads``).
    """

    def __init__(
        self,
        dataset: str | DataSpec | DatasetSplits = "digits",
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
        self.data: DataSpec | DatasetSplits
        if isinstance(dataset, DatasetSplits):
            self.data = dataset
        else:
            if not isinstance(dataset, DataSpec):
                dataset = DataSpec(os.fspath(dataset), None if data_dir is None
                                   else os.fspath(data_dir), limit_train=limit_train)
            # Find (or download) the files now, so that a missing dataset is reported
            # before any worker starts; they are read at the first evaluation.
            dataset.check()
            self.data = dataset
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.device = str(device)
        self.seed = int(seed)
        self.recalibrate = bool(recalibrate)

    def dataset(self, device: torch.device | str = "cpu") -> DatasetSplits:
        """The data, loaded (once per process) and on ``device``."""
        if isinstance(self.data, DatasetSplits):
            return self.data if str(device) == "cpu" else self.data.to(device)
        return cached_dataset(self.data, device)

    @property
    def score_name(self) -> str:
        return self.dataset().score_name

    def metric_names(self) -> list[str]:
        """What :meth:`evaluate` returns for this data's task."""
        if self.dataset().task == CLASSIFICATION:
            scores = ["val_acc", "test_acc"]
        else:
            scores = [f"{part}_{name}" for part in ("val", "test")
                      for name in ("r2", "rmse", "mae")]
        return ["score", *scores, "train_loss", "seconds", "params"]

    def describe(self) -> dict[str, Any]:
        settings = {key: value for key, value in vars(self).items() if key != "data"}
        source = self.data.to_dict() if isinstance(self.data, DataSpec) else {}
        return {"evaluator": type(self).__name__, **source, **settings,
                "data": self.dataset().describe()}

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

    def train(self, model: DataAdapter, train: Split, task: str,
              on_epoch: EpochCallback | None = None) -> float:
        """Train ``model`` in place on ``train``; returns the mean loss of the last epoch.

        The batch order comes from a generator seeded with ``seed``; the caller seeds
        the weights. ``on_epoch`` is called after each epoch.
        """
        optimizer = self._make_optimizer(model)
        count = usable_examples(len(train), self.batch_size)
        total_steps = self.epochs * math.ceil(count / self.batch_size)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            if self.schedule == "cosine"
            else None
        )
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(1, self.epochs + 1):
            model.train()
            # Summed on the device so that steps need not wait for each other on a GPU.
            loss_sum = torch.zeros((), device=train.targets.device)
            for inputs, targets in batches(train, self.batch_size, generator):
                loss = task_loss(model, model.normalised_outputs(inputs), targets, task)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.detach() * len(targets)
            train_loss = float(loss_sum) / count
            if on_epoch is not None:
                on_epoch(epoch, model, {"train_loss": train_loss})
        return train_loss

    def fit(self, space: SearchSpace, arch: Arch, data: DatasetSplits,
            on_epoch: EpochCallback | None = None) -> tuple[DataAdapter, float]:
        """Build ``arch`` for ``data`` and train it; returns the model and its last loss.
        ``on_epoch`` is called after each epoch (see :meth:`train`)."""
        device = torch.device(self.device)
        # Seed a private copy of the global generators, so that evaluating does not
        # reset the random stream of the caller (a strategy drawing architectures).
        rng_devices = []
        if device.type == "cuda":
            rng_devices.append(
                torch.cuda.current_device() if device.index is None else device.index
            )
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(self.seed)
            model = build_model(space, arch, data).to(device)
            train_loss = self.train(model, data.train, data.task, on_epoch)
        if self.recalibrate:
            recalibrate_batchnorm(model, data.train.inputs[:CALIBRATION_IMAGES])
        return model, train_loss

    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """Train ``arch`` and measure it.

        Returns
        -------
        dict
            ``score`` (the validation score: ``val_acc`` or ``val_r2``), the task's
            validation and test metrics (see :func:`measure`), ``train_loss`` (last
            epoch), ``seconds`` (wall time of building, training and measuring; loading
            the dataset, done once per process, is not counted) and ``params``.
        """
        data = self.dataset(self.device)
        started = time.perf_counter()
        model, train_loss = self.fit(space, arch, data)
        metrics = {**measure(model, data, "valid"), **measure(model, data, "test")}
        return {
            "score": metrics[data.score_name],
            **metrics,
            "train_loss": train_loss,
            "seconds": time.perf_counter() - started,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
