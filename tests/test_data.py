"""Datasets: the embedded digits, IDX and CIFAR readers, downloads and their errors."""
import gzip
import hashlib
import io
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pynas.data import DEBIAN_FASHION_MNIST, load_dataset
from pynas.data import builtin as data
from pynas.errors import UsageError

IDX_NAMES = data._IDX_NAMES


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)


def fake_mnist(rng: np.random.Generator, train: int = 40, test: int = 10) -> list[np.ndarray]:
    """Arrays of the four IDX files, in ``IDX_NAMES`` order, with 6x6 images."""
    return [
        rng.integers(0, 256, (train, 6, 6)),
        rng.integers(0, 10, train),
        rng.integers(0, 256, (test, 6, 6)),
        rng.integers(0, 10, test),
    ]


def write_fake_mnist(folder: Path, arrays: list[np.ndarray], gzipped: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_NAMES, arrays):
        write_idx(folder / (name + (".gz" if gzipped else "")), array)


def refuse_network(url, timeout=None):
    raise urllib.error.URLError("no network in tests")


def assert_normalised_like_training(splits, raw_train_images: np.ndarray) -> None:
    # One channel: the split's images are (x / 255 - mean) / std of the training split.
    unit = raw_train_images.astype(np.float32) / 255
    expected = (unit - unit.mean()) / unit.std()
    torch.testing.assert_close(splits.prepare(splits.train.inputs)[:, 0],
                               torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def test_digits_has_a_fixed_stratified_split():
    first = load_dataset("digits")
    second = load_dataset("digits")
    sizes = [len(split.targets) for split in (first.train, first.valid, first.test)]
    assert sum(sizes) == 1797
    assert sizes == [1077, 360, 360]
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(first, split).inputs, getattr(second, split).inputs)
        assert torch.equal(getattr(first, split).targets, getattr(second, split).targets)
    assert (first.num_classes, first.input_shape, first.task) == (10, (1, 8, 8), "classification")
    assert first.input_shape == (1, 8, 8)
    assert first.train.inputs.shape == (1077, 1, 8, 8)
    assert first.train.inputs.dtype == torch.float32
    assert first.train.targets.dtype == torch.int64
    # Stratified: every class has about a fifth of its examples in validation and test.
    totals = torch.cat([first.train.targets, first.valid.targets, first.test.targets]).bincount()
    for split in (first.valid, first.test):
        assert (split.targets.bincount(minlength=10) - 0.2 * totals).abs().max() <= 1
    # Normalised with the training statistics.
    prepared = first.prepare(first.train.inputs)
    assert abs(prepared.mean().item()) < 1e-4
    assert abs(prepared.std().item() - 1) < 1e-3


def test_limit_train_keeps_a_fixed_subset():
    full = load_dataset("digits")
    limited = load_dataset("digits", limit_train=100)
    again = load_dataset("digits", limit_train=100)
    assert len(limited.train.targets) == 100
    assert torch.equal(limited.train.inputs, again.train.inputs)
    # Same normalisation, same validation split, and every kept image is a training image.
    assert torch.equal(limited.valid.inputs, full.valid.inputs)
    flat_full = full.train.inputs.flatten(1)
    for image in limited.train.inputs.flatten(1)[:20]:
        assert (flat_full == image).all(dim=1).any()
    assert len(limited.train.targets.unique()) == 10
    assert len(load_dataset("digits", limit_train=5000).train.targets) == 1077


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_limit_train_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="limit_train"):
        load_dataset("digits", limit_train=bad)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UsageError) as caught:
        load_dataset("imagenet")
    message = str(caught.value)
    assert "imagenet" in message
    for name in data.DATASETS:
        assert name in message


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("in_subfolder", [True, False])
def test_idx_files_are_read_from_data_dir(tmp_path, gzipped, in_subfolder):
    arrays = fake_mnist(np.random.default_rng(1))
    write_fake_mnist(tmp_path / "mnist" if in_subfolder else tmp_path, arrays, gzipped)
    splits = load_dataset("mnist", data_dir=tmp_path, download=False)
    train_images, train_labels, test_images, test_labels = arrays
    # The last 10% of the training file is the validation split.
    assert torch.equal(splits.train.targets, torch.from_numpy(train_labels[:36]))
    assert torch.equal(splits.valid.targets, torch.from_numpy(train_labels[36:]))
    assert torch.equal(splits.test.targets, torch.from_numpy(test_labels))
    assert splits.train.inputs.shape == (36, 1, 6, 6)
    assert (splits.input_shape, splits.num_classes) == ((1, 6, 6), 10)
    assert splits.train.inputs.dtype == torch.uint8  # converted per batch, not up front
    assert_normalised_like_training(splits, train_images[:36])


def test_corrupt_idx_file_is_a_usage_error(tmp_path):
    write_fake_mnist(tmp_path, fake_mnist(np.random.default_rng(2)), gzipped=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UsageError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    path.write_bytes(b"not an idx file")
    with pytest.raises(UsageError, match="not an IDX file"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("download", [True, False])
def test_missing_files_give_one_line_naming_files_and_folder(tmp_path, monkeypatch, download):
    monkeypatch.setattr(urllib.request, "urlopen", refuse_network)
    with pytest.raises(UsageError) as caught:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=download)
    message = str(caught.value)
    assert "\n" not in message
    for name in IDX_NAMES:
        assert name in message
    assert str(tmp_path / "fashion-mnist") in message
    assert ("download failed" in message) == download
    assert not any(tmp_path.rglob("*.part"))


def test_missing_cifar_gives_one_line_naming_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", refuse_network)
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar100", data_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "cifar-100-python/train" in message and "cifar-100-python/test" in message
    assert str(tmp_path) in message
    assert "www.cs.toronto.edu" in message  # the download was tried


def test_download_checks_md5_and_saves_good_files(tmp_path, monkeypatch):
    arrays = fake_mnist(np.random.default_rng(3))
    served = {}
    for name, array in zip(IDX_NAMES, arrays):
        buffer_path = tmp_path / "source" / f"{name}.gz"
        buffer_path.parent.mkdir(exist_ok=True)
        write_idx(buffer_path, array)
        served[f"{name}.gz"] = buffer_path.read_bytes()
    checksums = tuple(hashlib.md5(served[f"{name}.gz"]).hexdigest() for name in IDX_NAMES)
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        return io.BytesIO(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    target = tmp_path / "data"
    # First with the published checksums, which these fake files do not have.
    with pytest.raises(UsageError, match="MD5"):
        load_dataset("mnist", data_dir=target)
    assert not any(target.rglob("*ubyte*"))
    requested.clear()
    monkeypatch.setitem(data._IDX_MD5, "mnist", checksums)
    splits = load_dataset("mnist", data_dir=target)
    assert torch.equal(splits.test.targets, torch.from_numpy(arrays[3]))
    assert sorted(p.name for p in (target / "mnist").iterdir()) == sorted(served)
    first_mirror = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert all(url.startswith(first_mirror) for url in requested)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, key: bytes) -> None:
    with open(path, "wb") as stream:
        pickle.dump({b"data": images.reshape(len(images), -1), key: labels.tolist()}, stream)


@pytest.mark.parametrize(
    "name,folder,train_files,test_file,key,classes",
    [
        (
            "cifar10",
            "cifar-10-batches-py",
            [f"data_batch_{number}" for number in range(1, 6)],
            "test_batch",
            b"labels",
            10,
        ),
        ("cifar100", "cifar-100-python", ["train"], "test", b"fine_labels", 100),
    ],
)
def test_cifar_batches_are_read(tmp_path, name, folder, train_files, test_file, key, classes):
    rng = np.random.default_rng(4)
    (tmp_path / folder).mkdir()
    train_images, train_labels = [], []
    for file in train_files:
        images = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, 10)
        write_cifar_batch(tmp_path / folder / file, images, labels, key)
        train_images.append(images)
        train_labels.append(labels)
    test_images = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, classes, 8)
    write_cifar_batch(tmp_path / folder / test_file, test_images, test_labels, key)
    splits = load_dataset(name, data_dir=tmp_path, download=False)
    all_train_labels = np.concatenate(train_labels)
    cut = len(all_train_labels) - len(all_train_labels) // 10
    assert torch.equal(splits.train.targets, torch.from_numpy(all_train_labels[:cut]))
    assert torch.equal(splits.valid.targets, torch.from_numpy(all_train_labels[cut:]))
    assert torch.equal(splits.test.targets, torch.from_numpy(test_labels))
    assert splits.test.inputs.shape == (8, 3, 32, 32)
    assert (splits.num_classes, splits.input_shape) == (classes, (3, 32, 32))
    # Per-channel normalisation with the training split's statistics.
    unit = np.concatenate(train_images)[:cut].astype(np.float32) / 255
    mean = unit.mean(axis=(0, 2, 3), keepdims=True)
    std = unit.std(axis=(0, 2, 3), keepdims=True)
    expected_test = (test_images.astype(np.float32) / 255 - mean) / std
    torch.testing.assert_close(splits.prepare(splits.test.inputs), torch.from_numpy(expected_test),
                               rtol=1e-5, atol=1e-5)


def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    if not all((DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for name in IDX_NAMES):
        pytest.skip(f"{DEBIAN_FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)")
    # Nothing in the default folder, so the Debian one must be found.
    monkeypatch.setenv("PYNAS_DATA_DIR", str(tmp_path))
    splits = load_dataset("fashion-mnist", limit_train=500, download=False)
    assert len(splits.train.targets) == 500
    assert len(splits.valid.targets) == 6000
    assert splits.test.inputs.shape == (10000, 1, 28, 28)
    assert splits.test.targets.bincount().tolist() == [1000] * 10
    raw_labels = data._read_idx(DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    assert torch.equal(splits.valid.targets, torch.from_numpy(raw_labels[54000:].astype(np.int64)))
