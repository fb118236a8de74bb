"""What every learned frame model (pixel, latent) must do: train, batch, plan, save, resume.

Each check runs on both families, tiny, on the toy frame world; what one family alone does
(the pixel model's KL and windows, the latent model's probe and anti-collapse terms) is tested
in its own file. Also here: the settings of the frame families (pixel, latent, retrieval), as
``agent.yaml`` gives them and a checkpoint stores them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, NamedTuple

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

from embodied.agents.frames import GOAL_LABELS, PROPRIO_LABELS
from embodied.agents.latent_model import LatentModel
from embodied.agents.mpc import make_policy
from embodied.agents.nets import load_checkpoint, save_checkpoint
from embodied.agents.pixel_model import PixelModel
from embodied.agents.retrieval_model import RetrievalModel
from embodied.agents.training import train_world_model
from embodied.apps.eval import load_agents
from embodied.dataset import Dataset
from embodied.protocols import WorldModel


class Family(NamedTuple):
    cls: type
    tiny: dict[str, Any]
    drops: bool  # whether the toy episodes drop the cup
    steps: int  # training steps of the shared fixture
    falling: tuple[str, ...]  # losses that must fall over them
    z_dim: int  # the planner's latent: the model's state + the 3-d goal
    pixels_z_dim: int  # the same, reading frames only
    frames_kind: str  # what ``imagine`` draws with


FAMILIES = {
    "pixel": Family(
        PixelModel,
        dict(
            image_size=SIZE,
            depth=4,
            embed_dim=32,
            deter=32,
            stoch=4,
            hidden=32,
            seq_len=4,
            lr=3e-3,
            proprio_labels=PROPRIO,
            reward_labels=[],  # the toy's hand is 2-d, its goal 3-d: test_frame_inputs has them
        ),
        drops=True,
        steps=120,
        falling=("loss", "recon", "reward_mse", "proprio_mse"),
        z_dim=32 + 4 + 3,  # deter + stoch + goal
        pixels_z_dim=32 + 4,
        frames_kind="decoder",
    ),
    "latent": Family(
        LatentModel,
        dict(
            image_size=SIZE,
            depth=4,
            embed_dim=16,
            hidden=64,
            history=2,
            seq_len=4,
            lr=2e-3,
            probe_depth=4,
            proprio_labels=PROPRIO,
            reward_labels=[],
        ),
        drops=False,
        steps=100,
        falling=("loss", "reward_mse", "proprio_mse", "probe"),
        z_dim=16 + 2 + 3,  # embedding + proprioception + goal
        pixels_z_dim=16,
        frames_kind="probe",
    ),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def toy_dir(family, tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy"), toy_episodes(drops=FAMILIES[family].drops))


@pytest.fixture(scope="module")
def trained(family, toy_dir):
    f = FAMILIES[family]
    model = f.cls(**f.tiny)
    losses = model.fit(Dataset.load(toy_dir), steps=f.steps)
    return model, losses


def episodes(family: str, n: int = 1, seed: int = 0) -> list:
    return toy_episodes(n, seed=seed, drops=FAMILIES[family].drops)


def test_loss_falls(family, trained):
    _, losses = trained
    for key in FAMILIES[family].falling:
        assert np.mean(losses[key][-15:]) < 0.7 * np.mean(losses[key][:15]), key
    assert len(losses["loss"]) == FAMILIES[family].steps


def test_encode_and_step_are_batched(family, trained):
    model, _ = trained
    assert isinstance(model, WorldModel) and model.obs_mode == "state+pixels"
    eps = episodes(family, 3, seed=5)
    batch = {
        "state": np.stack([e.state[0] for e in eps]),
        "pixels": np.stack([e.pixels[0] for e in eps]),
    }
    z = model.encode(batch)
    z_dim = FAMILIES[family].z_dim
    assert z.shape == (3, z_dim)
    torch.testing.assert_close(z[1:2], model.encode(obs_of(eps[1])))
    z2, reward, p_fail = model.step(z.repeat(4, 1), torch.rand(12, 4) * 2 - 1)
    assert z2.shape == (12, z_dim) and reward.shape == p_fail.shape == (12,)
    assert torch.all((p_fail >= 0) & (p_fail <= 1))
    torch.testing.assert_close(z2[:, -3:], z.repeat(4, 1)[:, -3:])  # the goal is carried


def test_whole_horizon_rollout_equals_stepping(trained):
    """The planners' fast path scores every step as ``step`` does, out of the data too."""
    check_rollout_of_toy_model(trained[0])


def test_a_trained_model_plans_as_its_weights_loaded_fresh(trained, tmp_path):
    check_plans_like_a_fresh_load(trained[0], tmp_path / "m.pt")


def test_save_load_round_trip_predicts_identically(family, trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.pt")
    loaded = FAMILIES[family].cls.load(tmp_path / "m.pt")
    assert loaded.config == model.config
    ep = episodes(family, seed=9)[0]
    z, zl = model.encode(obs_of(ep)), loaded.encode(obs_of(ep))
    assert torch.equal(z, zl)
    a = torch.as_tensor(ep.action[:1])
    for x, y in zip(model.step(z, a), loaded.step(zl, a), strict=True):
        assert torch.equal(x, y)
    assert np.array_equal(model.decode_frames(z), loaded.decode_frames(zl))


def test_imagine_draws_an_open_loop_rollout(family, trained):
    model, _ = trained
    ep = episodes(family, seed=3)[0]
    imag = model.imagine(obs_of(ep), ep.action[:5], env=None)
    assert imag.frames.shape == (5, SIZE, SIZE, 3) and imag.frames.dtype == np.uint8
    assert imag.frames_kind == FAMILIES[family].frames_kind and imag.cup_pos is None
    # it learnt something about the scene: closer to the true frames than a flat grey guess
    err = np.abs(imag.frames.astype(float) - ep.pixels[1:6]).mean()
    assert err < np.abs(ep.pixels[1:6].astype(float) - 128).mean()


@pytest.mark.parametrize("family", ["latent"], indirect=True)
def test_latent_embeddings_do_not_collapse(family, trained):
    """The latent model's own: VICReg's terms keep the embedding spread (no decoder to force it)."""
    model, losses = trained
    eps = episodes(family, 4, seed=7)
    obs = {
        "state": np.concatenate([e.state for e in eps]),
        "pixels": np.concatenate([e.pixels for e in eps]),
    }
    z = model.encode(obs)[:, :16]  # the embedding, without the goal entries
    assert z.std(0).mean() > 0.3
    assert losses["embed_std"][-1] > 0.3


def test_resuming_from_train_state_continues_exactly(family, toy_dir, tmp_path):
    f = FAMILIES[family]
    ds = Dataset.load(toy_dir)
    a = f.cls(**f.tiny)
    a.fit(ds, 3)
    a.save(tmp_path / "a.pt")
    state = a.train_state()
    b = f.cls.load(tmp_path / "a.pt")
    b.load_train_state(state)
    assert a.fit(ds, 2)["loss"] == b.fit(ds, 2)["loss"]


def test_pixels_only_and_bad_input_errors(family, toy_dir):
    f = FAMILIES[family]
    frame = episodes(family)[0].pixels[0]
    model = f.cls(**{**f.tiny, "proprio_labels": [], "goal_labels": []})
    assert model.obs_mode == "pixels"
    model.fit(Dataset.load(toy_dir), 1)
    assert model.encode(frame).shape == (1, f.pixels_z_dim)
    with pytest.raises(ValueError, match="state"):
        f.cls(**f.tiny).encode(frame)
    with pytest.raises(ValueError, match="image_size"):
        f.cls(**{**f.tiny, "image_size": 32}).fit(Dataset.load(toy_dir), 1)
    with pytest.raises(ValueError, match="valid labels"):
        f.cls(**f.tiny, goal_labels=["goal_x"]).fit(Dataset.load(toy_dir), 1)
    with pytest.raises(ValueError, match="valid labels"):
        f.cls(**{**f.tiny, "proprio_labels": ["elbow"]}).fit(Dataset.load(toy_dir), 1)


def test_agent_config_trains_and_plans(family, toy_dir, tmp_path):
    cfg = OmegaConf.create(load_agents([family], OmegaConf.create())[family])
    cfg.world_model = OmegaConf.merge(cfg.world_model, FAMILIES[family].tiny)
    cfg.planner.population, cfg.planner.elites = 16, 4
    out = train_world_model(cfg, toy_dir, tmp_path, steps=2, progress=False)
    assert out["step"] == 2 and (tmp_path / "model.pt").is_file()
    env = SpaceOnlyEnv()
    policy = make_policy(cfg, tmp_path, env, seed=0)
    policy.reset(env)
    action = policy.act(obs_of(episodes(family)[0]))
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)


def test_same_seed_same_weights_other_seed_other_weights(family):
    f = FAMILIES[family]
    a, b, c = f.cls(**f.tiny), f.cls(**f.tiny), f.cls(**f.tiny, seed=1)
    pairs = list(zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not torch.equal(a.encoder.out.weight, c.encoder.out.weight)


# -- settings -------------------------------------------------------------------------------
# The keys a checkpoint's config held before the settings were dataclasses: a checkpoint
# written then must load now, and one written now must hold the same keys (retrieval has
# gained its optional index since: index, nlist, nprobe, default the exact one).
SAVED_KEYS = {
    "pixel": (
        "image_size action_dim depth embed_dim deter stoch hidden seq_len batch_size lr "
        "free_nats kl_scale kl_balance head_scale proprio_scale fail_weight grad_clip "
        "proprio_labels goal_labels reward_labels task seed"
    ),
    "latent": (
        "image_size action_dim depth embed_dim hidden history seq_len batch_size lr ema "
        "var_weight cov_weight proprio_scale head_scale fail_weight probe_depth probe_lr "
        "probe_batch grad_clip proprio_labels goal_labels reward_labels task seed"
    ),
    "retrieval": (
        "mode action_weight frame_weight frame_dims pool proprio_labels goal_labels "
        "reward_labels chunk store_frames rerank fail_neighbours task index nlist nprobe"
    ),
}
CLASSES = {"pixel": PixelModel, "latent": LatentModel, "retrieval": RetrievalModel}


def saved_config(model: Any, path) -> dict[str, Any]:
    if isinstance(model, RetrievalModel):  # retrieval saves only once it holds transitions
        return asdict(model.config)
    model.save(path)
    return load_checkpoint(path, model.FORMAT)["config"]


@pytest.mark.parametrize("name", list(SAVED_KEYS))
def test_a_checkpoint_holds_the_settings_it_held_before(name, tmp_path):
    model = CLASSES[name](task="CupCarry", device="cpu")
    config = saved_config(model, tmp_path / "m.pt")
    assert set(config) == set(SAVED_KEYS[name].split())
    # plain lists (not tuples or OmegaConf's), the task's reward labels resolved
    assert type(config["proprio_labels"]) is list and type(config["reward_labels"]) is list
    assert config["proprio_labels"] == list(PROPRIO_LABELS)
    assert config["goal_labels"] == list(GOAL_LABELS)
    assert config["reward_labels"] == ["ee_x", "ee_y", "ee_z"] and config["task"] == "CupCarry"
    # the constructor takes back exactly what it saved (what ``load`` does)
    again = CLASSES[name](**config, device="cpu")
    assert again.config == model.config


@pytest.mark.parametrize("name", list(CLASSES))
def test_unknown_settings_are_refused_with_the_valid_names(name):
    with pytest.raises(ValueError, match=r"unknown \w+Config settings \['lerning_rate'\]; valid:"):
        CLASSES[name](task="CupCarry", lerning_rate=1e-3)
    with pytest.raises(ValueError, match="reward_labels"):
        CLASSES[name](task="CupCarry", reward_labels="hand")


def test_a_misspelt_agent_config_key_fails_by_name(family, toy_dir, tmp_path):
    """What agent.yaml's world_model holds reaches the dataclass: a typo stops training."""
    cfg = OmegaConf.create(load_agents([family], OmegaConf.create())[family])
    typo = {"lerning_rate": 1e-3}
    cfg.world_model = OmegaConf.merge(cfg.world_model, FAMILIES[family].tiny, typo)
    with pytest.raises(Exception, match=r"unknown \w+Config settings \['lerning_rate'\]; valid: "):
        train_world_model(cfg, toy_dir, tmp_path, steps=1, progress=False)
    assert not (tmp_path / "model.pt").exists()


def test_a_checkpoint_written_before_the_dataclasses_loads(tmp_path):
    """The old writer's config: a plain dict in the old key order, loaded into the dataclass."""
    model = PixelModel(**FAMILIES["pixel"].tiny, device="cpu")
    old = {k: asdict(model.config)[k] for k in SAVED_KEYS["pixel"].split()}
    save_checkpoint({"config": old, "weights": model.state_dict()}, tmp_path / "m.pt", model.FORMAT)
    loaded = PixelModel.load(tmp_path / "m.pt")
    assert asdict(loaded.config) == old
    weights = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in weights)
