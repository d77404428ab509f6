"""The user's own data files (pynas.data.files): image folders, .npz / .pt arrays, CSV tables."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from pynas.data import DEBIAN_FASHION_MNIST, load_dataset
from pynas.errors import UsageError


def _load(path: Path, **options):
    return load_dataset(str(path), **options)


def _error(path: Path, *fragments: str, **options) -> str:
    """The one-line UsageError of loading ``path``; it contains every fragment."""
    with pytest.raises(UsageError) as caught:
        _load(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _all_inputs(data) -> np.ndarray:
    return np.concatenate([split.inputs.numpy() for split in (data.train, data.valid, data.test)])


def _all_labels(data) -> list[str]:
    indices = torch.cat([split.targets for split in (data.train, data.valid, data.test)])
    return [data.output_names[index] for index in indices.tolist()]


def _sizes(data) -> tuple[int, int, int]:
    return len(data.train), len(data.valid), len(data.test)


# ------------------------------------------------------------------ folders of images


def _random_image(rng, height: int, width: int, channels: int = 1) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _write_classes(root: Path, images: dict[str, list[np.ndarray]], suffix: str = ".png"):
    for name, arrays in images.items():
        (root / name).mkdir(parents=True)
        for index, array in enumerate(arrays):
            Image.fromarray(array).save(root / name / f"{index:03d}{suffix}")


def test_grayscale_folder_keeps_pixels_and_resizes_to_the_most_common_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = {name: [_random_image(rng, 8, 8) for _ in range(6)] for name in ("cat", "dog")}
    odd = _random_image(rng, 16, 16)
    _write_classes(tmp_path / "pets", images)
    Image.fromarray(odd).save(tmp_path / "pets" / "dog" / "zz_large.bmp")

    data = _load(tmp_path / "pets")

    assert data.task == "classification" and data.kind == "image"
    assert data.output_names == ("cat", "dog") and data.num_classes == 2
    assert data.input_shape == (1, 8, 8)
    assert data.train.inputs.dtype == torch.uint8
    assert sum(_sizes(data)) == 13
    loaded = Counter(zip(_all_labels(data), (bytes(image) for image in _all_inputs(data))))
    resized = np.asarray(Image.fromarray(odd).resize((8, 8), Image.Resampling.BILINEAR))
    expected = Counter((name, bytes(array)) for name, arrays in images.items() for array in arrays)
    expected[("dog", bytes(resized))] += 1
    assert loaded == expected
    assert capsys.readouterr() == ("", "")


def test_colour_images_of_any_mode_become_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgb = _random_image(rng, 6, 6, 3)
    gray = _random_image(rng, 6, 6)
    rgba = np.concatenate([rgb, np.full((6, 6, 1), 7, np.uint8)], axis=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(rgb).save(tmp_path / "a" / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "a" / "rgba.png")
    Image.fromarray(rgb).quantize(8).save(tmp_path / "a" / "palette.gif")
    Image.fromarray(rgb).save(tmp_path / "a" / "photo.jpg", quality=95)
    Image.fromarray(gray).save(tmp_path / "b" / "gray.png")
    Image.fromarray(gray).save(tmp_path / "b" / "gray.tiff")
    Image.fromarray(gray).save(tmp_path / "b" / "gray.webp", lossless=True)

    data = _load(tmp_path)

    assert data.input_shape == (3, 6, 6)
    assert data.train.inputs.dtype == torch.uint8
    stored = {bytes(image.transpose(1, 2, 0)) for image in _all_inputs(data)}
    assert bytes(rgb) in stored  # rgb.png, and rgba.png without its alpha
    assert bytes(np.repeat(gray[:, :, None], 3, axis=2)) in stored
    assert len(stored) == 4  # + the palette and the (lossy) JPEG versions


def test_non_square_images_and_image_size_override(tmp_path):
    rng = np.random.default_rng(2)
    images = {name: [_random_image(rng, 12, 9) for _ in range(5)] for name in ("x", "y")}
    _write_classes(tmp_path, images)

    natural = _load(tmp_path)
    assert natural.input_shape == (1, 12, 9)
    stored = {bytes(image) for image in _all_inputs(natural)}
    assert stored == {bytes(array) for arrays in images.values() for array in arrays}

    small = _load(tmp_path, image_size=(6, 5))
    assert small.input_shape == (1, 6, 5)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    rng = np.random.default_rng(3)
    images = {name: [_random_image(rng, 5, 5) for _ in range(3)] for name in ("p", "q")}
    for name, arrays in images.items():
        (tmp_path / name).mkdir()
        for index, array in enumerate(arrays):
            Image.fromarray(array.astype(np.uint16) * 257).save(tmp_path / name / f"{index}.png")

    data = _load(tmp_path)

    assert data.input_shape == (1, 5, 5)
    stored = {bytes(image) for image in _all_inputs(data)}
    assert stored == {bytes(array) for arrays in images.values() for array in arrays}


def test_hidden_and_other_files_are_ignored(tmp_path):
    rng = np.random.default_rng(4)
    _write_classes(tmp_path, {name: [_random_image(rng, 4, 4) for _ in range(5)]
                              for name in ("a", "b")})
    (tmp_path / "a" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "a" / "notes.txt").write_text("about the cats")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("my data")

    data = _load(tmp_path)

    assert sum(_sizes(data)) == 10 and data.output_names == ("a", "b")


@pytest.mark.parametrize("valid_name", ["valid", "val"])
def test_split_folders_are_kept(tmp_path, valid_name):
    rng = np.random.default_rng(5)
    for part, count in (("train", 6), (valid_name, 2), ("test", 3)):
        _write_classes(tmp_path / part, {name: [_random_image(rng, 4, 4) for _ in range(count)]
                                         for name in ("a", "b")})

    data = _load(tmp_path)

    assert _sizes(data) == (12, 4, 6)
    assert torch.equal(data.valid.targets, torch.tensor([0, 0, 1, 1]))


def test_split_folders_hold_out_a_missing_validation_split(tmp_path):
    rng = np.random.default_rng(6)
    for part, count in (("train", 10), ("test", 3)):
        _write_classes(tmp_path / part, {name: [_random_image(rng, 4, 4) for _ in range(count)]
                                         for name in ("a", "b")})

    data = _load(tmp_path, valid_fraction=0.2)

    assert _sizes(data) == (16, 4, 6)


def test_image_folder_errors(tmp_path):
    rng = np.random.default_rng(7)
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(empty, str(empty), "has no class subfolders with images")

    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(_random_image(rng, 4, 4)).save(loose / "image.png")
    _error(loose, str(loose), "has no class subfolders with images")

    no_images = tmp_path / "no_images"
    _write_classes(no_images, {"a": [_random_image(rng, 4, 4)] * 3})
    (no_images / "b").mkdir()
    (no_images / "b" / "notes.txt").write_text("nothing")
    _error(no_images, str(no_images / "b"), "class folder has no images")

    single = tmp_path / "single"
    _write_classes(single, {"only": [_random_image(rng, 4, 4) for _ in range(10)]})
    _error(single, "only one class (only)")

    both = tmp_path / "both"
    for part in ("train", "valid", "val"):
        _write_classes(both / part, {"a": [_random_image(rng, 4, 4)]})
    _error(both, "has both valid and val/")

    extra = tmp_path / "extra"
    for part in ("train", "other"):
        _write_classes(extra / part, {"a": [_random_image(rng, 4, 4)]})
    _error(extra, "has train/ and also other/")

    _error(single, "image size must be two positive integers", image_size=(0, 4))
    _error(single, "--target applies to CSV tables only", target="label")


def test_corrupt_and_truncated_images_are_named(tmp_path):
    rng = np.random.default_rng(8)
    _write_classes(tmp_path, {name: [_random_image(rng, 32, 32, 3) for _ in range(3)]
                              for name in ("a", "b")})
    victim = tmp_path / "b" / "001.png"
    content = victim.read_bytes()

    victim.write_bytes(content[: len(content) // 2])
    _error(tmp_path, str(victim), "cannot read the image", "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _error(tmp_path, str(victim), "cannot read the image")


# ----------------------------------------------------------------------- array files


def _labels(count: int, classes: int) -> np.ndarray:
    return np.arange(count) % classes


def test_npz_images_are_split_stratified_and_stay_uint8(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (50, 7, 6), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=x, y=_labels(50, 5))

    data = _load(tmp_path / "data.npz")

    assert data.input_shape == (1, 7, 6)
    assert data.train.inputs.dtype == torch.uint8
    assert data.num_classes == 5
    assert _sizes(data) == (30, 10, 10)
    assert torch.bincount(data.test.targets).tolist() == [2] * 5


def test_npz_splits_of_the_user_are_kept(tmp_path):
    rng = np.random.default_rng(10)

    def images(count):
        return rng.integers(0, 256, (count, 3, 4, 4), dtype=np.uint8)

    np.savez(tmp_path / "full.npz", x=images(20), y=_labels(20, 2), x_valid=images(6),
             y_valid=_labels(6, 2), x_test=images(8), y_test=_labels(8, 2))
    assert _sizes(_load(tmp_path / "full.npz")) == (20, 6, 8)

    np.savez(tmp_path / "test_only.npz", x=images(20), y=_labels(20, 2), x_test=images(8),
             y_test=_labels(8, 2))
    assert _sizes(_load(tmp_path / "test_only.npz", valid_fraction=0.5)) == (10, 10, 8)


def test_npz_features_with_several_targets_are_regression(tmp_path):
    rng = np.random.default_rng(11)
    np.savez(tmp_path / "table.npz", x=rng.normal(size=(40, 3)), y=rng.normal(size=(40, 2)))

    data = _load(tmp_path / "table.npz")

    assert data.task == "regression" and data.kind == "features"
    assert data.num_outputs == 2 and data.input_shape == (3,)


def test_pt_dict_of_tensors(tmp_path):
    x = torch.randint(0, 256, (30, 1, 5, 5), dtype=torch.uint8)
    torch.save({"x": x, "y": torch.arange(30) % 3}, tmp_path / "data.pt")

    data = _load(tmp_path / "data.pt")

    assert data.num_classes == 3 and data.input_shape == (1, 5, 5)
    assert data.train.inputs.dtype == torch.uint8
    assert sum(_sizes(data)) == 30


class _Custom:
    """Something only pickle can store."""


def test_array_file_errors(tmp_path):
    torch.save({"x": _Custom(), "y": torch.zeros(3)}, tmp_path / "custom.pt")
    _error(tmp_path / "custom.pt", "custom.pt", "not a plain dict of tensors", "_Custom")

    torch.save(torch.zeros(3, 2), tmp_path / "tensor.pt")
    _error(tmp_path / "tensor.pt", "holds a Tensor, not a dict of tensors")

    (tmp_path / "garbage.pt").write_bytes(b"garbage" * 20)
    _error(tmp_path / "garbage.pt", "garbage.pt")

    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, {"b": 2}], dtype=object),
             y=np.zeros(2))
    _error(tmp_path / "objects.npz", "objects.npz", "'x' cannot be loaded without pickle")

    np.savez(tmp_path / "no_y.npz", x=np.zeros((4, 2)), z=np.zeros(4))
    _error(tmp_path / "no_y.npz", "no_y.npz", "needs arrays 'x' and 'y' (found: x, z)")

    np.savez(tmp_path / "half.npz", x=np.zeros((4, 2)), y=np.zeros(4), x_valid=np.zeros((2, 2)))
    _error(tmp_path / "half.npz", "half.npz", "has 'x_valid' without 'y_valid'")

    (tmp_path / "garbage.npz").write_bytes(b"garbage" * 20)
    _error(tmp_path / "garbage.npz", "garbage.npz", "not an .npz archive")

    with open(tmp_path / "single.npz", "wb") as stream:
        np.save(stream, np.zeros(3))
    _error(tmp_path / "single.npz", "holds a single array")

    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    _error(tmp_path / "ok.npz", "--image-size applies to folders of images", image_size=(4, 4))

    (tmp_path / "data.json").write_text("{}")
    _error(tmp_path / "data.json", "data.json", "unsupported data", "folder of images", ".npz",
           ".csv")


# ---------------------------------------------------------------------------- tables


def _write_table(path: Path, header: list[str], rows: list[list[object]], delimiter=","):
    lines = [delimiter.join(header)] + [delimiter.join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _mixed_rows(count: int = 60) -> list[list[object]]:
    """size (numeric), colour (3 categories), kind (3 string classes), value, other."""
    rng = np.random.default_rng(12)
    rows = []
    for index in range(count):
        size = round(float(rng.normal()), 3)
        colour = ("red", "green", "blue")[index % 3]
        kind = ("small", "medium", "large", "small")[index % 4]
        rows.append([size, colour, kind, round(2 * size + 1, 3), index % 7])
    return rows


_HEADER = ["size", "colour", "kind", "value", "other"]


def test_csv_classification_with_categorical_features(tmp_path):
    table = _write_table(tmp_path / "t.csv", _HEADER, _mixed_rows())

    data = _load(table, target="kind")
    again = _load(table, target="kind")
    other_seed = _load(table, target="kind", split_seed=1)

    assert data.task == "classification" and data.kind == "features"
    assert data.output_names == ("large", "medium", "small")
    # size, value, other numeric; colour one-hot over 3 values
    assert data.input_shape == (6,)
    colours = torch.cat([data.train.inputs, data.valid.inputs, data.test.inputs])[:, 1:4]
    assert torch.equal(colours.sum(dim=1), torch.ones(60))
    assert torch.equal(data.test.inputs, again.test.inputs)
    assert not torch.equal(data.test.targets, other_seed.test.targets) or not torch.equal(
        data.test.inputs, other_seed.test.inputs)
    # 15 large, 15 medium, 30 small: each class shared out in proportion
    assert torch.bincount(data.test.targets).tolist() == [3, 3, 6]
    assert torch.bincount(data.valid.targets).tolist() == [3, 3, 6]


def test_csv_integer_labels_are_classes_and_real_values_regression(tmp_path):
    table = _write_table(tmp_path / "t.csv", _HEADER, _mixed_rows())

    classes = _load(table, target="other")
    assert classes.task == "classification" and classes.num_classes == 7

    regression = _load(table, target="value")
    assert regression.task == "regression" and regression.num_outputs == 1
    assert regression.output_names == ("value",)
    assert regression.target_mean is not None

    forced = _load(table, target="other", task="regression")
    assert forced.task == "regression" and forced.output_names == ("other",)


def test_csv_several_targets(tmp_path):
    table = _write_table(tmp_path / "t.csv", _HEADER, _mixed_rows())

    data = _load(table, target=("value", "size"))

    assert data.task == "regression" and data.num_outputs == 2
    assert data.output_names == ("value", "size")
    assert data.input_shape == (7,)  # colour (3), kind (3), other
    assert data.train.targets.shape[1] == 2


@pytest.mark.parametrize("suffix, delimiter", [(".tsv", "\t"), (".txt", ";"), (".csv", "|")])
def test_table_delimiters_are_found(tmp_path, suffix, delimiter):
    table = _write_table(tmp_path / f"t{suffix}", _HEADER, _mixed_rows(), delimiter)

    data = _load(table, target="kind")

    assert data.input_shape == (6,) and data.num_classes == 3


def test_csv_with_byte_order_mark_and_blank_lines(tmp_path):
    rows = "\n".join(f"{index},{index % 2}" for index in range(20))
    table = tmp_path / "t.csv"
    table.write_text("\ufeffx,label\n" + rows + "\n\n", encoding="utf-8")

    data = _load(table, target="label")

    assert sum(_sizes(data)) == 20 and data.input_shape == (1,)


def test_csv_errors(tmp_path):
    rows = _mixed_rows(20)
    table = _write_table(tmp_path / "t.csv", _HEADER, rows)
    _error(table, "t.csv", "a CSV needs --target COLUMN (columns: size, colour, kind, value, "
                           "other)")
    _error(table, "no column 'label' (columns: size, colour,", target="label")
    _error(table, "column 'kind', line 2: 'small' is not a finite number", target="kind",
           task="regression")
    _error(table, "several target columns (value, size) make a regression task", task=
           "classification", target=("value", "size"))

    only_targets = _write_table(tmp_path / "only.csv", ["a", "b"], [[1, 2]] * 5)
    _error(only_targets, "only.csv", "no feature columns", target=("a", "b"))

    def broken(name, column, row, value):
        changed = [list(line) for line in rows]
        changed[row][_HEADER.index(column)] = value
        return _write_table(tmp_path / name, _HEADER, changed)

    _error(broken("empty_feature.csv", "size", 4, ""), "empty_feature.csv",
           "column 'size', line 6: an empty cell", target="kind")
    _error(broken("empty_target.csv", "kind", 7, ""), "column 'kind', line 9: an empty cell",
           target="kind")
    _error(broken("na.csv", "size", 3, "NA"), "column 'size', line 5: 'NA' is not a finite "
                                                "number", target="kind")
    _error(broken("nan.csv", "value", 3, "nan"), "column 'value', line 5: 'nan' is not a "
                                                  "finite number", target="value")
    mostly_numbers = broken("other.csv", "other", 3, "none")
    _error(mostly_numbers, "column 'other', line 5: 'none'", "--task classification",
           target="other")
    assert _load(mostly_numbers, target="other", task="classification").num_classes == 8

    ids = _write_table(tmp_path / "ids.csv", ["id", "x", "label"],
                       [[f"row{index}", index, index % 2] for index in range(20)])
    _error(ids, "ids.csv", "column 'id' holds text with 20 distinct values", "drop the column",
           target="label")

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("x,label\n1,0\n2,1,3\n")
    _error(ragged, "ragged.csv", "line 3 has 3 fields, the header has 2", target="label")

    repeated = tmp_path / "repeated.csv"
    repeated.write_text("x,x,label\n1,2,0\n")
    _error(repeated, "column 'x' appears twice", target="label")

    header_only = tmp_path / "header.csv"
    header_only.write_text("x,label\n")
    _error(header_only, "header.csv", "has a header but no rows", target="label")


# ------------------------------------------------------------------------ real data


def test_fashion_mnist_images_written_as_png_folders_load_back(tmp_path):
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip(f"{DEBIAN_FASHION_MNIST} is absent (Debian package dataset-fashion-mnist)")
    source = load_dataset("fashion-mnist", limit_train=300, download=False)
    images = source.train.inputs.numpy()
    labels = [source.output_names[index] for index in source.train.targets.tolist()]
    for index, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray(image[0]).save(tmp_path / label / f"{index:04d}.png")

    data = _load(tmp_path)

    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.train.inputs.dtype == torch.uint8
    loaded = Counter(zip(_all_labels(data), (bytes(image) for image in _all_inputs(data))))
    assert loaded == Counter(zip(labels, (bytes(image) for image in images)))
