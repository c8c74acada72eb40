"""Suite-wide settings: one torch thread per test (the suite's models are tiny, and OpenMP threads that spin on a
shared 2-core machine slow small ops down by an order of magnitude)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
