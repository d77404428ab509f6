"""Progressive search: nb201 progression, levels, surrogate ranking, records, resume, CLI,
budgets."""
import argparse
import io
import json
from pathlib import Path

import pytest
import torch
from test_search_cli import fast_surrogate

from pynas import cli
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.runs import RunDirectory, load_checkpoint
from pynas.search import cli as search_cli
from pynas.search.loop import Budget, run_search
from pynas.search.pnas import (
    NB201Progression,
    ProgressiveSearch,
    build,
    run_pnas_on_table,
    spearman,
    write_rank_correlation,
)
from pynas.spaces import SPACES
from pynas.spaces.nb201 import OPERATIONS as NB201_OPERATIONS
from pynas.spaces.nb201 import NB201Space
from pynas.spaces.pnas import OPERATIONS, PNASSpace

NB201_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"
# a made-up additive score per operation: an objective the surrogate can learn
OPERATION_SCORES = dict(zip(OPERATIONS, (3.0, 0.0, 1.0, 1.5, 2.5, 2.0, 0.5, 2.2)))


pytestmark = pytest.mark.usefixtures("one_thread")


def cell_score(space: PNASSpace, arch) -> float:
    """Higher for better operations and for more blocks, so levels improve."""
    blocks = space.cell_blocks(arch)
    return 50.0 + sum(OPERATION_SCORES[OPERATIONS[block.operation_a]]
                      + OPERATION_SCORES[OPERATIONS[block.operation_b]] + block.input_a
                      for block in blocks)


class ScoreEvaluator(Evaluator):
    """Scores pnas cells with :func:`cell_score`, instantly."""

    def evaluate(self, space, arch):
        score = cell_score(space, arch)
        return {"score": score, "val_acc": score, "seconds": 0.0}


def small_search(seed: int = 0, **options) -> ProgressiveSearch:
    """The paper's schedule (one round per level, the LSTM) on a small pnas space."""
    settings = {"beam": 3, "levels": 3, "initial": 20, "members": 2, "surrogate_steps": 60,
                "surrogate": "lstm", "rounds": 1}
    return ProgressiveSearch(PNASSpace(blocks=3), seed=seed, **{**settings, **options})


def drive(strategy: ProgressiveSearch, asks: list, stop_after: int | None = None) -> None:
    """Ask one at a time and tell the score, as the serial loop does."""
    space = strategy.space
    while not strategy.finished() and (stop_after is None or len(asks) < stop_after):
        (arch,) = strategy.ask(1)
        asks.append(arch)
        strategy.tell(arch, cell_score(space, arch))


def test_nb201_progression_grows_node_by_node_with_a_skip_chain():
    space = NB201Space()
    progression = NB201Progression(space)
    first = progression.first_level()
    assert [space.to_string(arch) for arch in first][3] == (
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    )
    second = progression.children(first[3], 1)
    assert len(second) == len(set(second)) == 25
    assert all(child[0] == first[3][0] and child[3:] == first[3][3:] for child in second)
    third = [c for parent in second for c in progression.children(parent, 2)]
    assert len(third) == len(set(third)) == 25 * 125
    assert progression.children(third[0], 3) == []
    assert progression.tokens(third[-1])[5] == [5, 6 + third[-1][5]]
    assert len(NB201_OPERATIONS) ** 6 == 5 * 25 * 125


def test_levels_expand_the_best_cells_and_evaluate_the_predicted_best():
    strategy = small_search()
    space = strategy.space
    first = strategy.ask(100)
    assert len(first) == 20 and all(space.num_blocks(arch) == 1 for arch in first)
    assert strategy.ask(5) == []  # waits for the level's results
    for arch in first:
        strategy.tell(arch, cell_score(space, arch))
    best_parents = sorted(first, key=lambda arch: -cell_score(space, arch))[:3]
    second = strategy.ask(100)
    assert len(second) == 3 and strategy.level == 2
    assert all(space.cell_blocks(child)[:1] in [space.cell_blocks(p) for p in best_parents]
               for child in second)
    # the children asked are the ones the surrogate ranks highest among all children
    children = {c for parent in best_parents for c in space.children(parent)}
    means, _ = strategy.surrogate.predict([space.tokens(c) for c in children])
    assert sorted(means)[-3] <= min(strategy.surrogate.predict(
        [space.tokens(c) for c in second])[0]) + 1e-4  # batch-size rounding
    for arch in second:
        strategy.tell(arch, cell_score(space, arch))
    third = strategy.ask(100)
    assert all(space.num_blocks(arch) == 3 for arch in third)
    for arch in third:
        strategy.tell(arch, None if arch == third[0] else cell_score(space, arch))  # one fails
    assert strategy.finished() and strategy.ask(1) == []
    records = strategy.rank_correlations()
    assert [r["level"] for r in records] == [2, 3]
    assert [r["evaluated"] for r in records] == [3, 2]
    assert records[1]["cells"][0]["observed"] is None
    for record in records:
        expected = spearman([c["predicted"] for c in record["cells"] if c["observed"]],
                            [c["observed"] for c in record["cells"] if c["observed"]])
        assert record["spearman"] == expected


def test_surrogate_ranking_beats_chance_on_a_learnable_objective():
    strategy = small_search(initial=None, beam=8, levels=2, surrogate="mlp",
                            surrogate_steps=300)
    asks = []
    drive(strategy, asks)
    assert len(asks) == 136 + 8
    space = strategy.space
    chosen = [cell_score(space, arch) for arch in asks[136:]]
    every_child = [cell_score(space, c) for p in asks[:136] for c in space.children(p)]
    # the 8 children picked by the surrogate beat the average two-block cell by far
    assert sum(chosen) / 8 > sum(every_child) / len(every_child) + 3


def test_resume_from_a_checkpoint_mid_level_continues_exactly():
    uninterrupted = []
    reference = small_search(seed=4)
    drive(reference, uninterrupted)
    for stop in (5, 22, 24):  # inside level 1, level 2 and level 3
        resumed_asks = []
        first = small_search(seed=4)
        drive(first, resumed_asks, stop_after=stop)
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        second = small_search(seed=4)
        second.load_state_dict(torch.load(buffer, weights_only=True))  # as the loop reads
        drive(second, resumed_asks)
        assert resumed_asks == uninterrupted
        assert second.rank_correlations() == reference.rank_correlations()


def test_rounds_refit_between_batches_of_a_level_and_resume_exactly():
    strategy = small_search(seed=2, beam=4, rounds=2)
    space = strategy.space
    for arch in strategy.ask(100):
        strategy.tell(arch, cell_score(space, arch))
    batch = strategy.ask(100)
    assert len(batch) == 2  # ceil(beam / rounds)
    fitted_on_first_level = strategy.surrogate.state_dict()
    for arch in batch:
        strategy.tell(arch, cell_score(space, arch))
    refit = strategy.surrogate.state_dict()
    weights = "output.weight"  # the LSTM's last layer
    assert not torch.equal(refit["members"][0][weights],
                           fitted_on_first_level["members"][0][weights])
    second_batch = strategy.ask(100)
    assert len(second_batch) == 2 and not set(second_batch) & set(batch)
    assert all(space.num_blocks(arch) == 2 for arch in second_batch)
    uninterrupted = []
    reference = small_search(seed=2, beam=4, rounds=2)
    drive(reference, uninterrupted)
    assert len(uninterrupted) == 20 + 4 + 4
    resumed = []
    first = small_search(seed=2, beam=4, rounds=2)
    drive(first, resumed, stop_after=23)  # between the two batches of level 2
    second = small_search(seed=2, beam=4, rounds=2)
    second.load_state_dict(first.state_dict())
    drive(second, resumed)
    assert resumed == uninterrupted
    assert second.rank_correlations() == reference.rank_correlations()


def test_shared_loop_runs_it_and_the_checkpoint_holds_the_records(tmp_path):
    strategy = small_search(seed=1)
    run = RunDirectory.prepare(tmp_path / "run", durable=False)
    result = run_search(strategy, ScoreEvaluator(), run, Budget(evaluations=100))
    assert result["evaluations"] == 20 + 3 + 3
    assert result["stopped"] == "the strategy finished"
    records = load_checkpoint(run.checkpoint_path)["strategy"]["records"]
    assert records == strategy.rank_correlations() and len(records) == 2
    paths = write_rank_correlation(run.path, records)
    assert json.loads(paths[0].read_text())[0]["level"] == 2
    assert paths[1].read_bytes()[:4] == b"\x89PNG"


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="no progressive order"):
        ProgressiveSearch(_OtherSpace())
    with pytest.raises(UsageError, match="levels must be in 1..3"):
        ProgressiveSearch(NB201Space(), levels=4)
    with pytest.raises(UsageError, match="beam"):
        ProgressiveSearch(PNASSpace(), beam=0)


class _OtherSpace(NB201Space):
    name = "other"


def test_cli_trains_pnas_cells_on_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SPACES, "pnas", PNASSpace)
    monkeypatch.setitem(search_cli.STRATEGIES, "pnas", "pynas.search.pnas")
    out = tmp_path / "run"
    status = cli.main(["search", "pnas", "--dataset", "digits", "--budget", "4", "--levels",
                       "2", "--beam", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    result = json.loads((out / "result.json").read_text())
    assert result["strategy"] == "pnas" and result["space"] == "pnas"
    assert result["evaluations"] == 4 and 10 < result["best"]["val_acc"] <= 100
    records = json.loads((out / "rank_correlation.json").read_text())
    assert [r["level"] for r in records] == [2] and records[0]["evaluated"] == 2
    assert (out / "rank_correlation.png").is_file()
    assert "level 2: 2 cells evaluated" in printed
    # a budget with no room for the first level is one clear line, exit 2
    assert cli.main(["search", "pnas", "--dataset", "digits", "--budget", "3", "--levels",
                     "3", "--beam", "2", "--out", str(tmp_path / "small")]) == 2
    assert "leaves no first-level cell" in capsys.readouterr().err


def test_run_on_the_nb201_table(tmp_path):
    if not NB201_TABLE.is_file():
        pytest.skip(f"{NB201_TABLE} is absent")
    best = run_pnas_on_table(NB201_TABLE, seed=0, budget=25, surrogate="mlp", out=tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["evaluations"] == 25 and result["best"]["arch"] == best
    records = json.loads((tmp_path / "rank_correlation.json").read_text())
    assert [(r["level"], r["evaluated"]) for r in records] == [(2, 10), (3, 10)]
    assert result["best"]["val_acc"] > 88  # 3 in 4 cells of the table are below 88


# -- fitting the budget -------------------------------------------------------------------

def pnas_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    return parser.parse_args(["pnas", *options])


@pytest.mark.parametrize("space,budget,options,plan", [
    # the defaults when they fit; a larger budget widens the beam once nb201's 5 first-level
    # cells fit, and fills pnas's first level (136 cells) otherwise
    (NB201Space, 12, {}, (3, 4, 4)),
    (NB201Space, 25, {}, (3, 10, 5)),
    (PNASSpace, 20, {}, (5, 4, 4)),
    (PNASSpace, 30, {}, (5, 4, 14)),
    # too small: fewer levels at beam 4 (first level >= beam), then, at two levels, a
    # smaller beam; below that the first level alone
    (PNASSpace, 19, {}, (4, 4, 7)),
    (PNASSpace, 12, {}, (3, 4, 4)),
    (PNASSpace, 8, {}, (2, 4, 4)),
    (PNASSpace, 7, {}, (2, 3, 4)),
    (PNASSpace, 4, {}, (2, 2, 2)),
    (PNASSpace, 2, {}, (2, 1, 1)),
    (PNASSpace, 1, {}, (1, 4, 1)),
    (NB201Space, 8, {}, (2, 4, 4)),
    (NB201Space, 11, {}, (2, 6, 5)),  # two levels, widened to use the budget
    # options given are kept; the others shrink around them
    (PNASSpace, 8, {"levels": 3}, (3, 2, 4)),
    (PNASSpace, 8, {"beam": 3}, (2, 3, 5)),
    (PNASSpace, 5, {"beam": 3}, (2, 3, 2)),  # a first level below the beam, as asked
    (PNASSpace, 8, {"initial": 2}, (2, 4, 2)),
    (PNASSpace, 8, {"initial": 8}, (1, 4, 8)),
    (PNASSpace, 5, {"levels": 3, "beam": 2}, (3, 2, 1)),
    (PNASSpace, 8, {"rounds": 2}, (2, 4, 4)),
    (PNASSpace, 5, {"rounds": 2}, (2, 2, 3)),  # the beam shrinks to the rounds at most
    (PNASSpace, 3, {"rounds": 2}, (1, 4, 3)),
    (PNASSpace, 3, {"levels": 4}, None),
    (PNASSpace, 8, {"levels": 3, "beam": 4}, None),
    (PNASSpace, 8, {"beam": 8}, None),
    (PNASSpace, 8, {"initial": 9}, None),
    (PNASSpace, 8, {"initial": 5, "beam": 4}, None),
])
def test_a_budget_shrinks_the_defaults_and_refuses_what_was_given(space, budget, options,
                                                                   plan, capsys):
    args = pnas_args("--budget", str(budget),
                     *(f"--{name}={value}" for name, value in options.items()))
    if plan is None:
        with pytest.raises(UsageError, match="give a budget of at least") as refusal:
            build(space(), args)
        assert "\n" not in str(refusal.value)
        assert all(f"--{name} {value}" in str(refusal.value) for name, value in options.items()
                   if name != "rounds")
        return
    strategy = build(space(), args)
    levels, beam, initial = plan
    assert (strategy.levels, strategy.beam, len(strategy.ask(1000))) == plan
    shrunk = ((levels < strategy.progression.levels and "levels" not in options)
              or (beam < 4 and "beam" not in options))
    note = capsys.readouterr().err
    assert note.count("\n") == int(shrunk), note
    if shrunk:
        assert note.startswith(f"pynas: --budget {budget} is too small for ")
        assert (f"searching {levels} levels of beam {beam} from {initial} first-level cell(s)"
                if levels > 1 else f"the first level alone ({initial} cell(s))") in note


def test_pnas_cells_in_a_budget_of_8(monkeypatch, capsys):
    """``pynas search pnas --dataset digits --budget 8``: two levels of beam 4, in full."""
    fast_surrogate(monkeypatch)
    strategy = build(PNASSpace(blocks=5), pnas_args("--dataset", "digits", "--budget", "8"))
    assert "searching 2 levels of beam 4 from 4 first-level cell(s)" in capsys.readouterr().err
    asks = []
    drive(strategy, asks)
    assert len(asks) == 8 and strategy.finished()
    assert [strategy.space.num_blocks(arch) for arch in asks] == [1] * 4 + [2] * 4
    assert [record["evaluated"] for record in strategy.rank_correlations()] == [4]
