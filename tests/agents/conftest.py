"""Fixtures of the agent tests that more than one module asks for."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def restore_threads() -> Iterator[None]:
    """Torch's thread count back as it was after a module whose training sets the agent's own
    (``torch_threads``), so the modules after it run as they would alone."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
