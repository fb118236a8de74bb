"""The pixel world model alone: its KL term and its training windows.

What it shares with the latent model (training, batching, planning, save/load, resume, input
errors) is tested for both in test_frame_models.py.
"""

from __future__ import annotations

import numpy as np
import torch

from embodied.agents.pixel_model import Gaussian, gaussian_kl, sample_windows
from embodied.dataset import Dataset, Episode


def test_gaussian_kl_is_torchs_normal_kl_bit_for_bit():
    """The training loss's KL, without torch's distribution objects, is the very same number."""
    g = torch.Generator().manual_seed(0)
    p = Gaussian(torch.randn(8, 4, generator=g), torch.rand(8, 4, generator=g) + 0.1)
    q = Gaussian(torch.randn(8, 4, generator=g), torch.rand(8, 4, generator=g) + 0.1)
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(*p), torch.distributions.Normal(*q)
    )
    assert torch.equal(gaussian_kl(p, q), want)
    assert gaussian_kl(p, p).abs().max() == 0


def test_windows_include_short_episodes_and_mask_their_padding():
    """Drops mostly end short episodes: windows must reach them, aligned and masked."""
    episodes = []
    for e, t in enumerate((2, 9, 3)):
        steps = np.arange(t + 1, dtype=np.float32)
        episodes.append(
            Episode(
                state=np.stack([np.full(t + 1, e, np.float32), steps], 1),
                pixels=None,
                action=np.stack([np.full(t, e), steps[:-1], np.zeros(t), np.zeros(t)], 1),
                reward=steps[:-1],
                dropped=np.arange(t) == t - 1,
                success=np.zeros(t, bool),
                terminated=np.arange(t) == t - 1,
                physics={},
                seed=e,
            )
        )
    ds = Dataset(episodes, {"state_labels": ["episode", "t"]})
    w = sample_windows(ds, 400, 4, np.random.default_rng(0), ("state",))
    assert w["state"].shape == (400, 5, 2) and w["mask"].shape == (400, 4)
    assert set(w["state"][:, 0, 0]) == {0.0, 1.0, 2.0}
    real = w["mask"]
    # obs k is at step t0 + k, action k is taken there, obs k+1 follows it (within the episode)
    t0 = w["state"][:, :1, 1]
    assert np.all((w["action"][..., 1] == t0 + np.arange(4))[real])
    assert np.all((w["state"][:, 1:, 1] == t0 + np.arange(1, 5))[real])
    assert np.all(w["state"][..., 0] == w["state"][:, :1, 0])  # never crosses into another
    # past the end: the last observation repeats, masked out
    lengths = np.array([2, 9, 3])[w["state"][:, 0, 0].astype(int)]
    assert np.array_equal(real, t0 + np.arange(4) < lengths[:, None])
    assert np.all(
        w["state"][:, 1:, 1][~real] == np.broadcast_to(lengths[:, None], real.shape)[~real]
    )
    assert w["dropped"][real].any()
