"""Data: the built-in datasets, the user's files and arrays, as one contract.

:func:`load_dataset` takes a built-in name (:data:`DATASETS`) or a path (a folder of
images in class subfolders, an ``.npz`` / ``.pt`` file of arrays, a CSV table) and
returns a :class:`DatasetSplits`; :class:`DataSpec` is the small, picklable description
of such a load that runs and workers carry, recorded in ``config.json``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pynas.data.builtin import DATASETS, DEBIAN_FASHION_MNIST, default_data_dir, ensure_files
from pynas.data.builtin import load_builtin as _load_builtin
from pynas.data.core import (
    CLASSIFICATION,
    REGRESSION,
    SCORE_NAMES,
    TASKS,
    TEST_FRACTION,
    VALID_FRACTION,
    DatasetSplits,
    Split,
    from_arrays,
    infer_task,
    seeded_split,
)
from pynas.errors import UsageError


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset comes from and how it is split: enough to load it again anywhere.

    Parameters
    ----------
    dataset : a built-in name (:data:`DATASETS`) or a path to the user's data.
    data_dir : folder of a built-in dataset's files.
    target : CSV column(s) to predict (several for multi-target regression).
    task : ``"classification"`` or ``"regression"``; inferred from the targets when None.
    image_size : ``(height, width)`` every image of a folder is resized to; default: the
        most common size in the folder.
    valid_fraction, test_fraction : shares held out of the user's data when it has no
        split of its own (stratified for classification).
    split_seed : fixes those held-out examples (and the ``limit_train`` subset).
    limit_train : train on a fixed subset of this many examples.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    target: tuple[str, ...] | None = None
    task: str | None = None
    image_size: tuple[int, int] | None = None
    valid_fraction: float = VALID_FRACTION
    test_fraction: float = TEST_FRACTION
    split_seed: int = 0
    limit_train: int | None = None

    @property
    def is_builtin(self) -> bool:
        return self.dataset in DATASETS

    def check(self, download: bool = True) -> None:
        """Cheap checks (files exist, options fit the source) without reading the data;
        downloads a built-in dataset's missing files when ``download``."""
        if self.task is not None and self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; known tasks: {', '.join(TASKS)}")
        if self.is_builtin:
            for option in ("target", "image_size"):
                if getattr(self, option) is not None:
                    raise UsageError(
                        f"--{option.replace('_', '-')} applies to your own data, "
                        f"not to the built-in {self.dataset}"
                    )
            if self.task == REGRESSION:
                raise UsageError(f"{self.dataset} is a classification dataset")
            ensure_files(self.dataset, self.data_dir, download)
            return
        path = Path(self.dataset)
        if not path.exists():
            raise UsageError(
                f"unknown dataset {self.dataset!r}: neither a built-in dataset "
                f"({', '.join(DATASETS)}) nor an existing file or folder"
            )

    def load(self) -> DatasetSplits:
        """Read and split the data (see :func:`load_dataset`)."""
        return load_dataset(**asdict(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, paths absolute (a run may be resumed from another folder)."""
        values = asdict(self)
        if not self.is_builtin:
            values["dataset"] = str(Path(self.dataset).resolve())
        if self.data_dir is not None:
            values["data_dir"] = str(Path(self.data_dir).resolve())
        for key in ("target", "image_size"):
            if values[key] is not None:
                values[key] = list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSpec:
        values = dict(values)
        for key in ("target", "image_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def load_dataset(
    dataset: str | os.PathLike[str] = "digits",
    data_dir: str | os.PathLike[str] | None = None,
    limit_train: int | None = None,
    download: bool = True,
    *,
    target: str | tuple[str, ...] | None = None,
    task: str | None = None,
    image_size: tuple[int, int] | None = None,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    split_seed: int = 0,
) -> DatasetSplits:
    """Load a built-in dataset or the user's data, split three ways.

    Parameters
    ----------
    dataset : a name in :data:`DATASETS` (fixed splits, see
        :func:`pynas.data.builtin.load_builtin`) or a path: a folder of images in class
        subfolders (optionally under ``train/``, ``valid/`` or ``val/``, ``test/``), an
        ``.npz`` or ``.pt`` file holding ``x`` and ``y`` (optionally ``x_valid``,
        ``y_valid``, ``x_test``, ``y_test``), or a ``.csv`` table with ``target``.
    Others : see :class:`DataSpec`.

    Raises
    ------
    UsageError
        A ``ValueError`` whose one line names the file, column or example at fault.
    """
    name = os.fspath(dataset)
    if name in DATASETS:
        DataSpec(name, None if data_dir is None else os.fspath(data_dir), task=task,
                 target=None if target is None else tuple(target),
                 image_size=image_size).check(download)
        return _load_builtin(name, data_dir, limit_train=limit_train, download=download)
    from pynas.data.files import load_path

    DataSpec(name).check()
    if isinstance(target, str):
        target = (target,)
    return load_path(
        Path(name),
        target=target,
        task=task,
        image_size=image_size,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        limit_train=limit_train,
    )


__all__ = [
    "CLASSIFICATION",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "REGRESSION",
    "SCORE_NAMES",
    "TASKS",
    "DataSpec",
    "DatasetSplits",
    "Split",
    "default_data_dir",
    "ensure_files",
    "from_arrays",
    "infer_task",
    "load_dataset",
    "seeded_split",
]
