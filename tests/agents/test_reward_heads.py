"""Which reward head a frame model gets is the task's declaration, read from the dataset.

Each env declares the state entries its reward compares with the goal (``reward_entries``). A
frame model (pixel, latent, retrieval) with ``reward_labels: task`` (its agent config) predicts
the reward from their geometry relative to the goal when they are all proprioception (CupCarry,
Reach: the hand), and from its features and the goal otherwise (CupPush, CupPickPlace: the cup,
which it sees only in the frames). Tiny models on toy frames, one training step: wiring only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from toy_world import SIZE, toy_episodes

from embodied.agents.frames import PROPRIO_LABELS, task_reward_entries
from embodied.agents.latent_model import LatentModel
from embodied.agents.pixel_model import PixelModel
from embodied.agents.retrieval_model import RetrievalModel
from embodied.agents.training import MODEL_FILE, load_model, train_world_model
from embodied.apps.eval import load_agents
from embodied.dataset import Dataset, Episode, write_dataset
from embodied.envs.arm import STATE_LABELS
from embodied.registration import TASKS, env_id

HAND = ["ee_x", "ee_y", "ee_z"]
TINY = {
    "pixel": dict(image_size=SIZE, depth=4, embed_dim=16, deter=16, stoch=4, hidden=16, seq_len=3),
    "latent": dict(image_size=SIZE, depth=4, embed_dim=8, hidden=16, seq_len=3, probe_depth=4),
    "retrieval": dict(frame_dims=4, pool=4),
}
CLASSES = {"pixel": PixelModel, "latent": LatentModel, "retrieval": RetrievalModel}
FAMILIES = list(TINY)


def arm_episode(ep: Episode) -> Episode:
    """A toy episode with the arm's state vector: its cup, hand and target in their entries."""
    state = np.zeros((len(ep.state), len(STATE_LABELS)), np.float32)
    col = STATE_LABELS.index
    state[:, [col("cup_x"), col("cup_y")]] = ep.state[:, :2]
    state[:, [col("target_x"), col("target_y"), col("target_z")]] = ep.state[:, 2:5]
    state[:, [col("ee_x"), col("ee_y")]] = ep.state[:, 5:7]
    state[:, col("ee_z")] = 0.2
    return dataclasses.replace(ep, state=state)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A toy dataset per task, its manifest naming the task."""
    episodes = [arm_episode(e) for e in toy_episodes(6)]
    out = {}
    for task in ("CupCarry", "CupPush"):
        path = tmp_path_factory.mktemp(task)
        write_dataset(
            path,
            episodes,
            env_id=env_id(task),
            task=task,
            split="train",
            obs_modes=("state", "pixels"),
            image_size=SIZE,
            state_labels=STATE_LABELS,
        )
        out[task] = str(path)
    return out


def agent_config(family: str, **world_model) -> dict:
    """configs/agent/<family>.yaml as the apps load it, shrunk to the toy's sizes."""
    agent = load_agents([family], OmegaConf.create())[family]
    agent["world_model"].update(TINY[family], device="cpu", **world_model)
    return agent


def trained(family: str, data_dir: str, out, **world_model):
    agent = agent_config(family, **world_model)
    train_world_model(agent, data_dir, out, steps=1, progress=False)
    return load_model(CLASSES[family], out / MODEL_FILE)


def reward_labels(model) -> list[str]:
    return model.config.reward_labels


def geometric(model) -> bool:
    """Whether the reward is read from the declared entries' geometry relative to the goal."""
    if isinstance(model, RetrievalModel):
        return bool(model._reward_cols)
    return model.head.geometric


def test_every_task_declares_entries_of_the_state_vector_one_per_goal_coordinate():
    for task in TASKS:
        entries = task_reward_entries(task)
        assert len(entries) == 3 and set(entries) <= set(STATE_LABELS), task
    assert task_reward_entries("CupCarry") == task_reward_entries("Reach") == tuple(HAND)
    assert {task_reward_entries("CupPush"), task_reward_entries("CupPickPlace")} == {
        ("cup_x", "cup_y", "cup_z")
    }
    assert not set(task_reward_entries("CupPush")) & set(PROPRIO_LABELS)  # only in the frames


@pytest.mark.parametrize("family", FAMILIES)
def test_the_datasets_task_picks_the_head(family, data, tmp_path):
    assert agent_config(family)["world_model"]["reward_labels"] == "task"
    carry = trained(family, data["CupCarry"], tmp_path / "carry")
    assert reward_labels(carry) == HAND and geometric(carry)
    push = trained(family, data["CupPush"], tmp_path / "push")
    assert reward_labels(push) == [] and not geometric(push)
    # an explicit list overrides the task's declaration
    forced = trained(family, data["CupPush"], tmp_path / "forced", reward_labels=HAND)
    assert reward_labels(forced) == HAND and geometric(forced)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_reward_labels_fail_naming_the_valid_choices(family):
    cls, tiny = CLASSES[family], {**TINY[family], "device": "cpu"}
    with pytest.raises(ValueError, match=r"reward_labels 'hand': give 'task' .*'ee_x'.* or \[\]"):
        cls(**tiny, reward_labels="hand", task="CupCarry")
    with pytest.raises(ValueError, match=r"needs the task .*\['CupCarry', 'CupPickPlace'"):
        cls(**tiny)
    with pytest.raises(ValueError, match=r"unknown task 'Push'; valid tasks: \['CupCarry'"):
        cls(**tiny, task="Push")
    with pytest.raises(ValueError, match=r"reward_labels \['cup_x'\] must be among proprio"):
        cls(**tiny, reward_labels=["cup_x", "ee_y", "ee_z"], task="CupPush")


@pytest.mark.parametrize("family", ["pixel", "latent"])
def test_cupcarry_trains_as_with_the_hand_written_in_the_config(family, data):
    """The task's declaration gives CupCarry exactly the head the configs used to hard-code."""
    dataset = Dataset.load(data["CupCarry"])
    models = [
        CLASSES[family](**TINY[family], device="cpu", **labels)
        for labels in ({"task": "CupCarry"}, {"reward_labels": HAND})
    ]
    losses = [m.fit(dataset, steps=3) for m in models]
    assert losses[0] == losses[1] and set(losses[0])
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
