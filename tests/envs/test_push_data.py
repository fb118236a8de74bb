"""CupPush training data that shows tipping, and a state model that can learn from it.

A world model learns what a tipping cup looks like only if the collected data tips some cups:
noisy scripted pushes vary their contact (``SLOPPY_PUSH``), clean ones never do. Tipping is
read from MuJoCo's own cup orientation, not from the observation vector.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import embodied  # noqa: F401  (registers the tasks)
from embodied.agents.state_model import StateModel
from embodied.dataset import Dataset, Episode, write_dataset
from embodied.envs.cup_push import CLEAN_PUSH, SLOPPY_PUSH
from embodied.envs.scripted import ScriptedPolicy

SEEDS = range(1, 6)


def push_episode(env: gymnasium.Env, seed: int, noise: float) -> tuple[dict, float, dict]:
    """One aggressive scripted push: (contact drawn, max tilt from MuJoCo's cup body, info)."""
    u = env.unwrapped
    policy = ScriptedPolicy("CupPush", style="aggressive", noise=noise, seed=seed)
    obs, info = env.reset(seed=seed)
    policy.reset(env)
    cup = u.model.body("cup").id
    max_tilt = 0.0
    for _ in range(120):
        obs, _, terminated, _, info = env.step(policy.act(obs))
        _, x, y, _ = u.data.xquat[cup]
        max_tilt = max(max_tilt, float(np.arccos(np.clip(1 - 2 * (x * x + y * y), -1, 1))))
        if terminated:
            break
    return policy.variant, max_tilt, info


@pytest.fixture(scope="module")
def env():
    env = gymnasium.make("embodied/CupPush-v1")
    yield env
    env.close()


def test_sloppy_pushes_tip_some_cups_clean_ones_none(env):
    sloppy = [push_episode(env, seed, noise=0.1) for seed in SEEDS]
    clean = [push_episode(env, seed, noise=0.0) for seed in SEEDS]
    for contact, _, _ in sloppy:
        assert all(lo <= contact[k] <= hi for k, (lo, hi) in SLOPPY_PUSH.items())
    assert len({c["height"] for c, _, _ in sloppy}) == len(SEEDS)  # drawn per episode
    tipped = [tilt > 1.0 for _, tilt, _ in sloppy]
    assert 1 <= sum(tipped) < len(SEEDS)  # some, not all
    # the env's failure flag agrees with MuJoCo's orientation of the cup
    assert tipped == [info["dropped"] for _, _, info in sloppy]
    for contact, tilt, info in clean:
        assert contact == CLEAN_PUSH
        assert tilt < 0.3 and info["is_success"]


def _rare_jump_dataset(tmp_path) -> Dataset:
    """A state whose 'tilt' jumps by 0.5 on the ~5% of steps with action[1] > 0.9."""
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(24):
        s = np.zeros((26, 2), np.float32)
        a = rng.uniform(-1, 1, (25, 4)).astype(np.float32)
        s[0, 0] = rng.uniform(-1, 1)
        for t in range(25):
            s[t + 1, 0] = np.clip(s[t, 0] + 0.1 * a[t, 0], -1, 1)
            s[t + 1, 1] = s[t, 1] + 0.5 * (a[t, 1] > 0.9) + 0.01 * rng.standard_normal()
        flags = np.zeros(25, bool)
        episodes.append(
            Episode(s, None, a, np.zeros(25, np.float32), flags, flags, flags, {}, seed=i)
        )
    write_dataset(
        tmp_path,
        episodes,
        env_id="embodied/Toy-v0",
        task="Toy",
        split="train",
        obs_modes=("state",),
        image_size=16,
        state_labels=["x", "tilt"],
    )
    return Dataset.load(tmp_path)


def test_beta_nll_fits_rare_large_deltas(tmp_path):
    """Plain Gaussian NLL explains a rare large delta (a cup starting to tip) with variance and
    predicts a mean near zero; beta-NLL keeps those steps' weight and predicts more of the jump.
    Tiny nets, 200 steps."""
    ds = _rare_jump_dataset(tmp_path)
    tr = ds.transitions("state")
    rare = tr["action"][:, 1] > 0.9
    s, a = torch.as_tensor(tr["obs"]), torch.as_tensor(tr["action"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jumps = {}
        for beta in (0.0, 0.5):
            m = StateModel(
                members=3, hidden=(32, 32), head_hidden=(16,), batch_size=64, lr=3e-3, nll_beta=beta
            )
            m.fit(ds, steps=200)
            jumps[beta] = float((m.predict_mean(s, a)[:, 1] - s[:, 1])[rare].mean())
    finally:
        torch.set_num_threads(threads)
    assert jumps[0.5] > 1.5 * jumps[0.0] > 0.0, jumps


def test_nll_beta_checked():
    with pytest.raises(ValueError, match="nll_beta"):
        StateModel(nll_beta=-0.5)
