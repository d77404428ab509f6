"""The DARTS search loop: ``pynas search darts``.

It trains a supernet (the darts cell, or ``--space nb201``) with the bilevel optimiser of
:mod:`pynas.search.darts.bilevel`: the weights on one half of the training split, the
architecture logits on the other half (the paper's CIFAR protocol), with the cures for the
collapse that the configuration turns on (:mod:`pynas.search.darts.cures`,
:mod:`pynas.search.darts.partial`). It then discretizes the cells, measures the
discretized supernet on the validation and test splits (and, with ``--cost-target``, the
discretized network's cost: :mod:`pynas.search.darts.cost`), and writes ``result.json``,
``checkpoint.pt`` (each epoch; ``--resume`` continues from it), the architecture-weight
plots, the loss/accuracy curves and drawings of the cells.

After each epoch it measures the supernet's accuracy on the validation split, or on
:data:`EPOCH_VALIDATION_EXAMPLES` of its examples evenly spaced through a larger one (a
progress figure; the discretized supernet is measured on every example).

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
from pynas.search.darts.bilevel import BilevelOptimizer, Penalty, average_across_processes
from pynas.search.darts.config import DartsConfig
from pynas.search.darts.cost import (
    CostTable,
    cost_penalty,
    cost_summary,
    cost_table,
    discretized_cost,
    expected_cost,
    fit_to_target,
)
from pynas.search.darts.cures import beta_decay, linear_ramp
from pynas.search.darts.nb201 import NB201Supernet
from pynas.search.darts.selection import perturbation_choices
from pynas.search.darts.supernet import DartsSupernet, Supernet

_EVALUATION_BATCH = 256
#: validation examples the supernet's accuracy is measured on after each epoch (evenly
#: spaced through a larger split); the discretized supernet is measured on all of them
EPOCH_VALIDATION_EXAMPLES = 2000
#: validation examples the perturbation selection measures the loss on (evenly spaced
#: through a larger architecture half)
PERTURBATION_EXAMPLES = 2000
#: configuration fields that say where a run goes, or how its trained supernet becomes a
#: cell, not what it trains: a resume may change them
_HOW_NOT_WHAT = ("data_dir", "device", "selection")


def check_arguments(space: object, args: argparse.Namespace) -> None:
    """Refuse the command's options that do not apply to darts (before the run
    directory is created)."""
    for option in ("budget", "budget_seconds", "benchmark", "executor", "workers"):
        if getattr(args, option, None) is not None:
            flag = "--" + option.replace("_", "-")
            raise UsageError(
                f"{flag} does not apply to darts, which trains one supernet for --epochs"
            )
    if getattr(args, "lr", None) is not None:
        raise UsageError("darts has two learning rates: give --weight-lr and --arch-lr")
    DartsConfig.from_args(args).check()


def run(args: argparse.Namespace, run_dir: RunDirectory | None) -> int:
    """``pynas search darts``: search, write the run (rank 0), print a summary line."""
    check_arguments(None, args)  # for callers that skipped the command's own check
    from pynas.search.cli import announce_threads, load_data, retrain_line  # cli imports us

    announce_threads(args)
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
            f"supernet: val {result['supernet_val_acc']:.2f}%; discretized supernet, weights "
            f"not retrained (a progress signal; retrain to measure the cell): val "
            f"{result['val_acc']:.2f}%, test {result['test_acc']:.2f}% after {config.epochs} "
            f"epochs in {result['seconds']:.0f} s"
            + (f"; run in {run_dir.path}" if run_dir is not None else "")
        )
        if "cost_target" in result:
            cost = result["cost_target"]
            print(
                f"{cost['measure']} of the discretized network: {cost['cost']:,}, "
                f"{cost['ratio']:.2f} x the target {cost['target']:,} (weight "
                f"{cost['weight']:g}); the strongest cell within "
                f"{100 * cost['tolerance']:g}% of it, the argmax cell being "
                f"{cost['argmax_ratio']:.2f} x"
            )
        if "argmax" in result:
            print(f"chosen by perturbation; the argmax cell: {result['argmax']['arch']}")
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


def build_supernet(config: DartsConfig, num_classes: int, in_channels: int) -> Supernet:
    """The supernet of ``config.space``."""
    options = dict(
        mixed_op=config.mixed_op,
        partial_channels=config.partial_channels,
        edge_normalization=config.edge_normalization,
        dirichlet=config.dirichlet,
    )
    if config.space == "nb201":
        return NB201Supernet(
            num_classes, in_channels, channels=config.channels, cells_per_stage=config.layers,
            **options,
        )
    return DartsSupernet(
        num_classes,
        in_channels,
        channels=config.channels,
        layers=config.layers,
        steps=config.steps,
        multiplier=config.multiplier,
        stem_multiplier=config.stem_multiplier,
        **options,
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


def evenly_spaced(split: Split, count: int) -> Split:
    """``split`` itself, or ``count`` of its examples evenly spaced through it when it has
    more (every class of a split stored class by class keeps its share)."""
    if len(split) <= count:
        return split
    indices = torch.arange(count) * len(split) // count
    return Split(split.inputs[indices], split.targets[indices])


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
    # Only the batch norms in training mode: the rest of the supernet computes as in
    # evaluation (no Dirichlet sample, the discrete cells' own weights).
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average instead of an exponential one
        norm.train()
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
    config.check()
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, limit_train=config.limit_train)
    if data.task != CLASSIFICATION or data.kind != "image":
        raise UsageError(
            f"darts searches classifiers of images; {data.name} is {data.task} on "
            f"{data.kind} of shape {data.input_shape} (use random, evolution, rl or pnas)"
        )
    trained = train_supernet(config, data, run_dir, progress, resume)
    result = summarize(config, trained, data, progress)
    if run_dir is not None:
        write_run(run_dir, trained, result)
    return result


@dataclass
class TrainedSupernet:
    """A searched supernet and how it got there."""

    model: Supernet
    #: per epoch (0 = the initial logits): losses, accuracies, operation weights
    history: list[dict[str, Any]]
    seconds: float
    #: the halves of the training split the weights and the architecture learned on
    weight_half: Split
    arch_half: Split
    device: torch.device
    #: what each operation costs, with ``--cost-target``
    cost_table: CostTable | None = None


def train_supernet(
    config: DartsConfig,
    data: DatasetSplits,
    run_dir: RunDirectory | None = None,
    progress: bool = False,
    resume: bool = False,
) -> TrainedSupernet:
    """The bilevel search itself (see :func:`search`), checkpointing each epoch into
    ``run_dir`` when given.

    The cures' schedules follow the search's progress, ``linear_ramp`` over all its steps:
    beta-decay's weight rises from 0 to ``config.beta_decay``, the auxiliary skip's
    coefficient falls from 1 to 0 (and is 0 once the search is over). The random draws of
    an epoch (Dirichlet samples) come from a seed of the run's seed, the epoch and the
    process. A resumed run therefore computes what the uninterrupted one computes from
    the checkpoint's model, optimisers and history alone.
    """
    config.check()
    device = resolve_device(config.device)
    started = time.time()
    weight_half, arch_half = split_in_halves(data.train, config.seed)
    torch.manual_seed(config.seed)
    model = build_supernet(config, data.num_classes, data.input_shape[0]).to(device)
    table = None
    if config.cost_target is not None:
        table = cost_table(model, config.cost_measure, data.input_shape, data.num_classes)
    bilevel = BilevelOptimizer(
        model,
        config.epochs,
        order=config.order,
        weight_lr=config.weight_lr,
        weight_lr_min=config.weight_lr_min,
        arch_lr=config.arch_lr,
    )
    _synchronise(model)
    history = [{"epoch": 0, "alphas": model.alpha_weights(), **costs_of(model, table)}]
    state = _load_resume_state(run_dir, resume)
    if state is not None:
        _check_same_search(state["config"], config)
        model.load_state_dict(state["model"])
        bilevel.load_state_dict(state["bilevel"])
        history = state["history"]
        started -= state["seconds"]
    first_epoch = len(history)
    rank = _rank_and_world()[0]
    steps_per_epoch = len(epoch_batches(arch_half, config.batch_size, config.seed, 0, device,
                                          data))
    total_steps = config.epochs * steps_per_epoch
    bar = tqdm(
        total=total_steps,
        initial=(first_epoch - 1) * steps_per_epoch,
        disable=not progress,
        desc="darts",
        unit="step",
        file=sys.stderr,
    )
    epoch_validation = evenly_spaced(data.valid, EPOCH_VALIDATION_EXAMPLES)
    with bar:
        for epoch in range(first_epoch, config.epochs + 1):
            torch.manual_seed((config.seed * 100_003 + epoch) * 1_009 + rank)
            train = epoch_batches(weight_half, config.batch_size, config.seed, epoch, device, data)
            valid = epoch_batches(arch_half, config.batch_size, config.seed, -epoch, device, data)
            totals = {"valid_loss": 0.0, "train_loss": 0.0, "train_correct": 0}
            for step, (train_batch, valid_batch) in enumerate(zip(train, valid), 1):
                ramp = linear_ramp((epoch - 1) * steps_per_epoch + step - 1, total_steps)
                if config.aux_skip:
                    model.skip_coefficient = 1.0 - ramp
                penalties = []
                if config.beta_decay:
                    penalties.append(beta_decay_penalty(model, config.beta_decay * ramp))
                if table is not None:
                    penalties.append(cost_penalty(model, table, config.cost_target,
                                                  config.penalty_weight))
                outcome = bilevel.step(
                    train_batch,
                    valid_batch,
                    update_architecture=epoch > config.warmup_epochs,
                    penalty=sum_of(penalties),
                )
                for key, value in outcome.items():
                    totals[key] += value
                bar.update()
                bar.set_postfix(loss=f"{totals['train_loss'] / step:.3f}", refresh=False)
            bilevel.end_epoch()
            _average_statistics(model)
            steps = min(len(train), len(valid))
            entry = {
                "epoch": epoch,
                "train_loss": totals["train_loss"] / steps,
                "valid_loss": totals["valid_loss"] / steps,  # NaN in a warm-up epoch
                "train_acc": 100.0 * totals["train_correct"] / (steps * config.batch_size),
                "valid_acc": accuracy(model, epoch_validation, device, data),
                "learning_rate": bilevel.learning_rate,
                "alphas": model.alpha_weights(),
                **costs_of(model, table),
            }
            history.append(entry)
            if rank == 0 and progress:
                bar.write(
                    f"epoch {epoch}/{config.epochs}: train loss {entry['train_loss']:.3f}, "
                    f"train {entry['train_acc']:.1f}%, supernet val {entry['valid_acc']:.1f}%"
                    + (f", {table.measure} expected {entry['expected_cost']:,.0f}, "
                       f"discretized {entry['discretized_cost']:,.0f}" if table else ""),
                    file=sys.stderr,
                )
            if run_dir is not None:
                save_checkpoint(
                    run_dir.checkpoint_path,
                    {
                        "config": dataclasses.asdict(config),
                        "model": model.state_dict(),
                        "bilevel": bilevel.state_dict(),
                        "history": history,
                        "seconds": time.time() - started,
                    },
                )
    model.skip_coefficient = 0.0  # DARTS-'s skip is not part of the architecture found
    return TrainedSupernet(model, history, time.time() - started, weight_half, arch_half, device,
                           table)


def beta_decay_penalty(model: Supernet, weight: float) -> Penalty:
    """beta-DARTS's regularization of ``model``'s operation logits, times ``weight``."""
    return lambda: weight * beta_decay(model.operation_logits())


def sum_of(penalties: list[Penalty]) -> Penalty | None:
    """One penalty adding up ``penalties``; ``None`` when there are none."""
    if not penalties:
        return None
    return lambda: sum(penalty() for penalty in penalties)


@torch.no_grad()
def costs_of(model: Supernet, table: CostTable | None) -> dict[str, float]:
    """For an epoch's history: the expected cost and the discretized network's (from the
    table), with ``--cost-target``."""
    if table is None:
        return {}
    return {"expected_cost": float(expected_cost(model, table)),
            "discretized_cost": discretized_cost(model, table)}


def _check_same_search(saved: dict[str, Any], config: DartsConfig) -> None:
    """Refuse to resume a checkpoint that another configuration wrote (a field the
    checkpoint lacks, being older than the field, counts as its default)."""
    current = dataclasses.asdict(config)
    defaults = dataclasses.asdict(DartsConfig())
    different = [
        f"{name}={saved.get(name, defaults[name])!r} (now {value!r})"
        for name, value in current.items()
        if name not in _HOW_NOT_WHAT and saved.get(name, defaults[name]) != value
    ]
    if different:
        raise UsageError(
            "the checkpoint was written by a search with other settings: "
            + ", ".join(different) + "; resume with the run's own settings"
        )


def summarize(
    config: DartsConfig, trained: TrainedSupernet, data: DatasetSplits, progress: bool = False
) -> dict[str, Any]:
    """``result.json``: the discretized architecture and its accuracies (batch-norm
    statistics recalibrated on the weights' half of the training split)."""
    model, device = trained.model, trained.device
    table = trained.cost_table
    extra: dict[str, Any] = {}
    if table is not None:  # the strongest cell within the tolerance of the target
        argmax_cost = discretized_cost(model, table)
        model.pin(fit_to_target(model, table, config.cost_target, config.cost_tolerance))
    if config.selection == "perturbation":
        extra["argmax"] = {"arch": model.arch_string(), "genotype": model.genotype()}
        examples = evenly_spaced(trained.arch_half, PERTURBATION_EXAMPLES)
        batches = [
            (data.prepare(examples.inputs[start : start + _EVALUATION_BATCH].to(device)),
             examples.targets[start : start + _EVALUATION_BATCH].to(device))
            for start in range(0, len(examples), _EVALUATION_BATCH)
        ]
        model.pin(perturbation_choices(model, batches, progress))
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
    if table is not None:
        extra["cost_target"] = {
            **cost_summary(model, table, config.cost_target, config.penalty_weight,
                           data.input_shape, data.num_classes),
            "tolerance": config.cost_tolerance,
            "argmax_cost": argmax_cost,
            "argmax_ratio": argmax_cost / config.cost_target,
        }
        metrics[table.measure] = extra["cost_target"]["cost"]
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
        "selection": config.selection,
        **extra,
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
    from pynas.search.darts.plots import plot_alpha_evolution, plot_search_curves

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
