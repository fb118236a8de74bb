"""Helpers the world-model tests share: a fitted model, a belief from an episode's start, the
agent's own config around a tiny model, and a policy driven through a few steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

import embodied.configs
from embodied.dataset import Dataset, Episode

TINY_CEM = {  # a planner that plans in a blink
    "_target_": "embodied.agents.planners.CEM",
    "horizon": 3,
    "population": 12,
    "elites": 3,
    "iterations": 1,
}


def fitted(model: Any, dataset: Dataset, steps: int) -> Any:
    """``model`` trained ``steps`` steps on ``dataset``, its loss curves kept as ``losses``."""
    model.losses = model.fit(dataset, steps=steps)
    return model


def observed(model: Any, states: np.ndarray, actions: np.ndarray) -> Any:
    """The belief after observing ``states`` (T+1, D) under ``actions`` (T, A)."""
    belief, _ = model.observe(None, None, states[0])
    for a, s in zip(actions, states[1:], strict=True):
        belief, _ = model.observe(belief, a, s)
    return belief


def longest(dataset: Dataset) -> Episode:
    return max(dataset.episodes, key=lambda e: e.length)


def agent_config(family: str, model_cls: type, settings: dict[str, Any]) -> DictConfig:
    """The agent's own config (configs/agent/<family>.yaml) with a tiny CEM and ``settings``
    for its world model, so a test plans with the model it trained."""
    cfg = OmegaConf.load(Path(embodied.configs.__file__).parent / "agent" / f"{family}.yaml")
    cfg.planner = TINY_CEM
    cfg.world_model = {**settings, "_target_": f"{model_cls.__module__}.{model_cls.__name__}"}
    return cfg


def planned_actions(policy: Any, env: Any, steps: int, feed: Any = None) -> np.ndarray:
    """The actions (steps, A) ``policy``, reset on ``env`` at seed 1, takes while it sees and
    steps ``feed`` (another env reset at the same seed; ``env`` itself by default)."""
    feed = env if feed is None else feed
    if feed is not env:
        env.reset(seed=1)
    obs, _ = feed.reset(seed=1)
    policy.reset(env)
    actions = []
    for _ in range(steps):
        actions.append(policy.act(obs))
        obs, *_ = feed.step(actions[-1])
    return np.stack(actions)
