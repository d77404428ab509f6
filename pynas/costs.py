"""What an architecture costs, measured before it is trained, and the limits a search sets.

Four measures of the network a space builds for one input shape and number of outputs:

- ``params``: its trainable parameters (:meth:`SearchSpace.count_parameters`);
- ``flops``: the multiply-adds of its convolutions and linear layers for one example
  (:meth:`SearchSpace.count_flops`, see :mod:`pynas.spaces.flops`);
- ``peak_activation_bytes``: the largest total size of the tensors alive at the same
  time during one forward pass of one example (:func:`peak_activation_bytes`);
- ``latency_ms`` and ``batch_latency_ms``: the median wall time of a forward pass, of one
  example and of a training batch, on the search's device (:func:`latency`), with the
  torch threads it ran on (``latency_threads``); measured only when asked for, since
  each costs at least a quarter of a second of forward passes.

Every measure is cached in this process per space (its name and settings), architecture,
input shape and number of outputs, and latency also per device, batch size and thread
count, so an architecture that a strategy proposes again costs nothing the second time.

A search's :class:`CostModel` checks its :class:`Constraints` (``--max-params``,
``--max-flops``, ``--max-latency-ms``) before a candidate is trained, and adds the measures
to the metrics of every trial (see :mod:`pynas.search.loop`).
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pynas.errors import UsageError
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.nb201 import CIFAR10_CLASSES, CIFAR10_SHAPE

#: forward passes run and thrown away before latency is timed (allocations, caches)
LATENCY_WARMUP = 3
#: timed forward passes whose median is the latency: at least this many...
LATENCY_REPEATS = 10
#: ...and at least this many seconds of them (on a shared machine a pass of a few
#: milliseconds varies by a third from one to the next: ten are too few)...
LATENCY_MIN_SECONDS = 0.25
#: ...but no more passes than this
LATENCY_MAX_REPEATS = 100

#: SI suffixes of counts: ``500k``, ``2M``, ``1.5G``
_SI_MULTIPLIERS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}

# measure -> value, keyed by what it depends on (see the module docstring)
_CACHE: dict[tuple, Any] = {}


def parse_count(value: Any, option: str) -> int | None:
    """A positive count given as a number or as text with an SI suffix (``500k``, ``2M``,
    ``1.5G``; ``k``/``K``, ``M``, ``G``, ``T``); ``None`` stays ``None``.

    Raises
    ------
    UsageError
        Naming ``option``, for an unknown suffix, text that is not a number, or a count
        below 1.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        number, suffix = (text[:-1], text[-1]) if text[-1:].isalpha() else (text, "")
        try:
            count = float(number)
        except ValueError:
            raise UsageError(f"{option} expects a count such as 500k, 2M or 1.5G, got "
                             f"{value!r}") from None
        if suffix not in _SI_MULTIPLIERS:
            raise UsageError(f"{option} {value}: unknown suffix {suffix!r}; use k, M, G or T "
                             "(500k, 2M, 1.5G)")
        count *= _SI_MULTIPLIERS[suffix]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        count = value
    else:
        raise UsageError(f"{option} expects a count such as 500k, 2M or 1.5G, got {value!r}")
    if not math.isfinite(count) or round(count) < 1:
        raise UsageError(f"{option} must be a positive count, got {value!r}")
    return round(count)


def parse_milliseconds(value: Any, option: str) -> float | None:
    """A positive, finite number of milliseconds (a number or its text); ``None`` stays.

    Raises
    ------
    UsageError
        Naming ``option``, for anything else.
    """
    if value is None:
        return None
    try:
        milliseconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        milliseconds = math.nan
    if not math.isfinite(milliseconds) or milliseconds <= 0:
        raise UsageError(f"{option} must be a positive number of milliseconds, got {value!r}")
    return milliseconds


def space_key(space: SearchSpace) -> tuple:
    """What identifies a space's networks: its name and its public settings (the instance
    attributes its constructor sets, such as ``channels`` and ``cells_per_stage``)."""
    settings = sorted((name, repr(value)) for name, value in vars(space).items()
                      if not name.startswith("_"))
    return (space.name, type(space).__qualname__, tuple(settings))


def _cached(kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
    key = (kind, *key)
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def _network_key(space: SearchSpace, arch: Arch, input_shape: Sequence[int],
                 num_outputs: int) -> tuple:
    return space_key(space), space.validate(arch), tuple(input_shape), num_outputs


def parameters(space: SearchSpace, arch: Arch, input_shape: Sequence[int],
               num_outputs: int) -> int:
    """Trainable parameters of ``arch``'s network (cached)."""
    key = _network_key(space, arch, input_shape, num_outputs)
    return _cached("params", key, lambda: space.count_parameters(*key[1:]))


def multiply_adds(space: SearchSpace, arch: Arch, input_shape: Sequence[int],
                  num_outputs: int) -> int:
    """Multiply-adds of one example through ``arch``'s network (cached)."""
    key = _network_key(space, arch, input_shape, num_outputs)
    return _cached("flops", key, lambda: space.count_flops(*key[1:]))


def peak_activation_bytes(space: SearchSpace, arch: Arch, input_shape: Sequence[int],
                          num_outputs: int) -> int:
    """The largest total size, in bytes, of the tensors alive at the same time during one
    forward pass of ``arch``'s network on one example (cached).

    The network runs as PyTorch runs it eagerly: float32, evaluation mode, no gradients,
    batch 1. Every tensor an operator creates counts from its creation until it is
    freed, the input included; a view or an in-place result shares the memory of its
    source and does not count again. Parameters and buffers are not counted, nor is
    scratch memory that an operator's kernel allocates inside itself. A chain that frees
    each tensor once the next one is made peaks at its input plus its largest pair of
    consecutive tensors; a cell that keeps several nodes alive peaks higher.
    """
    key = _network_key(space, arch, input_shape, num_outputs)

    def compute() -> int:
        model = space.build(*key[1:]).eval()
        tracker = _LiveTensors()
        with torch.no_grad(), tracker:
            model(torch.zeros(1, *key[2]))
        return tracker.peak_bytes

    return _cached("peak_activation_bytes", key, compute)


class _LiveTensors(TorchDispatchMode):
    """Adds up the bytes of the tensors that operators create and are still alive.

    Memory is counted per storage, so that views share the count of their source: a
    storage counts while any tensor on it that passed through this mode is alive.
    Tensors on storages this mode never saw created (parameters, buffers) are ignored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = self.peak_bytes = 0
        self._tensors_on: dict[int, int] = {}  # storage address -> live tensors on it

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        outputs = func(*args, **(kwargs or {}))
        inputs = {id(tensor) for tensor in _tensors(args)}
        for tensor in _tensors(outputs):
            if id(tensor) not in inputs:  # an in-place result is its input
                self._track(tensor, created=not func.is_view)
        return outputs

    def _track(self, tensor: torch.Tensor, created: bool) -> None:
        storage = tensor.untyped_storage()
        address, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or (address not in self._tensors_on and not created):
            return  # empty, or a view of a parameter or of the input's caller
        if address not in self._tensors_on:
            self._tensors_on[address] = 0
            self.live_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._tensors_on[address] += 1
        weakref.finalize(tensor, self._release, address, size)

    def _release(self, address: int, size: int) -> None:
        self._tensors_on[address] -= 1
        if self._tensors_on[address] == 0:
            del self._tensors_on[address]
            self.live_bytes -= size


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    """The tensors among an operator's arguments or results (one level of lists)."""
    for value in values if isinstance(values, (tuple, list)) else (values,):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (item for item in value if isinstance(item, torch.Tensor))


def latency(space: SearchSpace, arch: Arch, input_shape: Sequence[int], num_outputs: int,
            batch_size: int = 1, device: str | torch.device = "cpu") -> float:
    """Milliseconds of one forward pass of ``arch``'s network on ``batch_size`` examples on
    ``device``: the median of timed passes after :data:`LATENCY_WARMUP` untimed ones,
    :data:`LATENCY_REPEATS` passes or more, until they add up to
    :data:`LATENCY_MIN_SECONDS` (at most :data:`LATENCY_MAX_REPEATS`), in evaluation
    mode without gradients, on the torch threads of this process (cached per thread
    count), with denormal numbers flushed to zero on the CPU: an untrained network fed
    random input can compute on denormals, which are many times slower on x86 and made
    the same network measure 6 ms or 12 ms depending on its random weights."""
    device = torch.device(device)
    key = (*_network_key(space, arch, input_shape, num_outputs), batch_size, str(device),
           torch.get_num_threads())

    def compute() -> float:
        model = space.build(*key[1:4]).to(device).eval()
        inputs = torch.randn(batch_size, *key[2], device=device)
        seconds: list[float] = []
        with torch.inference_mode(), _denormals_flushed():
            for _ in range(LATENCY_WARMUP):
                model(inputs)
            while len(seconds) < LATENCY_MAX_REPEATS and (
                    len(seconds) < LATENCY_REPEATS or sum(seconds) < LATENCY_MIN_SECONDS):
                _synchronize(device)
                started = time.perf_counter()
                model(inputs)
                _synchronize(device)
                seconds.append(time.perf_counter() - started)
        return 1000 * statistics.median(seconds)

    return _cached("latency", key, compute)


@contextlib.contextmanager
def _denormals_flushed() -> Iterator[None]:
    """Within the block, CPU arithmetic flushes denormal floats to zero (where the CPU
    can); the setting the process had is restored after it."""
    # torch has no getter: a denormal times one is zero exactly when flushing is on
    was_on = float(torch.tensor([1e-39]) * 1.0) == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(space: SearchSpace, arch: Arch, input_shape: Sequence[int] = CIFAR10_SHAPE,
            num_outputs: int = CIFAR10_CLASSES, *, latency_batch_size: int | None = None,
            device: str | torch.device = "cpu",
            peak_activation: bool = True) -> dict[str, int | float]:
    """Every cost measure of ``arch`` (see the module docstring), cached.

    Parameters
    ----------
    space, arch : the architecture.
    input_shape : one example's shape without the batch dimension, ``(C, H, W)`` or
        ``(F,)``; default CIFAR-10's, the setting of NAS-Bench-201.
    num_outputs : outputs of the last layer (classes or regression targets).
    latency_batch_size : measure latency too, of one example (``latency_ms``) and of
        this many (``batch_latency_ms``, e.g. the training batch); ``None`` skips it.
    device : where latency is measured.
    peak_activation : measure ``peak_activation_bytes`` (a forward pass through a
        tracker, several times the cost of the counts).

    Returns
    -------
    dict
        ``params``, ``flops`` (multiply-adds), ``peak_activation_bytes``; with latency
        also ``latency_ms``, ``batch_latency_ms``, ``latency_batch_size`` and
        ``latency_threads``.
    """
    space.check_input(input_shape)
    network = (space, arch, input_shape, num_outputs)
    measures: dict[str, int | float] = {
        "params": parameters(*network),
        "flops": multiply_adds(*network),
    }
    if peak_activation:
        measures["peak_activation_bytes"] = peak_activation_bytes(*network)
    if latency_batch_size is not None:
        measures.update(
            latency_ms=latency(*network, 1, device),
            batch_latency_ms=latency(*network, latency_batch_size, device),
            latency_batch_size=latency_batch_size,
            latency_threads=torch.get_num_threads(),
        )
    return measures


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet to be trained; ``None`` sets none.

    Attributes
    ----------
    max_params : trainable parameters.
    max_flops : multiply-adds of one example.
    max_latency_ms : milliseconds of a forward pass of one example (``latency_ms``).
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    def given(self) -> dict[str, int | float]:
        """The limits that are set, by name."""
        return {name: limit for name, limit in vars(self).items() if limit is not None}

    def describe(self) -> str:
        """The limits as options: ``--max-params 2000000 --max-latency-ms 5.0``."""
        return " ".join(f"--{name.replace('_', '-')} {limit}"
                        for name, limit in self.given().items())


class CostModel:
    """What a search measures of its candidates, and the constraints they must meet.

    Parameters
    ----------
    space : the searched space.
    input_shape, num_outputs : the networks that are measured: those the search trains
        (its data's shape and outputs) or, on a benchmark table, the table's.
    constraints : the limits of a feasible candidate.
    latency_batch_size : record latency too (see :func:`measure`); without it, a latency
        limit still measures the latency of one example, to check it.
    device : where latency is measured: the search's device.
    peak_activation : record ``peak_activation_bytes`` (searches on a benchmark table
        leave it out unless an objective names it: it costs more than the look-up).
    """

    def __init__(self, space: SearchSpace, input_shape: Sequence[int], num_outputs: int,
                 constraints: Constraints = Constraints(), latency_batch_size: int | None = None,
                 device: str = "cpu", peak_activation: bool = True) -> None:
        space.check_input(input_shape)
        self.space, self.input_shape, self.num_outputs = space, tuple(input_shape), num_outputs
        self.constraints, self.latency_batch_size, self.device = (
            constraints, latency_batch_size, device)
        self.peak_activation = peak_activation

    def feasible(self, arch: Arch) -> bool:
        """Whether ``arch`` meets every constraint. Measures only what the constraints
        need, latency (the slowest to measure) last."""
        network = (self.space, arch, self.input_shape, self.num_outputs)
        limits = self.constraints
        return all(limit is None or measured() <= limit for limit, measured in (
            (limits.max_params, lambda: parameters(*network)),
            (limits.max_flops, lambda: multiply_adds(*network)),
            (limits.max_latency_ms, lambda: latency(*network, 1, self.device)),
        ))

    def measure_one(self, arch: Arch, name: str) -> int | float:
        """One measure of ``arch`` by its name in :func:`measure`'s result, measuring
        nothing else (what a strategy that ranks untrained candidates by cost needs)."""
        network = (self.space, arch, self.input_shape, self.num_outputs)
        measures: dict[str, Callable[[], int | float]] = {
            "params": lambda: parameters(*network),
            "flops": lambda: multiply_adds(*network),
            "peak_activation_bytes": lambda: peak_activation_bytes(*network),
            "latency_ms": lambda: latency(*network, 1, self.device),
            "batch_latency_ms": lambda: latency(*network, self.latency_batch_size or 1,
                                                self.device),
        }
        if name not in measures:
            raise UsageError(f"unknown cost measure {name!r}; known: {', '.join(measures)}")
        return measures[name]()

    def measure(self, arch: Arch) -> dict[str, int | float]:
        """Every measure recorded for a trial of ``arch`` (see :func:`measure`)."""
        return measure(self.space, arch, self.input_shape, self.num_outputs,
                       latency_batch_size=self.latency_batch_size, device=self.device,
                       peak_activation=self.peak_activation)

    def describe(self) -> dict[str, Any]:
        """What is measured and limited, for ``result.json``."""
        described: dict[str, Any] = {
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            "constraints": self.constraints.given(),
        }
        if self.latency_batch_size is not None:
            described.update(device=str(self.device), latency_batch_size=self.latency_batch_size,
                             latency_warmup=LATENCY_WARMUP, latency_repeats=LATENCY_REPEATS,
                             latency_min_seconds=LATENCY_MIN_SECONDS)
        return described
