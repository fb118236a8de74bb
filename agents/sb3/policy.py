"""A trained SB3 model as a Policy, and the loading that says what is wrong with a file.

``model.zip`` is what :func:`make_policy` loads; with ``normalize_obs`` it also carries the
observation statistics of training (:func:`stash_normalizer`), so one file never falls out of
step with another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from embodied.checkpoints import check_trained_on

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO}
MODEL_FILE = "model.zip"
NORMALIZER = "obs_normalizer"  # model attribute holding the VecNormalize statistics


def algorithm(agent_cfg: DictConfig) -> type[BaseAlgorithm]:
    """The SB3 class of an agent config's ``family``."""
    family = agent_cfg.get("family")
    if family not in ALGORITHMS:
        raise ValueError(f"unknown sb3 family {family!r}; valid: {sorted(ALGORITHMS)}")
    return ALGORITHMS[family]


class SB3Policy:
    """A trained SB3 model as a Policy: the deterministic action (no exploration noise).

    Observations are normalised with the statistics frozen into the model at its last save
    (see :func:`stash_normalizer`), exactly as ``VecNormalize`` did during training.
    """

    def __init__(self, model: BaseAlgorithm):
        self.model = model
        norm = getattr(model, NORMALIZER, None)
        self.norm = None
        if norm is not None:
            scale = np.sqrt(np.asarray(norm["var"]) + norm["epsilon"])
            self.norm = (np.asarray(norm["mean"]), scale, float(norm["clip"]))

    def reset(self, env: gymnasium.Env) -> None:
        """Nothing to reset: the MLP policies here are memoryless."""

    def act(self, obs: Any) -> np.ndarray:
        if self.norm is not None:
            mean, scale, clip = self.norm
            obs = np.clip((np.asarray(obs) - mean) / scale, -clip, clip).astype(np.float32)
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)


def stash_normalizer(model: BaseAlgorithm) -> None:
    """Copy the training ``VecNormalize`` statistics into the model, so its zip carries them.

    SB3 saves a model's attributes, so a model file alone restores the policy (eval) and the
    running statistics (resume); no second file can fall out of step with it.
    """
    vn = model.get_vec_normalize_env()
    if vn is not None:
        rms = vn.obs_rms
        setattr(
            model,
            NORMALIZER,
            {
                "mean": rms.mean.tolist(),
                "var": rms.var.tolist(),
                "count": float(rms.count),
                "clip": float(vn.clip_obs),
                "epsilon": float(vn.epsilon),
            },
        )


def restore_normalizer(model: BaseAlgorithm) -> None:
    """The inverse of :func:`stash_normalizer` on a resumed model's ``VecNormalize``."""
    vn, norm = model.get_vec_normalize_env(), getattr(model, NORMALIZER, None)
    if vn is not None and norm is not None:
        vn.obs_rms.mean = np.asarray(norm["mean"], dtype=np.float64)
        vn.obs_rms.var = np.asarray(norm["var"], dtype=np.float64)
        vn.obs_rms.count = norm["count"]


def load_sb3(path: str | os.PathLike, cls: type[BaseAlgorithm], env: Any = None) -> BaseAlgorithm:
    """``cls.load(path)`` on the CPU, with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trained SB3 model at {path}")
    try:
        return cls.load(str(path), env=env, device="cpu")
    except Exception as e:  # a truncated or foreign file fails in zipfile, pickle or torch
        raise ValueError(
            f"{path} is not a loadable {cls.__name__} model ({type(e).__name__}: {e}); "
            f"delete it and train again"
        ) from e


def make_policy(
    agent_cfg: DictConfig | dict,
    checkpoint_dir: str | os.PathLike | None,
    env: gymnasium.Env,
    seed: int,
) -> SB3Policy:
    """The trained policy in ``checkpoint_dir`` (the ``policy`` factory eval instantiates);
    a model trained on another task, or on another version of this one, is refused.

    ``seed`` is unused: deterministic actions draw no random numbers.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    name = agent_cfg.get("name", "?")
    cls = algorithm(agent_cfg)
    if checkpoint_dir is None:
        raise ValueError(
            f"agent {name!r} needs a trained model: pass checkpoint_dir "
            f"(train one with: embodied-train agent={name} env=...)"
        )
    path = Path(checkpoint_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}; train one first: embodied-train agent={name} env=..."
        )
    check_trained_on(checkpoint_dir, getattr(env.unwrapped, "task_name", None), agent_cfg)
    model = load_sb3(path, cls)
    want, have = model.observation_space, env.observation_space
    if want.shape != have.shape or model.action_space.shape != env.action_space.shape:
        raise ValueError(
            f"{path} was trained for observations {want.shape} and actions "
            f"{model.action_space.shape}, but the env gives {have.shape} and "
            f"{env.action_space.shape} (obs_mode {agent_cfg.get('obs_mode')!r}?)"
        )
    return SB3Policy(model)
