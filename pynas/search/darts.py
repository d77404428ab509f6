"""DARTS: differentiable architecture search with a weight-sharing supernet.

``pynas search darts`` trains a supernet (the darts cell, or ``--space nb201``) with the
bilevel optimiser of :mod:`pynas.search.darts_bilevel`: the weights on one half of the
training split, the architecture logits on the other half (the paper's CIFAR protocol).
It then discretizes the cells, measures the discretized supernet on the validation and
test splits, and writes ``result.json``, ``checkpoint.pt`` (each epoch; ``--resume``
continues from it), the architecture-weight plots, the loss/accuracy curves and drawings
of the cells.

Under ``torchrun --nproc_per_node=N`` the processes train one supernet data-parallel:
each takes its share of every batch order, weight and architecture gradients are averaged
over processes (gloo on CPU, NCCL on CUDA), and only rank 0 writes the run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as distributed
from torch import Tensor, nn
from tqdm import tqdm

from pynas.data import CLASSIFICATION, DatasetSplits, Split, load_dataset
from pynas.errors import UsageError
from pynas.runs import RunDirectory, load_checkpoint, save_checkpoint
from pynas.search.darts_bilevel import BilevelOptimizer, average_across_processes
from pynas.search.darts_supernet import MIXED_OP_KINDS, DartsSupernet

#: supernets DARTS can search, by ``--space``
SUPERNET_SPACES = ("darts", "nb201")
_EVALUATION_BATCH = 256


@dataclass
class DartsConfig:
    """Everything a DARTS search computes from (the Python API behind the command).

    The defaults are small enough for the digits dataset on two CPU cores in a few
    minutes; the paper's CIFAR-10 search is ``channels=16, layers=8, epochs=50``.
    """

    space: str = "darts"
    dataset: str = "digits"
    data_dir: str | None = None
    limit_train: int | None = None
    epochs: int = 10
    batch_size: int = 64
    order: int = 1
    mixed_op: str = "fused"
    channels: int = 8
    layers: int = 5
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    arch_lr: float = 3e-4
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DartsConfig:
        values = {
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(cls)
            if getattr(args, field.name, None) is not None
        }
        return cls(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DARTS's own options (``pynas search`` adds --dataset, --epochs, --seed, --out...)."""
    defaults = DartsConfig()
    # this strategy's defaults for the shared options
    parser.set_defaults(space=defaults.space, epochs=defaults.epochs)
    group = parser.add_argument_group("darts")
    group.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=defaults.order,
        help="1: first-order; 2: unrolled second-order (default: %(default)s)",
    )
    group.add_argument(
        "--mixed-op",
        choices=MIXED_OP_KINDS,
        default=defaults.mixed_op,
        help="node combine: the fused kernel or the PyTorch reference (default: %(default)s)",
    )
    group.add_argument(
        "--channels",
        type=int,
        default=defaults.channels,
        help="initial channels C of the supernet (default: %(default)s)",
    )
    group.add_argument(
        "--layers",
        type=int,
        default=defaults.layers,
        help="cells of the darts supernet; cells per stage on nb201 (default: %(default)s)",
    )
    group.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help="intermediate nodes per darts cell (default: %(default)s)",
    )
    group.add_argument(
        "--multiplier",
        type=int,
        default=defaults.multiplier,
        help="last nodes concatenated into a cell's output (default: %(default)s)",
    )
    group.add_argument(
        "--stem-multiplier",
        type=int,
        default=defaults.stem_multiplier,
        help="stem channels = this x C (default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="batch per process, for each half (default: %(default)s)",
    )
    group.add_argument(
        "--weight-lr",
        type=float,
        default=defaults.weight_lr,
        help="initial SGD learning rate of the weights (default: %(default)s)",
    )
    group.add_argument(
        "--weight-lr-min",
        type=float,
        default=defaults.weight_lr_min,
        help="final (cosine) learning rate (default: %(default)s)",
    )
    group.add_argument(
        "--arch-lr",
        type=float,
        default=defaults.arch_lr,
        help="Adam learning rate of the architecture (default: %(default)s)",
    )


def run(args: argparse.Namespace, run_dir: RunDirectory | None) -> int:
    """``pynas search darts``: search, write the run (rank 0), print a summary line."""
    for option in ("budget", "budget_seconds", "benchmark", "executor", "workers"):
        if getattr(args, option, None) is not None:
            flag = "--" + option.replace("_", "-")
            raise UsageError(
                f"{flag} does not apply to darts, which trains one supernet for --epochs"
            )
    from pynas.search.cli import load_data, retrain_line  # the command line imports this

    config = DartsConfig.from_args(args)
    progress = sys.stderr.isatty()
    with process_group(config.device) as (rank, _):
        result = search(
            config,
            run_dir if rank == 0 else None,
            progress=progress and rank == 0,
            resume=bool(getattr(args, "resume", False)),
            data=load_data(args),
        )
    if rank == 0:
        print(
            f"darts ({config.space}): {result['arch']}\n"
            f"supernet: val {result['supernet_val_acc']:.2f}%; discretized supernet: val "
            f"{result['val_acc']:.2f}%, test {result['test_acc']:.2f}% after {config.epochs} "
            f"epochs in {result['seconds']:.0f} s"
            + (f"; run in {run_dir.path}" if run_dir is not None else "")
        )
        if run_dir is not None:
            print(retrain_line(run_dir.path))
    return 0


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[int, int]]:
    """Join the torchrun group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA);
    yields ``(rank, world size)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 or distributed.is_initialized():
        yield (distributed.get_rank() if distributed.is_initialized() else 0), world_size
        return
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    distributed.init_process_group("nccl" if cuda else "gloo")
    try:
        yield distributed.get_rank(), world_size
    finally:
        distributed.destroy_process_group()


def _rank_and_world() -> tuple[int, int]:
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def resolve_device(name: str) -> torch.device:
    """``name`` as a device; under torchrun, ``cuda`` means this process's GPU."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def build_supernet(config: DartsConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The supernet of ``config.space``."""
    if config.space == "darts":
        return DartsSupernet(
            num_classes,
            in_channels,
            channels=config.channels,
            layers=config.layers,
            steps=config.steps,
            multiplier=config.multiplier,
            stem_multiplier=config.stem_multiplier,
            mixed_op=config.mixed_op,
        )
    if config.space == "nb201":
        from pynas.search.darts_nb201 import NB201Supernet

        return NB201Supernet(
            num_classes,
            in_channels,
            channels=config.channels,
            cells_per_stage=config.layers,
            mixed_op=config.mixed_op,
        )
    raise UsageError(
        f"darts cannot search the space {config.space!r}; it has supernets for "
        f"{', '.join(SUPERNET_SPACES)}"
    )


def split_in_halves(split: Split, seed: int) -> tuple[Split, Split]:
    """The training split's two halves (a fixed shuffle): weights learn on the first,
    architecture logits on the second."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    half = len(order) // 2
    return split.subset(order[:half]), split.subset(order[half : 2 * half])


def epoch_batches(
    split: Split, batch_size: int, seed: int, epoch: int, device: torch.device,
    data: DatasetSplits,
) -> list[tuple[Tensor, Tensor]]:
    """This process's batches of one epoch, inputs prepared (normalised float32).

    Every process draws the same shuffle (from ``seed`` and ``epoch``, so a resumed run
    repeats it) and takes every world-size-th image of it, so the processes together see
    the epoch once and all take the same number of steps (their all-reduces pair up).
    The remainder smaller than a batch is dropped.
    """
    rank, world_size = _rank_and_world()
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(split), generator=generator)
    order = order[: len(order) - len(order) % world_size][rank::world_size]
    count = max(1, len(order) // batch_size)
    return [
        (
            data.prepare(split.inputs[order[b * batch_size : (b + 1) * batch_size]].to(device)),
            split.targets[order[b * batch_size : (b + 1) * batch_size]].to(device),
        )
        for b in range(count)
    ]


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, data: DatasetSplits) -> float:
    """Top-1 accuracy (%) of ``model`` in evaluation mode on ``split`` (inputs prepared
    by ``data``)."""
    model.eval()
    correct = 0
    for start in range(0, len(split), _EVALUATION_BATCH):
        inputs = data.prepare(split.inputs[start : start + _EVALUATION_BATCH].to(device))
        labels = split.targets[start : start + _EVALUATION_BATCH].to(device)
        correct += int((model(inputs).argmax(dim=1) == labels).sum())
    return 100.0 * correct / max(1, len(split))


@contextlib.contextmanager
def discretized(model: nn.Module, calibration: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Within the block the supernet computes its discretized cells: its logits are
    replaced by one-hot ones (see ``discretized_logits``) and its batch-norm statistics
    are measured again on ``calibration`` batches, since those gathered under the mixed
    operations do not fit the discrete cells. Everything is restored after the block."""
    saved = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for name, logits in model.discretized_logits().items():
            getattr(model, name).copy_(logits)
        recalibrate_batch_norm(model, calibration)
    try:
        yield
    finally:
        model.load_state_dict(saved)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> None:
    """Replace every batch norm's running statistics by their plain average over the
    forward passes of ``batches``."""
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average instead of an exponential one
    model.train()
    for images, _ in batches:
        model(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _synchronise(model: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (the start of a run), so the
    averaged updates keep them identical."""
    if _rank_and_world()[1] == 1:
        return
    for tensor in model.state_dict().values():
        distributed.broadcast(tensor, src=0)


def _average_statistics(model: nn.Module) -> None:
    """Average the batch-norm running statistics, which each process gathers on its own
    batches, so evaluation sees the same model everywhere."""
    average_across_processes([b for b in model.buffers() if b.is_floating_point()])


def _load_resume_state(run_dir: RunDirectory | None, resume: bool) -> dict[str, Any] | None:
    """Rank 0 reads ``checkpoint.pt`` (when resuming and present) and hands it to all."""
    state = None
    if resume and run_dir is not None and run_dir.checkpoint_path.exists():
        state = load_checkpoint(run_dir.checkpoint_path)
    if _rank_and_world()[1] > 1:
        box = [state]
        distributed.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def search(
    config: DartsConfig,
    run_dir: RunDirectory | None = None,
    progress: bool = False,
    resume: bool = False,
    data: DatasetSplits | None = None,
) -> dict[str, Any]:
    """Run a DARTS search; returns what ``result.json`` holds.

    Parameters
    ----------
    config : what to search (see :class:`DartsConfig`).
    run_dir : where to write the run, or ``None`` to write nothing (other ranks, tests).
    progress : show a progress bar (stderr).
    resume : continue from ``run_dir``'s checkpoint when it has one.
    data : the dataset, when already loaded (otherwise ``config.dataset`` is loaded).
    """
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, limit_train=config.limit_train)
    if data.task != CLASSIFICATION or data.kind != "image":
        raise UsageError(
            f"darts searches classifiers of images; {data.name} is {data.task} on "
            f"{data.kind} of shape {data.input_shape} (use random, evolution, rl or pnas)"
        )
    trained = train_supernet(config, data, run_dir, progress, resume)
    result = summarize(config, trained, data)
    if run_dir is not None:
        write_run(run_dir, trained, result)
    return result


@dataclass
class TrainedSupernet:
    """A searched supernet and how it got there."""

    model: nn.Module
    #: per epoch (0 = the initial logits): losses, accuracies, softmax architecture weights
    history: list[dict[str, Any]]
    seconds: float
    #: the half of the training split the weights learned on
    weight_half: Split
    device: torch.device


def train_supernet(
    config: DartsConfig,
    data: DatasetSplits,
    run_dir: RunDirectory | None = None,
    progress: bool = False,
    resume: bool = False,
) -> TrainedSupernet:
    """The bilevel search itself (see :func:`search`), checkpointing each epoch into
    ``run_dir`` when given."""
    if config.epochs < 1 or config.batch_size < 2:
        raise UsageError("darts needs --epochs >= 1 and --batch-size >= 2")
    device = resolve_device(config.device)
    started = time.time()
    weight_half, arch_half = split_in_halves(data.train, config.seed)
    torch.manual_seed(config.seed)
    model = build_supernet(config, data.num_classes, data.input_shape[0]).to(device)
    bilevel = BilevelOptimizer(
        model,
        config.epochs,
        order=config.order,
        weight_lr=config.weight_lr,
        weight_lr_min=config.weight_lr_min,
        arch_lr=config.arch_lr,
    )
    _synchronise(model)
    history = [{"epoch": 0, "alphas": model.alpha_weights()}]
    state = _load_resume_state(run_dir, resume)
    if state is not None:
        model.load_state_dict(state["model"])
        bilevel.load_state_dict(state["bilevel"])
        history = state["history"]
        started -= state["seconds"]
    first_epoch = len(history)
    rank = _rank_and_world()[0]
    steps_per_epoch = len(epoch_batches(arch_half, config.batch_size, config.seed, 0, device,
                                          data))
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=(first_epoch - 1) * steps_per_epoch,
        disable=not progress,
        desc="darts",
        unit="step",
        file=sys.stderr,
    )
    with bar:
        for epoch in range(first_epoch, config.epochs + 1):
            train = epoch_batches(weight_half, config.batch_size, config.seed, epoch, device, data)
            valid = epoch_batches(arch_half, config.batch_size, config.seed, -epoch, device, data)
            totals = {"valid_loss": 0.0, "train_loss": 0.0, "train_correct": 0}
            for step, (train_batch, valid_batch) in enumerate(zip(train, valid), 1):
                for key, value in bilevel.step(train_batch, valid_batch).items():
                    totals[key] += value
                bar.update()
                bar.set_postfix(loss=f"{totals['train_loss'] / step:.3f}", refresh=False)
            bilevel.end_epoch()
            _average_statistics(model)
            steps = min(len(train), len(valid))
            entry = {
                "epoch": epoch,
                "train_loss": totals["train_loss"] / steps,
                "valid_loss": totals["valid_loss"] / steps,
                "train_acc": 100.0 * totals["train_correct"] / (steps * config.batch_size),
                "valid_acc": accuracy(model, data.valid, device, data),
                "learning_rate": bilevel.learning_rate,
                "alphas": model.alpha_weights(),
            }
            history.append(entry)
            if rank == 0 and progress:
                bar.write(
                    f"epoch {epoch}/{config.epochs}: train loss {entry['train_loss']:.3f}, "
                    f"train {entry['train_acc']:.1f}%, supernet val {entry['valid_acc']:.1f}%",
                    file=sys.stderr,
                )
            if run_dir is not None:
                save_checkpoint(
                    run_dir.checkpoint_path,
                    {
                        "model": model.state_dict(),
                        "bilevel": bilevel.state_dict(),
                        "history": history,
                        "seconds": time.time() - started,
                    },
                )
    return TrainedSupernet(model, history, time.time() - started, weight_half, device)


def summarize(config: DartsConfig, trained: TrainedSupernet, data: DatasetSplits) -> dict[str, Any]:
    """``result.json``: the discretized architecture and its accuracies (batch-norm
    statistics recalibrated on the weights' half of the training split)."""
    model, device = trained.model, trained.device
    calibration = epoch_batches(trained.weight_half, config.batch_size, config.seed, 0, device,
                                data)
    with discretized(model, calibration):
        val_acc = accuracy(model, data.valid, device, data)
        test_acc = accuracy(model, data.test, device, data)
    genotype, arch = model.genotype(), model.arch_string()
    metrics = {
        "val_acc": val_acc,
        "test_acc": test_acc,
        "supernet_val_acc": accuracy(model, data.valid, device, data),
        "supernet_test_acc": accuracy(model, data.test, device, data),
        "final_train_loss": trained.history[-1]["train_loss"],
    }
    return {
        "strategy": "darts",
        "space": config.space,
        "seed": config.seed,
        "arch": arch,
        "genotype": genotype,
        **metrics,
        "seconds": trained.seconds,
        "epochs": config.epochs,
        "evaluations": 0,
        "failed": 0,
        "score_name": "val_acc",
        "data": data.describe(),
        "config": dataclasses.asdict(config),
        "world_size": _rank_and_world()[1],
        "best": {
            "arch": arch,
            "genotype": genotype,
            "score": val_acc,
            "val_acc": val_acc,
            "test_acc": test_acc,
            "metrics": metrics,
        },
    }


def write_run(run_dir: RunDirectory, trained: TrainedSupernet, result: dict[str, Any]) -> None:
    """result.json, the alpha plots, the curves, and (darts) the cell drawings."""
    from pynas.search.darts_plots import plot_alpha_evolution, plot_search_curves

    model = trained.model
    for kind in model.cell_kinds:
        plot_alpha_evolution(
            trained.history,
            kind,
            model.operations,
            model.edge_names(),
            run_dir.path / f"alphas_{kind}.png",
        )
    plot_search_curves(trained.history, run_dir.path / "curves.png")
    if result["space"] == "darts":
        from pynas.cells import draw_genotype

        draw_genotype(result["genotype"], run_dir.path)
    run_dir.write_result(result)
