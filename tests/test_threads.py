"""The threads a search computes with (pynas.threads): the free usable cores, divided
among the workers, unless --threads or the environment says otherwise."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from pynas import threads
from pynas.cli import main
from pynas.errors import UsageError


@pytest.fixture
def no_environment(monkeypatch):
    for name in threads.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def fake_cpu_times(monkeypatch, idle_shares):
    """Make /proc/stat read as if each usable CPU was idle for the given share of 100
    jiffies between two reads."""
    cpus = list(range(len(idle_shares)))
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    reads = iter([{cpu: (0, 0) for cpu in cpus},
                  {cpu: (round(100 * share), 100) for cpu, share in zip(cpus, idle_shares)}])
    monkeypatch.setattr(threads, "_cpu_times", lambda wanted: next(reads))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)


def test_free_cpus_sums_the_idle_share_of_each_usable_cpu(monkeypatch):
    fake_cpu_times(monkeypatch, [0.02, 0.97])  # one core kept busy by another process
    assert threads.free_cpus() == 1
    fake_cpu_times(monkeypatch, [0.6, 0.7, 0.9, 0.1])
    assert threads.free_cpus() == 2
    fake_cpu_times(monkeypatch, [0.0, 0.01])  # never fewer than one
    assert threads.free_cpus() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_proc_stat_is_read_for_exactly_the_usable_cpus():
    cpus = threads.usable_cpus()
    assert cpus == sorted(os.sched_getaffinity(0))
    times = threads._cpu_times(cpus)
    assert sorted(times) == cpus
    assert all(0 <= idle <= total for idle, total in times.values())
    assert 1 <= threads.free_cpus(seconds=0.05) <= len(cpus)


def test_busy_cores_are_left_to_their_process_and_said_once(monkeypatch, no_environment):
    fake_cpu_times(monkeypatch, [0.0, 1.0])
    plan = threads.plan_threads()
    assert (plan.per_process, plan.total, plan.source, plan.usable, plan.free) == (
        1, 1, "measured", 2, 1)
    assert plan.note() == ("1 of 2 cores busy with other work: computing with 1 thread(s) "
                           "per process (--threads N to choose)")
    fake_cpu_times(monkeypatch, [1.0, 1.0])
    assert threads.plan_threads().per_process == 2
    fake_cpu_times(monkeypatch, [1.0, 1.0])
    assert threads.plan_threads(workers=2).per_process == 1


def test_the_override_order_is_threads_then_pynas_threads_then_omp(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("PYNAS_THREADS", "6")
    assert threads.plan_threads(4, workers=2).per_process == 2
    assert threads.plan_threads(workers=2) == threads.ThreadPlan(3, 6, "PYNAS_THREADS",
                                                                  len(threads.usable_cpus()))
    monkeypatch.delenv("PYNAS_THREADS")
    plan = threads.plan_threads()
    assert (plan.total, plan.source, plan.note()) == (3, "OMP_NUM_THREADS", None)


@pytest.mark.parametrize("value, name", [("0", "PYNAS_THREADS"), ("two", "PYNAS_THREADS")])
def test_bad_thread_counts_are_one_line_errors(monkeypatch, value, name):
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=f"{name} must be a whole number of at least 1, got "):
        threads.plan_threads()
    with pytest.raises(UsageError, match="--threads must be a whole number"):
        threads.plan_threads(0)


def test_search_sets_torch_threads_and_says_why(tmp_path, monkeypatch, capsys, no_environment):
    fake_cpu_times(monkeypatch, [0.0, 1.0])
    table = tmp_path / "table.csv"
    table.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(200)))
    arguments = ["search", "random", "--dataset", str(table), "--target", "y", "--budget", "1"]
    assert main([*arguments, "--out", str(tmp_path / "a")]) == 0
    assert torch.get_num_threads() == 1
    assert "pynas: 1 of 2 cores busy with other work" in capsys.readouterr().err
    assert main([*arguments, "--threads", "2", "--out", str(tmp_path / "b")]) == 0
    assert torch.get_num_threads() == 2
    assert "busy" not in capsys.readouterr().err
    assert main([*arguments, "--threads", "0", "--out", str(tmp_path / "c")]) == 2
    assert "--threads must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
