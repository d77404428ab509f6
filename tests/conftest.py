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
def keep_torch_threads():
    """``pynas search`` and ``pynas train`` set torch's threads (pynas.threads): a test
    that runs them in this process leaves the next test the threads it found."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
