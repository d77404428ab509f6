"""Several objectives: parsing, Pareto ranking, hypervolume, the strategies and the outputs."""
from __future__ import annotations

import itertools
import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
from test_costs import NB201_CSV, fresh_cache, tiny  # noqa: F401  (the fixtures)

import pynas
from pynas.cli import main
from pynas.costs import CostModel
from pynas.errors import UsageError
from pynas.objectives import (
    Objective,
    crowding_distances,
    direction_of,
    dominates,
    hypervolume,
    non_dominated_fronts,
    pareto_front,
    pareto_order,
    parse_objectives,
)
from pynas.runs import load_checkpoint, save_checkpoint
from pynas.search.evolution import RegularizedEvolution
from pynas.search.pnas import ProgressiveSearch
from pynas.search.rl.reinforce import MnasReward
from pynas.spaces.base import SearchSpace
from pynas.spaces.nb201 import NB201Space

#: every test: the tiny space of test_costs registered, and a fresh cost cache (autouse)
pytestmark = pytest.mark.usefixtures("tiny")

#: the tiny space's table, with a second accuracy column; on its 3x32x32 networks, w2 has
#: 20,546 parameters and w4 41,082
ROWS = {"w2-seq": (50.0, 1.0), "w2-res": (60.0, 2.0), "w4-seq": (70.0, 3.0),
        "w4-res": (80.0, 4.0)}


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text("arch,acc_valid,other_acc\n" + "".join(
        f"{arch},{valid},{other}\n" for arch, (valid, other) in ROWS.items()))
    return path


def table_search(table: Path, out: Path, strategy: str, *extra: str) -> list[str]:
    return ["search", strategy, "--space", "tiny", "--benchmark", str(table), "--metric",
            "acc_valid", "--out", str(out), *extra]


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("name, maximize", [
    ("val_acc", True), ("cifar10_valid", True), ("test_r2", True), ("score", True),
    ("flops", False), ("latency_ms", False), ("val_rmse", False), ("test_rmse", False),
    ("train_seconds_200ep", False), ("val_loss", False), ("peak_activation_bytes", False),
    ("size", None), ("width", None),
])
def test_a_name_says_its_direction(name, maximize):
    assert direction_of(name) is maximize


def test_objectives_take_the_direction_of_their_name_or_the_one_given():
    objectives = parse_objectives("val_acc, flops, size:min")
    assert list(objectives) == [Objective("val_acc", True), Objective("flops", False),
                                Objective("size", False)]
    assert str(objectives) == "val_acc:max,flops:min,size:min"
    assert [o.name for o in objectives.costs] == ["flops"]
    assert [o.name for o in objectives.qualities] == ["val_acc", "size"]
    assert objectives.vector({"val_acc": 90, "flops": 5, "size": 2}) == (90.0, -5.0, -2.0)
    assert parse_objectives(["val_acc", "latency_ms:min"]).names == ["val_acc", "latency_ms"]
    assert parse_objectives(None) is None


@pytest.mark.parametrize("text, message", [
    ("val_acc", "needs two or more"),
    ("val_acc,val_acc", "names val_acc more than once"),
    ("val_acc,size", "give the direction of 'size'"),
    ("val_acc:min,flops", "val_acc is maximised (its name says so), not min"),
    ("val_acc,flops:max", "flops is minimised (its name says so), not max"),
    ("val_acc,size:up", "direction 'up' of 'size' must be max or min"),
    ("val_acc,,flops", "expects NAME[:max|min]"),
])
def test_bad_objectives_are_refused(text, message):
    with pytest.raises(UsageError, match="--objectives") as error:
        parse_objectives(text)
    assert message in str(error.value)


def test_a_missing_metric_is_named_with_those_there_are():
    with pytest.raises(UsageError, match=r"flops not among the metrics of the trial \(acc\)"):
        parse_objectives("acc,flops").vector({"acc": 1.0})


# ------------------------------------------------------------------ ranking and volume


def test_fronts_by_hand():
    points = [(1, 5), (2, 4), (3, 1), (1, 1), (2, 4), (0, 0), (2, 1)]
    assert dominates((2, 4), (1, 1)) and not dominates((2, 4), (2, 4))
    assert not dominates((1, 5), (2, 4)) and not dominates((2, 4), (1, 5))
    assert non_dominated_fronts(points) == [[0, 1, 2, 4], [6], [3], [5]]
    assert pareto_front(points) == [0, 1, 2, 4] and pareto_front([]) == []


def test_crowding_keeps_the_ends_and_prefers_the_lonely():
    points = [(0, 10), (1, 9), (2, 8), (6, 4), (10, 0)]
    distance = crowding_distances(points, range(5))
    assert distance[0] == distance[4] == math.inf
    assert distance[3] > distance[2] > distance[1]
    assert pareto_order(points + [(0, 0)]) == [0, 4, 3, 2, 1, 5]


def brute_force_volume(points, reference) -> int:
    """Unit cells above ``reference`` dominated by a point (integer coordinates)."""
    ranges = [range(r, max(p[axis] for p in points)) for axis, r in enumerate(reference)]
    return sum(any(all(c < x for c, x in zip(cell, p)) for p in points)
               for cell in itertools.product(*ranges))


@pytest.mark.parametrize("dimensions", [1, 2, 3])
def test_hypervolume_counts_the_dominated_cells(dimensions):
    generator = random.Random(dimensions)
    for _ in range(20):
        points = [tuple(generator.randint(-2, 7) for _ in range(dimensions))
                  for _ in range(generator.randint(1, 8))]
        reference = tuple(generator.randint(-3, 1) for _ in range(dimensions))
        expected = brute_force_volume(points, reference)
        assert hypervolume(points, reference) == pytest.approx(expected), (points, reference)


# --------------------------------------------------------------------------- strategies


class Grid(SearchSpace):
    """64 architectures of three decisions, never built."""

    name = "grid"
    num_choices = (4, 4, 4)

    def decision_names(self):
        return ["a", "b", "c"]

    def to_string(self, arch):
        return "-".join(map(str, arch))

    def from_string(self, text):
        return tuple(int(part) for part in text.split("-"))

    def to_genotype(self, arch):
        return {"space": self.name, "arch": self.to_string(arch)}

    def from_genotype(self, genotype):
        return self.from_string(genotype["arch"])

    def build(self, arch, input_shape, num_outputs):
        raise NotImplementedError


def grid_value(arch) -> tuple[float, float]:
    """Accuracy grows with the sum of the decisions, and so does the cost."""
    return (float(sum(arch)) + 0.1 * arch[0], -float(sum(arch) ** 2 + arch[2]))


def test_evolution_keeps_a_pareto_ranked_population():
    objectives = parse_objectives("acc,cost:min")
    evolution = RegularizedEvolution(Grid(), seed=3, population_size=6, sample_size=3,
                                     objectives=objectives)
    for _ in range(40):
        for arch in evolution.ask(1):
            before = list(evolution._population) + [(arch, grid_value(arch))]
            evolution.tell(arch, grid_value(arch))
            after = list(evolution._population)
            assert len(after) == min(len(before), 6)
            if len(before) > 6:  # the member that left was in the last front
                (gone,) = [member for member in before if member not in after] or [before[-1]]
                fronts = non_dominated_fronts([value for _, value in before])
                assert before.index(gone) in fronts[-1]


def test_the_tournament_winner_is_the_best_ranked_contestant():
    evolution = RegularizedEvolution(Grid(), seed=0, population_size=4, sample_size=4,
                                     objectives=parse_objectives("acc,cost:min"))
    members = [((0, 0, 0), (0.0, 0.0)), ((1, 0, 0), (1.0, -5.0)), ((2, 0, 0), (0.5, -6.0)),
               ((3, 0, 0), (2.0, -1.0))]
    for arch, value in members:  # (3,0,0) dominates all but (0,0,0)
        evolution._population.append((arch, value))
    assert evolution._tournament() in ((0, 0, 0), (3, 0, 0))  # the first front's two


def test_a_restored_multi_objective_evolution_continues_the_same(tmp_path):
    def make():
        return RegularizedEvolution(Grid(), seed=5, population_size=5, sample_size=2,
                                    objectives=parse_objectives("acc,cost:min"))

    def step(strategy, count):
        asked = []
        for _ in range(count):
            for arch in strategy.ask(1):
                strategy.tell(arch, grid_value(arch))
                asked.append(arch)
        return asked

    straight = make()
    step(straight, 12)
    resumed = make()
    step(resumed, 12)
    save_checkpoint(tmp_path / "state.pt", resumed.state_dict())
    restored = make()
    restored.load_state_dict(load_checkpoint(tmp_path / "state.pt"))
    assert step(restored, 10) == step(straight, 10)


def test_the_mnasnet_reward():
    objectives = parse_objectives("val_acc,flops")
    soft = MnasReward(objectives, target=100.0)
    assert soft({"val_acc": 80.0, "flops": 100.0}) == pytest.approx(80.0)
    assert soft({"val_acc": 80.0, "flops": 200.0}) == pytest.approx(80.0 * 2 ** -0.07)
    assert soft({"val_acc": 80.0, "flops": 50.0}) == pytest.approx(80.0 * 0.5 ** -0.07)
    hard = MnasReward(objectives, target=100.0, kind="hard")
    assert hard({"val_acc": 80.0, "flops": 50.0}) == pytest.approx(80.0)
    assert hard({"val_acc": 80.0, "flops": 400.0}) == pytest.approx(20.0)
    steep = MnasReward(objectives, target=100.0, weight=0.5)
    assert steep({"val_acc": 80.0, "flops": 400.0}) == pytest.approx(40.0)
    for bad, message in [
        (dict(objectives=parse_objectives("val_acc,test_acc"), target=1.0), "an accuracy"),
        (dict(objectives=objectives, target=None), "needs --cost-target"),
        (dict(objectives=objectives, target=1.0, kind="steep"), "soft or hard"),
        (dict(objectives=objectives, target=1.0, weight=0.0), "must be positive"),
    ]:
        with pytest.raises(UsageError, match=message):
            MnasReward(**bad)


def test_pnas_takes_the_cheapest_of_equally_promising_children(one_thread):
    space = NB201Space()
    model = CostModel(space, (3, 8, 8), 10)
    pnas = ProgressiveSearch(space, objectives=parse_objectives("val_acc,flops"), costs=model)
    archs = [(3, 3, 3, 3, 3, 3), (2, 2, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1), (3, 2, 1, 0, 3, 2)]
    cheapest = min(range(4), key=lambda i: space.count_flops(archs[i], (3, 8, 8), 10))
    assert pnas._best(archs, [90.0] * 4, 1) == [cheapest]
    # the most accurate stays in the front whatever it costs
    assert 0 in pnas._best(archs, [95.0, 90.0, 90.0, 90.0], 2)
    with pytest.raises(UsageError, match="one metric that training gives"):
        ProgressiveSearch(space, objectives=parse_objectives("val_acc,test_acc"), costs=model)


# ------------------------------------------------------------------- searches and files


def finished_metrics(out: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(out / "trials.sqlite") as connection:
        return [json.loads(metrics) for (metrics,) in
                connection.execute("SELECT metrics FROM trials WHERE state = 'finished'")]


@pytest.mark.parametrize("strategy, extra", [
    ("random", []), ("evolution", ["--population", "2", "--sample-size", "1"]),
    ("rl", ["--cost-target", "30k", "--controller-batch", "2"]),
])
def test_a_search_writes_its_pareto_front(table, tmp_path, capsys, strategy, extra,
                                          one_thread):
    out = tmp_path / "run"
    assert main(table_search(table, out, strategy, "--budget", "6", "--objectives",
                             "acc_valid,params", *extra)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["objectives"] == [{"name": "acc_valid", "direction": "max"},
                                    {"name": "params", "direction": "min"}]
    every = finished_metrics(out)
    vectors = [(m["acc_valid"], -m["params"]) for m in every]
    front = {(t["acc_valid"], -t["params"]) for t in result["pareto"]}
    assert front == {vectors[i] for i in pareto_front(vectors)}
    pareto = json.loads((out / "pareto.json").read_text())
    assert [t["trial"] for t in pareto["trials"]] == [t["trial"] for t in result["pareto"]]
    # on a table the counts, not the peak activation (a forward pass per cell)
    assert all({"params", "flops"} <= set(t["metrics"]) for t in pareto["trials"])
    assert not any("peak_activation_bytes" in t["metrics"] for t in pareto["trials"])
    # best first in the first objective; best is still the highest score
    assert [t["acc_valid"] for t in result["pareto"]] == sorted(
        (t["acc_valid"] for t in result["pareto"]), reverse=True)
    assert result["best"]["score"] == max(m["score"] for m in every)
    assert (out / "pareto.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "pareto front" in shown and "acc_valid (max)" in shown
    for trial in result["pareto"]:
        assert trial["arch"] in shown


def test_your_own_metrics_as_objectives(tmp_path, one_thread):
    def evaluate(candidate):
        return {"acc": 10.0 * sum(candidate.arch), "size": candidate.arch[0] - candidate.arch[1]}

    result = pynas.search("evolution", evaluate=evaluate, input_shape=(1, 4, 4), num_outputs=3,
                          space="tiny", budget=4, metric="acc", objectives="acc,size:min",
                          population=2, sample_size=1, out=tmp_path / "run")
    assert {(t["acc"], t["size"]) for t in result.pareto} <= {(10.0, -1), (20.0, 0), (0.0, 0)}
    assert (20.0, 0) in {(t["acc"], t["size"]) for t in result.pareto}
    with pytest.raises(UsageError, match="width not among the metrics of the trial"):
        pynas.search("random", evaluate=evaluate, input_shape=(1, 4, 4), num_outputs=3,
                     space="tiny", budget=2, metric="acc", objectives="acc,width:min",
                     out=tmp_path / "other")


def test_a_table_search_measures_the_peak_activation_an_objective_names(table, tmp_path,
                                                                         one_thread):
    out = tmp_path / "run"
    assert main(table_search(table, out, "random", "--budget", "4", "--objectives",
                             "acc_valid,peak_activation_bytes")) == 0
    assert all(m["peak_activation_bytes"] > 0 for m in finished_metrics(out))


def test_a_latency_objective_measures_latency(table, tmp_path, one_thread):
    out = tmp_path / "run"
    assert main(table_search(table, out, "random", "--budget", "4", "--objectives",
                             "acc_valid,latency_ms")) == 0
    assert all(m["latency_ms"] > 0 for m in finished_metrics(out))
    assert json.loads((out / "config.json").read_text())["measure_latency"] is True


def test_resume_continues_a_multi_objective_search(table, tmp_path, one_thread):
    base = ["--objectives", "acc_valid,params", "--population", "2", "--sample-size", "1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(table_search(table, straight, "evolution", "--budget", "8", *base)) == 0
    assert main(table_search(table, resumed, "evolution", "--budget", "3", *base)) == 0
    assert main(table_search(table, resumed, "evolution", "--budget", "8", "--resume",
                             *base)) == 0
    assert [m["acc_valid"] for m in finished_metrics(straight)] == [
        m["acc_valid"] for m in finished_metrics(resumed)]
    assert main(table_search(table, resumed, "evolution", "--budget", "9", "--resume",
                             "--objectives", "acc_valid,flops", "--population", "2",
                             "--sample-size", "1")) == 2


def bad_objective_cases(table: Path, out: Path) -> list[tuple[list[str], str]]:
    return [
        (table_search(table, out, "random", "--budget", "2", "--objectives", "acc_valid,cost:min"),
         "'cost' is not a metric of the table"),
        (table_search(table, out, "random", "--budget", "2", "--objectives",
                      "acc_valid:min,params"), "acc_valid is maximised"),
        (table_search(table, out, "random", "--budget", "2", "--objectives", "acc_valid"),
         "needs two or more"),
        (table_search(table, out, "rl", "--budget", "2", "--objectives", "acc_valid,params"),
         "needs --cost-target"),
        (table_search(table, out, "rl", "--budget", "2", "--cost-target", "5"),
         "needs --objectives"),
        (table_search(table, out, "rl", "--budget", "2", "--objectives", "acc_valid,params",
                      "--cost-target", "0"), "--cost-target must be a positive count"),
        (table_search(table, out, "pnas", "--budget", "2", "--objectives",
                      "acc_valid,other_acc"), "one metric that training gives"),
    ]


def test_bad_objectives_are_one_line_exit_2_and_write_nothing(table, tmp_path, capsys):
    out = tmp_path / "run"
    for argv, message in bad_objective_cases(table, out):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("pynas: error:") and message in error, (argv, error)
        assert error.count("\n") == 1 and "Traceback" not in error
        assert not out.exists()


def test_the_nb201_table_front_of_accuracy_and_multiply_adds(tmp_path, one_thread):
    if not NB201_CSV.is_file():
        pytest.skip(f"{NB201_CSV} is absent")
    result = pynas.search("pnas", space="nb201", benchmark=str(NB201_CSV),
                          metric="cifar10_valid", budget=12, objectives="cifar10_valid,flops",
                          out=tmp_path / "run")
    space = NB201Space()
    for trial in result.pareto:
        assert trial["flops"] == space.count_flops(space.from_string(trial["arch"]))
    assert len(result.pareto) >= 2
    assert torch.get_num_threads() == 1
