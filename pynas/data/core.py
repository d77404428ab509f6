"""The data contract: a dataset split three ways, its task, and how a batch is prepared.

Every source of data (the built-in datasets, the user's files, arrays and tensors from
Python) ends as a :class:`DatasetSplits`. Inputs stay as they came (images as uint8 when
they are uint8, so a dataset of a few GB stays a few GB) and are converted per batch by
:meth:`DatasetSplits.prepare`, with statistics from the training split only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pynas.errors import UsageError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

#: the score each task maximises (the search signal), as named in result.json
SCORE_NAMES = {CLASSIFICATION: "val_acc", REGRESSION: "val_r2"}

#: labels with at most this many distinct integer values are taken as classes
MAX_INFERRED_CLASSES = 100

#: default shares of a dataset held out when the user gives no split of their own
VALID_FRACTION = 0.2
TEST_FRACTION = 0.2

_STATISTICS_CHUNK = 4096  # examples per chunk when computing statistics (bounded memory)


@dataclass(frozen=True)
class Split:
    """One split: ``inputs`` and ``targets`` of the same length N.

    ``inputs``: (N, C, H, W) images (uint8 or float32) or (N, F) float32 features, as
    stored; :meth:`DatasetSplits.prepare` makes a normalised float32 batch of them.
    ``targets``: (N,) int64 class indices, or (N, T) float32 regression targets.
    """

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: Tensor | np.ndarray) -> Split:
        """The examples at ``index`` (a copy)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return Split(self.inputs[index], self.targets[index])


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset split three ways, with its task and normalisation.

    Attributes
    ----------
    name : what the data is (a built-in name, a path, or ``"arrays"``).
    task : ``"classification"`` or ``"regression"``.
    train, valid, test : the splits.
    num_outputs : classes, or regression targets.
    input_mean, input_std : training-split statistics in the inputs' own units, shaped to
        broadcast against one example: (C, 1, 1) for images, (F,) for features.
    target_mean, target_std : (T,) training-split statistics of regression targets;
        ``None`` for classification.
    output_names : class names (classification) or target names (regression).
    """

    name: str
    task: str
    train: Split
    valid: Split
    test: Split
    num_outputs: int
    input_mean: Tensor
    input_std: Tensor
    target_mean: Tensor | None = None
    target_std: Tensor | None = None
    output_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of an image or ``(F,)`` of a feature vector."""
        return tuple(self.train.inputs.shape[1:])

    @property
    def kind(self) -> str:
        """``"image"`` or ``"features"``."""
        return "image" if len(self.input_shape) == 3 else "features"

    @property
    def num_classes(self) -> int:
        """Classes of a classification task."""
        if self.task != CLASSIFICATION:
            raise ValueError(f"{self.name} is a {self.task} task: it has no classes")
        return self.num_outputs

    @property
    def score_name(self) -> str:
        """The validation score a search maximises on this data."""
        return SCORE_NAMES[self.task]

    def prepare(self, inputs: Tensor) -> Tensor:
        """A batch of stored inputs as normalised float32, on the inputs' device."""
        mean = self.input_mean.to(inputs.device)
        std = self.input_std.to(inputs.device)
        return (inputs.float() - mean) / std

    def to(self, device: torch.device | str) -> DatasetSplits:
        """The same dataset with every tensor on ``device``."""
        from dataclasses import replace

        def move(split: Split) -> Split:
            return Split(split.inputs.to(device), split.targets.to(device))

        return replace(self, train=move(self.train), valid=move(self.valid), test=move(self.test))

    def describe(self) -> dict[str, Any]:
        """What the data is, for ``result.json``."""
        return {
            "name": self.name,
            "task": self.task,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            "sizes": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)},
            "output_names": list(self.output_names),
        }


# ------------------------------------------------------------------------- checks


def infer_task(targets: np.ndarray) -> str:
    """Classification for one column of integer values (at most
    :data:`MAX_INFERRED_CLASSES` of them) or of strings; regression otherwise."""
    if targets.dtype.kind in "OUSb":
        return CLASSIFICATION
    if targets.ndim != 1 or targets.dtype.kind not in "iuf":
        return REGRESSION
    if targets.dtype.kind == "f" and not np.all(np.isfinite(targets)):
        return REGRESSION  # the checks below name the bad value
    if not np.all(np.mod(targets, 1) == 0):
        return REGRESSION
    return CLASSIFICATION if len(np.unique(targets)) <= MAX_INFERRED_CLASSES else REGRESSION


def _check_finite(name: str, what: str, values: np.ndarray) -> None:
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise UsageError(f"{name}: {what} of example {int(np.argmax(bad))} is NaN or infinite")


def _check_pair(name: str, part: str, inputs: np.ndarray, targets: np.ndarray) -> None:
    if len(inputs) != len(targets):
        raise UsageError(
            f"{name}: {part} has {len(inputs)} inputs but {len(targets)} targets"
        )
    if len(inputs) == 0:
        raise UsageError(f"{name}: {part} has no examples")
    if inputs.ndim not in (2, 3, 4):
        raise UsageError(
            f"{name}: {part} inputs have shape {inputs.shape}; expected (N, F) features, "
            "(N, H, W) or (N, C, H, W) images"
        )
    if inputs.dtype.kind not in "iufb":
        raise UsageError(f"{name}: {part} inputs are not numbers (dtype {inputs.dtype})")
    if targets.ndim not in (1, 2):
        raise UsageError(
            f"{name}: {part} targets have shape {targets.shape}; expected (N,) or (N, T)"
        )
    _check_finite(name, f"{part} input", inputs)


def _class_indices(name: str, parts: dict[str, np.ndarray], num_classes: int | None = None
                   ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Labels of every part mapped to 0..K-1 (sorted distinct values), and the names;
    labels already in ``range(num_classes)`` when that is given."""
    for part, labels in parts.items():
        if labels.ndim != 1:
            raise UsageError(f"{name}: classification needs one label per example; {part} "
                             f"targets have shape {labels.shape}")
        if labels.dtype.kind == "f":
            _check_finite(name, f"{part} label", labels)
            if not np.all(np.mod(labels, 1) == 0):
                row = int(np.argmax(np.mod(labels, 1) != 0))
                raise UsageError(f"{name}: {part} label of example {row} is {labels[row]!r}, "
                                 "not an integer (use --task regression for real values)")
        elif labels.dtype.kind not in "iubOUS":
            raise UsageError(f"{name}: {part} labels are not integers or names")
    if num_classes is not None:
        indices = {part: labels.astype(np.int64) for part, labels in parts.items()}
        if any(labels.min() < 0 or labels.max() >= num_classes for labels in indices.values()):
            raise UsageError(f"{name}: labels outside 0..{num_classes - 1}")
        return indices, tuple(str(value) for value in range(num_classes))
    as_text = any(labels.dtype.kind in "OUS" for labels in parts.values())
    converted = {part: labels.astype(str) if as_text else labels.astype(np.int64)
                 for part, labels in parts.items()}
    classes = np.unique(np.concatenate(list(converted.values())))
    if len(classes) < 2:
        raise UsageError(f"{name}: only one class ({classes[0]}); classification needs two "
                         "or more")
    indices = {part: np.searchsorted(classes, labels).astype(np.int64)
               for part, labels in converted.items()}
    return indices, tuple(str(value) for value in classes)


def _regression_targets(name: str, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    converted = {}
    for part, targets in parts.items():
        if targets.dtype.kind not in "iufb":
            raise UsageError(f"{name}: {part} targets are not numbers (dtype {targets.dtype}); "
                             "use --task classification for labels")
        values = targets.astype(np.float32).reshape(len(targets), -1)
        _check_finite(name, f"{part} target", values)
        converted[part] = values
    widths = {values.shape[1] for values in converted.values()}
    if len(widths) != 1:
        raise UsageError(f"{name}: the splits have different numbers of targets {sorted(widths)}")
    return converted


# ------------------------------------------------------------------------ splitting


def seeded_split(
    count: int,
    fractions: Sequence[float],
    seed: int,
    labels: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Indices of ``len(fractions) + 1`` parts of ``range(count)``: part i takes
    ``fractions[i]`` of the examples and the last part the rest; stratified by ``labels``
    (each class shared out in proportion) when given. Fixed by ``seed``; each part sorted.
    """
    if sum(fractions) >= 1 or any(f < 0 for f in fractions):
        raise UsageError(f"split fractions {list(fractions)} must be >= 0 and sum below 1")
    rng = np.random.default_rng(seed)
    groups = [np.arange(count)] if labels is None else [
        np.flatnonzero(labels == value) for value in np.unique(labels)]
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for group in groups:
        group = rng.permutation(group)
        start = 0
        for part, fraction in enumerate(fractions):
            size = int(round(fraction * len(group)))
            parts[part].append(group[start:start + size])
            start += size
        parts[-1].append(group[start:])
    return [np.sort(np.concatenate(part)) for part in parts]


def _statistics(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per channel (images) or per feature, in chunks so that
    uint8 images are never converted all at once."""
    axes = (0, 2, 3) if inputs.ndim == 4 else (0,)
    total = total_squares = 0.0
    for start in range(0, len(inputs), _STATISTICS_CHUNK):
        chunk = np.asarray(inputs[start:start + _STATISTICS_CHUNK], dtype=np.float64)
        total = total + chunk.sum(axis=axes)
        total_squares = total_squares + np.square(chunk).sum(axis=axes)
    count = len(inputs) * (int(np.prod(inputs.shape[2:])) if inputs.ndim == 4 else 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - mean**2, 0.0))
    std = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # constants stay finite
    shape = (-1, 1, 1) if inputs.ndim == 4 else (-1,)
    return mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32)


def _as_input_tensor(inputs: np.ndarray) -> Tensor:
    if inputs.dtype == np.uint8:
        # a read-only buffer (a file read with np.frombuffer) is copied: torch needs to own it
        return torch.from_numpy(np.array(inputs, copy=not inputs.flags.writeable, order="C"))
    return torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))


def from_arrays(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    task: str | None = None,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    split_seed: int = 0,
    limit_train: int | None = None,
    output_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> DatasetSplits:
    """Check arrays, split what the user did not, and make a :class:`DatasetSplits`.

    Parameters
    ----------
    name : names the data in errors and in ``result.json``.
    train : ``(inputs, targets)``: inputs (N, F) features, (N, H, W) or (N, C, H, W)
        images; targets (N,) labels or (N,) / (N, T) regression targets.
    valid, test : the user's own splits; those absent are held out of ``train`` (test
        first, then validation), stratified by class for classification.
    task : ``"classification"`` or ``"regression"``; inferred from ``train``'s targets
        when ``None`` (see :func:`infer_task`).
    valid_fraction, test_fraction : shares of ``train`` held out when a split is absent.
    split_seed : fixes the held-out examples.
    limit_train : keep a fixed subset of this many training examples.
    output_names : names of the targets (regression) or classes (classification; by
        default the distinct label values).
    num_classes : for labels that are already class indices ``0..num_classes-1`` (the
        built-in datasets): kept as they are, even where a class has no example.

    Raises
    ------
    UsageError
        A ``ValueError`` naming the part and example: mismatched lengths, empty parts,
        NaN or infinite values, non-integer labels, a single class, bad shapes.
    """
    given = {"train": train, "valid": valid, "test": test}
    arrays = {}
    for part, pair in given.items():
        if pair is None:
            continue
        inputs, targets = (np.asarray(array) for array in pair)
        if inputs.ndim == 3:  # (N, H, W) images: one channel
            inputs = inputs[:, None]
        _check_pair(name, part, inputs, targets)
        arrays[part] = (inputs, targets)
    shapes = {inputs.shape[1:] for inputs, _ in arrays.values()}
    if len(shapes) != 1:
        raise UsageError(f"{name}: the splits have different input shapes {sorted(shapes)}")
    if task is None:
        task = infer_task(arrays["train"][1])
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    targets_of = {part: targets for part, (_, targets) in arrays.items()}
    if task == CLASSIFICATION:
        targets_of, class_names = _class_indices(name, targets_of, num_classes)
        names = tuple(output_names) if output_names else class_names
    else:
        targets_of = _regression_targets(name, targets_of)
        width = next(iter(targets_of.values())).shape[1]
        names = tuple(output_names) if output_names else tuple(
            f"target{index}" for index in range(width))
    arrays = {part: (inputs, targets_of[part]) for part, (inputs, _) in arrays.items()}

    missing = [part for part in ("test", "valid") if part not in arrays]
    if missing:
        fractions = [test_fraction if part == "test" else valid_fraction for part in missing]
        inputs, targets = arrays["train"]
        held = seeded_split(len(targets), fractions, split_seed,
                            targets if task == CLASSIFICATION else None)
        for part, index in zip(missing, held[:-1]):
            arrays[part] = (inputs[index], targets[index])
        arrays["train"] = (inputs[held[-1]], targets[held[-1]])
        for part in ("train", *missing):
            if len(arrays[part][1]) == 0:
                raise UsageError(f"{name}: too few examples ({len(targets)}) to hold out a "
                                 f"{part} split; give more data or your own splits")
    if limit_train is not None:
        if isinstance(limit_train, bool) or not isinstance(limit_train, int) or limit_train < 1:
            raise UsageError(f"limit_train must be a positive integer, got {limit_train!r}")
        inputs, targets = arrays["train"]
        if limit_train < len(targets):
            keep = np.random.default_rng(split_seed).permutation(len(targets))[:limit_train]
            keep = np.sort(keep)
            arrays["train"] = (inputs[keep], targets[keep])

    input_mean, input_std = _statistics(arrays["train"][0])
    target_mean = target_std = None
    if task == REGRESSION:
        target_mean, target_std = (torch.from_numpy(s) for s in _statistics(arrays["train"][1]))
    splits = {part: Split(_as_input_tensor(inputs), torch.from_numpy(targets))
              for part, (inputs, targets) in arrays.items()}
    return DatasetSplits(
        name=name,
        task=task,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        num_outputs=len(names) if task == CLASSIFICATION else splits["train"].targets.shape[1],
        input_mean=torch.from_numpy(input_mean),
        input_std=torch.from_numpy(input_std),
        target_mean=target_mean,
        target_std=target_std,
        output_names=names,
    )
