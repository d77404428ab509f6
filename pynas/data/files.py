"""The user's own data files: a folder of images, an ``.npz`` / ``.pt`` file of arrays, a
CSV table. Each is read into arrays and handed to :func:`pynas.data.core.from_arrays`,
which infers the task, splits what the user did not and checks the values.

Every problem a user can fix is a one-line :class:`~pynas.errors.UsageError` naming the
file, column or line at fault.
"""
from __future__ import annotations

import csv
import pickle
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pynas.data.core import CLASSIFICATION, REGRESSION, DatasetSplits, from_arrays, infer_task
from pynas.errors import UsageError

#: suffixes (lower case) of the images read from a folder; other files are ignored
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
ARRAY_SUFFIXES = (".npz", ".pt", ".pth")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")

#: a non-numeric CSV column is one-hot encoded when it has at most this many values
#: (and at most one per two rows); beyond that it is taken as free text
MAX_CATEGORIES = 50

# SyntaxError: what Pillow raises for some malformed chunks (e.g. a bad PNG CRC)
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_SPLIT_FOLDERS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
_ARRAY_PAIRS = {"train": ("x", "y"), "valid": ("x_valid", "y_valid"),
                "test": ("x_test", "y_test")}
_TABLE_DELIMITERS = (",", "\t", ";", "|")
_SUPPORTED = ("a folder of images in class subfolders, an .npz or .pt file of arrays "
              "(x, y, optionally x_valid, y_valid, x_test, y_test), or a .csv / .tsv / .txt "
              "table")

_Pair = tuple[np.ndarray, np.ndarray]


def load_path(
    path: Path,
    *,
    target: tuple[str, ...] | None,
    task: str | None,
    image_size: tuple[int, int] | None,
    valid_fraction: float,
    test_fraction: float,
    split_seed: int,
    limit_train: int | None,
) -> DatasetSplits:
    """Read the user's data at ``path`` and split it three ways.

    Parameters
    ----------
    path : a folder of images in class subfolders (optionally already split into
        ``train/``, ``valid/`` or ``val/``, ``test/``), an ``.npz`` or ``.pt`` file holding
        arrays ``x`` and ``y`` (optionally ``x_valid``, ``y_valid``, ``x_test``,
        ``y_test``), or a CSV table (``.csv``, ``.tsv``, ``.txt``).
    target : the table column(s) to predict; required for a table, refused otherwise.
    task : ``"classification"`` or ``"regression"``; inferred when ``None``.
    image_size : ``(height, width)`` of the images of a folder; default: their most
        common size. Images of another size are resized (bilinear).
    valid_fraction, test_fraction, split_seed, limit_train : see
        :func:`pynas.data.core.from_arrays`.

    Returns
    -------
    DatasetSplits
        Images of a folder stay uint8 (N, C, H, W), with C = 1 when every image is
        grayscale and 3 otherwise; table features are float32, non-numeric columns
        one-hot encoded.

    Raises
    ------
    UsageError
        A ``ValueError`` whose one line names the file, column or line at fault.
    """
    suffix = path.suffix.lower()
    if path.is_dir():
        kind = "folder"
    elif path.is_file() and suffix in ARRAY_SUFFIXES:
        kind = "arrays"
    elif path.is_file() and suffix in TABLE_SUFFIXES:
        kind = "table"
    elif not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    else:
        raise UsageError(f"{path}: unsupported data; expected {_SUPPORTED}")
    if target is not None and kind != "table":
        raise UsageError(f"{path}: --target applies to CSV tables only")
    if image_size is not None and kind != "folder":
        raise UsageError(f"{path}: --image-size applies to folders of images only")

    output_names: Sequence[str] | None = None
    if kind == "folder":
        parts, output_names = _read_image_folder(path, image_size)
    elif kind == "arrays":
        parts = _read_array_file(path)
    else:
        parts, task, output_names = _read_table(path, target, task)
    return from_arrays(
        str(path),
        train=parts["train"],
        valid=parts.get("valid"),
        test=parts.get("test"),
        task=task,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        limit_train=limit_train,
        output_names=output_names,
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ------------------------------------------------------------------ folders of images


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not _is_hidden(child))


def _split_folders(path: Path) -> dict[str, Path]:
    """The folder of each split the user gave: ``{"train": path}`` when not split."""
    if not (path / "train").is_dir():
        return {"train": path}
    found: dict[str, Path] = {}
    for part, names in _SPLIT_FOLDERS.items():
        present = [name for name in names if (path / name).is_dir()]
        if len(present) > 1:
            raise UsageError(f"{path}: has both {' and '.join(present)}/; keep one")
        if present:
            found[part] = path / present[0]
    known = {folder.name for folder in found.values()}
    others = [folder.name for folder in _subfolders(path) if folder.name not in known]
    if others:
        raise UsageError(f"{path}: has train/ and also {', '.join(others)}/; put every class "
                         "folder under train/ (and valid/ or val/, test/)")
    return found


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """The image files of each class subfolder of ``folder``, sorted."""
    classes = {}
    for class_folder in _subfolders(folder):
        files = sorted(file for file in class_folder.iterdir()
                       if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
                       and not _is_hidden(file))
        if not files:
            raise UsageError(f"{class_folder}: class folder has no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        classes[class_folder.name] = files
    if not classes:
        raise UsageError(f"{folder}: has no class subfolders with images "
                         "(expected FOLDER/<class>/<image>)")
    return classes


def _image_error(file: Path, error: BaseException) -> UsageError:
    return UsageError(f"{file}: cannot read the image: {_one_line(error)}")


def _survey(files: Iterable[Path]) -> tuple[bool, Counter[tuple[int, int]]]:
    """Whether every image is grayscale, and how many images have each (height, width),
    from the headers alone."""
    grayscale = True
    sizes: Counter[tuple[int, int]] = Counter()
    for file in files:
        try:
            with Image.open(file) as image:
                grayscale = grayscale and Image.getmodebase(image.mode) == "L"
                sizes[image.height, image.width] += 1
        except _IMAGE_ERRORS as error:
            raise _image_error(file, error) from None
    return grayscale, sizes


def _decode(file: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), resized to ``size`` = (height, width)."""
    height, width = size
    try:
        with Image.open(file) as image:
            image.load()  # a truncated or corrupt file fails here, not later
            if image.mode == "I" or image.mode.startswith("I;16"):
                # Pillow clips these to 0..255 on conversion; scale 16 bits to 8 instead
                values = np.asarray(image, dtype=np.float64) / 257.0
                image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
            if channels == 3 and image.mode in ("P", "PA"):
                image = image.convert("RGBA")  # the documented route for palette transparency
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except _IMAGE_ERRORS as error:
        raise _image_error(file, error) from None


def _check_image_size(image_size: Any) -> None:
    sides = list(image_size) if isinstance(image_size, (tuple, list)) else []
    if len(sides) != 2 or not all(isinstance(side, (int, np.integer))
                                  and not isinstance(side, bool) and side > 0 for side in sides):
        raise UsageError(f"image size must be two positive integers (height, width), "
                         f"got {image_size!r}")


def _read_image_folder(
    path: Path, image_size: tuple[int, int] | None
) -> tuple[dict[str, _Pair], list[str]]:
    """Images (uint8 N, C, H, W) and class-name labels of each split, and the class names."""
    if image_size is not None:
        _check_image_size(image_size)
    files_of = {part: _class_files(folder) for part, folder in _split_folders(path).items()}
    every_file = [file for classes in files_of.values() for files in classes.values()
                  for file in files]
    grayscale, sizes = _survey(every_file)
    size = sizes.most_common(1)[0][0] if image_size is None else tuple(image_size)
    channels = 1 if grayscale else 3
    parts = {}
    for part, classes in files_of.items():
        examples = [(name, file) for name, files in classes.items() for file in files]
        # one preallocated uint8 array: a large folder never exists as a list of images
        images = np.empty((len(examples), channels, *size), dtype=np.uint8)
        for index, (_, file) in enumerate(examples):
            pixels = _decode(file, channels, size)
            images[index] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
        parts[part] = (images, np.array([name for name, _ in examples]))
    class_names = sorted({name for classes in files_of.values() for name in classes})
    return parts, class_names


# ----------------------------------------------------------------------- array files


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"{path}: not an .npz archive of arrays: {_one_line(error)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"{path}: holds a single array, not an .npz archive with 'x' and 'y'")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                raise UsageError(f"{path}: array {key!r} cannot be loaded without pickle "
                                 f"({_one_line(error)}); save numbers or strings") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise UsageError(f"{path}: array {key!r} is corrupt: {_one_line(error)}") from None
    return arrays


def _load_torch(path: Path) -> dict[str, Any]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        detail = f" (it holds {refused.group(1)})" if refused else ""
        raise UsageError(f"{path}: not a plain dict of tensors{detail}; save "
                         "{'x': tensor, 'y': tensor} with torch.save, or numpy arrays "
                         "with numpy.savez") from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise UsageError(f"{path}: cannot read the .pt file: {_one_line(error)}") from None
    if not isinstance(content, dict):
        raise UsageError(f"{path}: holds a {type(content).__name__}, not a dict of tensors "
                         "with keys 'x' and 'y'")
    return content


def _as_array(path: Path, key: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # numpy has no bfloat16
        return value.numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        return np.asarray(value)
    raise UsageError(f"{path}: {key!r} is a {type(value).__name__}, not a tensor or array")


def _read_array_file(path: Path) -> dict[str, _Pair]:
    """The ``x`` / ``y`` pairs of an ``.npz`` or ``.pt`` file, as numpy arrays."""
    content = _load_npz(path) if path.suffix.lower() == ".npz" else _load_torch(path)
    keys = ", ".join(map(str, content)) or "none"
    if "x" not in content or "y" not in content:
        raise UsageError(f"{path}: needs arrays 'x' and 'y' (found: {keys})")
    parts = {}
    for part, (inputs, targets) in _ARRAY_PAIRS.items():
        if (inputs in content) != (targets in content):
            present, absent = (inputs, targets) if inputs in content else (targets, inputs)
            raise UsageError(f"{path}: has {present!r} without {absent!r} (found: {keys})")
        if inputs in content:
            parts[part] = (_as_array(path, inputs, content[inputs]),
                           _as_array(path, targets, content[targets]))
    return parts


# ---------------------------------------------------------------------------- tables


def _delimiter(header: str, suffix: str) -> str:
    """The delimiter that splits the header line most; a tab for ``.tsv``, a comma else."""
    default = "\t" if suffix == ".tsv" else ","
    counts = {delimiter: header.count(delimiter) for delimiter in _TABLE_DELIMITERS}
    best = max(counts, key=lambda delimiter: (counts[delimiter], delimiter == default))
    return best if counts[best] else default


def _read_cells(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Column names, each column's (stripped) cells, and each row's line in the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            delimiter = _delimiter(stream.readline(), path.suffix.lower())
            stream.seek(0)
            reader = csv.reader(stream, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise UsageError(f"{path}: the table is empty (no header line)")
            columns: list[list[str]] = [[] for _ in header]
            lines = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines separate nothing
                if len(row) != len(header):
                    raise UsageError(f"{path}: line {reader.line_num} has {len(row)} fields, "
                                     f"the header has {len(header)}")
                for column, cell in zip(columns, row):
                    column.append(cell.strip())
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}: cannot read the table: {_one_line(error)}") from None
    blank = [index + 1 for index, name in enumerate(header) if not name]
    if blank:
        raise UsageError(f"{path}: column {blank[0]} has no name in the header line")
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise UsageError(f"{path}: column {repeated[0]!r} appears twice in the header line")
    if not lines:
        raise UsageError(f"{path}: the table has a header but no rows")
    return header, columns, lines


def _numbers(cells: list[str]) -> tuple[np.ndarray, list[int]]:
    """The cells as float64, and the rows whose cell is not a finite number."""
    values = np.empty(len(cells), dtype=np.float64)
    bad = []
    for row, cell in enumerate(cells):
        try:
            values[row] = float(cell)
        except ValueError:
            bad.append(row)
            continue
        if not np.isfinite(values[row]):
            bad.append(row)
    return values, bad


class _Table:
    """A table's cells with what names them in errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header, columns, self.lines = _read_cells(path)
        self.columns = dict(zip(self.header, columns))

    def cell_error(self, column: str, row: int, problem: str) -> UsageError:
        cell = self.columns[column][row]
        what = "an empty cell" if cell == "" else repr(cell)
        return UsageError(f"{self.path}: column {column!r}, line {self.lines[row]}: "
                          f"{what} {problem}")

    def check_filled(self, column: str) -> None:
        if "" in self.columns[column]:
            raise self.cell_error(column, self.columns[column].index(""),
                                  "(fill it, or drop the row)")

    def numeric(self, column: str) -> np.ndarray:
        """A column that must hold numbers, as float64."""
        self.check_filled(column)
        values, bad = _numbers(self.columns[column])
        if bad:
            raise self.cell_error(column, bad[0], "is not a finite number")
        return values

    def feature(self, column: str) -> np.ndarray:
        """A feature column as float32 (N, 1) numbers or (N, K) one-hot categories."""
        self.check_filled(column)
        cells = self.columns[column]
        values, bad = _numbers(cells)
        if not bad:
            return values.astype(np.float32)[:, None]
        if len(bad) < len(cells) / 2:
            raise self.cell_error(column, bad[0], "is not a finite number, unlike most of "
                                                  "the column")
        categories, codes = np.unique(np.array(cells), return_inverse=True)
        if len(categories) > min(MAX_CATEGORIES, len(cells) // 2):
            raise UsageError(f"{self.path}: column {column!r} holds text with "
                             f"{len(categories)} distinct values in {len(cells)} rows, too "
                             "many to take as categories; drop the column")
        return np.eye(len(categories), dtype=np.float32)[codes.reshape(-1)]


def _read_table(
    path: Path, target: tuple[str, ...] | None, task: str | None
) -> tuple[dict[str, _Pair], str | None, tuple[str, ...] | None]:
    """Features and targets of a table, its task, and its target names for regression."""
    table = _Table(path)
    columns = ", ".join(table.header)
    if not target:
        raise UsageError(f"{path}: a CSV needs --target COLUMN (columns: {columns})")
    missing = [name for name in target if name not in table.columns]
    if missing:
        raise UsageError(f"{path}: no column {missing[0]!r} (columns: {columns})")
    features = [name for name in table.header if name not in target]
    if not features:
        raise UsageError(f"{path}: no feature columns: every column is a target")

    if len(target) > 1:
        if task == CLASSIFICATION:
            raise UsageError(f"{path}: several target columns ({', '.join(target)}) make a "
                             f"regression task, not {task}")
        targets = np.stack([table.numeric(name) for name in target], axis=1)
    else:
        (name,) = target
        table.check_filled(name)
        targets, bad = _numbers(table.columns[name])
        if bad:
            if task == REGRESSION:
                raise table.cell_error(name, bad[0], "is not a finite number")
            if task is None and len(bad) < len(targets) / 2:
                raise table.cell_error(name, bad[0], "is not a finite number, unlike most of "
                                       "the column (--task classification takes it as a class)")
            targets = np.array(table.columns[name])  # class names
    task = task or infer_task(targets)
    inputs = np.concatenate([table.feature(name) for name in features], axis=1)
    output_names = tuple(target) if task == REGRESSION else None
    return {"train": (inputs, targets)}, task, output_names
