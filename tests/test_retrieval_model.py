"""The retrieval world model: exact recall of stored transitions, batching, save/load, imagine."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from toy_world import write_toy

from embodied.agents.retrieval_model import RetrievalModel
from embodied.agents.training import train_world_model
from embodied.dataset import Dataset, Episode
from embodied.protocols import WorldModel

LABELS = ["cup_x", "cup_y", "cup_z", "target_x", "target_y", "target_z"]
SIZE = 8


def toy_episodes(n: int = 6, steps: int = 12, seed: int = 0) -> list[Episode]:
    """A point (the 'cup') moved by the first two action entries towards a fixed target."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        state = np.zeros((steps + 1, len(LABELS)), np.float32)
        state[0, :2] = rng.uniform(-0.5, 0.5, 2)
        state[:, 3:5] = rng.uniform(-0.5, 0.5, 2)
        action = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
        for t in range(steps):
            state[t + 1, :2] = state[t, :2] + 0.1 * action[t, :2]
        reward = -np.linalg.norm(state[1:, :2] - state[1:, 3:5], axis=1)
        dropped = np.zeros(steps, bool)
        dropped[-1] = i % 3 == 0
        reward[dropped] -= 100.0
        pixels = rng.integers(0, 256, (steps + 1, SIZE, SIZE, 3), dtype=np.uint8)
        episodes.append(
            Episode(
                state=state,
                pixels=pixels,
                action=action,
                reward=reward,
                dropped=dropped,
                success=np.zeros(steps, bool),
                terminated=dropped.copy(),
                physics={},
                seed=i,
            )
        )
    return episodes


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy"), toy_episodes(), labels=LABELS, size=SIZE)


class FakeEnv:
    """Just enough env for ``imagine`` and ``make_policy``: an action space and ``render_state``."""

    action_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
    image_size = SIZE

    def __init__(self):
        self.unwrapped = self
        self.rendered: list[np.ndarray] = []

    def render_state(self, state: np.ndarray, size: int = SIZE) -> np.ndarray:
        self.rendered.append(np.array(state))
        return np.full((size, size, 3), int(abs(state[0]) * 100) % 256, np.uint8)


@pytest.mark.parametrize("mode", ["delta", "next"])
def test_a_stored_query_returns_its_stored_outcome(toy_dir, mode):
    ds = Dataset.load(toy_dir)
    model = RetrievalModel(mode=mode)
    model.fit(ds, steps=1)
    tr = ds.transitions("state")
    z, a = torch.as_tensor(tr["obs"]), torch.as_tensor(tr["action"])
    z2, reward, p_fail = model.step(z, a)
    assert z2.shape == z.shape and reward.shape == p_fail.shape == (len(z),)
    expected = torch.as_tensor(tr["next_obs"])
    if mode == "next":
        assert torch.equal(z2, expected)
    else:
        torch.testing.assert_close(z2, expected, atol=1e-6, rtol=0)
    ok = ~tr["dropped"]
    np.testing.assert_allclose(reward.numpy()[ok], tr["reward"][ok], rtol=1e-6)
    assert np.array_equal(p_fail.numpy(), tr["dropped"].astype(np.float32))
    # the failure penalty is the planner's: a failed step's reward stays in the ordinary range
    assert reward.min() >= tr["reward"][ok].min()


def test_delta_mode_applies_the_remembered_change_where_the_query_is(toy_dir):
    ds = Dataset.load(toy_dir)
    model = RetrievalModel(mode="delta")
    model.fit(ds, steps=1)
    tr = ds.transitions("state")
    z = torch.as_tensor(tr["obs"][:5]).clone()
    z[:, 3:5] += 0.01  # a slightly different target: still the same nearest transitions
    z2, _, _ = model.step(z, torch.as_tensor(tr["action"][:5]))
    torch.testing.assert_close(z2 - z, torch.as_tensor(tr["next_obs"][:5] - tr["obs"][:5]))


def test_batched_queries_match_one_by_one_and_chunking(toy_dir):
    ds = Dataset.load(toy_dir)
    whole, chunked = RetrievalModel(), RetrievalModel(chunk=7)
    whole.fit(ds, 1)
    chunked.fit(ds, 1)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(33, len(LABELS), generator=gen) * 0.3
    a = torch.rand(33, 4, generator=gen) * 2 - 1
    batch = whole.step(z, a)
    single = [
        torch.cat([whole.step(z[i : i + 1], a[i : i + 1])[k] for i in range(33)]) for k in range(3)
    ]
    for x, y, c in zip(batch, single, chunked.step(z, a), strict=True):
        assert torch.equal(x, y) and torch.equal(x, c)


def test_save_load_round_trip_predicts_identically(toy_dir, tmp_path):
    model = RetrievalModel()
    model.fit(Dataset.load(toy_dir), 1)
    assert isinstance(model, WorldModel)
    model.save(str(tmp_path / "m.pt"))
    loaded = RetrievalModel.load(str(tmp_path / "m.pt"))
    z = torch.randn(10, len(LABELS))
    a = torch.rand(10, 4) * 2 - 1
    for x, y in zip(model.step(z, a), loaded.step(z, a), strict=True):
        assert torch.equal(x, y)


def test_imagine_replays_stored_frames_or_renders_retrieved_states(toy_dir):
    ep = toy_episodes()[1]
    with_pixels = RetrievalModel(mode="next")
    with_pixels.fit(Dataset.load(toy_dir), 1)
    env = FakeEnv()
    imag = with_pixels.imagine(ep.state[0], ep.action[:5], env)
    assert imag.frames_kind == "retrieved"
    assert np.array_equal(imag.frames, ep.pixels[1:6]) and not env.rendered
    np.testing.assert_allclose(imag.cup_pos, ep.state[1:6, :3])

    states_only = RetrievalModel(mode="next")
    states_only.fit(Dataset.load(toy_dir, obs_modes=["state"]), 1)
    imag = states_only.imagine(ep.state[0], ep.action[:5], env)
    assert imag.frames.shape == (5, SIZE, SIZE, 3) and imag.frames_kind == "retrieved"
    np.testing.assert_allclose(np.stack(env.rendered), ep.state[1:6])


def test_bad_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="delta"):
        RetrievalModel(mode="nearest")
    with pytest.raises(RuntimeError, match="fit"):
        RetrievalModel().step(torch.zeros(1, 6), torch.zeros(1, 4))


def test_agent_config_trains_and_plans(toy_dir, tmp_path):
    from importlib.resources import files

    from embodied.agents.mpc import make_policy

    cfg = OmegaConf.load(str(files("embodied.configs") / "agent" / "retrieval.yaml"))
    out = train_world_model(cfg, toy_dir, tmp_path, steps=2, progress=False)
    assert out["step"] == 2
    env = FakeEnv()
    policy = make_policy(cfg, tmp_path, env, seed=0)
    policy.reset(env)
    action = policy.act(toy_episodes()[0].state[0])
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
