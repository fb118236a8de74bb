"""The PETS-style state model: it learns, round-trips, keeps TS-inf membership and renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import fitted
from toy_world import stepped

from embodied.agents.nets import load_checkpoint
from embodied.agents.state_model import RELATIVE_GROUPS, StateConfig, StateModel

TINY = dict(members=3, hidden=(32, 32), head_hidden=(32,), batch_size=64, lr=3e-3, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls on a busy 2-core machine: 1 thread is ~15x faster than 2 (spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(cup_carry_states) -> StateModel:
    return fitted(StateModel(**TINY), cup_carry_states, 120)


def test_loss_falls(model):
    loss = model.losses["loss"]
    assert len(loss) == 120
    assert np.mean(loss[-10:]) < np.mean(loss[:10]) - 0.5
    assert np.mean(model.losses["mse"][-10:]) < 0.5 * np.mean(model.losses["mse"][:10])


def test_step_shapes_ts_membership_and_constants(model, cup_carry_states):
    e = model.members
    tr = cup_carry_states.transitions("state")
    z = torch.as_tensor(tr["obs"][:1]).repeat(2 * e + 1, 1)  # 7 rows: padding exercised
    a = torch.as_tensor(tr["action"][:1]).repeat(2 * e + 1, 1)
    z2, reward, p_fail = model.step(z, a)
    assert z2.shape == z.shape and reward.shape == (2 * e + 1,) and p_fail.shape == reward.shape
    assert bool(((p_fail >= 0) & (p_fail <= 1)).all())
    # TS-inf: row b goes through member b % E, so rows b and b + E agree and members differ
    torch.testing.assert_close(z2[0], z2[e])
    torch.testing.assert_close(z2[1], z2[1 + e])
    assert not torch.allclose(z2[0], z2[1])
    # the target never moves in the data, so it is copied exactly, never drifts
    target = cup_carry_states.state_index("target_x", "target_y", "target_z")
    assert torch.equal(z2[:, target], z[:, target])
    lo, hi = model.reward_range.tolist()
    assert bool(((reward >= lo) & (reward <= hi)).all())


def test_one_step_prediction_beats_standing_still(model, cup_carry_states):
    tr = cup_carry_states.transitions("state")
    z, a, nxt = (torch.as_tensor(tr[k]) for k in ("obs", "action", "next_obs"))
    cup = cup_carry_states.state_index("cup_x", "cup_y", "cup_z")
    pred = model.predict_mean(z, a)
    err_model = (pred - nxt)[:, cup].norm(dim=1).mean()
    err_still = (z - nxt)[:, cup].norm(dim=1).mean()
    assert err_model < 0.5 * err_still


def test_save_load_gives_identical_predictions(model, cup_carry_states, tmp_path):
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = StateModel.load(path)
    tr = cup_carry_states.transitions("state")
    z, a = torch.as_tensor(tr["obs"][:40]), torch.as_tensor(tr["action"][:40])
    for got, want in zip(loaded.step(z, a), model.step(z, a), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert loaded.state_labels == cup_carry_states.state_labels


def test_sampling_is_seeded(cup_carry_states):
    m = StateModel(**{**TINY, "sample": True})
    m.fit(cup_carry_states, steps=5)
    z = torch.as_tensor(cup_carry_states.transitions("state")["obs"][:6])
    a = torch.zeros(6, 4)
    m.reseed(3)
    first = m.step(z, a)[0]
    m.reseed(3)
    torch.testing.assert_close(m.step(z, a)[0], first, rtol=0, atol=0)
    assert not torch.equal(m.step(z, a)[0], first)


@pytest.mark.parametrize("sample", [False, True])
def test_whole_horizon_rollout_equals_stepping(model, cup_carry_states, sample):
    """The planners' fast path: same members, same noise draws, same scores as ``step``."""
    m = model
    if sample:
        m = StateModel(**{**TINY, "sample": True})
        m.fit(cup_carry_states, steps=5)
    z0 = torch.as_tensor(cup_carry_states.transitions("state")["obs"][3])
    actions = torch.rand(7, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m.reseed(5)
    whole = m.rollout(z0, actions)
    m.reseed(5)
    for got, want in zip(whole, stepped(m, z0, actions), strict=True):
        assert got.shape == (7, 4)
        torch.testing.assert_close(got, want)
    assert whole[0].std() > 0  # the candidates differ


def test_imagine_renders_predicted_states(model, cup_carry_states):
    import gymnasium

    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state", image_size=16)
    obs, _ = env.reset(seed=0)
    actions = np.zeros((4, 4), np.float32)
    actions[:, 3] = 1.0
    out = model.imagine({"state": obs}, actions, env)
    env.close()
    assert out.frames_kind == "render"
    assert out.frames.shape == (4, 16, 16, 3) and out.frames.dtype == np.uint8
    assert out.cup_pos.shape == (4, 3)
    cup = cup_carry_states.state_index("cup_x", "cup_y", "cup_z")
    assert np.abs(out.cup_pos[0] - obs[cup]).max() < 0.05  # one step from the true start


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(RuntimeError, match="fit or load"):
        StateModel(**TINY).step(torch.zeros(1, 3), torch.zeros(1, 4))
    bogus = tmp_path / "bogus.pt"
    torch.save({"format": "something-else"}, bogus)
    with pytest.raises(ValueError, match="expected 'embodied-state-model/1'"):
        StateModel.load(bogus)
    bogus.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        StateModel.load(bogus)


def test_returns_to_go_end_as_each_episode_ends(tmp_path):
    """The value head's targets, by hand: G from each next state, per episode's ending."""
    from toy_world import toy_episodes, write_toy

    from embodied.dataset import Dataset

    eps = toy_episodes(n=3, steps=3, drops=False)
    ends = {0: "success", 1: "failure", 2: "time limit"}
    for i, ep in enumerate(eps):
        ep.reward[:] = [-1.0, -2.0, -500.0 if i == 1 else -4.0]
        ep.terminated[-1] = i < 2
        ep.dropped[-1] = ends[i] == "failure"
    data = Dataset.load(write_toy(tmp_path, eps))
    m = StateModel(**{**TINY, "value_weight": 1.0, "value_gamma": 0.5, "value_fail": -7.0})
    g = m.returns_to_go(data).reshape(3, 3)
    np.testing.assert_allclose(g[0], [-2.0 + 0.5 * -4.0, -4.0, 0.0])  # success: 0 after it
    # failure: value_fail from the failed state and from the one before (not the -500 reward)
    np.testing.assert_allclose(g[1], [-2.0 + 0.5 * -7.0, -7.0, -7.0])
    # time limit: the last reward persists, -4 / (1 - 0.5)
    np.testing.assert_allclose(g[2], [-2.0 + 0.5 * (-4.0 + 0.5 * -8.0), -4.0 + 0.5 * -8.0, -8.0])


def test_value_head_fits_returns_and_rollout_adds_exactly_its_terminal_value(cup_carry_states):
    on = StateModel(**{**TINY, "value_weight": 0.5, "value_gamma": 0.9})
    off = StateModel(**TINY)
    losses = on.fit(cup_carry_states, steps=300)
    assert "value_mse" not in off.fit(cup_carry_states, steps=300)
    assert np.mean(losses["value_mse"][-10:]) < 0.5 * np.mean(losses["value_mse"][:10])
    tr = cup_carry_states.transitions("state")
    g = torch.as_tensor(on.returns_to_go(cup_carry_states), dtype=torch.float32)
    v = on.value(torch.as_tensor(tr["next_obs"]))
    # fitted: far better than predicting the targets' mean
    assert ((v - g) ** 2).mean() < 0.25 * g.var()
    # the dynamics, reward and failure heads are untouched by the switch: same seed, same nets
    z0 = torch.as_tensor(tr["obs"][0])  # an episode's start: far from the goal, V < 0
    actions = (torch.rand(6, 5, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.1
    r_on, p_on = on.rollout(z0, actions)
    r_off, p_off = off.rollout(z0, actions)
    torch.testing.assert_close(p_on, p_off, rtol=0, atol=0)
    torch.testing.assert_close(r_on[:, :-1], r_off[:, :-1], rtol=0, atol=0)
    # ... and only the last step gains weight * gamma^H * V(z_H); step adds nothing
    z_h, r_step = z0.reshape(1, -1).expand(6, -1), []
    for t in range(5):
        z_h, r, _ = on.step(z_h, actions[:, t])
        r_step.append(r)
    torch.testing.assert_close(torch.stack(r_step, 1), r_off)
    torch.testing.assert_close(r_on[:, -1], r_off[:, -1] + 0.5 * 0.9**5 * on.value(z_h))
    assert (0.5 * 0.9**5 * on.value(z_h)).abs().min() > 1e-3  # the check above could fail
    with pytest.raises(RuntimeError, match="no value head"):
        off.value(z0[None])


# The keys a checkpoint's config held before the settings were a dataclass: a checkpoint written
# then must load now (StateModel.load passes them back as keywords), and one written now holds
# the same.
SAVED_KEYS = (
    "members hidden head_hidden relative_groups act lr weight_decay batch_size max_logvar "
    "min_logvar sample nll_beta value_weight value_gamma value_fail cup_pos_labels seed"
)


def test_a_checkpoint_holds_the_settings_it_held_before(model, tmp_path):
    model.save(tmp_path / "m.pt")
    config = load_checkpoint(tmp_path / "m.pt", "embodied-state-model/1")["config"]
    assert set(config) == set(SAVED_KEYS.split())
    assert config["hidden"] == [32, 32] and config["relative_groups"] == list(RELATIVE_GROUPS)
    assert StateModel.load(tmp_path / "m.pt").config == model.config == StateConfig(**config)


def test_unknown_settings_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown StateConfig settings \['member'\]; valid: "):
        StateModel(member=3)
    with pytest.raises(ValueError, match="nll_beta must be in"):
        StateModel(nll_beta=2.0)
