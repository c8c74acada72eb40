import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the machines running these tests are shared; oversubscription makes them crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
