import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """CUDA tests carry the `cuda` marker and skip where no GPU is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from threads, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fixed_threads(monkeypatch):
    """``pynas search`` and ``pynas train`` choose torch's threads from the free cores
    (pynas.threads) and say so on stderr when some are busy: the tests fix the choice
    (``PYNAS_THREADS``, which tests/test_threads.py removes to test it), so that what they
    print does not depend on the machine's load, and each test leaves the next one the
    threads it found."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("PYNAS_THREADS", str(threads))
    yield
    torch.set_num_threads(threads)
