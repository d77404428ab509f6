"""``pynas bench darts_vs_random`` keeps every retraining and resumes from them."""
import argparse
import json

import pytest

darts_vs_random = pytest.importorskip("pynas.bench.darts_vs_random")


def bench_args(tmp_path, workers=1):
    return argparse.Namespace(dataset="fashion-mnist", data_dir=None, retrain_limit=50,
                              epochs=1, channels=4, layers=2, workers=workers,
                              work_dir=tmp_path)


def test_retrainings_are_stored_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake_retrain(genotype, seed, args, threads=None):
        calls.append((genotype["id"], seed))
        return 80.0 + genotype["id"] + seed / 10

    monkeypatch.setattr(darts_vs_random, "retrain", fake_retrain)
    args = bench_args(tmp_path)
    jobs = [(f"cell {i}", {"id": i}, seed) for i in range(2) for seed in range(2)]
    first = list(darts_vs_random.retrained(jobs[:3], args))
    assert calls == [(0, 0), (0, 1), (1, 0)]
    assert [accuracy for _, _, accuracy in first] == [80.0, 80.1, 81.0]
    assert len((tmp_path / "retrained.jsonl").read_text().splitlines()) == 3

    calls.clear()
    second = list(darts_vs_random.retrained(jobs, args))
    assert calls == [(1, 1)]  # only the retraining not stored before
    assert sorted(second) == [("cell 0", 0, 80.0), ("cell 0", 1, 80.1),
                              ("cell 1", 0, 81.0), ("cell 1", 1, 81.1)]


def test_a_different_recipe_retrains_again(tmp_path, monkeypatch):
    monkeypatch.setattr(darts_vs_random, "retrain", lambda genotype, seed, args: 50.0)
    args = bench_args(tmp_path)
    list(darts_vs_random.retrained([("cell", {"id": 0}, 0)], args))
    args.epochs = 2
    assert darts_vs_random.stored(tmp_path / "retrained.jsonl", args) == {}
    entry = json.loads((tmp_path / "retrained.jsonl").read_text())
    assert entry["recipe"]["epochs"] == 1 and entry["test_acc"] == 50.0
