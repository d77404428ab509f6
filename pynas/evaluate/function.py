"""Score architectures with the user's own function: their model wrapper, training loop
and metric, in place of the built-in trainer."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pynas.data import DatasetSplits, DataSpec
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.evaluate.train import cached_dataset
from pynas.spaces.base import Arch, SearchSpace


@dataclass
class Candidate:
    """What a user's evaluation function is given: one architecture to score.

    Attributes
    ----------
    arch : the decision tuple.
    arch_string : its canonical string.
    genotype : its JSON description.
    space : the search space.
    data : the search's data (``None`` when the search was given none).
    input_shape, num_outputs : what :meth:`build` builds for.
    seed : the search's seed (:meth:`build` seeds the weights with it).
    device : the search's ``device`` option.
    """

    arch: Arch
    arch_string: str
    genotype: dict[str, Any]
    space: SearchSpace
    data: DatasetSplits | None
    input_shape: tuple[int, ...]
    num_outputs: int
    seed: int
    device: str

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture (inputs normalised as
        ``data.prepare`` does; outputs: logits, or standardised targets)."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return self.space.build(self.arch, self.input_shape, self.num_outputs)


class FunctionEvaluator(Evaluator):
    """Call ``function(candidate)`` for each architecture.

    Parameters
    ----------
    function : ``Candidate -> float | dict``. A number is the score (maximised); a dict
        holds metrics, among them ``metric`` (default: ``"score"``, or its only entry).
        A function that raises fails its trial; the search goes on.
    data : a :class:`~pynas.data.DataSpec` (loaded once per process), data already
        loaded, or ``None`` (then ``input_shape`` and ``num_outputs`` are needed).
    input_shape, num_outputs : what candidates are built for when there is no data.
    metric : the key of a returned dict that is the score.
    seed, device : handed to each candidate.

    Notes
    -----
    The process pool and Ray pickle the function: define it at module level (a lambda
    or a nested function runs only with the serial executor).
    """

    def __init__(
        self,
        function: Callable[[Candidate], Any],
        data: DataSpec | DatasetSplits | None = None,
        input_shape: tuple[int, ...] | None = None,
        num_outputs: int | None = None,
        metric: str | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if not callable(function):
            raise TypeError(f"evaluate must be callable, got {type(function).__name__}")
        if data is None and (input_shape is None or num_outputs is None):
            raise UsageError("without data, your evaluation needs input_shape and num_outputs "
                             "to say what networks to build")
        self.function, self.data, self.metric = function, data, metric
        self.seed, self.device = seed, device
        self._input_shape = None if input_shape is None else tuple(input_shape)
        self._num_outputs = num_outputs

    def dataset(self) -> DatasetSplits | None:
        return cached_dataset(self.data) if isinstance(self.data, DataSpec) else self.data

    @property
    def score_name(self) -> str:
        return self.metric or "score"

    def describe(self) -> dict[str, Any]:
        data = self.dataset()
        return {
            "evaluator": type(self).__name__,
            "function": getattr(self.function, "__qualname__", repr(self.function)),
            "metric": self.score_name,
            **(self.data.to_dict() if isinstance(self.data, DataSpec) else {}),
            "data": data.describe() if data is not None else {
                "input_shape": list(self._input_shape), "num_outputs": self._num_outputs},
        }

    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        data = self.dataset()
        candidate = Candidate(
            arch=arch,
            arch_string=space.to_string(arch),
            genotype=space.to_genotype(arch),
            space=space,
            data=data,
            input_shape=data.input_shape if data is not None else self._input_shape,
            num_outputs=data.num_outputs if data is not None else self._num_outputs,
            seed=self.seed,
            device=self.device,
        )
        started = time.perf_counter()
        returned = self.function(candidate)
        seconds = time.perf_counter() - started
        if isinstance(returned, dict):
            metrics = dict(returned)
            key = self.metric or ("score" if "score" in metrics or len(metrics) != 1
                                  else next(iter(metrics)))
            if key not in metrics:
                raise ValueError(f"your evaluation returned {sorted(metrics)}, without the "
                                 f"score {key!r}")
            metrics["score"] = metrics[key]
        else:
            metrics = {"score": returned}
        score = metrics["score"]
        if isinstance(score, torch.Tensor) and score.numel() == 1:
            metrics["score"] = score = score.item()
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(
                score):
            raise ValueError(f"your evaluation returned the score {score!r}; expected a "
                             "finite number")
        metrics.setdefault("seconds", seconds)
        return metrics
