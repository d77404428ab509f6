"""Retrain the best architecture of a search from scratch, test it, save and export it.

:func:`train` (``pynas.train``; the command ``pynas train``) takes a run directory, its
``result.json`` or that document as a dict (any space, any strategy), or a bare DARTS
genotype, and trains the architecture on the run's own data and split unless told
otherwise. The darts space trains as the paper's evaluation does (:class:`DartsNetwork`
with the auxiliary head, drop-path and cutout as options, SGD with momentum and a
per-epoch cosine schedule, gradient clipping); every other space trains as a search
evaluates (:class:`~pynas.evaluate.train.TrainEvaluator`), only longer.

The result is a :class:`~pynas.models.DataAdapter`: raw inputs in (pixel values as stored,
raw feature values), logits or regression targets in the data's units out. An output
folder receives ``model.pt`` (its ``state_dict``; :func:`load_model` rebuilds it),
``architecture.json`` and ``metrics.json``; :meth:`TrainedModel.export` writes ONNX and
TorchScript files that run without pynas.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pynas.data import CLASSIFICATION, DATASETS, REGRESSION, DatasetSplits, DataSpec
from pynas.errors import UsageError
from pynas.evaluate.train import (
    DEFAULT_LEARNING_RATES,
    OPTIMIZERS,
    EpochCallback,
    TrainEvaluator,
    batches,
    measure,
    task_loss,
)
from pynas.models import DataAdapter, adapt
from pynas.runs import RunDirectory, atomic_write
from pynas.search.darts.search import resolve_device
from pynas.spaces import SearchSpace, get_space
from pynas.spaces.base import Arch
from pynas.spaces.darts import DartsNetwork, DartsSpace, steps_of

#: training defaults of the darts space: the paper's evaluation recipe, fewer epochs
DARTS_DEFAULTS: dict[str, Any] = {
    "epochs": 10, "batch_size": 64, "lr": {"sgd": 0.025, "adam": 1e-3}, "weight_decay": 3e-4,
}
#: training defaults of every other space: a search evaluation's recipe, more epochs
DEFAULTS: dict[str, Any] = {
    "epochs": 20, "batch_size": 64, "lr": DEFAULT_LEARNING_RATES, "weight_decay": 5e-4,
}
#: options of the darts space's network and training, with their defaults
DARTS_OPTIONS: dict[str, Any] = {
    "channels": 16, "layers": 8, "auxiliary_weight": 0.0, "drop_path": 0.0, "cutout": 0,
    "grad_clip": 5.0,
}
#: the fields of a :class:`DataSpec` besides ``dataset``: the data options of :func:`train`
DATA_OPTIONS = tuple(field.name for field in dataclasses.fields(DataSpec)
                     if field.name != "dataset")

#: what pynas.search names data given as arrays (see pynas.api.ARRAYS_NAME)
_ARRAYS_NAME = "arrays"

# files of an output folder
MODEL, ARCHITECTURE, METRICS = "model.pt", "architecture.json", "metrics.json"
ONNX, TORCHSCRIPT = "model.onnx", "model.ts"


@dataclass
class TrainedModel:
    """An architecture retrained from scratch, and how it did.

    Attributes
    ----------
    model : the trained network with its data's normalisation (evaluation mode, on the
        training device): raw inputs in, logits or targets in the data's units out.
    metrics : the task's validation and test metrics (``val_acc``, ``test_acc`` or
        ``val_r2``, ``val_rmse``, ``val_mae`` and their ``test_`` counterparts),
        ``params``, ``seconds``, per-epoch ``history``, ``options`` and ``data``.
    architecture : ``space``, ``arch`` (string), ``genotype``, ``input_shape``,
        ``num_outputs``, ``task``, ``output_names`` (and ``network`` for darts).
    out : the folder the files were written to, or ``None``.
    """

    model: DataAdapter
    metrics: dict[str, Any]
    architecture: dict[str, Any]
    out: Path | None = None

    def export(self, path: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the model as ONNX and TorchScript; see :func:`export_model`."""
        return export_model(self.model, self.architecture, path)


@dataclass(frozen=True)
class _Run:
    """What :func:`train` was given, read: ``label`` names it in messages."""

    label: str
    result: dict[str, Any]
    config: dict[str, Any]
    bare_genotype: bool = False


def train(
    run: str | os.PathLike[str] | Mapping[str, Any],
    data: Any = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str = "sgd",
    weight_decay: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
    target: str | tuple[str, ...] | None = None,
    task: str | None = None,
    image_size: tuple[int, int] | None = None,
    valid_fraction: float | None = None,
    test_fraction: float | None = None,
    split_seed: int | None = None,
    limit_train: int | None = None,
    channels: int | None = None,
    layers: int | None = None,
    auxiliary_weight: float | None = None,
    drop_path: float | None = None,
    cutout: int | None = None,
    grad_clip: float | None = None,
    out: str | os.PathLike[str] | None = None,
    export: str | os.PathLike[str] | None = None,
    keep_best_epoch: bool = True,
    progress: bool = False,
) -> TrainedModel:
    """Retrain the best architecture of a run from scratch and test it.

    Parameters
    ----------
    run : a run directory, its ``result.json``, that document as a dict, or a file
        holding a bare DARTS genotype (trained on digits unless ``data`` says otherwise).
    data : ``None`` for the run's own data and split (its ``config.json``); a built-in
        name or a path (described afresh by the data options below); loaded
        :class:`~pynas.data.DatasetSplits`; or arrays as :func:`pynas.search` takes them
        (split with the run's task, fractions and split seed). Needed when the search was
        given arrays.
    epochs, batch_size, lr, weight_decay : default for the darts space 10, 64, 0.025
        (0.001 with Adam), 3e-4; for the others 20, 64, 0.1 (0.001 with Adam), 5e-4.
    optimizer : ``"sgd"`` (momentum 0.9; Nesterov outside darts) or ``"adam"``.
    seed : seeds the weights, the batch order, drop-path and cutout.
    device : ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    data_dir, target, task, image_size, valid_fraction, test_fraction, split_seed,
    limit_train : as :class:`~pynas.data.DataSpec`; ``None`` keeps the run's value.
        ``limit_train=0`` trains on the whole training split.
    channels, layers : the darts network's initial channels and cells (16, 8).
    auxiliary_weight : weight of the darts auxiliary head's loss; 0 (default) builds none.
    drop_path : final drop-path probability of darts, raised linearly (default 0).
    cutout : side of the darts cutout square in pixels; 0 (default) for none.
    grad_clip : gradient norm clip of darts (default 5).
    out : a folder for ``model.pt``, ``architecture.json`` and ``metrics.json``; ``None``
        writes nothing.
    export : also write ONNX and TorchScript (see :func:`export_model`).
    keep_best_epoch : keep the weights of the epoch with the best validation score (the
        test split never chooses); ``False`` keeps the last epoch's.
    progress : show a progress bar per epoch on stderr.

    Returns
    -------
    TrainedModel

    Raises
    ------
    ValueError
        A :class:`~pynas.errors.UsageError` in one line: an unreadable run, one without a
        finished architecture, a genotype its space rejects, data the space cannot take,
        bad option values.
    """
    source = _read_run(run)
    space, arch = _best_architecture(source)
    darts = space.name == "darts"
    options = _training_options(darts, epochs=epochs, batch_size=batch_size, lr=lr,
                                optimizer=optimizer, weight_decay=weight_decay, seed=seed)
    network_options = _darts_options(darts, channels=channels, layers=layers,
                                     auxiliary_weight=auxiliary_weight, drop_path=drop_path,
                                     cutout=cutout, grad_clip=grad_clip)
    training_device = resolve_device(device)
    # Everything that can be refused is checked before the (long) training starts.
    if export is not None:
        export_paths(export)
        _require_onnx()
    data_options = {"data_dir": data_dir, "target": target, "task": task,
                    "image_size": image_size, "valid_fraction": valid_fraction,
                    "test_fraction": test_fraction, "split_seed": split_seed,
                    "limit_train": limit_train}
    dataset, spec = _load_data(source, data, data_options)
    space.check_input(dataset.input_shape)
    out_path = None if out is None else _make_folder(out)

    architecture = {
        "space": space.name,
        "arch": space.to_string(arch),
        "genotype": space.to_genotype(arch),
        "input_shape": list(dataset.input_shape),
        "num_outputs": dataset.num_outputs,
        "task": dataset.task,
        "output_names": list(dataset.output_names),
    }
    if darts:
        architecture["network"] = {key: network_options[key] for key in ("channels", "layers")}
    dataset = dataset.to(training_device)
    started = time.perf_counter()
    with tqdm(total=options["epochs"], desc="train", unit="epoch", disable=not progress,
              file=sys.stderr) as bar:
        report = _Reporter(dataset, bar)
        if darts:
            model = _train_darts(architecture, dataset, options, network_options,
                                 training_device, report)
        else:
            trainer = TrainEvaluator(
                dataset, epochs=options["epochs"], batch_size=options["batch_size"],
                optimizer=options["optimizer"], lr=options["lr"],
                weight_decay=options["weight_decay"], device=str(training_device),
                seed=options["seed"],
            )
            model, _ = trainer.fit(space, arch, dataset, on_epoch=report)
    if keep_best_epoch and report.best_state is not None:
        model.load_state_dict(report.best_state)
    seconds = time.perf_counter() - started
    model.eval()
    metrics = {
        **measure(model, dataset, "valid"),
        **measure(model, dataset, "test"),
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "seconds": seconds,
        "epochs": options["epochs"],
        "kept_epoch": report.best_epoch if keep_best_epoch else options["epochs"],
        "history": report.history,
        "options": {**options, **(network_options if darts else {}), "device": device},
        "data": {**dataset.describe(), **({"spec": spec.to_dict()} if spec else {})},
    }
    trained = TrainedModel(model, metrics, architecture, out_path)
    if out_path is not None:
        _save(trained, out_path)
    if export is not None:
        trained.export(export)
    return trained


# ------------------------------------------------------------------- reading the run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from None


def _read_run(run: str | os.PathLike[str] | Mapping[str, Any]) -> _Run:
    """The result (and search config) a run directory, a ``result.json``, a result dict
    or a genotype file holds."""
    if isinstance(run, Mapping):
        result = dict(run)
        return _Run("the run", result, dict(result.get("config") or {}), _is_genotype(result))
    path = Path(run)
    if path.is_dir():
        result_path = path / RunDirectory.RESULT
        if not result_path.is_file():
            raise UsageError(f"{path} holds no finished search (no {RunDirectory.RESULT})")
    elif path.exists():
        result_path = path
    else:
        raise UsageError(f"cannot read {path}: no such file or directory")
    result = _read_json(result_path)
    if not isinstance(result, dict):
        raise UsageError(f"{result_path} holds no search result or genotype (not an object)")
    config = result.get("config")
    # config.json holds every argument of the search; result.json's copy of a DARTS run
    # holds only DARTS's own (no target, task or split)
    config_path = result_path.parent / RunDirectory.CONFIG
    if config_path.is_file():
        config = _read_json(config_path)
    return _Run(str(path), result, dict(config or {}), _is_genotype(result))


def _is_genotype(document: dict[str, Any]) -> bool:
    return "normal" in document and "best" not in document


def best_architecture(run: str | os.PathLike[str] | Mapping[str, Any]
                      ) -> tuple[SearchSpace, Arch]:
    """The search space of a run (a directory, a ``result.json`` or its dict) and its best
    architecture, checked by the space; a one-line :class:`UsageError` otherwise."""
    return _best_architecture(_read_run(run))


def _best_architecture(run: _Run) -> tuple[SearchSpace, Arch]:
    """The space of ``run`` and its best architecture, checked by the space."""
    result = run.result
    if run.bare_genotype:
        name, best = "darts", {"genotype": result}
    else:
        if "best" in result and result["best"] is None:
            raise UsageError(f"{run.label}: the search has no finished architecture "
                             f"({result.get('failed', 0)} evaluations failed)")
        # a DARTS result may carry its genotype at the top level only
        best = result.get("best") or (
            {"genotype": result["genotype"]} if result.get("genotype") is not None else None)
        name = result.get("space") or ("darts" if result.get("strategy") == "darts" else None)
        if not isinstance(best, dict) or name is None:
            raise UsageError(f"{run.label} holds neither a search result (space, best) nor a "
                             "DARTS genotype")
    try:
        if name == "darts":
            space: SearchSpace = DartsSpace(steps=steps_of(best["genotype"]))
        else:
            space = get_space(name)
        genotype = best.get("genotype")
        arch = (space.from_genotype(genotype) if genotype is not None
                else space.from_string(best["arch"]))
    except UsageError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        detail = f"no field {error}" if isinstance(error, KeyError) else str(error)
        raise UsageError(f"{run.label} holds no usable {name} architecture: {detail}"
                         ) from None
    return space, arch


def _run_data_spec(run: _Run) -> DataSpec | None:
    """The data the search of ``run`` trained on, or ``None`` when the run cannot say
    (data given as arrays, a benchmark table, an evaluation function without data)."""
    result = run.result
    evaluator = result.get("evaluator") if isinstance(result.get("evaluator"), dict) else {}
    if run.bare_genotype or not (run.config or evaluator or result.get("data")):
        # a genotype, or a result that says nothing of its data: the searches' default
        return DataSpec()
    # An evaluator that loaded a DataSpec records its fields beside the loaded data's
    # description (a benchmark's "dataset" comes without one).
    if evaluator.get("dataset") is not None and "data" in evaluator:
        return DataSpec.from_dict({key: evaluator[key] for key in DATA_OPTIONS + ("dataset",)
                                   if key in evaluator})
    described = result.get("data") or evaluator.get("data") or {}
    config = run.config
    if described.get("name") == _ARRAYS_NAME or config.get("benchmark") is not None:
        return None
    # the command records dataset null for its default, digits
    dataset = config.get("dataset") or (
        described["name"] if described.get("name") in DATASETS else None)
    if dataset is None:
        return None
    values = {key: config[key] for key in DATA_OPTIONS if config.get(key) is not None}
    return DataSpec.from_dict({**values, "dataset": dataset})


def _load_data(run: _Run, data: Any, options: dict[str, Any]) -> tuple[DatasetSplits,
                                                                      DataSpec | None]:
    """The data to retrain on and the spec it was loaded from (``None`` for data given
    loaded or as arrays); ``options`` are the data options of :func:`train`."""
    given = {key: value for key, value in options.items() if value is not None}
    if given.get("limit_train") == 0:
        given["limit_train"] = None  # 0: the whole training split
    if isinstance(given.get("target"), str):
        given["target"] = (given["target"],)
    if isinstance(data, DatasetSplits):
        if given:
            raise UsageError(f"{', '.join(given)} describe data to load; data given loaded "
                             "is used as it is")
        return data, None
    if data is not None and not isinstance(data, (str, os.PathLike)):
        from pynas.api import as_dataset  # the API imports this module

        sources = [key for key in ("data_dir", "target", "image_size") if key in given]
        if sources:
            raise UsageError(f"{', '.join(sources)} describe files to load, not arrays")
        split = {key: run.config.get(key) for key in
                 ("task", "valid_fraction", "test_fraction", "split_seed", "limit_train")}
        split = {**split, **given}
        return as_dataset(data, split["task"], split["valid_fraction"], split["test_fraction"],
                          split["split_seed"] or 0, split["limit_train"]), None
    if data is not None:
        spec = DataSpec.from_dict({**given, "dataset": os.fspath(data)})
    else:
        run_spec = _run_data_spec(run)
        if run_spec is None:
            raise UsageError(f"{run.label}: the run cannot load its data again (given from "
                             "Python as arrays, or scores read from a table); pass --dataset "
                             "NAME|PATH, or call pynas.train(run, data=...)")
        spec = DataSpec.from_dict({**run_spec.to_dict(), **given})
    return spec.load(), spec


# ------------------------------------------------------------------------- options


def _check_number(name: str, value: Any, expected: str, test: Callable[[Any], bool],
                  integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not test(value):
        raise UsageError(f"{name} must be {expected}, got {value!r}")


def _training_options(darts: bool, **given: Any) -> dict[str, Any]:
    """The training options with the space's defaults filled in, checked."""
    if given["optimizer"] not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {given['optimizer']!r}; known optimizers: "
                         f"{', '.join(OPTIMIZERS)}")
    defaults = DARTS_DEFAULTS if darts else DEFAULTS
    options = dict(given)
    for key in ("epochs", "batch_size", "weight_decay"):
        if options[key] is None:
            options[key] = defaults[key]
    if options["lr"] is None:
        options["lr"] = defaults["lr"][options["optimizer"]]
    _check_number("epochs", options["epochs"], "a positive integer", lambda v: v >= 1, True)
    # batch norm cannot train on batches of one example
    _check_number("batch_size", options["batch_size"], "an integer of at least 2",
                  lambda v: v >= 2, True)
    _check_number("lr", options["lr"], "positive", lambda v: v > 0)
    _check_number("weight_decay", options["weight_decay"], "zero or positive", lambda v: v >= 0)
    _check_number("seed", options["seed"], "an integer of at least 0", lambda v: v >= 0, True)
    return options


def _darts_options(darts: bool, **given: Any) -> dict[str, Any]:
    """The darts-only options with their defaults, checked; refused for other spaces."""
    if not darts:
        named = [key for key, value in given.items() if value is not None]
        if named:
            raise UsageError(f"{', '.join(named)}: for the darts space only; this "
                             "architecture trains as a search evaluates it")
        return {}
    options = {key: DARTS_OPTIONS[key] if value is None else value
               for key, value in given.items()}
    for key in ("channels", "layers"):
        _check_number(key, options[key], "a positive integer", lambda v: v >= 1, True)
    _check_number("auxiliary_weight", options["auxiliary_weight"], "zero or positive",
                  lambda v: v >= 0)
    _check_number("drop_path", options["drop_path"], "in [0, 1)", lambda v: 0 <= v < 1)
    _check_number("cutout", options["cutout"], "an integer of at least 0", lambda v: v >= 0,
                  True)
    _check_number("grad_clip", options["grad_clip"], "positive", lambda v: v > 0)
    return options


def _make_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {folder}: {error.strerror}") from None
    return folder


# ------------------------------------------------------------------------- training


class _Reporter:
    """``reporter(epoch, model, train_metrics)`` after each epoch: measure validation,
    log it, advance ``bar``, and keep a copy of the weights of the best validation score.
    """

    def __init__(self, data: DatasetSplits, bar: tqdm) -> None:
        self.data, self.bar = data, bar
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None

    def __call__(self, epoch: int, model: DataAdapter, train_metrics: dict[str, float]) -> None:
        entry = {"epoch": epoch, **train_metrics, **measure(model, self.data, "valid")}
        self.history.append(entry)
        if entry[self.data.score_name] > self.best_score:
            self.best_score, self.best_epoch = entry[self.data.score_name], epoch
            self.best_state = copy.deepcopy(model.state_dict())
        self.bar.set_postfix({key: f"{value:.4g}" for key, value in entry.items()
                              if key != "epoch"})
        self.bar.update()
        model.train()  # measuring left it in evaluation mode


def cutout(images: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """Zero one ``length`` x ``length`` square per image (N, C, H, W), centred anywhere in
    the image and clipped at its border (DeVries and Taylor, 2017)."""
    count, _, height, width = images.shape
    centre_y = torch.randint(height, (count, 1, 1), generator=generator)
    centre_x = torch.randint(width, (count, 1, 1), generator=generator)
    # offsets from the square's first row/column: inside when in 0..length-1
    rows = torch.arange(height).view(1, height, 1) - centre_y + length // 2
    columns = torch.arange(width).view(1, 1, width) - centre_x + length // 2
    inside = (rows >= 0) & (rows < length) & (columns >= 0) & (columns < length)
    return images * (~inside).unsqueeze(1).to(images.device, images.dtype)


def _train_darts(architecture: dict[str, Any], data: DatasetSplits, options: dict[str, Any],
                 network_options: dict[str, Any], device: torch.device,
                 report: EpochCallback) -> DataAdapter:
    """The paper's evaluation training of a darts genotype; returns the trained model
    without its auxiliary head (which only serves training)."""
    auxiliary_weight = network_options["auxiliary_weight"]
    rng_devices = [device.index] if device.type == "cuda" else []
    # a private copy of the global generators: drop-path draws from them
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(options["seed"])
        network = _darts_network(architecture, auxiliary=auxiliary_weight > 0)
        model = adapt(network, data).to(device)
        if options["optimizer"] == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(
                model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=0.9,
                                        weight_decay=options["weight_decay"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options["epochs"])
        generator = torch.Generator().manual_seed(options["seed"])
        for epoch in range(1, options["epochs"] + 1):
            # ScheduledDropPath: the probability grows linearly to drop_path
            network.drop_path_probability = (network_options["drop_path"] * (epoch - 1)
                                             / options["epochs"])
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for inputs, targets in batches(data.train, options["batch_size"], generator):
                images = data.prepare(inputs)
                if network_options["cutout"]:
                    images = cutout(images, network_options["cutout"], generator)
                outputs, auxiliary_outputs = network.forward_with_auxiliary(images)
                loss = task_loss(model, outputs, targets, data.task)
                if auxiliary_outputs is not None:
                    loss = loss + auxiliary_weight * task_loss(
                        model, auxiliary_outputs, targets, data.task)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), network_options["grad_clip"])
                optimizer.step()
                total_loss += loss.item() * len(targets)
                if data.task == CLASSIFICATION:
                    correct += int((outputs.argmax(dim=1) == targets).sum())
                seen += len(targets)
            scheduler.step()
            network.drop_path_probability = 0.0
            train_metrics = {"train_loss": total_loss / seen}
            if data.task == CLASSIFICATION:
                train_metrics["train_acc"] = 100.0 * correct / seen
            report(epoch, model, train_metrics)
    network.auxiliary_head = None
    return model


def _darts_network(architecture: dict[str, Any], auxiliary: bool = False) -> DartsNetwork:
    return DartsNetwork(
        architecture["genotype"],
        tuple(architecture["input_shape"]),
        architecture["num_outputs"],
        channels=architecture["network"]["channels"],
        layers=architecture["network"]["layers"],
        auxiliary=auxiliary,
    )


# ------------------------------------------------------------------ saving, loading


def _save(trained: TrainedModel, folder: Path) -> None:
    """Write ``model.pt``, ``architecture.json`` and ``metrics.json`` into ``folder``."""
    state = {key: value.detach().cpu() for key, value in trained.model.state_dict().items()}
    torch.save(state, folder / MODEL)
    for name, document in ((ARCHITECTURE, trained.architecture), (METRICS, trained.metrics)):
        atomic_write(folder / name, (json.dumps(document, indent=2) + "\n").encode())


def load_model(folder: str | os.PathLike[str]) -> DataAdapter:
    """The model a :func:`train` output folder holds, rebuilt from ``architecture.json``
    and ``model.pt``, on the CPU in evaluation mode."""
    folder = Path(folder)
    architecture = _read_json(folder / ARCHITECTURE)
    input_shape = tuple(architecture["input_shape"])
    if architecture["space"] == "darts":
        network: nn.Module = _darts_network(architecture)
    else:
        space = get_space(architecture["space"])
        network = space.build(space.from_genotype(architecture["genotype"]), input_shape,
                              architecture["num_outputs"])
    # placeholders of the right shapes; the state dict holds the values
    statistics = torch.zeros(input_shape[0], 1, 1) if len(input_shape) == 3 else torch.zeros(
        input_shape[0])
    targets = (torch.zeros(architecture["num_outputs"])
               if architecture["task"] == REGRESSION else None)
    model = DataAdapter(network, statistics, statistics, targets, targets)
    model.load_state_dict(torch.load(folder / MODEL, map_location="cpu", weights_only=True))
    return model.eval()


# ------------------------------------------------------------------------ exporting


def export_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ONNX and TorchScript files of ``--export PATH``: ``FILE.onnx`` (or
    ``FILE.ts``) names both, beside each other; anything else is a folder to hold
    ``model.onnx`` and ``model.ts``."""
    path = Path(path)
    if path.suffix.lower() in (".onnx", ".ts"):
        return path.with_suffix(".onnx"), path.with_suffix(".ts")
    if path.exists() and not path.is_dir():
        raise UsageError(f"cannot export into {path}: it is a file (name FILE.onnx or a "
                         "folder)")
    return path / ONNX, path / TORCHSCRIPT


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with a clear line first)
    except ImportError:
        raise UsageError("exporting needs the onnx package: pip install onnx") from None


def export_model(model: DataAdapter, architecture: dict[str, Any],
                 path: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``model`` as ONNX and as TorchScript (traced), both in evaluation mode with
    a dynamic batch dimension: float32 inputs in their stored units (named ``images`` or
    ``features``) in, ``logits`` or ``predictions`` (in the data's units) out. Neither
    needs pynas to run: ``onnxruntime.InferenceSession(path)``, ``torch.jit.load(path)``.

    Returns
    -------
    dict
        ``{"onnx": path, "torchscript": path}``.
    """
    _require_onnx()
    onnx_path, torchscript_path = export_paths(path)
    _make_folder(onnx_path.parent)
    model = copy.deepcopy(model).cpu().eval()
    input_shape = tuple(architecture["input_shape"])
    # two examples: a batch of one would let the tracer fold the batch size into shapes
    example = torch.zeros(2, *input_shape)
    input_name = "images" if len(input_shape) == 3 else "features"
    output_name = "logits" if architecture["task"] == CLASSIFICATION else "predictions"
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs only `onnx`; the newer torch.export-based
        # one also needs `onnxscript`. Its deprecation notice, and its note that a slice
        # could not be constant-folded (the graph is right without), are not the user's;
        # nor is torch.jit's notice that it is deprecated (TorchScript still loads
        # anywhere torch does, which is why it is written).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(torchscript_path))
    return {"onnx": onnx_path, "torchscript": torchscript_path}
