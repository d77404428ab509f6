"""The Python API: the searches of ``pynas search`` on your data, with your evaluation.

``pynas.search(...)`` takes the command's options as keyword arguments (``budget=10`` for
``--budget 10``) and returns a :class:`SearchResult`; ``pynas.load(DIR)`` opens a finished
run again. Runs, checkpoints, resume and executors are those of the command.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pynas.data import DatasetSplits, from_arrays
from pynas.errors import UsageError
from pynas.evaluate.function import Candidate
from pynas.runs import Attempt, RunDirectory
from pynas.spaces import Arch, SearchSpace

#: ``data=`` given as arrays is named so in ``result.json``
ARRAYS_NAME = "arrays"


@dataclass
class SearchResult:
    """A finished (or interrupted) search, as its run directory holds it.

    Attributes
    ----------
    path : the run directory.
    result : the content of ``result.json``.
    """

    path: Path
    result: dict[str, Any]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best architecture: ``arch`` (string), ``genotype``, ``score``, ``metrics``;
        ``None`` when no evaluation finished."""
        return self.result.get("best")

    @property
    def score_name(self) -> str:
        """What ``best["score"]`` is (``val_acc``, ``val_r2``, a table column, ...)."""
        return self.result.get("score_name", "val_acc")

    @property
    def pareto(self) -> list[dict[str, Any]] | None:
        """With several ``objectives``: the trials no other trial dominates, best first in
        the first objective, each with ``trial``, ``arch`` and the objectives' values
        (``pareto.json`` in the run directory has all their metrics); else ``None``."""
        return self.result.get("pareto")

    @property
    def trials(self) -> list[Attempt]:
        """Every evaluation attempt, in the order they started (none for DARTS)."""
        run = RunDirectory(self.path)
        if not run.trials_path.is_file():
            return []
        with run.open_store() as store:
            return store.attempts()

    def best_architecture(self) -> tuple[SearchSpace, Arch]:
        """The run's search space and its best architecture (a decision tuple)."""
        from pynas.retrain import best_architecture

        return best_architecture(self.result)

    def build_model(self) -> nn.Module:
        """The best architecture as a freshly initialised network, for the run's data
        shape and outputs (normalised inputs in; see :func:`pynas.train` for a trained
        model that takes raw inputs)."""
        space, arch = self.best_architecture()
        data = self.result.get("data") or self.result.get("evaluator", {}).get("data")
        if not data:
            raise UsageError(f"{self.path}: result.json does not say the data's shape")
        return space.build(arch, tuple(data["input_shape"]), data["num_outputs"])

    def train(self, data: Any = None, **options: Any) -> Any:
        """Retrain the best architecture from scratch and test it: see :func:`pynas.train`.

        ``data`` is needed when the search was given arrays: pass the same arrays, and
        they are split as the search split them."""
        from pynas.retrain import train

        return train(self.path, data, **options)

    def to_dict(self) -> dict[str, Any]:
        """``result.json`` as a dict."""
        return dict(self.result)


def load(path: str | os.PathLike[str]) -> SearchResult:
    """Open the run in ``path`` (a ``pynas search --out`` directory)."""
    run = RunDirectory(path)
    try:
        result = json.loads(run.result_path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{run.path} holds no finished search (no {RunDirectory.RESULT})"
                         ) from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {run.result_path}: {error}") from None
    return SearchResult(run.path, result)


def as_dataset(data: Any, task: str | None = None, valid_fraction: float | None = None,
               test_fraction: float | None = None, split_seed: int = 0,
               limit_train: int | None = None) -> DatasetSplits:
    """In-memory data as a :class:`~pynas.data.DatasetSplits`.

    ``data`` is a :class:`~pynas.data.DatasetSplits`; a pair ``(x, y)`` of arrays or
    tensors; a mapping with ``x``, ``y`` (and optionally ``x_valid``, ``y_valid``,
    ``x_test``, ``y_test``); or a ``torch.utils.data.Dataset`` of ``(input, target)``
    pairs. Splits not given are held out of the training data, seeded.
    """
    if isinstance(data, DatasetSplits):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        data = _dataset_arrays(data)
    if isinstance(data, Mapping):
        parts = {part: _pair(data, suffix) for part, suffix in
                 (("train", ""), ("valid", "_valid"), ("test", "_test"))}
        if parts["train"] is None:
            raise UsageError(f"data needs 'x' and 'y'; it has {sorted(data)}")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        parts = {"train": tuple(_numpy(part) for part in data), "valid": None, "test": None}
    else:
        raise TypeError(
            "data must be a dataset name or path, (x, y) arrays or tensors, a dict of them, "
            f"a torch Dataset, or DatasetSplits; got {type(data).__name__}"
        )
    fractions = {key: value for key, value in
                 (("valid_fraction", valid_fraction), ("test_fraction", test_fraction))
                 if value is not None}
    return from_arrays(ARRAYS_NAME, parts["train"], parts["valid"], parts["test"], task=task,
                       split_seed=split_seed, limit_train=limit_train, **fractions)


def _numpy(array: Any) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _pair(data: Mapping, suffix: str) -> tuple[np.ndarray, np.ndarray] | None:
    x, y = data.get("x" + suffix), data.get("y" + suffix)
    if x is None and y is None:
        return None
    if x is None or y is None:
        raise UsageError(f"data has only one of x{suffix} and y{suffix}")
    return _numpy(x), _numpy(y)


def _dataset_arrays(dataset: torch.utils.data.Dataset) -> dict[str, np.ndarray]:
    """Every ``(input, target)`` of a map-style dataset, stacked."""
    try:
        pairs = [dataset[index] for index in range(len(dataset))]  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("a torch Dataset given as data must have a length and yield "
                        "(input, target) pairs") from None
    inputs = np.stack([_numpy(pair[0]) for pair in pairs])
    targets = np.stack([_numpy(pair[1]) for pair in pairs])
    return {"x": inputs, "y": targets}


def search(
    strategy: str = "evolution",
    data: Any = None,
    *,
    evaluate: Callable[[Candidate], Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_outputs: int | None = None,
    progress: bool = False,
    **options: Any,
) -> SearchResult:
    """Search a space for the best architecture, as ``pynas search STRATEGY`` does.

    Parameters
    ----------
    strategy : ``"random"``, ``"evolution"``, ``"pnas"``, ``"rl"`` or ``"darts"``.
    data : a built-in dataset name or a path (as ``--dataset``), in-memory data (see
        :func:`as_dataset`), or ``None`` for the default (digits; none with ``evaluate``).
    evaluate : your own evaluation, ``evaluate(candidate) -> score or dict of metrics``
        (see :class:`~pynas.evaluate.Candidate`), in place of the built-in trainer; it
        runs in the executor's workers (define it at module level for ``workers > 1``).
    input_shape, num_outputs : what to build networks for with ``evaluate`` and no data.
    progress : show a progress bar on stderr.
    **options : the command's options with underscores: ``budget``, ``space``, ``epochs``,
        ``seed``, ``out``, ``resume``, ``overwrite``, ``executor``, ``workers``, ``task``,
        ``target``, ``metric`` (the key of ``evaluate``'s dict that is the score),
        ``max_params`` and ``max_flops`` (numbers, or text with SI suffixes: ``"2M"``),
        ``max_latency_ms``, ``measure_latency``, ... (``pynas search STRATEGY --help``
        lists them). Candidates that break a ``max_`` limit are never trained; every
        trial's metrics hold its costs (``params``, ``flops``,
        ``peak_activation_bytes``, see :mod:`pynas.costs`). ``objectives`` (text as
        ``"val_acc,flops"`` or a list of names) searches for the Pareto front of
        several metrics (:attr:`SearchResult.pareto`).

    Returns
    -------
    SearchResult
        Also written to the run directory (``out``), which :func:`load` opens again.

    Raises
    ------
    ValueError
        Bad options or data (:class:`~pynas.errors.UsageError`), in one line.
    TypeError
        An option that ``pynas search STRATEGY`` does not have.
    """
    from pynas.cli import build_parser
    from pynas.search import cli as search_cli

    args = build_parser().parse_args(["search", strategy])
    for name, value in options.items():
        if name.startswith("_") or not hasattr(args, name) or name in ("command", "strategy"):
            known = sorted(key for key in vars(args) if not key.startswith("_")
                           and key not in ("command", "strategy", "version", "dataset"))
            raise TypeError(f"search() got an unknown option {name!r}; options of "
                            f"{strategy}: {', '.join(known)}")
        if name == "target" and value is not None:
            value = (value,) if isinstance(value, str) else tuple(value)
        setattr(args, name, value)
    if isinstance(data, (str, os.PathLike)):
        args.dataset = os.fspath(data)
    elif data is not None:
        args._data = as_dataset(data, args.task, args.valid_fraction, args.test_fraction,
                                args.split_seed, args.limit_train)
    if evaluate is not None:
        if strategy == "darts":
            raise UsageError("darts trains one supernet; it takes no evaluation function")
        args._evaluate = evaluate
        args._input_shape, args._num_outputs = input_shape, num_outputs
    module = search_cli.strategy_module(strategy)
    search_cli.prepare_inputs(args)
    run_dir = search_cli.prepare_run_directory(args)
    if not hasattr(module, "build"):  # darts: one supernet, not ask/tell
        from pynas.search.darts import DartsConfig
        from pynas.search.darts.search import search as darts_search

        darts_search(DartsConfig.from_args(args), run_dir, progress=progress,
                     resume=args.resume, data=search_cli.load_data(args))
    else:
        search_cli.search(args, run_dir, progress=progress)
        if hasattr(module, "after_search"):
            module.after_search(run_dir)
    return load(run_dir.path)
