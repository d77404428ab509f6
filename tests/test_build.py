"""The build contract of DESIGN.md, checked on the source tree and the installed module."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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


# `python -m pytest` in the repository root imports the checkout's pynas, which shadows an
# installed one; after a non-editable `pip install .` only the installed one has _C.

def _python_in(checkout: Path, site: Path | None) -> subprocess.CompletedProcess:
    """Import pynas._backend from ``checkout`` (the current directory, first on the path),
    with ``site`` the only other place to find distributions (no site-packages: -S)."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if site is not None:
        environment["PYTHONPATH"] = str(site)
    report = ("import json; from pynas import _backend as b; print(json.dumps("
              "[b.backends(), b._C and b._C.__file__, b.IMPORT_ERROR]))")
    return subprocess.run([sys.executable, "-S", "-c", report], cwd=checkout, env=environment,
                          capture_output=True, text=True, timeout=60)


def _fake_checkout(root: Path) -> Path:
    """A repository root whose pynas holds ``_backend.py`` and no build."""
    (root / "pynas").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'pynas'\n")
    (root / "pynas" / "__init__.py").write_text("")
    shutil.copy(ROOT / "pynas" / "_backend.py", root / "pynas")
    return root


def test_a_checkout_without_a_build_loads_the_installed_extension(tmp_path):
    if _backend._C is None:
        pytest.skip(f"pynas._C did not load: {_backend.IMPORT_ERROR}")
    built = Path(_backend._C.__file__)
    site = tmp_path / "site"
    (site / "pynas").mkdir(parents=True)
    shutil.copy(built, site / "pynas" / built.name)
    info = site / "pynas-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pynas\nVersion: 0.0.0\n")
    (info / "RECORD").write_text(f"pynas/{built.name},,\npynas-0.0.0.dist-info/RECORD,,\n")
    completed = _python_in(_fake_checkout(tmp_path / "checkout"), site)
    assert completed.returncode == 0, completed.stderr
    backends, location, error = json.loads(completed.stdout)
    assert backends == _backend.backends() and error is None
    assert Path(location) == site / "pynas" / built.name


def test_a_checkout_without_a_build_or_an_install_says_to_install(tmp_path):
    completed = _python_in(_fake_checkout(tmp_path / "checkout"), None)
    assert completed.returncode == 0, completed.stderr
    backends, location, error = json.loads(completed.stdout)
    assert backends == [] and location is None
    assert "no build of pynas._C" in error and "`pip install .`" in error
    assert "\n" not in error


def _installed_elsewhere() -> Path | None:
    """The installed (non-editable) pynas's extension, when it is not this checkout's."""
    location = _backend.installed_extension_path()
    return None if location is None or ROOT in location.resolve().parents else location


@pytest.mark.skipif(_installed_elsewhere() is None,
                    reason="needs pynas installed non-editable (`pip install .`)")
def test_python_m_pytest_in_the_repository_root_finds_the_extension():
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_build.py::test_extension_is_loaded_with_cpu_kernels"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
