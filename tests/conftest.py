"""Fixtures shared by the unit tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks gain nothing from threads, and threads spin badly on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
