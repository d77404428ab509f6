"""``pynas search`` and ``pynas show``, run in-process through ``pynas.cli.main``."""
from __future__ import annotations

import csv
import functools
import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from pynas.cli import main
from pynas.spaces import SPACES
from pynas.spaces.nb201 import NB201Space

SHARED_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"


def write_table(path: Path) -> Path:
    """A benchmark table of every nb201 architecture with made-up, deterministic scores:
    ``acc_valid`` grows with the decisions, ``acc_test`` is 1 below, ``cost`` is 10."""
    space = NB201Space()
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["arch", "acc_valid", "acc_test", "cost"])
        for arch in itertools.product(*map(range, space.num_choices)):
            # a unique score per architecture, so the best is unambiguous
            value = sum(arch) + int("".join(map(str, arch)), 5) * 1e-6
            writer.writerow([space.to_string(arch), value, value - 1, 10])
    return path


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("table") / "table.csv")


def search_args(table: Path, out: Path, *extra: str, strategy: str = "evolution") -> list[str]:
    return ["search", strategy, "--benchmark", str(table), "--metric", "acc_valid",
            "--out", str(out), *extra]


def finished_rows(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "trials.sqlite") as connection:
        return connection.execute(
            "SELECT trial, arch, worker FROM trials WHERE state = 'finished' ORDER BY trial"
        ).fetchall()


def test_search_on_a_table_writes_the_run(table, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(search_args(table, out, "--budget", "30", "--cost-column", "cost",
                            "--seed", "2"))
    stdout = capsys.readouterr().out
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["strategy"] == "evolution" and result["space"] == "nb201"
    assert result["seed"] == 2 and result["evaluations"] == 30 and result["failed"] == 0
    assert result["simulated_seconds"] == 300.0 and result["seconds"] > 0
    best = result["best"]
    assert best["test_acc"] == pytest.approx(best["val_acc"] - 1)
    assert best["metrics"]["cost"] == 10 and best["metrics"]["acc_valid"] == best["val_acc"]
    assert NB201Space().from_genotype(best["genotype"]) == NB201Space().from_string(best["arch"])
    assert best["arch"] in stdout and "30 evaluations, 0 failed" in stdout
    assert len(finished_rows(out)) == 30
    assert (out / "search_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["population"] == 10


def test_random_search_trains_real_networks(tmp_path, monkeypatch, capsys):
    # a tiny nb201 network (4 channels, 1 cell per stage) keeps training quick
    monkeypatch.setitem(SPACES, "nb201",
                        functools.partial(NB201Space, channels=4, cells_per_stage=1))
    out = tmp_path / "run"
    code = main(["search", "random", "--dataset", "digits", "--budget", "1", "--epochs", "1",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 1 and "simulated_seconds" not in result
    metrics = result["best"]["metrics"]
    assert 0 <= metrics["test_acc"] <= 100 and metrics["params"] > 0 and metrics["seconds"] > 0
    assert result["evaluator"]["dataset"] == "digits"


def test_same_seed_same_search_and_overwrite(table, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(search_args(table, first, "--budget", "15", strategy="random")) == 0
    assert main(search_args(table, second, "--budget", "15", strategy="random")) == 0
    assert [r[:2] for r in finished_rows(first)] == [r[:2] for r in finished_rows(second)]
    assert main(search_args(table, second, "--budget", "5", "--seed", "1", "--overwrite",
                            strategy="random")) == 0
    assert len(finished_rows(second)) == 5


def test_resume_a_finished_run_with_a_larger_budget(table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(table, out, "--budget", "10")) == 0
    assert main(search_args(table, out, "--budget", "25", "--resume")) == 0
    rows = finished_rows(out)
    assert [trial for trial, _, _ in rows] == list(range(25))
    assert "25 evaluations" in capsys.readouterr().out


def test_pool_executor_from_the_command_line(table, tmp_path):
    out = tmp_path / "run"
    assert main(search_args(table, out, "--budget", "10", "--workers", "2")) == 0
    rows = finished_rows(out)
    assert len(rows) == 10
    assert len({worker for _, _, worker in rows}) == 2


def test_show_prints_the_summary_and_redraws(table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(table, out, "--budget", "12")) == 0
    best = json.loads((out / "result.json").read_text())["best"]
    (out / "search_curve.png").unlink()
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert best["arch"] in stdout
    assert "12 finished, 0 failed" in stdout and "acc_test" in stdout
    assert (out / "search_curve.png").exists()


@pytest.mark.skipif(not SHARED_TABLE.exists(), reason="needs ../shared/data/nb201/nb201.csv")
def test_evolution_finds_a_good_cell_on_nas_bench_201(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "evolution", "--benchmark", str(SHARED_TABLE), "--metric",
                 "cifar10_valid", "--budget", "100", "--out", str(out)]) == 0
    best = json.loads((out / "result.json").read_text())["best"]
    # the optimum is 94.37; random cells average about 85
    assert best["metrics"]["cifar10_test"] > 93.5


def _usage_error_cases(table: Path, tmp_path: Path) -> list[tuple[list[str], str]]:
    used = tmp_path / "used"
    used.mkdir()
    (used / "result.json").write_text("{}")
    return [
        (["search", "anneal", "--budget", "3"], "invalid choice: 'anneal'"),
        (search_args(table, tmp_path / "a", "--budget", "3", "--space", "nope"),
         "unknown search space 'nope'"),
        (["search", "random", "--benchmark", str(table), "--metric", "nope", "--budget", "3",
          "--out", str(tmp_path / "b")], "'nope' is not a numeric column"),
        (["search", "random", "--benchmark", str(tmp_path / "missing.csv"), "--metric", "x",
          "--budget", "3", "--out", str(tmp_path / "c")], "cannot read the table"),
        (["search", "random", "--benchmark", str(table), "--budget", "3",
          "--out", str(tmp_path / "d")], "--benchmark needs --metric"),
        (search_args(table, tmp_path / "e", "--budget", "3", "--dataset", "digits"),
         "--dataset or --benchmark, not both"),
        (search_args(table, tmp_path / "f"), "give a budget"),
        (search_args(table, tmp_path / "g", "--budget-seconds", "9"), "needs --cost-column"),
        (search_args(table, used, "--budget", "3"), "is not empty"),
        (search_args(table, tmp_path / "h", "--budget", "3", "--workers", "0"),
         "--workers must be at least 1"),
        (search_args(table, tmp_path / "i", "--budget", "3", "--ray-address", "auto"),
         "--ray-address needs --executor ray"),
        (search_args(table, tmp_path / "j", "--budget", "3", "--sample-size", "30"),
         "--sample-size must be between 1 and --population"),
        (["search", "random", "--budget", "3", "--resume"], "--resume needs --out"),
        (["search", "random", "--budget", "3", "--dataset", "nope",
          "--out", str(tmp_path / "k")], "unknown dataset 'nope'"),
        (["show", str(tmp_path / "nowhere")], "is not a pynas run"),
    ]


def test_user_errors_are_one_line_and_exit_2(table, tmp_path, capsys):
    for argv, message in _usage_error_cases(table, tmp_path):
        assert main(argv) == 2, argv
        stderr = capsys.readouterr().err
        assert stderr.startswith("pynas: error:") and message in stderr, (argv, stderr)
        assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_resume_refuses_other_arguments(table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(table, out, "--budget", "5", "--seed", "1")) == 0
    capsys.readouterr()
    assert main(search_args(table, out, "--budget", "9", "--resume")) == 2
    assert "was started with --seed 1, not 0" in capsys.readouterr().err
    assert main(search_args(table, out, "--budget", "9", "--resume", strategy="random")) == 2
    assert "was started with strategy evolution" in capsys.readouterr().err
