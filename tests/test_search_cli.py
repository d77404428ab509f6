"""``pynas search`` and ``pynas show``, run in-process through ``pynas.cli.main``."""
from __future__ import annotations

import csv
import functools
import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
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


# ------------------------------------------------------------------ the user's own data


def write_regression_csv(path: Path, rows: int = 80) -> Path:
    """A table with two numeric features, one categorical feature and a real target."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["size", "age", "colour", "price"])
        for _ in range(rows):
            size, age = rng.normal(size=2)
            colour = rng.choice(["red", "green", "blue"])
            writer.writerow([size, age, colour, 3 * size - age + (colour == "red") + 100])
    return path


def test_a_csv_regression_search_and_its_resume(tmp_path, capsys):
    table = write_regression_csv(tmp_path / "prices.csv")
    out = tmp_path / "run"
    arguments = ["search", "random", "--dataset", str(table), "--target", "price", "--budget",
                 "2", "--epochs", "3", "--valid-fraction", "0.25", "--out", str(out)]
    assert main(arguments) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "val_r2" in stdout and f"pynas train {out}" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "mlp" and result["score_name"] == "val_r2"
    data = result["evaluator"]["data"]
    assert data["task"] == "regression" and data["input_shape"] == [5]  # 2 + one-hot of 3
    assert data["sizes"] == {"train": 44, "valid": 20, "test": 16}
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == str(table.resolve()) and config["target"] == ["price"]
    assert main([*arguments[:7], "4", *arguments[8:], "--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["evaluations"] == 4
    # the split is part of what the run computes: another one is refused on resume
    assert main([*arguments, "--split-seed", "3", "--resume"]) == 2
    assert "--split-seed" in capsys.readouterr().err


@pytest.mark.parametrize("content,arguments,message", [
    ("a,b\n1,2\n3,4\n", [], "--target"),
    ("a,b\n1,2\n3,4\n", ["--target", "c"], "c"),
    ("a,b\n1,x\n3,4\n", ["--target", "b", "--task", "regression"], "b"),
    ("a,b\n1,2\n3,\n", ["--target", "b"], "b"),
    ("b\n1\n2\n", ["--target", "b"], "no feature columns"),
])
def test_bad_tables_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys, content,
                                                           arguments, message):
    table = tmp_path / "bad.csv"
    table.write_text(content)
    out = tmp_path / "run"
    code = main(["search", "random", "--dataset", str(table), *arguments, "--budget", "1",
                 "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and message in error, error
    assert not out.exists()


class TinyNB201(NB201Space):
    """nb201 with 4 channels and 1 cell per stage: quick to train."""

    def __init__(self) -> None:
        super().__init__(channels=4, cells_per_stage=1)


def test_an_image_folder_is_searched_with_an_image_space(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setitem(SPACES, "nb201", TinyNB201)
    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(12):
            pixels = rng.integers(0, 100, (10, 12, 3)) + 150 * label
            image = Image.fromarray(pixels.astype(np.uint8))
            image.save(tmp_path / "images" / name / f"{index}.png")
    out = tmp_path / "run"
    code = main(["search", "random", "--dataset", str(tmp_path / "images"), "--budget", "1",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "nb201" and result["evaluator"]["data"]["input_shape"] == [3, 10, 12]
    assert result["best"]["metrics"]["val_acc"] > 50  # light and dark images are easy
    # an image space on feature vectors, and the mlp space on images, are refused
    assert main(["search", "random", "--dataset", str(tmp_path / "images"), "--space", "mlp",
                 "--budget", "1", "--out", str(tmp_path / "other")]) == 2
    assert "image space" in capsys.readouterr().err and not (tmp_path / "other").exists()


# ------------------------------------------------------------------ the first minutes


@pytest.mark.parametrize("present", ["nothing", "an empty directory", "other files"])
def test_resume_where_there_is_no_run_is_one_line_and_creates_nothing(table, tmp_path, capsys,
                                                                       present):
    out = tmp_path / "run"
    if present != "nothing":
        out.mkdir()
    if present == "other files":
        (out / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert main(search_args(table, out, "--budget", "3", "--resume")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no run to resume" in error and "drop --resume" in error
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("space,content,offending", [
    ("darts", None, "|"),  # the nb201 table (every arch string starts with '|')
    ("nb201", "arch,acc_valid\nnot an architecture,1\n", "'not an architecture'"),
    ("mlp", None, "|"),
])
def test_a_table_of_another_space_is_refused_before_anything_runs(table, tmp_path, capsys,
                                                                   space, content, offending):
    if content is not None:
        table = tmp_path / "other.csv"
        table.write_text(content)
    out = tmp_path / "run"
    assert main(search_args(table, out, "--space", space, "--budget", "3")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(table) in error and f"'{space}'" in error
    assert offending in error and "--space" in error
    assert not out.exists()


def fast_surrogate(monkeypatch) -> None:
    """Two surrogates of a few steps: the budget is the point here, not the ranking."""
    from pynas.search import pnas
    from pynas.search.surrogate import SurrogateEnsemble

    monkeypatch.setattr(pnas, "SurrogateEnsemble", lambda *args, **options: SurrogateEnsemble(
        *args, **{**options, "members": 2, "steps": 5}))


def test_pnas_shrinks_its_levels_to_a_small_budget_and_says_so(table, tmp_path, capsys,
                                                               monkeypatch, one_thread):
    fast_surrogate(monkeypatch)
    out = tmp_path / "run"
    assert main(search_args(table, out, "--space", "nb201", "--budget", "8",
                            strategy="pnas")) == 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert "--budget 8 is too small for 3 levels of beam 4 (they need 12 evaluations): " \
        "searching 2 levels of beam 4 from 4 first-level cell(s)" in error
    assert json.loads((out / "result.json").read_text())["evaluations"] == 8
    records = json.loads((out / "rank_correlation.json").read_text())
    assert [(record["level"], record["evaluated"]) for record in records] == [(2, 4)]
    # what the user set is never shrunk: refused in one line, before the run directory
    for options in (["--levels", "3", "--beam", "4"], ["--initial", "9"], ["--beam", "8"]):
        assert main(search_args(table, tmp_path / "refused", "--space", "nb201", "--budget",
                                "8", *options, strategy="pnas")) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "give a budget of at least" in error, error
        assert options[0] in error and not (tmp_path / "refused").exists()


def test_the_trainer_options_reach_every_evaluation(tmp_path, capsys):
    table = write_regression_csv(tmp_path / "prices.csv")
    runs = {}
    for name, options in (("default", []), ("set", ["--batch-size", "8", "--lr", "0.01"])):
        out = tmp_path / name
        code = main(["search", "random", "--dataset", str(table), "--target", "price",
                     "--budget", "1", "--seed", "4", "--out", str(out), *options])
        assert code == 0, capsys.readouterr().err
        runs[name] = json.loads((out / "result.json").read_text())
    assert (runs["default"]["evaluator"]["batch_size"], runs["default"]["evaluator"]["lr"]) == (
        32, 0.1)
    assert (runs["set"]["evaluator"]["batch_size"], runs["set"]["evaluator"]["lr"]) == (8, 0.01)
    assert runs["set"]["config"]["batch_size"] == 8  # recorded: a resume must repeat it
    losses = {name: run["best"]["metrics"]["train_loss"] for name, run in runs.items()}
    assert losses["default"] != losses["set"]
    # darts has its own learning rates
    assert main(["search", "darts", "--lr", "0.1", "--out", str(tmp_path / "darts")]) == 2
    assert "--weight-lr" in capsys.readouterr().err
    assert not (tmp_path / "darts").exists()
