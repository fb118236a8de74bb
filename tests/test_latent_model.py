"""The latent (JEPA-style) world model: training, no collapse, probe isolation, save/load."""

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

from embodied.agents.latent_model import LatentModel
from embodied.agents.mpc import make_policy
from embodied.agents.training import train_world_model
from embodied.apps.eval import load_agents
from embodied.dataset import Dataset
from embodied.protocols import WorldModel

TINY = dict(
    image_size=SIZE,
    depth=4,
    embed_dim=16,
    hidden=64,
    history=2,
    seq_len=4,
    lr=2e-3,
    probe_depth=4,
    proprio_labels=PROPRIO,
    reward_labels=[],  # the toy's hand is 2-d, its goal 3-d: test_frame_inputs covers them
)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy"), toy_episodes(drops=False))


@pytest.fixture(scope="module")
def trained(toy_dir):
    model = LatentModel(**TINY)
    losses = model.fit(Dataset.load(toy_dir), steps=100)
    return model, losses


def test_loss_falls(trained):
    _, losses = trained
    for key in ("loss", "reward_mse", "proprio_mse", "probe"):
        assert np.mean(losses[key][-15:]) < 0.7 * np.mean(losses[key][:15]), key


def test_embeddings_do_not_collapse(trained):
    model, losses = trained
    eps = toy_episodes(4, seed=7, drops=False)
    obs = {
        "state": np.concatenate([e.state for e in eps]),
        "pixels": np.concatenate([e.pixels for e in eps]),
    }
    z = model.encode(obs)[:, :16]  # the embedding, without the goal entries
    assert z.std(0).mean() > 0.3
    assert losses["embed_std"][-1] > 0.3


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


def test_encode_and_step_are_batched(trained):
    model, _ = trained
    assert isinstance(model, WorldModel) and model.obs_mode == "state+pixels"
    eps = toy_episodes(3, seed=5, drops=False)
    batch = {
        "state": np.stack([e.state[0] for e in eps]),
        "pixels": np.stack([e.pixels[0] for e in eps]),
    }
    z = model.encode(batch)
    assert z.shape == (3, 16 + 2 + 3)  # embedding, proprioception, goal
    torch.testing.assert_close(z[1:2], model.encode(obs_of(eps[1])))
    z2, reward, p_fail = model.step(z.repeat(4, 1), torch.rand(12, 4) * 2 - 1)
    assert z2.shape == (12, 21) and reward.shape == p_fail.shape == (12,)
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
    loaded = LatentModel.load(tmp_path / "m.pt")
    ep = toy_episodes(1, seed=9, drops=False)[0]
    z, zl = model.encode(obs_of(ep)), loaded.encode(obs_of(ep))
    assert torch.equal(z, zl)
    a = torch.as_tensor(ep.action[:1])
    for x, y in zip(model.step(z, a), loaded.step(zl, a), strict=True):
        assert torch.equal(x, y)
    assert np.array_equal(model.decode_frames(z), loaded.decode_frames(zl))


def test_imagine_draws_predictions_with_the_probe(trained):
    model, _ = trained
    ep = toy_episodes(1, seed=3, drops=False)[0]
    imag = model.imagine(obs_of(ep), ep.action[:5], env=None)
    assert imag.frames.shape == (5, SIZE, SIZE, 3) and imag.frames.dtype == np.uint8
    assert imag.frames_kind == "probe" and imag.cup_pos is None


def test_resuming_from_train_state_continues_exactly(toy_dir, tmp_path):
    ds = Dataset.load(toy_dir)
    a = LatentModel(**TINY)
    a.fit(ds, 3)
    a.save(tmp_path / "a.pt")
    state = a.train_state()
    b = LatentModel.load(tmp_path / "a.pt")
    b.load_train_state(state)
    assert a.fit(ds, 2)["loss"] == b.fit(ds, 2)["loss"]


def test_agent_config_trains_and_plans(toy_dir, tmp_path):
    cfg = OmegaConf.create(load_agents(["latent"], OmegaConf.create())["latent"])
    cfg.world_model = OmegaConf.merge(cfg.world_model, TINY)
    cfg.planner.population, cfg.planner.elites = 16, 4
    out = train_world_model(cfg, toy_dir, tmp_path, steps=2, progress=False)
    assert out["step"] == 2 and (tmp_path / "model.pt").is_file()
    env = SpaceOnlyEnv()
    policy = make_policy(cfg, tmp_path, env, seed=0)
    policy.reset(env)
    action = policy.act(obs_of(toy_episodes(1, drops=False)[0]))
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)


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
