"""Test-wide settings and shared data: one torch thread (tiny nets on a shared 2-core machine
run 10-100x faster single-threaded); one small collected CupCarry dataset for the state-vector
model tests."""

import pytest
import torch

from embodied.collect import collect
from embodied.dataset import Dataset

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cup_carry_states(tmp_path_factory) -> Dataset:
    """12 scripted CupCarry episodes, state observations only (collected once per run)."""
    path = tmp_path_factory.mktemp("cup_carry_states")
    collect("embodied/CupCarry-v0", path, episodes=12, obs_modes=("state",), progress=False)
    return Dataset.load(path)
