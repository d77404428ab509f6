"""`pynas info` and the command line's handling of bad arguments."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import torch

from pynas import __version__
from pynas.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # from a neutral folder: in the repository, `-m pynas` would find the source tree,
    # which has no compiled extension
    return subprocess.run([sys.executable, "-m", "pynas", *args], capture_output=True,
                          text=True, timeout=120, cwd=tempfile.gettempdir())


def test_info_json_has_the_documented_keys():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == __version__
    assert info["torch"] == torch.__version__
    assert "cpu" in info["backends"]
    assert all(isinstance(arch, int) for arch in info["cuda_archs"])
    assert info["cuda_device"] == (torch.cuda.is_available() and "cuda" in info["backends"])
    assert info["cpu_threads"] >= 1


def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"pynas          {__version__}" in out
    assert "backends" in out and "cpu" in out


def test_unknown_command_is_one_line_and_exit_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pynas: error:")
    assert "Traceback" not in result.stderr


def test_unknown_benchmark_is_one_line_and_exit_2(capsys):
    assert main(["bench", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pynas: error: unknown benchmark 'nonsense'")


def test_bench_ops_quick_run_prints_the_table(capsys):
    assert main(["bench", "ops", "--shapes", "8x8x8x8", "--repeats", "2", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "measured copy bandwidth" in out
    assert out.count("| 8x8x8x8 |") == 2  # one edge and the whole cell
