"""``pynas search darts``: the run it writes, resume, and its usage errors."""

from __future__ import annotations

import json

import pytest
import torch

from pynas import cli
from pynas.errors import UsageError
from pynas.runs import RunDirectory
from pynas.search.darts import DartsConfig
from pynas.search.darts import search as darts_loop
from pynas.search.darts.search import search
from pynas.spaces.darts import DartsSpace

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--channels", "4", "--layers", "2", "--steps", "2", "--multiplier", "2",
        "--batch-size", "16", "--limit-train", "64", "--mixed-op", "reference"]  # fmt: skip


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Make ``darts`` a strategy of ``pynas search`` (whether or not the registry has it)."""
    import pynas.search.cli as search_cli

    monkeypatch.setitem(search_cli.STRATEGIES, "darts", "pynas.search.darts")


def tiny_config(**overrides) -> DartsConfig:
    settings = dict(channels=4, layers=2, steps=2, multiplier=2, batch_size=16,
                    limit_train=64, mixed_op="reference", epochs=2)  # fmt: skip
    return DartsConfig(**{**settings, **overrides})


def test_search_darts_writes_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["search", "darts", "--epochs", "2", "--out", str(out), *TINY])
    assert status == 0
    result = json.loads((out / "result.json").read_text())
    assert result["strategy"] == "darts" and result["space"] == "darts"
    assert result["epochs"] == 2 and result["seconds"] > 0
    for key in ("val_acc", "test_acc", "supernet_val_acc", "supernet_test_acc"):
        assert 0.0 <= result[key] <= 100.0
    space = DartsSpace(channels=4, layers=2, steps=2)
    arch = space.from_genotype(result["genotype"])
    assert result["arch"] == space.to_string(arch) == result["best"]["arch"]
    for name in ("alphas_normal.png", "alphas_reduce.png", "curves.png", "normal_cell.png",
                 "reduce_cell.png", "checkpoint.pt"):  # fmt: skip
        assert (out / name).stat().st_size > 1000, name
    dot = (out / "normal_cell.dot").read_text()
    assert dot.count("->") == 2 * 2 + 2 and "c_{k-2}" in dot
    assert result["arch"] in capsys.readouterr().out
    (out / "normal_cell.png").unlink()
    assert cli.main(["show", str(out)]) == 0  # a one-shot run: no trials, a result
    shown = capsys.readouterr().out
    assert result["arch"] in shown and "darts on darts" in shown
    assert (out / "normal_cell.png").stat().st_size > 1000  # redrawn


def test_resume_after_a_kill_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(darts_loop, "write_run", lambda run_dir, trained, result: None)
    uninterrupted = search(tiny_config(), RunDirectory.prepare(tmp_path / "a"))
    saves = []
    original = darts_loop.save_checkpoint

    def save_then_die(path, state):
        original(path, state)
        saves.append(path)
        if len(saves) == 1:
            raise KeyboardInterrupt  # the process dies right after epoch 1's checkpoint

    monkeypatch.setattr(darts_loop, "save_checkpoint", save_then_die)
    run_dir = RunDirectory.prepare(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        search(tiny_config(), run_dir)
    assert not run_dir.result_path.exists()
    resumed = search(tiny_config(), run_dir, resume=True)
    assert len(saves) == 2  # only epoch 2 was trained again
    assert resumed["genotype"] == uninterrupted["genotype"]
    assert resumed["supernet_val_acc"] == uninterrupted["supernet_val_acc"]
    alphas_a = torch.load(tmp_path / "a" / "checkpoint.pt")["model"]["alpha_normal"]
    alphas_b = torch.load(run_dir.checkpoint_path)["model"]["alpha_normal"]
    torch.testing.assert_close(alphas_a, alphas_b, rtol=0, atol=1e-6)


def test_resume_takes_a_setting_older_checkpoints_lack_as_its_default(tmp_path, monkeypatch):
    monkeypatch.setattr(darts_loop, "write_run", lambda run_dir, trained, result: None)
    run_dir = RunDirectory.prepare(tmp_path / "a")
    search(tiny_config(), run_dir)
    state = torch.load(run_dir.checkpoint_path, weights_only=False)
    del state["config"]["cost_tolerance"]  # as a checkpoint written before it existed
    torch.save(state, run_dir.checkpoint_path)
    search(tiny_config(), run_dir, resume=True)
    state["config"]["seed"] = 7  # another search's checkpoint
    torch.save(state, run_dir.checkpoint_path)
    with pytest.raises(UsageError, match="seed=7"):
        search(tiny_config(), run_dir, resume=True)


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--space", "pnas"], "darts cannot search the space 'pnas'"),
        (["--budget", "5"], "--budget does not apply to darts"),
        (["--mixed-op", "fast"], "invalid choice"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--partial-channels", "3"], "--partial-channels must be a divisor of --channels 4"),
        (["--warmup-epochs", "10"], "--warmup-epochs must be in 0..epochs-1 = 9"),
        (["--beta-decay", "-1"], "--beta-decay must be >= 0"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(tmp_path, capsys, arguments, message):
    status = cli.main(["search", "darts", "--out", str(tmp_path / "run"), *TINY, *arguments])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1


def test_each_epoch_validates_on_an_evenly_spaced_share_of_a_large_split():
    from pynas.data import Split
    from pynas.search.darts.search import evenly_spaced

    # stored class by class, as image folders are: every class keeps its share
    split = Split(torch.arange(3000.0)[:, None], torch.arange(3000) // 1000)
    chosen = evenly_spaced(split, 300)
    assert len(chosen) == 300 and torch.bincount(chosen.targets).tolist() == [100, 100, 100]
    assert torch.equal(chosen.inputs[:, 0].long(), torch.arange(300) * 10)
    assert evenly_spaced(split, 3000) is split
