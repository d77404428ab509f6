"""Score nb201 architectures with the official NATS-Bench API (topology search space).

Needs the ``nats_bench`` package (``pip install nats_bench``) and its benchmark files,
the folder ``NATS-tss-v1_0-3ffb9-simple`` (fast mode) or the file
``NATS-tss-v1_0-3ffb9.pickle.pbz2``, in ``$TORCH_HOME`` (default ``~/.torch``) or at a
given path. pynas does not depend on it: the CSV table of ``TableEvaluator`` holds the
main numbers without it.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.spaces.base import Arch, SearchSpace

BENCHMARK_NAME = "NATS-tss-v1_0-3ffb9"

#: NATS-Bench datasets that have a validation split (``cifar10`` trains on it)
DATASETS = ("cifar10-valid", "cifar100", "ImageNet16-120")

#: hyper-parameter settings: training epochs
EPOCH_SETTINGS = ("12", "200")

# NATS-Bench result key -> the name pynas reports it under
_REPORTED = {
    "valid-accuracy": "val_acc",
    "test-accuracy": "test_acc",
    "train-all-time": "seconds",
    "train-loss": "train_loss",
    "train-accuracy": "train_acc",
    "valid-loss": "val_loss",
    "test-loss": "test_loss",
}

# APIs created by this process, keyed by (path, fast_mode); never pickled.
_API_CACHE: dict[tuple[str, bool], Any] = {}


def _import_nats_bench() -> Any:
    try:
        return importlib.import_module("nats_bench")
    except ImportError:
        raise UsageError(
            "the NATS-Bench evaluator needs the nats_bench package: pip install nats_bench, "
            f"then put {BENCHMARK_NAME}-simple (from the NATS-Bench release) in $TORCH_HOME"
        ) from None


def default_benchmark_path(fast_mode: bool) -> Path:
    """Where ``nats_bench`` looks by default: ``$TORCH_HOME`` or ``~/.torch``."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".torch"))
    name = f"{BENCHMARK_NAME}-simple" if fast_mode else f"{BENCHMARK_NAME}.pickle.pbz2"
    return torch_home / name


class NATSEvaluator(Evaluator):
    """Look nb201 architectures up with the NATS-Bench API.

    Parameters
    ----------
    dataset : {"cifar10-valid", "cifar100", "ImageNet16-120"}
        The training setting; ``val_acc`` is its validation accuracy.
    path : path, optional
        The benchmark folder (fast mode) or file; default :func:`default_benchmark_path`.
    epochs : {"12", "200"}
        Which training schedule of the benchmark to read.
    fast_mode : bool
        Load each architecture's results on first use instead of all at start.
    """

    def __init__(
        self,
        dataset: str = "cifar10-valid",
        path: str | os.PathLike[str] | None = None,
        epochs: str = "200",
        fast_mode: bool = True,
    ) -> None:
        _import_nats_bench()
        if dataset not in DATASETS:
            raise UsageError(
                f"unknown NATS-Bench dataset {dataset!r}; known: {', '.join(DATASETS)}"
            )
        if str(epochs) not in EPOCH_SETTINGS:
            raise UsageError(f"NATS-Bench has {' or '.join(EPOCH_SETTINGS)} epochs, not {epochs!r}")
        benchmark = Path(path) if path is not None else default_benchmark_path(fast_mode)
        if not benchmark.exists():
            raise UsageError(
                f"NATS-Bench benchmark {benchmark} not found; download {BENCHMARK_NAME} "
                "from the NATS-Bench release and give its path or set $TORCH_HOME"
            )
        self.dataset = dataset
        self.path = os.fspath(benchmark)
        self.epochs = str(epochs)
        self.fast_mode = bool(fast_mode)

    def describe(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, **vars(self)}

    def _api(self) -> Any:
        key = (self.path, self.fast_mode)
        if key not in _API_CACHE:
            nats_bench = _import_nats_bench()
            _API_CACHE[key] = nats_bench.create(
                self.path, "tss", fast_mode=self.fast_mode, verbose=False
            )
        return _API_CACHE[key]

    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """The benchmark's results for ``arch``, averaged over the training seeds.

        Returns
        -------
        dict
            ``score`` and ``val_acc`` (the same), ``test_acc``, ``seconds`` (simulated time),
            ``train_loss``, ``train_acc``, ``val_loss``, ``test_loss`` where the
            benchmark has them, and ``flops`` (M), ``params`` (M), ``latency`` (s).
        """
        if space.name != "nb201":
            raise UsageError(f"NATS-Bench scores nb201 architectures, not {space.name!r} ones")
        api = self._api()
        arch_string = space.to_string(arch)
        index = api.query_index_by_arch(arch_string)
        if index < 0:
            raise UsageError(f"architecture {arch_string!r} is not in NATS-Bench {self.path}")
        info = api.get_more_info(index, self.dataset, hp=self.epochs, is_random=False)
        reported = {key: key for key in ("flops", "params", "latency")}
        costs = api.get_cost_info(index, self.dataset, hp=self.epochs)
        metrics = {
            name: float(values[key])
            for values, names in ((info, _REPORTED), (costs, reported))
            for key, name in names.items()
            if values.get(key) is not None
        }
        return {"score": metrics["val_acc"], **metrics}
