"""The frame models' input boundary, filtering and devices (pixel, latent, retrieval).

The cup reaches a frame model only through the frame: its entries of the state vector are never
read. The belief that the MPC agent carries through an episode depends on what was seen before.
Tiny models on the toy frame world, a few training steps: these check wiring, not skill.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_world import CUP, PROPRIO, SIZE, SpaceOnlyEnv, draw, obs_of, toy_episodes, write_toy

from embodied.agents.frames import GoalHeads, StateEntries, sample_windows
from embodied.agents.latent_model import LatentModel
from embodied.agents.mpc import MPCAgent
from embodied.agents.nets import resolve_device
from embodied.agents.pixel_model import PixelModel
from embodied.agents.planners import CEM
from embodied.agents.retrieval_model import RetrievalModel
from embodied.dataset import Dataset
from embodied.protocols import FilteringWorldModel, WorldModel

GOAL = ["target_x", "target_y"]
PIXEL = dict(image_size=SIZE, depth=4, embed_dim=16, deter=16, stoch=4, hidden=16, seq_len=3)
LATENT = dict(image_size=SIZE, depth=4, embed_dim=8, hidden=16, seq_len=3, probe_depth=4)
RETRIEVAL = dict(frame_dims=4, pool=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return Dataset.load(write_toy(tmp_path_factory.mktemp("toy"), toy_episodes()))


def build(family: str, dataset: Dataset, **labels) -> object:
    labels = {"proprio_labels": PROPRIO, "goal_labels": GOAL, "reward_labels": PROPRIO, **labels}
    if family == "pixel":
        model = PixelModel(**PIXEL, **labels, device="cpu")
    elif family == "latent":
        model = LatentModel(**LATENT, **labels, device="cpu")
    else:
        model = RetrievalModel(**{**RETRIEVAL, **labels}, device="cpu")
    model.fit(dataset, steps=3)
    return model


FAMILIES = ["pixel", "latent", "retrieval"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cup_enters_only_through_the_frame(family, dataset):
    model = build(family, dataset)
    assert isinstance(model, WorldModel) and model.obs_mode == "state+pixels"
    ep = toy_episodes(1, seed=4)[0]
    obs = obs_of(ep, 3)
    z = model.encode(obs)
    # the cup's entries of the state vector changed, the frame not: nothing changes
    moved_state = obs["state"].copy()
    moved_state[CUP] += 0.5
    assert torch.equal(model.encode({"state": moved_state, "pixels": obs["pixels"]}), z)
    # the cup moved in the frame, the state vector not: the encoding changes
    drawn = obs["state"].copy()
    drawn[CUP] = -drawn[CUP]
    moved_frame = draw(drawn)
    assert not np.array_equal(moved_frame, obs["pixels"])
    assert not torch.allclose(model.encode({"state": obs["state"], "pixels": moved_frame}), z)
    # the hand (proprioception) and the goal are read from the state
    hand = obs["state"].copy()
    hand[5] += 0.5
    assert not torch.allclose(model.encode({"state": hand, "pixels": obs["pixels"]}), z)


@pytest.mark.parametrize("family", FAMILIES)
def test_pure_pixels_reads_no_state(family, dataset):
    model = build(family, dataset, proprio_labels=[], goal_labels=[], reward_labels=[])
    assert model.obs_mode == "pixels"
    ep = toy_episodes(1, seed=4)[0]
    z = model.encode(ep.pixels[2])
    assert z.shape[0] == 1 and torch.equal(model.encode(obs_of(ep, 2)), z)


def test_reward_reads_only_the_hand_geometry_and_goal():
    """With the hand's geometry the reward cannot be bought by latent features off the data;
    the failure logit still reads them (the cup is only in the frames). Without it (pure
    pixels), the reward reads the features."""
    torch.manual_seed(0)
    feat, goal, rel = torch.randn(5, 6), torch.randn(5, 2), torch.randn(5, 3)
    heads = GoalHeads(6, 2, 3, hidden=8)
    out, moved = heads(feat, goal, rel), heads(feat + 3.0, goal, rel)
    assert torch.equal(moved[:, 0], out[:, 0]) and not torch.allclose(moved[:, 1], out[:, 1])
    assert not torch.allclose(heads(feat, goal, rel + 1.0)[:, 0], out[:, 0])
    pixels_only = GoalHeads(6, 0, 0, hidden=8)
    none = goal[:, :0]
    assert not torch.allclose(pixels_only(feat + 3.0, none, none), pixels_only(feat, none, none))


@pytest.mark.parametrize("family", ["pixel", "latent"])
def test_models_use_the_geometric_reward(family, dataset):
    assert build(family, dataset).head.geometric
    bare = build(family, dataset, proprio_labels=[], goal_labels=[], reward_labels=[])
    assert not bare.head.geometric


def test_state_entries_read_only_their_labels(dataset):
    entries = StateEntries(PROPRIO, "proprioception")
    entries.fit(dataset)
    state = torch.as_tensor(dataset.flat["state"][:5])
    out = entries(state)
    changed = state.clone()
    changed[:, CUP] += 1.0
    assert out.shape == (5, 2) and torch.equal(entries(changed), out)
    with pytest.raises(ValueError, match="state\\+pixels"):
        entries.from_obs(np.zeros((SIZE, SIZE, 3), np.uint8), 1, torch.device("cpu"))


@pytest.mark.parametrize("family", ["pixel", "latent"])
def test_history_changes_the_belief(family, dataset):
    """Same last observation, different past: a filtering model's z differs."""
    model = build(family, dataset)
    assert isinstance(model, FilteringWorldModel)
    a, b = toy_episodes(2, seed=11)
    now = obs_of(a, 4)
    action = a.action[3]
    from_a = model.observe(model.observe(None, None, obs_of(a, 3))[0], action, now)[1]
    from_b = model.observe(model.observe(None, None, obs_of(b, 3))[0], action, now)[1]
    fresh = model.encode(now)
    assert not torch.allclose(from_a, from_b)
    assert not torch.allclose(from_a, fresh)
    # at an episode's start, observe is encode
    assert torch.equal(model.observe(None, None, now)[1], fresh)


def test_pixel_belief_is_the_training_window(dataset):
    """The posterior is filtered through the last seq_len + 1 observations, as in training."""
    model = build("pixel", dataset)  # seq_len 3
    ep = toy_episodes(1, seed=2)[0]
    belief = None
    for t in range(6):
        belief, z = model.observe(belief, ep.action[max(t - 1, 0)], obs_of(ep, t))
    assert belief.embeds.shape[1] == 4 and belief.actions.shape[1] == 3
    again = None
    for t in range(2, 6):  # a fresh filter over the same window gives the same z
        again, z_again = model.observe(again, ep.action[max(t - 1, 0)], obs_of(ep, t))
    torch.testing.assert_close(z, z_again)


def test_latent_history_is_the_last_frames(dataset):
    model = build("latent", dataset, history=3)
    ep = toy_episodes(1, seed=2)[0]
    belief = None
    for t in range(5):
        belief, _ = model.observe(belief, ep.action[max(t - 1, 0)], obs_of(ep, t))
    assert np.array_equal(belief[0], ep.pixels[2:5])


def test_windows_carry_a_frame_history(dataset):
    w = sample_windows(dataset, 64, 3, np.random.default_rng(0), ("pixels",), history=3)
    assert w["pixels"].shape == (64, 4, 3, SIZE, SIZE, 3)
    # within an episode, each frame's newest history entry is the next one's second newest
    for k in range(3):
        real = w["mask"][:, k]
        assert np.array_equal(w["pixels"][real, k, -1], w["pixels"][real, k + 1, -2])


def test_mpc_agent_filters_through_the_episode(dataset):
    model = build("pixel", dataset)
    seen = []
    observe = model.observe

    def spy(belief, action, obs):
        seen.append(belief is None)
        return observe(belief, action, obs)

    model.observe = spy
    env = SpaceOnlyEnv()
    planner = CEM(
        action_dim=4,
        action_low=-np.ones(4, np.float32),
        action_high=np.ones(4, np.float32),
        horizon=3,
        population=8,
        elites=2,
        iterations=1,
        particles=1,
    )
    agent = MPCAgent(model, planner)
    ep = toy_episodes(1, seed=3)[0]
    agent.reset(env)
    for t in range(3):
        agent.act(obs_of(ep, t))
    agent.reset(env)
    agent.act(obs_of(ep, 0))
    assert seen == [True, False, False, True]  # a new belief only at an episode's start


def test_retrieval_scores_the_neighbours_future_against_the_query_goal(dataset):
    model = build("retrieval", dataset)
    tr = dataset.transitions("state")
    ep = toy_episodes(1, seed=6)[0]
    z = model.encode(obs_of(ep, 0))
    action = torch.zeros(1, 4)
    nxt, reward, _ = model.step(z, action)
    # put the goal where the predicted hand will be: the best reward stored, not the neighbour's
    on_target = z.clone()
    on_target[0, -2:] = nxt[0, :2]
    _, best, _ = model.step(on_target, action)
    assert best.item() > reward.item()
    assert best.item() >= np.quantile(tr["reward"][~tr["dropped"]], 0.95)


def test_device_auto_and_bad_names():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto"):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_trains_and_plans_on_cuda(family, dataset):
    labels = {"proprio_labels": PROPRIO, "goal_labels": GOAL, "reward_labels": PROPRIO}
    cls, kwargs = {
        "pixel": (PixelModel, PIXEL),
        "latent": (LatentModel, LATENT),
        "retrieval": (RetrievalModel, RETRIEVAL),
    }[family]
    model = cls(**kwargs, **labels, device="auto")
    model.fit(dataset, steps=2)
    assert model.device.type == "cuda"
    z = model.encode(obs_of(toy_episodes(1)[0], 0))
    assert z.device.type == "cuda"
    z2, reward, p_fail = model.step(z.repeat(5, 1), torch.zeros(5, 4, device="cuda"))
    assert z2.is_cuda and reward.shape == p_fail.shape == (5,)
