"""The built-in datasets, with fixed train / validation / test splits.

``digits`` (the 8x8 handwritten digits that ship with scikit-learn) needs no file and
no network, so every command works out of the box. ``mnist`` and ``fashion-mnist`` are
read from their IDX files, ``cifar10`` and ``cifar100`` from their python batches, in
``data_dir``; missing files are downloaded (and checked against their published MD5)
when the machine is online.

The splits never depend on a seed given by the user: every search and every retraining
sees the same validation and test examples, so their scores can be compared.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pynas.data.core import CLASSIFICATION, DatasetSplits, from_arrays
from pynas.errors import UsageError

#: the names :func:`load_dataset` knows
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")

#: where Debian's ``dataset-fashion-mnist`` package installs the IDX files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: share of the official training set held out for validation (its last examples)
VALIDATION_FRACTION = 0.1

_DOWNLOAD_TIMEOUT_SECONDS = 30
_SUBSAMPLE_SEED = 0


class _Arrays(NamedTuple):
    """Images (N, C, H, W) and labels (N,) of three splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    valid_images: np.ndarray
    valid_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class _OfficialSplit(NamedTuple):
    """A dataset as published: images (N, C, H, W) uint8 and labels (N,) of two splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class _RemoteFile:
    """A file of a dataset and where it can be downloaded."""

    name: str
    urls: tuple[str, ...]
    md5: str


def default_data_dir() -> Path:
    """``$PYNAS_DATA_DIR``, or ``~/.cache/pynas/data``: where downloads go by default."""
    configured = os.environ.get("PYNAS_DATA_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "pynas" / "data"


# ---------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(remote: _RemoteFile, folder: Path) -> None:
    """Fetch ``remote`` into ``folder``, trying each mirror; raises OSError on failure.

    The file is written under a temporary name and renamed only once its MD5 matches,
    so an interrupted or corrupted download never looks like a good file.
    """
    partial = folder / (remote.name + ".part")
    failures = []
    for url in remote.urls:
        try:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_SECONDS) as response:
                folder.mkdir(parents=True, exist_ok=True)
                with open(partial, "wb") as stream:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        stream.write(block)
            if _md5(partial) != remote.md5:
                raise OSError(f"MD5 of {url} is not {remote.md5}")
            partial.replace(folder / remote.name)
            return
        except OSError as error:  # URLError, timeouts and disk errors are all OSErrors
            partial.unlink(missing_ok=True)
            failures.append(f"{url}: {error}")
    raise OSError("; ".join(failures))


def _fetch_missing(
    dataset: str,
    folder: Path,
    missing: Sequence[str],
    remotes: Sequence[_RemoteFile],
    download: bool,
) -> None:
    """Download ``remotes`` into ``folder``, or raise the one-line error naming ``missing``."""
    reason = "downloading is off"
    if download:
        try:
            for remote in remotes:
                _download(remote, folder)
            return
        except OSError as error:
            reason = f"download failed: {error}"
    reason = " ".join(reason.split())  # the message must stay on one line
    raise UsageError(
        f"{dataset}: missing {', '.join(missing)}; put these files in {folder} "
        f"(or give --data-dir a folder that has them); {reason}"
    )


# ------------------------------------------------------------------- MNIST-like (IDX)

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

#: the four IDX files, without the optional ``.gz``, in the order they are read
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: MD5 of the published ``.gz`` files, in ``_IDX_NAMES`` order
_IDX_MD5 = {
    "mnist": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    "fashion-mnist": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
}
_IDX_MIRRORS = {"mnist": _MNIST_MIRRORS, "fashion-mnist": _FASHION_MNIST_MIRRORS}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally gzipped) as an array of its shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    # Header: two zero bytes, the type code (0x08 = unsigned byte), the number of
    # dimensions, then each dimension as a big-endian 32-bit integer.
    if len(content) < 4 or content[:3] != b"\x00\x00\x08":
        raise UsageError(f"{path} is not an IDX file of unsigned bytes")
    dimensions = content[3]
    header_size = 4 + 4 * dimensions
    shape = struct.unpack(f">{dimensions}I", content[4:header_size])
    if len(content) - header_size != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: its header announces shape {shape}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _find_idx_files(folder: Path) -> list[Path | None]:
    """Each IDX file in ``folder``, plain or gzipped; ``None`` where neither exists."""
    found: list[Path | None] = []
    for name in _IDX_NAMES:
        candidates = [folder / name, folder / f"{name}.gz"]
        found.append(next((path for path in candidates if path.is_file()), None))
    return found


def _locate_idx(name: str, data_dir: Path | None, download: bool) -> list[Path]:
    """The four IDX files of ``name``, in ``_IDX_NAMES`` order, downloaded if missing."""
    base = default_data_dir() if data_dir is None else data_dir
    folders = [base / name]
    if data_dir is not None:
        folders.insert(0, data_dir)
    elif name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    for folder in folders:
        found = _find_idx_files(folder)
        if None not in found:
            return found
    target = base / name
    remotes = [
        _RemoteFile(f"{file}.gz", tuple(f"{mirror}{file}.gz" for mirror in _IDX_MIRRORS[name]), md5)
        for file, md5 in zip(_IDX_NAMES, _IDX_MD5[name])
    ]
    _fetch_missing(name, target, [f"{file}[.gz]" for file in _IDX_NAMES], remotes, download)
    return _find_idx_files(target)


def _read_idx_dataset(name: str, paths: list[Path]) -> _OfficialSplit:
    train_images, train_labels, test_images, test_labels = (_read_idx(path) for path in paths)
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UsageError(
                f"{name}: image and label files in {paths[0].parent} do not match "
                f"(shapes {images.shape} and {labels.shape})"
            )
    # IDX images have one channel and no channel axis.
    return _OfficialSplit(train_images[:, None], train_labels, test_images[:, None], test_labels)


# ------------------------------------------------------------------ CIFAR (python batches)


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    archive: _RemoteFile
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes


_CIFAR = {
    "cifar10": _CifarLayout(
        folder="cifar-10-batches-py",
        archive=_RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "c58f30108f718f92721af3b95e74349a",
        ),
        train_files=tuple(f"data_batch_{number}" for number in range(1, 6)),
        test_file="test_batch",
        label_key=b"labels",
    ),
    "cifar100": _CifarLayout(
        folder="cifar-100-python",
        archive=_RemoteFile(
            "cifar-100-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
        train_files=("train",),
        test_file="test",
        label_key=b"fine_labels",
    ),
}


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one pickled CIFAR batch."""
    try:
        with open(path, "rb") as stream:
            # The official CIFAR format is a pickle; only load files you trust.
            batch = pickle.load(stream, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as error:
        raise UsageError(f"cannot read the CIFAR batch {path}: {error}") from None
    if len(images) != len(labels):
        raise UsageError(f"{path} has {len(images)} images but {len(labels)} labels")
    return images, labels


def _locate_cifar(name: str, data_dir: Path | None, download: bool) -> list[Path]:
    """The training batches then the test batch of ``name``, downloaded if missing."""
    layout = _CIFAR[name]
    base = default_data_dir() if data_dir is None else data_dir
    paths = [base / layout.folder / file for file in (*layout.train_files, layout.test_file)]
    missing = [f"{layout.folder}/{path.name}" for path in paths if not path.is_file()]
    if missing:
        _fetch_missing(name, base, missing, [layout.archive], download)
        archive = base / layout.archive.name
        with tarfile.open(archive) as tar:
            # The "data" filter refuses links and paths outside ``base``; Pythons older
            # than 3.9.17 lack it, and the archive's MD5 was checked anyway.
            safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(base, **safety)
        archive.unlink()
    return paths


def _read_cifar_dataset(name: str, paths: list[Path]) -> _OfficialSplit:
    label_key = _CIFAR[name].label_key
    parts = [_read_cifar_batch(path, label_key) for path in paths[:-1]]
    test_images, test_labels = _read_cifar_batch(paths[-1], label_key)
    return _OfficialSplit(
        np.concatenate([images for images, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
        test_images,
        test_labels,
    )


# -------------------------------------------------------------------------- digits


def _load_digits() -> _Arrays:
    # scikit-learn takes a second to import; only the digits dataset pays for it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixels are 0..16
    labels = digits.target.astype(np.int64)
    # A fixed, stratified 60/20/20 split: every class is in every split in proportion.
    rest_images, test_images, rest_labels, test_labels = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    train_images, valid_images, train_labels, valid_labels = train_test_split(
        rest_images, rest_labels, test_size=0.25, stratify=rest_labels, random_state=0
    )
    return _Arrays(train_images, train_labels, valid_images, valid_labels, test_images, test_labels)


# ------------------------------------------------------------------------ assembly


class _FileFormat(NamedTuple):
    """How to find (downloading if needed) and read the files of a dataset."""

    locate: Callable[[str, Path | None, bool], list[Path]]
    read: Callable[[str, list[Path]], _OfficialSplit]


_FILE_FORMATS = {
    "mnist": _FileFormat(_locate_idx, _read_idx_dataset),
    "fashion-mnist": _FileFormat(_locate_idx, _read_idx_dataset),
    "cifar10": _FileFormat(_locate_cifar, _read_cifar_dataset),
    "cifar100": _FileFormat(_locate_cifar, _read_cifar_dataset),
}


def _hold_out_last(official: _OfficialSplit) -> _Arrays:
    """Split off the last ``VALIDATION_FRACTION`` of the training set; images stay uint8."""
    cut = len(official.train_labels) - int(round(VALIDATION_FRACTION * len(official.train_labels)))
    return _Arrays(
        official.train_images[:cut],
        official.train_labels[:cut],
        official.train_images[cut:],
        official.train_labels[cut:],
        official.test_images,
        official.test_labels,
    )


_NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def ensure_files(
    name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> None:
    """Check that the files of a dataset are there, downloading them if not, without reading.

    Cheap enough to call before starting workers, so that a missing dataset is reported
    at once. Raises :class:`UsageError` like :func:`load_dataset`.
    """
    _check_name(name)
    if name in _FILE_FORMATS:
        _FILE_FORMATS[name].locate(name, None if data_dir is None else Path(data_dir), download)


def load_builtin(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    limit_train: int | None = None,
    download: bool = True,
) -> DatasetSplits:
    """Load a built-in dataset with its fixed train / validation / test splits.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    data_dir : path, optional
        Folder with the dataset files: the IDX files of ``mnist`` / ``fashion-mnist``
        (in it or in its subfolder named after the dataset), ``cifar-10-batches-py/``
        or ``cifar-100-python/``. Default: :func:`default_data_dir`, and for
        ``fashion-mnist`` also ``/usr/share/datasets/fashion-mnist``.
    limit_train : int, optional
        Keep only this many training examples (a fixed random subset), for quick runs.
        Validation and test splits are never reduced.
    download : bool
        Download missing files from their public URLs.

    Returns
    -------
    DatasetSplits
        A classification task. Images (N, C, H, W): uint8 for the datasets from files,
        float32 in [0, 1] for ``digits``; ``prepare`` normalises them per channel with the
        training split's statistics. ``digits`` is split 60/20/20 (stratified, fixed);
        the others hold out the last 10% of their training set for validation and keep
        the official test set.

    Raises
    ------
    UsageError
        For an unknown name, a bad ``limit_train``, or files that are missing (and could
        not be downloaded) or unreadable.
    """
    _check_name(name)
    if name in _FILE_FORMATS:
        file_format = _FILE_FORMATS[name]
        paths = file_format.locate(name, None if data_dir is None else Path(data_dir), download)
        arrays = _hold_out_last(file_format.read(name, paths))
    else:
        arrays = _load_digits()
    return from_arrays(
        name,
        train=(arrays.train_images, arrays.train_labels),
        valid=(arrays.valid_images, arrays.valid_labels),
        test=(arrays.test_images, arrays.test_labels),
        task=CLASSIFICATION,
        num_classes=_NUM_CLASSES[name],
        split_seed=_SUBSAMPLE_SEED,
        limit_train=limit_train,
    )
