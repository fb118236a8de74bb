"""Test-wide settings and shared data: one torch thread (tiny nets on a shared 2-core machine
run 10-100x faster single-threaded); Ctrl-C as Python's default whatever the caller's shell
did; one small collected CupCarry dataset for the state-vector model tests."""

import signal

import pytest
import torch

from embodied.collect import collect
from embodied.dataset import Dataset

torch.set_num_threads(1)

# A shell without job control (`make test &`, nohup, some CI runners) starts its children with
# SIGINT ignored, and an ignored signal stays ignored across exec: the interrupt tests would
# then signal apps that cannot hear it. Python's own handler here means every process the tests
# start gets SIGINT at its default, as it would from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cup_carry_states(tmp_path_factory) -> Dataset:
    """12 scripted CupCarry episodes, state observations only (collected once per run)."""
    path = tmp_path_factory.mktemp("cup_carry_states")
    collect("embodied/CupCarry-v0", path, episodes=12, obs_modes=("state",), progress=False)
    return Dataset.load(path)
