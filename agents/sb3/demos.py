"""Demonstrations for an off-policy run: dataset episodes and the task's scripted controller,
as transitions with the training env's rewards, and the replay-buffer prefill."""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from embodied.agents.sb3.shaping import ProgressShaping, progress_point, shaped
from embodied.dataset import Dataset
from embodied.rollout import Step, rollout

Transition = tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]  # s, s', a, r, terminated


def demo_budget(steps: int, bc_steps: int, critic_steps: int) -> tuple[int, int, int]:
    """(env steps of scripted demonstrations, BC steps, critic warm-up steps) that a run of
    ``steps`` env steps allows.

    Demonstrations stay a sideline of the run: at most a third of its env steps in scripted
    transitions (counted as run, so short successful episodes buy more of them) and no more
    BC or warm-up steps than env steps, so a smoke run gets smoke-sized demos and says so.
    """
    return steps // 3, min(bc_steps, steps), min(critic_steps, steps)


def dataset_transitions(dataset: Dataset, shape: tuple[int, ...]) -> list[Transition]:
    """The transitions of a collected dataset's episodes (their env rewards)."""
    if dataset.episodes and dataset.episodes[0].state.shape[1:] != shape:
        raise ValueError(
            f"dataset states have shape {dataset.episodes[0].state.shape[1:]}, the env's "
            f"observations {shape}: collect the dataset on the task being trained"
        )
    return [
        (ep.state[t], ep.state[t + 1], ep.action[t], float(ep.reward[t]), bool(ep.terminated[t]))
        for ep in dataset.episodes
        for t in range(len(ep.action))
    ]


def scripted_transitions(
    env: gymnasium.Env,
    episodes: int,
    seed: int,
    style: str,
    noise: float,
    max_steps: int | None = None,
) -> tuple[list[Transition], int]:
    """``episodes`` episodes of the task's scripted controller in ``env`` (demonstrations),
    at most ``max_steps`` transitions of them (the last episode cut there), and how many
    episodes ran.

    ``env`` is the training env as SAC sees it (``train`` split, shaping included), so the
    stored rewards are the ones SAC's own transitions carry. Seeds ``seed``, ``seed + 1``...
    """
    rows: list[Transition] = []

    def keep(step: Step) -> None:
        rows.append((step.obs, step.next_obs, step.action, step.reward, bool(step.terminated)))

    ran = 0
    while ran < episodes and (max_steps is None or len(rows) < max_steps):
        policy = env.unwrapped.scripted_policy(style, noise=noise, seed=seed + ran)
        rollout(env, policy, seed + ran, keep)
        ran += 1
    return rows[:max_steps], ran


def load_demos(dataset_dir: str | os.PathLike | None, env_id: str, episodes: int) -> Dataset:
    """The first ``episodes`` episodes of a collected dataset of ``env_id``, for a prefill."""
    if dataset_dir is None:
        raise ValueError("prefill_episodes > 0 needs dataset_dir (a collected dataset)")
    dataset = Dataset.load(dataset_dir, obs_modes=("state",))
    if dataset.manifest.get("env_id") != env_id:
        raise ValueError(
            f"{dataset_dir} holds {dataset.manifest.get('env_id')!r} episodes; "
            f"training {env_id!r} needs a dataset of the same task"
        )
    return dataset.subset(range(min(episodes, len(dataset.episodes))))


def demo_rows(
    shape: tuple[int, ...],
    dataset_dir: str | os.PathLike | None,
    env_id: str,
    env_kwargs: dict[str, Any],
    prefill_episodes: int,
    demos: tuple[int, int],
    style: str,
    noise: float,
    seed: int,
    shaping: float,
    gamma: float,
) -> tuple[list[Transition], int]:
    """The demonstrations for a fresh off-policy run and how many scripted episodes ran:
    dataset episodes, then ``demos`` = (episodes, at most so many steps) of the scripted
    controller, all with the rewards of the training env (shaped when it is)."""
    env: gymnasium.Env = gymnasium.make(env_id, **env_kwargs)
    if shaping > 0:
        env = ProgressShaping(env, shaping, gamma)
    try:
        rows: list[Transition] = []
        if prefill_episodes > 0:
            rows += dataset_transitions(load_demos(dataset_dir, env_id, prefill_episodes), shape)
            if shaping > 0:
                rows = shaped(rows, progress_point(type(env.unwrapped)), shaping, gamma)
        episodes, max_steps = demos
        ran = 0
        if episodes > 0:  # seeds apart from the training envs' (seed, seed + 1, ...)
            scripted, ran = scripted_transitions(
                env, episodes, seed + 20_000, style, noise, max_steps
            )
            rows += scripted
        return rows, ran
    finally:
        env.close()


def prefill_replay_buffer(model: OffPolicyAlgorithm, rows: list[Transition]) -> int:
    """Add transitions (demonstrations) to the replay buffer; returns how many were added.

    Transitions are added one env slot at a time (SB3 buffers are laid out per env); a
    time-limit end is stored as not done, so SAC bootstraps through it as through its own.
    """
    buffer = model.replay_buffer
    assert buffer is not None
    n_envs = buffer.n_envs
    added = 0
    for i in range(0, len(rows) - len(rows) % n_envs, n_envs):
        obs, nxt, act, rew, done = (np.stack(x) for x in zip(*rows[i : i + n_envs], strict=True))
        buffer.add(obs, nxt, act, rew, done.astype(np.float32), [{}] * n_envs)
        added += n_envs
    return added
