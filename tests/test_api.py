"""The Python API: pynas.search on arrays with the user's own evaluation, load, train."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pynas
from pynas.api import as_dataset
from pynas.errors import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_example() -> str:
    """The README's Python example: the code block under '## Python'."""
    text = README.read_text()
    section = text[text.index("## Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_calls_the_evaluation_once_per_evaluation(
        tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    calls = []
    namespace: dict = {"__name__": "readme"}
    code = readme_python_example()
    # count the user's calls without changing the example: wrap the function it defines
    original_search = pynas.search

    def counting_search(*args, evaluate=None, **kwargs):
        def counted(candidate):
            calls.append(candidate.arch_string)
            return evaluate(candidate)
        return original_search(*args, evaluate=counted, **kwargs)

    monkeypatch.setattr(pynas, "search", counting_search, raising=False)
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.best is not None and result.score_name == "score"
    finished = [trial for trial in result.trials if trial.state == "finished"]
    assert len(calls) == len(result.trials) == result.result["evaluations"] == len(finished)
    assert sorted(calls) == sorted(trial.arch for trial in result.trials)
    assert 0.0 <= result.best["score"] <= 1.0
    reopened = pynas.load(result.path)
    assert reopened.best == result.best and reopened.result["space"] == "mlp"
    assert "trained" in namespace and namespace["trained"].metrics["test_acc"] > 50
    printed = capsys.readouterr().out
    assert result.best["arch"] in printed


def score_by_width(candidate):
    """A made-up score: the sum of the decisions (no training)."""
    return float(sum(candidate.arch))


def test_search_on_tensors_records_the_run_and_resumes(tmp_path, one_thread):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    out = tmp_path / "run"
    first = pynas.search("random", (x, y), evaluate=score_by_width, budget=3, out=out, seed=1)
    assert first.result["evaluations"] == 3 and first.result["space"] == "mlp"
    assert first.best["score"] == max(t.metrics["score"] for t in first.trials)
    more = pynas.search("random", (x, y), evaluate=score_by_width, budget=5, out=out, seed=1,
                        resume=True)
    assert more.result["evaluations"] == 5 and len(more.trials) == 5
    model = more.build_model()
    assert model(torch.randn(2, 5)).shape == (2, 2)
    assert json.loads((out / "result.json").read_text()) == more.to_dict()


def test_the_built_in_trainer_on_a_regression_table(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=120)
    result = pynas.search("random", {"x": x, "y": y}, budget=2, epochs=5, out=tmp_path / "r")
    assert result.score_name == "val_r2"
    metrics = result.best["metrics"]
    assert {"val_r2", "val_rmse", "val_mae", "test_r2", "test_rmse", "test_mae"} <= set(metrics)
    assert result.result["evaluator"]["data"]["task"] == "regression"


def test_a_failing_evaluation_fails_its_trial_and_the_search_goes_on(tmp_path):
    def sometimes(candidate):
        if candidate.arch[0] % 2:
            raise RuntimeError("my training diverged")
        return 1.0

    result = pynas.search("random", (np.zeros((30, 3)), np.arange(30) % 2), evaluate=sometimes,
                          budget=4, out=tmp_path / "run", seed=3)
    failed = [t for t in result.trials if t.state == "failed"]
    assert result.result["evaluations"] == 4 and failed
    assert all("my training diverged" in t.error for t in failed)


@pytest.mark.parametrize("data,message", [
    ((np.zeros((10, 3)), np.zeros(9)), "10 inputs but 9 targets"),
    ((np.full((10, 3), np.nan), np.arange(10) % 2), "NaN"),
    ((np.zeros((10, 3)), np.zeros(10)), "only one class"),
    ({"x": np.zeros((10, 3))}, "only one of x and y"),
])
def test_bad_arrays_are_one_line_value_errors_and_write_nothing(tmp_path, data, message):
    with pytest.raises(ValueError, match=message) as caught:
        pynas.search("random", data, budget=1, out=tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_unknown_options_and_data_types_are_type_errors(tmp_path):
    with pytest.raises(TypeError, match="budgett"):
        pynas.search("random", budgett=3)
    with pytest.raises(TypeError, match="data must be"):
        as_dataset(42)
    with pytest.raises(UsageError, match="no finished search"):
        pynas.load(tmp_path)


def test_a_space_that_cannot_take_the_data_is_refused_before_the_run(tmp_path):
    with pytest.raises(UsageError, match="mlp") as caught:
        pynas.search("random", (np.zeros((20, 3)), np.arange(20) % 2), space="nb201",
                     budget=1, out=tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()
