"""The MPC agent: any world model + any planner is a Policy (replan every step, warm-started)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.agents.nets import resolve_device
from embodied.agents.planners import Planner, step_function
from embodied.agents.training import MODEL_FILE, for_task, load_model, set_torch_threads
from embodied.checkpoints import check_trained_on


class MPCAgent:
    """Encode the observation, plan a sequence in the model, execute its first action.

    A model with ``observe`` (the optional filtering hook of ``WorldModel``) keeps a belief
    across the episode: each observation and the action before it update it, so the planner
    starts from everything seen so far rather than from the latest frame alone.
    """

    def __init__(self, world_model: Any, planner: Planner):
        self.world_model = world_model
        self.planner = planner

    def reset(self, env: gymnasium.Env) -> None:
        attach = getattr(self.world_model, "attach", None)
        if attach is not None:
            attach(env)
        self.planner.reset()
        self.belief: Any = None
        # the robot knows its own command: hold still, keep the grip it has
        hold = getattr(env.unwrapped, "hold_action", None)
        self.last_action = np.zeros(4, np.float32) if hold is None else hold()

    def act(self, obs: Any) -> np.ndarray:
        prior = torch.as_tensor(self.last_action * np.array([0, 0, 0, 1], np.float32))
        observe = getattr(self.world_model, "observe", None)
        with torch.inference_mode():
            if observe is None:
                z = self.world_model.encode(obs)
            else:
                self.belief, z = observe(self.belief, self.last_action, obs)
            self.last_action = self.planner.plan(step_function(self.world_model), z[0], prior)
        return self.last_action


def load_world_model(agent_cfg: DictConfig, checkpoint_dir: str | os.PathLike | None) -> Any:
    """The trained model in ``checkpoint_dir``, or a fresh one for agents with nothing to train."""
    wm_cfg = agent_cfg.world_model
    if agent_cfg.get("trainer") is None:
        return instantiate(wm_cfg)
    name = agent_cfg.get("name", "?")
    if checkpoint_dir is None:
        raise ValueError(f"agent {name!r} needs a trained model: pass checkpoint_dir")
    path = Path(checkpoint_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}; train one first: embodied-train agent={name} ..."
        )
    device = str(resolve_device(wm_cfg.get("device", "cpu")))
    return load_model(get_class(wm_cfg._target_), path, device)


def make_policy(
    agent_cfg: DictConfig | dict,
    checkpoint_dir: str | os.PathLike | None,
    env: gymnasium.Env,
    seed: int,
) -> MPCAgent:
    """Build the MPC policy of an agent config (the ``policy`` factory eval instantiates)."""
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    agent_cfg = for_task(agent_cfg, getattr(env.unwrapped, "task_name", None))
    set_torch_threads(agent_cfg.get("torch_threads"))
    if checkpoint_dir is not None and agent_cfg.get("trainer") is not None:
        check_trained_on(checkpoint_dir, getattr(env.unwrapped, "task_name", None), agent_cfg)
    world_model = load_world_model(agent_cfg, checkpoint_dir)
    reseed = getattr(world_model, "reseed", None)
    if reseed is not None:
        reseed(seed)
    return MPCAgent(world_model, build_planner(agent_cfg.planner, env, seed, world_model))


def build_planner(cfg: DictConfig, env: gymnasium.Env, seed: int, world_model: Any) -> Planner:
    """The planner of config ``cfg`` for ``env``'s actions, on the model's device.

    ``horizon: null`` plans as far ahead as the task declares it needs (``plan_horizon`` of
    the env); a number is used as given.
    """
    space = env.action_space
    horizon = cfg.get("horizon")
    if horizon is None:
        horizon = getattr(env.unwrapped, "plan_horizon", None)
        if horizon is None:
            raise ValueError(
                f"planner horizon: null takes the task's plan_horizon, which "
                f"{type(env.unwrapped).__name__} does not declare: give a number"
            )
    return instantiate(
        cfg,
        horizon=int(horizon),
        action_dim=int(np.prod(space.shape)),
        action_low=np.asarray(space.low, np.float32),
        action_high=np.asarray(space.high, np.float32),
        seed=seed,
        device=str(getattr(world_model, "device", "cpu")),
    )
