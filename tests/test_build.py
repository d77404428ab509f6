"""The build contract of DESIGN.md, checked on the source tree and the installed module."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pynas import _backend

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]


def test_no_torch_header_in_csrc():
    sources = [p for p in (ROOT / "csrc").rglob("*") if p.suffix in {".h", ".cpp", ".cu", ".cuh"}]
    assert sources, "csrc/ has no sources"
    offenders = [str(p) for p in sources
                 if re.search(r'#include\s*[<"](torch|ATen|c10)/', p.read_text())]
    assert offenders == []


def test_only_the_binding_knows_python():
    knows_python = [p.name for p in (ROOT / "csrc").rglob("*")
                    if p.is_file() and re.search(r"#include\s*[<\"](pybind11|Python\.h)",
                                                 p.read_text(errors="ignore"))]
    assert knows_python == ["bindings.cpp"]


def test_torch_is_not_pinned_nor_needed_to_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any("torch" in r for r in project["build-system"]["requires"])
    torch_requirements = [d for d in project["project"]["dependencies"] if d.startswith("torch")]
    assert torch_requirements == ["torch>=2.4"]


def test_extension_is_loaded_with_cpu_kernels():
    assert "cpu" in _backend.backends(), f"pynas._C did not load: {_backend.IMPORT_ERROR}"


def test_cuda_architectures_reported_when_built_with_cuda():
    if "cuda" not in _backend.backends():
        pytest.skip("built without CUDA")
    assert set(_backend.cuda_archs()) >= {80, 90}
