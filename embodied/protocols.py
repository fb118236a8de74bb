"""The interfaces everything else meets at: a task the core reads, a policy that acts, a world
model that predicts.

Each protocol lists its optional hooks beside the members every implementation has: the
callers look a hook up with ``getattr(obj, name, default)``, so an object without it still
meets the protocol and gets the default named here (``tests/agents/test_protocols.py`` checks that
every hook the code looks up is declared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import gymnasium
    import torch

    from embodied.dataset import Dataset


class Task(Protocol):
    """A task class as the core reads it (``embodied.registration.TASKS``): everything about a
    task is declared on its class (envs/arm.ArmEnv and its subclasses)."""

    task_name: ClassVar[str]  # the name in TASKS, configs and result lines
    version: ClassVar[int]  # bumped by a change that moves the task's numbers
    max_episode_steps: ClassVar[int]  # the time limit, in control steps
    plan_horizon: ClassVar[int]  # the planners' ``horizon: null``
    reward_entries: ClassVar[tuple[str, ...]]  # state entries the reward compares with the goal


@runtime_checkable
class Policy(Protocol):
    """Anything that acts: scripted controllers, MPC agents, SB3 policies, random actions.

    Optional hooks, each with what a policy without it gets:

    - ``world_model`` (None): the model an MPC agent plans with; its cells then get the video
      metrics and the state probes.
    - ``episode_record() -> dict[str, float]`` (None: nothing recorded): what the policy
      inferred of the episode's physics (sysid), recorded beside the truth.
    """

    def reset(self, env: gymnasium.Env) -> None:
        """Called after every ``env.reset``; privileged agents read ``env.unwrapped``."""

    def act(self, obs: Any) -> np.ndarray:
        """An action in [-1, 1]^4 (dx, dy, dz, grip); ``rollout`` casts it to float32."""


@dataclass
class Imagination:
    """An open-loop prediction of H steps after a first observation, under given actions."""

    frames: np.ndarray | None  # uint8 (H, S, S, 3)
    frames_kind: str  # "decoder" | "probe" | "render" | "retrieved" | "none"
    cup_pos: np.ndarray | None  # (H, 3) where the model exposes physical state


@runtime_checkable
class WorldModel(Protocol):
    """One protocol for learned models and simulators alike (see docs/architecture.md).

    Optional hooks, each with what a model without it gets:

    - ``observe(belief, action, obs) -> (belief, z)`` (None: ``encode`` each observation
      alone): filtering, see ``FilteringWorldModel``.
    - ``rollout(z0, actions) -> (reward, p_fail)``, each (N, H) (None: ``step`` H times): the
      planners' whole-horizon cost of N sequences (N, H, 4) from one latent, equal to
      stepping H times but cheaper.
    - ``deterministic`` (False): the same sequence always costs the same (the simulators), so
      a planner may reuse a cost it computed before.
    - ``device`` ("cpu"): where the planner puts its samples.
    - ``train_state() -> dict`` / ``load_train_state(dict)`` (None: a resumed run restarts the
      optimiser): exact resumption of training.
    - ``attach(env)`` (None: nothing to attach): simulators read the episode's env after each
      reset, and the video metrics read their latents as the env's state.
    - ``reseed(seed)`` (None: nothing to reseed): per-episode randomness of a stochastic model.
    - ``load(path[, device])`` (classmethod; a trained model needs it): what ``save`` wrote,
      on ``device`` where it takes one.
    """

    family: str
    obs_mode: str  # "state" | "pixels" | "state+pixels": what encode/observe consume

    def fit(self, dataset: Dataset, steps: int, **kwargs: Any) -> dict[str, list[float]]:
        """Train ``steps`` more steps (continuing); per-step loss terms by name."""

    def encode(self, obs: Any) -> torch.Tensor:
        """One observation (or a batch) -> planner latents (B, Z), from that observation alone."""

    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched: (z', reward, p_fail) for (B, Z) latents and (B, 4) actions."""

    def imagine(self, obs0: Any, actions: np.ndarray, env: gymnasium.Env) -> Imagination:
        """Open-loop prediction of ``len(actions)`` steps after ``obs0`` (video metrics)."""

    def save(self, path: str) -> None: ...


@runtime_checkable
class FilteringWorldModel(WorldModel, Protocol):
    """A world model whose planner state carries the episode so far, not one observation."""

    def observe(self, belief: Any, action: np.ndarray, obs: Any) -> tuple[Any, torch.Tensor]:
        """Fold the action just taken and the observation it led to into ``belief`` (None at an
        episode's start: the action is then ignored); returns the new belief and z (B, Z)."""


@runtime_checkable
class Trainer(Protocol):
    """One agent's training run on one task: ``agents/trainer.py`` holds the lifecycle every
    trainer shares (resume checks, ``agent.yaml`` and ``trained_on.json``, logs, clean stop).

    An agent config's ``trainer`` is the factory the apps call as ``trainer(agent_cfg=...,
    dataset_dir=..., out_dir=..., steps=..., seed=..., progress=..., env_id=...)``; it builds a
    Trainer and returns what :meth:`train` returns.
    """

    steps: int
    trained_on: dict[str, Any]  # what trained_on.json records: env_id, task, split, family...

    def train(self) -> dict[str, Any]:
        """Train to ``steps`` in total, resuming what ``out_dir`` holds; a summary with
        ``out_dir``, ``steps``, ``step`` (reached), ``interrupted`` (Ctrl-C) and ``wall_s``."""
