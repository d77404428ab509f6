"""Score an architecture by looking it up in a tabular benchmark (a CSV file).

The table has an ``arch`` column holding the space's architecture strings and any
number of numeric columns, like the NAS-Bench-201 table ``nb201.csv``: a search of
thousands of evaluations then takes seconds, and its cost is simulated from a column
of training times.
"""
from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.nb201 import CIFAR10_CLASSES, CIFAR10_SHAPE

ARCH_COLUMN = "arch"
VALID_SUFFIX = "_valid"
TEST_SUFFIX = "_test"


@dataclass(frozen=True)
class Table:
    """The numeric content of a benchmark table."""

    #: names of the numeric columns, in file order
    columns: tuple[str, ...]
    #: (rows, len(columns)) float64 values
    values: np.ndarray
    #: architecture string -> row
    rows: dict[str, int]

    def row(self, arch_string: str) -> dict[str, float]:
        """Every numeric column of the row of ``arch_string`` (KeyError if absent)."""
        return dict(zip(self.columns, self.values[self.rows[arch_string]].tolist()))


# Tables already read by this process, keyed by path, modification time and size (so
# an edited file is read again). The evaluator is pickled to workers without them.
_TABLE_CACHE: dict[tuple[str, int, int], Table] = {}


def _numeric_column(texts: list[str]) -> np.ndarray | None:
    try:
        return np.asarray(texts, dtype=np.float64)
    except ValueError:
        return None


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a benchmark CSV once per process (later calls return the cached table).

    Parameters
    ----------
    path : path
        A CSV file with a header, an ``arch`` column and numeric columns; columns
        that are not numbers on every row (e.g. a second string key) are ignored.

    Raises
    ------
    UsageError
        When the file is missing or unreadable, has no ``arch`` column, or repeats an
        architecture.
    """
    path = Path(path)
    try:
        status = path.stat()
        key = (str(path.resolve()), status.st_mtime_ns, status.st_size)
        if key in _TABLE_CACHE:
            return _TABLE_CACHE[key]
        with open(path, newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, [])
            records = [record for record in reader if record]  # blank lines hold no row
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read the table {path}: {error}") from None
    if ARCH_COLUMN not in header:
        raise UsageError(f"the table {path} has no {ARCH_COLUMN!r} column")
    if any(len(record) != len(header) for record in records):
        raise UsageError(f"the table {path} has rows with a number of fields unlike its header")
    by_column = list(zip(*records)) if records else [() for _ in header]
    arch_strings = by_column[header.index(ARCH_COLUMN)]
    rows = {arch: index for index, arch in enumerate(arch_strings)}
    if len(rows) != len(arch_strings):
        raise UsageError(f"the table {path} lists an architecture more than once")
    numeric = {
        name: column
        for name, texts in zip(header, by_column)
        if name != ARCH_COLUMN and (column := _numeric_column(list(texts))) is not None
    }
    values = np.stack(list(numeric.values()), axis=1) if numeric else np.empty((len(rows), 0))
    table = Table(columns=tuple(numeric), values=values, rows=rows)
    _TABLE_CACHE[key] = table
    return table


class TableEvaluator(Evaluator):
    """Look architectures up in a benchmark table instead of training them.

    Parameters
    ----------
    path : path
        The CSV file (see :func:`read_table`).
    metric : str
        The numeric column reported as ``val_acc``, the search signal.
    cost_column : str, optional
        The numeric column reported as ``seconds`` (a simulated training time);
        ``seconds`` is 0 without it.
    val_column : str, optional
        The validation-accuracy column whose test counterpart is reported as
        ``test_acc``; default ``metric``. A column ``X_valid`` has the counterpart
        ``X_test`` when the table has one (``cifar10_valid`` -> ``cifar10_test``);
        otherwise ``test_acc`` is absent. Give it when searching on a proxy, e.g.
        ``metric="cifar10_test_12ep", val_column="cifar10_valid"``.
    input_shape, num_outputs : the networks the table's numbers come from, whose costs
        a search measures (:mod:`pynas.costs`); default NAS-Bench-201's CIFAR-10
        networks, ``(3, 32, 32)`` and 10 classes.

    Every numeric column of the row is also reported under its own name.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        metric: str,
        cost_column: str | None = None,
        val_column: str | None = None,
        input_shape: tuple[int, ...] = CIFAR10_SHAPE,
        num_outputs: int = CIFAR10_CLASSES,
    ) -> None:
        self.path = os.fspath(path)
        self.input_shape, self.num_outputs = tuple(input_shape), num_outputs
        self.metric = metric
        self.score_name = metric
        self.cost_column = cost_column
        self.val_column = metric if val_column is None else val_column
        table = read_table(self.path)
        for role, column in (
            ("metric", metric),
            ("cost column", cost_column),
            ("validation column", self.val_column),
        ):
            if column is not None and column not in table.columns:
                raise UsageError(
                    f"{role} {column!r} is not a numeric column of {self.path}; "
                    f"its numeric columns: {', '.join(table.columns)}"
                )
        self.test_column = self._test_counterpart(table)

    def _test_counterpart(self, table: Table) -> str | None:
        if not self.val_column.endswith(VALID_SUFFIX):
            return None
        candidate = self.val_column[: -len(VALID_SUFFIX)] + TEST_SUFFIX
        return candidate if candidate in table.columns else None

    def check_space(self, space: SearchSpace, rows: int = 5) -> None:
        """Refuse a table of another space: the ``arch`` strings of its first ``rows`` rows
        must be strings of ``space``, or no look-up would ever find a row.

        Raises
        ------
        UsageError
            Naming the table, the space and the first string that ``space`` cannot read.
        """
        for arch_string in itertools.islice(read_table(self.path).rows, rows):
            try:
                space.from_string(arch_string)
            except ValueError as error:
                # most spaces' messages quote the whole string already
                reason = str(error) if repr(arch_string) in str(error) else (
                    f"{arch_string!r}: {error}")
                raise UsageError(
                    f"the table {self.path} does not hold architectures of the space "
                    f"{space.name!r} ({reason}): give the table's --space"
                ) from None

    def metric_names(self) -> list[str]:
        """The table's numeric columns, and what :meth:`evaluate` adds to them."""
        added = ["score", "val_acc", "seconds"] + (["test_acc"] if self.test_column else [])
        return list(read_table(self.path).columns) + added

    def describe(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, **vars(self)}

    def evaluate(self, space: SearchSpace, arch: Arch) -> dict[str, Any]:
        """The row of ``arch``.

        Returns
        -------
        dict
            Every numeric column by name, plus ``score`` and ``val_acc`` (both the
            metric), ``seconds``
            (the cost column, or 0) and, when a test counterpart exists, ``test_acc``.
        """
        arch_string = space.to_string(arch)
        try:
            row = read_table(self.path).row(arch_string)
        except KeyError:
            raise UsageError(
                f"architecture {arch_string!r} of space {space.name!r} is not in the table "
                f"{self.path}"
            ) from None
        result: dict[str, Any] = dict(row)
        result["val_acc"] = result["score"] = row[self.metric]
        result["seconds"] = 0.0 if self.cost_column is None else row[self.cost_column]
        if self.test_column is not None:
            result["test_acc"] = row[self.test_column]
        return result
