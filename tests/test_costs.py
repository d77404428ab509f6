"""Cost measures before training (pynas.costs) and the constraints of a search."""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pynas
from pynas import costs
from pynas.cli import main
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.runs import RunDirectory
from pynas.search import loop
from pynas.search.base import Strategy
from pynas.spaces import SPACES, get_space
from pynas.spaces.base import SearchSpace
from pynas.spaces.nb201 import NB201Space

NB201_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"


class Residual(nn.Module):
    """``relu(x) + x``: keeps ``x`` alive while the sum is made."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(features) + features


class TinySpace(SearchSpace):
    """Four networks: a 3x3 convolution to 2 or 4 channels (decision 0), then ReLU or the
    residual ``relu(x) + x`` (decision 1), then a linear layer."""

    name = "tiny"
    min_image_size = 4
    num_choices = (2, 2)
    builds = 0  # networks built, by every instance

    def decision_names(self) -> list[str]:
        return ["width", "residual"]

    def to_string(self, arch) -> str:
        return f"w{2 + 2 * arch[0]}-{'res' if arch[1] else 'seq'}"

    def from_string(self, text: str):
        strings = {self.to_string(arch): arch for arch in ((0, 0), (0, 1), (1, 0), (1, 1))}
        if text not in strings:
            raise ValueError(f"tiny: unknown architecture {text!r}")
        return strings[text]

    def to_genotype(self, arch) -> dict[str, Any]:
        return {"space": self.name, "arch": self.to_string(arch)}

    def from_genotype(self, genotype: dict[str, Any]):
        return self.from_string(genotype["arch"])

    def build(self, arch, input_shape, num_outputs) -> nn.Module:
        self.check_input(input_shape)
        TinySpace.builds += 1
        channels, height, width = input_shape
        width_out = 2 + 2 * arch[0]
        return nn.Sequential(
            nn.Conv2d(channels, width_out, 3, padding=1),
            Residual() if arch[1] else nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width_out * height * width, num_outputs),
        )


#: every architecture of TinySpace on 1x4x4 images with 3 outputs, counted by hand:
#: params = conv (1*w*9 + w) + linear (16w*3 + 3); flops = conv (16w outputs * 9) + linear
#: (3 outputs * 16w); peak bytes = input (16 floats) + the convolution's output (16w) + the
#: ReLU's (16w), and for the residual also the sum (16w) while relu(x) and x are alive
HAND_COUNTED = {
    (0, 0): {"params": 20 + 99, "flops": 288 + 96, "peak_activation_bytes": 4 * (16 + 32 + 32)},
    (0, 1): {"params": 20 + 99, "flops": 288 + 96,
             "peak_activation_bytes": 4 * (16 + 32 + 32 + 32)},
    (1, 0): {"params": 40 + 195, "flops": 576 + 192,
             "peak_activation_bytes": 4 * (16 + 64 + 64)},
    (1, 1): {"params": 40 + 195, "flops": 576 + 192,
             "peak_activation_bytes": 4 * (16 + 64 + 64 + 64)},
}

#: on the table's 3x32x32 inputs and 10 classes: w=2 has 20,546 parameters, w=4 41,082
TABLE_SCORES = {"w2-seq": 50.0, "w2-res": 60.0, "w4-seq": 70.0, "w4-res": 80.0}


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test measures from scratch."""
    monkeypatch.setattr(costs, "_CACHE", {})


@pytest.fixture
def tiny(monkeypatch) -> TinySpace:
    monkeypatch.setitem(SPACES, "tiny", TinySpace)
    return TinySpace()


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text("arch,acc_valid\n" + "".join(
        f"{arch},{score}\n" for arch, score in TABLE_SCORES.items()))
    return path


def table_search(table: Path, out: Path, *extra: str, strategy: str = "random") -> list[str]:
    return ["search", strategy, "--space", "tiny", "--benchmark", str(table), "--metric",
            "acc_valid", "--out", str(out), *extra]


# ------------------------------------------------------------------------- the measures


@pytest.mark.parametrize("arch", list(HAND_COUNTED))
def test_measures_equal_the_hand_counted_values(tiny, arch, one_thread):
    assert costs.measure(tiny, arch, (1, 4, 4), 3) == HAND_COUNTED[arch]


def test_an_in_place_result_and_a_view_take_no_memory_of_their_own(one_thread):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    tracker = costs._LiveTensors()
    with torch.no_grad(), tracker:
        model(torch.zeros(1, 1, 4, 4))
    # the input, the convolution's output (ReLU'd in place, flattened as a view), the logits
    assert tracker.peak_bytes == 4 * (16 + 32 + 3)
    assert tracker.live_bytes == 0  # everything was freed


class CountsCalls(nn.Module):
    """Doubles its input, and adds 1 in place to a buffer of 1,000 floats."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(1000))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return 2 * features


def test_a_buffer_changed_in_place_is_not_an_activation():
    model, tracker = CountsCalls(), costs._LiveTensors()
    with torch.no_grad(), tracker:
        model(torch.zeros(1, 16))
    assert tracker.peak_bytes == 4 * (16 + 16)


def test_measures_are_cached_per_architecture_and_shape(tiny, one_thread):
    TinySpace.builds = 0
    first = costs.measure(tiny, (1, 1), (1, 4, 4), 3)
    built = TinySpace.builds
    assert built > 0
    assert costs.measure(TinySpace(), (1, 1), (1, 4, 4), 3) == first  # another instance
    assert TinySpace.builds == built
    assert costs.measure(tiny, (1, 1), (1, 8, 8), 3)["flops"] == 4 * first["flops"]
    assert TinySpace.builds > built


def test_the_cache_tells_spaces_of_other_settings_apart(one_thread):
    small, large = NB201Space(channels=2, cells_per_stage=1), NB201Space(4, 1)
    arch = (3,) * 6
    assert costs.parameters(small, arch, (3, 8, 8), 10) < costs.parameters(large, arch,
                                                                            (3, 8, 8), 10)


def _flushing_denormals() -> bool:
    return float(torch.tensor([1e-39]) * 1.0) == 0.0


@pytest.mark.parametrize("before", [False, True])
def test_latency_passes_flush_denormals_and_restore_the_setting(tiny, monkeypatch, one_thread,
                                                                 before):
    if not torch.set_flush_denormal(before):
        pytest.skip("this CPU cannot flush denormals")
    seen: list[bool] = []
    build = TinySpace.build

    def recording_build(self, *args):
        model = build(self, *args)
        model.register_forward_pre_hook(lambda *_: seen.append(_flushing_denormals()))
        return model

    monkeypatch.setattr(TinySpace, "build", recording_build)
    monkeypatch.setattr(costs, "LATENCY_MIN_SECONDS", 0.0)
    try:
        costs.latency(tiny, (1, int(before)), (1, 4, 4), 3)
        assert seen and all(seen)
        assert _flushing_denormals() == before
    finally:
        torch.set_flush_denormal(False)


def test_latency_is_a_median_of_timed_forward_passes(tiny, monkeypatch, one_thread):
    passes: list[int] = []  # the batch size of each forward pass
    build = TinySpace.build

    def counted_build(self, *args):
        model = build(self, *args)
        model.register_forward_pre_hook(lambda module, inputs: passes.append(len(inputs[0])))
        return model

    monkeypatch.setattr(TinySpace, "build", counted_build)
    counts = costs.measure(tiny, (1, 0), (1, 4, 4), 3)  # runs forward passes of its own
    passes.clear()
    monkeypatch.setattr(costs, "LATENCY_MIN_SECONDS", 0.0)  # the count of passes alone
    measures = costs.measure(tiny, (1, 0), (1, 4, 4), 3, latency_batch_size=5)
    assert {key: measures[key] for key in counts} == counts
    repeats = costs.LATENCY_WARMUP + costs.LATENCY_REPEATS
    assert passes.count(1) == repeats and passes.count(5) == repeats
    assert measures["latency_ms"] > 0 and measures["batch_latency_ms"] > 0
    assert measures["latency_batch_size"] == 5 and measures["latency_threads"] == 1
    passes.clear()
    assert costs.measure(tiny, (1, 0), (1, 4, 4), 3, latency_batch_size=5) == measures
    assert passes == []  # cached
    # passes of a fraction of a millisecond: more of them, up to the most allowed
    monkeypatch.setattr(costs, "LATENCY_MIN_SECONDS", 1e6)
    costs.latency(tiny, (0, 0), (1, 4, 4), 3)
    assert passes.count(1) == costs.LATENCY_WARMUP + costs.LATENCY_MAX_REPEATS


@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_can_be_measured(name, one_thread):
    space = get_space(name)
    arch = tuple(random.Random(0).randrange(count) for count in space.num_choices)
    shape = (5,) if space.input_kind == "features" else (1, 8, 8)
    measures = costs.measure(space, arch, shape, 3)
    assert measures["params"] == space.count_parameters(arch, shape, 3) > 0
    assert measures["flops"] == space.count_flops(arch, shape, 3) > 0
    assert measures["peak_activation_bytes"] >= 4 * (8 * 8 + 3 if shape != (5,) else 5 + 3)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,count", [
    ("500k", 500_000), ("500K", 500_000), ("2M", 2_000_000), ("1.5G", 1_500_000_000),
    ("60M", 60_000_000), ("2e6", 2_000_000), ("1234", 1234), (" 3M ", 3_000_000),
    (2_000_000, 2_000_000), (1.5e3, 1500),
])
def test_counts_take_si_suffixes(text, count):
    assert costs.parse_count(text, "--max-params") == count


@pytest.mark.parametrize("text,message", [
    ("2m", "unknown suffix 'm'"), ("2X", "unknown suffix 'X'"), ("M", "expects a count"),
    ("two", "expects a count"), ("0", "positive"), ("-5M", "positive"), ("0.4", "positive"),
    (True, "expects a count"), ("", "expects a count"),
])
def test_bad_counts_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        costs.parse_count(text, "--max-params")


@pytest.mark.parametrize("value", ["0", -1, "abc", "nan", float("inf"), True])
def test_bad_milliseconds_are_refused(value):
    with pytest.raises(UsageError, match="--max-latency-ms must be a positive number"):
        costs.parse_milliseconds(value, "--max-latency-ms")


# -------------------------------------------------------------------- constrained searches


class Counting:
    """An evaluation function that records what it was given to evaluate."""

    def __init__(self) -> None:
        self.evaluated: list[tuple[int, ...]] = []

    def __call__(self, candidate) -> float:
        self.evaluated.append(candidate.arch)
        return float(sum(candidate.arch))


@pytest.mark.parametrize("strategy", ["random", "evolution", "rl"])
def test_only_feasible_candidates_are_trained_and_counted(tiny, tmp_path, strategy,
                                                           one_thread):
    evaluate = Counting()
    result = pynas.search(strategy, evaluate=evaluate, input_shape=(1, 4, 4), num_outputs=3,
                          space="tiny", budget=6, max_params="150", out=tmp_path / "run")
    assert len(evaluate.evaluated) == 6 == result.result["evaluations"]
    assert {arch[0] for arch in evaluate.evaluated} == {0}  # width 2: 119 parameters
    assert result.result["infeasible"] > 0
    assert result.result["costs"]["constraints"] == {"max_params": 150}
    with sqlite3.connect(tmp_path / "run" / "trials.sqlite") as connection:
        rows = [json.loads(metrics) for (metrics,) in
                connection.execute("SELECT metrics FROM trials WHERE state = 'finished'")]
    assert len(rows) == 6
    for metrics in rows:  # every trial records its measures
        assert metrics["params"] == 119 and metrics["flops"] == 384
        assert metrics["peak_activation_bytes"] in (320, 448)
        assert "latency_ms" not in metrics
    assert result.best["metrics"]["params"] == 119


def test_a_search_without_constraints_records_the_measures_of_every_trial(tiny, table,
                                                                          tmp_path, capsys):
    out = tmp_path / "run"
    assert main(table_search(table, out, "--budget", "4", "--measure-latency")) == 0
    stdout = capsys.readouterr().out
    assert "infeasible" not in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["infeasible"] == 0 and result["costs"]["constraints"] == {}
    assert result["costs"]["input_shape"] == [3, 32, 32] and result["costs"]["num_outputs"] == 10
    with sqlite3.connect(out / "trials.sqlite") as connection:
        rows = [json.loads(metrics) for (metrics,) in
                connection.execute("SELECT metrics FROM trials WHERE state = 'finished'")]
    assert sorted(row["params"] for row in rows) == [20_546, 20_546, 41_082, 41_082]
    assert all(row["latency_ms"] > 0 and row["batch_latency_ms"] > 0 for row in rows)
    assert {row["latency_batch_size"] for row in rows} == {32}  # the trainer's default


def test_a_table_search_skips_the_infeasible_and_says_so(tiny, table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(table_search(table, out, "--budget", "5", "--max-params", "30k")) == 0
    stdout = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 5 and result["infeasible"] >= 4
    assert f"{result['infeasible']} infeasible" in stdout
    assert result["best"]["arch"] == "w2-res"  # not w4-res, the table's best
    assert json.loads((out / "config.json").read_text())["max_params"] == 30_000


def test_nothing_feasible_is_one_clear_line(tiny, table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(table_search(table, out, "--budget", "3", "--max-params", "100",
                             "--threads", "1")) == 2  # no note about busy cores
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "no candidate met the constraints (--max-params 100)" in error
    assert f"{loop.MAX_INFEASIBLE_IN_A_ROW} broke them" in error
    assert not (out / "result.json").exists()


def test_the_latency_limit_is_measured_on_the_device(tiny, table, tmp_path, capsys,
                                                     one_thread):
    assert main(table_search(table, tmp_path / "slow", "--budget", "3",
                             "--max-latency-ms", "1e-9")) == 2
    assert "no candidate met the constraints (--max-latency-ms 1e-09)" in capsys.readouterr().err
    out = tmp_path / "fast"
    assert main(table_search(table, out, "--budget", "3", "--max-latency-ms", "1e6")) == 0
    best = json.loads((out / "result.json").read_text())["best"]
    assert 0 < best["metrics"]["latency_ms"] < 1e6
    assert best["metrics"]["latency_threads"] == torch.get_num_threads()


class FeasibleOnce(Strategy):
    """Proposes the feasible (0, 0) once, then only the infeasible (1, 0)."""

    name = "feasible-once"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.asked = 0
        self.told: list[tuple[tuple[int, ...], float | None]] = []

    def ask(self, count: int) -> list[tuple[int, ...]]:
        self.asked += 1
        return [(0, 0) if self.asked == 1 else (1, 0)]

    def tell(self, arch, score) -> None:
        self.told.append((arch, score))

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked = state["asked"]


class Constant(Evaluator):
    def evaluate(self, space, arch) -> dict[str, Any]:
        return {"score": 1.0, "seconds": 0.0}


def test_a_stuck_search_keeps_what_it_found_and_says_why_it_stopped(tiny, tmp_path,
                                                                   monkeypatch, one_thread):
    monkeypatch.setattr(loop, "MAX_INFEASIBLE_IN_A_ROW", 20)
    strategy = FeasibleOnce(tiny)
    model = costs.CostModel(tiny, (1, 4, 4), 3, costs.Constraints(max_params=150))
    result = loop.run_search(strategy, Constant(), RunDirectory.prepare(tmp_path / "run"),
                             loop.Budget(5), costs=model)
    assert result["evaluations"] == 1 and result["infeasible"] == 20
    assert result["stopped"] == "20 candidates in a row broke the constraints"
    # the feasible one was told its score, each infeasible one None, as a failure
    assert strategy.told == [((0, 0), 1.0)] + [((1, 0), None)] * 20


def test_resume_continues_the_count_of_infeasible_candidates(tiny, table, tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert main(table_search(table, whole, "--budget", "6", "--max-params", "30k")) == 0
    assert main(table_search(table, halves, "--budget", "3", "--max-params", "30k")) == 0
    assert main(table_search(table, halves, "--budget", "6", "--max-params", "30000",
                             "--resume")) == 0  # 30k and 30000 are the same limit
    results = [json.loads((out / "result.json").read_text()) for out in (whole, halves)]
    assert results[0]["infeasible"] == results[1]["infeasible"] > 0
    assert results[0]["evaluations"] == results[1]["evaluations"] == 6


def test_resume_refuses_other_constraints(tiny, table, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(table_search(table, out, "--budget", "2", "--max-params", "30k")) == 0
    capsys.readouterr()
    for options, message in (
        (["--max-params", "40k"], "was started with --max-params 30000, not 40000"),
        ([], "was started with --max-params 30000, not None"),
        (["--max-params", "30k", "--max-flops", "1G"], "--max-flops None, not 1000000000"),
    ):
        assert main(table_search(table, out, "--budget", "4", *options, "--resume")) == 2
        assert message in capsys.readouterr().err


def bad_constraint_cases(table: Path, out: Path) -> list[tuple[list[str], str]]:
    return [
        (table_search(table, out, "--budget", "2", "--max-params", "2X"), "unknown suffix 'X'"),
        (table_search(table, out, "--budget", "2", "--max-params", "0"),
         "--max-params must be a positive count"),
        (table_search(table, out, "--budget", "2", "--max-flops=-60M"),
         "--max-flops must be a positive count"),
        (table_search(table, out, "--budget", "2", "--max-flops", "60m"),
         "unknown suffix 'm'; use k, M, G or T"),
        (table_search(table, out, "--budget", "2", "--max-latency-ms", "0"),
         "--max-latency-ms must be a positive number"),
        (table_search(table, out, "--budget", "2", "--max-latency-ms", "fast"),
         "--max-latency-ms must be a positive number"),
        (["search", "darts", "--max-params", "2M", "--out", str(out)],
         "darts trains one supernet"),
        (table_search(table, out, "--budget", "2", "--measure-latency", "--device", "tpu:x"),
         "unknown device 'tpu:x'"),
    ]


def test_bad_constraints_are_one_line_exit_2_and_write_nothing(tiny, table, tmp_path,
                                                              capsys):
    out = tmp_path / "run"
    for argv, message in bad_constraint_cases(table, out):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("pynas: error:") and message in error, (argv, error)
        assert error.count("\n") == 1 and "Traceback" not in error
        assert not out.exists()


def test_the_python_api_refuses_bad_constraints_before_writing(tiny, tmp_path):
    with pytest.raises(UsageError, match="--max-flops must be a positive count"):
        pynas.search("random", evaluate=Counting(), input_shape=(1, 4, 4), num_outputs=3,
                     space="tiny", budget=2, max_flops=-1, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_nb201_table_searched_under_a_multiply_add_limit(tmp_path, one_thread):
    if not NB201_CSV.is_file():
        pytest.skip(f"{NB201_CSV} is absent")
    result = pynas.search("evolution", space="nb201", benchmark=str(NB201_CSV),
                          metric="cifar10_valid", budget=5, max_flops="20M",
                          out=tmp_path / "run").result
    assert result["evaluations"] == 5 and result["infeasible"] > 0
    space = NB201Space()
    for trial in pynas.load(tmp_path / "run").trials:
        flops = trial.metrics["flops"]
        assert flops == space.count_flops(trial.decisions) <= 20_000_000
