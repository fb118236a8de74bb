"""The adaptive model: its context moves its predictions, it learns, it reads only transitions.

Tiny sizes throughout (a dozen CupCarry episodes, a few hundred steps of a 2-layer ensemble).
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import torch
from model_checks import agent_config, fitted, longest, observed, planned_actions
from test_state_model import SAVED_KEYS
from toy_world import stepped

from embodied.agents.adaptive_model import AdaptiveModel
from embodied.agents.mpc import make_policy
from embodied.agents.nets import load_checkpoint
from embodied.dataset import Dataset

TINY = dict(
    members=3,
    hidden=(32, 32),
    head_hidden=(32,),
    context_steps=4,
    context_dim=4,
    context_hidden=(16,),
    batch_size=64,
    lr=3e-3,
    seed=0,
)


@pytest.fixture(scope="module")
def model(cup_carry_states) -> AdaptiveModel:
    return fitted(AdaptiveModel(**TINY), cup_carry_states, 150)


def test_loss_falls(model):
    loss, mse = model.losses["loss"], model.losses["mse"]
    assert len(loss) == 150
    assert np.mean(loss[-10:]) < np.mean(loss[:10]) - 0.5
    assert np.mean(mse[-10:]) < 0.5 * np.mean(mse[:10])


def test_context_changes_the_prediction(model, cup_carry_states):
    ep = longest(cup_carry_states)
    z = torch.as_tensor(ep.state[6:7]).repeat(model.members, 1)
    a = torch.as_tensor(ep.action[6:7]).repeat(model.members, 1)
    model.encode(ep.state[6])  # no history: the zero context
    alone = model.step(z, a)
    observed(model, ep.state[:7], ep.action[:6])
    own = model.step(z, a)
    other = next(e for e in cup_carry_states.episodes if e.length > 8 and e is not ep)
    observed(model, other.state[:7], other.action[:6])
    foreign = model.step(z, a)
    assert model.context_dim == TINY["context_dim"]
    for x, y in ((alone, own), (own, foreign)):
        assert not torch.allclose(x[0], y[0])  # next state
        assert not torch.allclose(x[2], y[2])  # failure probability
    # only the last context_steps transitions count: an older past changes nothing
    k = model.context_steps
    observed(model, ep.state[6 - k : 7], ep.action[6 - k : 6])
    torch.testing.assert_close(model.step(z, a)[0], own[0], rtol=0, atol=0)


def test_whole_horizon_rollout_keeps_the_context(model, cup_carry_states):
    """The planners' fast path scores with the episode's context exactly as ``step`` does."""
    ep = longest(cup_carry_states)
    observed(model, ep.state[:7], ep.action[:6])
    z0 = torch.as_tensor(ep.state[6])
    actions = torch.rand(6, 3, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with_context = model.rollout(z0, actions)
    for got, want in zip(with_context, stepped(model, z0, actions), strict=True):
        torch.testing.assert_close(got, want)
    model.encode(ep.state[6])  # no history: the zero context
    assert not torch.allclose(model.rollout(z0, actions)[1], with_context[1])


def test_training_reads_no_physics_parameters(cup_carry_states):
    """The same transitions labelled with other physics train exactly the same model."""
    relabelled = [
        replace(e, physics={k: 2.0 * v + 1.0 for k, v in e.physics.items()})
        for e in cup_carry_states.episodes
    ]
    other = Dataset(relabelled, cup_carry_states.manifest)
    a, b = AdaptiveModel(**TINY), AdaptiveModel(**TINY)
    a.fit(cup_carry_states, steps=5)
    b.fit(other, steps=5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_policy_reads_only_observations(model, tmp_path):
    """Two envs whose cups differ (0.2 vs 0.4 kg) but feed the same observations get the same
    actions; the observations of the heavy cup's own episode move the plan."""
    model.save(tmp_path / "model.pt")
    cfg = agent_config("adaptive", AdaptiveModel, TINY)
    light = gymnasium.make("embodied/CupCarry-v0", physics={"cup_mass": 0.2})
    heavy = gymnasium.make("embodied/CupCarry-v0", physics={"cup_mass": 0.4})
    runs = {}
    for name, env, feed in (
        ("light", light, light),
        ("heavy", heavy, light),
        ("own", heavy, heavy),
    ):
        policy = make_policy(cfg, tmp_path, env, seed=0)
        # env and feed start alike: work shifts settle the grasp at nominal physics
        runs[name] = planned_actions(policy, env, 8, feed)
    light.close()
    heavy.close()
    np.testing.assert_array_equal(runs["light"], runs["heavy"])
    assert not np.array_equal(runs["light"], runs["own"])


def test_save_load_round_trip_with_context(model, cup_carry_states, tmp_path):
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = AdaptiveModel.load(path)
    assert loaded.config == model.config
    ep = longest(cup_carry_states)
    z, a = torch.as_tensor(ep.state[:9]), torch.as_tensor(ep.action[:9])
    for m in (model, loaded):
        observed(m, ep.state[:6], ep.action[:5])
    for got, want in zip(loaded.step(z, a), model.step(z, a), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="context_steps and context_dim must be >= 1"):
        AdaptiveModel(context_steps=0)


def test_a_checkpoint_holds_the_settings_it_held_before(model, tmp_path):
    """The state model's keys (test_state_model.SAVED_KEYS) and the context's, as before."""
    model.save(tmp_path / "m.pt")
    config = load_checkpoint(tmp_path / "m.pt", "embodied-adaptive-model/1")["config"]
    context = {"context_steps", "context_dim", "context_hidden"}
    assert set(config) == set(SAVED_KEYS.split()) | context
    assert config["context_hidden"] == [16]
    with pytest.raises(ValueError, match=r"unknown AdaptiveConfig settings \['context'\]; valid"):
        AdaptiveModel(context=4)
