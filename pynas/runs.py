"""Run directories: the trial store, atomic checkpoints and the result file.

A run directory holds

- ``config.json``: what was run (strategy, space, evaluator, seed, options), so that
  ``--resume`` can refuse to continue a run with different arguments;
- ``trials.sqlite``: one row per evaluation *attempt* (SQLite in WAL mode, the search
  process is the only writer);
- ``checkpoint.pt``: the strategy state and the trials it asked for and was not yet told
  about, replaced atomically;
- ``result.json``: the summary, written when the search ends;
- ``search_curve.png``: the best validation accuracy so far against evaluations.

Crash safety rests on one ordering (see :mod:`pynas.search.loop`): a trial enters the
checkpoint before its first row enters the database, and a row is marked finished before
the strategy is told. Whatever moment a SIGKILL strikes, the checkpoint and the database
together say which trials still need an evaluation and which results the strategy has
not yet seen.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pynas.errors import UsageError

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"  # the process died while this attempt was being evaluated

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id        INTEGER PRIMARY KEY,   -- one row per attempt
    trial     INTEGER NOT NULL,      -- the asked candidate; its attempts share this number
    attempt   INTEGER NOT NULL,      -- 1, 2, ... for each new attempt of the same trial
    arch      TEXT    NOT NULL,      -- the space's string of the architecture
    decisions TEXT    NOT NULL,      -- the decision tuple as a JSON list
    state     TEXT    NOT NULL
              CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    metrics   TEXT,                  -- JSON object of what the evaluator returned
    error     TEXT,                  -- why a failed attempt failed
    started   REAL    NOT NULL,      -- Unix time
    ended     REAL,                  -- Unix time
    worker    TEXT,                  -- host:pid of the process that evaluated it
    UNIQUE (trial, attempt)
);
-- A trial is evaluated to completion at most once: the database itself refuses a second.
CREATE UNIQUE INDEX IF NOT EXISTS one_outcome_per_trial
    ON trials (trial) WHERE state IN ('finished', 'failed');
"""


@dataclass(frozen=True)
class Attempt:
    """One row of ``trials.sqlite``."""

    id: int
    trial: int
    attempt: int
    arch: str
    decisions: tuple[int, ...]
    state: str
    metrics: dict[str, Any] | None
    error: str | None
    started: float
    ended: float | None
    worker: str | None


class TrialStore:
    """The ``trials.sqlite`` of a run: every evaluation attempt, one row each.

    Parameters
    ----------
    path
        The database file; created with its table when missing.
    durable
        Sync every commit to disk. Without it a commit still survives the death of the
        process (SIGKILL), but not a power cut: for throwaway runs (benchmarks, tests).
    """

    def __init__(self, path: Path | str, durable: bool = True) -> None:
        self.path = Path(path)
        try:
            self._connection = sqlite3.connect(self.path)
            # WAL lets `pynas show` read while the search writes; FULL syncs the log on
            # every commit, so a finished row survives a power cut as well as a SIGKILL.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            with self._connection:
                self._connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path} is not a pynas trial database ({error})") from None

    def start(self, trial: int, arch: str, decisions: Sequence[int], worker: str | None = None
              ) -> int:
        """Record a new ``running`` attempt of ``trial``; returns the row id."""
        with self._connection:
            (previous,) = self._connection.execute(
                "SELECT COUNT(*) FROM trials WHERE trial = ?", (trial,)
            ).fetchone()
            cursor = self._connection.execute(
                "INSERT INTO trials (trial, attempt, arch, decisions, state, started, worker)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (trial, previous + 1, arch, json.dumps([int(d) for d in decisions]), RUNNING,
                 time.time(), worker),
            )
        return int(cursor.lastrowid)

    def finish(self, row_id: int, metrics: dict[str, Any], worker: str | None) -> None:
        """Mark an attempt finished with the evaluator's metrics."""
        self._end(row_id, FINISHED, json.dumps(metrics), None, worker)

    def fail(self, row_id: int, error: str, worker: str | None) -> None:
        """Mark an attempt failed (the evaluation raised, or its worker died)."""
        self._end(row_id, FAILED, None, error, worker)

    def interrupt(self, row_id: int) -> None:
        """Mark an attempt that was running when the search process died."""
        self._end(row_id, INTERRUPTED, None, "the search process stopped during evaluation",
                  None)

    def _end(self, row_id: int, state: str, metrics: str | None, error: str | None,
             worker: str | None) -> None:
        with self._connection:
            self._connection.execute(
                "UPDATE trials SET state = ?, metrics = ?, error = ?, ended = ?,"
                " worker = COALESCE(?, worker) WHERE id = ? AND state = ?",
                (state, metrics, error, time.time(), worker, row_id, RUNNING),
            )

    def attempts(self) -> list[Attempt]:
        """Every attempt, in the order they were started."""
        rows = self._connection.execute(
            "SELECT id, trial, attempt, arch, decisions, state, metrics, error, started,"
            " ended, worker FROM trials ORDER BY id"
        ).fetchall()
        return [
            Attempt(
                id=row[0], trial=row[1], attempt=row[2], arch=row[3],
                decisions=tuple(json.loads(row[4])), state=row[5],
                metrics=None if row[6] is None else json.loads(row[6]),
                error=row[7], started=row[8], ended=row[9], worker=row[10],
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close the database; every write was already committed."""
        self._connection.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def finished_in_order(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The finished attempts in the order their evaluations ended (a search curve's x)."""
    return sorted((a for a in attempts if a.state == FINISHED), key=lambda a: (a.ended, a.id))


def best_attempt(attempts: Sequence[Attempt]) -> Attempt | None:
    """The finished attempt of highest ``score`` (the earliest to finish among equals)."""
    best = None
    for attempt in finished_in_order(attempts):
        if best is None or attempt.metrics["score"] > best.metrics["score"]:
            best = attempt
    return best


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old or the new file, whole.

    The bytes go to a temporary file in the same directory (``os.replace`` is atomic only
    within one file system), are synced to disk, renamed over ``path``, and the directory
    is synced so the rename itself is durable. Without ``durable`` the syncs are skipped:
    the file is still whole after a SIGKILL, but maybe not after a power cut.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def save_checkpoint(path: Path, state: dict[str, Any], durable: bool = True) -> None:
    """Write ``state`` (plain Python containers, numbers, strings, tensors) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue(), durable)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read what :func:`save_checkpoint` wrote; a checkpoint is data, never code."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise UsageError(f"cannot read the checkpoint {path}: {error}") from None


class RunDirectory:
    """The files of one search run.

    Parameters
    ----------
    path
        The directory; see :meth:`prepare` to create or reopen it safely.
    durable
        Sync what the run writes to disk (see :class:`TrialStore`); turn off only for
        throwaway runs, where a power cut may lose them.
    """

    CONFIG = "config.json"
    TRIALS = "trials.sqlite"
    CHECKPOINT = "checkpoint.pt"
    RESULT = "result.json"
    CURVE = "search_curve.png"
    PARETO = "pareto.json"
    PARETO_PLOT = "pareto.png"
    #: every file a run writes, SQLite's companions included (what --overwrite removes)
    FILES = (CONFIG, TRIALS, TRIALS + "-wal", TRIALS + "-shm", CHECKPOINT, RESULT, CURVE,
             PARETO, PARETO_PLOT, "rank_correlation.json", "rank_correlation.png")

    def __init__(self, path: Path | str, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable

    @classmethod
    def prepare(cls, path: Path | str, resume: bool = False, overwrite: bool = False,
                durable: bool = True) -> RunDirectory:
        """Create the directory, or check that the existing one may be used.

        Without ``resume`` an existing non-empty directory is an error unless
        ``overwrite``, which deletes the files of the earlier run (only those: a directory
        given by mistake loses nothing else). With ``resume`` a missing or empty directory
        starts a new run, so a loop can be repeated until it completes (``pynas search
        --resume`` is stricter: it continues a run that recorded its ``config.json``).
        """
        run = cls(path, durable)
        if run.path.exists() and not run.path.is_dir():
            raise UsageError(f"{run.path} exists and is not a directory")
        has_files = run.path.is_dir() and any(run.path.iterdir())
        if resume:
            if has_files and not any((run.path / name).exists() for name in cls.FILES):
                raise UsageError(f"{run.path} holds no pynas run to resume")
        elif has_files:
            if not overwrite:
                raise UsageError(
                    f"{run.path} is not empty: pass --resume to continue the run in it or "
                    "--overwrite to replace it"
                )
            with run.lock():  # never under a search that is running
                for name in cls.FILES:
                    (run.path / name).unlink(missing_ok=True)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the run directory {run.path}: {error}") from None
        return run

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def trials_path(self) -> Path:
        return self.path / self.TRIALS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def result_path(self) -> Path:
        return self.path / self.RESULT

    @property
    def curve_path(self) -> Path:
        return self.path / self.CURVE

    @property
    def pareto_path(self) -> Path:
        return self.path / self.PARETO

    @property
    def pareto_plot_path(self) -> Path:
        return self.path / self.PARETO_PLOT

    def read_config(self) -> dict[str, Any] | None:
        """The stored ``config.json``, or ``None`` for a new run."""
        if not self.config_path.exists():
            return None
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read {self.config_path}: {error}") from None

    def write_config(self, config: dict[str, Any]) -> None:
        """Record what the run computes (``config.json``), atomically."""
        atomic_write(self.config_path, _json_bytes(config), self.durable)

    def write_result(self, result: dict[str, Any]) -> None:
        """Replace ``result.json`` atomically."""
        atomic_write(self.result_path, _json_bytes(result), self.durable)

    def write_pareto(self, pareto: dict[str, Any]) -> None:
        """Replace ``pareto.json`` atomically."""
        atomic_write(self.pareto_path, _json_bytes(pareto), self.durable)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace ``checkpoint.pt`` atomically (see :func:`save_checkpoint`)."""
        save_checkpoint(self.checkpoint_path, state, self.durable)

    def open_store(self) -> TrialStore:
        """The run's trial database, created when missing."""
        return TrialStore(self.trials_path, self.durable)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for one search process (the database has one writer).

        The lock is on the directory itself, so it adds no file and dies with the process,
        however it dies.
        """
        import fcntl  # POSIX only, like the rest of the crash-safety guarantees

        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another pynas search is running in {self.path}") from None
            yield
        finally:
            os.close(descriptor)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()
