"""The latent (JEPA-style) world model alone: a probe that never trains it, on real frames.

What it shares with the pixel model (training, batching, planning, save/load, resume, input
errors) is tested for both in test_frame_models.py, with its embeddings' spread on the model
trained there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_frame_models import FAMILIES
from toy_world import SIZE, toy_episodes, write_toy

from embodied.agents.latent_model import LatentModel
from embodied.dataset import Dataset

TINY = FAMILIES["latent"].tiny


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy"), toy_episodes(drops=False))


def test_probe_never_trains_the_encoder(toy_dir):
    model = LatentModel(**TINY)
    model.fit(Dataset.load(toy_dir), 1)  # creates the optimizers
    model.encoder.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    probe_before = [p.detach().clone() for p in model.probe.parameters()]
    x = torch.rand(3, 6, SIZE, SIZE) - 0.5  # 2-frame histories
    model.train()
    model._probe_step(x[:, -3:], model.encoder(x))
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(probe_before, model.probe.parameters(), strict=True)
    )


def test_probe_learns_from_probe_batch_real_frames(toy_dir):
    """The probe trains on ``probe_batch`` distinct real frames per step, never padding."""
    model = LatentModel(**TINY, probe_batch=5)
    valid = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    b, t = model._probe_frames(valid)
    assert len(b) == 5 and bool(valid[b, t].all())
    assert len(set(zip(b.tolist(), t.tolist(), strict=True))) == 5
    b, t = model._probe_frames(valid[:1])  # fewer real frames than probe_batch: all of them
    assert sorted(t.tolist()) == [0, 1, 2]
    losses = model.fit(Dataset.load(toy_dir), steps=100)
    assert np.mean(losses["probe"][-15:]) < 0.7 * np.mean(losses["probe"][:15])
