"""The pixel world model (recurrent state-space model on frames): training, batching, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from toy_world import (
    PROPRIO,
    SIZE,
    SpaceOnlyEnv,
    check_plans_like_a_fresh_load,
    check_rollout_of_toy_model,
    obs_of,
    toy_episodes,
    write_toy,
)

from embodied.agents.mpc import make_policy
from embodied.agents.pixel_model import Gaussian, PixelModel, gaussian_kl, sample_windows
from embodied.agents.training import train_world_model
from embodied.apps.eval import load_agents
from embodied.dataset import Dataset, Episode
from embodied.protocols import WorldModel

TINY = dict(
    image_size=SIZE,
    depth=4,
    embed_dim=32,
    deter=32,
    stoch=4,
    hidden=32,
    seq_len=4,
    lr=3e-3,
    proprio_labels=PROPRIO,
    reward_labels=[],  # the toy's hand is 2-d, its goal 3-d: test_frame_inputs covers them
)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy"), toy_episodes(drops=True))


@pytest.fixture(scope="module")
def trained(toy_dir):
    model = PixelModel(**TINY)
    losses = model.fit(Dataset.load(toy_dir), steps=120)
    return model, losses


def test_loss_falls(trained):
    _, losses = trained
    for key in ("loss", "recon", "reward_mse", "proprio_mse"):
        assert np.mean(losses[key][-15:]) < 0.7 * np.mean(losses[key][:15]), key
    assert len(losses["loss"]) == 120


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


def test_encode_and_step_are_batched(trained):
    model, _ = trained
    assert isinstance(model, WorldModel) and model.obs_mode == "state+pixels"
    eps = toy_episodes(3, seed=5)
    batch = {
        "state": np.stack([e.state[0] for e in eps]),
        "pixels": np.stack([e.pixels[0] for e in eps]),
    }
    z = model.encode(batch)
    assert z.shape == (3, 32 + 4 + 3)
    torch.testing.assert_close(z[1:2], model.encode(obs_of(eps[1])))
    z2, reward, p_fail = model.step(z.repeat(4, 1), torch.rand(12, 4) * 2 - 1)
    assert z2.shape == (12, 39) and reward.shape == p_fail.shape == (12,)
    assert torch.all((p_fail >= 0) & (p_fail <= 1))
    torch.testing.assert_close(z2[:, -3:], z.repeat(4, 1)[:, -3:])  # the goal is carried


def test_whole_horizon_rollout_equals_stepping(trained):
    """The planners' fast path scores every step as ``step`` does, out of the data too."""
    check_rollout_of_toy_model(trained[0])


def test_a_trained_model_plans_as_its_weights_loaded_fresh(trained, tmp_path):
    check_plans_like_a_fresh_load(trained[0], tmp_path / "m.pt")


def test_save_load_round_trip_predicts_identically(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.pt")
    loaded = PixelModel.load(tmp_path / "m.pt")
    ep = toy_episodes(1, seed=9)[0]
    z, zl = model.encode(obs_of(ep)), loaded.encode(obs_of(ep))
    assert torch.equal(z, zl)
    a = torch.as_tensor(ep.action[:1])
    for x, y in zip(model.step(z, a), loaded.step(zl, a), strict=True):
        assert torch.equal(x, y)
    assert np.array_equal(model.decode_frames(z), loaded.decode_frames(zl))


def test_imagine_decodes_an_open_loop_rollout(trained):
    model, _ = trained
    ep = toy_episodes(1, seed=3)[0]
    imag = model.imagine(obs_of(ep), ep.action[:5], env=None)
    assert imag.frames.shape == (5, SIZE, SIZE, 3) and imag.frames.dtype == np.uint8
    assert imag.frames_kind == "decoder" and imag.cup_pos is None
    # it learnt something about the scene: closer to the true frames than a flat grey guess
    err = np.abs(imag.frames.astype(float) - ep.pixels[1:6]).mean()
    assert err < np.abs(ep.pixels[1:6].astype(float) - 128).mean()


def test_resuming_from_train_state_continues_exactly(toy_dir, tmp_path):
    ds = Dataset.load(toy_dir)
    a = PixelModel(**TINY)
    a.fit(ds, 3)
    a.save(tmp_path / "a.pt")
    state = a.train_state()
    b = PixelModel.load(tmp_path / "a.pt")
    b.load_train_state(state)
    assert a.fit(ds, 2)["loss"] == b.fit(ds, 2)["loss"]


def test_pixels_only_and_bad_input_errors(toy_dir):
    model = PixelModel(**{**TINY, "proprio_labels": [], "goal_labels": []})
    assert model.obs_mode == "pixels"
    model.fit(Dataset.load(toy_dir), 1)
    assert model.encode(toy_episodes(1)[0].pixels[0]).shape == (1, 36)
    with pytest.raises(ValueError, match="state"):
        PixelModel(**TINY).encode(toy_episodes(1)[0].pixels[0])
    with pytest.raises(ValueError, match="image_size"):
        PixelModel(**{**TINY, "image_size": 32}).fit(Dataset.load(toy_dir), 1)
    with pytest.raises(ValueError, match="valid labels"):
        PixelModel(**TINY, goal_labels=["goal_x"]).fit(Dataset.load(toy_dir), 1)
    with pytest.raises(ValueError, match="valid labels"):
        PixelModel(**{**TINY, "proprio_labels": ["elbow"]}).fit(Dataset.load(toy_dir), 1)


def test_agent_config_trains_and_plans(toy_dir, tmp_path):
    cfg = OmegaConf.create(load_agents(["pixel"], OmegaConf.create())["pixel"])
    cfg.world_model = OmegaConf.merge(cfg.world_model, TINY)
    cfg.planner.population, cfg.planner.elites = 16, 4
    out = train_world_model(cfg, toy_dir, tmp_path, steps=2, progress=False)
    assert out["step"] == 2 and (tmp_path / "model.pt").is_file()
    env = SpaceOnlyEnv()
    policy = make_policy(cfg, tmp_path, env, seed=0)
    policy.reset(env)
    action = policy.act(obs_of(toy_episodes(1)[0]))
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
