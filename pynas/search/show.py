"""``pynas show DIR``: redraw a run's plots from its trials and print a summary.

Works on a finished run, a killed one and one still running (SQLite's WAL mode lets it
read while the search writes).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from pynas.errors import UsageError
from pynas.objectives import Objectives, parse_objectives
from pynas.plots import plot_pareto, plot_search_curve
from pynas.runs import FAILED, FINISHED, INTERRUPTED, RUNNING, RunDirectory, best_attempt
from pynas.spaces import SPACES, get_space


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The argument of ``pynas show``: the run directory."""
    parser.add_argument("run", metavar="DIR", help="a run directory (pynas search --out DIR)")


def run(args: argparse.Namespace) -> int:
    """Redraw ``search_curve.png`` from ``trials.sqlite`` and print the run's summary."""
    run_dir = RunDirectory(args.run)
    if not run_dir.trials_path.is_file():
        if run_dir.result_path.is_file():  # a one-shot search (DARTS) evaluates no trials
            return _show_one_shot(run_dir)
        raise UsageError(f"{run_dir.path} is not a pynas run (no {RunDirectory.TRIALS})")
    config = run_dir.read_config() or {}
    with run_dir.open_store() as store:
        attempts = store.attempts()
    title = f"{config.get('strategy', '?')} on {config.get('space', '?')}"
    score_name = _read_result(run_dir).get("score_name", "val_acc")
    plot_search_curve(attempts, run_dir.curve_path, title=title, score_name=score_name)

    states = Counter(attempt.state for attempt in attempts)
    print(f"run          {run_dir.path}")
    print(f"search       {title}, seed {config.get('seed', '?')}")
    print(
        f"evaluations  {states[FINISHED]} finished, {states[FAILED]} failed, "
        f"{states[INTERRUPTED]} interrupted, {states[RUNNING]} running"
    )
    best = best_attempt(attempts)
    if best is None:
        print("best         none yet")
    else:
        print(f"best         {best.arch} (trial {best.trial})")
        print(f"score        {score_name} {_format(best.metrics['score'])} (maximised)")
        print(
            "metrics      "
            + ", ".join(f"{name} {_format(value)}" for name, value in best.metrics.items())
        )
        space = get_space(config["space"]) if config.get("space") in SPACES else None
        if space is not None and hasattr(space, "draw"):  # spaces that draw their cells
            for path in space.draw(space.validate(best.decisions), run_dir.path):
                print(f"plot         {path}")
    objectives = parse_objectives(config.get("objectives"))
    if objectives is not None:
        _show_front(attempts, objectives, run_dir, title, config)
    failures = [a for a in attempts if a.state == FAILED]
    if failures:
        last = failures[-1]
        print(f"last failure trial {last.trial}: {_last_line(last.error)}")
    print(f"plot         {Path(run_dir.curve_path)}")
    return 0


def _show_front(attempts: list, objectives: Objectives, run_dir: RunDirectory, title: str,
                config: dict) -> None:
    """Print the Pareto front of the finished trials as a table; redraw ``pareto.png``."""
    from pynas.search.loop import pareto_attempts

    front = pareto_attempts(attempts, objectives)
    limits = {name: config[name] for name in ("max_params", "max_flops", "max_latency_ms")
              if config.get(name) is not None}
    plot_pareto(attempts, front, objectives, run_dir.pareto_plot_path, title=title,
                limits=limits)
    print(f"pareto front {len(front)} trial(s) no other trial dominates:")
    header = ["trial", *(f"{o.name} ({'max' if o.maximize else 'min'})" for o in objectives),
              "architecture"]
    rows = [[str(a.trial), *(_format(a.metrics[o.name]) for o in objectives), a.arch]
            for a in front]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths))
              + "  " + row[-1])
    print(f"plot         {run_dir.pareto_plot_path}")


def _show_one_shot(run_dir: RunDirectory) -> int:
    """Summary of a run without trials (DARTS) from its result.json; redraws the cells."""
    result = _read_result(run_dir)
    print(f"run          {run_dir.path}")
    print(f"search       {result.get('strategy', '?')} on {result.get('space', '?')}, "
          f"seed {result.get('seed', '?')}")
    best = result.get("best") or {}
    print(f"best         {best.get('arch', '?')}")
    metrics = best.get("metrics") or {}
    print("metrics      " + ", ".join(f"{name} {_format(value)}"
                                      for name, value in metrics.items()))
    genotype = result.get("genotype")
    if result.get("space") == "darts" and isinstance(genotype, dict):
        from pynas.cells import draw_genotype

        for path in draw_genotype(genotype, run_dir.path):
            print(f"plot         {path}")
    return 0


def _read_result(run_dir: RunDirectory) -> dict:
    """The run's result.json; ``{}`` while a search has written none yet."""
    if not run_dir.result_path.is_file():
        return {}
    try:
        return json.loads(run_dir.result_path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {run_dir.result_path}: {error}") from error


def _format(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _last_line(text: str | None) -> str:
    """The exception line of a traceback (its last non-empty line)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
